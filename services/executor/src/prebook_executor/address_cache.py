"""Host name resolution for staged connections, done once per host and kept for a while.

``loop.create_connection`` resolves a host name in a thread of the default executor for
every connection, so a booking with three spares would need four lookups, and a burst
of bookings would queue them behind that executor's few threads. The cache makes one
lookup per host and port, shares it with every connection that waits for it, and keeps
the result for ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time

logger = logging.getLogger(__name__)

# NOTE: getaddrinfo does not return the DNS records' TTL, so addresses are kept for this
# fixed time. A connect that fails on every cached address drops the entry at once.
DEFAULT_TTL_S = 30.0

# (family, host, port) for a TCP connect, where host is an IP address literal.
Address = tuple[int, str, int]


class AddressCache:
    """Addresses of host names, resolved with the event loop's getaddrinfo."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._lookups: dict[tuple[str, int], asyncio.Future[list[Address]]] = {}

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Return the addresses of ``host`` for a TCP connection to ``port``, in getaddrinfo's order.

        An IP address literal is returned as it is, without a lookup. Raises OSError
        (socket.gaierror) when the lookup fails, and failures are not cached.
        """
        literal = _literal_address(host, port)
        if literal is not None:
            return [literal]

        key = (host, port)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]

        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(host, port))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(key, None))
        # Shielded, so a caller that times out does not cancel the lookup that others wait for.
        return await asyncio.shield(lookup)

    def forget(self, host: str, port: int) -> None:
        """Drop the cached addresses of ``host``, so the next connection resolves it again."""
        self._entries.pop((host, port), None)

    async def _look_up(self, host: str, port: int) -> list[Address]:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)

        addresses = [(family, sockaddr[0], sockaddr[1]) for family, _, _, _, sockaddr in infos]
        if not addresses:
            raise socket.gaierror(f"getaddrinfo returned no address for {host}:{port}")
        self._entries[(host, port)] = (time.monotonic() + self._ttl_s, addresses)
        logger.debug(
            "resolved %s:%d to %s in %.1f ms, kept for %.0f s",
            host, port, ", ".join(address for _, address, _ in addresses), (time.monotonic() - started) * 1000, self._ttl_s,
        )
        return addresses


def _literal_address(host: str, port: int) -> Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return (family, host, port)
