"""The optional escrow key: an operator's OpenPGP certificate that every account's data key is
also encrypted to, so that mail survives a lost password. Off unless ``escrow_key_file`` is set;
its secret half must live offline, never on this server."""

from __future__ import annotations

from openmss.crypto import pgp
from openmss.settings import Settings


def load_escrow(settings: Settings) -> pgp.Cert | None:
    if settings.escrow_key_file is None:
        return None
    cert = pgp.load_cert(settings.escrow_key_file.read_bytes())
    problem = pgp.usable_for_encryption(cert)
    if problem:
        raise ValueError(f"escrow key {settings.escrow_key_file}: {problem}")
    return cert
