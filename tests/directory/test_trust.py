from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from directory.trust import (
    TrustedDomain,
    TrustList,
    TrustListError,
    TrustListSource,
    certificate_dn,
    load_trust_list,
    normalize_dn,
    normalize_domain,
    parse_allow_list_xml,
    parse_local_trust_file,
)
from openmss.tls import create_ca, issue_certificate

BUS_DN = "CN=bus.mssante.fr,OU=318751275100020,O=ASIP-SANTE,ST=Paris (75),C=FR"
BUS2_DN = "CN=bus2.mssante.fr,OU=318751275100020,O=ASIP-SANTE,ST=Paris (75),C=FR"
HOSP_DN = "CN=mail.chu-exemple.fr,OU=0002 267500452,O=CHU EXEMPLE,C=FR"

ALLOW_LIST = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
  <DateDeGeneration>2024-05-02T03:00:12+02:00</DateDeGeneration>
  <ListeDomaines>
    <Domaine>
      <Nom>medecin.mssante.fr</Nom>
      <Description>Messagerie des médecins — opérateur national</Description>
      <DNCertificatOperateur>{BUS_DN}</DNCertificatOperateur>
      <ResponsableContact>responsable@example.fr</ResponsableContact>
      <SupportContact>support@example.fr</SupportContact>
      <DateMAJ>2023-01-10</DateMAJ>
    </Domaine>
    <Domaine>
      <Nom>medecin.mssante.fr</Nom>
      <Description>Messagerie des médecins — opérateur national</Description>
      <DNCertificatOperateur>{BUS2_DN}</DNCertificatOperateur>
      <ResponsableContact>responsable@example.fr</ResponsableContact>
      <SupportContact>support@example.fr</SupportContact>
      <DateMAJ>2023-01-10</DateMAJ>
    </Domaine>
    <Domaine>
      <Nom>pharmacien.mssante.fr</Nom>
      <Description>Pharmaciens</Description>
      <DNCertificatOperateur>{BUS_DN}</DNCertificatOperateur>
    </Domaine>
    <Domaine>
      <Nom>CHU-Exemple.fr</Nom>
      <Description>Centre hospitalier universitaire d'Exemple, Île-de-France</Description>
      <DNCertificatOperateur>/C=FR/O=CHU EXEMPLE/OU=0002 267500452/CN=mail.chu-exemple.fr
      </DNCertificatOperateur>
    </Domaine>
    <Domaine>
      <Description>Entrée sans nom</Description>
      <DNCertificatOperateur>CN=nameless.example,O=X,C=FR</DNCertificatOperateur>
    </Domaine>
  </ListeDomaines>
</ListeBlancheMSSante>
""".encode()


# ---------------------------------------------------------------------------------------------
# DN normalisation
# ---------------------------------------------------------------------------------------------


def test_dn_order_case_spacing_independent() -> None:
    reference = normalize_dn(BUS_DN)
    assert reference == (
        ("C", "fr"),
        ("CN", "bus.mssante.fr"),
        ("O", "asip-sante"),
        ("OU", "318751275100020"),
        ("ST", "paris (75)"),
    )
    assert (
        normalize_dn("C=FR, ST=Paris (75), O=ASIP-SANTE, OU=318751275100020, CN=bus.mssante.fr") == reference
    )
    assert (
        normalize_dn("c = fr ,  s=PARIS   (75); o=asip-sante,ou=318751275100020 ,cn=BUS.MSSANTE.FR")
        == reference
    )
    assert normalize_dn("/C=FR/ST=Paris (75)/O=ASIP-SANTE/OU=318751275100020/CN=bus.mssante.fr") == reference
    assert (
        normalize_dn("2.5.4.3=bus.mssante.fr,OU=318751275100020,O=ASIP-SANTE,ST=Paris (75),C=FR") == reference
    )
    assert normalize_dn(BUS2_DN) != reference


def test_dn_attribute_aliases() -> None:
    assert normalize_dn("EMAILADDRESS=a@b.fr,CN=x") == normalize_dn("E=a@b.fr,CN=x")
    assert normalize_dn("1.2.840.113549.1.9.1=a@b.fr,CN=x") == normalize_dn("emailAddress=A@B.fr,cn=x")
    assert normalize_dn("serialNumber=123,CN=x") == normalize_dn("2.5.4.5=123,CN=x")
    assert normalize_dn("S=Paris,L=Paris,CN=x") == normalize_dn("ST=Paris,L=Paris,CN=x")
    assert normalize_dn("DC=fr,DC=example,STREET=1 rue X,CN=x") == (
        ("CN", "x"),
        ("DC", "example"),
        ("DC", "fr"),
        ("STREET", "1 rue x"),
    )


def test_dn_escapes_and_quotes() -> None:
    expected = (("CN", "bus.example"), ("O", "société, inc."))
    assert normalize_dn(r"CN=bus.example,O=Société\, Inc.") == expected
    assert normalize_dn(r"CN=bus.example,O=Soci\C3\A9t\C3\A9\2C Inc.") == expected
    assert normalize_dn('CN=bus.example,O="Société, Inc."') == expected
    assert normalize_dn(r"/O=Soci\xC3\xA9t\xC3\xA9, Inc./CN=bus.example") == expected
    # An unescaped comma not followed by "type=" stays in the value.
    assert normalize_dn("CN=bus.example,O=Société, Inc.") == expected
    assert normalize_dn(r"CN=a\+b") == (("CN", "a+b"),)
    assert normalize_dn("CN=#0C03616263") == (("CN", "abc"),)


def test_dn_multivalued_rdn_and_empty() -> None:
    assert normalize_dn("CN=x+UID=42,O=y") == normalize_dn("O=y,UID=42,CN=x")
    assert normalize_dn("") == ()
    assert normalize_dn("   ") == ()


@pytest.mark.parametrize(
    "bad", ["CN", "CN=x,", "=x", "CN=a\\", 'CN="unterminated', "C N=x", 'CN="a" b', r"CN=\C3\28"]
)
def test_dn_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_dn(bad)


# ---------------------------------------------------------------------------------------------
# Domains and the TrustList object
# ---------------------------------------------------------------------------------------------


def test_normalize_domain() -> None:
    assert normalize_domain(" Medecin.MSSante.fr. ") == "medecin.mssante.fr"
    assert normalize_domain("hôpital.example") == "xn--hpital-ixa.example"
    for bad in ("", "a..b", "-a.fr", "a b.fr", "user@x.fr", "x" * 64 + ".fr"):
        with pytest.raises(ValueError):
            normalize_domain(bad)


def test_trust_list_lookup_and_merge() -> None:
    dn = normalize_dn(BUS_DN)
    tl = TrustList(
        [
            TrustedDomain("Medecin.MSSante.fr.", frozenset({dn})),
            TrustedDomain("medecin.mssante.fr", frozenset({normalize_dn(BUS2_DN)}), "médecins"),
            TrustedDomain("hôpital.example", frozenset({normalize_dn(HOSP_DN)})),
        ]
    )
    assert len(tl) == 2
    assert tl.domains() == ["medecin.mssante.fr", "xn--hpital-ixa.example"]
    assert tl.is_trusted_domain("MEDECIN.mssante.FR.")
    assert tl.is_trusted_domain("HÔPITAL.example")
    assert tl.is_trusted_domain("xn--hpital-ixa.example")
    assert "medecin.mssante.fr" in tl
    assert not tl.is_trusted_domain("mssante.fr")
    assert not tl.is_trusted_domain("not a domain")
    assert tl.dns_for("medecin.mssante.fr") == {dn, normalize_dn(BUS2_DN)}
    assert tl.dns_for("unknown.example") == frozenset()
    entry = tl.get("medecin.mssante.fr")
    assert entry is not None and entry.description == "médecins"

    other = TrustList([TrustedDomain("medecin.mssante.fr", frozenset({normalize_dn(HOSP_DN)}))])
    merged = tl.merge(other)
    assert len(merged) == 2 and len(tl) == 2
    assert len(merged.dns_for("medecin.mssante.fr")) == 3
    assert len(tl.dns_for("medecin.mssante.fr")) == 2
    assert len(TrustList()) == 0 and TrustList.empty().domains() == []


# ---------------------------------------------------------------------------------------------
# XML allow-list
# ---------------------------------------------------------------------------------------------


def test_parse_allow_list_xml(caplog: pytest.LogCaptureFixture) -> None:
    tl = parse_allow_list_xml(ALLOW_LIST)
    assert tl.domains() == ["chu-exemple.fr", "medecin.mssante.fr", "pharmacien.mssante.fr"]
    assert tl.generated_at == "2024-05-02T03:00:12+02:00"
    assert tl.dns_for("medecin.mssante.fr") == {normalize_dn(BUS_DN), normalize_dn(BUS2_DN)}
    assert tl.dns_for("chu-exemple.fr") == {normalize_dn(HOSP_DN)}
    entry = tl.get("medecin.mssante.fr")
    assert entry is not None
    assert entry.description == "Messagerie des médecins — opérateur national"
    chu = tl.get("CHU-exemple.fr")
    assert chu is not None and "Île-de-France" in chu.description
    assert not tl.is_trusted_domain("nameless.example")


def test_parse_allow_list_without_namespace() -> None:
    data = (
        b"<ListeBlancheMSSante><ListeDomaines><Domaine><Nom>a.example</Nom>"
        b"<DNCertificatOperateur>CN=a,O=A</DNCertificatOperateur>"
        b"<DNCertificatOperateur>CN=b,O=A</DNCertificatOperateur>"
        b"</Domaine></ListeDomaines></ListeBlancheMSSante>"
    )
    tl = parse_allow_list_xml(data)
    assert tl.domains() == ["a.example"]
    assert tl.dns_for("a.example") == {normalize_dn("CN=a,O=A"), normalize_dn("CN=b,O=A")}


def test_parse_allow_list_skips_bad_entries(caplog: pytest.LogCaptureFixture) -> None:
    data = (
        b"<ListeBlancheMSSante><ListeDomaines>"
        b"<Domaine><Nom>bad domain!</Nom><DNCertificatOperateur>CN=a</DNCertificatOperateur></Domaine>"
        b"<Domaine><Nom>ok.example</Nom><DNCertificatOperateur>CN=a,</DNCertificatOperateur>"
        b"<DNCertificatOperateur>CN=b</DNCertificatOperateur></Domaine>"
        b"</ListeDomaines></ListeBlancheMSSante>"
    )
    with caplog.at_level(logging.WARNING, logger="directory.trust"):
        tl = parse_allow_list_xml(data)
    assert tl.domains() == ["ok.example"]
    assert tl.dns_for("ok.example") == {(("CN", "b"),)}
    assert "bad domain!" in caplog.text


def test_allow_list_wrong_root() -> None:
    with pytest.raises(TrustListError, match="root element"):
        parse_allow_list_xml(b"<Annuaire><Domaine><Nom>a.fr</Nom></Domaine></Annuaire>")


@pytest.mark.parametrize("data", [b"", b"<ListeBlancheMSSante>", b"<a><b></a>", b"\xff\xfe<x/>"])
def test_allow_list_malformed(data: bytes) -> None:
    with pytest.raises(TrustListError):
        parse_allow_list_xml(data)


def test_allow_list_billion_laughs() -> None:
    entities = ['<!ENTITY lol "lol">']
    for i in range(1, 10):
        previous = f"&lol{i - 1};" if i > 1 else "&lol;"
        entities.append(f'<!ENTITY lol{i} "{previous * 10}">')
    payload = (
        '<?xml version="1.0"?>\n<!DOCTYPE ListeBlancheMSSante [\n'
        + "\n".join(entities)
        + "\n]>\n<ListeBlancheMSSante><DateDeGeneration>&lol9;</DateDeGeneration></ListeBlancheMSSante>"
    ).encode()
    started = time.monotonic()
    with pytest.raises(TrustListError):
        parse_allow_list_xml(payload)
    assert time.monotonic() - started < 5


def test_allow_list_external_entity(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    payload = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<ListeBlancheMSSante><DateDeGeneration>&x;</DateDeGeneration></ListeBlancheMSSante>"
    ).encode()
    with pytest.raises(TrustListError):
        parse_allow_list_xml(payload)


def test_allow_list_large() -> None:
    parts = [b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><ListeDomaines>']
    for i in range(6554):
        parts.append(
            f"<Domaine><Nom>d{i % 5002}.example.fr</Nom><Description>op {i}</Description>"
            f"<DNCertificatOperateur>CN=mx{i % 7}.op.fr,O=Op {i % 7},C=FR</DNCertificatOperateur>"
            f"</Domaine>".encode()
        )
    parts.append(b"</ListeDomaines></ListeBlancheMSSante>")
    tl = parse_allow_list_xml(b"".join(parts))
    assert len(tl) == 5002


# ---------------------------------------------------------------------------------------------
# Local format and loading
# ---------------------------------------------------------------------------------------------


def test_local_format() -> None:
    text = f"""
# local peers
medecin.mssante.fr | {BUS_DN}
medecin.mssante.fr|/C=FR/O=ASIP-SANTE/CN=bus3.mssante.fr

   # indented comment
labo.example | CN=smtp.labo.example, O=Labo | Exemple, C=FR
"""
    tl = parse_local_trust_file(text)
    assert tl.domains() == ["labo.example", "medecin.mssante.fr"]
    assert tl.dns_for("medecin.mssante.fr") == {
        normalize_dn(BUS_DN),
        normalize_dn("CN=bus3.mssante.fr,O=ASIP-SANTE,C=FR"),
    }
    assert tl.dns_for("labo.example") == {(("C", "fr"), ("CN", "smtp.labo.example"), ("O", "labo | exemple"))}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a.example | CN=a\n\nb.example\n", 3),
        ("# c\nb.example |   \n", 2),
        ("a.example | CN=a\nbad domain | CN=b\n", 2),
        ("a.example | CN=a\nb.example | CN\n", 2),
    ],
)
def test_local_format_errors(text: str, line: int) -> None:
    with pytest.raises(TrustListError, match=rf"^line {line}:"):
        parse_local_trust_file(text)


def test_load_trust_list_sniffing(tmp_path: Path) -> None:
    xml_path = tmp_path / "liste.xml"
    xml_path.write_bytes(b"\xef\xbb\xbf\n  " + ALLOW_LIST)
    assert len(load_trust_list(xml_path)) == 3
    local = tmp_path / "trust.txt"
    local.write_text("\ufeffa.example | CN=a,O=A\n", encoding="utf-8")
    assert load_trust_list(local).domains() == ["a.example"]
    local.write_text("<not xml", encoding="utf-8")
    with pytest.raises(TrustListError, match=str(local)):
        load_trust_list(local)
    with pytest.raises(OSError):
        load_trust_list(tmp_path / "missing.xml")


# ---------------------------------------------------------------------------------------------
# TrustListSource
# ---------------------------------------------------------------------------------------------


def _bump_mtime(path: Path, seconds: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_source_reloads_on_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "trust.txt"
    path.write_text("a.example | CN=a\n")
    source = TrustListSource(path, check_interval=0)
    assert source.current().domains() == ["a.example"]
    first = source.current()
    assert source.current() is first  # unchanged file: same object, no reparse

    path.write_text("b.example | CN=b\n")
    _bump_mtime(path, 1)
    assert source.current().domains() == ["b.example"]

    # A broken replacement keeps the previous list and logs a warning.
    path.write_text("c.example\n")
    _bump_mtime(path, 2)
    with caplog.at_level(logging.WARNING, logger="directory.trust"):
        assert source.current().domains() == ["b.example"]
        assert source.current().domains() == ["b.example"]
    assert "line 1" in caplog.text
    assert sum("not reloaded" in r.getMessage() for r in caplog.records) == 1

    # Atomic replacement, as an operator would do it.
    tmp = tmp_path / "trust.new"
    tmp.write_bytes(ALLOW_LIST)
    os.replace(tmp, path)
    _bump_mtime(path, 3)
    assert len(source.current()) == 3

    # The file disappearing keeps the list too.
    path.unlink()
    assert len(source.current()) == 3


def test_source_check_interval(tmp_path: Path) -> None:
    now = [100.0]
    path = tmp_path / "trust.txt"
    path.write_text("a.example | CN=a\n")
    source = TrustListSource(path, check_interval=2.0, clock=lambda: now[0])
    path.write_text("b.example | CN=b\n")
    _bump_mtime(path, 1)
    now[0] += 1.0
    assert source.current().domains() == ["a.example"]
    now[0] += 1.5
    assert source.current().domains() == ["b.example"]


def test_source_initial_load_errors(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TrustListSource(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("nodn.example\n")
    with pytest.raises(TrustListError):
        TrustListSource(bad)


def test_source_fixed_and_empty() -> None:
    tl = parse_allow_list_xml(ALLOW_LIST)
    fixed = TrustListSource.fixed(tl)
    assert fixed.current() is tl and fixed.path is None and not fixed.reload()
    assert len(TrustListSource.empty().current()) == 0


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("peers")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    create_ca(ca, ca_key, "Test IGC")
    subjects = {
        "bus": ("bus.mssante.fr", "ASIP-SANTE", "318751275100020", "FR"),
        "bus2": ("bus2.mssante.fr", "ASIP-SANTE", "318751275100020", "FR"),
        "hosp": ("mail.chu-exemple.fr", "CHU EXEMPLE", "0002 267500452", "FR"),
        "rogue": ("bus.mssante.fr", "Rogue", None, "FR"),
    }
    out: dict[str, bytes] = {}
    for label, (cn, org, ou, country) in subjects.items():
        cert, key = folder / f"{label}.pem", folder / f"{label}.key"
        issue_certificate(
            ca, ca_key, cert, key, cn, organization=org, organizational_unit=ou, country=country
        )
        out[label] = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    return out


def test_certificate_dn(peer_certs: dict[str, bytes]) -> None:
    assert certificate_dn(peer_certs["hosp"]) == normalize_dn(HOSP_DN)
    assert certificate_dn(peer_certs["hosp"]) == normalize_dn(
        "/C=FR/O=CHU EXEMPLE/OU=0002 267500452/CN=mail.chu-exemple.fr"
    )
    with pytest.raises(ValueError):
        certificate_dn(b"not a certificate")


def test_certificate_matches(peer_certs: dict[str, bytes]) -> None:
    # The allow-list DN has ST=Paris (75); the test certificates do not.
    local = parse_local_trust_file(
        "medecin.mssante.fr | CN=bus.mssante.fr,OU=318751275100020,O=ASIP-SANTE,C=FR\n"
        "medecin.mssante.fr | CN=bus2.mssante.fr,O=Other,C=FR\n"
    )
    tl = parse_allow_list_xml(ALLOW_LIST).merge(local)
    assert tl.certificate_matches("medecin.mssante.fr", peer_certs["bus"])
    assert tl.certificate_matches("MEDECIN.mssante.fr.", peer_certs["bus"])
    assert tl.certificate_matches("chu-exemple.fr", peer_certs["hosp"])
    assert not tl.certificate_matches("chu-exemple.fr", peer_certs["bus"])
    assert not tl.certificate_matches("medecin.mssante.fr", peer_certs["hosp"])
    # Same CN, different organisation: not the listed certificate.
    assert not tl.certificate_matches("medecin.mssante.fr", peer_certs["rogue"])
    # bus2 is listed with ST=Paris (75) in the XML and with O=Other locally: neither matches.
    assert not tl.certificate_matches("medecin.mssante.fr", peer_certs["bus2"])
    assert not tl.certificate_matches("unknown.example", peer_certs["bus"])
    assert not tl.certificate_matches("medecin.mssante.fr", b"garbage")


def test_domains_for_certificate(peer_certs: dict[str, bytes]) -> None:
    local = parse_local_trust_file(
        "medecin.mssante.fr | CN=bus.mssante.fr,OU=318751275100020,O=ASIP-SANTE,C=FR\n"
        "pharmacien.mssante.fr | /C=FR/O=ASIP-SANTE/OU=318751275100020/CN=bus.mssante.fr\n"
        "chu-exemple.fr | " + HOSP_DN + "\n"
    )
    assert local.domains_for_certificate(peer_certs["bus"]) == ["medecin.mssante.fr", "pharmacien.mssante.fr"]
    assert local.domains_for_certificate(peer_certs["hosp"]) == ["chu-exemple.fr"]
    assert local.domains_for_certificate(peer_certs["rogue"]) == []
    assert local.domains_for_certificate(b"garbage") == []
