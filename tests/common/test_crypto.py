"""Tests of SecretBox: Fernet encryption at rest with key rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from prebook_common.crypto import DecryptionError, SecretBox
from prebook_common.errors import ConfigurationError

PLAINTEXT = "amhrdrauth=session-cookie-Hq3vZ8pL; PHPSESSID=php-session-4kT9"


@pytest.fixture(scope="module")
def key_a() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def key_b() -> str:
    return Fernet.generate_key().decode()


def test_round_trip(key_a: str) -> None:
    box = SecretBox(key_a)

    assert box.decrypt(box.encrypt(PLAINTEXT)) == PLAINTEXT


def test_round_trip_non_ascii(key_a: str) -> None:
    box = SecretBox(key_a)
    plaintext = "contraseña-ñandú-€"

    assert box.decrypt(box.encrypt(plaintext)) == plaintext


def test_json_round_trip(key_a: str) -> None:
    box = SecretBox(key_a)
    cookies = {"amhrdrauth": "session-cookie-Hq3vZ8pL", "AWSALB": "alb-value"}

    assert box.decrypt_json(box.encrypt_json(cookies)) == cookies


def test_ciphertext_hides_plaintext(key_a: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    assert PLAINTEXT not in ciphertext
    assert "session-cookie-Hq3vZ8pL" not in ciphertext


def test_ciphertext_differs_per_call(key_a: str) -> None:
    box = SecretBox(key_a)

    assert box.encrypt(PLAINTEXT) != box.encrypt(PLAINTEXT)


def test_old_key_readable_after_rotation(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    rotated_box = SecretBox(f"{key_b},{key_a}")

    assert rotated_box.decrypt(ciphertext) == PLAINTEXT


def test_keys_list_allows_spaces(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    rotated_box = SecretBox(f" {key_b} , {key_a} ")

    assert rotated_box.decrypt(ciphertext) == PLAINTEXT


def test_first_key_encrypts(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(f"{key_b},{key_a}").encrypt(PLAINTEXT)

    assert SecretBox(key_b).decrypt(ciphertext) == PLAINTEXT


def test_rotate_moves_to_new_key(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    rotated = SecretBox(f"{key_b},{key_a}").rotate(ciphertext)

    assert SecretBox(key_b).decrypt(rotated) == PLAINTEXT


def test_new_key_alone_cannot_read_old(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    with pytest.raises(DecryptionError):
        SecretBox(key_b).decrypt(ciphertext)


def test_wrong_key_error_hides_keys(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    with pytest.raises(DecryptionError) as caught:
        SecretBox(key_b).decrypt(ciphertext)

    message = str(caught.value)
    assert key_a not in message
    assert key_b not in message
    assert PLAINTEXT not in message
    assert "PREBOOK_SESSION_ENCRYPTION_KEYS" in message


@pytest.mark.parametrize("ciphertext", ["not a fernet token", "", "gAAAAA\u00e9"], ids=["text", "empty", "non-ascii"])
def test_garbage_ciphertext_rejected(key_a: str, ciphertext: str) -> None:
    with pytest.raises(DecryptionError):
        SecretBox(key_a).decrypt(ciphertext)


def test_edited_ciphertext_rejected(key_a: str) -> None:
    box = SecretBox(key_a)
    ciphertext = box.encrypt(PLAINTEXT)
    # Changing one base64 character in the middle changes the signed bytes.
    middle = len(ciphertext) // 2
    replacement = "A" if ciphertext[middle] != "A" else "B"
    edited = ciphertext[:middle] + replacement + ciphertext[middle + 1 :]

    with pytest.raises(DecryptionError):
        box.decrypt(edited)


def test_rotate_unreadable_raises_decryption_error(key_a: str, key_b: str) -> None:
    ciphertext = SecretBox(key_a).encrypt(PLAINTEXT)

    with pytest.raises(DecryptionError):
        SecretBox(key_b).rotate(ciphertext)


@pytest.mark.parametrize(
    "keys",
    ["not-a-fernet-key", "c2hvcnQ=", "\u00e9t\u00e9-key"],
    ids=["text", "short", "non-ascii"],
)
def test_invalid_key_rejected(keys: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SecretBox(keys)

    message = str(caught.value)
    assert "PREBOOK_SESSION_ENCRYPTION_KEYS" in message
    assert keys not in message


def test_invalid_second_key_rejected(key_a: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SecretBox(f"{key_a},not-a-fernet-key")

    assert key_a not in str(caught.value)


@pytest.mark.parametrize("keys", ["", " , "], ids=["empty", "only-commas"])
def test_empty_key_list_rejected(keys: str) -> None:
    with pytest.raises(ConfigurationError):
        SecretBox(keys)


def test_placeholder_key_works_in_development() -> None:
    # Settings accept the placeholder only in development, where the box derives a key.
    ciphertext = SecretBox("change-me").encrypt(PLAINTEXT)

    assert SecretBox("change-me").decrypt(ciphertext) == PLAINTEXT
