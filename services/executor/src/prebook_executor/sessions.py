"""Keeping AimHarder sessions alive: refresh before a booking, and log in again after a logout.

A refresh is AimHarder's token update, which renews ``amhrdrauth``. When AimHarder
responds with ``{"logout": 1}`` and the user stored credentials, the keeper logs in again
instead. Every refresh runs under the user's lock from ``SessionLocks``, and each
failure is counted on the row (``refresh_failures``, ``last_error``) and logged at
WARNING. No log line or stored error contains a cookie, token or password.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from enum import StrEnum

from prebook_common.aimharder_login import (
    AimharderAuth,
    AimharderAuthError,
    AuthUnavailable,
    LoginRejected,
    SessionGrant,
    SessionLoggedOut,
)
from prebook_common.aimharder_sessions import SessionRepository, SessionSecrets, SessionState, session_state
from prebook_common.crypto import DecryptionError
from prebook_common.errors import PrebookError, SessionNotFound
from prebook_common.models import AimharderSession, utcnow
from prebook_common.settings import Settings
from prebook_executor.session_locks import SessionLocks

logger = logging.getLogger(__name__)


class RefreshResult(StrEnum):
    REFRESHED = "refreshed"
    RELOGGED_IN = "relogged_in"
    # AimHarder logged the session out and no login could replace it.
    LOGGED_OUT = "logged_out"
    # AimHarder could not be reached or sent an unusable response, so the session may still work.
    FAILED = "failed"
    # The row changed or disappeared meanwhile, so another writer took care of it.
    SKIPPED = "skipped"


class SessionUnavailable(PrebookError):
    """No usable session for a booking; ``error_code`` is stored on the prebooking."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def renew_hint(user_email: str) -> str:
    return (
        f"renew the AimHarder session with PUT /v1/sessions/{user_email} (cookies) "
        f"or POST /v1/sessions/{user_email}/login"
    )


class BookingSession:
    """A booking's hold on its user's session, from loading the cookies until the fire ends.

    While it is open, no refresh of a live session runs for this user in this process.
    """

    def __init__(self, secrets: SessionSecrets, hold: AbstractAsyncContextManager[None]) -> None:
        self.secrets = secrets
        # The entered ``SessionLocks.booking`` block itself: an AsyncExitStack around it would
        # cost a deque per parked booking.
        self._hold: AbstractAsyncContextManager[None] | None = hold

    async def aclose(self) -> None:
        """Leave the hold; later calls do nothing."""
        hold, self._hold = self._hold, None
        if hold is not None:
            await hold.__aexit__(None, None, None)


class SessionKeeper:
    def __init__(self, settings: Settings, repository: SessionRepository, auth: AimharderAuth, locks: SessionLocks) -> None:
        self._settings = settings
        self._repository = repository
        self._auth = auth
        self.locks = locks

    async def open_for_booking(self, user_email: str, *, prebooking_id: object, budget_s: float) -> BookingSession:
        """Refresh the user's session if it is old or expired, then hold it for a booking.

        ``budget_s`` bounds the refresh, so that a slow AimHarder cannot make the booking
        miss its instant. A refresh that fails without a logout keeps the stored cookies,
        which may still work. Raises SessionUnavailable with ``NO_SESSION`` or
        ``SESSION_EXPIRED`` when no usable session can be had.
        """
        # Usually the session is valid, and one read under the booking's hold is all it takes.
        booking_session = await self._hold_if_valid(user_email)
        if booking_session is not None:
            return booking_session

        row = await self._get(user_email)
        state = session_state(row, max_age_s=self._settings.session_max_age_s)
        if state is not SessionState.VALID:
            await self._refresh_for_booking(row, state, prebooking_id=prebooking_id, budget_s=budget_s)

        hold = self.locks.booking(user_email)
        await hold.__aenter__()
        try:
            row = await self._get(user_email)
            if session_state(row, max_age_s=self._settings.session_max_age_s) is SessionState.EXPIRED:
                raise SessionUnavailable(
                    "SESSION_EXPIRED",
                    f"the AimHarder session of {user_email} expired ({row.last_error or 'logged out'}): "
                    f"{renew_hint(user_email)}",
                )
            secrets = self._decrypt(row)
        except BaseException:
            await hold.__aexit__(None, None, None)
            raise
        return BookingSession(secrets, hold)

    async def _hold_if_valid(self, user_email: str) -> BookingSession | None:
        """Hold the user's session for a booking when it is valid, or return None when it is missing, stale, expired or unreadable.

        The row is read after the hold is taken, so a refresh running at that moment is
        waited for and its cookie is the one loaded. After None, the rest of
        ``open_for_booking`` refreshes the session or raises its error.
        """
        hold = self.locks.booking(user_email)
        await hold.__aenter__()
        try:
            row = await self._repository.get(user_email)
            if row is None or session_state(row, max_age_s=self._settings.session_max_age_s) is not SessionState.VALID:
                await hold.__aexit__(None, None, None)
                return None
            secrets = self._repository.decrypt(row)
        except DecryptionError:
            await hold.__aexit__(None, None, None)
            return None
        except BaseException:
            await hold.__aexit__(None, None, None)
            raise
        return BookingSession(secrets, hold)

    async def relogin_after_logout(self, stale: SessionSecrets, *, prebooking_id: object) -> SessionSecrets | None:
        """Replace a session that AimHarder logged out at fire time; None when that is impossible.

        A booking of the same user that got the logout first may have logged in again
        already; its cookies are returned without a second login. Without stored
        credentials the session is marked expired.
        """
        user_email = stale.user_email
        async with self.locks.exclusive(user_email, wait_for_bookings=False):
            row = await self._repository.get(user_email)
            if row is None:
                return None
            current = self._decrypt(row)
            if current.session_cookie != stale.session_cookie and session_state(row, max_age_s=float("inf")) is SessionState.VALID:
                logger.info("prebooking %s: session of %s was already renewed after the logout", prebooking_id, user_email)
                return current

            claimed_at = await self._repository.claim(row)
            if claimed_at is None:
                return None
            if current.credentials is None:
                await self._record_failure(
                    user_email, claimed_at, "AimHarder logged out the session at fire time and no credentials are stored",
                    expired=True,
                )
                return None

            result = await self._login(row, current, claimed_at, cause="logout at fire time")
            if result is not RefreshResult.RELOGGED_IN:
                return None
            return self._decrypt(await self._get(user_email))

    async def refresh_due(self) -> int:
        """Refresh every session older than the refresh interval; return how many were refreshed."""
        interval_s = self._settings.session_refresh_interval_s
        rows = await self._repository.due_for_refresh(_seconds_ago(interval_s))
        refreshed = 0
        for row in rows:
            if not self._backoff_elapsed(row):
                continue
            if self.locks.bookings_in_flight(row.user_email):
                logger.debug("session of %s not refreshed now: a booking is using it", row.user_email)
                continue

            async with self.locks.exclusive(row.user_email, wait_for_bookings=True):
                current = await self._repository.get(row.user_email)
                if current is None or current.updated_at != row.updated_at:
                    continue
                result = await self._refresh_locked(current, cause="scheduled", relogin_on_error=False)
            refreshed += result in (RefreshResult.REFRESHED, RefreshResult.RELOGGED_IN)
        return refreshed

    async def run_refresher(self) -> None:
        """Refresh due sessions every ``session_refresh_poll_s`` until cancelled."""
        poll_s = self._settings.session_refresh_poll_s
        logger.info(
            "session refresher started: refreshes sessions older than %.0f s, checking every %.0f s",
            self._settings.session_refresh_interval_s, poll_s,
        )
        try:
            while True:
                try:
                    refreshed = await self.refresh_due()
                    if refreshed:
                        logger.debug("session refresher: %d sessions refreshed", refreshed)
                except Exception as exc:  # noqa: BLE001  (a database outage must not end the refresher)
                    logger.warning("session refresher: checking for due sessions failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(poll_s)
        finally:
            logger.info("session refresher stopped")

    async def _refresh_for_booking(self, row: AimharderSession, state: SessionState, *, prebooking_id: object, budget_s: float) -> None:
        user_email = row.user_email
        if budget_s <= 0:
            logger.warning(
                "prebooking %s: session of %s is %s but there is no time left to refresh it before the target",
                prebooking_id, user_email, state,
            )
            return
        if state is SessionState.STALE and self.locks.bookings_in_flight(user_email):
            # Another booking of this user checked the session moments ago and fires with its cookie.
            logger.debug("prebooking %s: session of %s is in use by another booking; not refreshed", prebooking_id, user_email)
            return

        logger.debug(
            "prebooking %s: session of %s is %s (refreshed at %s); refreshing within %.1f s",
            prebooking_id, user_email, state, row.refreshed_at.isoformat(), budget_s,
        )
        try:
            async with asyncio.timeout(budget_s):
                async with self.locks.exclusive(user_email, wait_for_bookings=state is SessionState.STALE):
                    current = await self._get(user_email)
                    if session_state(current, max_age_s=self._settings.session_max_age_s) is SessionState.VALID:
                        return
                    result = await self._refresh_locked(current, cause=f"prebooking {prebooking_id}", relogin_on_error=True)
        except TimeoutError:
            logger.warning(
                "prebooking %s: refreshing the session of %s took over %.1f s; using the stored cookies",
                prebooking_id, user_email, budget_s,
            )
            return

        if result is RefreshResult.LOGGED_OUT:
            current = await self._get(user_email)
            raise SessionUnavailable(
                "SESSION_EXPIRED",
                f"the AimHarder session of {user_email} expired and could not be renewed "
                f"({current.last_error or 'logged out'}): {renew_hint(user_email)}",
            )

    async def _refresh_locked(self, row: AimharderSession, *, cause: str, relogin_on_error: bool) -> RefreshResult:
        """Token update, then a login when that fails and credentials are stored. Hold the user's lock."""
        user_email = row.user_email
        try:
            secrets = self._repository.decrypt(row)
        except DecryptionError as exc:
            logger.warning("refresh of the session of %s skipped: %s", user_email, exc)
            return RefreshResult.FAILED

        claimed_at = await self._repository.claim(row)
        if claimed_at is None:
            logger.debug("refresh of the session of %s skipped: the row changed meanwhile", user_email)
            return RefreshResult.SKIPPED

        expired = session_state(row, max_age_s=float("inf")) is SessionState.EXPIRED
        error: AimharderAuthError | None = None
        if secrets.token and not expired:
            try:
                grant = await self._auth.update_token(secrets.token, secrets.fingerprint, secrets.cookies)
            except AimharderAuthError as exc:
                error = exc
            else:
                return await self._store(user_email, claimed_at, grant, secrets.fingerprint, RefreshResult.REFRESHED, cause)

        dead = expired or isinstance(error, SessionLoggedOut)
        if secrets.credentials is not None and (dead or secrets.token is None or relogin_on_error):
            return await self._login(row, secrets, claimed_at, cause=cause)

        if expired:
            message = "the session had expired and no credentials are stored to log in again"
        elif dead:
            message = f"token update: {error} No credentials are stored to log in again"
        elif error is not None:
            message = f"token update failed: {error}"
        else:
            message = "no token is stored to refresh the session, and no credentials to log in again"
        await self._record_failure(user_email, claimed_at, message, expired=dead)
        return RefreshResult.LOGGED_OUT if dead else RefreshResult.FAILED

    async def _login(self, row: AimharderSession, secrets: SessionSecrets, claimed_at: datetime, *, cause: str) -> RefreshResult:
        user_email = row.user_email
        credentials = secrets.credentials
        if credentials is None:
            raise ValueError(f"session of {user_email} has no stored credentials to log in with")
        try:
            grant = await self._auth.login(credentials.username, credentials.password, secrets.fingerprint)
        except LoginRejected as exc:
            await self._record_failure(user_email, claimed_at, f"login with the stored credentials: {exc}", expired=True)
            return RefreshResult.LOGGED_OUT
        except (AuthUnavailable, SessionLoggedOut) as exc:
            await self._record_failure(user_email, claimed_at, f"login failed: {exc}", expired=False)
            return RefreshResult.FAILED
        return await self._store(user_email, claimed_at, grant, secrets.fingerprint, RefreshResult.RELOGGED_IN, cause)

    async def _store(
        self, user_email: str, claimed_at: datetime, grant: SessionGrant, fingerprint: str | None, result: RefreshResult, cause: str
    ) -> RefreshResult:
        if not await self._repository.store_grant(user_email, claimed_at, grant, fingerprint=fingerprint):
            logger.info("session of %s was replaced while it was refreshed; the refreshed cookies are dropped", user_email)
            return RefreshResult.SKIPPED
        how = "token update" if result is RefreshResult.REFRESHED else "login with the stored credentials"
        logger.info("session of %s renewed by %s (%s)", user_email, how, cause)
        return result

    async def _record_failure(self, user_email: str, claimed_at: datetime, message: str, *, expired: bool) -> None:
        stored = await self._repository.store_failure(user_email, claimed_at, message, expired=expired)
        row = await self._repository.get(user_email)
        failures = row.refresh_failures if row is not None else "?"
        logger.warning(
            "refresh of the session of %s failed (failure %s%s): %s",
            user_email, failures, ", session marked expired" if expired and stored else "", message,
        )

    def _backoff_elapsed(self, row: AimharderSession) -> bool:
        """Return whether a session whose last refreshes failed may be tried again now."""
        if row.refresh_failures == 0:
            return True
        poll_s = self._settings.session_refresh_poll_s
        backoff_s = min(self._settings.session_refresh_interval_s, poll_s * 2 ** (row.refresh_failures - 1))
        return row.updated_at <= _seconds_ago(backoff_s)

    async def _get(self, user_email: str) -> AimharderSession:
        row = await self._repository.get(user_email)
        if row is None:
            raise SessionUnavailable("NO_SESSION", f"{SessionNotFound(user_email)}, or log in with POST /v1/sessions/{user_email}/login")
        return row

    def _decrypt(self, row: AimharderSession) -> SessionSecrets:
        try:
            return self._repository.decrypt(row)
        except DecryptionError as exc:
            raise SessionUnavailable("NO_SESSION", f"the AimHarder session of {row.user_email} is unreadable: {exc}") from exc


def _seconds_ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
