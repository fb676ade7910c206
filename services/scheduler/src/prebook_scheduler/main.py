"""Run the scheduler in the foreground: ``prebook scheduler``."""

from __future__ import annotations

import sys


def serve() -> None:
    # TODO: the scheduler (QStash and local delivery backends) is not built yet; until
    # then, QStash or a direct signed POST must call the gateway's callback.
    sys.exit("prebook scheduler: not implemented yet; schedule callbacks with QStash directly")
