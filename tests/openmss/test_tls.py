from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from directory.trust import certificate_dn, normalize_dn
from openmss.tls import (
    TlsFiles,
    client_context,
    create_ca,
    ensure_local_tls,
    issue_certificate,
    peer_certificate_der,
    server_context,
)

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def local_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls") / "certs"
    files, created = ensure_local_tls(folder, "mx.example.test", extra_names=["10.1.2.3", "alt.example.test"])
    assert created
    return files


@pytest.fixture(scope="module")
def client_cert(local_tls: TlsFiles) -> tuple[Path, Path]:
    folder = local_tls.ca_cert.parent
    cert, key = folder / "peer.pem", folder / "peer.key"
    issue_certificate(
        local_tls.ca_cert,
        folder / "ca.key",
        cert,
        key,
        "bus.peer.example",
        organization="Peer Operator",
        organizational_unit="318751275100020",
        country="FR",
    )
    return cert, key


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def test_files_and_permissions(local_tls: TlsFiles) -> None:
    folder = local_tls.ca_cert.parent
    assert local_tls == TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    for key_path in (local_tls.key, folder / "ca.key"):
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not list(folder.glob(".*.tmp"))


def test_ca_certificate(local_tls: TlsFiles) -> None:
    ca = _load(local_tls.ca_cert)
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "OpenMSS local CA mx.example.test"
    )
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "OpenMSS"
    pub = ca.public_key()
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 3072
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert 3649 <= lifetime.days <= 3651


def test_server_certificate(local_tls: TlsFiles) -> None:
    ca = _load(local_tls.ca_cert)
    cert = _load(local_tls.cert)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=mx.example.test,O=OpenMSS"
    pub = cert.public_key()
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"mx.example.test", "localhost", "alt.example.test"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 729 <= lifetime.days <= 731


def test_idempotent(local_tls: TlsFiles) -> None:
    before = {p: p.read_bytes() for p in (local_tls.ca_cert, local_tls.cert, local_tls.key)}
    files, created = ensure_local_tls(local_tls.ca_cert.parent, "mx.example.test")
    assert not created
    assert files == local_tls
    assert {p: p.read_bytes() for p in before} == before


def test_reissue_keeps_existing_ca(tmp_path: Path) -> None:
    files, created = ensure_local_tls(tmp_path, "a.example.test")
    assert created
    ca_before = files.ca_cert.read_bytes()
    files.cert.unlink()
    files2, created2 = ensure_local_tls(tmp_path, "a.example.test")
    assert created2 and files2 == files
    assert files.ca_cert.read_bytes() == ca_before
    _load(files.cert).verify_directly_issued_by(_load(files.ca_cert))


# ---------------------------------------------------------------------------------------------
# Handshakes
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    version: str | None = None
    cipher: str | None = None
    server_saw_cert: bytes | None = None
    error: BaseException | None = None
    server_handler_ran: bool = False


async def _exchange(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> Outcome:
    """Connect, let the server greet, and report what both ends saw."""
    seen: asyncio.Future[tuple[bytes | None, str | None, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        cipher = ssl_object.cipher() if ssl_object is not None else None
        if not seen.done():
            seen.set_result(
                (
                    peer_certificate_der(ssl_object),
                    ssl_object.version() if ssl_object is not None else None,
                    cipher[0] if cipher else None,
                )
            )
        try:
            writer.write(b"220 ok\r\n")
            await writer.drain()
            await reader.read(100)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname),
                TIMEOUT,
            )
            # With TLS 1.3 the server verifies the client certificate after the client considers
            # the handshake finished: a refusal shows up on the first read.
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
            return Outcome(ok=False, error=exc, server_handler_ran=seen.done())
        if line != b"220 ok\r\n":
            return Outcome(ok=False, server_handler_ran=seen.done())
        der, version, cipher = await asyncio.wait_for(seen, TIMEOUT)
        return Outcome(ok=True, version=version, cipher=cipher, server_saw_cert=der, server_handler_ran=True)
    finally:
        if writer is not None:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_handshake_default(local_tls: TlsFiles) -> None:
    outcome = await _exchange(
        server_context(local_tls.cert, local_tls.key), client_context(local_tls.ca_cert)
    )
    assert outcome.ok, outcome.error
    assert outcome.version in ("TLSv1.2", "TLSv1.3")
    assert outcome.server_saw_cert is None


async def test_handshake_by_ip_and_hostname_check(local_tls: TlsFiles) -> None:
    server = server_context(local_tls.cert, local_tls.key)
    assert (await _exchange(server, client_context(local_tls.ca_cert), "127.0.0.1")).ok
    wrong = await _exchange(server, client_context(local_tls.ca_cert), "other.example.test")
    assert not wrong.ok
    unchecked = client_context(local_tls.ca_cert, verify_hostname=False)
    assert (await _exchange(server, unchecked, "other.example.test")).ok


async def test_untrusted_server_refused(local_tls: TlsFiles, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    create_ca(other_ca, tmp_path / "other-ca.key", "Other CA")
    outcome = await _exchange(server_context(local_tls.cert, local_tls.key), client_context(other_ca))
    assert not outcome.ok
    assert isinstance(outcome.error, ssl.SSLCertVerificationError)


async def test_tls12_aead_suite(local_tls: TlsFiles) -> None:
    client = client_context(local_tls.ca_cert)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    outcome = await _exchange(server_context(local_tls.cert, local_tls.key), client)
    assert outcome.ok, outcome.error
    assert outcome.version == "TLSv1.2"
    assert outcome.cipher is not None and outcome.cipher.startswith("ECDHE-")
    assert "GCM" in outcome.cipher or "CHACHA20" in outcome.cipher


@pytest.mark.parametrize("cipher", ["AES128-SHA256", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA256"])
async def test_tls12_weak_suites_refused(local_tls: TlsFiles, cipher: str) -> None:
    """Static-RSA key exchange and CBC suites are not offered by the server."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(local_tls.ca_cert)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(cipher)
    outcome = await _exchange(server_context(local_tls.cert, local_tls.key), client)
    assert not outcome.ok
    assert not outcome.server_handler_ran
    # asyncio reports the server's handshake_failure alert either as SSLError or as a reset.
    assert isinstance(outcome.error, ssl.SSLError | ConnectionError)


async def test_tls11_refused(local_tls: TlsFiles) -> None:
    def legacy(ctx: ssl.SSLContext) -> ssl.SSLContext:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except ssl.SSLError:
            pytest.skip("OpenSSL cannot lower the security level for TLS 1.1")
        return ctx

    client = legacy(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.maximum_version = ssl.TLSVersion.TLSv1_1

    # Control: a permissive server does speak TLS 1.1 with this client, so the refusal below
    # comes from our server's policy and not from the client being unable to offer TLS 1.1.
    permissive = legacy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    permissive.load_cert_chain(local_tls.cert, local_tls.key)
    control = await _exchange(permissive, client)
    if not control.ok:
        pytest.skip(f"this OpenSSL build cannot negotiate TLS 1.1 at all ({control.error!r})")
    assert control.version == "TLSv1.1"

    outcome = await _exchange(server_context(local_tls.cert, local_tls.key), client)
    assert not outcome.ok
    assert not outcome.server_handler_ran


# ---------------------------------------------------------------------------------------------
# Client certificates
# ---------------------------------------------------------------------------------------------


async def test_optional_client_cert_absent(local_tls: TlsFiles) -> None:
    server = server_context(local_tls.cert, local_tls.key, client_ca=local_tls.ca_cert)
    assert server.verify_mode == ssl.CERT_OPTIONAL
    outcome = await _exchange(server, client_context(local_tls.ca_cert))
    assert outcome.ok, outcome.error
    assert outcome.server_saw_cert is None


async def test_optional_client_cert_present(local_tls: TlsFiles, client_cert: tuple[Path, Path]) -> None:
    server = server_context(local_tls.cert, local_tls.key, client_ca=local_tls.ca_cert)
    cert, key = client_cert
    outcome = await _exchange(server, client_context(local_tls.ca_cert, cert, key))
    assert outcome.ok, outcome.error
    assert outcome.server_saw_cert is not None
    assert outcome.server_saw_cert == _load(cert).public_bytes(Encoding.DER)
    assert certificate_dn(outcome.server_saw_cert) == normalize_dn(
        "CN=bus.peer.example,OU=318751275100020,O=Peer Operator,C=FR"
    )


async def test_server_certificate_works_as_client_certificate(local_tls: TlsFiles) -> None:
    """Our own server certificate authenticates us to peers (clientAuth EKU)."""
    server = server_context(
        local_tls.cert, local_tls.key, client_ca=local_tls.ca_cert, require_client_cert=True
    )
    outcome = await _exchange(server, client_context(local_tls.ca_cert, local_tls.cert, local_tls.key))
    assert outcome.ok, outcome.error
    assert outcome.server_saw_cert is not None
    assert certificate_dn(outcome.server_saw_cert) == normalize_dn("O=OpenMSS, CN=mx.example.test")


async def test_required_client_cert_absent(local_tls: TlsFiles) -> None:
    server = server_context(
        local_tls.cert, local_tls.key, client_ca=local_tls.ca_cert, require_client_cert=True
    )
    assert server.verify_mode == ssl.CERT_REQUIRED
    outcome = await _exchange(server, client_context(local_tls.ca_cert))
    assert not outcome.ok


async def test_client_cert_from_untrusted_ca_refused(local_tls: TlsFiles, tmp_path: Path) -> None:
    ca, ca_key = tmp_path / "rogue-ca.pem", tmp_path / "rogue-ca.key"
    create_ca(ca, ca_key, "Rogue CA")
    cert, key = tmp_path / "rogue.pem", tmp_path / "rogue.key"
    issue_certificate(ca, ca_key, cert, key, "bus.peer.example", organization="Peer Operator")
    server = server_context(local_tls.cert, local_tls.key, client_ca=local_tls.ca_cert)
    outcome = await _exchange(server, client_context(local_tls.ca_cert, cert, key))
    assert not outcome.ok


def test_peer_certificate_der_none() -> None:
    assert peer_certificate_der(None) is None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x.example")
    assert peer_certificate_der(obj) is None  # handshake not done


def test_context_arguments(local_tls: TlsFiles) -> None:
    with pytest.raises(ValueError):
        server_context(local_tls.cert, local_tls.key, require_client_cert=True)
    with pytest.raises(ValueError):
        client_context(local_tls.ca_cert, key=local_tls.key)
    ctx = server_context(local_tls.cert, local_tls.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all(name.startswith("ECDHE-") for name in tls12)
    assert all("GCM" in name or "CHACHA20" in name for name in tls12)
    client = client_context(None)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
