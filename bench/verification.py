"""Callback verification cost: ``QStashVerifier.verify`` and ``verify_token``, per call.

Each call is timed on its own with ``time.perf_counter_ns`` to give percentiles, and a
``timeit`` loop over the same calls gives the mean without the per-call clock reads.
The signed bodies are distinct, as QStash's deliveries are.

Run: ``uv run python bench/verification.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
import uuid
from collections.abc import Callable

import joserfc
import joserfc.jwt
import jwt
from harness import Machine, command_line, markdown_table, summarize, write_section

from joserfc.jwk import OctKey

from prebook_common.signatures import QStashVerifier, sign
from prebook_common.token import make_token, verify_token
from prebook_gateway.callback_body import CallbackBody

CURRENT_KEY = "sig_benchCurrentKey0123456789abcdefghij"
NEXT_KEY = "sig_benchNextKey0123456789abcdefghijklmn"
TOKEN_SECRET = "bench-token-secret-0123456789abcdef0123456789abcdef"
CALLBACK_URL = "https://prebook.example.com/v1/qstash/prepare"
DISTINCT_CALLBACKS = 1_000
WARM_UP_CALLS = 1_000
TARGET_US = 50


def make_callbacks(count: int, key: str) -> list[tuple[bytes, str, uuid.UUID, int, str]]:
    """Return ``count`` signed callbacks: body, signature, prebooking id, executeAt, token."""
    callbacks = []
    execute_at_ms = time.time_ns() // 1_000_000 + 60_000
    for index in range(count):
        prebooking_id = uuid.uuid4()
        token = make_token(TOKEN_SECRET, prebooking_id, execute_at_ms + index)
        body = json.dumps(
            {
                "prebookingId": str(prebooking_id),
                "executeAt": execute_at_ms + index,
                "boxSubdomain": "benchbox",
                "boxAimharderId": 4242,
                "securityToken": token,
            }
        ).encode()
        callbacks.append((body, sign(body, CALLBACK_URL, key), prebooking_id, execute_at_ms + index, token))
    return callbacks


def time_each(call: Callable[[int], object], calls: int) -> list[int]:
    """Return the duration of each of ``calls`` calls of ``call(index)`` in nanoseconds."""
    for index in range(WARM_UP_CALLS):
        call(index)
    durations = []
    for index in range(calls):
        started = time.perf_counter_ns()
        call(index)
        durations.append(time.perf_counter_ns() - started)
    return durations


def mean_us(call: Callable[[int], object], calls: int) -> float:
    """Return the mean µs per call of a timeit loop, the best of 5 repeats."""
    timer = timeit.Timer(lambda: [call(index) for index in range(calls)])
    return min(timer.repeat(repeat=5, number=1)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the cost of verifying one QStash callback.")
    parser.add_argument("--quick", action="store_true", help="time 2,000 calls per case instead of 20,000")
    arguments = parser.parse_args()
    calls = 2_000 if arguments.quick else 20_000

    machine = Machine.read()
    print(f"Load average at start: {machine.describe_load()}")
    verifier = QStashVerifier(CURRENT_KEY, NEXT_KEY, CALLBACK_URL)
    current = make_callbacks(DISTINCT_CALLBACKS, CURRENT_KEY)
    rotated = make_callbacks(DISTINCT_CALLBACKS, NEXT_KEY)

    def verify_current(index: int) -> object:
        body, signature, *_ = current[index % DISTINCT_CALLBACKS]
        return verifier.verify(signature, body)

    def verify_next(index: int) -> object:
        body, signature, *_ = rotated[index % DISTINCT_CALLBACKS]
        return verifier.verify(signature, body)

    def check_token(index: int) -> None:
        _, _, prebooking_id, execute_at_ms, token = current[index % DISTINCT_CALLBACKS]
        verify_token(TOKEN_SECRET, prebooking_id, execute_at_ms, token)

    def verify_callback(index: int) -> None:
        # What the gateway checks per callback: the signature, then the token.
        verify_current(index)
        check_token(index)

    joserfc_key = OctKey.import_key(CURRENT_KEY)

    def decode_joserfc(index: int) -> object:
        return joserfc.jwt.decode(current[index % DISTINCT_CALLBACKS][1], joserfc_key, algorithms=["HS256"])

    def decode_pyjwt(index: int) -> object:
        signature = current[index % DISTINCT_CALLBACKS][1]
        return jwt.decode(signature, CURRENT_KEY, algorithms=["HS256"], issuer="Upstash", leeway=5)

    def parse_body(index: int) -> object:
        body = current[index % DISTINCT_CALLBACKS][0]
        return CallbackBody.model_validate(json.loads(body))

    cases = [
        ("QStashVerifier.verify, signed with the current key", verify_current),
        ("QStashVerifier.verify, signed with the next key (current key tried first)", verify_next),
        ("verify_token", check_token),
        ("per callback: verify (current key) + verify_token", verify_callback),
        ("part of verify: joserfc jwt.decode (HS256 signature, no claim checks)", decode_joserfc),
        ("for comparison: PyJWT jwt.decode (HS256, issuer, times)", decode_pyjwt),
        ("for comparison: json.loads + CallbackBody.model_validate", parse_body),
    ]

    started = time.monotonic()
    rows = []
    summaries = {}
    for label, call in cases:
        summary = summarize(time_each(call, calls))
        mean = mean_us(call, calls)
        summaries[label] = summary
        rows.append([label, f"{summary.count:,}", *summary.cells(1_000, 1), f"{mean:.1f}"])
        print(f"{label:<78} p50 {summary.p50 / 1000:6.1f} us  p99 {summary.p99 / 1000:6.1f} us  mean {mean:6.1f} us")
    elapsed_s = time.monotonic() - started

    per_callback = summaries["per callback: verify (current key) + verify_token"]
    rotated_p50 = summaries["QStashVerifier.verify, signed with the next key (current key tried first)"].p50
    rotated_p50 += summaries["verify_token"].p50
    p50_us = per_callback.p50 / 1000
    p99_us = per_callback.p99 / 1000
    if p50_us <= TARGET_US:
        verdict = f"met at the median ({p50_us:.1f} µs ≤ {TARGET_US} µs), p99 {p99_us:.1f} µs"
    else:
        verdict = f"**not met**: {p50_us:.1f} µs per callback at the median, {p50_us - TARGET_US:.1f} µs over {TARGET_US} µs (p99 {p99_us:.1f} µs)"

    section = f"""## Callback verification

Cost of the checks the gateway makes on each QStash callback, in the benchmark's own
process: `QStashVerifier.verify` (the HS256 JWT with joserfc, its claims and the body
hash) and `verify_token` (the prebooking's HMAC-SHA256). {DISTINCT_CALLBACKS:,} distinct
signed bodies are used in turn. Each call is timed alone with `time.perf_counter_ns`
after {WARM_UP_CALLS:,} warm-up calls, and the mean column is the best of 5 `timeit`
loops over the same calls. The row marked "part of verify" times joserfc's decode and
signature check alone, and the PyJWT row shows what the same check costs with the
library the verifier used before.

{machine.markdown()}
- Command: `{command_line()}` ({elapsed_s:.0f} s)

{markdown_table(["case", "calls", "p50 µs", "p90 µs", "p99 µs", "max µs", "mean µs"], rows)}

Target, verification ≤ {TARGET_US} µs per callback: {verdict}. During a key rotation
(signed with the next key) the median of the signature plus the token is
{rotated_p50 / 1000:.1f} µs. Versions: joserfc {joserfc.__version__}, PyJWT {jwt.__version__}.
"""
    print(f"joserfc {joserfc.__version__}, PyJWT {jwt.__version__}")
    print(f"Load average at the end: {Machine.read().describe_load()}")
    write_section("verification", section)


if __name__ == "__main__":
    main()
