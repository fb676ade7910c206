"""Tests of the event payloads published on JetStream."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from prebook_common.events import (
    PrebookingCancelled,
    PrebookingCompleted,
    PrebookingCreated,
    PrebookingPrepare,
    prepare_message_id,
)

PREBOOKING_ID = uuid.UUID("6f1c2b9e-4a55-4c1e-9d39-0b2f6f0c8a11")
EXECUTE_AT_MS = 1_767_938_400_000


def _prepare(**changes: object) -> PrebookingPrepare:
    fields: dict[str, object] = {
        "prebooking_id": PREBOOKING_ID,
        "box_subdomain": "crossfitbox",
        "box_aimharder_id": "10122",
        "execute_at_ms": EXECUTE_AT_MS,
        "qstash_message_id": "msg_26hZCxZCuWyyTWPmSVBrNB882AMRP",
        "retried": 1,
        "received_at_ns": 1_767_938_395_000_123_456,
    }
    fields.update(changes)
    return PrebookingPrepare(**fields)


def test_prepare_uses_schema_key() -> None:
    payload = json.loads(_prepare().to_bytes())

    assert payload["schema"] == "prebooking.prepare/1"
    assert "schema_" not in payload


def test_prepare_payload_fields() -> None:
    payload = json.loads(_prepare().to_bytes())

    assert payload["prebooking_id"] == str(PREBOOKING_ID)
    assert payload["execute_at_ms"] == EXECUTE_AT_MS
    assert payload["retried"] == 1
    assert payload["received_at_ns"] == 1_767_938_395_000_123_456


def test_prepare_round_trip() -> None:
    event = _prepare()

    assert PrebookingPrepare.model_validate_json(event.to_bytes()) == event


def test_prepare_message_id() -> None:
    event = _prepare()

    assert event.message_id == f"{PREBOOKING_ID}:{EXECUTE_AT_MS}"
    assert prepare_message_id(str(PREBOOKING_ID), EXECUTE_AT_MS) == event.message_id


def test_message_id_ignores_delivery_details() -> None:
    # A QStash retry carries another message id and retry count but is the same prepare.
    first = _prepare(qstash_message_id="msg_first", retried=0, received_at_ns=1)
    retry = _prepare(qstash_message_id="msg_retry", retried=3, received_at_ns=2)

    assert first.message_id == retry.message_id


def test_message_id_differs_per_instant() -> None:
    rescheduled = _prepare(execute_at_ms=EXECUTE_AT_MS + 60_000)

    assert rescheduled.message_id != _prepare().message_id


def test_prepare_rejects_other_schema() -> None:
    payload = json.loads(_prepare().to_bytes())
    payload["schema"] = "prebooking.prepare/2"

    with pytest.raises(ValidationError):
        PrebookingPrepare.model_validate(payload)


def test_prepare_requires_received_at() -> None:
    payload = json.loads(_prepare().to_bytes())
    del payload["received_at_ns"]

    with pytest.raises(ValidationError):
        PrebookingPrepare.model_validate(payload)


def test_event_is_frozen() -> None:
    event = _prepare()

    with pytest.raises(ValidationError):
        event.retried = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("event", "schema", "subject_name"),
    [
        pytest.param(
            PrebookingCreated(prebooking_id=PREBOOKING_ID, execute_at_ms=EXECUTE_AT_MS),
            "prebooking.created/1",
            "created",
            id="created",
        ),
        pytest.param(
            PrebookingCancelled(prebooking_id=PREBOOKING_ID, execute_at_ms=EXECUTE_AT_MS),
            "prebooking.cancelled/1",
            "cancelled",
            id="cancelled",
        ),
        pytest.param(
            PrebookingCompleted(
                prebooking_id=PREBOOKING_ID,
                status="booked",
                outcome="booked",
                book_state=1,
                booking_id="98765432",
                fired_at_ms=EXECUTE_AT_MS,
                fire_latency_us=87,
                response_ms=41.5,
                attempts=1,
            ),
            "prebooking.completed/1",
            "completed",
            id="completed",
        ),
    ],
)
def test_event_schema_and_round_trip(event, schema: str, subject_name: str) -> None:
    payload = json.loads(event.to_bytes())

    assert payload["schema"] == schema
    assert "schema_" not in payload
    assert event.subject_name == subject_name
    assert type(event).model_validate_json(event.to_bytes()) == event


def test_completed_keeps_spanish_message() -> None:
    message = "No puedes reservar clases con más de 4 días de antelación"
    event = PrebookingCompleted(prebooking_id=PREBOOKING_ID, status="failed", error_message=message)

    loaded = PrebookingCompleted.model_validate_json(event.to_bytes())

    assert loaded.error_message == message
