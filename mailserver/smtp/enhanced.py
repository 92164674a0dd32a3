"""RFC 3463 enhanced status codes for SMTP replies that lack one.

aiosmtpd writes many replies without an enhanced status code (``503 Error: need RCPT
command``, ``552 Error: Too much mail data``...).  RFC 2034 §3: once a server has
advertised ENHANCEDSTATUSCODES, every 2xx, 4xx and 5xx reply except the greeting and
the replies to HELO and EHLO must start its text with one.  :func:`with_enhanced_code`
rewrites a reply line accordingly; the caller must not apply it to the greeting or to
HELO/EHLO replies (which it cannot tell apart from other ``250`` lines).
"""

from __future__ import annotations

import re

__all__ = ["with_enhanced_code"]

# A reply line: three-digit code, then "-" (continuation), " " or nothing
# (RFC 5321 §4.2).  Only codes of classes 2, 4 and 5 get an enhanced code.
_REPLY = re.compile(r"([245])([0-9][0-9])([ -]|$)(.*)", re.DOTALL)

# An enhanced code at the start of the text: class.subject.detail (RFC 3463 §2).
_HAS_ENHANCED = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}(?=\s|$)")

_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")

# Replies carrying no status at all: 220 greeting / STARTTLS go-ahead, 334 AUTH
# challenge, 354 start mail input.  The regex above already ignores 3xx; 220 is
# excluded explicitly (RFC 2034 §3 exempts the greeting, and RFC 3207 §4 shows the
# STARTTLS "220 Ready to start TLS" without a code).
_UNTOUCHED_CODES = frozenset({"220"})

# (reply codes or None for any, compiled text pattern, subject.detail).  The class
# digit always comes from the reply code (RFC 3463 §2: the classes must agree), so
# one rule serves, e.g., both 452 and 552 "too many recipients".  These rules are
# only consulted for 4xx/5xx replies; the first match wins.
_TEXT_RULES: tuple[tuple[frozenset[str] | None, re.Pattern[str], str], ...] = (
    # Exceptions turned into replies by aiosmtpd: "500 Error: (ValueError) ...";
    # first, since the exception text is arbitrary.  X.3.0: mail system status.
    (frozenset({"500"}), re.compile(r"^error: (\(|cannot describe)", re.I), "3.0"),
    # RFC 3207 §4 / RFC 4954 §6: "530 5.7.0 Must issue a STARTTLS command first",
    # "530 5.7.0 Authentication required".
    (None, re.compile(r"must issue a starttls|authentication required", re.I), "7.0"),
    # aiosmtpd after a failed TLS handshake; RFC 3207 §4 "454 TLS not available".
    (None, re.compile(r"lack of security|tls not available|encryption required", re.I), "7.0"),
    # Size: RFC 1870 §6.1 "message size exceeds fixed maximum message size" and
    # aiosmtpd's "Too much mail data"; X.3.4 = message too big for system.
    (None, re.compile(r"too much mail data|size exceeds|message too (big|large)", re.I), "3.4"),
    # Line-length limits, RFC 5321 §4.5.3.1.4 (command line) / §4.5.3.1.6 (text
    # line): X.5.2, the line could not be interpreted.
    (None, re.compile(r"line too long", re.I), "5.2"),
    # Bad sequence of commands: X.5.1 (RFC 3463 §3.6 "out of sequence").
    (
        None,
        re.compile(r"need (rcpt|mail|helo|ehlo) command|nested mail command|send (helo|ehlo) first", re.I),
        "5.1",
    ),
    (None, re.compile(r"already authenticated", re.I), "5.1"),
    # RFC 5321 §4.2.3 555 / RFC 1869: unsupported MAIL/RCPT parameters are X.5.4
    # (before the "not implemented" rule below, which would also match).
    (None, re.compile(r"parameters not recognized", re.I), "5.4"),
    # Unknown or unimplemented command: X.5.1 ("unsupported").
    (None, re.compile(r"command .* not recognized|not implemented$|unrecognized command", re.I), "5.1"),
    # Bad arguments of a known command (X.5.4) vs. an unparsable line (X.5.2).
    (None, re.compile(r"^syntax:", re.I), "5.4"),
    (None, re.compile(r"bad syntax|strict ascii mode|syntax error", re.I), "5.2"),
    (None, re.compile(r"malformed address|could not vrfy", re.I), "1.3"),
    (None, re.compile(r"too many recipients", re.I), "5.3"),
    (None, re.compile(r"sent too many times|too many (connections|errors|unrecognized)", re.I), "7.0"),
    (None, re.compile(r"timeout|timed out", re.I), "4.2"),
)

# The size-limit replies reworded when the limit is known.
_SIZE_LIMIT_TEXT = re.compile(r"too much mail data|size exceeds", re.I)

# Fallbacks by reply code, from the RFC 5321 §4.2.2 meaning of the code.
_CODE_DEFAULTS: dict[str, str] = {
    "221": "0.0",  # closing channel
    "235": "7.0",  # RFC 4954 §6 authentication succeeded
    "250": "0.0",
    "421": "3.0",  # service not available
    "451": "3.0",  # local error in processing
    "452": "3.1",  # insufficient system storage
    "454": "7.0",  # RFC 3207 §4 / RFC 4954 §6 temporary TLS/AUTH failure
    "500": "5.2",  # syntax error, command unrecognized
    "501": "5.4",  # syntax error in parameters or arguments
    "502": "5.1",  # command not implemented
    "503": "5.1",  # bad sequence of commands
    "504": "5.4",  # command parameter not implemented
    "530": "7.0",  # RFC 4954 §6 authentication required
    "534": "7.9",  # RFC 4954 §6 mechanism too weak
    "535": "7.8",  # RFC 4954 §6 invalid credentials
    "538": "7.11",  # RFC 4954 §6 encryption required
    "555": "5.4",  # MAIL/RCPT parameters not recognized
}


def _enhanced_for(code: str, text: str) -> str:
    if code[0] == "2":
        # Success replies: the text says nothing about the status ("250 Syntax:
        # HELO hostname" is a HELP answer), so only the code decides.
        return f"2.{_CODE_DEFAULTS.get(code, '0.0')}"
    for codes, pattern, subject_detail in _TEXT_RULES:
        if (codes is None or code in codes) and pattern.search(text):
            return f"{code[0]}.{subject_detail}"
    return f"{code[0]}.{_CODE_DEFAULTS.get(code, '0.0')}"


def _rewrite(line: str, size_limit: int | None) -> str:
    match = _REPLY.fullmatch(line)
    if match is None:
        return line
    code = match.group(1) + match.group(2)
    separator, text = match.group(3), match.group(4)
    if code in _UNTOUCHED_CODES or _HAS_ENHANCED.match(text):
        return line
    enhanced = _enhanced_for(code, text)
    if separator == "":
        separator = " "
    if code == "552" and size_limit is not None and _SIZE_LIMIT_TEXT.search(text):
        return f"{code}{separator}{enhanced} Message too big: the limit is {size_limit} bytes"
    return f"{code}{separator}{enhanced} {text}" if text else f"{code}{separator}{enhanced}"


def with_enhanced_code(line: str, size_limit: int | None = None) -> str:
    """Insert an RFC 3463 enhanced status code in a 2xx/4xx/5xx reply line.

    The code is chosen from the known aiosmtpd reply texts (``530`` STARTTLS → 5.7.0,
    bad command sequence → 5.5.1, ``Too much mail data`` → 5.3.4, ``Line too long``
    → 5.5.2, ``Syntax:`` → 5.5.4...), else from the reply code, else it is the class
    default ``2.0.0``/``4.0.0``/``5.0.0``.  Lines that already carry a code, 220
    greetings and STARTTLS replies, 3xx replies (334, 354) and lines without a reply
    code are returned unchanged.

    With *size_limit*, the size-limit replies (``552 Error: Too much mail data`` and
    RFC 1870's ``552 ... size exceeds fixed maximum message size``) are reworded to
    ``552 5.3.4 Message too big: the limit is N bytes``.

    A string holding several CRLF-separated lines (a multi-line reply returned by a
    handler hook) is processed line by line; line endings are preserved.
    """
    if "\n" not in line and "\r" not in line:
        return _rewrite(line, size_limit)
    # Split on CR, LF and CRLF only (str.splitlines also splits on VT, FF, U+2028...).
    parts = _LINE_BREAK.split(line)
    # parts alternates text and separator: rewrite the text items only.
    return "".join(_rewrite(part, size_limit) if index % 2 == 0 else part for index, part in enumerate(parts))
