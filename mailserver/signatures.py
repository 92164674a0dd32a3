"""Verification of incoming PGP/MIME signatures (RFC 3156 §5), recorded in an
``Authentication-Results`` field (RFC 8601) before the message is stored (and encrypted).

The result is one of:

* ``x-openpgp=pass``    good signature by a key the directory holds for the From address;
* ``x-openpgp=fail``    the signature does not match the message (``bad signature``), or the
  key that made it is revoked (``key revoked``);
* ``x-openpgp=neutral`` signed by a key the directory does not know for that address.

Fields that claim to come from us (our authserv-id) are removed first: anyone can write one
(RFC 8601 §5).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from mailserver.message.headers import header_addresses, parse_header, sanitize_header_value, split_header
from mailserver.message.pgpmime import header_fields, signed_parts
from openmss.crypto import pgp

CertsFor = Callable[[Session, str], list[pgp.Cert]]

_RESULTS = {
    pgp.Verdict.GOOD: ("pass", "good signature"),
    pgp.Verdict.BAD: ("fail", "bad signature"),
    pgp.Verdict.REVOKED: ("fail", "key revoked"),
    pgp.Verdict.UNKNOWN_KEY: ("neutral", "unknown key"),
}


def _authserv_of(raw_field: bytes) -> str:
    value = raw_field.split(b":", 1)[1].decode("utf-8", "replace")
    value = " ".join(value.split())
    return value.split(";", 1)[0].strip().split(" ", 1)[0].lower()


def strip_forged_results(message: bytes, authserv_id: str) -> bytes:
    """Remove Authentication-Results fields carrying our authserv-id (RFC 8601 §5)."""
    head_view, body = split_header(message)
    fields = header_fields(bytes(head_view))
    kept = [
        raw
        for name, raw in fields
        if not (name == "authentication-results" and _authserv_of(raw) == authserv_id.lower())
    ]
    if len(kept) == len(fields):
        return message
    rest = bytes(head_view)[sum(len(raw) for _, raw in fields) :]
    return b"".join(kept) + rest + bytes(body)


class SignatureChecker:
    def __init__(self, authserv_id: str, certs_for: CertsFor) -> None:
        self.authserv_id = authserv_id
        self._certs_for = certs_for

    def result_field(self, session: Session, message: bytes) -> bytes | None:
        parts = signed_parts(message)
        if parts is None:
            return None
        signed, signature = parts
        senders = header_addresses(parse_header(message), "From")
        sender = senders[0].lower() if len(senders) == 1 else None
        certs = self._certs_for(session, sender) if sender else []

        def lookup(issuer: str) -> pgp.Cert | None:
            return next((c for c in certs if pgp.has_key(c, issuer)), None)

        verification = pgp.verify_detached(signed, signature, lookup)
        result, reason = _RESULTS[verification.verdict]
        key = verification.cert_fingerprint or verification.fingerprint
        comment = f"{reason}, key {key}" if key else reason
        text = f"{self.authserv_id}; x-openpgp={result} ({comment})"
        if sender:
            text += f" header.from={sanitize_header_value(sender)}"
        return b"Authentication-Results: " + text.encode("utf-8") + b"\r\n"

    def annotate(self, session: Session, message: bytes) -> bytes:
        message = strip_forged_results(message, self.authserv_id)
        field = self.result_field(session, message)
        return field + message if field else message
