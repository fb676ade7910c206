"""The open-file limit that parked bookings need.

Each parked booking holds one staged socket per attempt (``1 + too_early_retries``), so
``executor_max_parked`` bookings need that many descriptors on top of the database,
NATS and log files. The executor raises its soft limit to the hard limit at start and
warns when even that is too low.
"""

from __future__ import annotations

import logging
import resource

from prebook_common.settings import Settings

logger = logging.getLogger(__name__)

# Descriptors for everything but staged sockets: database pool, NATS, logs, spares.
BASE_DESCRIPTORS = 256


def raise_open_file_limit(settings: Settings) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)

    needed = settings.executor_max_parked * (1 + settings.too_early_retries) + BASE_DESCRIPTORS
    if soft < needed:
        logger.warning(
            "open-file limit %d is below the %d that PREBOOK_EXECUTOR_MAX_PARKED=%d with "
            "PREBOOK_TOO_EARLY_RETRIES=%d can need; bookings past the limit fire through httpx "
            "without staged connections: raise the hard limit (ulimit -Hn) or lower those settings",
            soft, needed, settings.executor_max_parked, settings.too_early_retries,
        )
    else:
        logger.debug("open-file limit %d covers the %d that parked bookings can need", soft, needed)
    return soft
