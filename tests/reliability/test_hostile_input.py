"""Hostile requests to a running gateway: each gets a clear 4xx, nothing is published, and the gateway keeps serving.

The callback cases are sent one after another to one gateway process, then a valid
callback must still book. The REST cases check that PREBOOK_MAX_BODY_BYTES and the
JSON parsing protect the authenticated routes too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import jwt
import pytest

from prebook_common.models import PrebookingStatus
from prebook_common.signatures import body_hash, sign
from prebook_common.token import make_token
from reliability.conftest import DeploymentFactory
from reliability.services import Deployment
from support.stack import BOX, BOX_ID, CURRENT_KEY, TOKEN_SECRET, now_ms

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]

LEAD_MS = 8000
TEN_MB = 10 * 1024 * 1024
# Deep enough to exhaust Python's recursion limit, small enough for the body limit.
NESTING_DEPTH = 30_000


@dataclass
class Valid:
    """A genuine callback that each case breaks in one way."""

    deployment: Deployment
    prebooking_id: uuid.UUID
    execute_at_ms: int
    body: bytes
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return self.deployment.stack.callback_url

    def signed(self, body: bytes) -> dict[str, str]:
        return {**self.headers, "Upstash-Signature": sign(body, self.url, CURRENT_KEY)}

    def fields(self, **changes: object) -> bytes:
        data = {
            "prebookingId": str(self.prebooking_id),
            "executeAt": self.execute_at_ms,
            "boxSubdomain": BOX,
            "boxAimharderId": BOX_ID,
            "securityToken": make_token(TOKEN_SECRET, self.prebooking_id, self.execute_at_ms),
            **changes,
        }
        return json.dumps(data).encode()


def _claims(valid: Valid, **changes: object) -> dict[str, object]:
    now_s = int(time.time())
    return {
        "iss": "Upstash", "sub": valid.url, "iat": now_s, "nbf": now_s, "exp": now_s + 300,
        "body": body_hash(valid.body), **changes,
    }  # fmt: skip


def _jwt(claims: dict[str, object], key: str = CURRENT_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _ten_mb_chunks() -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(TEN_MB // 65536):
            yield b" " * 65536

    return chunks


# Each case returns (body, headers) for one request, and the status and error it must get.
SignatureCase = Callable[[Valid], tuple[bytes, dict[str, str]]]

SIGNATURE_CASES: dict[str, tuple[SignatureCase, str]] = {
    "missing": (lambda v: (v.body, {k: h for k, h in v.headers.items() if k != "Upstash-Signature"}), "missing"),
    "malformed": (lambda v: (v.body, {**v.headers, "Upstash-Signature": "not.a-jwt"}), "malformed"),
    "alg-none": (
        lambda v: (v.body, {**v.headers, "Upstash-Signature": jwt.encode(_claims(v), None, algorithm="none")}),
        "algorithm",
    ),
    "hs512": (lambda v: (v.body, {**v.headers, "Upstash-Signature": _jwt(_claims(v), algorithm="HS512")}), "algorithm"),
    "wrong-key": (lambda v: (v.body, {**v.headers, "Upstash-Signature": _jwt(_claims(v), key="sig_someoneElsesKey")}), "key"),
    "wrong-sub": (
        lambda v: (v.body, {**v.headers, "Upstash-Signature": _jwt(_claims(v, sub="https://evil.example/v1/qstash/prepare"))}),
        "subject",
    ),
    "wrong-issuer": (lambda v: (v.body, {**v.headers, "Upstash-Signature": _jwt(_claims(v, iss="Mallory"))}), "issuer"),
    "expired": (
        lambda v: (v.body, {**v.headers, "Upstash-Signature": sign(v.body, v.url, CURRENT_KEY, now_s=time.time() - 3600)}),
        "expired",
    ),
    "not-yet-valid": (
        lambda v: (v.body, {**v.headers, "Upstash-Signature": sign(v.body, v.url, CURRENT_KEY, now_s=time.time() + 3600)}),
        "not_yet_valid",
    ),
    "body-edited": (lambda v: (v.body.replace(BOX.encode(), b"otherbox"), v.headers), "body"),
}

BodyCase = Callable[[Valid], bytes]

# Bodies signed with the real key: the signature passes and the body itself is the attack.
BODY_CASES: dict[str, tuple[BodyCase, str]] = {
    "deeply-nested": (lambda v: b"[" * NESTING_DEPTH + b"]" * NESTING_DEPTH, "invalid body"),
    "invalid-utf8": (lambda v: v.body[:20] + b"\xff\xfe\xc3\x28" + v.body[20:], "invalid body"),
    "not-json": (lambda v: b"prebookingId=1&executeAt=2", "invalid body"),
    "empty": (lambda v: b"", "invalid body"),
    "json-array": (lambda v: b"[1, 2, 3]", "invalid body"),
    "huge-execute-at": (lambda v: v.fields(executeAt=10**20, securityToken=make_token(TOKEN_SECRET, v.prebooking_id, 10**20)), "invalid body"),
    "5000-digit-execute-at": (lambda v: v.fields().replace(str(v.execute_at_ms).encode(), b"9" * 5000), "invalid body"),
    "negative-execute-at": (lambda v: v.fields(executeAt=-1), "invalid body"),
    "bad-box": (lambda v: v.fields(boxSubdomain="../../etc"), "invalid body"),
    "unknown-prebooking": (
        lambda v: v.fields(
            prebookingId=str(uuid.UUID(int=7)), securityToken=make_token(TOKEN_SECRET, uuid.UUID(int=7), v.execute_at_ms)
        ),
        "unknown prebooking",
    ),
}


async def _valid_callback(deployment: Deployment) -> Valid:
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8701, execute_at_ms)
    prebooking_id = await deployment.prebook(8701, execute_at_ms)
    body, headers = deployment.stack.callback(prebooking_id, execute_at_ms)
    return Valid(deployment, prebooking_id, execute_at_ms, body, headers)


async def test_hostile_callbacks_rejected(start: DeploymentFactory) -> None:
    deployment = await start()
    valid = await _valid_callback(deployment)
    answers: dict[str, httpx.Response] = {}

    async with deployment.gateway_client(timeout=30) as gateway:
        for name, (build, _) in SIGNATURE_CASES.items():
            body, headers = build(valid)
            answers[name] = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)
        for name, (build, _) in BODY_CASES.items():
            body = build(valid)
            answers[name] = await gateway.post("/v1/qstash/prepare", content=body, headers=valid.signed(body))
        answers["10-mb"] = await gateway.post("/v1/qstash/prepare", content=b" " * TEN_MB, headers=valid.headers)
        answers["10-mb-chunked"] = await gateway.post("/v1/qstash/prepare", content=_ten_mb_chunks()(), headers=valid.headers)

        # Nothing was published, and the same gateway still accepts a genuine callback.
        published_before = (await deployment.subject_counts()).get("prepare")
        accepted = await gateway.post("/v1/qstash/prepare", content=valid.body, headers=valid.headers)

    for name, (_, check) in SIGNATURE_CASES.items():
        assert answers[name].status_code == 401, (name, answers[name].text)
        assert answers[name].json()["check"] == check, name
    for name, (_, error) in BODY_CASES.items():
        assert answers[name].status_code == 489, (name, answers[name].text)
        assert answers[name].json()["error"] == error, name
        assert answers[name].headers["Upstash-NonRetryable-Error"] == "true", name
    for name in ("10-mb", "10-mb-chunked"):
        assert answers[name].status_code == 413, (name, answers[name].text)
        assert answers[name].json()["error"] == "body too large", name
    assert published_before is None
    assert accepted.status_code == 202, accepted.text
    row = await deployment.final_prebooking(valid.prebooking_id)
    assert row.status == PrebookingStatus.BOOKED
    assert (await deployment.subject_counts()).get("prepare") == 1
    assert len(await deployment.book_requests()) == 1


async def test_hostile_rest_bodies_rejected(start: DeploymentFactory) -> None:
    deployment = await start()
    email = "hostile@example.com"
    key = await deployment.create_user_key(email)
    auth = {"Authorization": f"Bearer {key}"}
    nested = b"[" * NESTING_DEPTH + b"]" * NESTING_DEPTH

    async with deployment.gateway_client(timeout=30, headers=auth) as gateway:
        big = await gateway.post("/v1/prebookings", content=b"{" + b" " * TEN_MB + b"}", headers={"Content-Type": "application/json"})
        big_chunked = await gateway.put(f"/v1/sessions/{email}", content=_ten_mb_chunks()(), headers={"Content-Type": "application/json"})
        nested_session = await gateway.put(f"/v1/sessions/{email}", content=nested, headers={"Content-Type": "application/json"})
        nested_prebooking = await gateway.post("/v1/prebookings", content=nested, headers={"Content-Type": "application/json"})
        huge_number = await gateway.put(
            f"/v1/sessions/{email}", content=b'{"cookies": {"amhrdrauth": ' + b"9" * 5000 + b"}}",
            headers={"Content-Type": "application/json"},
        )
        invalid_utf8 = await gateway.put(f"/v1/sessions/{email}", content=b'{"cookies": "\xff\xfe"}', headers={"Content-Type": "application/json"})
        still_serving = await gateway.get("/v1/me")

    assert big.status_code == 413, big.text
    assert big_chunked.status_code == 413, big_chunked.text
    assert big.json()["error"] == "body too large"
    for response in (nested_session, nested_prebooking, huge_number, invalid_utf8):
        assert 400 <= response.status_code < 500, (response.request.url, response.text)
    assert nested_session.status_code == 422
    assert still_serving.status_code == 200
    assert still_serving.json()["user_email"] == email
    assert "Traceback" not in deployment.gateway.logs_since_start()
