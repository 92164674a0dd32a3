"""PGP/MIME (RFC 3156): encryption with protected headers, signatures, detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.message import pgpmime
from openmss.crypto import pgp

MESSAGE = (
    b"Received: from mx.b.test by mx.a.test; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"From: Dr Martin <martin@a.test>\r\n"
    b"To: bernard@a.test\r\n"
    b"Subject: Compte rendu MARKER\r\n"
    b"\tsuite du sujet\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@a.test>\r\n"
    b"X-Patient: MARKER-NIR\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Le patient va bien. MARKER\r\n"
)


@pytest.fixture(scope="module")
def key() -> tuple[pgp.Cert, pgp.Tsk]:
    generated = pgp.generate_key("bernard@a.test")
    return pgp.load_cert(generated.public), pgp.load_secret(generated.secret)


def _outer_fields(message: bytes) -> dict[str, bytes]:
    head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return {name: raw for name, raw in pgpmime.header_fields(head)}


def test_encrypted_copy_hides_subject_and_content(key: tuple[pgp.Cert, pgp.Tsk]) -> None:
    cert, secret = key
    encrypted = pgpmime.encrypt_message(MESSAGE, [cert], mark_protected=False)
    assert b"MARKER" not in encrypted
    fields = _outer_fields(encrypted)
    assert fields["subject"] == b"Subject: ...\r\n"
    for clear in ("received", "from", "to", "date", "message-id"):
        assert fields[clear] in MESSAGE  # routing and threading fields stay, byte for byte
    assert "x-patient" not in fields
    assert b'multipart/encrypted; protocol="application/pgp-encrypted"' in fields["content-type"]
    assert pgpmime.is_encrypted(encrypted)
    # The server's own copies come back exactly as they were (a DKIM signature stays valid).
    assert pgpmime.decrypt_message(encrypted, [secret]) == MESSAGE


def test_protected_headers_hint_for_clients(key: tuple[pgp.Cert, pgp.Tsk]) -> None:
    cert, secret = key
    inner = pgpmime.decrypt_message(pgpmime.encrypt_message(MESSAGE, [cert]), [secret])
    assert b'Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n' in inner
    assert inner.replace(b'; protected-headers="v1"', b"") == MESSAGE
    plain = b"From: a@a.test\r\nSubject: s\r\n\r\nbody\r\n"
    inner = pgpmime.decrypt_message(pgpmime.encrypt_message(plain, [cert]), [secret])
    added = b'Content-Type: text/plain; charset="us-ascii"; protected-headers="v1"\r\n'
    assert inner == b"From: a@a.test\r\nSubject: s\r\n" + added + b"\r\nbody\r\n"


def test_wrong_key_and_non_pgp_messages(key: tuple[pgp.Cert, pgp.Tsk]) -> None:
    cert, _ = key
    other = pgp.load_secret(pgp.generate_key("eve@e.test").secret)
    with pytest.raises(pgpmime.PgpMimeError):
        pgpmime.decrypt_message(pgpmime.encrypt_message(MESSAGE, [cert]), [other])
    with pytest.raises(pgpmime.PgpMimeError):
        pgpmime.decrypt_message(MESSAGE, [other])


@pytest.mark.parametrize(
    ("content_type", "encrypted"),
    [
        (b'multipart/encrypted; protocol="application/pgp-encrypted"; boundary=x', True),
        (b'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"', True),
        (b'application/x-pkcs7-mime; name="smime.p7m"', True),
        (b'multipart/signed; protocol="application/pgp-signature"; boundary=x', False),
        (b"text/plain", False),
    ],
)
def test_is_encrypted(content_type: bytes, encrypted: bool) -> None:
    message = b"From: a@a.test\r\nContent-Type: " + content_type + b"\r\n\r\nbody\r\n"
    assert pgpmime.is_encrypted(message) is encrypted


def test_sign_then_take_apart(key: tuple[pgp.Cert, pgp.Tsk]) -> None:
    cert, secret = key
    signed = pgpmime.sign_message(MESSAGE, secret)
    assert b"multipart/signed; micalg=pgp-sha512" in signed
    assert _outer_fields(signed)["subject"] in MESSAGE  # a signed message keeps its headers
    parts = pgpmime.signed_parts(signed)
    assert parts is not None
    data, signature = parts
    assert data == b"Content-Type: text/plain; charset=utf-8\r\n\r\nLe patient va bien. MARKER"
    verdict = pgp.verify_detached(data, signature, lambda issuer: cert if pgp.has_key(cert, issuer) else None)
    assert verdict.verdict is pgp.Verdict.GOOD
    assert pgpmime.signed_parts(MESSAGE) is None


@settings(max_examples=30, deadline=None)
@given(
    subject=st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=60),
    body=st.binary(max_size=2000).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
)
def test_round_trip_is_exact(key: tuple[pgp.Cert, pgp.Tsk], subject: str, body: bytes) -> None:
    cert, secret = key
    message = b"From: a@a.test\r\nSubject: " + subject.encode() + b"\r\n\r\n" + body
    stored = pgpmime.encrypt_message(message, [cert], mark_protected=False)
    assert pgpmime.decrypt_message(stored, [secret]) == message


def test_stored_copies_are_taken_apart_without_the_mime_parser(
    key: tuple[pgp.Cert, pgp.Tsk], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy as ``encrypt_message`` writes it gives its armour by a direct search, the very
    bytes the MIME path finds; anything laid out otherwise takes the MIME path."""
    cert, secret = key
    copy = pgpmime.encrypt_message(MESSAGE, [cert], mark_protected=False)
    fast = pgpmime.encrypted_payload(copy)
    monkeypatch.setattr(pgpmime, "_our_payload", lambda message: None)
    assert pgpmime.encrypted_payload(copy) == fast
    monkeypatch.undo()
    assert pgpmime._our_payload(copy) == fast and fast.startswith(b"-----BEGIN PGP MESSAGE-----\r\n")
    assert pgpmime.decrypt_message(copy, [secret]) == MESSAGE
    armour = fast.rstrip(b"\r\n")
    others = [
        # Two armour blocks (an attacker's message, say): not the simple layout.
        copy.replace(fast, fast + fast),
        # A transfer encoding on a part.
        copy.replace(
            b"Content-Description: OpenPGP",
            b"Content-Transfer-Encoding: 7bit\r\nContent-Description: OpenPGP",
        ),
        # The type spelt otherwise (still valid MIME).
        copy.replace(
            b"Content-Type: multipart/encrypted; protocol=", b"Content-Type: Multipart/Encrypted; protocol="
        ),
        # No armour end.
        copy.replace(b"-----END PGP MESSAGE-----", b"-----END PGP-----"),
    ]
    for other in others:
        assert other != copy and pgpmime._our_payload(other) is None
    # The MIME path still reads the respelt type.
    assert pgpmime.encrypted_payload(others[2]).rstrip(b"\r\n") == armour
