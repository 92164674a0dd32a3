"""RFC 3464 delivery status notifications (bounces, delay and success reports).

:func:`build_dsn` writes a ``multipart/report; report-type=delivery-status``
message (RFC 6522, which obsoletes RFC 3462) by hand, so that every line ending is
CRLF and every header value goes through :func:`sanitize_header_value` (a remote
server's reply cannot inject header fields or MIME structure):

1. ``text/plain; charset=utf-8`` (quoted-printable): explanation in French, then
   English;
2. ``message/delivery-status``: the per-message fields and one block of
   per-recipient fields each (RFC 3464 §2.2, §2.3);
3. ``text/rfc822-headers`` with the original header block, or ``message/rfc822``
   with the whole original message when it is returned (RET=FULL, RFC 3461 §4.3).

:func:`parse_dsn_recipients` reads the per-recipient blocks back, from our DSNs or
other MTAs', locating the report part without parsing any returned message.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from typing import Literal, get_args

from mailserver.message.headers import (
    MAX_HEADER_SIZE,
    MessageFormatError,
    find_bare_line_endings,
    fold_field,
    format_date,
    make_message_id,
    parse_header,
    sanitize_header_value,
    split_header,
)

__all__ = [
    "Action",
    "RecipientStatus",
    "build_dsn",
    "decode_dsn_address",
    "parse_dsn_recipients",
]

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

_ACTIONS: frozenset[str] = frozenset(get_args(Action))

# RFC 3463 §2 status code (RFC 3464 §2.3.4).
_STATUS = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}

# "type; value", as in "rfc822; a@b", "dns; host", "smtp; 550 ..." (RFC 3464 §2.1.2).
_TYPED = re.compile(r"([A-Za-z][A-Za-z0-9-]*)[ \t]*;[ \t]*(.*)", re.DOTALL)

# Registered (IANA "Mail Transmission Types") address, MTA-name and diagnostic types
# recognized in a value that is already typed; "X-" types are private extensions.
_ADDRESS_TYPES = frozenset({"rfc822", "utf-8", "x400", "unknown"})
_MTA_NAME_TYPES = frozenset({"dns", "x400"})
_DIAGNOSTIC_TYPES = frozenset({"smtp", "x400"})

# Longest diagnostic / free-text value kept, in characters: with the field name it
# stays under the 998-octet line limit of RFC 5322 §2.1.1 even if it cannot be folded.
_MAX_TEXT = 900
_MAX_DOMAIN = 255
_MAX_ADDRESS = 512

# Domain-ish token: anything but whitespace, controls and header/structure specials.
_NOT_DOMAIN = re.compile(r"[^A-Za-z0-9.\-_\[\]:]")

_MSG_ID = re.compile(r"<[^<>\s]{1,900}>")

# RFC 6533 §3 utf-8-addr-xtext: QCHAR is printable ASCII except "+", "=" and "\";
# anything else is written as an EmbeddedUnicodeChar "\x{HEX}".
_NOT_QCHAR = re.compile(r"[^\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]")
_EMBEDDED_UNICODE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")

# Cap on the delivery-status part read back by parse_dsn_recipients.
_MAX_REPORT = 1 << 20
_MAX_MIME_DEPTH = 8

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
}


@dataclass(frozen=True)
class RecipientStatus:
    """The outcome for one recipient, as reported in a DSN (RFC 3464 §2.3)."""

    final_recipient: str
    action: Action
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None = None  # e.g. "smtp; 550 5.1.1 no such user"
    remote_mta: str | None = None
    original_recipient: str | None = None  # ORCPT, xtext-decoded (RFC 3461 §4.2)
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # only written for "delayed" (§2.3.8)


# -- field values ---------------------------------------------------------------------


def _ascii_text(value: str, max_length: int = _MAX_TEXT) -> str:
    """Sanitized single-line US-ASCII text; other characters become ``\\xNN`` escapes
    (RFC 3464 fields are ASCII; RFC 6533 is needed for anything else)."""
    text = value.encode("ascii", "backslashreplace").decode("ascii")
    return sanitize_header_value(text, max_length=max_length)


def _domain(value: str) -> str:
    return _NOT_DOMAIN.sub("", sanitize_header_value(value))[:_MAX_DOMAIN]


def _bare_address(value: str) -> str:
    text = sanitize_header_value(value, max_length=_MAX_ADDRESS).replace(" ", "")
    return text.removeprefix("<").removesuffix(">").replace("<", "").replace(">", "")


def _known_type(name: str, registered: frozenset[str]) -> bool:
    return name.lower() in registered or name.lower().startswith("x-")


def _utf8_addr_xtext(address: str) -> str:
    return _NOT_QCHAR.sub(lambda m: "\\x{" + format(ord(m.group()), "02X") + "}", address)


def _typed_address(value: str) -> str:
    """``rfc822; addr`` for an ASCII address, ``utf-8; <utf-8-addr-xtext>`` for an
    internationalized one (RFC 6533 §3); an already typed value is kept."""
    typed = _TYPED.fullmatch(sanitize_header_value(value))
    if typed is not None and _known_type(typed.group(1), _ADDRESS_TYPES):
        addr_type, address = typed.group(1).lower(), _bare_address(typed.group(2))
        if addr_type == "rfc822" and not address.isascii():
            return f"utf-8; {_utf8_addr_xtext(address)}"
        return f"{addr_type}; {_ascii_text(address, _MAX_ADDRESS)}"
    address = _bare_address(value)
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {_utf8_addr_xtext(address)}"


def decode_dsn_address(value: str) -> str:
    """The address in a ``Final-Recipient``/``Original-Recipient`` value: the type
    prefix is dropped and RFC 6533 ``\\x{HEX}`` escapes are decoded."""
    typed = _TYPED.fullmatch(value.strip())
    address = typed.group(2).strip() if typed else value.strip()

    def _char(match: re.Match[str]) -> str:
        code = int(match.group(1), 16)
        return chr(code) if code <= 0x10FFFF else match.group()

    return _EMBEDDED_UNICODE.sub(_char, address)


def _typed_text(value: str, default_type: str, max_length: int = _MAX_TEXT) -> str:
    text = _ascii_text(value, max_length)
    typed = _TYPED.fullmatch(text)
    if typed is not None and _known_type(typed.group(1), _DIAGNOSTIC_TYPES):
        return f"{typed.group(1)}; {typed.group(2)}"
    return f"{default_type}; {text}"


def _remote_mta(value: str) -> tuple[str, str]:
    """(mta-name-type, host) for a Remote-MTA value given typed or not."""
    typed = _TYPED.fullmatch(sanitize_header_value(value))
    if typed is not None and _known_type(typed.group(1), _MTA_NAME_TYPES):
        return typed.group(1).lower(), _domain(typed.group(2))
    return "dns", _domain(value)


def _status(recipient: RecipientStatus) -> str:
    status = recipient.status.strip()
    if _STATUS.fullmatch(status):
        return status
    return _DEFAULT_STATUS.get(recipient.action, "2.0.0")


def _original_info(header_block: bytes) -> tuple[str | None, str | None]:
    """The decoded Subject and the Message-ID of the original message."""
    headers = parse_header(header_block)
    subject: str | None = None
    value = headers.get("Subject")
    if value is not None:
        try:
            text = str(make_header(decode_header(str(value))))  # RFC 2047 words
        except (ValueError, LookupError, UnicodeError):
            text = str(value)
        subject = sanitize_header_value(text, max_length=200) or None
    message_id: str | None = None
    value = headers.get("Message-ID")
    if value is not None:
        match = _MSG_ID.search(sanitize_header_value(str(value)))
        if match is not None and match.group().isascii():
            message_id = match.group()
    return subject, message_id


# -- human-readable part ----------------------------------------------------------------


def _summary_action(recipients: Sequence[RecipientStatus]) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "failed"
    if "delayed" in actions:
        return "delayed"
    return "delivered"


def _french_line(r: RecipientStatus, address: str) -> str:
    if r.action == "failed":
        return f"Votre message n'a pas pu être remis à {address}."
    if r.action == "delayed":
        until = f" jusqu'au {format_date(r.will_retry_until)}" if r.will_retry_until else ""
        return (
            f"Votre message n'a pas encore pu être remis à {address} ; "
            f"de nouvelles tentatives auront lieu{until}."
        )
    if r.action == "relayed":
        return f"Votre message pour {address} a été transmis à un système qui n'émet pas d'accusé de remise."
    if r.action == "expanded":
        return f"Votre message a été remis à {address} et redistribué à d'autres destinataires."
    return f"Votre message a été remis à {address}."


def _english_line(r: RecipientStatus, address: str) -> str:
    if r.action == "failed":
        return f"Your message could not be delivered to {address}."
    if r.action == "delayed":
        until = f" until {format_date(r.will_retry_until)}" if r.will_retry_until else ""
        return f"Your message has not yet been delivered to {address}; delivery will be retried{until}."
    if r.action == "relayed":
        return f"Your message for {address} was relayed to a system that does not return delivery reports."
    if r.action == "expanded":
        return f"Your message was delivered to {address} and forwarded to further recipients."
    return f"Your message was delivered to {address}."


def _human_text(
    *,
    reporting_mta: str,
    postmaster: str,
    recipients: Sequence[RecipientStatus],
    subject: str | None,
    arrival_date: datetime,
) -> str:
    summary = _summary_action(recipients)
    fr: list[str] = [f"Ceci est le système de messagerie de {reporting_mta}.", ""]
    en: list[str] = [f"This is the mail system at {reporting_mta}.", ""]
    if summary == "failed":
        fr.append("Votre message n'a pas pu être remis à un ou plusieurs destinataires.")
        en.append("Your message could not be delivered to one or more recipients.")
    elif summary == "delayed":
        fr.append(
            "Votre message n'a pas encore pu être remis à un ou plusieurs destinataires. "
            "Aucune action n'est nécessaire : de nouvelles tentatives seront effectuées."
        )
        en.append(
            "Your message has not yet been delivered to one or more recipients. "
            "No action is needed: delivery will be retried."
        )
    else:
        fr.append("Votre message a bien été remis.")
        en.append("Your message was successfully delivered.")
    fr.append("")
    en.append("")
    if subject:
        fr.append(f"Objet du message : {subject}")
        en.append(f"Subject of the message: {subject}")
    fr.append(f"Reçu le : {format_date(arrival_date)}")
    en.append(f"Received on: {format_date(arrival_date)}")
    for r in recipients:
        address = decode_dsn_address(sanitize_header_value(r.final_recipient, max_length=_MAX_ADDRESS))
        fr += ["", _french_line(r, address), f"  Statut : {_status(r)}"]
        en += ["", _english_line(r, address), f"  Status: {_status(r)}"]
        if r.remote_mta:
            remote = _remote_mta(r.remote_mta)[1]
            fr.append(f"  Serveur distant : {remote}")
            en.append(f"  Remote server: {remote}")
        if r.diagnostic:
            diagnostic = sanitize_header_value(r.diagnostic, max_length=_MAX_TEXT)
            fr.append(f"  Diagnostic : {diagnostic}")
            en.append(f"  Diagnostic: {diagnostic}")
    if summary == "failed":
        fr += ["", f"Pour toute assistance, contactez l'administrateur de messagerie : <{postmaster}>."]
        en += ["", f"For assistance, please contact the postmaster: <{postmaster}>."]
    fr += ["", "Le rapport technique de remise est joint à ce message."]
    en += ["", "The technical delivery report is attached to this message."]
    return "\n".join([*fr, "", "-" * 60, "", *en, ""])


def _quoted_printable(text: str) -> bytes:
    encoded = quopri.encodestring(text.encode("utf-8"), quotetabs=False)
    return encoded.replace(b"\n", b"\r\n")


# -- report part ---------------------------------------------------------------------------


def _delivery_status(
    *,
    reporting_mta: str,
    original_envelope_id: str | None,
    arrival_date: datetime,
    recipients: Sequence[RecipientStatus],
) -> bytes:
    # RFC 3464 §2.2: per-message fields, then §2.3 one block per recipient, blocks
    # separated by an empty line.
    fields = [fold_field("Reporting-MTA", f"dns; {reporting_mta}")]
    if original_envelope_id:
        envid = _ascii_text(original_envelope_id, 100)
        if envid:
            fields.append(fold_field("Original-Envelope-Id", envid))
    fields.append(fold_field("Arrival-Date", format_date(arrival_date)))
    blocks = [b"".join(fields)]
    for r in recipients:
        fields = []
        if r.original_recipient:
            fields.append(fold_field("Original-Recipient", _typed_address(r.original_recipient)))
        fields.append(fold_field("Final-Recipient", _typed_address(r.final_recipient)))
        fields.append(fold_field("Action", r.action))
        fields.append(fold_field("Status", _status(r)))
        if r.remote_mta:
            remote_type, remote_host = _remote_mta(r.remote_mta)
            if remote_host:
                fields.append(fold_field("Remote-MTA", f"{remote_type}; {remote_host}"))
        if r.diagnostic:
            fields.append(fold_field("Diagnostic-Code", _typed_text(r.diagnostic, "smtp")))
        if r.last_attempt is not None:
            fields.append(fold_field("Last-Attempt-Date", format_date(r.last_attempt)))
        if r.will_retry_until is not None and r.action == "delayed":
            fields.append(fold_field("Will-Retry-Until", format_date(r.will_retry_until)))
        blocks.append(b"".join(fields))
    return b"\r\n".join(blocks)


# -- message ----------------------------------------------------------------------------


_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")


def _crlf(data: bytes) -> bytes:
    return _ANY_LINE_END.sub(b"\r\n", data) if find_bare_line_endings(data) else data


def _header_block(original_headers: bytes) -> bytes:
    """The original header fields, CRLF-terminated, without the empty separator line."""
    try:
        head = bytes(split_header(original_headers)[0])
    except MessageFormatError:
        # Oversized: keep the complete lines of the first MAX_HEADER_SIZE octets.
        head = original_headers[:MAX_HEADER_SIZE]
        head = head[: head.rfind(b"\n") + 1]
    text = _crlf(head).rstrip(b"\r\n")
    return text + b"\r\n" if text else b""


def _transfer_encoding(*parts: bytes) -> str:
    return "7bit" if all(part.isascii() for part in parts) else "8bit"


def _new_boundary(*contents: bytes) -> str:
    while True:
        # "=_" never occurs in quoted-printable text (RFC 2045 §6.7), and 128 random
        # bits make a collision with the returned content practically impossible;
        # it is checked anyway.
        boundary = f"=_openmss-dsn-{uuid.uuid4().hex}"
        token = boundary.encode("ascii")
        if not any(token in content for content in contents):
            return boundary


def build_dsn(
    *,
    reporting_mta: str,
    postmaster: str,
    to: str,
    original_headers: bytes,
    original_envelope_id: str | None,
    arrival_date: datetime,
    recipients: Sequence[RecipientStatus],
    original_body: bytes | None = None,
    now: datetime,
    message_id_domain: str,
) -> bytes:
    """Build an RFC 3464 DSN to *to* (the original envelope sender).

    *original_headers* is the original header block (e.g. from
    :func:`mailserver.message.headers.split_header`); with *original_body* the whole
    original message is attached as ``message/rfc822`` (RET=FULL), otherwise only its
    headers as ``text/rfc822-headers``.  Naive datetimes are taken to be UTC.

    The subject follows the most severe action: any ``failed`` recipient makes it a
    non-delivery report, else any ``delayed`` a delay report, else a success report.
    A malformed status code is replaced by the action's default (5.0.0 / 4.0.0 /
    2.0.0).  The result is 7-bit unless the attached original contains 8-bit data
    (the part is then labelled ``8bit``) or *to* is an internationalized address.

    Raises ValueError when *recipients* is empty, an action is unknown, or *to* is
    the null reverse-path (RFC 5321 §4.5.5: no notification is ever sent to it).
    """
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    for r in recipients:
        if r.action not in _ACTIONS:
            raise ValueError(f"unknown DSN action: {r.action!r}")
    sender = _bare_address(to)
    if not sender:
        raise ValueError("no DSN may be sent to the null reverse-path")
    mta = _domain(reporting_mta) or "localhost"
    postmaster_address = _bare_address(postmaster) or "postmaster"
    if "@" not in postmaster_address:
        postmaster_address = f"{postmaster_address}@{mta}"

    header_block = _header_block(original_headers)
    original_subject, original_id = _original_info(header_block)
    text = _human_text(
        reporting_mta=mta,
        postmaster=postmaster_address,
        recipients=recipients,
        subject=original_subject,
        arrival_date=arrival_date,
    )
    notification = _quoted_printable(text)
    report = _delivery_status(
        reporting_mta=mta,
        original_envelope_id=original_envelope_id,
        arrival_date=arrival_date,
        recipients=recipients,
    )
    if original_body is None:
        returned_type, returned_description = "text/rfc822-headers", "Original message headers"
        returned = [header_block]
    else:
        # RFC 3461 §4.3 RET=FULL; the part is 7bit or 8bit, as RFC 2046 §5.2.1 allows.
        returned_type, returned_description = "message/rfc822", "Original message"
        returned = [header_block, b"\r\n", _crlf(original_body)]
    boundary = _new_boundary(report, *returned)
    delimiter = b"--" + boundary.encode("ascii")

    fields = [
        fold_field("From", f"Mail Delivery System <{postmaster_address}>"),
        fold_field("To", f"<{sender}>"),
        fold_field("Subject", _SUBJECTS[_summary_action(recipients)]),
        fold_field("Date", format_date(now)),
        fold_field("Message-ID", make_message_id(message_id_domain)),
    ]
    if original_id is not None:
        # RFC 3834 §3.1.5: an automatic response refers to the message it answers.
        fields.append(fold_field("In-Reply-To", original_id))
        fields.append(fold_field("References", original_id))
    fields += [
        fold_field("Auto-Submitted", "auto-replied"),  # RFC 3834 §5
        fold_field("MIME-Version", "1.0"),
        fold_field(
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        ),
    ]
    chunks: list[bytes] = [
        *fields,
        b"\r\nThis is a MIME-encapsulated message (RFC 6522 delivery status report).\r\n",
        b"\r\n" + delimiter + b"\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Language: fr, en\r\n",
        b"Content-Description: Notification\r\n\r\n",
        notification.rstrip(b"\r\n"),
        b"\r\n" + delimiter + b"\r\n",
        b"Content-Type: message/delivery-status\r\n",
        b"Content-Description: Delivery report\r\n\r\n",
        report,
        b"\r\n" + delimiter + b"\r\n",
        f"Content-Type: {returned_type}\r\n".encode("ascii"),
        f"Content-Transfer-Encoding: {_transfer_encoding(*returned)}\r\n".encode("ascii"),
        f"Content-Description: {returned_description}\r\n\r\n".encode("ascii"),
        *returned,
        b"\r\n" + delimiter + b"--\r\n",
    ]
    return b"".join(chunks)


# -- reading DSNs back ------------------------------------------------------------------


def _iter_parts(body: memoryview, boundary: bytes) -> Iterator[memoryview]:
    """The body parts of a multipart entity (RFC 2046 §5.1.1), as views.

    The delimiter is searched as a literal (fast even in a large body) and accepted
    only at the start of a line; the line break before it belongs to it.
    """
    delimiter = re.compile(re.escape(b"--" + boundary) + rb"(--)?[ \t]*(?:\r?\n|$)")
    position = 0
    part_start: int | None = None
    while True:
        match = delimiter.search(body, position)
        if match is None:
            return
        start = match.start()
        if start > 0 and body[start - 1] != 0x0A:
            position = start + 1
            continue
        if part_start is not None:
            end = start - 1 if start > 0 else 0
            if end > part_start and body[end - 1] == 0x0D:
                end -= 1
            yield body[part_start : max(end, part_start)]
        if match.group(1):
            return
        part_start = position = match.end()


def _decoded_report(body: memoryview, encoding: str | None) -> bytes:
    raw = bytes(body[:_MAX_REPORT])
    cte = (encoding or "").strip().lower()
    if cte == "base64":
        try:
            return base64.b64decode(raw)
        except (binascii.Error, ValueError):
            return b""
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _find_report(entity: memoryview, depth: int) -> bytes | None:
    try:
        head, body = split_header(entity)
    except MessageFormatError:
        return None
    headers = parse_header(head)
    content_type = headers.get_content_type()
    if content_type in ("message/delivery-status", "message/global-delivery-status"):
        encoding = headers.get("Content-Transfer-Encoding")
        return _decoded_report(body, None if encoding is None else str(encoding))
    if headers.get_content_maintype() != "multipart" or depth >= _MAX_MIME_DEPTH:
        # Returned messages (message/rfc822) are deliberately not entered.
        return None
    boundary = headers.get_boundary()
    if not boundary:
        return None
    for part in _iter_parts(body, boundary.encode("utf-8", "surrogateescape")):
        found = _find_report(part, depth + 1)
        if found is not None:
            return found
    return None


def _status_blocks(report: bytes) -> list[dict[str, str]]:
    text = report.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    blocks: list[dict[str, str]] = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        name: str | None = None
        values: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if line[:1] in (" ", "\t") and name is not None:
                values[name].append(line)  # folded continuation (RFC 5322 §2.2.3)
                continue
            field, colon, value = line.partition(":")
            field = field.strip().lower()
            if not colon or not field or field in values:
                name = None
                continue
            name = field
            values[name] = [value]
        for field, pieces in values.items():
            fields[field] = sanitize_header_value(" ".join(pieces))
        if "final-recipient" in fields:
            blocks.append(fields)
    return blocks


def parse_dsn_recipients(data: bytes) -> list[dict[str, str]]:
    """The per-recipient blocks of a DSN, as ``{field name (lower case): value}``.

    E.g. ``{"final-recipient": "rfc822; a@b.example", "action": "failed",
    "status": "5.1.1", ...}``; values are unfolded with whitespace collapsed (use
    :func:`decode_dsn_address` for the address).  The first ``message/delivery-status``
    (or RFC 6533 ``message/global-delivery-status``) part found in the MIME tree is
    read; a returned original message is never parsed.  Returns ``[]`` for anything
    that is not a DSN.  Blocks without ``Final-Recipient`` (the per-message block)
    are omitted.
    """
    report = _find_report(memoryview(data), 0)
    if report is None:
        return []
    return _status_blocks(report)
