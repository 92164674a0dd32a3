"""Tables of the keyring: every account's OpenPGP keys and what unlocks them.

Key hierarchy of an account whose key the server holds (the Dovecot mail-crypt model):

    password ──argon2id──▶ KEK ──AES-GCM──▶ DK (account data key, 32 random bytes)
    app password ─argon2id─▶ KEK' ─AES-GCM─▶ the same DK
    escrow certificate (optional) ─OpenPGP─▶ the same DK
    DK ──AES-GCM──▶ the OpenPGP secret key(s) of the account

A password change re-wraps the DK; nothing else is re-encrypted. Nothing here is readable
without a password: the public certificate and the fingerprints are public by nature.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from openmss.db.base import Base, BigId, UTCDateTime, utcnow


class AccountKey(Base):
    """An OpenPGP key of an account. ``current`` is the one mail is encrypted to; older
    server-held keys stay so that older mail can still be read."""

    __tablename__ = "account_keys"
    __table_args__ = (Index("ix_account_keys_account", "account_id", "current"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    public: Mapped[bytes] = mapped_column(LargeBinary)  # binary transferable public key
    # "server": the secret key is here, sealed under the account's DK; "own": the user keeps it.
    mode: Mapped[str] = mapped_column(String(16))
    sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    # The user asked the server to sign their outgoing mail with this (server-held) key.
    sign_outgoing: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyWrap(Base):
    """The account's DK, sealed under one credential: the password, an app password, or the
    operator's escrow key."""

    __tablename__ = "key_wraps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "password" | "app" | "escrow"
    app_password_id: Mapped[int | None] = mapped_column(
        ForeignKey("app_passwords.id", ondelete="CASCADE"), default=None, index=True
    )
    kdf: Mapped[str] = mapped_column(String(255), default="")  # empty for escrow (OpenPGP)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppPassword(Base):
    """A password for one mail client, revocable on its own. App passwords are long random
    strings (100 bits), so a SHA-256 digest is a sufficient verifier and an index key."""

    __tablename__ = "app_passwords"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
