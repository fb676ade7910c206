"""The opening instant across Europe/Madrid's 2027 daylight-saving changes, and the window text.

Expected instants are worked out by hand: Madrid is UTC+1 (CET) until 2027-03-28
02:00 local, UTC+2 (CEST) until 2027-10-31 03:00 local, then UTC+1 again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from prebook_gateway.opening import BookingWindow, class_start, load_zone, opening_instant, parse_window_message

MADRID = load_zone("Europe/Madrid")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "start", "window", "expected"),
    [
        # Spring: the class is in CEST (07:00Z), the opening four days earlier in CET.
        ("2027-03-29", "09:00", BookingWindow(days=4), "2027-03-25T08:00:00"),
        ("2027-03-29", "09:00", BookingWindow(hours=96), "2027-03-25T07:00:00"),
        ("2027-03-28", "09:00", BookingWindow(days=1), "2027-03-27T08:00:00"),
        ("2027-03-28", "09:00", BookingWindow(hours=24), "2027-03-27T07:00:00"),
        # Autumn: the class is in CET (08:00Z), the opening before the change in CEST.
        ("2027-10-31", "09:00", BookingWindow(days=4), "2027-10-27T07:00:00"),
        ("2027-10-31", "09:00", BookingWindow(hours=96), "2027-10-27T08:00:00"),
        ("2027-11-01", "09:00", BookingWindow(days=2), "2027-10-30T07:00:00"),
        ("2027-11-01", "09:00", BookingWindow(hours=48), "2027-10-30T08:00:00"),
        # No change in between: days and hours agree.
        ("2027-01-20", "18:30", BookingWindow(days=4), "2027-01-16T17:30:00"),
        ("2027-01-20", "18:30", BookingWindow(hours=96), "2027-01-16T17:30:00"),
    ],
)
def test_opening_across_dst(day: str, start: str, window: BookingWindow, expected: str) -> None:
    begins = class_start(date.fromisoformat(day), time.fromisoformat(start), MADRID)
    assert opening_instant(begins, window) == utc(expected)


def test_opening_keeps_local_time_for_days() -> None:
    begins = class_start(date(2027, 3, 29), time(9, 0), MADRID)
    opens = opening_instant(begins, BookingWindow(days=4)).astimezone(MADRID)
    assert (opens.date(), opens.time()) == (date(2027, 3, 25), time(9, 0))


def test_class_start_in_repeated_hour_uses_first() -> None:
    # 02:30 happens twice on 2027-10-31; fold=0 is the first one, still CEST.
    begins = class_start(date(2027, 10, 31), time(2, 30), MADRID)
    assert begins.astimezone(UTC) == utc("2027-10-31T00:30:00")


def test_class_start_in_skipped_hour_uses_offset_before() -> None:
    # 02:30 does not exist on 2027-03-28; it resolves with CET, the offset before.
    begins = class_start(date(2027, 3, 28), time(2, 30), MADRID)
    assert begins.astimezone(UTC) == utc("2027-03-28T01:30:00")


def test_opening_rejects_naive_start() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        opening_instant(datetime(2027, 3, 29, 9, 0), BookingWindow(days=4))


@pytest.mark.parametrize("bad", [{}, {"days": 1, "hours": 1}, {"days": 0}, {"hours": -2}])
def test_window_rejects_invalid(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        BookingWindow(**bad)


def test_load_zone_names_unknown_zone() -> None:
    with pytest.raises(ValueError, match="'Europe/Atlantis'"):
        load_zone("Europe/Atlantis")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("No puedes reservar clases con más de 4 días de antelación", BookingWindow(days=4)),
        ("No puedes reservar clases con más de 1 día de antelación", BookingWindow(days=1)),
        ("No puedes reservar clases con más de 5 horas de antelación", BookingWindow(hours=5)),
        ("No puedes reservar clases con más de 1 hora de antelación", BookingWindow(hours=1)),
        ("No pots reservar classes amb més de 4 dies d'antelació", BookingWindow(days=4)),
        ("No pots reservar classes amb més de 1 dia d'antelació", BookingWindow(days=1)),
        ("No pots reservar classes amb més de 12 hores d'antelació", BookingWindow(hours=12)),
        ("No pots reservar classes amb més de 1 hora d'antelació", BookingWindow(hours=1)),
        ("You cannot book classes more than 4 days in advance", BookingWindow(days=4)),
        ("You cannot book classes more than 1 day in advance", BookingWindow(days=1)),
        ("You cannot book classes more than 48 hours in advance", BookingWindow(hours=48)),
        ("You cannot book classes more than 1 hour in advance", BookingWindow(hours=1)),
        # Without accents, in case a client or proxy strips them.
        ("No puedes reservar clases con mas de 3 dias de antelacion", BookingWindow(days=3)),
    ],
)
def test_parse_window_message(message: str, expected: BookingWindow) -> None:
    assert parse_window_message(message) == expected


@pytest.mark.parametrize(
    "message",
    [None, "", "La clase está completa", "No puedes reservar clases con más de 0 días de antelación", "4 semanas"],
)
def test_parse_window_message_without_window(message: str | None) -> None:
    assert parse_window_message(message) is None
