"""Password authentication shared by SMTP submission, IMAP and the webmail."""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from sqlalchemy import select

from mailserver.store.tables import Account
from openmss import audit
from openmss.db.commit import GroupCommitter
from openmss.db.engine import Database
from openmss.keyring.store import app_password_digest
from openmss.keyring.tables import AppPassword
from openmss.passwords import Passwords
from openmss.throttle import LoginThrottle, throttle_keys

log = logging.getLogger(__name__)


class AuthOutcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    THROTTLED = "throttled"
    DISABLED = "disabled"


@dataclass(frozen=True)
class AuthResult:
    outcome: AuthOutcome
    account_id: int | None = None
    address: str | None = None
    retry_after: float = 0.0
    # Set when the login used an app password (which then also unlocks the keys).
    app_password_id: int | None = None


class Authenticator:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        throttle: LoginThrottle,
        committer: GroupCommitter,
        *,
        failure_delay: float = 1.0,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._throttle = throttle
        self._committer = committer
        self._failure_delay = failure_delay

    async def authenticate(self, login: str, password: str, *, client_ip: str, service: str) -> AuthResult:
        address = login.strip().lower()
        keys = throttle_keys(address, client_ip)
        wait = self._throttle.retry_after(keys)
        if wait > 0:
            await self._audit(address, f"{service}.auth.throttled", client_ip)
            return AuthResult(AuthOutcome.THROTTLED, retry_after=wait)
        app_password_id: int | None = None
        async with self._db.read() as session:
            account = (await session.scalars(select(Account).where(Account.address == address))).first()
            if account is not None:
                # App passwords are 100-bit random strings: a digest lookup checks them.
                app_password_id = await session.scalar(
                    select(AppPassword.id).where(
                        AppPassword.account_id == account.id,
                        AppPassword.digest == app_password_digest(password),
                    )
                )
        if app_password_id is not None:
            ok = True
        else:
            # argon2 is CPU-bound by design: keep it off the event loop.
            ok = await asyncio.to_thread(
                self._passwords.verify, account.password_hash if account else None, password
            )
        if not ok or account is None:
            self._throttle.failure(keys)
            await self._audit(address, f"{service}.auth.failure", client_ip)
            log.info("authentication failed", extra={"service": service, "login": address, "peer": client_ip})
            if self._failure_delay:
                await asyncio.sleep(self._failure_delay)
            return AuthResult(AuthOutcome.INVALID)
        if account.disabled:
            await self._audit(address, f"{service}.auth.disabled", client_ip)
            return AuthResult(AuthOutcome.DISABLED)
        self._throttle.success(keys)
        await self._audit(address, f"{service}.auth.success", client_ip, app_password_id)
        return AuthResult(
            AuthOutcome.OK, account_id=account.id, address=account.address, app_password_id=app_password_id
        )

    async def _audit(self, address: str, action: str, peer: str, app_password_id: int | None = None) -> None:
        extra = {"app_password_id": app_password_id} if app_password_id is not None else {}
        await self._committer.run(
            lambda session: audit.record(
                session, actor=address or "anonymous", action=action, target=address, peer=peer, **extra
            )
        )
