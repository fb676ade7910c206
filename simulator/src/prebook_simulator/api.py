"""AimHarder's box API: ``/api/book``, ``/api/bookings`` and ``/api/cancelBook``.

Responses are HTTP 200 JSON, as AimHarder sends them, except the 400 for an invalid
form field. A missing, unknown, expired or revoked ``amhrdrauth`` cookie gets
``{"logout": 1}``. Time comparisons use the request's arrival stamp plus the
configured clock offset, so a booking is too early exactly when its final byte
reached the machine before the opening instant.

Responses that are the simulator's own, because AimHarder's are not known:

- Unknown class id or day: ``{"bookState": -3, "errorMssg": "Clase no encontrada",
  "errorMssgLang": "ERROR_CLASE_NO_ENCONTRADA"}``. -3 is not among the known bookState
  codes (1, 0, -1, -2, -4, -5, -7, -8, -12), so prebook_common maps it to UNKNOWN.
- Missing or invalid form field: HTTP 400 ``{"error": "field 'day' ..."}``.
- Cancelling an unknown booking, or one of another user: ``{"cancelState": -1,
  "errorMssg": "Reserva no encontrada", "errorMssgLang": "ERROR_RESERVA_NO_ENCONTRADA"}``.
- The ``/api/bookings`` entries carry the fields built in ``_listing_entry``. They
  are a plausible subset of AimHarder's, not checked against the real service.

A person is a user plus a ``familyId``, so family members of one user book separately.
"""

from __future__ import annotations

import logging
from typing import Any

from prebook_simulator.config import SimulatorConfig
from prebook_simulator.fields import FieldError, check_day, read_form_day, read_form_flag, read_form_id
from prebook_simulator.localization import Text, localize
from prebook_simulator.messages import Request, Response, json_error
from prebook_simulator.state import BOOKED, WAITLISTED, GymClass, Session, SimulatorState

logger = logging.getLogger(__name__)

SESSION_COOKIE = "amhrdrauth"
LOGOUT = {"logout": 1}

CLASS_NOT_FOUND_STATE = -3


class BoxApi:
    """Handlers of the box routes, working on shared state and configuration."""

    def __init__(self, state: SimulatorState, config: SimulatorConfig) -> None:
        self._state = state
        self._config = config

    def book(self, request: Request, now_ns: int) -> Response:
        session = self.session_of(request, now_ns)
        if session is None:
            return Response(200, LOGOUT)

        form = request.form()
        try:
            class_id = read_form_id(form, "id")
            day = read_form_day(form, "day")
            insist = read_form_flag(form, "insist")
        except FieldError as error:
            return json_error(400, str(error))
        family_id = form.get("familyId", "")

        gym_class = self._state.find_class(class_id, day)
        if gym_class is None:
            return self._book_error(CLASS_NOT_FOUND_STATE, Text.CLASS_NOT_FOUND, "ERROR_CLASE_NO_ENCONTRADA")

        if gym_class.opens_at_ms is not None and now_ns < gym_class.opens_at_ms * 1_000_000:
            return self._too_early(gym_class)

        if self._state.booking_of_person(gym_class, session.user, family_id) is not None:
            return self._book_error(-12, Text.SAME_TIME, "NOPUEDESRESERVAMISMAHORA")

        if self._state.occupancy(gym_class) < gym_class.capacity:
            state = BOOKED
        elif insist:
            state = WAITLISTED
        else:
            return self._book_error(-1, Text.CLASS_FULL, "ERROR_CLASE_COMPLETA")

        booking = self._state.add_booking(gym_class, session.user, family_id, state, request.arrival_ns)
        logger.debug(
            "Booked class %s on %s for %s: booking %s, bookState %s",
            class_id, day, session.user, booking.id, state,
        )
        return Response(200, {"clasesContratadas": "", "bookState": state, "id": str(booking.id)})

    def list_bookings(self, request: Request, now_ns: int) -> Response:
        session = self.session_of(request, now_ns)
        if session is None:
            return Response(200, LOGOUT)

        query = request.query
        try:
            day = check_day("day", query.get("day", ""))
        except FieldError as error:
            return json_error(400, str(error))
        family_id = query.get("familyId", "")
        box = query.get("box", "")

        classes = [
            gym_class
            for gym_class in self._state.classes.values()
            if gym_class.day == day and (not box or gym_class.box is None or gym_class.box == box)
        ]
        classes.sort(key=lambda gym_class: (gym_class.time, gym_class.id))

        entries = [self._listing_entry(gym_class, session, family_id) for gym_class in classes]
        timetable = {_time_id(gym_class.time): gym_class.time for gym_class in classes}
        return Response(200, {
            "bookings": entries,
            "day": day,
            "timetable": [{"id": time_id, "time": time} for time_id, time in timetable.items()],
        })

    def cancel(self, request: Request, now_ns: int) -> Response:
        session = self.session_of(request, now_ns)
        if session is None:
            return Response(200, LOGOUT)

        form = request.form()
        try:
            booking_id = read_form_id(form, "id")
        except FieldError as error:
            return json_error(400, str(error))

        booking = self._state.bookings.get(booking_id)
        if booking is None or booking.user != session.user:
            return Response(200, {
                "cancelState": -1,
                "errorMssg": localize(self._config.lang, Text.BOOKING_NOT_FOUND),
                "errorMssgLang": "ERROR_RESERVA_NO_ENCONTRADA",
            })

        promoted = self._state.cancel_booking(booking)
        if promoted is not None:
            logger.debug("Cancelling booking %s moved waitlisted booking %s into the class", booking.id, promoted.id)

        return Response(200, {"cancelState": 1})

    def session_of(self, request: Request, now_ns: int) -> Session | None:
        """Return the live session named by the request's cookie, or None."""
        session = self._state.session_by_cookie(request.cookies().get(SESSION_COOKIE))
        if session is None or not session.is_live(now_ns):
            return None

        return session

    def _too_early(self, gym_class: GymClass) -> Response:
        if gym_class.window_unit == "hours":
            text, code = Text.TOO_EARLY_HOURS, "ERROR_ANTELACION_CLIENTE_HORAS"
        else:
            text, code = Text.TOO_EARLY_DAYS, "ERROR_ANTELACION_CLIENTE"

        return Response(200, {
            "bookState": -12,
            "errorMssg": localize(self._config.lang, text, window=gym_class.window),
            "errorMssgLang": code,
        })

    def _book_error(self, book_state: int, text: Text, code: str) -> Response:
        return Response(200, {
            "bookState": book_state,
            "errorMssg": localize(self._config.lang, text),
            "errorMssgLang": code,
        })

    def _listing_entry(self, gym_class: GymClass, session: Session, family_id: str) -> dict[str, Any]:
        bookings = self._state.bookings_of_class(gym_class)
        own = self._state.booking_of_person(gym_class, session.user, family_id)
        return {
            "id": gym_class.id,
            "time": gym_class.time,
            "timeid": _time_id(gym_class.time),
            "className": gym_class.name,
            "ocupation": sum(1 for booking in bookings if booking.state == BOOKED),
            "limit": gym_class.capacity,
            "waitlist": sum(1 for booking in bookings if booking.state == WAITLISTED),
            "bookState": None if own is None else own.state,
            "id_activity": gym_class.activity_id,
        }


def _time_id(time_range: str) -> str:
    """Return the slot id of "HH:MM - HH:MM": start HHMM, "_", length in minutes ("0700_60")."""
    start, _, end = time_range.partition(" - ")
    start_minutes = int(start[:2]) * 60 + int(start[3:5])
    end_minutes = int(end[:2]) * 60 + int(end[3:5])
    duration = (end_minutes - start_minutes) % (24 * 60)
    return f"{start[:2]}{start[3:5]}_{duration}"
