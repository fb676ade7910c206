"""The ``prebook`` client's gateway URL and API key, and the config file that stores them.

Each value comes from the first of:

1. the environment: ``PREBOOK_API_URL`` and ``PREBOOK_API_KEY``;
2. the config file ``$XDG_CONFIG_HOME/prebook/config.toml`` (by default
   ``~/.config/prebook/config.toml``) with the keys ``api_url`` and ``api_key``,
   which ``prebook login`` writes with mode 0600;
3. the default URL ``http://127.0.0.1:8000`` (there is no default key).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "PREBOOK_API_URL"
KEY_VARIABLE = "PREBOOK_API_KEY"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class ClientConfig:
    api_url: str
    api_key: str | None
    url_source: str
    key_source: str | None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "prebook" / "config.toml"


def read_config_file(path: Path) -> dict[str, str]:
    """Return the string values of the config file, or {} when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}): fix it or delete it") from exc
    return {name: value for name, value in data.items() if isinstance(value, str)}


def load_config() -> ClientConfig:
    path = config_path()
    stored = read_config_file(path)

    if os.environ.get(URL_VARIABLE):
        api_url, url_source = os.environ[URL_VARIABLE], URL_VARIABLE
    elif stored.get("api_url"):
        api_url, url_source = stored["api_url"], str(path)
    else:
        api_url, url_source = DEFAULT_API_URL, "default"

    if os.environ.get(KEY_VARIABLE):
        api_key, key_source = os.environ[KEY_VARIABLE], KEY_VARIABLE
    elif stored.get("api_key"):
        api_key, key_source = stored["api_key"], str(path)
    else:
        api_key, key_source = None, None

    return ClientConfig(api_url=api_url.rstrip("/"), api_key=api_key, url_source=url_source, key_source=key_source)


def write_config_file(path: Path, values: dict[str, str]) -> None:
    """Write ``values`` as TOML strings to ``path`` with mode 0600 (directory 0700)."""
    for name, value in values.items():
        if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
            raise ConfigError(f"{name} contains a control character: check the value you passed")

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Without control characters, json.dumps(ensure_ascii=False) escapes only '"' and
    # '\\', exactly as a TOML basic string needs.
    lines = [f"{name} = {json.dumps(value, ensure_ascii=False)}" for name, value in values.items()]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # os.open applies the mode only to a new file, so an existing one is narrowed too.
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
