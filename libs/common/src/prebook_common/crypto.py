"""Encryption at rest of AimHarder cookies, tokens and passwords.

``PREBOOK_SESSION_ENCRYPTION_KEYS`` holds one or more Fernet keys separated by commas.
The first key encrypts; every key decrypts, so a key is rotated by putting the new key
first and keeping the old one after it until every stored secret has been re-encrypted
with ``SecretBox.rotate``.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from prebook_common.errors import ConfigurationError, PrebookError
from prebook_common.settings import PLACEHOLDER_MARK


class DecryptionError(PrebookError):
    """A stored secret cannot be decrypted with any configured key."""


class SecretBox:
    def __init__(self, keys: str) -> None:
        fernets = [_fernet_for(key.strip()) for key in keys.split(",") if key.strip()]
        if not fernets:
            raise ConfigurationError(
                "PREBOOK_SESSION_ENCRYPTION_KEYS is empty: set it to one or more Fernet keys, newest first"
            )
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise _undecryptable() from exc

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt ``ciphertext`` with the first (current) key; raise DecryptionError if no key fits."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise _undecryptable() from exc

    def encrypt_json(self, value: object) -> str:
        return self.encrypt(json.dumps(value, separators=(",", ":")))

    def decrypt_json(self, ciphertext: str) -> object:
        return json.loads(self.decrypt(ciphertext))


def _undecryptable() -> DecryptionError:
    return DecryptionError(
        "stored secret cannot be decrypted with PREBOOK_SESSION_ENCRYPTION_KEYS: "
        "keep the old key in the list (after the new one) until the data is re-encrypted"
    )


def _fernet_for(key: str) -> Fernet:
    if key.startswith(PLACEHOLDER_MARK):
        # Development only (settings reject placeholders elsewhere): derive a stable key
        # so a development database stays readable across restarts.
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
    try:
        return Fernet(key)
    except ValueError as exc:
        raise ConfigurationError(
            "a key in PREBOOK_SESSION_ENCRYPTION_KEYS is not a Fernet key: generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        ) from exc
