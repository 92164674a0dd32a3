"""Accounts and their credentials: creation (with a server-held OpenPGP key), unlocking,
password changes, app passwords and own keys. Used by the CLI, the HTTP API and the tests.

Writes go through a ``Writer`` (the group committer in the server, a plain transaction in the
CLI); CPU-heavy steps (argon2id, key generation) run in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailserver.store.mailstore import MailStore
from mailserver.store.tables import Account
from openmss import audit
from openmss.crypto import pgp
from openmss.db.engine import Database
from openmss.keyring.store import KeyChain, Keyring, KeyringError, Locked, new_app_password
from openmss.keyring.tables import AppPassword
from openmss.passwords import Passwords

T = TypeVar("T")
Writer = Callable[[Callable[[Session], Any]], Awaitable[Any]]


class AccountError(ValueError):
    """A request about an account that cannot be honoured; the text is for the user."""


@dataclass(frozen=True)
class NewAppPassword:
    id: int
    label: str
    password: str  # shown once, never stored


def transaction_writer(db: Database) -> Writer:
    """A ``Writer`` for tools that run without the server: one transaction per call."""

    async def write(work: Callable[[Session], Any]) -> Any:
        def run() -> Any:
            with db.sync_transaction() as session:
                return work(session)

        return await asyncio.to_thread(run)

    return write


class Accounts:
    def __init__(
        self,
        *,
        db: Database,
        store: MailStore,
        keyring: Keyring,
        passwords: Passwords,
        write: Writer,
        on_key_change: Callable[[int], None] = lambda account_id: None,
    ) -> None:
        self._on_key_change = on_key_change
        self._db = db
        self._store = store
        self.keyring = keyring
        self._passwords = passwords
        self._write = write

    async def find(self, address: str) -> Account | None:
        async with self._db.read() as session:
            return await self._store.account_by_address(session, address)

    async def _require(self, address: str) -> Account:
        account = await self.find(address)
        if account is None:
            raise AccountError(f"no account {address}")
        return account

    async def create(self, address: str, password: str, display_name: str = "", *, actor: str) -> int | None:
        """A new account with its mailboxes and a server-held key; None if it exists."""
        address = address.strip().lower()
        if await self.find(address) is not None:
            return None

        def prepare() -> tuple[str, Any]:
            return self._passwords.hash(password), self.keyring.prepare_server_key(
                address, password, display_name
            )

        hashed, prepared = await asyncio.to_thread(prepare)

        def work(session: Session) -> int:
            account = self._store.create_account(session, address, hashed, display_name)
            self.keyring.install(session, account.id, prepared)
            audit.record(session, actor=actor, action="account.create", target=address)
            return account.id

        account_id: int = await self._write(work)
        return account_id

    async def set_disabled(self, address: str, disabled: bool, *, actor: str) -> bool:
        """Disable an account (no login by any service, no mail delivered to it: senders get
        ``550 5.1.1``; its mail and keys are kept) or enable it again. False when it was
        already so."""
        account = await self._require(address.strip().lower())
        if account.disabled == disabled:
            return False
        account_id = account.id

        def work(session: Session) -> None:
            session.execute(update(Account).where(Account.id == account_id).values(disabled=disabled))
            action = "account.disable" if disabled else "account.enable"
            audit.record(session, actor=actor, action=action, target=account.address)

        await self._write(work)
        return True

    async def unlock(self, account_id: int, password: str, app_password_id: int | None = None) -> KeyChain:
        """The account's keys, opened with the password (or the app password ``app_password_id``
        names) for the caller's session only. Raises ``Locked``."""
        async with self._db.read() as session:
            wraps = await self.keyring.wraps(session, account_id, app_password_id)
            sealed = await self.keyring.sealed_secrets(session, account_id)
        return await asyncio.to_thread(Keyring.open_chain, account_id, password, wraps, sealed)

    async def unlock_address(self, address: str, password: str) -> KeyChain:
        """Unlock with the password or any app password of the account."""
        account = await self._require(address)
        async with self._db.read() as session:
            app_id = await self.keyring.find_app_password(session, account.id, password)
        return await self.unlock(account.id, password, app_id)

    async def change_password(self, address: str, old: str, new: str, *, actor: str) -> None:
        """The password changes; the account's data key is re-wrapped, nothing is re-encrypted."""
        account = await self._require(address)
        ok = await asyncio.to_thread(self._passwords.verify, account.password_hash, old)
        if not ok:
            raise Locked("the current password is wrong")
        chain = await self.unlock(account.id, old)

        def prepare() -> tuple[str, str, bytes]:
            kdf, key = self.keyring.wrap_for_password(new)
            return self._passwords.hash(new), kdf, key

        hashed, kdf, key = await asyncio.to_thread(prepare)

        def work(session: Session) -> None:
            row = session.get(Account, account.id)
            assert row is not None
            row.password_hash = hashed
            self.keyring.rewrap_password(session, chain, kdf, key)
            audit.record(session, actor=actor, action="account.password.change", target=account.address)

        await self._write(work)

    async def recover_with_escrow(
        self, address: str, escrow_secret: bytes, new_password: str, *, actor: str
    ) -> None:
        """After a lost password: the operator opens the account's data key with the escrow
        secret key (kept offline) and wraps it under a new password. App passwords made with the
        old password stop working (they may be in the wrong hands: that is why one recovers)."""
        account = await self._require(address)
        async with self._db.read() as session:
            sealed_dk = await self.keyring.escrow_wrap(session, account.id)
            sealed = await self.keyring.sealed_secrets(session, account.id)
        if sealed_dk is None:
            raise AccountError(
                f"{account.address} was created without an escrow key: its mail cannot be recovered"
            )
        try:
            secret = pgp.load_secret(escrow_secret)
        except pgp.PgpError as exc:
            raise AccountError(str(exc)) from None
        chain = await asyncio.to_thread(Keyring.open_with_escrow, account.id, sealed_dk, secret, sealed)

        def prepare() -> tuple[str, str, bytes]:
            kdf, key = self.keyring.wrap_for_password(new_password)
            return self._passwords.hash(new_password), kdf, key

        hashed, kdf, key = await asyncio.to_thread(prepare)

        def work(session: Session) -> None:
            row = session.get(Account, account.id)
            assert row is not None
            row.password_hash = hashed
            self.keyring.rewrap_password(session, chain, kdf, key)
            for app in session.scalars(
                select(AppPassword.id).where(AppPassword.account_id == account.id)
            ).all():
                self.keyring.revoke_app_password(session, account.id, app)
            audit.record(session, actor=actor, action="account.recover.escrow", target=account.address)

        await self._write(work)

    async def create_app_password(
        self, address: str, password: str, label: str, *, actor: str
    ) -> NewAppPassword:
        account = await self._require(address)
        chain = await self.unlock_address(address, password)
        app_password = new_app_password()
        kdf, key = await asyncio.to_thread(self.keyring.wrap_for_password, app_password)

        def work(session: Session) -> int:
            app_id = self.keyring.add_app_password(session, chain, label, app_password, kdf, key)
            audit.record(
                session,
                actor=actor,
                action="account.app_password.create",
                target=account.address,
                app_password_id=app_id,
                label=label,
            )
            return app_id

        app_id: int = await self._write(work)
        return NewAppPassword(app_id, label, app_password)

    async def app_passwords(self, address: str) -> list[AppPassword]:
        account = await self._require(address)
        async with self._db.read() as session:
            return await self.keyring.app_passwords(session, account.id)

    async def revoke_app_password(self, address: str, app_password_id: int, *, actor: str) -> bool:
        account = await self._require(address)

        def work(session: Session) -> bool:
            done = self.keyring.revoke_app_password(session, account.id, app_password_id)
            if done:
                audit.record(
                    session,
                    actor=actor,
                    action="account.app_password.revoke",
                    target=account.address,
                    app_password_id=app_password_id,
                )
            return done

        revoked: bool = await self._write(work)
        return revoked

    async def set_own_key(self, address: str, public: bytes, *, actor: str) -> str:
        account = await self._require(address)

        def work(session: Session) -> str:
            fpr = self.keyring.set_own_key(session, account.id, account.address, public)
            audit.record(
                session, actor=actor, action="account.key.upload", target=account.address, fingerprint=fpr
            )
            return fpr

        try:
            fingerprint: str = await self._write(work)
        except KeyringError as exc:
            raise AccountError(str(exc)) from None
        self._on_key_change(account.id)
        return fingerprint

    async def new_server_key(self, address: str, password: str, *, actor: str) -> str:
        """A new key held by the server becomes current (e.g. after an own key); older keys stay
        so that older mail can still be read."""
        account = await self._require(address)
        chain = await self.unlock_address(address, password)

        def work(session: Session) -> str:
            fpr = self.keyring.add_server_key(session, chain, account.address, account.display_name)
            audit.record(
                session, actor=actor, action="account.key.server", target=account.address, fingerprint=fpr
            )
            return fpr

        fingerprint: str = await self._write(work)
        self._on_key_change(account.id)
        return fingerprint

    async def set_sign_outgoing(self, address: str, enabled: bool, *, actor: str) -> None:
        account = await self._require(address)

        def work(session: Session) -> None:
            self.keyring.set_sign_outgoing(session, account.id, enabled)
            audit.record(
                session,
                actor=actor,
                action="account.sign_outgoing",
                target=account.address,
                enabled=enabled,
            )

        try:
            await self._write(work)
        except KeyringError as exc:
            raise AccountError(str(exc)) from None
        self._on_key_change(account.id)
