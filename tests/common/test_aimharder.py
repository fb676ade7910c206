"""Tests of AimHarder's booking protocol: parsing /api/book responses and building the request."""

from __future__ import annotations

import json
from datetime import date
from urllib.parse import parse_qs

import pytest

from prebook_common.aimharder import BookOutcome, build_book_request, parse_book_answer

TOO_EARLY_MESSAGE = "No puedes reservar clases con más de 4 días de antelación"
BOX_URL = "https://crossfitbox.aimharder.com"


def _answer(http_status: int = 200, **fields: object):
    return parse_book_answer(http_status, json.dumps(fields).encode())


# --- bookState mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("book_state", "outcome"),
    [
        (1, BookOutcome.BOOKED),
        (0, BookOutcome.WAITLISTED),
        (-1, BookOutcome.FULL),
        (-2, BookOutcome.NO_CREDITS),
        (-4, BookOutcome.TOO_EARLY),
        (-5, BookOutcome.PAYMENT_PENDING),
        (-7, BookOutcome.TOO_LATE),
        (-8, BookOutcome.DAILY_LIMIT),
    ],
)
def test_book_state_maps_to_outcome(book_state: int, outcome: BookOutcome) -> None:
    answer = _answer(bookState=book_state, clasesContratadas="")

    assert answer.outcome is outcome
    assert answer.book_state == book_state
    assert answer.http_status == 200


@pytest.mark.parametrize("error_code", ["ERROR_ANTELACION_CLIENTE", "ERROR_ANTELACION_CLIENTE_HORAS"])
def test_minus_12_antelacion_is_too_early(error_code: str) -> None:
    answer = _answer(bookState=-12, errorMssg=TOO_EARLY_MESSAGE, errorMssgLang=error_code)

    assert answer.outcome is BookOutcome.TOO_EARLY
    assert answer.error_code == error_code
    assert not answer.is_success
    assert not answer.is_final


def test_minus_12_same_hour_is_success() -> None:
    answer = _answer(
        bookState=-12,
        errorMssg="No puedes reservar dos clases a la misma hora",
        errorMssgLang="NOPUEDESRESERVAMISMAHORA",
    )

    assert answer.outcome is BookOutcome.ALREADY_BOOKED
    assert answer.is_success
    assert answer.is_final


def test_minus_12_other_code_is_unknown() -> None:
    answer = _answer(bookState=-12, errorMssg="Otro error", errorMssgLang="ERROR_DESCONOCIDO")

    assert answer.outcome is BookOutcome.UNKNOWN
    assert not answer.is_success


def test_daily_limit_keeps_max() -> None:
    answer = _answer(bookState=-8, max=2, errorMssg="Has alcanzado el máximo de reservas diarias")

    assert answer.outcome is BookOutcome.DAILY_LIMIT
    assert answer.daily_max == 2


def test_booked_keeps_booking_id() -> None:
    answer = _answer(bookState=1, id="98765432", clasesContratadas="10")

    assert answer.booking_id == "98765432"
    assert answer.is_success


def test_waitlisted_keeps_booking_id() -> None:
    answer = _answer(bookState=0, id="98765433")

    assert answer.booking_id == "98765433"
    assert answer.is_success


def test_numeric_booking_id_becomes_text() -> None:
    answer = _answer(bookState=1, id=98765432)

    assert answer.booking_id == "98765432"


@pytest.mark.parametrize("book_state", [-1, -2, -4, -5, -7, -8])
def test_failure_drops_booking_id(book_state: int) -> None:
    answer = _answer(bookState=book_state, id="98765432")

    assert answer.booking_id is None
    assert not answer.is_success


def test_already_booked_drops_booking_id() -> None:
    answer = _answer(bookState=-12, errorMssgLang="NOPUEDESRESERVAMISMAHORA", id="98765432")

    assert answer.booking_id is None


@pytest.mark.parametrize(
    "outcome_fields",
    [
        pytest.param({"bookState": 1}, id="booked"),
        pytest.param({"bookState": 0}, id="waitlisted"),
        pytest.param({"bookState": -1}, id="full"),
        pytest.param({"bookState": -2}, id="no-credits"),
        pytest.param({"bookState": -5}, id="payment-pending"),
        pytest.param({"bookState": -7}, id="too-late"),
        pytest.param({"bookState": -8, "max": 1}, id="daily-limit"),
        pytest.param({"bookState": -12, "errorMssgLang": "NOPUEDESRESERVAMISMAHORA"}, id="same-hour"),
        pytest.param({"bookState": 99}, id="unknown"),
        pytest.param({"logout": 1}, id="logout"),
    ],
)
def test_only_too_early_is_not_final(outcome_fields: dict[str, object]) -> None:
    answer = _answer(**outcome_fields)

    assert answer.is_final


def test_minus_4_is_not_final() -> None:
    answer = _answer(bookState=-4, errorMssg=TOO_EARLY_MESSAGE)

    assert not answer.is_final


def test_book_state_string_is_read() -> None:
    answer = parse_book_answer(200, b'{"bookState": "1", "id": "555"}')

    assert answer.outcome is BookOutcome.BOOKED
    assert answer.book_state == 1
    assert answer.booking_id == "555"


def test_unknown_book_state_is_unknown() -> None:
    answer = _answer(bookState=42)

    assert answer.outcome is BookOutcome.UNKNOWN
    assert answer.book_state == 42
    assert not answer.is_success
    assert answer.is_final


def test_missing_book_state_is_unknown() -> None:
    answer = _answer(clasesContratadas="10")

    assert answer.outcome is BookOutcome.UNKNOWN
    assert answer.book_state is None
    assert not answer.is_success


def test_spanish_message_kept_exactly() -> None:
    body = json.dumps(
        {"bookState": -12, "errorMssg": TOO_EARLY_MESSAGE, "errorMssgLang": "ERROR_ANTELACION_CLIENTE"},
        ensure_ascii=False,
    ).encode()

    answer = parse_book_answer(200, body)

    assert answer.error_message == TOO_EARLY_MESSAGE
    assert answer.error_message.encode() == TOO_EARLY_MESSAGE.encode()


def test_escaped_spanish_message_decoded() -> None:
    # JSON encoders may escape non-ASCII letters as \u00e1, as PHP's json_encode does by default.
    body = json.dumps({"bookState": -1, "errorMssg": "Clase completa, lo sentimos: más suerte"}).encode()
    assert b"\\u00e1" in body

    answer = parse_book_answer(200, body)

    assert answer.error_message == "Clase completa, lo sentimos: más suerte"


# --- session expired ------------------------------------------------------------------------


@pytest.mark.parametrize("http_status", [200, 401, 403])
def test_logout_is_auth_failed(http_status: int) -> None:
    answer = parse_book_answer(http_status, b'{"logout": 1}')

    assert answer.outcome is BookOutcome.AUTH_FAILED
    assert answer.http_status == http_status
    assert not answer.is_success


def test_logout_wins_over_book_state() -> None:
    answer = parse_book_answer(200, b'{"logout": 1, "bookState": 1, "id": "98765432"}')

    assert answer.outcome is BookOutcome.AUTH_FAILED
    assert not answer.is_success
    assert answer.booking_id is None


def test_logout_message_names_fix() -> None:
    answer = parse_book_answer(200, b'{"logout": 1}')

    assert answer.error_code == "LOGOUT"
    assert answer.error_message is not None
    assert "session" in answer.error_message


# --- responses that are not a JSON object ----------------------------------------------------


def test_non_json_body_is_unknown() -> None:
    answer = parse_book_answer(200, b"ok")

    assert answer.outcome is BookOutcome.UNKNOWN
    assert answer.error_code == "HTTP_200"
    assert not answer.is_success


def test_empty_body_is_unknown() -> None:
    answer = parse_book_answer(200, b"")

    assert answer.outcome is BookOutcome.UNKNOWN
    assert not answer.is_success


def test_invalid_utf8_is_unknown() -> None:
    answer = parse_book_answer(200, b"\xff\xfe\xfa not text")

    assert answer.outcome is BookOutcome.UNKNOWN
    assert not answer.is_success


def test_json_array_is_unknown() -> None:
    answer = parse_book_answer(200, b'[{"bookState": 1}]')

    assert answer.outcome is BookOutcome.UNKNOWN
    assert answer.error_code == "UNEXPECTED_ANSWER"
    assert not answer.is_success


def test_http_500_html_is_unknown() -> None:
    html = b"<html><head><title>500 Internal Server Error</title></head><body>Error</body></html>"

    answer = parse_book_answer(500, html)

    assert answer.outcome is BookOutcome.UNKNOWN
    assert answer.http_status == 500
    assert answer.error_code == "HTTP_500"
    assert answer.error_message is not None
    assert "500 Internal Server Error" in answer.error_message
    assert not answer.is_success
    assert answer.is_final


# --- build_book_request --------------------------------------------------------------------


COOKIES = {
    "amhrdrauth": "session-cookie-value",
    "AWSALB": "alb-value",
    "AWSALBCORS": "alb-cors-value",
    "PHPSESSID": "php-session-value",
    "_ga": "analytics-value",
    "cookieConsent": "yes",
}


def _request(**changes: object):
    arguments: dict[str, object] = {
        "class_id": "123456",
        "class_day": date(2026, 1, 9),
        "insist": False,
        "family_id": None,
        "cookies": COOKIES,
    }
    arguments.update(changes)
    return build_book_request(BOX_URL, **arguments)


def _headers(request) -> dict[str, str]:
    return dict(request.headers)


def _form(request) -> dict[str, list[str]]:
    return parse_qs(request.body.decode(), keep_blank_values=True)


def test_request_url_is_book_path() -> None:
    request = _request()

    assert request.url == "https://crossfitbox.aimharder.com/api/book"


def test_request_form_fields() -> None:
    form = _form(_request())

    assert form == {"id": ["123456"], "day": ["20260109"], "insist": ["0"], "familyId": [""]}


def test_request_insist_and_family() -> None:
    form = _form(_request(insist=True, family_id="777"))

    assert form["insist"] == ["1"]
    assert form["familyId"] == ["777"]


def test_request_day_is_zero_padded() -> None:
    form = _form(_request(class_day=date(2026, 3, 5)))

    assert form["day"] == ["20260305"]


def test_request_cookie_header() -> None:
    cookie_header = _headers(_request())["Cookie"]
    sent = dict(part.split("=", 1) for part in cookie_header.split("; "))

    assert sent["amhrdrauth"] == "session-cookie-value"
    assert sent["AWSALB"] == "alb-value"
    assert sent["AWSALBCORS"] == "alb-cors-value"
    assert sent["PHPSESSID"] == "php-session-value"
    assert "_ga" not in sent
    assert "cookieConsent" not in sent


def test_request_skips_missing_companions() -> None:
    cookie_header = _headers(_request(cookies={"amhrdrauth": "only-session"}))["Cookie"]

    assert cookie_header == "amhrdrauth=only-session"


def test_request_ajax_headers() -> None:
    headers = _headers(_request())

    assert headers["X-Requested-With"] == "XMLHttpRequest"
    assert headers["Origin"] == "https://crossfitbox.aimharder.com"
    assert headers["Referer"].startswith("https://crossfitbox.aimharder.com/")
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")


def test_request_origin_of_local_box() -> None:
    request = build_book_request(
        "http://127.0.0.1:8123",
        class_id="1",
        class_day=date(2026, 1, 9),
        insist=False,
        family_id=None,
        cookies={"amhrdrauth": "x"},
    )

    assert request.url == "http://127.0.0.1:8123/api/book"
    assert _headers(request)["Origin"] == "http://127.0.0.1:8123"


def test_request_headers_are_unique() -> None:
    names = [name.lower() for name, _ in _request().headers]

    assert len(names) == len(set(names))
