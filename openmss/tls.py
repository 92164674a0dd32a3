"""TLS material and contexts for OpenMSS.

Two concerns live here:

* generating a local certificate authority and a server certificate on first start, so that a
  fresh installation speaks TLS immediately (operators replace these with IGC-Santé certificates
  for production), and issuing further certificates from that CA (tests, peer simulations);
* building :class:`ssl.SSLContext` objects with the policy the MSSanté trust space requires:
  TLS 1.2 minimum and, for TLS 1.2, only forward-secret AEAD suites (ECDHE with AES-GCM or
  ChaCha20-Poly1305).  TLS 1.3 suites are all AEAD and keep OpenSSL's defaults.

The server certificate carries both the ``serverAuth`` and ``clientAuth`` extended key usages
(RFC 5280 §4.2.1.12): the same certificate authenticates this server when it relays mail *to*
another operator, and OpenSSL checks the ``clientAuth`` purpose on certificates presented by
clients.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "TLS12_CIPHERS",
    "TlsFiles",
    "client_context",
    "create_ca",
    "ensure_local_tls",
    "issue_certificate",
    "peer_certificate_der",
    "server_context",
]

#: OpenSSL cipher string for TLS 1.2: ECDHE key exchange (forward secrecy) with an AEAD cipher.
#: Static-RSA key exchange and CBC suites are excluded.  TLS 1.3 suites are configured separately
#: by OpenSSL (``SSL_CTX_set_ciphersuites``) and are not affected by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"
SERVER_CERT_NAME = "server.pem"
SERVER_KEY_NAME = "server.key"

_CA_KEY_BITS = 3072
_LEAF_KEY_BITS = 2048
_CA_VALIDITY_DAYS = 3650
_LEAF_VALIDITY_DAYS = 730
# Backdate notBefore a little so that peers with a slightly late clock accept a fresh certificate.
_BACKDATE = dt.timedelta(minutes=5)
# X.520 upper bound for commonName (RFC 5280 Appendix A, ub-common-name = 64).
_CN_MAX = 64


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a CA certificate and of a certificate/key pair issued by it (all PEM)."""

    ca_cert: Path
    cert: Path
    key: Path


# --------------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    """Make a rename in *directory* durable (best effort; not supported everywhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write *data* to *path* atomically: exclusive temp file with *mode*, fsync, rename.

    The temporary file is created with ``O_CREAT|O_EXCL`` and its final mode from the start, so
    private keys are never readable by others, not even briefly.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fd = -1  # now owned by fh
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _write_key(path: Path, key: CertificateIssuerPrivateKeyTypes) -> None:
    _write_atomic(path, _key_pem(key), 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _load_ca(
    ca_cert_path: Path, ca_key_path: Path
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(
        key,
        rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey,
    ):
        raise ValueError(f"{ca_key_path}: unsupported CA key type {type(key).__name__}")
    if key.public_key() != ca_cert.public_key():
        raise ValueError(f"{ca_key_path} does not match the certificate in {ca_cert_path}")
    return ca_cert, key


# --------------------------------------------------------------------------------------------
# Certificate building
# --------------------------------------------------------------------------------------------


def _sign_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # EdDSA signs the message itself; cryptography wants no hash algorithm for it.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _cn(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("common name must not be empty")
    return value[:_CN_MAX]


def _name(
    common_name: str,
    organization: str | None,
    organizational_unit: str | None = None,
    country: str | None = None,
) -> x509.Name:
    attrs: list[x509.NameAttribute[str]] = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if organizational_unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, _cn(common_name)))
    return x509.Name(attrs)


def _dns_a_label(name: str) -> str:
    """DNS name as stored in a dNSName SAN: ASCII, A-labels for IDNs (RFC 5280 §4.2.1.6)."""
    name = name.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty DNS name")
    if name.isascii():
        return name
    return ".".join(
        label if label.isascii() else label.encode("idna").decode("ascii") for label in name.split(".")
    )


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    """DNS names and IP literals (``[::1]`` accepted) as deduplicated SAN entries, order kept."""
    out: list[x509.GeneralName] = []
    seen: set[x509.GeneralName] = set()
    for raw in names:
        text = raw.strip()
        if not text:
            continue
        entry: x509.GeneralName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
        except ValueError:
            entry = x509.DNSName(_dns_a_label(text))
        if entry not in seen:
            seen.add(entry)
            out.append(entry)
    return out


def _build_ca(
    common_name: str, organization: str | None, validity_days: int
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=_CA_KEY_BITS)
    name = _name(common_name, organization)
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=validity_days))
        # RFC 5280 §4.2.1.9: basicConstraints MUST be critical in CA certificates.  pathLen 0:
        # this local CA only issues end-entity certificates.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _build_leaf(
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    san: list[x509.GeneralName],
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=_LEAF_KEY_BITS)
    public = key.public_key()
    now = dt.datetime.now(dt.UTC)
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + dt.timedelta(days=_LEAF_VALIDITY_DAYS)
    # The end-entity validity must not outlast the CA (RFC 5280 §6.1.3 checks each certificate;
    # a leaf that outlives its issuer becomes unusable when the CA expires anyway).
    end = min(end, ca_cert.not_valid_after_utc)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(aki, critical=False)
    )
    if san:
        # RFC 5280 §4.2.1.6: SAN is critical only when the subject is empty; ours never is.
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, _sign_hash(ca_key)), key


# --------------------------------------------------------------------------------------------
# Public API: files
# --------------------------------------------------------------------------------------------


def create_ca(
    cert_path: Path,
    key_path: Path,
    common_name: str,
    organization: str = "OpenMSS",
    *,
    validity_days: int = _CA_VALIDITY_DAYS,
) -> None:
    """Create a self-signed CA (RSA 3072) and write its certificate and key (mode 0600)."""
    cert, key = _build_ca(common_name, organization, validity_days)
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def issue_certificate(
    ca_cert_path: Path,
    ca_key_path: Path,
    out_cert: Path,
    out_key: Path,
    common_name: str,
    organization: str = "OpenMSS",
    dns_names: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    organizational_unit: str | None = None,
    country: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> None:
    """Issue a certificate usable as TLS server *and* client from an existing CA.

    The subject is ``C=<country>, O=<organization>, OU=<organizational_unit>, CN=<common_name>``
    (empty parts omitted).  *not_before*/*not_after* default to "now - 5 min" and "now + 2 years"
    and exist so that tests can produce expired or not-yet-valid certificates.
    """
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    subject = _name(common_name, organization or None, organizational_unit, country)
    san = _san_entries([*dns_names, *ips])
    cert, key = _build_leaf(ca_cert, ca_key, subject, san, not_before=not_before, not_after=not_after)
    _write_key(out_key, key)
    _write_cert(out_cert, cert)


def ensure_local_tls(folder: Path, hostname: str, extra_names: Sequence[str] = ()) -> tuple[TlsFiles, bool]:
    """Return the local CA and server certificate in *folder*, creating them when missing.

    Files: ``ca.pem``, ``ca.key`` (0600), ``server.pem``, ``server.key`` (0600).  When the three
    files ``ca.pem``, ``server.pem`` and ``server.key`` exist they are returned untouched and the
    boolean is False.  Otherwise a server certificate is (re)issued — from the existing CA if both
    ``ca.pem`` and ``ca.key`` are present, so that peers which already trust it keep working,
    else from a newly created CA — and the boolean is True.
    """
    hostname = hostname.strip().rstrip(".")
    if not hostname:
        raise ValueError("hostname must not be empty")
    files = TlsFiles(
        ca_cert=folder / CA_CERT_NAME,
        cert=folder / SERVER_CERT_NAME,
        key=folder / SERVER_KEY_NAME,
    )
    if files.ca_cert.is_file() and files.cert.is_file() and files.key.is_file():
        return files, False

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key_path = folder / CA_KEY_NAME
    ca_cert: x509.Certificate
    ca_key: CertificateIssuerPrivateKeyTypes
    if files.ca_cert.is_file() and ca_key_path.is_file():
        ca_cert, ca_key = _load_ca(files.ca_cert, ca_key_path)
    else:
        ca_cert, ca_key = _build_ca(f"OpenMSS local CA {hostname}", "OpenMSS", _CA_VALIDITY_DAYS)
        _write_key(ca_key_path, ca_key)
        _write_cert(files.ca_cert, ca_cert)

    san = _san_entries([hostname, "localhost", "127.0.0.1", "::1", *extra_names])
    leaf, leaf_key = _build_leaf(ca_cert, ca_key, _name(hostname, "OpenMSS"), san)
    # Key before certificate: the certificate's presence marks a complete set.
    _write_key(files.key, leaf_key)
    _write_cert(files.cert, leaf)
    return files, True


# --------------------------------------------------------------------------------------------
# Public API: SSL contexts
# --------------------------------------------------------------------------------------------


def _apply_policy(ctx: ssl.SSLContext) -> None:
    # Référentiel #2 of the MSSanté trust space: TLS 1.2 minimum.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    # CRIME (compression) and client-initiated renegotiation are refused; TLS 1.3 has neither.
    ctx.options |= ssl.OP_NO_COMPRESSION
    no_reneg: int | None = getattr(ssl, "OP_NO_RENEGOTIATION", None)
    if no_reneg is not None:
        ctx.options |= no_reneg


def _load_verify(ctx: ssl.SSLContext, ca: Path) -> None:
    if ca.is_dir():
        ctx.load_verify_locations(capath=str(ca))
    else:
        ctx.load_verify_locations(cafile=str(ca))


def server_context(
    cert: Path,
    key: Path,
    *,
    client_ca: Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """Server-side context with the OpenMSS TLS policy.

    With *client_ca*, clients are asked for a certificate which, when presented, must chain to
    *client_ca* (a certificate that does not verify aborts the handshake).  With
    ``require_client_cert=False`` (``CERT_OPTIONAL``) a client may present none; the inbound
    relay port uses that so that it can answer with an explicit SMTP refusal instead of an
    opaque handshake failure.
    """
    if require_client_cert and client_ca is None:
        raise ValueError("require_client_cert needs client_ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(ctx)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if client_ca is not None:
        _load_verify(ctx, client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    verify_hostname: bool = True,
) -> ssl.SSLContext:
    """Client-side context: server certificate always verified (against *ca*, or the system
    trust store when None), host name checked unless *verify_hostname* is False, and an optional
    client certificate (*cert*, with *key* unless the key is in the same PEM file)."""
    if key is not None and cert is None:
        raise ValueError("a client key needs a client certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_policy(ctx)
    ctx.check_hostname = verify_hostname  # must be changed before verify_mode
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_verify(ctx, ca)
    if cert is not None:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key) if key is not None else None)
    return ctx


def peer_certificate_der(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """DER of the certificate the peer presented, or None (no TLS, no certificate, or handshake
    not complete).  When the context verifies peers, a returned certificate has been verified."""
    if ssl_object is None:
        return None
    try:
        der = ssl_object.getpeercert(binary_form=True)
    except (ValueError, OSError):
        return None
    return der or None
