"""Helpers for Prebook's tests: servers, service processes, databases and polling.

The fixtures in tests/conftest.py are built from these. Tests import them as `support`,
because the root pyproject.toml puts tests/ on pytest's pythonpath.
"""

from support.databases import create_database, drop_database, fresh_database
from support.polling import eventually
from support.ports import free_port
from support.processes import ProcessExitedError, ServiceProcess, ServiceProcesses
from support.servers import NatsServerProcess, nats_server, postgres_server

__all__ = [
    "NatsServerProcess",
    "ProcessExitedError",
    "ServiceProcess",
    "ServiceProcesses",
    "create_database",
    "drop_database",
    "eventually",
    "free_port",
    "fresh_database",
    "nats_server",
    "postgres_server",
]
