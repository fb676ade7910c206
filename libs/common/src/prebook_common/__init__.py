"""Code that more than one Prebook service needs.

Settings, database tables, event payloads, the prebooking token, QStash signatures and
AimHarder's protocol live here, so the services import from one place and never from
each other.
"""
