"""The key directory: which OpenPGP certificates belong to an address.

Two sources:

* our accounts: the *current* key of each account (``AccountKey.current``), server-held or the
  user's own; older keys stay in the keyring to read older mail but are never handed out;
* keys the operator imported (``PublicKey``) for professionals of other operators, who have no
  account here (``openmss key import FILE``).

An import never adds a key to an address of one of our own domains: the keys of our accounts
are managed by their owners through the keyring, and an operator-imported key for them would
silently become a second recipient of their mail. Such user IDs are skipped (and reported).

What is published (WKD and HKP, ``directory.publication``) is only our accounts' current keys,
each reduced to the account's own user ID (:func:`only_user_id`): a user's own key may carry
other addresses (a personal one) that are not ours to publish.

Reads for encryption (:meth:`KeyDirectory.certs_for`, and its synchronous twin for use inside a
storage transaction) leave out revoked and expired certificates; publication does not filter
them (draft-koch-openpgp-webkey-service §3.1: handling revoked or expired keys is the client's
business), but a disabled account publishes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pysequoia.packet import PacketPile, Tag
from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from directory.key_tables import PublicKey
from directory.wkd import split_address, wkd_hash
from mailserver.store.tables import Account
from openmss import audit
from openmss.crypto import pgp
from openmss.db.base import utcnow
from openmss.keyring.tables import AccountKey

if TYPE_CHECKING:
    from openmss.db.engine import Database
    from openmss.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "ImportReport",
    "KeyDirectory",
    "KeyImportError",
    "LocalKey",
    "import_keys_cli",
    "only_user_id",
    "parse_certs",
]


class KeyImportError(ValueError):
    """Key data that cannot be imported; the message is one line, for the operator."""


def _short(exc: BaseException) -> str:
    # Sequoia's errors may carry a Rust backtrace: keep the first line only.
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _uid_address(user_id: str) -> str | None:
    """The e-mail address of a user ID (``Name <addr>`` or a bare address), lower-cased."""
    text = user_id.strip()
    if "<" in text and text.endswith(">"):
        text = text[text.rindex("<") + 1 : -1]
    text = text.strip().lower()
    return text if "@" in text else None


def parse_certs(data: bytes) -> list[pgp.Cert]:
    """Every certificate in ``data`` (binary or ASCII-armoured, one or several, as ``gpg
    --export`` writes them). Secret keys are refused outright: the operator has to export the
    public part (``gpg --export``, not ``--export-secret-keys``)."""
    with warnings.catch_warnings():
        # pysequoia warns when a secret key goes through Cert; such keys are refused below.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            certs = pgp.Cert.split_bytes(data)
        except Exception as exc:
            raise KeyImportError(f"not OpenPGP key data: {_short(exc)}") from None
        if not certs:
            raise KeyImportError("no OpenPGP certificate found in the data")
        for cert in certs:
            if cert.has_secret_keys:
                raise KeyImportError(
                    f"{pgp.fingerprint(cert)} is a secret key: import only public keys "
                    "(gpg --export, never --export-secret-keys); nothing was imported"
                )
    return certs


def only_user_id(public: bytes, address: str) -> bytes:
    """The certificate ``public`` with only the user ID(s) of ``address`` (and their signatures);
    user attributes (photos) and other user IDs are left out, the primary key, its direct-key
    signatures and revocations, and the subkeys with their bindings are kept (RFC 4880 §11.1,
    RFC 9580 §10.1: the order of a transferable public key). When no user ID matches, the
    certificate is returned unchanged: a key without any user ID is not importable."""
    address = address.lower()
    kept: list[Any] = []
    keeping = True
    matched = False
    for packet in PacketPile.from_bytes(public):
        tag = packet.tag
        if tag in (Tag.PublicKey, Tag.PublicSubkey):
            keeping = True
        elif tag == Tag.UserID:
            keeping = _uid_address(packet.user_id or "") == address
            matched = matched or keeping
        elif tag == Tag.UserAttribute:
            keeping = False
        elif tag != Tag.Signature:
            continue  # trust and marker packets never leave a keyring
        if keeping:
            kept.append(packet)
    if not matched:
        return public
    return bytes(pgp.Cert.from_packets(kept))


def _usable(cert: pgp.Cert, now: datetime) -> bool:
    if cert.is_revoked:
        return False
    expiration = cert.expiration
    return expiration is None or expiration > now


def _names_key(fingerprint: str, key_id: str) -> bool:
    """Whether ``key_id`` (upper hex) names the primary key of ``fingerprint``: the fingerprint
    itself, or its key ID, the low 64 bits of a v4 fingerprint (RFC 4880 §12.2) and the high 64
    bits of a v6 one (RFC 9580 §5.5.4.3); 32-bit short IDs only for v4 keys."""
    if key_id == fingerprint:
        return True
    if len(fingerprint) == 40:
        return len(key_id) in (8, 16) and fingerprint.endswith(key_id)
    if len(fingerprint) == 64:
        return len(key_id) == 16 and fingerprint.startswith(key_id)
    return False


@dataclass(frozen=True)
class LocalKey:
    """The current key of one of our accounts."""

    address: str
    fingerprint: str
    public: bytes  # as stored: the whole certificate

    def published(self) -> bytes:
        """What we publish: the certificate with the account's user ID only."""
        return only_user_id(self.public, self.address)


@dataclass
class ImportReport:
    stored: list[tuple[str, str]] = field(default_factory=list)  # (address, fingerprint)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    revoked: set[str] = field(default_factory=set)  # fingerprints of stored revoked certificates


def _current_key_query(address: str) -> Select[bytes]:
    return (
        select(AccountKey.public)
        .join(Account, Account.id == AccountKey.account_id)
        .where(Account.address == address, Account.disabled.is_(False), AccountKey.current.is_(True))
        .order_by(AccountKey.id.desc())
    )


def _imported_query(address: str) -> Select[bytes]:
    return select(PublicKey.public).where(PublicKey.address == address).order_by(PublicKey.id)


def _local_key_query() -> Select[str, str, bytes]:
    return (
        select(Account.address, AccountKey.fingerprint, AccountKey.public)
        .join(AccountKey, AccountKey.account_id == Account.id)
        .where(Account.disabled.is_(False), AccountKey.current.is_(True))
        .order_by(AccountKey.id.desc())
    )


class KeyDirectory:
    """Look-ups of certificates by address, and the operator's imports.

    ``db`` may be None when only the synchronous methods are used (inside a transaction the
    caller owns, e.g. the storage worker process). ``local_domains`` are the domains whose
    mailboxes live here (``settings.domains``); without them, look-ups of local keys are not
    restricted by domain, and no address counts as ours for imports and ``certs_for``.
    """

    def __init__(self, db: Database | None, local_domains: Iterable[str] = ()) -> None:
        self._db = db
        self.local_domains = frozenset(d.lower().rstrip(".") for d in local_domains)

    def _database(self) -> Database:
        if self._db is None:
            raise RuntimeError("this KeyDirectory has no database: use the *_sync methods")
        return self._db

    def is_local(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.local_domains

    def _publishes(self, domain: str) -> bool:
        return not self.local_domains or self.is_local(domain)

    # Certificates to encrypt to -------------------------------------------------------------

    def _queries(self, address: str) -> list[Select[bytes]]:
        queries = [_current_key_query(address)]
        try:
            _, domain = split_address(address)
        except ValueError:
            return []
        if not self.is_local(domain):
            queries.append(_imported_query(address))
        return queries

    @staticmethod
    def _certs(blobs: Iterable[bytes], *, include_revoked: bool = False) -> list[pgp.Cert]:
        now = datetime.now(UTC)
        found: list[pgp.Cert] = []
        seen: set[str] = set()
        for blob in blobs:
            try:
                cert = pgp.Cert.from_bytes(bytes(blob))
            except Exception as exc:  # a stored key that no longer parses: skip it, loudly
                log.warning("unreadable stored key skipped", extra={"error": _short(exc)})
                continue
            fpr = pgp.fingerprint(cert)
            if fpr in seen or not (_usable(cert, now) or (include_revoked and cert.is_revoked)):
                continue
            seen.add(fpr)
            found.append(cert)
        return found

    async def certs_for(self, address: str) -> list[pgp.Cert]:
        """The certificates mail to ``address`` is encrypted to: the current key of the local
        account (if it exists and is not disabled), plus the imported keys for an address of
        another domain. Revoked and expired certificates are left out."""
        address = address.strip().lower()
        blobs: list[bytes] = []
        async with self._database().read() as session:
            for query in self._queries(address):
                blobs.extend(await session.scalars(query))
        return self._certs(blobs)

    def certs_for_sync(
        self, session: Session, address: str, *, include_revoked: bool = False
    ) -> list[pgp.Cert]:
        """:meth:`certs_for` inside the caller's (synchronous) transaction. ``include_revoked``
        keeps revoked certificates (to tell a signature by a revoked key from an unknown one)."""
        address = address.strip().lower()
        blobs: list[bytes] = []
        for query in self._queries(address):
            blobs.extend(session.scalars(query))
        return self._certs(blobs, include_revoked=include_revoked)

    # Publication ----------------------------------------------------------------------------

    async def lookup_local(
        self, domain: str, hash_or_address: str, *, local: str | None = None
    ) -> LocalKey | None:
        """The current key of the (non-disabled) account of ``domain`` named by an address or by
        a WKD hash (draft-koch-openpgp-webkey-service §3.1). ``local``, the ``l`` parameter of a
        WKD request, spares a scan of the domain's accounts; it must hash to the hash given."""
        domain = domain.lower().rstrip(".")
        if not self._publishes(domain):
            return None
        async with self._database().read() as session:
            if "@" in hash_or_address:
                try:
                    local_part, addr_domain = split_address(hash_or_address)
                except ValueError:
                    return None
                if addr_domain != domain:
                    return None
                return await self._local_key(session, f"{local_part.lower()}@{domain}")
            hash_ = hash_or_address
            if local is not None:
                if wkd_hash(local) != hash_:
                    return None
                return await self._local_key(session, f"{local.lower()}@{domain}")
            # No local part given: hash the local parts of the domain's accounts (only the
            # addresses are read; clients normally send ``l``, GnuPG always does).
            suffix = "@" + domain
            addresses = await session.scalars(
                select(Account.address).where(
                    Account.address.endswith(suffix, autoescape=True), Account.disabled.is_(False)
                )
            )
            for address in addresses:
                if wkd_hash(address[: -len(suffix)]) == hash_:
                    return await self._local_key(session, address)
        return None

    async def _local_key(self, session: AsyncSession, address: str) -> LocalKey | None:
        row = (await session.execute(_local_key_query().where(Account.address == address))).first()
        return LocalKey(str(row[0]), str(row[1]), bytes(row[2])) if row else None

    async def lookup_local_key_id(self, key_id: str) -> list[LocalKey]:
        """Current keys of our accounts whose primary key is named by a fingerprint or key ID
        (hex, without ``0x``)."""
        key_id = key_id.upper()
        query = _local_key_query().where(
            or_(AccountKey.fingerprint.endswith(key_id), AccountKey.fingerprint.startswith(key_id))
        )
        async with self._database().read() as session:
            rows = (await session.execute(query)).all()
        found: list[LocalKey] = []
        for address, fpr, public in rows:
            _, domain = split_address(str(address))
            if self._publishes(domain) and _names_key(str(fpr), key_id):
                found.append(LocalKey(str(address), str(fpr), bytes(public)))
        return found

    # Operator imports -----------------------------------------------------------------------

    def import_keys(self, session: Session, data: bytes, *, actor: str = "operator") -> list[tuple[str, str]]:
        """Store every certificate in ``data`` under each e-mail address of its user IDs; returns
        the ``(address, fingerprint)`` pairs stored. See :meth:`import_report`."""
        return self.import_report(session, data, actor=actor).stored

    def import_report(self, session: Session, data: bytes, *, actor: str = "operator") -> ImportReport:
        """Import ``data`` inside the caller's transaction.

        Raises ``KeyImportError`` (and stores nothing) if the data is not OpenPGP or contains a
        secret key. A certificate already known for an address is merged with the new copy
        (new signatures, new subkeys, revocations are kept: Sequoia's merge). Revoked
        certificates are stored too, so that a revocation reaches us, but never used.
        """
        certs = parse_certs(data)
        report = ImportReport()
        for cert in certs:
            fpr = pgp.fingerprint(cert)
            addresses = [a for a in (_uid_address(str(uid)) for uid in cert.user_ids) if a]
            if not addresses:
                report.skipped.append((fpr, "no e-mail address in its user IDs"))
                continue
            for address in dict.fromkeys(addresses):
                try:
                    _, domain = split_address(address)
                except ValueError:
                    report.skipped.append((f"{fpr} {address}", "not an e-mail address"))
                    continue
                if self.is_local(domain):
                    report.skipped.append(
                        (f"{fpr} {address}", f"{domain} is our own domain: accounts manage their own keys")
                    )
                    continue
                self._store(session, address, fpr, cert)
                audit.record(
                    session, actor=actor, action="directory.key.import", target=address, fingerprint=fpr
                )
                report.stored.append((address, fpr))
                if cert.is_revoked:
                    report.revoked.add(fpr)
        session.flush()
        return report

    @staticmethod
    def _store(session: Session, address: str, fpr: str, cert: pgp.Cert) -> None:
        row = session.scalars(
            select(PublicKey).where(PublicKey.address == address, PublicKey.fingerprint == fpr)
        ).first()
        if row is None:
            session.add(PublicKey(address=address, fingerprint=fpr, public=bytes(cert), source="import"))
            return
        try:
            merged = pgp.Cert.from_bytes(bytes(row.public)).merge(cert)
        except Exception:
            merged = cert  # the stored copy no longer parses: the new one replaces it
        row.public = bytes(merged)
        row.updated_at = utcnow()


async def import_keys_cli(settings: Settings, path: str | Path) -> int:
    """``openmss key import FILE`` (``-`` for standard input): 0 when at least one key was
    stored, 1 when nothing was (refused or skipped), 2 when the file cannot be read."""
    from openmss.db.engine import Database
    from openmss.db.migrate import upgrade

    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    directory = KeyDirectory(db, settings.domains)

    def work() -> ImportReport:
        with db.sync_transaction() as session:
            return directory.import_report(session, data, actor="cli")

    try:
        if settings.auto_migrate:
            await upgrade(db)
        report = await asyncio.to_thread(work)
    except KeyImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    for address, fpr in report.stored:
        note = " (revoked: kept, never used)" if fpr in report.revoked else ""
        print(f"imported {fpr} for {address}{note}")
    for what, why in report.skipped:
        print(f"skipped {what}: {why}", file=sys.stderr)
    return 0 if report.stored else 1
