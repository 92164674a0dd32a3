"""The keyring: generating, wrapping, unlocking and publishing the keys of accounts.

CPU-heavy steps (argon2id, key generation) are plain functions the caller runs off the event
loop (``prepare_*``); what touches the database runs inside the caller's transaction
(synchronous writes, asynchronous reads), like the rest of the store.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from openmss.crypto import keywrap, pgp
from openmss.keyring.tables import AccountKey, AppPassword, KeyWrap

_APP_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols: no l, o, 0, 1


class KeyringError(ValueError):
    """A request about keys that cannot be honoured (shown to the user)."""


class Locked(PermissionError):
    """The credential given does not unlock this account's keys."""


def _dk_aad(account_id: int) -> bytes:
    return b"openmss-dk:%d" % account_id


def _secret_aad(account_id: int, fingerprint: str) -> bytes:
    return b"openmss-tsk:%d:%s" % (account_id, fingerprint.encode())


def new_app_password() -> str:
    """20 random symbols out of 32 (100 bits) in four groups: ``abcde-fghij-kmnpq-rstuv``."""
    symbols = "".join(secrets.choice(_APP_ALPHABET) for _ in range(20))
    return "-".join(symbols[i : i + 5] for i in range(0, 20, 5))


def app_password_digest(app_password: str) -> str:
    normalized = app_password.strip().lower().replace(" ", "").replace("-", "")
    return hashlib.sha256(b"openmss-app-password:" + normalized.encode()).hexdigest()


@dataclass(frozen=True)
class PreparedKey:
    """A new server-held key and its wraps, ready to be stored for an account."""

    fingerprint: str
    public: bytes
    secret: bytes  # unprotected: sealed with ``dk`` at install time, never stored as is
    dk: bytes
    password_kdf: str
    password_wrap_key: bytes  # the KEK derived from the password under password_kdf


@dataclass
class KeyChain:
    """An unlocked account, in memory only: its data key and server-held secret keys."""

    account_id: int
    dk: bytes
    secrets: list[pgp.Tsk] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # of ``secrets``, current first
    _decryptors: list[pgp.Decryptor] = field(default_factory=list, repr=False)

    def signer(self) -> pgp.Tsk | None:
        return self.secrets[0] if self.secrets else None

    def decryptors(self) -> list[pgp.Decryptor]:
        """``secrets`` ready to decrypt, made once for the chain (an IMAP session decrypts
        every message it reads with them)."""
        if len(self._decryptors) != len(self.secrets):
            self._decryptors = [secret.decryptor() for secret in self.secrets]
        return self._decryptors


@dataclass(frozen=True)
class PublishedKey:
    account_id: int
    fingerprint: str
    public: bytes
    mode: str
    sign_outgoing: bool


class Keyring:
    def __init__(self, kdf: keywrap.KdfParams | None = None, escrow: pgp.Cert | None = None) -> None:
        self.kdf = kdf or keywrap.KdfParams()
        self.escrow = escrow

    # Preparation (CPU-bound: run in a thread) ----------------------------------------------

    def prepare_server_key(self, address: str, password: str, display_name: str = "") -> PreparedKey:
        key = pgp.generate_key(address, display_name)
        kdf = self.kdf.new_kdf()
        return PreparedKey(
            key.fingerprint, key.public, key.secret, keywrap.new_key(), kdf, keywrap.derive_key(password, kdf)
        )

    def wrap_for_password(self, password: str) -> tuple[str, bytes]:
        kdf = self.kdf.new_kdf()
        return kdf, keywrap.derive_key(password, kdf)

    # Writes (inside the caller's transaction) -----------------------------------------------

    def install(self, session: Session, account_id: int, prepared: PreparedKey) -> None:
        """Store a new account's key: it becomes the current key, the DK is wrapped under the
        password (and for the escrow key when one is configured)."""
        session.execute(update(AccountKey).where(AccountKey.account_id == account_id).values(current=False))
        session.add(
            AccountKey(
                account_id=account_id,
                fingerprint=prepared.fingerprint,
                public=prepared.public,
                mode="server",
                sealed_secret=keywrap.seal(
                    prepared.dk, prepared.secret, _secret_aad(account_id, prepared.fingerprint)
                ),
                current=True,
            )
        )
        session.execute(
            delete(KeyWrap).where(KeyWrap.account_id == account_id, KeyWrap.kind.in_(["password", "escrow"]))
        )
        session.add(
            KeyWrap(
                account_id=account_id,
                kind="password",
                kdf=prepared.password_kdf,
                sealed=keywrap.seal(prepared.password_wrap_key, prepared.dk, _dk_aad(account_id)),
            )
        )
        if self.escrow is not None:
            session.add(
                KeyWrap(
                    account_id=account_id,
                    kind="escrow",
                    kdf="openpgp:" + pgp.fingerprint(self.escrow),
                    sealed=pgp.encrypt(prepared.dk, [self.escrow], armor=False),
                )
            )
        session.flush()

    def add_server_key(self, session: Session, chain: KeyChain, address: str, display_name: str = "") -> str:
        """A new server-held key for an unlocked account (e.g. back from an own key)."""
        key = pgp.generate_key(address, display_name)
        session.execute(
            update(AccountKey).where(AccountKey.account_id == chain.account_id).values(current=False)
        )
        session.add(
            AccountKey(
                account_id=chain.account_id,
                fingerprint=key.fingerprint,
                public=key.public,
                mode="server",
                sealed_secret=keywrap.seal(
                    chain.dk, key.secret, _secret_aad(chain.account_id, key.fingerprint)
                ),
                current=True,
            )
        )
        session.flush()
        return key.fingerprint

    def set_own_key(self, session: Session, account_id: int, address: str, public: bytes) -> str:
        """The user keeps their secret key: mail is encrypted to this certificate from now on.
        Older server-held keys are kept (not current) so that older mail stays readable."""
        cert = pgp.load_cert(public)
        if address.lower() not in pgp.cert_addresses(cert):
            raise KeyringError(f"the key has no user ID for {address}")
        problem = pgp.usable_for_encryption(cert)
        if problem:
            raise KeyringError(problem)
        fpr = pgp.fingerprint(cert)
        session.execute(update(AccountKey).where(AccountKey.account_id == account_id).values(current=False))
        session.add(
            AccountKey(account_id=account_id, fingerprint=fpr, public=bytes(cert), mode="own", current=True)
        )
        session.flush()
        return fpr

    def set_sign_outgoing(self, session: Session, account_id: int, enabled: bool) -> None:
        row = session.scalars(
            select(AccountKey).where(AccountKey.account_id == account_id, AccountKey.current.is_(True))
        ).first()
        if row is None:
            raise KeyringError("this account has no key")
        if enabled and row.mode != "server":
            raise KeyringError("the server can only sign with a key it holds; your own key stays with you")
        row.sign_outgoing = enabled

    def rewrap_password(self, session: Session, chain: KeyChain, kdf: str, wrap_key: bytes) -> None:
        """After a password change: the DK sealed under the new password; nothing else changes."""
        session.execute(
            delete(KeyWrap).where(KeyWrap.account_id == chain.account_id, KeyWrap.kind == "password")
        )
        session.add(
            KeyWrap(
                account_id=chain.account_id,
                kind="password",
                kdf=kdf,
                sealed=keywrap.seal(wrap_key, chain.dk, _dk_aad(chain.account_id)),
            )
        )
        session.flush()

    def add_app_password(
        self, session: Session, chain: KeyChain, label: str, app_password: str, kdf: str, wrap_key: bytes
    ) -> int:
        row = AppPassword(
            account_id=chain.account_id, label=label[:100], digest=app_password_digest(app_password)
        )
        session.add(row)
        session.flush()
        session.add(
            KeyWrap(
                account_id=chain.account_id,
                kind="app",
                app_password_id=row.id,
                kdf=kdf,
                sealed=keywrap.seal(wrap_key, chain.dk, _dk_aad(chain.account_id)),
            )
        )
        session.flush()
        return row.id

    def revoke_app_password(self, session: Session, account_id: int, app_password_id: int) -> bool:
        session.execute(delete(KeyWrap).where(KeyWrap.app_password_id == app_password_id))
        result = session.execute(
            delete(AppPassword).where(AppPassword.id == app_password_id, AppPassword.account_id == account_id)
        )
        return bool(getattr(result, "rowcount", 0))

    # Reads ----------------------------------------------------------------------------------

    async def app_passwords(self, session: AsyncSession, account_id: int) -> list[AppPassword]:
        rows = await session.scalars(
            select(AppPassword).where(AppPassword.account_id == account_id).order_by(AppPassword.id)
        )
        return list(rows)

    async def find_app_password(self, session: AsyncSession, account_id: int, candidate: str) -> int | None:
        row = await session.scalar(
            select(AppPassword.id).where(
                AppPassword.digest == app_password_digest(candidate), AppPassword.account_id == account_id
            )
        )
        return int(row) if row is not None else None

    async def current_key(self, session: AsyncSession, account_id: int) -> PublishedKey | None:
        row = (
            await session.scalars(
                select(AccountKey).where(AccountKey.account_id == account_id, AccountKey.current.is_(True))
            )
        ).first()
        return _published(row) if row else None

    async def wraps(
        self, session: AsyncSession, account_id: int, app_password_id: int | None
    ) -> list[KeyWrap]:
        query = select(KeyWrap).where(KeyWrap.account_id == account_id)
        if app_password_id is None:
            query = query.where(KeyWrap.kind == "password")
        else:
            query = query.where(KeyWrap.kind == "app", KeyWrap.app_password_id == app_password_id)
        return list(await session.scalars(query))

    async def escrow_wrap(self, session: AsyncSession, account_id: int) -> bytes | None:
        sealed = await session.scalar(
            select(KeyWrap.sealed).where(KeyWrap.account_id == account_id, KeyWrap.kind == "escrow")
        )
        return bytes(sealed) if sealed is not None else None

    async def sealed_secrets(self, session: AsyncSession, account_id: int) -> list[tuple[str, bytes]]:
        rows = await session.execute(
            select(AccountKey.fingerprint, AccountKey.sealed_secret)
            .where(AccountKey.account_id == account_id, AccountKey.sealed_secret.is_not(None))
            .order_by(AccountKey.current.desc(), AccountKey.id.desc())
        )
        return [(str(fpr), bytes(sealed)) for fpr, sealed in rows if sealed is not None]

    # Unlocking ------------------------------------------------------------------------------

    @staticmethod
    def open_chain(
        account_id: int,
        password: str,
        wraps: Sequence[KeyWrap],
        sealed_secrets: Sequence[tuple[str, bytes]],
    ) -> KeyChain:
        """CPU-bound (argon2id): run in a thread. Raises ``Locked`` on a wrong credential."""
        for wrap in wraps:
            try:
                dk = keywrap.unseal(keywrap.derive_key(password, wrap.kdf), wrap.sealed, _dk_aad(account_id))
            except (keywrap.WrongKey, ValueError):
                continue
            return Keyring.chain_from_dk(account_id, dk, sealed_secrets)
        raise Locked("this credential does not unlock the account's keys")

    @staticmethod
    def open_with_escrow(
        account_id: int, sealed_dk: bytes, escrow_secret: pgp.Tsk, sealed_secrets: Sequence[tuple[str, bytes]]
    ) -> KeyChain:
        """The operator's recovery path: the DK decrypted with the escrow secret key."""
        try:
            dk = pgp.decrypt(sealed_dk, escrow_secret)
        except pgp.PgpError as exc:
            raise Locked(f"the escrow key does not open this account: {exc}") from None
        return Keyring.chain_from_dk(account_id, dk, sealed_secrets)

    @staticmethod
    def chain_from_dk(account_id: int, dk: bytes, sealed_secrets: Sequence[tuple[str, bytes]]) -> KeyChain:
        chain = KeyChain(account_id, dk)
        for fpr, sealed in sealed_secrets:
            secret = keywrap.unseal(dk, sealed, _secret_aad(account_id, fpr))
            chain.secrets.append(pgp.load_secret(secret))
            chain.fingerprints.append(fpr)
        return chain


def _published(row: AccountKey) -> PublishedKey:
    return PublishedKey(row.account_id, row.fingerprint, bytes(row.public), row.mode, row.sign_outgoing)
