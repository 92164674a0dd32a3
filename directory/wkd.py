"""The OpenPGP Web Key Directory (WKD): hashing of local parts and parsing of request paths.

Pure functions, no I/O. References are to draft-koch-openpgp-webkey-service (version 19):

* §3.1 Key Discovery: the local part of the address is lower-cased (ASCII letters only; other
  characters are left as they are), hashed with SHA-1, and the 160-bit digest encoded with
  z-base-32, which always gives 32 characters. The key is then fetched from one of

  - the advanced method: ``https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/hu/<hash>?l=<local>``
  - the direct method:   ``https://<domain>/.well-known/openpgpkey/hu/<hash>?l=<local>``

  The ``l`` parameter carries the unchanged local part; a server may use it (we do, to avoid
  scanning the accounts of a domain), but the hash is what names the key.
* §4.5 Policy Flags: ``/.well-known/openpgpkey/[<domain>/]policy``, whose mere presence tells
  clients that the domain runs a Web Key Directory (an empty file is a valid policy).

z-base-32 is defined in RFC 6189 §5.1.6 (ZRTP): the bits are taken most significant first, five
at a time, and mapped to an alphabet chosen to be easy to read aloud; the last group is padded
with zero bits and there is no ``=`` padding.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote

__all__ = [
    "WELL_KNOWN",
    "ZBASE32_ALPHABET",
    "Method",
    "WkdPath",
    "ascii_lower",
    "is_wkd_hash",
    "local_matches",
    "parse_wkd_path",
    "split_address",
    "wkd_hash",
    "wkd_url",
    "zbase32_decode",
    "zbase32_encode",
]

#: The prefix of every WKD path (draft-koch-openpgp-webkey-service §3.1, RFC 8615 well-known URI).
WELL_KNOWN = "/.well-known/openpgpkey"

#: RFC 6189 §5.1.6.
ZBASE32_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ZBASE32_VALUES = {c: i for i, c in enumerate(ZBASE32_ALPHABET)}

# A SHA-1 digest (160 bits) is exactly 32 z-base-32 characters.
_HASH_RE = re.compile(f"[{ZBASE32_ALPHABET}]{{32}}")

# What a domain in a path may look like: DNS labels (letters, digits, hyphens, underscores), with
# at least one dot. Anything else is refused before it reaches a database query.
_DOMAIN_RE = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9_-]{1,63}")


def zbase32_encode(data: bytes) -> str:
    """z-base-32 (RFC 6189 §5.1.6) of ``data``: 5 bits per character, most significant first."""
    out: list[str] = []
    buffer = 0
    bits = 0
    for byte in data:
        buffer = (buffer << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(ZBASE32_ALPHABET[(buffer >> bits) & 0x1F])
        buffer &= (1 << bits) - 1
    if bits:
        out.append(ZBASE32_ALPHABET[(buffer << (5 - bits)) & 0x1F])
    return "".join(out)


def zbase32_decode(text: str) -> bytes:
    """The bytes of a z-base-32 string; trailing bits that do not fill a byte are dropped.
    Raises ``ValueError`` on a character outside the alphabet."""
    buffer = 0
    bits = 0
    out = bytearray()
    for char in text:
        try:
            value = _ZBASE32_VALUES[char]
        except KeyError:
            raise ValueError(f"not a z-base-32 character: {char!r}") from None
        buffer = (buffer << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((buffer >> bits) & 0xFF)
            buffer &= (1 << bits) - 1
    return bytes(out)


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as §3.1 requires; non-ASCII letters are left unchanged (``str.lower``
    would also map ``É`` to ``é`` and give another hash than GnuPG's)."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def wkd_hash(local_part: str) -> str:
    """The WKD hash of a local part (§3.1): z-base-32 of the SHA-1 of its ASCII-lower-cased UTF-8."""
    digest = hashlib.sha1(ascii_lower(local_part).encode("utf-8"), usedforsecurity=False).digest()
    return zbase32_encode(digest)


def is_wkd_hash(text: str) -> bool:
    return _HASH_RE.fullmatch(text) is not None


def split_address(address: str) -> tuple[str, str]:
    """``(local part, lower-cased domain)`` of an address; raises ``ValueError`` if it is none.
    The domain is compared case-insensitively (RFC 5321 §2.4); the local part is kept as is."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an e-mail address: {address!r}")
    return local, domain.lower().rstrip(".")


class Method(Enum):
    ADVANCED = "advanced"  # the domain is in the path
    DIRECT = "direct"  # the domain is the host the request was sent to


@dataclass(frozen=True)
class WkdPath:
    """A parsed WKD request path. ``domain`` is None for the direct method (it comes from the
    Host header); ``hash`` is None for a policy request."""

    method: Method
    domain: str | None
    hash: str | None

    @property
    def is_policy(self) -> bool:
        return self.hash is None


def parse_wkd_path(path: str) -> WkdPath | None:
    """Parse a request path under ``/.well-known/openpgpkey``; None if it names nothing we serve.

    Understood (§3.1 and §4.5)::

        /.well-known/openpgpkey/<domain>/hu/<hash>     advanced, key
        /.well-known/openpgpkey/hu/<hash>              direct, key
        /.well-known/openpgpkey/<domain>/policy        advanced, policy
        /.well-known/openpgpkey/policy                 direct, policy

    The hash must be 32 z-base-32 characters (as the digest of SHA-1 always is); the domain is
    lower-cased. The query string (``?l=``) is not part of ``path``: see :func:`local_matches`.
    """
    if not path.startswith(WELL_KNOWN + "/"):
        return None
    parts = path[len(WELL_KNOWN) + 1 :].split("/")
    if parts == ["policy"]:
        return WkdPath(Method.DIRECT, None, None)
    if len(parts) == 2 and parts[0] == "hu":
        return WkdPath(Method.DIRECT, None, parts[1]) if is_wkd_hash(parts[1]) else None
    domain = parts[0].lower().rstrip(".")
    if not _DOMAIN_RE.fullmatch(domain):
        return None
    if parts[1:] == ["policy"]:
        return WkdPath(Method.ADVANCED, domain, None)
    if len(parts) == 3 and parts[1] == "hu":
        return WkdPath(Method.ADVANCED, domain, parts[2]) if is_wkd_hash(parts[2]) else None
    return None


def local_matches(hash_: str, local_part: str) -> bool:
    """Whether the ``l`` parameter of a request is consistent with the hash in its path."""
    return bool(local_part) and wkd_hash(local_part) == hash_


def wkd_url(address: str, method: Method = Method.ADVANCED, host: str | None = None) -> str:
    """The URL a WKD client fetches for ``address`` (§3.1). ``host`` overrides the host name
    (``openpgpkey.<domain>`` for the advanced method, ``<domain>`` for the direct one)."""
    local, domain = split_address(address)
    query = "?l=" + quote(local, safe="")
    if method is Method.ADVANCED:
        return f"https://{host or 'openpgpkey.' + domain}{WELL_KNOWN}/{domain}/hu/{wkd_hash(local)}{query}"
    return f"https://{host or domain}{WELL_KNOWN}/hu/{wkd_hash(local)}{query}"
