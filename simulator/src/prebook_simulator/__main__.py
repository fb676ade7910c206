"""Command line entry: ``python -m prebook_simulator [--host HOST] [--port PORT]``."""

from __future__ import annotations

import argparse
import logging

from prebook_simulator.runner import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m prebook_simulator", description="Run the AimHarder simulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port to bind, 0 for any free port (default: 8080)")
    parser.add_argument("--log-level", default="INFO", help="logging level name (default: INFO)")
    arguments = parser.parse_args()

    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(arguments.host, arguments.port)


if __name__ == "__main__":
    main()
