"""OpenPGP for OpenMSS: a thin layer over pysequoia (Sequoia-PGP).

Why pysequoia: it is maintained, fast (Rust), refuses SHA-1 signatures and revoked keys where
it matters, and speaks both RFC 4880 and RFC 9580. Every OpenPGP operation of the project
goes through this module so that the library stays replaceable and its quirks are handled
once:

* Sequoia errors carry a Rust backtrace when ``RUST_BACKTRACE`` is set; only their first line
  is kept (``PgpError``), so that logs stay short and never echo data.
* Sequoia happily encrypts to a revoked certificate: ``usable_for_encryption`` is checked
  here before any encryption.
* Detached signature verification says only "no valid signature"; ``verify_detached``
  tells good, bad, unknown key and revoked apart by looking the issuer up first.

Keys we generate are v4 (RFC 4880 profile) Curve25519 keys. Sequoia picks SEIPD v1 when a
recipient's key does not advertise SEIPD v2 (every GnuPG 2.2 key), so what we encrypt for
GnuPG and Thunderbird users stays readable by them.
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pybase64
import pysequoia as sq
from pysequoia.packet import PacketPile, Tag

Cert = sq.Cert
Tsk = sq.Tsk
Decryptor = sq.PyDecryptor  # a secret key ready to decrypt (``Tsk.decryptor()``), reusable


class PgpError(ValueError):
    """An OpenPGP operation failed; the message is one short line."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class GeneratedKey:
    fingerprint: str  # upper-case hex
    public: bytes  # binary transferable public key (the certificate)
    secret: bytes  # binary transferable secret key, unprotected: wrap it before storing


def generate_key(address: str, display_name: str = "") -> GeneratedKey:
    """A v4 Curve25519 key (certify primary, signing and encryption subkeys) for ``address``."""
    user_id = f"{display_name} <{address}>" if display_name else f"<{address}>"
    tsk = sq.Tsk.generate(user_id, profile=sq.Profile.RFC4880, cipher_suite=sq.CipherSuite.Cv25519)
    cert = tsk.extract_certificate()
    return GeneratedKey(cert.fingerprint.upper(), bytes(cert), bytes(tsk))


def load_cert(data: bytes) -> sq.Cert:
    """One public certificate, binary or ASCII-armoured; secret parts are refused."""
    try:
        certs = sq.Cert.split_bytes(data)
    except Exception as exc:
        raise PgpError(f"not an OpenPGP certificate: {_short(exc)}") from None
    if len(certs) != 1:
        raise PgpError(f"expected one certificate, found {len(certs)}")
    cert = certs[0]
    if any(packet.tag in (Tag.SecretKey, Tag.SecretSubkey) for packet in PacketPile.from_bytes(data)):
        raise PgpError("this is a secret key: upload only the public key")
    return cert


def load_secret(data: bytes) -> sq.Tsk:
    try:
        return sq.Tsk.from_bytes(data)
    except Exception as exc:
        raise PgpError(f"not an OpenPGP secret key: {_short(exc)}") from None


def cert_addresses(cert: sq.Cert) -> list[str]:
    """The e-mail addresses of the certificate's (non-revoked) user IDs, lower-cased."""
    found: list[str] = []
    for uid in cert.user_ids:
        text = str(uid)
        if "<" in text and text.endswith(">"):
            text = text[text.rindex("<") + 1 : -1]
        text = text.strip().lower()
        if "@" in text and text not in found:
            found.append(text)
    return found


def usable_for_encryption(cert: sq.Cert) -> str | None:
    """Why ``cert`` must not be encrypted to (revoked, expired, no encryption subkey), or None."""
    if cert.is_revoked:
        return "the key is revoked"
    try:
        sq.encrypt(b"", [cert], armor=False)
    except Exception as exc:
        return f"the key cannot encrypt: {_short(exc)}"
    return None


def fingerprint(cert: sq.Cert) -> str:
    return cert.fingerprint.upper()


def key_fingerprints(cert: sq.Cert) -> set[str]:
    """The fingerprints of the primary key and of every subkey (signatures name a subkey)."""
    found = {fingerprint(cert)}
    for packet in PacketPile.from_bytes(bytes(cert)):
        if packet.tag in (Tag.PublicSubkey, Tag.SecretSubkey):
            fpr = packet.fingerprint
            if fpr:
                found.add(fpr.upper())
    return found


def has_key(cert: sq.Cert, issuer: str) -> bool:
    """Whether ``issuer`` (a fingerprint or a 16-digit key id) names a key of ``cert``."""
    issuer = issuer.upper()
    short = len(issuer) == 16  # a key id: the last 64 bits of a v4 fingerprint
    return any(fpr == issuer or (short and fpr.endswith(issuer)) for fpr in key_fingerprints(cert))


def armor_public(public: bytes) -> str:
    return sq.armor(public, sq.ArmorKind.PublicKey)


def encrypt(
    data: bytes, recipients: Sequence[sq.Cert], *, signer: sq.Tsk | None = None, armor: bool
) -> bytes:
    """Encrypt ``data`` to every recipient (optionally signed inside)."""
    for cert in recipients:
        if cert.is_revoked:
            raise PgpError(f"{fingerprint(cert)}: the key is revoked")
    try:
        return sq.encrypt(data, list(recipients), signer=signer.signer() if signer else None, armor=armor)
    except Exception as exc:
        raise PgpError(f"encryption failed: {_short(exc)}") from None


_ARMOR_HEADERS_END = re.compile(rb"\r?\n\r?\n")  # the blank line after the armour headers


def dearmor(data: bytes) -> bytes | None:
    """The binary form of an ASCII-armoured OpenPGP message (RFC 9580 §6.2), or None when it
    is not one this simple reader takes (then Sequoia reads the armour itself). Decoding the
    base64 here with pybase64 (SIMD; line breaks skipped) is several times faster than
    Sequoia's armour reader or ``binascii``; the message's integrity rests on its own MDC/AEAD,
    not on the armour checksum (RFC 9580 §6.1)."""
    start = data.find(b"-----BEGIN PGP MESSAGE-----")
    if start < 0 or data[:start].strip():
        return None
    blank = _ARMOR_HEADERS_END.search(data, start)
    if blank is None:
        return None
    end = data.find(b"-----END PGP MESSAGE-----", blank.end())
    if end < 0:
        return None
    body = data[blank.end() : end]
    # The optional checksum line ("=XXXX") is the last one: look only there (an RFC 9580
    # armour has none, and searching the whole armour for it costs more than decoding it).
    checksum = body.rfind(b"\n=", max(0, len(body) - 16))
    if checksum >= 0:
        body = body[: checksum + 1]
    try:
        return pybase64.b64decode(body, validate=False) or None
    except (binascii.Error, ValueError):
        return None


def decrypt(data: bytes, secret: sq.Tsk | sq.PyDecryptor) -> bytes:
    """``data`` decrypted with ``secret``; pass a ``Decryptor`` to decrypt many messages with
    one key (making one re-checks the key's self-signatures: a few microseconds each time)."""
    binary = dearmor(data)
    if binary is not None:
        data = binary
    try:
        result = sq.decrypt(data, secret.decryptor() if isinstance(secret, sq.Tsk) else secret).bytes
    except Exception as exc:
        raise PgpError(f"decryption failed: {_short(exc)}") from None
    if result is None:
        raise PgpError("decryption produced nothing")
    return result


def sign_detached(data: bytes, secret: sq.Tsk) -> bytes:
    """An ASCII-armoured detached signature over ``data`` (RFC 3156 §5)."""
    try:
        return sq.sign(secret.signer(), data, mode=sq.SignatureMode.DETACHED, armor=True)
    except Exception as exc:
        raise PgpError(f"signing failed: {_short(exc)}") from None


def signature_micalg(signature: bytes) -> str:
    """The RFC 3156 §5 ``micalg`` parameter for a signature: ``pgp-`` and its hash, lower-case."""
    try:
        name = str(sq.Sig.from_bytes(signature).hash_algorithm).rpartition(".")[2]
    except Exception as exc:
        raise PgpError(f"not a signature: {_short(exc)}") from None
    return "pgp-" + name.lower()


class Verdict(enum.Enum):
    GOOD = "good"
    BAD = "bad"
    UNKNOWN_KEY = "unknown-key"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    fingerprint: str | None  # the issuer (signing subkey or primary), as the signature names it
    cert_fingerprint: str | None = None  # the primary key of the certificate that verified it


CertLookup = Callable[[str], sq.Cert | None]


def verify_detached(data: bytes, signature: bytes, lookup: CertLookup) -> Verification:
    """Check a detached signature over ``data``.

    ``lookup`` is given the issuer fingerprint (or key id, upper-case hex) and returns the
    certificate that holds that key, or None. A signature by a key nobody knows is
    ``UNKNOWN_KEY`` (neither good nor bad); by a revoked certificate, ``REVOKED``.
    """
    try:
        sig = sq.Sig.from_bytes(signature)
    except Exception:
        return Verification(Verdict.BAD, None)
    issuer = (sig.issuer_fingerprint or sig.issuer_key_id or "").upper() or None
    cert = lookup(issuer) if issuer else None
    if cert is None:
        return Verification(Verdict.UNKNOWN_KEY, issuer)
    if cert.is_revoked:
        return Verification(Verdict.REVOKED, issuer, fingerprint(cert))
    try:
        result = sq.verify(bytes=data, store=lambda _ids: [cert], signature=sig)
    except Exception:
        return Verification(Verdict.BAD, issuer, fingerprint(cert))
    if not result.valid_sigs:
        return Verification(Verdict.BAD, issuer, fingerprint(cert))
    return Verification(Verdict.GOOD, issuer, fingerprint(cert))
