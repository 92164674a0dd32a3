"""Tests for mailserver.message.headers."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.message.headers import (
    MAX_HEADER_SIZE,
    MessageFormatError,
    find_bare_line_endings,
    fold_field,
    header_addresses,
    make_message_id,
    missing_headers,
    parse_header,
    received_header,
    sanitize_header_value,
    select_fields,
    split_header,
)

WHEN = datetime(2024, 3, 5, 14, 7, 9, tzinfo=UTC)


# -- split_header ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "header", "body"),
    [
        (b"From: a\r\nTo: b\r\n\r\nbody\r\n", b"From: a\r\nTo: b\r\n\r\n", b"body\r\n"),
        (b"From: a\nTo: b\n\nbody\n", b"From: a\nTo: b\n\n", b"body\n"),
        (b"From: a\r\n\nbody", b"From: a\r\n\n", b"body"),
        (b"From: a\n\r\nbody", b"From: a\n\r\n", b"body"),
        (b"From: a\r\nTo: b\r\n", b"From: a\r\nTo: b\r\n", b""),
        (b"From: a", b"From: a", b""),
        (b"From: a\r\n\r\n", b"From: a\r\n\r\n", b""),
        (b"\r\nbody only\r\n", b"\r\n", b"body only\r\n"),
        (b"\nbody", b"\n", b"body"),
        (b"", b"", b""),
        # The first empty line ends the header block, even if another follows.
        (b"A: 1\r\n\r\n\r\nB: 2\r\n", b"A: 1\r\n\r\n", b"\r\nB: 2\r\n"),
    ],
)
def test_split_header(data: bytes, header: bytes, body: bytes) -> None:
    head, rest = split_header(data)
    assert bytes(head) == header
    assert bytes(rest) == body


def test_split_header_returns_views_on_the_original_buffer() -> None:
    data = b"Subject: x\r\n\r\n" + b"y" * 1000
    head, body = split_header(data)
    assert isinstance(head, memoryview) and isinstance(body, memoryview)
    assert head.obj is data and body.obj is data
    view = memoryview(data)[0:]
    head2, body2 = split_header(view)
    assert head2.obj is data and len(body2) == 1000


def test_split_header_is_bounded() -> None:
    too_long = b"X: " + b"a" * MAX_HEADER_SIZE + b"\r\n\r\nbody"
    with pytest.raises(MessageFormatError):
        split_header(too_long)
    assert issubclass(MessageFormatError, ValueError)
    # Exactly at the limit is fine; one octet more is not.
    block = b"X: " + b"a" * (100 - 3 - 4) + b"\r\n\r\n"
    assert len(block) == 100
    head, body = split_header(block + b"body", max_header_size=100)
    assert bytes(head) == block and bytes(body) == b"body"
    with pytest.raises(MessageFormatError):
        split_header(b"a" + block + b"body", max_header_size=100)
    # A short message without separator is all header.
    head, body = split_header(b"X: y", max_header_size=100)
    assert bytes(head) == b"X: y" and len(body) == 0


@given(st.binary(max_size=300))
def test_split_header_concatenation_property(data: bytes) -> None:
    head, body = split_header(data)
    assert bytes(head) + bytes(body) == data


# -- parse_header -----------------------------------------------------------------------


def test_parse_header_basic_and_ignores_body() -> None:
    msg = parse_header(b"From: a@b.example\r\nSubject: hello\r\n world\r\n\r\nnot: a header\r\n")
    assert msg["Subject"] == "hello\r\n world"
    assert msg["not"] is None
    assert msg.get_payload() in ("", None)


def test_parse_header_decodes_8bit_values() -> None:
    msg = parse_header("Subject: Résultats d'analyse\r\n\r\n".encode())
    assert msg["Subject"] == "Résultats d'analyse"
    msg = parse_header("Subject: Hélène\r\n\r\n".encode("latin-1"))
    assert msg["Subject"] == "Hélène"


@given(st.binary(max_size=500))
def test_parse_header_never_raises_on_junk(data: bytes) -> None:
    msg = parse_header(data)
    for name in msg.keys():
        str(msg[name])
    header_addresses(msg, "From")
    header_addresses(msg, "To")


# -- header_addresses -------------------------------------------------------------------


def _msg(text: str) -> email.message.Message:
    return parse_header(text.encode())


def test_header_addresses_all_occurrences_lowercase_domain() -> None:
    msg = _msg(
        "To: Jean <Jean.Dupont@Hopital.EXAMPLE>, b@C.example\r\n"
        "To: =?utf-8?q?Dupont=2C_H=C3=A9l=C3=A8ne?= <helene@X.example>\r\n"
        'Cc: "Dupont, Jean" <j@y.example>\r\n\r\n'
    )
    assert header_addresses(msg, "To") == [
        "Jean.Dupont@hopital.example",
        "b@c.example",
        "helene@x.example",
    ]
    assert header_addresses(msg, "cc") == ["j@y.example"]
    assert header_addresses(msg, "Bcc") == []


def test_header_addresses_groups_and_empties() -> None:
    msg = _msg(
        "To: undisclosed-recipients:;\r\n"
        "Cc: Team: a@b.example, c@d.example;, e@f.example\r\n"
        "Bcc: x@y.example, , \r\n"
        "Reply-To: postmaster\r\n\r\n"
    )
    assert header_addresses(msg, "To") == []
    assert header_addresses(msg, "Cc") == ["a@b.example", "c@d.example", "e@f.example"]
    assert header_addresses(msg, "Bcc") == ["x@y.example"]
    assert header_addresses(msg, "Reply-To") == []


def test_header_addresses_utf8_and_quoted_local_part() -> None:
    msg = parse_header('From: "john doe"@Ex.example\r\nTo: Élise <élise@Hôpital.example>\r\n\r\n'.encode())
    assert header_addresses(msg, "From") == ['"john doe"@ex.example']
    assert header_addresses(msg, "To") == ["élise@hôpital.example"]


def test_header_addresses_works_with_default_policy_messages() -> None:
    msg = email.message_from_bytes(b"From: A <a@B.example>\r\n\r\n", policy=email.policy.default)
    assert header_addresses(msg, "From") == ["a@b.example"]


def test_header_addresses_ambiguous_value_does_not_yield_single_address() -> None:
    # CVE-2023-27043 style: must never come out as just one (possibly wrong) author.
    msg = _msg("From: alice@a.example <bob@b.example>\r\n\r\n")
    assert len(header_addresses(msg, "From")) != 1


# -- find_bare_line_endings --------------------------------------------------------------


def _reference_bare(data: bytes) -> bool:
    for index, byte in enumerate(data):
        if byte == 0x0A and (index == 0 or data[index - 1] != 0x0D):
            return True
        if byte == 0x0D and (index + 1 >= len(data) or data[index + 1] != 0x0A):
            return True
    return False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", False),
        (b"abc", False),
        (b"a\r\nb\r\n", False),
        (b"a\nb", True),
        (b"a\rb", True),
        (b"a\r\r\n", True),
        (b"a\r\n\n", True),
        (b"\n", True),
        (b"\r", True),
        (b"a\r\n.\n\r\n", True),  # the SMTP smuggling pattern <LF>.<CR><LF>
        (b"\n\r", True),
    ],
)
def test_find_bare_line_endings(data: bytes, expected: bool) -> None:
    assert find_bare_line_endings(data) is expected
    assert find_bare_line_endings(memoryview(data)) is expected
    assert find_bare_line_endings(memoryview(data), chunk_size=1) is expected


@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"xyz"]), max_size=40), st.integers(1, 7))
def test_find_bare_line_endings_matches_reference(parts: list[bytes], chunk_size: int) -> None:
    data = b"".join(parts)
    expected = _reference_bare(data)
    assert find_bare_line_endings(data) is expected
    assert find_bare_line_endings(memoryview(data), chunk_size=chunk_size) is expected


def test_find_bare_line_endings_on_large_input() -> None:
    line = b"x" * 76 + b"\r\n"
    data = line * (25 * 1024 * 1024 // len(line))
    assert find_bare_line_endings(data) is False
    assert find_bare_line_endings(memoryview(data)) is False
    tampered = data[:-5] + b"\n" + data[-4:]
    assert find_bare_line_endings(memoryview(tampered)) is True


# -- received_header --------------------------------------------------------------------


def _received(**overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "from_helo": "mail.example.org",
        "from_ip": "192.0.2.10",
        "by_host": "mx.openmss.example",
        "protocol": "ESMTP",
        "recipient": "dr.martin@hopital.example",
        "queue_id": "4F3A9C21B0",
        "tls": "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
        "when": WHEN,
    }
    arguments.update(overrides)
    return received_header(**arguments)  # type: ignore[arg-type]


def _unfold(field: bytes) -> str:
    return re.sub(r"\r\n[ \t]", " ", field.decode()).removesuffix("\r\n")


def _assert_well_formed(field: bytes) -> None:
    assert field.startswith(b"Received: ")
    assert field.endswith(b"\r\n")
    assert not find_bare_line_endings(field)
    lines = field.split(b"\r\n")[:-1]
    for line in lines[1:]:
        assert line[:1] in (b" ", b"\t") and line.strip()
    msg = email.message_from_bytes(field + b"\r\n", policy=email.policy.default)
    assert len(msg.get_all("Received") or []) == 1
    assert len(msg.keys()) == 1


def test_received_header_format() -> None:
    field = _received()
    _assert_well_formed(field)
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    text = _unfold(field)
    assert text == (
        "Received: from mail.example.org ([192.0.2.10]) by mx.openmss.example with ESMTPS"
        " (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) id 4F3A9C21B0"
        " for <dr.martin@hopital.example>; Tue, 05 Mar 2024 14:07:09 +0000"
    )


@pytest.mark.parametrize(
    ("protocol", "tls", "auth", "expected"),
    [
        ("ESMTP", None, None, "with ESMTP "),
        ("ESMTP", "TLSv1.3", None, "with ESMTPS "),
        ("ESMTP", "TLSv1.3", "alice", "with ESMTPSA "),
        ("ESMTP", None, "alice", "with ESMTPA "),
        ("esmtpsa", None, None, "with ESMTP "),
        ("LMTP", "TLSv1.2", "alice", "with LMTPSA "),
        ("UTF8SMTP", "TLSv1.3", None, "with UTF8SMTPS "),
        ("SMTP", None, None, "with SMTP "),
    ],
)
def test_received_with_protocol(protocol: str, tls: str | None, auth: str | None, expected: str) -> None:
    text = _unfold(_received(protocol=protocol, tls=tls, auth_user=auth))
    assert expected in text


def test_received_header_sanitizes_helo_and_inputs() -> None:
    field = _received(
        from_helo="evil\r\nBcc: victim@example.org (x)\x00" + "a" * 1000,
        recipient="a@b.example>;(\r\nX-Injected: 1",
        queue_id="ID\r\n X: y",
        tls="TLSv1.3) (fake\r\n",
    )
    _assert_well_formed(field)
    text = _unfold(field)
    assert "\r" not in text and "\n" not in text and "\x00" not in text
    assert text.count(";") == 1  # only the one before the date
    helo = text.split(" ")[2]
    assert len(helo) <= 255
    assert "(x)" not in text and "(fake" not in text and ") (" not in text.split("using")[1].split(")")[0]


def test_received_header_empty_helo_and_ipv6() -> None:
    text = _unfold(_received(from_helo="\r\n", from_ip="2001:DB8::1"))
    assert text.startswith("Received: from unknown ([IPv6:2001:db8::1]) by ")
    text = _unfold(_received(from_ip="::ffff:198.51.100.7"))
    assert "([198.51.100.7])" in text
    text = _unfold(_received(from_ip="fe80::1%eth0"))
    assert "([IPv6:fe80::1])" in text
    text = _unfold(_received(from_ip="not an ip"))
    assert "(unknown)" in text


def test_received_header_optional_parts_and_naive_date() -> None:
    text = _unfold(_received(recipient=None, tls=None, queue_id="", when=datetime(2024, 1, 2, 3, 4, 5)))
    assert " for " not in text and "using" not in text and " id " not in text
    assert text.endswith("with ESMTP; Tue, 02 Jan 2024 03:04:05 +0000")
    other_zone = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert _unfold(_received(when=other_zone)).endswith("+0100")


def test_received_header_does_not_disclose_login_by_default() -> None:
    field = _received(auth_user="dr.martin")
    assert b"dr.martin@" in field  # the recipient, not the login
    assert b"authenticated" not in field
    field = _received(auth_user="dr.house\r\n(x)", disclose_auth_user=True)
    _assert_well_formed(field)
    assert "(authenticated as dr.house x)" in _unfold(field)


# -- fold_field / sanitize --------------------------------------------------------------


def test_fold_field_and_sanitize() -> None:
    assert sanitize_header_value(" a\r\nb\t c\x00 ") == "a b c"
    assert sanitize_header_value("abcdef", max_length=3) == "abc"
    field = fold_field("Subject", " ".join(["word"] * 40))
    lines = field.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= 78 for line in lines)
    assert b"\r\n\r\n" not in field
    field = fold_field("X", "a" * 200)
    assert field == b"X: " + b"a" * 200 + b"\r\n"


# -- missing_headers / make_message_id -------------------------------------------------


def test_missing_headers() -> None:
    both = missing_headers(_msg("From: a@b.example\r\n\r\n"), domain="OpenMSS.example", now=WHEN)
    lines = both.split(b"\r\n")
    assert re.fullmatch(rb"Message-ID: <[0-9a-f]{32}@openmss\.example>", lines[0])
    assert lines[1] == b"Date: Tue, 05 Mar 2024 14:07:09 +0000"
    assert lines[2] == b""
    complete = _msg("message-id: <x@y>\r\nDATE: Tue, 05 Mar 2024 14:07:09 +0000\r\n\r\n")
    assert missing_headers(complete, domain="openmss.example", now=WHEN) == b""
    only_date = missing_headers(_msg("Message-ID: <x@y>\r\n\r\n"), domain="d.example", now=WHEN)
    assert only_date.startswith(b"Date: ") and only_date.count(b"\r\n") == 1


def test_make_message_id() -> None:
    first, second = make_message_id("Example.org."), make_message_id("example.org")
    assert first != second
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.org>", first)
    assert make_message_id("hôpital.example").endswith("@xn--hpital-ixa.example>")
    for bad in ("", "a b", "x>y", "a..b"):
        with pytest.raises(ValueError):
            make_message_id(bad)


# select_fields: the fast path of submission must agree with the full parser.

_FIELDS = ("From", "Sender", "Message-ID", "Date")


def test_select_fields_unfolds_and_ignores_other_fields():
    block = (
        b"Received: from x\r\n\tby y\r\nFrom: =?utf-8?q?Dr_L=C3=A9a?=\r\n <lea@a.test>\r\n"
        b"Subject: hello\r\nmessage-id: <1@a.test>\r\nbroken line without colon\r\n\r\nbody From: x\r\n"
    )
    msg = select_fields(block, _FIELDS)
    assert msg.get_all("From") == ["=?utf-8?q?Dr_L=C3=A9a?= <lea@a.test>"]
    assert msg["Message-ID"] == "<1@a.test>"
    assert msg["Subject"] is None and msg["Date"] is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["From", "Sender", "To", "Date", "X-A"]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        ),
        max_size=6,
    )
)
def test_select_fields_agrees_with_the_full_parser(fields):
    block = b"".join(f"{n}: {v}\r\n".encode() for n, v in fields) + b"\r\nbody\r\n"
    fast = select_fields(block, _FIELDS)
    full = parse_header(block)
    for name in _FIELDS:
        assert [v.strip() for v in fast.get_all(name) or []] == [
            str(v).strip() for v in full.get_all(name) or []
        ]


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_format_date_matches_the_standard_library_for_utc(seconds):
    from email.utils import format_datetime

    from mailserver.message.headers import format_date

    when = datetime.fromtimestamp(seconds, UTC)
    assert format_date(when) == format_datetime(when)
