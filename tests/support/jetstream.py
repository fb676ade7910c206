"""Per-test JetStream names, so that tests on one NATS server never share a stream."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import nats
from nats.js.errors import NotFoundError

__all__ = ["NatsNames", "delete_stream", "new_nats_names"]

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class NatsNames:
    """Stream name and subject prefix for one test.

    The services read them from PREBOOK_NATS_STREAM and PREBOOK_NATS_SUBJECT_PREFIX.
    """

    stream: str
    subject_prefix: str

    @property
    def subjects(self) -> str:
        """Wildcard for every subject under the prefix, as a stream's subject filter."""
        return f"{self.subject_prefix}.>"

    def subject(self, event: str) -> str:
        """Return the full subject of an event, such as `created` or `prepare`."""
        return f"{self.subject_prefix}.{event}"


def new_nats_names() -> NatsNames:
    """Return a stream name like PREBOOKINGS_T1a2b... and a prefix like t1a2b....prebooking."""
    token = uuid.uuid4().hex[:12]
    return NatsNames(stream=f"PREBOOKINGS_T{token}", subject_prefix=f"t{token}.prebooking")


async def delete_stream(nats_url: str, stream: str) -> bool:
    """Delete a JetStream stream. Returns False when the stream does not exist."""
    client = await nats.connect(
        nats_url,
        connect_timeout=CONNECT_TIMEOUT_S,
        allow_reconnect=False,
    )
    try:
        jetstream = client.jetstream(timeout=REQUEST_TIMEOUT_S)
        try:
            await jetstream.delete_stream(stream)
        except NotFoundError:
            return False
        return True
    finally:
        await client.close()
