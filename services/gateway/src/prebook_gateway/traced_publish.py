"""Publishing an event with the current trace context in its message headers.

The gateway's broker has no FastStream telemetry middleware. That middleware started
two PRODUCER spans per message (``create`` and ``publish``) and recorded a metric,
which cost about 0.1 ms of CPU per QStash callback (FastStream 0.7.8, measured with the
middleware on and off on the 2-core machine of ``bench/callback_throughput.py``). The
W3C ``traceparent`` header written here links the consumer's span (executor or
scheduler) straight to the span that is current when the event is published: the
callback's request span, or a REST request's span.
"""

from __future__ import annotations

from faststream.nats import NatsBroker
from opentelemetry import propagate

from prebook_common.events import Event
from prebook_common.settings import Settings
from prebook_common.streams import publish_event


async def publish_traced(broker: NatsBroker, settings: Settings, event: Event, *, message_id: str) -> bool:
    """Publish ``event`` as ``publish_event`` does, with the current trace context in its headers.

    Returns True when JetStream dropped the event as a duplicate of ``message_id``.
    """
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return await publish_event(broker, settings, event, message_id=message_id, headers=headers)
