"""A throwaway Postgres server that a test may stop and start, apart from the machine's own.

It is created with ``initdb`` from /usr/lib/postgresql/<version>/bin in a new temporary
directory and listens on 127.0.0.1 on a free port, with trust authentication. Postgres
refuses to run as root, so under root every command runs as the ``postgres`` user
through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.ports import free_port

POSTGRES_BIN_ROOT = Path("/usr/lib/postgresql")
COMMAND_TIMEOUT_S = 60


def find_postgres_bin() -> Path | None:
    """Return the bin directory of the newest Postgres installed here, or None."""
    candidates = sorted(
        (path for path in POSTGRES_BIN_ROOT.glob("*/bin") if (path / "initdb").is_file()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return candidates[-1] if candidates else None


class PostgresInstance:
    """One Postgres data directory and server, started, stopped and removed by a test."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.work_dir = Path(tempfile.mkdtemp(prefix="prebook-pg-"))
        self.data_dir = self.work_dir / "data"
        self.log_path = self.work_dir / "postgres.log"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.work_dir, account.pw_uid, account.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database on this server."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._run_as, *command], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with status {result.returncode}:\n{result.stdout}{result.stderr}\n"
                f"{self.logs()}"
            )

    def init(self) -> PostgresInstance:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync")
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.work_dir} -c fsync=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server in fast mode: open sessions are closed, as in an outage."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return ""
