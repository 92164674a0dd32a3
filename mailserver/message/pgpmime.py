"""PGP/MIME (RFC 3156) for the store: encrypt a message with protected headers, open it again,
take a signed message apart, and sign one.

Protected headers follow draft-autocrypt-lamps-protected-headers: the encrypted part is the
whole original message (every header field, the body unchanged) whose Content-Type carries
``protected-headers="v1"``; outside, only the fields that transport and threading need stay
readable (``CLEAR_FIELDS``) and the Subject is replaced by ``...``. Decrypting gives back a
complete RFC 5322 message, which is what IMAP serves to an unlocked session.
"""

from __future__ import annotations

import email
import re
import secrets
from collections.abc import Sequence
from email.message import Message
from email.policy import compat32

from mailserver.message.headers import select_fields, split_header
from openmss.crypto import pgp

# Outer header fields kept in clear on an encrypted message: trace fields (routing and
# debugging), the addresses and dates clients need to list and thread messages of an own-key
# user without the key, and what we add ourselves. Everything else, Subject first, is only
# inside. See docs/encryption.md.
CLEAR_FIELDS = frozenset(
    {
        "received",
        "return-path",
        "from",
        "sender",
        "to",
        "cc",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "auto-submitted",
        "authentication-results",
        "autocrypt",
    }
)
HIDDEN_SUBJECT = b"..."
_ENCRYPTED_TYPES = {
    ("multipart", "encrypted"),
    ("application", "pkcs7-mime"),
    ("application", "x-pkcs7-mime"),
}
# MIME fields that describe the content: they move into the signed part of multipart/signed.
_CONTENT_FIELDS = frozenset(
    {"content-type", "content-transfer-encoding", "content-disposition", "content-description", "content-id"}
)
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


class PgpMimeError(ValueError):
    """The message is not PGP/MIME of the expected kind, or cannot be opened."""


def header_fields(head: bytes) -> list[tuple[str, bytes]]:
    """The fields of a header block as (lower-cased name, raw bytes with folding and CRLF),
    in order; the empty line that ends the block is not included. Junk lines stay attached
    to the field before them, so nothing is lost or reordered."""
    fields: list[tuple[str, bytes]] = []
    for line in head.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        match = _FIELD_NAME.match(line)
        if match and line[:1] not in (b" ", b"\t"):
            fields.append((match.group(1).decode("ascii").lower(), line))
        elif fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + line)
        else:
            fields.append(("", line))
    return fields


def _content_type(head: bytes) -> tuple[str, str, Message]:
    """Only the Content-Type field is parsed (every message goes through here on delivery)."""
    msg = select_fields(head, ("Content-Type",))
    return msg.get_content_maintype(), msg.get_content_subtype(), msg


def _param(msg: Message, name: str) -> str:
    value = msg.get_param(name)
    return value.lower() if isinstance(value, str) else ""


def _may_name(head: bytes, words: Sequence[bytes]) -> bool:
    """Whether any of ``words`` occurs in the header block at all (any case): a media type is
    a plain token (no encoded words, folding only between tokens), so a Content-Type that
    does not contain a type's name is not that type, and the parse can be skipped. This runs
    for every message delivered."""
    lowered = head.lower()
    return any(word in lowered for word in words)


def is_encrypted(message: bytes) -> bool:
    """Whether a message is already end-to-end encrypted (PGP/MIME or S/MIME): stored as is."""
    head, _ = split_header(message)
    if not _may_name(bytes(head), (b"encrypted", b"pkcs7-mime")):
        return False
    main, sub, _ = _content_type(bytes(head))
    return (main, sub) in _ENCRYPTED_TYPES


def _boundary() -> str:
    return "openmss-" + secrets.token_hex(12)


def _with_protected_param(field: bytes) -> bytes:
    stripped = field.rstrip(b"\r\n")
    return stripped + b'; protected-headers="v1"\r\n'


def encrypt_message(message: bytes, recipients: Sequence[pgp.Cert], *, mark_protected: bool = True) -> bytes:
    """RFC 3156 §4 multipart/encrypted, the whole ``message`` inside with protected headers.

    ``mark_protected`` adds ``protected-headers="v1"`` to the inner Content-Type, the hint a
    mail client needs to show the inner Subject. The server leaves it out for copies it will
    decrypt itself, so that those come back byte for byte (a DKIM signature stays valid).
    """
    head_view, body_view = split_header(message)
    head, body = bytes(head_view), body_view
    fields = header_fields(head)
    if mark_protected:
        inner_fields: list[bytes] = []
        has_type = False
        for name, raw in fields:
            if name == "content-type" and not has_type:
                inner_fields.append(_with_protected_param(raw))
                has_type = True
            else:
                inner_fields.append(raw)
        if not has_type:
            inner_fields.append(b'Content-Type: text/plain; charset="us-ascii"; protected-headers="v1"\r\n')
        inner = b"".join(inner_fields) + head[len(b"".join(raw for _, raw in fields)) :] + bytes(body)
    else:
        inner = message
    armored = pgp.encrypt(inner, recipients, armor=True).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    outer = [raw for name, raw in fields if name in CLEAR_FIELDS]
    if any(name == "subject" for name, _ in fields):
        outer.append(b"Subject: " + HIDDEN_SUBJECT + b"\r\n")
    boundary = _boundary().encode()
    outer.append(b"MIME-Version: 1.0\r\n")
    outer.append(
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n boundary="'
        + boundary
        + b'"\r\n'
    )
    return b"".join(
        [
            *outer,
            b"\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156).\r\n",
            b"--" + boundary + b"\r\n",
            b"Content-Type: application/pgp-encrypted\r\n",
            b"Content-Description: PGP/MIME version identification\r\n\r\n",
            b"Version: 1\r\n\r\n",
            b"--" + boundary + b"\r\n",
            b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n',
            b"Content-Description: OpenPGP encrypted message\r\n",
            b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n',
            armored if armored.endswith(b"\r\n") else armored + b"\r\n",
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )


_OUR_TYPE = b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
_BEGIN = b"\r\n-----BEGIN PGP MESSAGE-----\r\n"
_END = b"\r\n-----END PGP MESSAGE-----\r\n"


def _our_payload(message: bytes) -> bytes | None:
    """The armoured data of a message laid out as ``encrypt_message`` writes it (the stored
    copies this server reads back on every FETCH), found without parsing its MIME structure:
    our exact Content-Type field, one armour block, no transfer encoding anywhere. None for
    anything else. A wrong slice could only fail to decrypt (the data is integrity-protected)."""
    end_of_header = message.find(b"\r\n\r\n")
    if end_of_header < 0 or message.find(_OUR_TYPE, 0, end_of_header + 2) < 0:
        return None
    begin = message.find(_BEGIN, end_of_header)
    end = message.find(_END, begin + 1) if begin >= 0 else -1
    if end < 0 or message.find(_BEGIN, begin + 1) >= 0 or message.find(_END, end + 1) >= 0:
        return None
    if message.find(b"Content-Transfer-Encoding", end_of_header, begin) >= 0:
        return None
    return message[begin + 2 : end + len(_END)]


def encrypted_payload(message: bytes) -> bytes:
    """The OpenPGP data of a PGP/MIME encrypted message (RFC 3156 §4: the second part).

    Found by its boundary (a 25 MB message is not parsed whole); a second part with a
    transfer encoding, or anything unusual, goes through the ``email`` parser instead."""
    ours = _our_payload(message)
    if ours is not None:
        return ours
    head_view, body_view = split_header(message)
    main, sub, msg = _content_type(bytes(head_view))
    if (f"{main}/{sub}", _param(msg, "protocol")) != ("multipart/encrypted", "application/pgp-encrypted"):
        raise PgpMimeError("not a PGP/MIME encrypted message")
    boundary = msg.get_boundary()
    if boundary:
        body = bytes(body_view)
        spans = _delimiter_lines(body, boundary.encode("utf-8", "surrogateescape"), 3)
        if len(spans) == 3 and not spans[0][2] and not spans[1][2]:
            part = body[spans[1][1] : spans[2][0]]
            part_head, part_body = split_header(part)
            encoding = select_fields(bytes(part_head), ("Content-Transfer-Encoding",))
            if encoding.get("Content-Transfer-Encoding") is None and bytes(part_body).lstrip().startswith(
                b"-----BEGIN PGP MESSAGE-----"
            ):
                return bytes(part_body)
    parsed = email.message_from_bytes(message, policy=compat32)
    parts = parsed.get_payload()
    if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[1], Message):
        raise PgpMimeError("a PGP/MIME encrypted message has exactly two parts")
    payload = parts[1].get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        raise PgpMimeError("the encrypted part is empty")
    return payload


def _delimiter_lines(body: bytes, boundary: bytes, limit: int) -> list[tuple[int, int, bool]]:
    """The first ``limit`` delimiter lines of a multipart body (RFC 2046 §5.1.1): (start of the
    CRLF before it, end of the line, whether it is the close delimiter). ``bytes.find``: a
    regular expression over a 25 MB body is far slower."""
    marker = b"--" + boundary
    found: list[tuple[int, int, bool]] = []
    pos = 0
    while len(found) < limit:
        at = body.find(marker, pos)
        if at < 0:
            break
        pos = at + len(marker)
        at_line_start = at == 0 or body[at - 1 : at] == b"\n"
        if not at_line_start:
            continue
        start = at - 2 if body[max(at - 2, 0) : at] == b"\r\n" else max(at - 1, 0)
        closing = body[pos : pos + 2] == b"--"
        end = body.find(b"\n", pos)
        rest = body[pos + (2 if closing else 0) : end if end >= 0 else len(body)].rstrip(b"\r")
        if rest.strip(b" \t"):
            continue  # "--boundaryX": another boundary that starts with ours
        found.append((start, end + 1 if end >= 0 else len(body), closing))
    return found


def decrypt_message(message: bytes, secrets_: Sequence[pgp.Tsk | pgp.Decryptor]) -> bytes:
    """The message inside a PGP/MIME encrypted message, with the first key that opens it."""
    data = encrypted_payload(message)
    last: Exception | None = None
    for secret in secrets_:
        try:
            return pgp.decrypt(data, secret)
        except pgp.PgpError as exc:
            last = exc
    raise PgpMimeError(str(last) if last else "no key to decrypt with")


# Signatures (RFC 3156 §5) -------------------------------------------------------------------


def signed_parts(message: bytes) -> tuple[bytes, bytes] | None:
    """For a PGP/MIME signed message: the exact signed bytes (the first body part with its
    MIME header, RFC 3156 §5: up to, not including, the CRLF before the next delimiter) and the
    signature. None for any other message."""
    head_view, body_view = split_header(message)
    if not _may_name(bytes(head_view), (b"signed",)):
        return None
    main, sub, msg = _content_type(bytes(head_view))
    if (main, sub) != ("multipart", "signed"):
        return None
    if _param(msg, "protocol") != "application/pgp-signature":
        return None
    boundary = msg.get_boundary()
    if not boundary:
        return None
    body = bytes(body_view)
    spans = _delimiter_lines(body, boundary.encode("utf-8", "surrogateescape"), 3)
    if len(spans) < 3 or spans[0][2] or spans[1][2]:
        return None
    # RFC 3156 §5: the signed data ends before the CRLF that precedes the next delimiter.
    signed = body[spans[0][1] : spans[1][0]]
    part = body[spans[1][1] : spans[2][0]]
    part_head, part_body = split_header(part)
    _, _, part_msg = _content_type(bytes(part_head))
    if part_msg.get_content_type() != "application/pgp-signature":
        return None
    return signed, bytes(part_body)


def sign_message(message: bytes, secret: pgp.Tsk) -> bytes:
    """RFC 3156 §5 multipart/signed: the content fields and body become the signed part,
    the other header fields stay on the outer message."""
    head_view, body_view = split_header(message)
    fields = header_fields(bytes(head_view))
    content = [raw for name, raw in fields if name in _CONTENT_FIELDS]
    if not any(name == "content-type" for name, _ in fields):
        content.insert(0, b'Content-Type: text/plain; charset="us-ascii"\r\n')
    signed = b"".join(content) + b"\r\n" + bytes(body_view)
    if signed.endswith(b"\r\n"):
        # The CRLF before the delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        signed = signed[:-2]
    signature = pgp.sign_detached(signed, secret).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    micalg = pgp.signature_micalg(signature).encode()
    outer = [raw for name, raw in fields if name not in _CONTENT_FIELDS and name != "mime-version"]
    boundary = _boundary().encode()
    return b"".join(
        [
            *outer,
            b"MIME-Version: 1.0\r\n",
            b"Content-Type: multipart/signed; micalg="
            + micalg
            + b'; protocol="application/pgp-signature";\r\n'
            b' boundary="' + boundary + b'"\r\n',
            b"\r\nThis is an OpenPGP/MIME signed message (RFC 4880 and 3156).\r\n",
            b"--" + boundary + b"\r\n",
            signed,
            b"\r\n--" + boundary + b"\r\n",
            b'Content-Type: application/pgp-signature; name="signature.asc"\r\n',
            b"Content-Description: OpenPGP digital signature\r\n",
            b'Content-Disposition: attachment; filename="signature.asc"\r\n\r\n',
            signature if signature.endswith(b"\r\n") else signature + b"\r\n",
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
