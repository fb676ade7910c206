"""The ``errorMssg`` texts of the simulated responses in Spanish, Catalan and English.

The Spanish texts of the too-early, full and same-time responses are AimHarder's own.
The other Spanish texts and all Catalan and English texts are the simulator's
translations, not copies of AimHarder's.
"""

from __future__ import annotations

from enum import Enum


class Text(Enum):
    TOO_EARLY_DAYS = "too_early_days"
    TOO_EARLY_HOURS = "too_early_hours"
    CLASS_FULL = "class_full"
    SAME_TIME = "same_time"
    CLASS_NOT_FOUND = "class_not_found"
    BOOKING_NOT_FOUND = "booking_not_found"
    LOGIN_FAILED = "login_failed"


_TEXTS: dict[str, dict[Text, str]] = {
    "es": {
        Text.TOO_EARLY_DAYS: "No puedes reservar clases con más de {window} días de antelación",
        Text.TOO_EARLY_HOURS: "No puedes reservar clases con más de {window} horas de antelación",
        Text.CLASS_FULL: "La clase está completa",
        Text.SAME_TIME: "No puedes reservar más de una clase a la misma hora",
        Text.CLASS_NOT_FOUND: "Clase no encontrada",
        Text.BOOKING_NOT_FOUND: "Reserva no encontrada",
        Text.LOGIN_FAILED: "Usuario o contraseña incorrectos",
    },
    "ca": {
        Text.TOO_EARLY_DAYS: "No pots reservar classes amb més de {window} dies d'antelació",
        Text.TOO_EARLY_HOURS: "No pots reservar classes amb més de {window} hores d'antelació",
        Text.CLASS_FULL: "La classe està completa",
        Text.SAME_TIME: "No pots reservar més d'una classe a la mateixa hora",
        Text.CLASS_NOT_FOUND: "Classe no trobada",
        Text.BOOKING_NOT_FOUND: "Reserva no trobada",
        Text.LOGIN_FAILED: "Usuari o contrasenya incorrectes",
    },
    "en": {
        Text.TOO_EARLY_DAYS: "You cannot book classes more than {window} days in advance",
        Text.TOO_EARLY_HOURS: "You cannot book classes more than {window} hours in advance",
        Text.CLASS_FULL: "The class is full",
        Text.SAME_TIME: "You cannot book more than one class at the same time",
        Text.CLASS_NOT_FOUND: "Class not found",
        Text.BOOKING_NOT_FOUND: "Booking not found",
        Text.LOGIN_FAILED: "Incorrect username or password",
    },
}


def localize(lang: str, text: Text, **values: object) -> str:
    """Return ``text`` in ``lang`` with ``values`` filled in, such as ``window``."""
    return _TEXTS[lang][text].format(**values)
