"""The ``prebook`` client's table headers and main messages, in English and Spanish.

Spanish is used when the locale requests it: the first of LC_ALL, LC_MESSAGES and LANG
that is set starts with ``es``. Everything else is English.
"""

from __future__ import annotations

import os

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "id": "ID",
        "box": "Box",
        "class": "Class",
        "day": "Day",
        "opens": "Opens (box time)",
        "status": "Status",
        "result": "Result",
        "subdomain": "Box",
        "aimharder_id": "AimHarder id",
        "timezone": "Time zone",
        "window": "Booking window",
        "days": "{count} days",
        "hours": "{count} hours",
        "page": "{shown} of {total} prebookings (offset {offset})",
        "no_prebookings": "No prebookings.",
        "no_boxes": "No boxes configured. The operator adds them with PUT /v1/boxes/{{subdomain}}.",
        "created": "Prebooking {id} created: it fires at {opens}.",
        "cancelled": "Prebooking {id} cancelled.",
        "booked_now": "AimHarder answered {outcome} (bookState {book_state}).",
        "prebooked": "Too early to book: prebooking {id} created; it fires at {opens}.",
        "unreachable": "cannot reach the gateway at {url} ({reason}): start it with `prebook gateway`, "
        "or set PREBOOK_API_URL (or api_url in {config}) to its address",
        "no_key": "no API key: set PREBOOK_API_KEY or run `prebook login` (it writes api_key to {config})",
        "key_rejected": "the gateway at {url} rejected the API key from {source} ({detail}): "
        "get a valid key from the operator (`prebook keys create --user EMAIL`) and run `prebook login`",
        "request_failed": "request failed with HTTP {status}: {detail}",
        "login_saved": "Saved api_url and api_key to {path} (mode 0600). Key of {user}.",
        "login_admin": "Saved api_url and api_key to {path} (mode 0600). This is the admin key.",
    },
    "es": {
        "id": "ID",
        "box": "Box",
        "class": "Clase",
        "day": "Día",
        "opens": "Abre (hora del box)",
        "status": "Estado",
        "result": "Resultado",
        "subdomain": "Box",
        "aimharder_id": "Id en AimHarder",
        "timezone": "Zona horaria",
        "window": "Antelación",
        "days": "{count} días",
        "hours": "{count} horas",
        "page": "{shown} de {total} prerreservas (desde {offset})",
        "no_prebookings": "No hay prerreservas.",
        "no_boxes": "No hay boxes configurados. El operador los añade con PUT /v1/boxes/{{subdomain}}.",
        "created": "Prerreserva {id} creada: se lanza a las {opens}.",
        "cancelled": "Prerreserva {id} cancelada.",
        "booked_now": "AimHarder respondió {outcome} (bookState {book_state}).",
        "prebooked": "Aún no se puede reservar: prerreserva {id} creada; se lanza a las {opens}.",
        "unreachable": "no se puede conectar con el gateway en {url} ({reason}): arráncalo con "
        "`prebook gateway`, o pon su dirección en PREBOOK_API_URL (o api_url en {config})",
        "no_key": "falta la clave de API: define PREBOOK_API_KEY o ejecuta `prebook login` "
        "(escribe api_key en {config})",
        "key_rejected": "el gateway en {url} rechazó la clave de API de {source} ({detail}): pide una "
        "clave válida al operador (`prebook keys create --user EMAIL`) y ejecuta `prebook login`",
        "request_failed": "la petición falló con HTTP {status}: {detail}",
        "login_saved": "api_url y api_key guardados en {path} (modo 0600). Clave de {user}.",
        "login_admin": "api_url y api_key guardados en {path} (modo 0600). Es la clave de administración.",
    },
}


def language() -> str:
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            return "es" if value.lower().startswith("es") else "en"
    return "en"


def text(name: str, **values: object) -> str:
    """Return the text ``name`` in the locale's language with ``values`` filled in."""
    return TEXTS[language()][name].format(**values)
