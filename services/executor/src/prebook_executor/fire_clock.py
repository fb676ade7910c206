"""One timer per target instant, shared by every request that fires at that instant."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Protocol

from prebook_executor.timer import DEFAULT_GUARD_NS, check_guard, sleep_until_guard, spin_until

__all__ = ["FireClock", "FireOutcome", "FireTicket", "Fireable"]

log = logging.getLogger(__name__)


class Fireable(Protocol):
    """Request that fires with one synchronous write, such as a ``StagedRequest``."""

    def is_alive(self) -> bool: ...

    def send_final_byte(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FireOutcome:
    """Result of one request at its instant.

    ``sent_ns`` is the ``time.time_ns()`` reading just before the write. It is None when
    the request was not alive at fire time, so nothing was written and the owner should
    use the fallback.
    """

    target_ns: int
    sent_ns: int | None

    @property
    def fired(self) -> bool:
        return self.sent_ns is not None

    @property
    def latency_ns(self) -> int | None:
        """Time from the target to the write, or None when nothing was written."""
        if self.sent_ns is None:
            return None
        return self.sent_ns - self.target_ns


class FireTicket:
    """Handle of one request added to a ``FireClock``.

    Awaiting the ticket returns the FireOutcome, or raises the error that
    ``send_final_byte`` raised. Cancelling the ticket, or the ``outcome`` future,
    before the spin removes the request so that it is never written.
    """

    __slots__ = ("target_ns", "request", "outcome", "_clock")

    def __init__(self, clock: FireClock, target_ns: int, request: Fireable) -> None:
        self.target_ns = target_ns
        self.request = request
        self.outcome: asyncio.Future[FireOutcome] = asyncio.get_running_loop().create_future()
        self._clock = clock

    def cancel(self) -> bool:
        """Remove the request before its spin and return True, or False when already resolved."""
        if self.outcome.done():
            return False
        self.outcome.cancel()
        self._clock._discard(self)
        return True

    def __await__(self) -> Generator[object, None, FireOutcome]:
        return self.outcome.__await__()

    def on_outcome_done(self, outcome: asyncio.Future[FireOutcome]) -> None:
        # A future cancelled by its owner, not through cancel, lands here.
        if outcome.cancelled():
            self._clock._discard(self)


@dataclass(slots=True)
class _Instant:
    target_ns: int
    tickets: list[FireTicket] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class FireClock:
    """Timer shared by all requests that fire at the same instant.

    Each distinct target has one task. It sleeps until the guard window, drops the
    requests that are not alive, spins until the target and writes the final byte of
    every live request back to back, with no await in between. Then it resolves each
    ticket, so the owners read their responses concurrently.

    A request can join an instant until its spin starts. One added after that, or for
    a target already past, fires at the next turn of the event loop. The loop is
    blocked for at most the guard window plus the writes of one instant.
    """

    def __init__(self, *, guard_ns: int = DEFAULT_GUARD_NS) -> None:
        check_guard(guard_ns)
        self.guard_ns = guard_ns
        self._instants: dict[int, _Instant] = {}
        self._closed = False

    @property
    def pending_targets(self) -> list[int]:
        """Targets that still have requests waiting, in firing order."""
        return sorted(self._instants)

    def add(self, target_ns: int, request: Fireable) -> FireTicket:
        """Schedule ``request`` to fire at ``target_ns`` and return its ticket."""
        if self._closed:
            raise RuntimeError("Cannot add a request to a closed FireClock")

        ticket = FireTicket(self, target_ns, request)
        ticket.outcome.add_done_callback(ticket.on_outcome_done)

        instant = self._instants.get(target_ns)
        if instant is None:
            instant = _Instant(target_ns)
            instant.task = asyncio.create_task(self._fire_instant(instant), name=f"fire-clock {target_ns}")
            self._instants[target_ns] = instant
        instant.tickets.append(ticket)

        log.debug(
            "Added a request for target %d (%d ns from now), %d at that instant",
            target_ns,
            target_ns - time.time_ns(),
            len(instant.tickets),
        )
        return ticket

    def _discard(self, ticket: FireTicket) -> None:
        instant = self._instants.get(ticket.target_ns)
        if instant is None or ticket not in instant.tickets:
            return

        instant.tickets.remove(ticket)
        log.debug("Removed a request from target %d, %d left", instant.target_ns, len(instant.tickets))
        if not instant.tickets and instant.task is not None:
            del self._instants[instant.target_ns]
            instant.task.cancel()

    async def _fire_instant(self, instant: _Instant) -> None:
        try:
            await sleep_until_guard(instant.target_ns, self.guard_ns)

            # No await from here to the end: nothing joins or leaves the instant now.
            self._instants.pop(instant.target_ns, None)
            live: list[FireTicket] = []
            not_alive: list[FireTicket] = []
            for ticket in instant.tickets:
                if ticket.outcome.done():
                    continue
                if ticket.request.is_alive():
                    live.append(ticket)
                else:
                    not_alive.append(ticket)
            sent: list[int | Exception] = []

            # A collection pause during the writes would delay every request after it.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                spin_until(instant.target_ns)
                for ticket in live:
                    # One failed write must not stop the others, and its owner gets the error.
                    try:
                        sent.append(ticket.request.send_final_byte())
                    except Exception as exc:
                        sent.append(exc)
            finally:
                if gc_was_enabled:
                    gc.enable()

            self._resolve(instant.target_ns, live, sent, not_alive)
        finally:
            # A ticket still pending here, after a cancellation or an unexpected error, is
            # cancelled so that its owner does not wait forever.
            for ticket in instant.tickets:
                if not ticket.outcome.done():
                    ticket.outcome.cancel()

    def _resolve(
        self,
        target_ns: int,
        live: list[FireTicket],
        sent: list[int | Exception],
        not_alive: list[FireTicket],
    ) -> None:
        failed = 0
        for ticket, result in zip(live, sent):
            if isinstance(result, Exception):
                failed += 1
                ticket.outcome.set_exception(result)
            else:
                ticket.outcome.set_result(FireOutcome(target_ns, result))

        for ticket in not_alive:
            ticket.outcome.set_result(FireOutcome(target_ns, None))

        sent_ns = [result for result in sent if not isinstance(result, Exception)]
        if sent_ns:
            log.debug(
                "Fired %d requests for target %d: first write %d ns and last write %d ns after "
                "the target, %d not alive, %d failed",
                len(sent_ns),
                target_ns,
                sent_ns[0] - target_ns,
                sent_ns[-1] - target_ns,
                len(not_alive),
                failed,
            )
        else:
            log.debug(
                "Fired no request for target %d: %d not alive, %d failed",
                target_ns,
                len(not_alive),
                failed,
            )

    async def aclose(self) -> None:
        """Cancel every instant that has not fired, which cancels its tickets."""
        self._closed = True
        instants = list(self._instants.values())
        self._instants.clear()

        # Cancel the tickets here because a task cancelled before its first step never
        # runs its own cleanup.
        tasks = []
        for instant in instants:
            for ticket in instant.tickets:
                ticket.outcome.cancel()
            if instant.task is not None:
                instant.task.cancel()
                tasks.append(instant.task)
        await asyncio.gather(*tasks, return_exceptions=True)
