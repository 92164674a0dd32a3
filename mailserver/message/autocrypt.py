"""The Autocrypt Level 1 header (https://autocrypt.org/level1.html §2.1): outgoing mail of an
account that has a key tells the recipient's client which key to encrypt replies to."""

from __future__ import annotations

import base64

from mailserver.message.headers import select_fields


def autocrypt_header(address: str, public_key: bytes) -> bytes:
    """``Autocrypt: addr=...; keydata=...`` folded into lines of at most 78 octets; ``keydata``
    is the binary certificate in base64 (Level 1 §2.1: no armour)."""
    data = base64.b64encode(public_key).decode("ascii")
    lines = [f"Autocrypt: addr={address}; keydata="]
    for i in range(0, len(data), 72):
        lines.append(" " + data[i : i + 72])
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def has_autocrypt(message: bytes) -> bool:
    return select_fields(message, ("Autocrypt",)).get("Autocrypt") is not None
