"""The OpenPGP layer over pysequoia: keys, encryption, and signature verdicts."""

from __future__ import annotations

import pysequoia as sq
import pytest

from openmss.crypto import pgp


@pytest.fixture(scope="module")
def alice() -> pgp.GeneratedKey:
    return pgp.generate_key("alice@a.test", "Alice")


def test_generated_key_is_v4_curve25519_with_the_address(alice: pgp.GeneratedKey) -> None:
    cert = pgp.load_cert(alice.public)
    assert len(alice.fingerprint) == 40  # a v4 fingerprint (RFC 4880 §12.2)
    assert pgp.cert_addresses(cert) == ["alice@a.test"]
    assert len(pgp.key_fingerprints(cert)) == 3  # certify primary, signing and encryption subkeys
    assert pgp.usable_for_encryption(cert) is None
    assert pgp.fingerprint(pgp.load_secret(alice.secret).extract_certificate()) == alice.fingerprint


def test_encrypt_and_decrypt(alice: pgp.GeneratedKey) -> None:
    cert, secret = pgp.load_cert(alice.public), pgp.load_secret(alice.secret)
    data = bytes(range(256)) * 40
    encrypted = pgp.encrypt(data, [cert], armor=False)
    assert data not in encrypted
    assert pgp.decrypt(encrypted, secret) == data
    other = pgp.load_secret(pgp.generate_key("eve@e.test").secret)
    with pytest.raises(pgp.PgpError) as failure:
        pgp.decrypt(encrypted, other)
    assert "\n" not in str(failure.value)  # one line, no Rust backtrace


def test_secret_key_refused_as_public(alice: pgp.GeneratedKey) -> None:
    with pytest.raises(pgp.PgpError, match="secret key"):
        pgp.load_cert(alice.secret)
    with pytest.raises(pgp.PgpError):
        pgp.load_cert(b"not a key at all")


def test_revoked_key_is_never_encrypted_to() -> None:
    key = pgp.generate_key("bob@b.test")
    tsk = pgp.load_secret(key.secret)
    cert = pgp.load_cert(key.public)
    revoked = pgp.load_cert(key.public + bytes(cert.revoke(tsk.certifier())))
    assert revoked.is_revoked
    assert pgp.usable_for_encryption(revoked) == "the key is revoked"
    with pytest.raises(pgp.PgpError, match="revoked"):
        pgp.encrypt(b"x", [revoked], armor=True)


def test_signature_verdicts(alice: pgp.GeneratedKey) -> None:
    cert, secret = pgp.load_cert(alice.public), pgp.load_secret(alice.secret)
    data = b"Content-Type: text/plain\r\n\r\nordonnance\r\n"
    signature = pgp.sign_detached(data, secret)
    assert pgp.signature_micalg(signature) == "pgp-sha512"

    def known(issuer: str) -> sq.Cert | None:
        return cert if pgp.has_key(cert, issuer) else None

    good = pgp.verify_detached(data, signature, known)
    assert good.verdict is pgp.Verdict.GOOD and good.cert_fingerprint == alice.fingerprint
    assert pgp.verify_detached(data + b"x", signature, known).verdict is pgp.Verdict.BAD
    assert pgp.verify_detached(data, signature, lambda issuer: None).verdict is pgp.Verdict.UNKNOWN_KEY
    assert pgp.verify_detached(data, b"garbage", known).verdict is pgp.Verdict.BAD
    revoked = pgp.load_cert(alice.public + bytes(cert.revoke(secret.certifier())))
    assert pgp.verify_detached(data, signature, lambda issuer: revoked).verdict is pgp.Verdict.REVOKED


def test_dearmor_reads_what_sequoia_armours_with_headers_and_crlf(alice: pgp.GeneratedKey) -> None:
    cert, secret = pgp.load_cert(alice.public), pgp.load_secret(alice.secret)
    data = b"message " * 500
    binary = pgp.encrypt(data, [cert], armor=False)
    armoured = pgp.encrypt(data, [cert], armor=True)
    assert pgp.dearmor(armoured) is not None and pgp.decrypt(armoured, secret) == data
    # Armour headers, CRLF line ends, no checksum line: all read to the same packets.
    text = sq.armor(binary, sq.ArmorKind.Message)
    text = text.encode() if isinstance(text, str) else text
    with_headers = text.replace(b"-----\n", b"-----\nVersion: GnuPG v2\nComment: test\n", 1)
    crlf = with_headers.replace(b"\n", b"\r\n")
    no_checksum = b"\n".join(line for line in with_headers.split(b"\n") if not line.startswith(b"="))
    for variant in (with_headers, crlf, no_checksum):
        assert pgp.dearmor(variant) == binary
        assert pgp.decrypt(variant, secret) == data


def test_dearmor_gives_way_to_sequoia_on_anything_else(alice: pgp.GeneratedKey) -> None:
    cert, secret = pgp.load_cert(alice.public), pgp.load_secret(alice.secret)
    binary = pgp.encrypt(b"hello", [cert], armor=False)
    assert pgp.dearmor(binary) is None
    assert pgp.dearmor(b"-----BEGIN PGP MESSAGE-----\n\nAAAA") is None  # no end line
    assert pgp.dearmor(b"junk\n-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n") is None
    assert pgp.decrypt(binary, secret) == b"hello"
    with pytest.raises(pgp.PgpError):
        pgp.decrypt(b"-----BEGIN PGP MESSAGE-----\n\n!!!!\n-----END PGP MESSAGE-----\n", secret)
