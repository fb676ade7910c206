"""Classes, sessions, users and bookings held by the simulator, all in memory."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any, Literal

BOOKED = 1
WAITLISTED = 0

# Booking ids keep counting across resets, so a client never sees one id twice.
_FIRST_BOOKING_ID = 100_000_001


@dataclass
class GymClass:
    """One class session: AimHarder's class ``id`` on one ``day`` (YYYYMMDD).

    ``opens_at_ms`` is the opening instant in epoch ms, or None for open now.
    ``window`` and ``window_unit`` are the booking window quoted in the too-early text.
    ``box`` is None for a class that every box listing shows.
    """

    id: int
    day: str
    capacity: int
    opens_at_ms: int | None
    window: int
    window_unit: Literal["days", "hours"]
    name: str
    time: str
    box: str | None
    activity_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "day": self.day,
            "capacity": self.capacity,
            "opens_at_ms": self.opens_at_ms,
            f"window_{self.window_unit}": self.window,
            "name": self.name,
            "time": self.time,
            "box": self.box,
            "activity_id": self.activity_id,
        }


@dataclass
class Session:
    """A logged-in session. ``expires_at_ms`` None means it never expires."""

    user: str
    cookie: str
    token: str
    fingerprint: str | None
    expires_at_ms: int | None

    def is_live(self, now_ns: int) -> bool:
        return self.expires_at_ms is None or now_ns < self.expires_at_ms * 1_000_000

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "cookie": self.cookie,
            "token": self.token,
            "fingerprint": self.fingerprint,
            "expires_at_ms": self.expires_at_ms,
        }


@dataclass
class Booking:
    """A place in a class or on its waitlist, held by a user or one of their family."""

    id: int
    user: str
    family_id: str
    class_id: int
    day: str
    state: int
    arrival_ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "user": self.user,
            "family_id": self.family_id,
            "class_id": self.class_id,
            "day": self.day,
            "book_state": self.state,
            "arrival_ns": self.arrival_ns,
        }


class SimulatorState:
    """The mutable data behind both the AimHarder API and the control API."""

    def __init__(self) -> None:
        self._booking_ids = itertools.count(_FIRST_BOOKING_ID)
        self.clear()

    def clear(self) -> None:
        self.classes: dict[tuple[int, str], GymClass] = {}
        self.users: dict[str, str] = {}
        self.bookings: dict[int, Booking] = {}
        self._sessions_by_cookie: dict[str, Session] = {}
        self._sessions_by_token: dict[str, Session] = {}

    # Classes

    def put_class(self, gym_class: GymClass) -> None:
        self.classes[(gym_class.id, gym_class.day)] = gym_class

    def find_class(self, class_id: int, day: str) -> GymClass | None:
        return self.classes.get((class_id, day))

    # Sessions

    def put_session(self, session: Session) -> None:
        """Store ``session``, replacing any session with the same cookie or token."""
        self._remove_session(self._sessions_by_cookie.get(session.cookie))
        self._remove_session(self._sessions_by_token.get(session.token))
        self._sessions_by_cookie[session.cookie] = session
        self._sessions_by_token[session.token] = session

    def start_session(self, user: str, fingerprint: str | None, expires_at_ms: int) -> Session:
        session = Session(
            user=user,
            cookie=new_cookie_value(),
            token=secrets.token_hex(32),
            fingerprint=fingerprint,
            expires_at_ms=expires_at_ms,
        )
        self.put_session(session)
        return session

    def renew_session(self, session: Session, expires_at_ms: int) -> None:
        """Give ``session`` a new cookie value and expiry. The old cookie stops working."""
        del self._sessions_by_cookie[session.cookie]
        session.cookie = new_cookie_value()
        session.expires_at_ms = expires_at_ms
        self._sessions_by_cookie[session.cookie] = session

    def session_by_cookie(self, cookie: str | None) -> Session | None:
        if cookie is None:
            return None

        return self._sessions_by_cookie.get(cookie)

    def session_by_token(self, token: str) -> Session | None:
        return self._sessions_by_token.get(token)

    def revoke_session(self, cookie: str) -> bool:
        """Delete the session with this cookie value and return whether there was one."""
        session = self._sessions_by_cookie.get(cookie)
        self._remove_session(session)
        return session is not None

    def _remove_session(self, session: Session | None) -> None:
        if session is None:
            return

        self._sessions_by_cookie.pop(session.cookie, None)
        self._sessions_by_token.pop(session.token, None)

    # Bookings

    def bookings_of_class(self, gym_class: GymClass) -> list[Booking]:
        """Return the class's bookings in booking order, waitlisted ones included."""
        return [
            booking
            for booking in self.bookings.values()
            if booking.class_id == gym_class.id and booking.day == gym_class.day
        ]

    def occupancy(self, gym_class: GymClass) -> int:
        return sum(1 for booking in self.bookings_of_class(gym_class) if booking.state == BOOKED)

    def booking_of_person(self, gym_class: GymClass, user: str, family_id: str) -> Booking | None:
        for booking in self.bookings_of_class(gym_class):
            if booking.user == user and booking.family_id == family_id:
                return booking

        return None

    def add_booking(self, gym_class: GymClass, user: str, family_id: str, state: int, arrival_ns: int) -> Booking:
        booking = Booking(
            id=next(self._booking_ids),
            user=user,
            family_id=family_id,
            class_id=gym_class.id,
            day=gym_class.day,
            state=state,
            arrival_ns=arrival_ns,
        )
        self.bookings[booking.id] = booking
        return booking

    def cancel_booking(self, booking: Booking) -> Booking | None:
        """Delete ``booking`` and move the first waitlisted person into a freed place.

        Returns the promoted booking, or None when nobody was promoted.
        """
        del self.bookings[booking.id]

        gym_class = self.find_class(booking.class_id, booking.day)
        if gym_class is None or self.occupancy(gym_class) >= gym_class.capacity:
            return None

        for waiting in self.bookings_of_class(gym_class):
            if waiting.state == WAITLISTED:
                waiting.state = BOOKED
                return waiting

        return None


def new_cookie_value() -> str:
    return secrets.token_hex(32)
