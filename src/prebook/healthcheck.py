"""Container health checks: ``python -m prebook.healthcheck gateway|nats|http URL``.

Exit status 0 means healthy and 1 unhealthy, with the reason on stderr, as Docker's
HEALTHCHECK expects. The module imports only the standard library, because a check runs
every few seconds beside the executor's fire path, and importing the whole ``prebook``
command line took 0.7 s of CPU time on a 2-core development machine.

- ``gateway``: ``GET /readyz`` on ``127.0.0.1:$PREBOOK_GATEWAY_PORT`` returns 2xx, so the
  gateway reaches NATS and the database.
- ``nats``: this container has an established TCP connection to the server in
  ``$PREBOOK_NATS_URL``. The executor and the scheduler serve no HTTP. They connect to
  NATS only after their database migration, and nats-py drops the connection while
  NATS is unreachable, so the check fails both before start-up has finished and while
  the service is cut off from NATS. It reads ``/proc/net/tcp`` and ``/proc/net/tcp6``,
  which list the sockets of the container's network namespace, so it is meant for a
  container that runs one service. It does not notice a service whose event loop hangs
  while the socket stays open.
- ``http URL``: a GET of ``URL`` returns 2xx (the simulator uses ``/_sim/config``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HTTP_TIMEOUT_S = 3.0
DEFAULT_GATEWAY_PORT = "8000"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_NATS_PORT = 4222
# The connection state column of /proc/net/tcp: 01 is TCP_ESTABLISHED.
TCP_ESTABLISHED = "01"
PROC_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))

# The checked servers listen in this container or on the compose network, never behind
# a proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Unhealthy(Exception):
    """The checked service is not healthy. The message gives the reason."""


def check_http(url: str) -> str:
    """GET ``url`` and return a description; raise Unhealthy unless the status is 2xx."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=HTTP_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        raise Unhealthy(f"GET {url} returned status {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"GET {url} failed: {exc}") from exc

    if not 200 <= status < 300:
        raise Unhealthy(f"GET {url} returned status {status}")
    return f"GET {url} returned status {status}"


def check_gateway() -> str:
    port = os.environ.get("PREBOOK_GATEWAY_PORT", DEFAULT_GATEWAY_PORT)
    return check_http(f"http://127.0.0.1:{port}/readyz")


def check_nats_connection() -> str:
    """Return a description of an established connection to a server in PREBOOK_NATS_URL.

    Raises Unhealthy when there is none.
    """
    nats_url = os.environ.get("PREBOOK_NATS_URL", DEFAULT_NATS_URL)
    servers = [_server_address(url) for url in nats_url.split(",") if url.strip()]
    targets = {(ip, port) for host, port in servers for ip in _resolve(host, port)}
    if not targets:
        raise Unhealthy(f"no address found for the NATS servers in PREBOOK_NATS_URL={nats_url}")

    for remote in established_remotes():
        if remote in targets:
            return f"connected to NATS at {remote[0]}:{remote[1]}"
    expected_addresses = ", ".join(f"{ip}:{port}" for ip, port in sorted(targets))
    raise Unhealthy(f"no established TCP connection to NATS ({expected_addresses}, from PREBOOK_NATS_URL={nats_url})")


def established_remotes() -> Iterator[tuple[str, int]]:
    """Yield the remote (ip, port) of every established TCP connection in this namespace."""
    for table in PROC_TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl, local_address, rem_address, st, ...
            if len(fields) > 3 and fields[3] == TCP_ESTABLISHED:
                yield _decode_proc_address(fields[2])


def _decode_proc_address(text: str) -> tuple[str, int]:
    """Decode ``0100007F:1092`` (IPv4) or a 32-digit IPv6 form from /proc/net/tcp*.

    The kernel prints the address as 32-bit words in host byte order (little endian on
    the machines Docker runs on) and the port in big-endian hex.
    """
    address_hex, port_hex = text.split(":")
    raw = bytes.fromhex(address_hex)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)

    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(port_hex, 16)


def _server_address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.hostname is None:
        raise Unhealthy(f"NATS URL {url!r} has no host: write it as nats://HOST:PORT")
    return parsed.hostname, parsed.port or DEFAULT_NATS_PORT


def _resolve(host: str, port: int) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unhealthy(f"cannot resolve NATS host {host!r}: {exc}") from exc
    addresses = set()
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.add(str(address))
    return addresses


USAGE = "usage: python -m prebook.healthcheck gateway | nats | http URL"


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["gateway"]:
                description = check_gateway()
            case ["nats"]:
                description = check_nats_connection()
            case ["http", url]:
                description = check_http(url)
            case _:
                print(USAGE, file=sys.stderr)
                return 2
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
