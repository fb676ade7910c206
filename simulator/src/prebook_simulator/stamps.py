"""Socket reads that carry the kernel's receive timestamp (SO_TIMESTAMPNS).

With ``SO_TIMESTAMPNS`` set, Linux attaches an ``SCM_TIMESTAMPNS`` control message to
each ``recvmsg`` on a TCP socket: a ``struct timespec`` (two native longs) with the
CLOCK_REALTIME instant at which the kernel received the last segment of the data read.
That instant is comparable with ``time.time_ns()`` in any process on the machine.

Where the option or the control message is missing, a chunk is stamped with
``time.time_ns()`` at read time and marked ``"user"``. That stamp includes the delay
before the event loop got to the socket, so it can be later than the real arrival.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

StampSource = Literal["kernel", "user"]

RECEIVE_BUFFER_SIZE = 65536

_TIMESPEC = struct.Struct("@ll")

# Python 3.11's socket module does not export SO_TIMESTAMPNS. Linux defines it as 35
# (SO_TIMESTAMPNS_OLD) in asm-generic/socket.h, which these architectures use. Other
# architectures have their own asm/socket.h, so they fall back to user-space stamps.
_GENERIC_SO_TIMESTAMPNS = 35
_GENERIC_SOCKET_MACHINES = frozenset({"x86_64", "amd64", "i686", "aarch64", "arm64", "armv7l", "riscv64"})


def _find_timestamp_option() -> int | None:
    option = getattr(socket, "SO_TIMESTAMPNS", None)
    if option is not None:
        return option

    if sys.platform == "linux" and platform.machine().lower() in _GENERIC_SOCKET_MACHINES:
        return _GENERIC_SO_TIMESTAMPNS

    return None


SO_TIMESTAMPNS = _find_timestamp_option()
# On Linux, SCM_TIMESTAMPNS (the control message type) equals SO_TIMESTAMPNS.
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
HAS_RECVMSG = hasattr(socket.socket, "recvmsg") and hasattr(socket, "CMSG_SPACE")
ANCILLARY_BUFFER_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if HAS_RECVMSG else 0


@dataclass(frozen=True)
class StampedChunk:
    """Bytes from one read and the instant they arrived, in epoch nanoseconds.

    Empty ``data`` means the peer closed its side of the connection.
    """

    data: bytes
    arrival_ns: int
    stamp_source: StampSource


def enable_kernel_stamps(sock: socket.socket) -> bool:
    """Turn on SO_TIMESTAMPNS for ``sock`` and return whether the kernel accepted it."""
    if SO_TIMESTAMPNS is None or not HAS_RECVMSG:
        return False

    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError as error:
        logger.debug("SO_TIMESTAMPNS rejected on fd %s: %s", sock.fileno(), error)
        return False

    return True


async def receive_stamped(sock: socket.socket, bufsize: int = RECEIVE_BUFFER_SIZE) -> StampedChunk:
    """Read the next chunk from the non-blocking ``sock`` and stamp its arrival.

    Raises OSError (ConnectionResetError and the like) when the read fails.
    """
    loop = asyncio.get_running_loop()

    if not HAS_RECVMSG:
        data = await loop.sock_recv(sock, bufsize)
        return StampedChunk(data, time.time_ns(), "user")

    while True:
        try:
            data, ancillary, _flags, _address = sock.recvmsg(bufsize, ANCILLARY_BUFFER_SIZE)
        except (BlockingIOError, InterruptedError):
            await _wait_readable(loop, sock)
            continue

        read_ns = time.time_ns()
        kernel_ns = _kernel_stamp(ancillary)
        if kernel_ns is None:
            return StampedChunk(data, read_ns, "user")

        return StampedChunk(data, kernel_ns, "kernel")


def _kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in ancillary:
        if level != socket.SOL_SOCKET or kind != SCM_TIMESTAMPNS or len(payload) < _TIMESPEC.size:
            continue

        seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
        # A zero stamp means the segment was queued before timestamping was enabled.
        if seconds == 0 and nanoseconds == 0:
            return None

        return seconds * 1_000_000_000 + nanoseconds

    return None


async def _wait_readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    readable: asyncio.Future[None] = loop.create_future()

    def mark_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, mark_readable)
    try:
        await readable
    finally:
        loop.remove_reader(fd)
