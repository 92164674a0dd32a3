"""Publication of our accounts' OpenPGP keys over HTTPS: Web Key Directory and HKP.

Mounted on the HTTPS port (``Runtime.http_routers``). Only the *current* key of each
non-disabled account of our domains is published, reduced to the account's own user ID
(``directory.keys.only_user_id``). Keys the operator imported for other operators' staff are
deliberately NOT served: each operator is authoritative for its own domains, and re-serving
copies would hand out stale keys after a change or a revocation at the source.

Web Key Directory (draft-koch-openpgp-webkey-service-19):

* §3.1: ``GET|HEAD /.well-known/openpgpkey/<domain>/hu/<hash>`` (advanced method) and
  ``/.well-known/openpgpkey/hu/<hash>`` (direct method, the domain being the Host of the
  request) answer the key in binary form, ``application/octet-stream``. ``?l=<local part>`` is
  optional; when given it must hash to ``<hash>`` (400 otherwise). Every response, errors
  included, carries ``Access-Control-Allow-Origin: *`` so that browser-based clients (webmails)
  can read it.
* §4.5: ``/.well-known/openpgpkey/[<domain>/]policy``: an empty policy file (no flags) for each
  of our domains, which tells clients that the domain runs a WKD.

When the Host of a direct request is an IP address (a test, a health check) and we serve exactly
one domain, that domain is meant.

HKP (draft-shaw-openpgp-hkp-00):

* §3.1.2.1 ``GET /pks/lookup?op=get&search=...``: the ASCII-armoured key(s),
  ``application/pgp-keys`` (§5.1 ``options=mr``; the armour is returned whether or not ``mr``
  is asked, there is no HTML flavour).
* §3.1.2.2 ``op=index``: always in the machine-readable format of §5.2
  (``info:1:<count>``, then one ``pub:`` line and its ``uid:`` lines per key), text/plain.
* §3.1.1 ``search``: an e-mail address (``alice@example.org`` or ``<alice@example.org>``,
  exact match) or ``0x`` followed by a v4/v6 fingerprint, a 16-digit key ID or (v4 only) an
  8-digit one (§3.1.1.1). Substring and name searches are not offered (400).
* §3.1.2.4: other operations (``vindex``, ``x-*``...) answer 501; key submission
  (``/pks/add``, §4) is not accepted here either (501).

Errors are JSON: ``{"error": "..."}``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pysequoia.packet import PacketPile, Tag

from directory.keys import KeyDirectory, LocalKey
from directory.wkd import WELL_KNOWN, Method, parse_wkd_path, wkd_hash
from openmss.crypto import pgp

if TYPE_CHECKING:
    from openmss.db.engine import Database
    from openmss.settings import Settings

__all__ = ["hkp_index", "publication_router"]

# draft-koch-openpgp-webkey-service §3.1 (cross-origin requests by browser-based clients).
CORS = {"Access-Control-Allow-Origin": "*"}

_HEX_SEARCH = re.compile(r"0[xX]([0-9a-fA-F]{8}|[0-9a-fA-F]{16}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=CORS)


# HKP machine-readable index (draft-shaw-openpgp-hkp-00 §5.2) -----------------------------------

# Curve OIDs (RFC 6637 §11, RFC 5639, draft-ietf-openpgp-rfc4880bis for the 25519 legacy OIDs,
# RFC 8410 for 448) and the key length GnuPG reports for them.
_CURVE_BITS = {
    "2a8648ce3d030107": 256,  # NIST P-256
    "2b81040022": 384,  # NIST P-384
    "2b81040023": 521,  # NIST P-521
    "2b2403030208010107": 256,  # brainpoolP256r1
    "2b240303020801010b": 384,  # brainpoolP384r1
    "2b240303020801010d": 512,  # brainpoolP512r1
    "2b06010401da470f01": 255,  # Ed25519 (legacy EdDSA)
    "2b060104019755010501": 255,  # Curve25519 (legacy ECDH)
    "2b6571": 448,  # Ed448
    "2b656f": 448,  # X448
}
# RFC 9580 §9.1: algorithms with a fixed key size.
_FIXED_BITS = {25: 255, 26: 448, 27: 255, 28: 448}  # X25519, X448, Ed25519, Ed448
_MPI_FIRST = {1, 2, 3, 16, 17, 20}  # RSA, Elgamal, DSA: the first MPI is the modulus / prime p
_CURVE_ALGOS = {18, 19, 22}  # ECDH, ECDSA, EdDSA (legacy): a curve OID comes first


def _primary_key_info(body: bytes) -> tuple[int, int | None, int]:
    """(algorithm, key length in bits or None, creation time) of a public key packet body:
    RFC 4880 §5.5.2 (v4: version, creation time, algorithm, key material) and RFC 9580 §5.5.2
    (v6, and LibrePGP v5: a four-octet length precedes the key material)."""
    version, created, algo = body[0], int.from_bytes(body[1:5], "big"), body[5]
    material = body[10:] if version in (5, 6) else body[6:]
    bits: int | None = None
    if algo in _FIXED_BITS:
        bits = _FIXED_BITS[algo]
    elif algo in _MPI_FIRST and len(material) >= 2:
        bits = int.from_bytes(material[:2], "big")
    elif algo in _CURVE_ALGOS and material:
        bits = _CURVE_BITS.get(material[1 : 1 + material[0]].hex())
    return algo, bits, created


def _hkp_escape(text: str) -> str:
    """§5.2: HTTP %-escaping of ':' and of anything that is not 7-bit printable; '%' itself too,
    so that the line can be decoded."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 0x20 <= byte < 0x7F and char not in ":%" else f"%{byte:02X}")
    return "".join(out)


def _timestamp(value: datetime | None) -> str:
    return str(int(value.timestamp())) if value is not None else ""


def _index_lines(public: bytes, now: datetime) -> list[str]:
    cert = pgp.Cert.from_bytes(public)
    fpr = pgp.fingerprint(cert)
    valid_uids = {str(uid) for uid in cert.user_ids}  # Sequoia leaves revoked user IDs out
    expiration = cert.expiration
    flags = ("r" if cert.is_revoked else "") + ("e" if expiration is not None and expiration <= now else "")
    pub = ""
    uids: list[tuple[str, datetime | None]] = []
    current: int | None = None  # the user ID whose signatures follow, if any
    for packet in PacketPile.from_bytes(public):
        tag = packet.tag
        if tag == Tag.PublicKey:
            algo, bits, created = _primary_key_info(packet.body)
            pub = f"pub:{fpr}:{algo}:{bits or ''}:{created}:{_timestamp(expiration)}:{flags}"
            current = None
        elif tag == Tag.UserID:
            uids.append((packet.user_id or "", None))
            current = len(uids) - 1
        elif tag == Tag.Signature:
            # A user ID's creation date is that of its latest self-signature.
            issuer = (packet.issuer_fingerprint or "").upper()
            key_id = (packet.issuer_key_id or "").upper()
            by_key_id = not issuer and len(key_id) == 16 and key_id in (fpr[-16:], fpr[:16])
            self_signed = issuer == fpr or by_key_id
            created_at = packet.signature_created
            if current is not None and self_signed and created_at is not None:
                text, latest = uids[current]
                if latest is None or created_at > latest:
                    uids[current] = (text, created_at)
        else:  # a subkey or a user attribute: the signatures that follow are theirs
            current = None
    lines = [pub]
    for text, created_at in uids:
        uid_flags = "" if text in valid_uids else "r"
        lines.append(f"uid:{_hkp_escape(text)}:{_timestamp(created_at)}::{uid_flags}")
    return lines


def hkp_index(keys: Sequence[bytes], now: datetime | None = None) -> str:
    """The machine-readable index (draft-shaw-openpgp-hkp-00 §5.2) of binary certificates."""
    now = now or datetime.now(UTC)
    lines = [f"info:1:{len(keys)}"]
    for public in keys:
        lines.extend(_index_lines(public, now))
    return "\n".join(lines) + "\n"


# Requests ------------------------------------------------------------------------------------


def _host_domain(request: Request, domains: Sequence[str]) -> str | None:
    """The domain a direct-method request is for: its Host without the port; when the Host is an
    IP address (or missing) and we serve a single domain, that one."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):  # [IPv6]:port
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = not host
    if is_ip:
        return domains[0] if len(domains) == 1 else None
    return host if host in domains else None


def publication_router(db: Database, settings: Settings) -> APIRouter:
    domains = list(settings.domains)
    directory = KeyDirectory(db, domains)
    router = APIRouter(tags=["key directory"])

    @router.api_route(f"{WELL_KNOWN}/{{rest:path}}", methods=["GET", "HEAD"])
    async def web_key_directory(
        request: Request,
        rest: str,
        local: Annotated[str | None, Query(alias="l", description="the local part, as typed")] = None,
    ) -> Response:
        """OpenPGP Web Key Directory (draft-koch-openpgp-webkey-service §3.1, §4.5):
        `<domain>/hu/<hash>` and `hu/<hash>` answer the binary key of the account whose local
        part hashes to `<hash>`; `<domain>/policy` and `policy` an empty policy file."""
        path = parse_wkd_path(f"{WELL_KNOWN}/{rest}")
        if path is None:
            return _error(404, "not a Web Key Directory path")
        if path.method is Method.DIRECT:
            domain = _host_domain(request, domains)
            if domain is None:
                return _error(404, "this server publishes no keys for that host")
        else:
            assert path.domain is not None
            domain = path.domain
            if domain not in domains:
                return _error(404, f"this server publishes no keys for {domain}")
        if path.hash is None:
            return Response(b"", media_type="text/plain", headers=CORS)
        if local is not None and wkd_hash(local) != path.hash:
            return _error(400, "the local part given in 'l' does not hash to the key requested")
        key = await directory.lookup_local(domain, path.hash, local=local)
        if key is None:
            return _error(404, "no key for this address")
        return Response(key.published(), media_type="application/octet-stream", headers=CORS)

    @router.get("/pks/lookup")
    async def hkp_lookup(
        op: str | None = None, search: str | None = None, options: str | None = None
    ) -> Response:
        """HKP look-up (draft-shaw-openpgp-hkp-00 §3): `op=get` answers the armoured key,
        `op=index` the machine-readable index (§5.2). `search` is an e-mail address or `0x`
        with a fingerprint or key ID. Only the keys of this server's accounts are published."""
        del options  # output is always the machine-readable form (§3.2.1.1 "mr")
        if not op:
            return _error(400, "the 'op' parameter is required: get or index")
        if op not in ("get", "index"):
            return _error(501, f"operation {op!r} is not implemented: use get or index")
        text = (search or "").strip()
        if not text:
            return _error(400, "the 'search' parameter is required")
        keys: list[LocalKey]
        hex_search = _HEX_SEARCH.fullmatch(text)
        if hex_search:
            keys = await directory.lookup_local_key_id(hex_search.group(1))
        elif "@" in text:
            address = text.removeprefix("<").removesuffix(">").strip()
            domain = address.rpartition("@")[2].lower()
            if domain not in domains:
                return _error(404, f"this server publishes only the keys of {', '.join(domains)}")
            found = await directory.lookup_local(domain, address)
            keys = [found] if found else []
        else:
            return _error(400, "search for an e-mail address or 0x followed by a fingerprint or a key ID")
        if not keys:
            return _error(404, "no key found")
        published = [key.published() for key in keys]
        if op == "get":
            return Response(
                pgp.armor_public(b"".join(published)), media_type="application/pgp-keys", headers=CORS
            )
        return Response(hkp_index(published), media_type="text/plain; charset=utf-8", headers=CORS)

    @router.post("/pks/add")
    async def hkp_add() -> Response:
        """Key submission (draft-shaw-openpgp-hkp-00 §4) is not accepted: accounts manage their
        keys through OpenMSS, other operators publish their own."""
        return _error(501, "key submission is not accepted by this server")

    return router
