"""The prebooking token that binds a callback to one prebooking and one instant.

HMAC-SHA256 over ``{prebooking_id}:{execute_at_ms}`` with ``PREBOOK_TOKEN_SECRET``, as
lowercase hex. A body replayed with another ``executeAt`` or another id fails the check.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from prebook_common.errors import TokenError


def make_token(secret: str, prebooking_id: UUID | str, execute_at_ms: int) -> str:
    message = f"{prebooking_id}:{execute_at_ms}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_token(secret: str, prebooking_id: UUID | str, execute_at_ms: int, token: str) -> None:
    """Raise TokenError unless ``token`` was made for this prebooking and instant.

    The comparison takes constant time, so timing does not leak how much of a forged
    token was right.
    """
    expected = make_token(secret, prebooking_id, execute_at_ms)
    if not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
        raise TokenError(
            f"securityToken does not match prebooking {prebooking_id} at executeAt "
            f"{execute_at_ms}: the body was edited or signed with another token secret"
        )
