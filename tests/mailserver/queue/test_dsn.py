"""Tests for mailserver.queue.dsn (RFC 3464 delivery status notifications)."""

from __future__ import annotations

import base64
import email
import email.policy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.message.headers import find_bare_line_endings
from mailserver.queue.dsn import (
    RecipientStatus,
    build_dsn,
    decode_dsn_address,
    parse_dsn_recipients,
)

ARRIVAL = datetime(2024, 3, 5, 9, 0, 0, tzinfo=UTC)
NOW = ARRIVAL + timedelta(hours=2)

ORIGINAL_HEADERS = (
    b"From: Dr Martin <dr.martin@hopital.example>\r\n"
    b"To: patient@clinique.example\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats_d=27analyse?=\r\n"
    b"Message-ID: <orig-1@hopital.example>\r\n"
    b"Date: Tue, 05 Mar 2024 09:00:00 +0000\r\n"
    b"\r\n"
)

FAILED = RecipientStatus(
    final_recipient="patient@clinique.example",
    action="failed",
    status="5.1.1",
    diagnostic="smtp; 550 5.1.1 <patient@clinique.example>: no such user",
    remote_mta="mx.clinique.example",
    original_recipient="rfc822;Patient@Clinique.example",
    last_attempt=NOW - timedelta(minutes=1),
)


def _build(
    recipients: Sequence[RecipientStatus] = (FAILED,),
    original_body: bytes | None = None,
    original_headers: bytes = ORIGINAL_HEADERS,
    envelope_id: str | None = "ENV-42",
) -> bytes:
    return build_dsn(
        reporting_mta="mx.openmss.example",
        postmaster="postmaster@openmss.example",
        to="dr.martin@hopital.example",
        original_headers=original_headers,
        original_envelope_id=envelope_id,
        arrival_date=ARRIVAL,
        recipients=recipients,
        original_body=original_body,
        now=NOW,
        message_id_domain="openmss.example",
    )


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _parts(msg: EmailMessage) -> list[EmailMessage]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    parts = [part for part in payload if isinstance(part, EmailMessage)]
    assert len(parts) == len(payload)
    return parts


def _status_blocks(msg: EmailMessage) -> list[Message]:
    blocks = _parts(msg)[1].get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks if isinstance(block, Message)]


def test_structure_and_top_level_headers() -> None:
    data = _build()
    assert not find_bare_line_endings(data)
    msg = _parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == "Mail Delivery System <postmaster@openmss.example>"
    assert msg["To"].addresses[0].addr_spec == "dr.martin@hopital.example"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"].endswith("@openmss.example>")
    assert msg["In-Reply-To"] == "<orig-1@hopital.example>"
    assert msg["References"] == "<orig-1@hopital.example>"
    assert [part.get_content_type() for part in _parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert not msg.defects
    for part in msg.walk():
        assert not part.defects


def test_header_lines_are_short() -> None:
    head = _build().split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


def test_delivery_status_fields() -> None:
    blocks = _status_blocks(_parse(_build()))
    per_message, per_recipient = blocks
    assert per_message["Reporting-MTA"] == "dns; mx.openmss.example"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert per_message["Arrival-Date"] == "Tue, 05 Mar 2024 09:00:00 +0000"
    assert per_recipient["Original-Recipient"] == "rfc822; Patient@Clinique.example"
    assert per_recipient["Final-Recipient"] == "rfc822; patient@clinique.example"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.clinique.example"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <patient@clinique.example>: no such user"
    assert per_recipient["Last-Attempt-Date"] == "Tue, 05 Mar 2024 10:59:00 +0000"
    assert per_recipient["Will-Retry-Until"] is None


def test_optional_fields_left_out() -> None:
    data = _build([RecipientStatus("a@b.example", "failed", "5.0.0")], envelope_id=None)
    per_message, per_recipient = _status_blocks(_parse(data))
    assert per_message["Original-Envelope-Id"] is None
    assert set(per_recipient.keys()) == {"Final-Recipient", "Action", "Status"}


def test_human_readable_part_is_bilingual() -> None:
    text_part = _parts(_parse(_build()))[0]
    assert text_part.get_content_charset() == "utf-8"
    assert text_part["Content-Language"] == "fr, en"
    text = text_part.get_content()
    assert "Votre message n'a pas pu être remis à patient@clinique.example." in text
    assert "Your message could not be delivered to patient@clinique.example." in text
    assert "Résultats d'analyse" in text
    assert "550 5.1.1" in text
    assert "postmaster@openmss.example" in text


def test_original_headers_part() -> None:
    part = _parts(_parse(_build()))[2]
    raw = part.get_payload(decode=True)
    assert isinstance(raw, bytes)
    assert raw.rstrip(b"\r\n") == ORIGINAL_HEADERS.rstrip(b"\r\n")


def test_header_injection_in_diagnostic_is_neutralized() -> None:
    evil = RecipientStatus(
        final_recipient="victim@example.org\r\nBcc: spy@evil.example",
        action="failed",
        status="5.7.1",
        diagnostic="smtp; 550 denied\r\nBcc: spy@evil.example\r\n\r\n--fake-boundary\r\nX-Evil: 1",
        remote_mta="mx.evil.example\r\nX-Evil: 2",
        original_recipient="rfc822;a@b\nX-Evil: 3",
    )
    data = _build([evil])
    assert not find_bare_line_endings(data)
    msg = _parse(data)
    for part in msg.walk():
        assert part["Bcc"] is None and part["X-Evil"] is None
    assert len(_parts(msg)) == 3
    blocks = _status_blocks(msg)
    assert len(blocks) == 2
    recipient = blocks[1]
    assert set(recipient.keys()) == {
        "Original-Recipient",
        "Final-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
    }
    assert recipient["Diagnostic-Code"] == (
        "smtp; 550 denied Bcc: spy@evil.example --fake-boundary X-Evil: 1"
    )
    assert recipient["Remote-MTA"] == "dns; mx.evil.exampleX-Evil:2"
    parsed = parse_dsn_recipients(data)
    assert len(parsed) == 1 and "bcc" not in parsed[0]


def test_parse_round_trip() -> None:
    delayed = RecipientStatus(
        final_recipient="b@c.example",
        action="delayed",
        status="4.4.1",
        diagnostic="connection timed out",
        will_retry_until=ARRIVAL + timedelta(days=5),
    )
    data = _build([FAILED, delayed])
    parsed = parse_dsn_recipients(data)
    assert parsed == [
        {
            "original-recipient": "rfc822; Patient@Clinique.example",
            "final-recipient": "rfc822; patient@clinique.example",
            "action": "failed",
            "status": "5.1.1",
            "remote-mta": "dns; mx.clinique.example",
            "diagnostic-code": "smtp; 550 5.1.1 <patient@clinique.example>: no such user",
            "last-attempt-date": "Tue, 05 Mar 2024 10:59:00 +0000",
        },
        {
            "final-recipient": "rfc822; b@c.example",
            "action": "delayed",
            "status": "4.4.1",
            "diagnostic-code": "smtp; connection timed out",
            "will-retry-until": "Sun, 10 Mar 2024 09:00:00 +0000",
        },
    ]
    assert [decode_dsn_address(r["final-recipient"]) for r in parsed] == [
        "patient@clinique.example",
        "b@c.example",
    ]


def test_subjects_by_action() -> None:
    delayed = RecipientStatus("b@c.example", "delayed", "4.4.1")
    delivered = RecipientStatus("b@c.example", "delivered", "2.0.0")
    relayed = RecipientStatus("d@e.example", "relayed", "2.0.0")
    assert _parse(_build([delayed]))["Subject"] == "Delayed Mail (still being retried)"
    assert _parse(_build([delivered, relayed]))["Subject"] == "Successful Mail Delivery Report"
    assert _parse(_build([delivered, delayed]))["Subject"] == "Delayed Mail (still being retried)"
    assert _parse(_build([delayed, FAILED]))["Subject"] == "Undelivered Mail Returned to Sender"
    text = _parts(_parse(_build([delayed])))[0].get_content()
    assert "Votre message n'a pas encore pu être remis à b@c.example" in text
    assert "has not yet been delivered to b@c.example" in text
    text = _parts(_parse(_build([delivered])))[0].get_content()
    assert "Votre message a été remis à b@c.example." in text
    assert "Your message was delivered to b@c.example." in text


def test_ret_full_returns_whole_message() -> None:
    body = "Bonjour,\r\nvoici les résultats.\r\n".encode()
    data = _build(original_body=body)
    assert not find_bare_line_endings(data)
    msg = _parse(data)
    returned = _parts(msg)[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned["Content-Transfer-Encoding"] == "8bit"
    inner = returned.get_payload()
    assert isinstance(inner, list) and len(inner) == 1
    original = inner[0]
    assert isinstance(original, Message)
    assert original["Message-ID"] == "<orig-1@hopital.example>"
    assert original.get_payload(decode=True) == body
    # The returned message is not mistaken for part of the report.
    assert len(parse_dsn_recipients(data)) == 1


def test_ret_full_ascii_body_is_7bit_and_bare_lf_normalized() -> None:
    data = _build(original_body=b"line one\nline two\n")
    assert not find_bare_line_endings(data)
    returned = _parts(_parse(data))[2]
    assert returned["Content-Transfer-Encoding"] == "7bit"
    assert b"line one\r\nline two\r\n" in data


def test_internationalized_recipient_uses_utf8_xtext() -> None:
    data = _build([RecipientStatus("élise@hôpital.example", "failed", "5.1.1")])
    assert data.split(b"\r\n--")[2].isascii()  # the delivery-status part
    block = _status_blocks(_parse(data))[1]
    assert block["Final-Recipient"] == "utf-8; \\x{E9}lise@h\\x{F4}pital.example"
    parsed = parse_dsn_recipients(data)
    assert decode_dsn_address(parsed[0]["final-recipient"]) == "élise@hôpital.example"


def test_invalid_status_is_replaced_by_action_default() -> None:
    data = _build([RecipientStatus("a@b.example", "failed", "550 no")])
    assert parse_dsn_recipients(data)[0]["status"] == "5.0.0"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        _build([])
    with pytest.raises(ValueError):
        _build([RecipientStatus("a@b.example", "bounced", "5.0.0")])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_dsn(
            reporting_mta="mx.openmss.example",
            postmaster="postmaster",
            to="<>",
            original_headers=ORIGINAL_HEADERS,
            original_envelope_id=None,
            arrival_date=ARRIVAL,
            recipients=[FAILED],
            now=NOW,
            message_id_domain="openmss.example",
        )


def test_postmaster_without_domain_and_naive_dates() -> None:
    data = build_dsn(
        reporting_mta="mx.openmss.example",
        postmaster="postmaster",
        to="a@b.example",
        original_headers=b"",
        original_envelope_id=None,
        arrival_date=datetime(2024, 1, 1),
        recipients=[FAILED],
        now=datetime(2024, 1, 1, 1),
        message_id_domain="openmss.example",
    )
    msg = _parse(data)
    assert msg["From"] == "Mail Delivery System <postmaster@mx.openmss.example>"
    assert msg["Date"] == "Mon, 01 Jan 2024 01:00:00 +0000"
    assert msg["In-Reply-To"] is None


def test_parse_foreign_dsn_nested_and_base64() -> None:
    report = (
        b"Reporting-MTA: dns; mx.other.example\r\n\r\n"
        b"Final-Recipient: RFC822; x@y.example\r\nACTION: failed\r\n"
        b"Status: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 mailbox\r\n full\r\n"
    )
    data = (
        b"From: MAILER-DAEMON@other.example\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="inner"\r\n\r\n'
        b"--inner\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
        b"--inner\r\nContent-Type: message/delivery-status\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(report).replace(b"\n", b"\r\n")
        + b"--inner--\r\n--outer--\r\n"
    )
    assert parse_dsn_recipients(data) == [
        {
            "final-recipient": "RFC822; x@y.example",
            "action": "failed",
            "status": "5.2.2",
            "diagnostic-code": "smtp; 552 5.2.2 mailbox full",
        }
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"From: a@b.example\r\n\r\nhello\r\n",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n\r\nno end',
        b"Content-Type: multipart/report\r\n\r\nno boundary",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Final-Recipient: rfc822; a@b\r\n",
    ],
)
def test_parse_non_dsn(data: bytes) -> None:
    assert parse_dsn_recipients(data) == []


@settings(max_examples=50)
@given(
    st.lists(
        st.builds(
            RecipientStatus,
            final_recipient=st.text(min_size=1, max_size=40),
            action=st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded"]),
            status=st.text(max_size=8),
            diagnostic=st.none() | st.text(max_size=200),
            remote_mta=st.none() | st.text(max_size=40),
        ),
        min_size=1,
        max_size=4,
    ),
    st.binary(max_size=200),
)
def test_build_never_breaks_structure(recipients: list[RecipientStatus], headers: bytes) -> None:
    data = _build(recipients, original_headers=headers)
    assert not find_bare_line_endings(data)
    msg = _parse(data)
    assert [p.get_content_type() for p in _parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    parsed = parse_dsn_recipients(data)
    assert len(parsed) == len(recipients)
    assert [r["action"] for r in parsed] == [r.action for r in recipients]
