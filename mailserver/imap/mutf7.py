"""Modified UTF-7, the encoding of international mailbox names (RFC 3501 §5.1.3).

Printable US-ASCII stands for itself except ``&``, which is written ``&-``; every other run of
characters is ``&`` + the modified BASE64 (``,`` instead of ``/``, no ``=`` padding) of its
UTF-16BE form + ``-``. :func:`decode` is strict: it accepts only the single canonical spelling of a
name, so ``encode(decode(s)) == s`` for every ``s`` it accepts.
"""

from __future__ import annotations

import base64
import binascii

_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


class MUTF7Error(ValueError):
    """The name is not valid modified UTF-7, or cannot be encoded."""


def _printable(char: str) -> bool:
    return " " <= char <= "~"


def _shift(run: str) -> str:
    try:
        utf16 = run.encode("utf-16-be")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise MUTF7Error("name holds a lone surrogate") from exc
    return "&" + base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",").decode("ascii") + "-"


def encode(name: str) -> str:
    """The modified UTF-7 form of ``name`` (pure printable ASCII)."""
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if _printable(char):
            if run:
                out.append(_shift("".join(run)))
                run.clear()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    if run:
        out.append(_shift("".join(run)))
    return "".join(out)


def _unshift(chunk: str) -> str:
    if not set(chunk) <= _B64_ALPHABET or len(chunk) % 4 == 1:
        raise MUTF7Error("invalid modified BASE64 in mailbox name")
    data = chunk.encode("ascii")
    try:
        utf16 = base64.b64decode(data.replace(b",", b"/") + b"=" * (-len(data) % 4), validate=True)
    except binascii.Error as exc:
        raise MUTF7Error("invalid modified BASE64 in mailbox name") from exc
    # Strictness: the leftover bits must be zero (re-encoding gives the same text), and the
    # octets must be whole, well-paired UTF-16 code units.
    if base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",") != data or len(utf16) % 2:
        raise MUTF7Error("non-canonical modified BASE64 in mailbox name")
    try:
        text = utf16.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MUTF7Error("invalid UTF-16 in mailbox name") from exc
    # RFC 3501 §5.1.3: modified BASE64 MUST NOT represent a printing US-ASCII character.
    if any(_printable(char) for char in text):
        raise MUTF7Error("printable ASCII encoded in modified BASE64")
    return text


def decode(name: str | bytes) -> str:
    """The Unicode name that ``name`` (modified UTF-7) stands for; raises :class:`MUTF7Error` for
    anything but the canonical encoding of a name."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MUTF7Error("8-bit octet in modified UTF-7 mailbox name") from exc
    out: list[str] = []
    i = 0
    after_shift = False
    while i < len(name):
        char = name[i]
        if not _printable(char):
            raise MUTF7Error("invalid character in modified UTF-7 mailbox name")
        if char != "&":
            out.append(char)
            after_shift = False
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise MUTF7Error("unterminated modified BASE64 in mailbox name")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
            after_shift = False
        else:
            # RFC 3501 §5.1.3: "&U,BTFw-&ZeVnLIqe-" is not permitted: one shift must hold the run.
            if after_shift:
                raise MUTF7Error("adjacent modified BASE64 shifts in mailbox name")
            out.append(_unshift(chunk))
            after_shift = True
        i = end + 1
    return "".join(out)
