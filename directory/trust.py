"""The trust list of operator domains (the MSSanté "liste blanche").

Only operators on the national allow-list may exchange mail with each other.  Each entry pairs a
mail domain with the subject DN of a certificate that operator's outbound servers present
(``DNCertificatOperateur``); a domain appears once per DN.  When a peer relays mail to us, the
subject of the client certificate it presented must equal one of the DNs listed for the envelope
sender's domain.

DNs are compared in a canonical form, :data:`CanonicalDN`: a sorted tuple of
``(ATTRIBUTE, value)`` pairs.  Sorting makes the comparison independent of RDN order, since
RFC 4514 strings list the most specific RDN first while OpenSSL's ``/C=../CN=..`` form lists it
last.  Values are compared like LDAP ``caseIgnoreMatch`` (RFC 4518 §2: Unicode normalised,
case folded, insignificant whitespace removed).

Two file formats are understood:

* the national XML (root ``ListeBlancheMSSante``), see :func:`parse_allow_list_xml`;
* a local text format, one ``domain | DN`` pair per line, see :func:`parse_local_trust_file`.

:class:`TrustListSource` reloads a file when it changes so that the list can be replaced
without restarting the server.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import unicodedata
import xml.etree.ElementTree as ET  # types and ParseError only; parsing goes through defusedxml
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import defusedxml
import defusedxml.ElementTree as DET
from cryptography import x509

__all__ = [
    "CanonicalDN",
    "TrustList",
    "TrustListError",
    "TrustListSource",
    "TrustedDomain",
    "certificate_dn",
    "load_trust_list",
    "normalize_dn",
    "normalize_domain",
    "parse_allow_list_xml",
    "parse_local_trust_file",
]

logger = logging.getLogger(__name__)

#: A distinguished name in canonical form: sorted ``(UPPER attribute name, normalised value)``.
CanonicalDN = tuple[tuple[str, str], ...]


class TrustListError(ValueError):
    """A trust list (XML or local file) could not be read."""


# --------------------------------------------------------------------------------------------
# Distinguished names
# --------------------------------------------------------------------------------------------

# Attribute OIDs and the canonical short name used for each (RFC 4519 / RFC 5280 names).
_OID_TO_NAME: Mapping[str, str] = MappingProxyType(
    {
        "2.5.4.3": "CN",
        "2.5.4.4": "SN",  # surname (RFC 4519 "sn")
        "2.5.4.5": "SERIALNUMBER",
        "2.5.4.6": "C",
        "2.5.4.7": "L",
        "2.5.4.8": "ST",
        "2.5.4.9": "STREET",
        "2.5.4.10": "O",
        "2.5.4.11": "OU",
        "2.5.4.12": "TITLE",
        "2.5.4.42": "GN",
        "2.5.4.97": "ORGANIZATIONIDENTIFIER",
        "0.9.2342.19200300.100.1.1": "UID",
        "0.9.2342.19200300.100.1.25": "DC",
        "1.2.840.113549.1.9.1": "E",
    }
)

# Names found in DN strings (upper-cased) -> canonical name.  Dotted OIDs map through
# _OID_TO_NAME; unknown attribute types are kept upper-cased (unknown OIDs stay dotted, which is
# also how certificate_dn() renders attributes it has no name for).
_NAME_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "CN": "CN",
        "COMMONNAME": "CN",
        "SN": "SN",
        "SURNAME": "SN",
        "SERIALNUMBER": "SERIALNUMBER",
        "C": "C",
        "COUNTRYNAME": "C",
        "L": "L",
        "LOCALITYNAME": "L",
        "ST": "ST",
        "S": "ST",
        "STATEORPROVINCENAME": "ST",
        "STREET": "STREET",
        "STREETADDRESS": "STREET",
        "O": "O",
        "ORGANIZATIONNAME": "O",
        "OU": "OU",
        "ORGANIZATIONALUNITNAME": "OU",
        "T": "TITLE",
        "TITLE": "TITLE",
        "GN": "GN",
        "G": "GN",
        "GIVENNAME": "GN",
        "ORGANIZATIONIDENTIFIER": "ORGANIZATIONIDENTIFIER",
        "UID": "UID",
        "USERID": "UID",
        "DC": "DC",
        "DOMAINCOMPONENT": "DC",
        "E": "E",
        "EMAIL": "E",
        "EMAILADDRESS": "E",
    }
)

_ATTR_TYPE = r"(?:OID\.)?(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)"
_ATTR_TYPE_RE = re.compile(rf"\s*{_ATTR_TYPE}\s*=")
_ATTR_TYPE_FULL_RE = re.compile(_ATTR_TYPE)
# In the OpenSSL slash form a "/" (or "+" for a multi-valued RDN) only separates components when
# an attribute type and "=" follow; values such as "O=Foo/Bar" keep their slash.
_SLASH_SPLIT_RE = re.compile(rf"[/+](?={_ATTR_TYPE}\s*=)")
_SLASH_HEX_RE = re.compile(r"(?:\\x[0-9A-Fa-f]{2})+")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_WS_RE = re.compile(r"\s+")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")

# RFC 4514 §2.4: characters that may be escaped with a backslash (plus "=" and space which
# writers escape too).
_ESCAPABLE = frozenset(' "#+,;<=>\\')


def _canonical_attr(raw: str) -> str:
    name = raw.strip().upper()
    name = name.removeprefix("OID.")
    if name and name[0].isdigit():
        return _OID_TO_NAME.get(name, name)
    return _NAME_ALIASES.get(name, name)


def _canonical_value(value: str) -> str:
    # RFC 4518 §2: normalise (NFKC), case fold, collapse insignificant whitespace.
    value = unicodedata.normalize("NFKC", value).casefold()
    return _WS_RE.sub(" ", value).strip()


def _decode_ber_string(hexdigits: str) -> str | None:
    """Decode the ``#hex`` form of RFC 4514 §2.4 when it holds a simple DER string."""
    try:
        raw = bytes.fromhex(hexdigits)
    except ValueError:
        return None
    if len(raw) < 2:
        return None
    tag, length = raw[0], raw[1]
    offset = 2
    if length & 0x80:
        nbytes = length & 0x7F
        if nbytes == 0 or nbytes > 4 or len(raw) < 2 + nbytes:
            return None
        length = int.from_bytes(raw[2 : 2 + nbytes], "big")
        offset = 2 + nbytes
    body = raw[offset:]
    if len(body) != length:
        return None
    try:
        if tag == 0x0C:  # UTF8String
            return body.decode("utf-8")
        if tag in (0x13, 0x16, 0x1A):  # PrintableString, IA5String, VisibleString
            return body.decode("ascii")
        if tag == 0x14:  # TeletexString, in practice Latin-1
            return body.decode("latin-1")
        if tag == 0x1E:  # BMPString
            return body.decode("utf-16-be")
    except UnicodeDecodeError:
        return None
    return None


def _separator_follows(text: str, pos: int) -> bool:
    """True when the character at *pos* (``,``, ``;`` or ``+``) starts a new attribute."""
    return _ATTR_TYPE_RE.match(text, pos + 1) is not None


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] == " ":
        i += 1
    return i


def _parse_quoted(text: str, i: int) -> tuple[str, int]:
    """RFC 1779 quoted value starting at the opening quote; returns (value, index after it)."""
    chars: list[str] = []
    n = len(text)
    i += 1
    while True:
        if i >= n:
            raise ValueError("unterminated quoted value in DN")
        ch = text[i]
        if ch == '"':
            return "".join(chars), i + 1
        if ch == "\\" and i + 1 < n:
            chars.append(text[i + 1])
            i += 2
            continue
        chars.append(ch)
        i += 1


def _parse_unquoted(text: str, i: int) -> tuple[str, int]:
    """RFC 4514 §3 string value from *i* up to the next separator; returns (value, index)."""
    chars: list[str] = []
    pending = bytearray()  # bytes from consecutive \HH escapes, decoded together as UTF-8
    n = len(text)

    def flush() -> None:
        if pending:
            try:
                chars.append(pending.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError("invalid UTF-8 in hex-escaped DN value") from exc
            pending.clear()

    while i < n:
        ch = text[i]
        if ch == "\\":
            pair = text[i + 1 : i + 3]
            if len(pair) == 2 and all(c in _HEXDIGITS for c in pair):
                pending.append(int(pair, 16))
                i += 3
                continue
            flush()
            if i + 1 >= n:
                raise ValueError("DN ends with a lone backslash")
            nxt = text[i + 1]
            if nxt not in _ESCAPABLE:
                chars.append("\\")  # not an RFC 4514 escape: keep it as written
            chars.append(nxt)
            i += 2
            continue
        if ch in ",;+" and (_separator_follows(text, i) or not text[i + 1 :].strip()):
            break
        flush()
        chars.append(ch)
        i += 1
    flush()
    return "".join(chars), i


def _parse_comma_form(text: str) -> list[tuple[str, str]]:
    """Parse an RFC 4514 (or RFC 1779/2253 style) string into (type, value) pairs.

    Tolerances beyond RFC 4514: ``;`` as separator (RFC 1779), spaces around ``=`` and after
    separators (OpenSSL's ``C = FR, O = x`` output), quoted values (RFC 1779), and an
    unescaped ``,``/``+``/``;`` kept inside a value when no ``type=`` follows it.
    """
    pairs: list[tuple[str, str]] = []
    n = len(text)
    i = 0
    while True:
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f"missing '=' in DN component {text[i:].strip()!r}")
        attr = text[i:eq].strip()
        if not _ATTR_TYPE_FULL_RE.fullmatch(attr):
            raise ValueError(f"invalid attribute type {attr!r} in DN")
        i = _skip_spaces(text, eq + 1)
        value: str
        if i < n and text[i] == '"':
            value, i = _parse_quoted(text, i)
            i = _skip_spaces(text, i)
            if i < n and text[i] not in ",;+":
                raise ValueError("unexpected text after quoted value in DN")
        elif i < n and text[i] == "#" and (m := _HEX_RE.match(text, i + 1)) is not None:
            # RFC 4514 §2.4: "#" + hex of the BER encoding.
            decoded = _decode_ber_string(m.group(0))
            value = decoded if decoded is not None else text[i : m.end()]
            i = _skip_spaces(text, m.end())
            if i < n and text[i] not in ",;+":
                raise ValueError("unexpected text after hex value in DN")
        else:
            value, i = _parse_unquoted(text, i)
        pairs.append((attr, value))
        if i >= n:
            return pairs
        # text[i] is a separator.
        i += 1
        if not text[i:].strip():
            raise ValueError("DN ends with a separator")


def _slash_unescape(value: str) -> str:
    """Undo OpenSSL ``X509_NAME_oneline`` escaping (``\\xHH`` bytes, backslash escapes)."""

    def hex_run(m: re.Match[str]) -> str:
        raw = bytes(int(m.group(0)[k + 2 : k + 4], 16) for k in range(0, len(m.group(0)), 4))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    value = _SLASH_HEX_RE.sub(hex_run, value)
    return re.sub(r"\\(.)", r"\1", value)


def _parse_slash_form(text: str) -> list[tuple[str, str]]:
    """Parse OpenSSL's one-line form ``/C=FR/O=Org/CN=name``."""
    pairs: list[tuple[str, str]] = []
    body = text.strip()[1:]
    for part in _SLASH_SPLIT_RE.split(body):
        if not part.strip():
            continue
        attr, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"missing '=' in DN component {part.strip()!r}")
        attr = attr.strip()
        if not _ATTR_TYPE_FULL_RE.fullmatch(attr):
            raise ValueError(f"invalid attribute type {attr!r} in DN")
        pairs.append((attr, _slash_unescape(value)))
    return pairs


def normalize_dn(dn: str) -> CanonicalDN:
    """Canonical form of a DN string, independent of RDN order, case and spacing.

    Accepts RFC 4514 strings (``CN=x,OU=y,O=z,C=FR``), the OpenSSL forms ``/C=FR/O=z/CN=x`` and
    ``C = FR, O = z, CN = x``, ``\\,``/``\\2C`` escapes and quoted values.  An empty string
    gives ``()``.  Raises :class:`ValueError` on a malformed DN.
    """
    text = dn.strip()
    if not text:
        return ()
    pairs = _parse_slash_form(text) if text.startswith("/") else _parse_comma_form(text)
    return tuple(sorted((_canonical_attr(attr), _canonical_value(value)) for attr, value in pairs))


def _x509_name_dn(name: x509.Name) -> CanonicalDN:
    pairs: list[tuple[str, str]] = []
    for rdn in name.rdns:
        for attribute in rdn:
            oid = attribute.oid.dotted_string
            value = attribute.value
            text = value if isinstance(value, str) else "#" + value.hex()
            pairs.append((_OID_TO_NAME.get(oid, oid), _canonical_value(text)))
    return tuple(sorted(pairs))


def certificate_dn(der: bytes) -> CanonicalDN:
    """Canonical subject DN of a DER certificate (same form as :func:`normalize_dn`).

    Raises :class:`ValueError` when *der* is not a certificate.
    """
    return _x509_name_dn(x509.load_der_x509_certificate(der).subject)


# --------------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------------

_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (A-label) form of a mail domain, without trailing dot.

    Raises :class:`ValueError` when *domain* is not a syntactically valid host name
    (RFC 1035 §2.3.1 labels, RFC 5890 A-labels for internationalised names).
    """
    name = domain.strip().rstrip(".")
    if not name:
        raise ValueError("empty domain")
    if not name.isascii():
        try:
            # Python's codec implements IDNA 2003 (RFC 3490), adequate for matching.
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid internationalised domain {domain!r}") from exc
    name = name.lower()
    if len(name) > 253:
        raise ValueError(f"domain too long: {domain!r}")
    labels = name.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(f"invalid domain {domain!r}")
    return name


# --------------------------------------------------------------------------------------------
# The trust list
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedDomain:
    """One operator domain and the subject DNs of the certificates its servers present."""

    name: str
    certificate_dns: frozenset[CanonicalDN] = field(default_factory=frozenset)
    description: str = ""


class TrustList:
    """Immutable set of trusted operator domains, indexed by domain and by certificate DN.

    Entries with the same domain (after normalisation) are merged: their DN sets are united and
    the first non-empty description is kept.  Empty DNs never match a certificate.
    """

    __slots__ = ("_by_dn", "_domains", "generated_at")

    def __init__(self, entries: Iterable[TrustedDomain] = (), *, generated_at: str | None = None) -> None:
        merged: dict[str, tuple[set[CanonicalDN], str]] = {}
        for entry in entries:
            name = normalize_domain(entry.name)
            dns, description = merged.setdefault(name, (set(), ""))
            dns.update(dn for dn in entry.certificate_dns if dn)
            if not description and entry.description:
                merged[name] = (dns, entry.description)
        domains = {
            name: TrustedDomain(name=name, certificate_dns=frozenset(dns), description=description)
            for name, (dns, description) in merged.items()
        }
        by_dn: dict[CanonicalDN, set[str]] = {}
        for domain in domains.values():
            for dn in domain.certificate_dns:
                by_dn.setdefault(dn, set()).add(domain.name)
        self._domains: Mapping[str, TrustedDomain] = MappingProxyType(domains)
        self._by_dn: Mapping[CanonicalDN, tuple[str, ...]] = MappingProxyType(
            {dn: tuple(sorted(names)) for dn, names in by_dn.items()}
        )
        #: ``DateDeGeneration`` of the national list, when known (informational).
        self.generated_at = generated_at

    @classmethod
    def empty(cls) -> TrustList:
        return cls()

    def __len__(self) -> int:
        return len(self._domains)

    def __iter__(self) -> Iterator[TrustedDomain]:
        return iter(self._domains.values())

    def __contains__(self, domain: object) -> bool:
        return isinstance(domain, str) and self.is_trusted_domain(domain)

    def __repr__(self) -> str:
        return f"<TrustList {len(self._domains)} domains, {len(self._by_dn)} DNs>"

    def _lookup(self, domain: str) -> TrustedDomain | None:
        try:
            return self._domains.get(normalize_domain(domain))
        except ValueError:
            return None

    def domains(self) -> list[str]:
        """Trusted domains, sorted."""
        return sorted(self._domains)

    def get(self, domain: str) -> TrustedDomain | None:
        """The entry for *domain*, or None."""
        return self._lookup(domain)

    def is_trusted_domain(self, domain: str) -> bool:
        """Whether *domain* (any case, Unicode or A-label, trailing dot allowed) is listed."""
        return self._lookup(domain) is not None

    def dns_for(self, domain: str) -> frozenset[CanonicalDN]:
        """Certificate subject DNs listed for *domain* (empty when the domain is not listed)."""
        entry = self._lookup(domain)
        return entry.certificate_dns if entry is not None else frozenset()

    def certificate_matches(self, domain: str, cert_der: bytes) -> bool:
        """Whether the certificate's subject is one of the DNs listed for *domain*.

        Only the subject is compared: the caller must have verified the certificate chain,
        validity and revocation (the TLS layer does so).
        """
        dns = self.dns_for(domain)
        if not dns:
            return False
        try:
            subject = certificate_dn(cert_der)
        except ValueError:
            return False
        return bool(subject) and subject in dns

    def domains_for_certificate(self, cert_der: bytes) -> list[str]:
        """Domains whose operator uses this certificate (sorted; empty if none).

        Used for the null reverse-path ``<>`` (RFC 5321 §4.5.5: bounces carry no sender domain),
        where the peer is accepted if it is any trusted operator.
        """
        try:
            subject = certificate_dn(cert_der)
        except ValueError:
            return []
        return list(self._by_dn.get(subject, ())) if subject else []

    def merge(self, other: TrustList) -> TrustList:
        """A new list holding the entries of both (DNs of a common domain are united)."""
        return TrustList([*self, *other], generated_at=self.generated_at or other.generated_at)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_XML_ROOT = "ListeBlancheMSSante"
_UTF8_BOM = b"\xef\xbb\xbf"


def _local(tag: object) -> str:
    """Element name without namespace (``{ns}Nom`` -> ``Nom``); comments/PIs give ``""``."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def parse_allow_list_xml(data: bytes) -> TrustList:
    """Parse the national ``ListeBlancheMSSante`` XML.

    Namespaces are ignored (elements are matched on their local names).  A ``Domaine`` without
    ``Nom``, with an invalid domain name, or a DN that cannot be parsed is skipped with a
    warning: one bad entry must not discard the other thousands.  Entity declarations and
    external references are refused (defusedxml), so hostile input cannot expand or fetch.
    """
    # Tolerate a UTF-8 byte order mark followed by blank lines before the XML declaration
    # (XML 1.0 §2.8 wants the declaration first; files edited by hand often break that).
    data = data.removeprefix(_UTF8_BOM).lstrip(b" \t\r\n")
    try:
        root: ET.Element = DET.fromstring(data)
    except (ET.ParseError, defusedxml.DefusedXmlException) as exc:
        raise TrustListError(f"allow-list XML rejected: {exc}") from exc
    if _local(root.tag) != _XML_ROOT:
        raise TrustListError(f"allow-list XML: root element is {_local(root.tag)!r}, expected {_XML_ROOT!r}")

    generated_at: str | None = None
    entries: list[TrustedDomain] = []
    skipped = 0
    for element in root.iter():
        local = _local(element.tag)
        if local == "DateDeGeneration" and generated_at is None:
            generated_at = _text(element) or None
            continue
        if local != "Domaine":
            continue
        name = ""
        description = ""
        raw_dns: list[str] = []
        for child in element:
            child_name = _local(child.tag)
            if child_name == "Nom":
                name = _text(child)
            elif child_name == "Description":
                description = _text(child)
            elif child_name == "DNCertificatOperateur":
                raw_dns.append(_text(child))
        if not name:
            skipped += 1
            continue
        try:
            domain = normalize_domain(name)
        except ValueError as exc:
            logger.warning("allow-list: skipping Domaine %r: %s", name, exc)
            skipped += 1
            continue
        dns: set[CanonicalDN] = set()
        for raw in raw_dns:
            try:
                dn = normalize_dn(raw)
            except ValueError as exc:
                logger.warning("allow-list: %s: ignoring unparsable DN %r: %s", domain, raw, exc)
                continue
            if dn:
                dns.add(dn)
        if not dns:
            # Listed, but no certificate can authenticate it: certificate_matches() is False.
            logger.warning("allow-list: %s has no usable DNCertificatOperateur", domain)
        entries.append(TrustedDomain(name=domain, certificate_dns=frozenset(dns), description=description))
    if skipped:
        logger.warning("allow-list: %d Domaine entries without a valid Nom skipped", skipped)
    return TrustList(entries, generated_at=generated_at)


def parse_local_trust_file(text: str) -> TrustList:
    """Parse the local format: one ``domain | DN`` per line, ``#`` comment lines, blank lines.

    A domain may be repeated with different DNs.  Every line must carry a DN: peers are always
    authenticated by certificate, so a domain without one is an error (reported with its line
    number, like any other malformed line).
    """
    entries: list[TrustedDomain] = []
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        domain_part, sep, dn_part = line.partition("|")
        if not sep or not dn_part.strip():
            raise TrustListError(f"line {lineno}: expected 'domain | certificate DN', got {line!r}")
        try:
            domain = normalize_domain(domain_part)
        except ValueError as exc:
            raise TrustListError(f"line {lineno}: {exc}") from exc
        try:
            dn = normalize_dn(dn_part)
        except ValueError as exc:
            raise TrustListError(f"line {lineno}: invalid DN {dn_part.strip()!r}: {exc}") from exc
        entries.append(TrustedDomain(name=domain, certificate_dns=frozenset({dn})))
    return TrustList(entries)


def load_trust_list(path: Path) -> TrustList:
    """Load *path*, XML or local format by content (XML when it starts with ``<``).

    Raises :class:`TrustListError` on bad content and :class:`OSError` when unreadable.
    """
    data = path.read_bytes()
    head = data.removeprefix(_UTF8_BOM).lstrip()
    try:
        if head.startswith(b"<") or data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 BOM: XML
            return parse_allow_list_xml(data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TrustListError(f"not UTF-8: {exc}") from exc
        return parse_local_trust_file(text)
    except TrustListError as exc:
        raise TrustListError(f"{path}: {exc}") from exc


_Signature = tuple[int, int, int]


class TrustListSource:
    """Provides the current trust list, reloading its file when it changes.

    :meth:`current` looks at the file's (mtime_ns, size, inode) at most every *check_interval*
    seconds and reloads it when that changed.  A reload that fails keeps the previous list and
    logs a warning (once per file version), so a half-written or broken file never empties the
    trust space.  The initial load, done by the constructor, raises instead: a misconfiguration
    must be visible at start-up.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        check_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        _initial: TrustList | None = None,
    ) -> None:
        self._path = path
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: _Signature | None = None
        self._failed: _Signature | str | None = None
        self._last_check: float | None = None
        self._list = _initial if _initial is not None else TrustList()
        if path is not None:
            signature = self._stat(path)
            self._list = load_trust_list(path)
            self._signature = signature
            self._last_check = clock()

    @classmethod
    def fixed(cls, trust_list: TrustList) -> TrustListSource:
        """A source that always returns *trust_list* (no file)."""
        return cls(None, _initial=trust_list)

    @classmethod
    def empty(cls) -> TrustListSource:
        """A source with no trusted domain."""
        return cls(None)

    @property
    def path(self) -> Path | None:
        return self._path

    @staticmethod
    def _stat(path: Path) -> _Signature:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> TrustList:
        """The trust list in force, reloaded first if the file changed."""
        if self._path is None:
            return self._list
        now = self._clock()
        if self._last_check is not None and now - self._last_check < self._interval:
            return self._list
        with self._lock:
            self._last_check = now
            self._refresh(self._path)
            return self._list

    def reload(self) -> bool:
        """Check the file now, ignoring *check_interval*; True if a new list was loaded."""
        if self._path is None:
            return False
        with self._lock:
            self._last_check = self._clock()
            return self._refresh(self._path)

    def _refresh(self, path: Path) -> bool:
        try:
            signature = self._stat(path)
        except OSError as exc:
            if self._failed != "stat":
                logger.warning("trust list %s unavailable, keeping the previous list: %s", path, exc)
                self._failed = "stat"
            return False
        if self._failed == "stat":
            self._failed = None
        if signature == self._signature:
            return False
        if signature == self._failed:
            return False  # same broken version, already reported
        try:
            new_list = load_trust_list(path)
        except (OSError, TrustListError) as exc:
            logger.warning("trust list %s not reloaded, keeping the previous list: %s", path, exc)
            self._failed = signature
            return False
        self._list = new_list
        self._signature = signature
        self._failed = None
        logger.info("trust list %s reloaded: %d domains", path, len(new_list))
        return True
