"""Tests for mailserver.smtp.enhanced."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.smtp.enhanced import with_enhanced_code

# aiosmtpd 1.4 reply texts (smtp.py) and the code each must get.
AIOSMTPD_REPLIES = [
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
    ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
    ("503 Error: nested MAIL command", "503 5.5.1 Error: nested MAIL command"),
    ("503 Error: send HELO first", "503 5.5.1 Error: send HELO first"),
    ("503 Error: send EHLO first", "503 5.5.1 Error: send EHLO first"),
    ("503 Already authenticated", "503 5.5.1 Already authenticated"),
    ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
    (
        "552 Error: message size exceeds fixed maximum message size",
        "552 5.3.4 Error: message size exceeds fixed maximum message size",
    ),
    ("500 Line too long (see RFC5321 4.5.3.1.6)", "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"),
    ("500 Command line too long", "500 5.5.2 Command line too long"),
    ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
    ("500 Error: strict ASCII mode", "500 5.5.2 Error: strict ASCII mode"),
    ('500 Error: command "FOO" not recognized', '500 5.5.1 Error: command "FOO" not recognized'),
    ("500 Error: command 'AUTH' not recognized", "500 5.5.1 Error: command 'AUTH' not recognized"),
    ("500 Error: (ValueError) boom", "500 5.3.0 Error: (ValueError) boom"),
    ("500 Error: Cannot describe error", "500 5.3.0 Error: Cannot describe error"),
    ("501 Syntax: HELO hostname", "501 5.5.4 Syntax: HELO hostname"),
    (
        "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]",
        "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]",
    ),
    ("501 Syntax: RSET", "501 5.5.4 Syntax: RSET"),
    ("501 Not enough value", "501 5.5.4 Not enough value"),
    ("501 Too many values", "501 5.5.4 Too many values"),
    (
        "501 Error: BODY can only be one of 7BIT, 8BITMIME",
        "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME",
    ),
    ("501 Error: SMTPUTF8 disabled", "501 5.5.4 Error: SMTPUTF8 disabled"),
    ("501 Supported commands: DATA EHLO", "501 5.5.4 Supported commands: DATA EHLO"),
    ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
    ("502 Could not VRFY <<x", "502 5.1.3 Could not VRFY <<x"),
    (
        "555 MAIL FROM parameters not recognized or not implemented",
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
    ),
    (
        "555 RCPT TO parameters not recognized or not implemented",
        "555 5.5.4 RCPT TO parameters not recognized or not implemented",
    ),
    ("554 Command refused due to lack of security", "554 5.7.0 Command refused due to lack of security"),
    ("454 TLS not available", "454 4.7.0 TLS not available"),
    (
        "421 mx.example Service not available, closing transmission channel",
        "421 4.3.0 mx.example Service not available, closing transmission channel",
    ),
    ("421 Error: timeout exceeded", "421 4.4.2 Error: timeout exceeded"),
    ("452 Too many recipients", "452 4.5.3 Too many recipients"),
    ("250 OK", "250 2.0.0 OK"),
    ("221 Bye", "221 2.0.0 Bye"),
    ("250 Syntax: HELO hostname", "250 2.0.0 Syntax: HELO hostname"),
    (
        "252 Cannot VRFY user, but will accept message and attempt delivery",
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
    ),
]

DEFAULTS = [
    ("250", "250 2.0.0"),
    ("250-", "250-2.0.0"),
    ("250-first line", "250-2.0.0 first line"),
    ("251 User not local; will forward", "251 2.0.0 User not local; will forward"),
    ("450 Mailbox busy", "450 4.0.0 Mailbox busy"),
    ("451 Local error in processing", "451 4.3.0 Local error in processing"),
    ("550 Nope", "550 5.0.0 Nope"),
    ("553 Mailbox name not allowed", "553 5.0.0 Mailbox name not allowed"),
    ("554 Transaction failed", "554 5.0.0 Transaction failed"),
    ("535 Bad credentials", "535 5.7.8 Bad credentials"),
]

UNCHANGED = [
    "220 mx.example ESMTP ready",
    "220-mx.example",
    "220 Ready to start TLS",
    "334 VXNlcm5hbWU6",
    "334 ",
    "354 End data with <CR><LF>.<CR><LF>",
    "250 2.1.5 Recipient OK",
    "550 5.1.1 No such user",
    "421 4.7.0 MAIL sent too many times",
    "502 5.5.1 Too many unrecognized commands, goodbye.",
    "235 2.7.0 Authentication successful",
    "550 5.7.1",
    "",
    "OK",
    "hello world",
    "25 OK",
    "2500 OK",
    "250OK",
    "150 not a final reply",
    "650 out of range",
    " 250 OK",
]


@pytest.mark.parametrize(("line", "expected"), AIOSMTPD_REPLIES + DEFAULTS)
def test_mapping(line: str, expected: str) -> None:
    assert with_enhanced_code(line) == expected


@pytest.mark.parametrize("line", UNCHANGED)
def test_unchanged(line: str) -> None:
    assert with_enhanced_code(line) == line


def test_size_limit_wording() -> None:
    assert (
        with_enhanced_code("552 Error: Too much mail data", size_limit=26214400)
        == "552 5.3.4 Message too big: the limit is 26214400 bytes"
    )
    assert (
        with_enhanced_code("552 Error: message size exceeds fixed maximum message size", size_limit=1000)
        == "552 5.3.4 Message too big: the limit is 1000 bytes"
    )
    # Other replies are unaffected by the limit.
    assert with_enhanced_code("250 OK", size_limit=10) == "250 2.0.0 OK"
    assert with_enhanced_code("552 5.2.2 Mailbox full", size_limit=10) == "552 5.2.2 Mailbox full"


def test_class_of_enhanced_code_follows_reply() -> None:
    assert with_enhanced_code("452 Error: Too much mail data") == "452 4.3.4 Error: Too much mail data"
    assert with_enhanced_code("552 Too many recipients") == "552 5.5.3 Too many recipients"


def test_multiline_string() -> None:
    reply = "250-first\r\n250-2.0.0 second\r\n250 last\r\n"
    assert with_enhanced_code(reply) == "250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 last\r\n"
    assert with_enhanced_code("550-a\n550 b") == "550-5.0.0 a\n550 5.0.0 b"


_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")

reply_lines = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda code, sep, text: code + sep + text,
        st.from_regex(r"[0-9]{3}", fullmatch=True),
        st.sampled_from(["", " ", "-", "x"]),
        st.text(max_size=60),
    ),
    st.sampled_from([line for line, _ in AIOSMTPD_REPLIES] + UNCHANGED),
)


@given(reply_lines, st.one_of(st.none(), st.integers(0, 10**9)))
def test_never_raises_and_idempotent(line: str, size_limit: int | None) -> None:
    once = with_enhanced_code(line, size_limit=size_limit)
    assert with_enhanced_code(once, size_limit=size_limit) == once


@given(
    st.from_regex(r"[245][0-9][0-9]", fullmatch=True),
    st.sampled_from([" ", "-"]),
    st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=60),
)
def test_code_preserved_and_enhanced_code_added(code: str, separator: str, text: str) -> None:
    line = code + separator + text
    result = with_enhanced_code(line)
    assert result[:3] == code
    if code == "220":
        assert result == line
        return
    assert result[3] == separator
    enhanced = result[4:].split(" ", 1)[0]
    assert _ENHANCED.fullmatch(enhanced) or result == line
    if result != line:
        # The inserted code is of the reply's class (RFC 3463 §2).
        assert enhanced[0] == code[0]


@given(st.text(max_size=80))
def test_lines_without_reply_code_untouched(text: str) -> None:
    if re.match(r"[245][0-9][0-9]([ -]|$)", text) or "\r" in text or "\n" in text:
        return
    assert with_enhanced_code(text) == text
