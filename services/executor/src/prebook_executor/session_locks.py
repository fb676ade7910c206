"""Per-user locks that keep a session refresh away from a booking that uses the session.

A token update gives the session a new ``amhrdrauth`` and AimHarder stops accepting
the old one. A booking writes its cookie into the staged request seconds before the
instant, so a refresh between loading the cookie and the fire would make the fire
get ``{"logout": 1}`` from AimHarder. Each user therefore has one ``asyncio.Lock``:

- a refresh or re-login holds the lock for its whole exchange with AimHarder;
- a booking takes the lock only to register itself as a user of the loaded cookie,
  and is counted until its fire has finished;
- a refresh of a live session also waits until no booking is counted, whereas a
  re-login after a logout does not, because the counted bookings hold a dead cookie.

Bookings of one user, such as a family member's class at the same instant, therefore
run side by side, and only refreshes exclude them.

NOTE: the locks live in one executor process. Two executor replicas can still refresh
a session that the other one is about to fire with; the other fire then gets a logout
and re-logs in when credentials are stored. ``SessionRepository`` keeps concurrent
refreshes from storing a cookie that was already replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class _UserLock:
    # Created by the first refresh or re-login, because an asyncio.Condition takes about
    # 1.2 KB (tracemalloc, Python 3.11) and a booking whose user no refresh touches needs none.
    condition: asyncio.Condition | None = None
    bookings: int = 0
    holders: int = 0

    def lock(self) -> asyncio.Condition:
        """Return the user's condition, creating it on first use."""
        if self.condition is None:
            self.condition = asyncio.Condition()
        return self.condition


class SessionLocks:
    """One lock and one count of cookie-holding bookings per user, in this process."""

    def __init__(self) -> None:
        self._users: dict[str, _UserLock] = {}

    def bookings_in_flight(self, user_email: str) -> int:
        user = self._users.get(user_email)
        return 0 if user is None else user.bookings

    def refreshing(self, user_email: str) -> bool:
        user = self._users.get(user_email)
        return user is not None and user.condition is not None and user.condition.locked()

    def booking(self, user_email: str) -> BookingHold:
        """Return a block that counts a booking as a user of the session until it exits.

        Entering waits while a refresh of the session is running, so the cookie loaded
        inside the block is the refreshed one.
        """
        return BookingHold(self, user_email)

    @asynccontextmanager
    async def exclusive(self, user_email: str, *, wait_for_bookings: bool) -> AsyncIterator[None]:
        """Hold the user's lock; with ``wait_for_bookings``, first wait until no booking is counted."""
        user = self._acquire(user_email)
        condition = user.lock()
        try:
            async with condition:
                if wait_for_bookings:
                    await condition.wait_for(lambda: user.bookings == 0)
                yield
        finally:
            self._release(user_email, user)

    def _acquire(self, user_email: str) -> _UserLock:
        user = self._users.setdefault(user_email, _UserLock())
        user.holders += 1
        return user

    def _release(self, user_email: str, user: _UserLock) -> None:
        # Entries are dropped once unused, so the dict does not grow with every user ever seen.
        user.holders -= 1
        if user.holders == 0 and self._users.get(user_email) is user:
            del self._users[user_email]


class BookingHold:
    """One booking's count on its user's session, entered by ``async with``.

    A class with slots rather than an ``asynccontextmanager`` generator, because a
    parked booking keeps its hold entered until it fires: a suspended generator and its
    context manager cost about 0.6 KB per booking (tracemalloc, Python 3.11).
    """

    __slots__ = ("_locks", "_user_email", "_user")

    def __init__(self, locks: SessionLocks, user_email: str) -> None:
        self._locks = locks
        self._user_email = user_email
        self._user: _UserLock | None = None

    async def __aenter__(self) -> None:
        user = self._locks._acquire(self._user_email)
        try:
            # Without a condition no refresh holds the lock, and acquiring it would not wait.
            if user.condition is None:
                user.bookings += 1
            else:
                async with user.condition:
                    user.bookings += 1
        except BaseException:
            self._locks._release(self._user_email, user)
            raise
        self._user = user

    async def __aexit__(self, *exc_info: object) -> None:
        user, self._user = self._user, None
        if user is None:
            return
        try:
            # A refresh may have created the condition meanwhile and be waiting on it.
            if user.condition is None:
                user.bookings -= 1
            else:
                async with user.condition:
                    user.bookings -= 1
                    user.condition.notify_all()
        finally:
            self._locks._release(self._user_email, user)
