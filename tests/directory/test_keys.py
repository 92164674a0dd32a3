"""The key directory: operator imports, look-ups for encryption and for publication."""

from __future__ import annotations

from pathlib import Path

import pysequoia as sq
import pytest
from sqlalchemy import func, select

from directory.key_tables import PublicKey
from directory.keys import KeyDirectory, KeyImportError, import_keys_cli, only_user_id
from directory.publication import hkp_index
from directory.wkd import wkd_hash
from mailserver.store.tables import Account
from openmss.audit import AuditEvent
from openmss.db.engine import Database
from openmss.keyring.tables import AccountKey
from openmss.settings import Settings

from servers import pg_database_url

LOCAL = "ch-exemple.test"


def _key(*user_ids: str) -> tuple[sq.Tsk, sq.Cert]:
    tsk = sq.Tsk.generate(
        user_ids=list(user_ids), profile=sq.Profile.RFC4880, cipher_suite=sq.CipherSuite.Cv25519
    )
    return tsk, tsk.extract_certificate()


def _revoked(tsk: sq.Tsk, cert: sq.Cert) -> sq.Cert:
    return sq.Cert.from_bytes(bytes(cert) + bytes(cert.revoke(tsk.certifier())))


@pytest.fixture
def directory(db: Database) -> KeyDirectory:
    return KeyDirectory(db, [LOCAL])


def _add_account(db: Database, address: str, cert: sq.Cert, *, disabled: bool = False) -> None:
    with db.sync_transaction() as session:
        account = Account(address=address, password_hash="-", disabled=disabled)
        session.add(account)
        session.flush()
        fpr = cert.fingerprint.upper()
        # An older key first: only the current one is ever handed out.
        _, old = _key(f"<{address}>")
        session.add(
            AccountKey(
                account_id=account.id,
                fingerprint=old.fingerprint.upper(),
                public=bytes(old),
                mode="server",
                current=False,
            )
        )
        session.add(
            AccountKey(account_id=account.id, fingerprint=fpr, public=bytes(cert), mode="own", current=True)
        )


async def test_import_then_certs_for(db: Database, directory: KeyDirectory):
    _, bernard = _key("Dr Bernard <p.bernard@autre-operateur.fr>", "P. Bernard <BERNARD@clinique.fr>")
    _, claire = _key("<claire@autre-operateur.fr>")
    data = str(bernard).encode() + b"\n" + str(claire).encode()  # two armoured blocks in one file
    with db.sync_transaction() as session:
        stored = directory.import_keys(session, data)
    fb, fc = bernard.fingerprint.upper(), claire.fingerprint.upper()
    assert stored == [
        ("p.bernard@autre-operateur.fr", fb),
        ("bernard@clinique.fr", fb),
        ("claire@autre-operateur.fr", fc),
    ]

    certs = await directory.certs_for("P.Bernard@Autre-Operateur.FR")
    assert [c.fingerprint.upper() for c in certs] == [fb]
    assert [c.fingerprint.upper() for c in await directory.certs_for("bernard@clinique.fr")] == [fb]
    assert await directory.certs_for("nobody@autre-operateur.fr") == []
    # One armour block holding several keys, as ``gpg --export -a A B`` writes.
    both = sq.armor(bytes(claire) + bytes(bernard), sq.ArmorKind.PublicKey).encode()
    with db.sync_transaction() as session:
        assert len(directory.import_keys(session, both)) == 3
    assert await directory.certs_for("not an address") == []
    with db.sync_transaction() as session:
        certs = directory.certs_for_sync(session, "claire@autre-operateur.fr")
    assert [c.fingerprint.upper() for c in certs] == [fc]

    # Importing again merges: no duplicate rows. Every stored key is audited.
    with db.sync_transaction() as session:
        directory.import_keys(session, bytes(bernard))
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(PublicKey)) == 3
        actions = list(await session.scalars(select(AuditEvent.action)))
    assert actions.count("directory.key.import") == 3 + 3 + 2


async def test_secret_keys_and_garbage_are_refused(db: Database, directory: KeyDirectory):
    tsk, _ = _key("<secret@autre-operateur.fr>")
    _, public = _key("<public@autre-operateur.fr>")
    for data in (bytes(tsk), str(tsk).encode(), bytes(public) + bytes(tsk)):
        with pytest.raises(KeyImportError, match="secret key"), db.sync_transaction() as session:
            directory.import_keys(session, data)
    for data in (b"", b"hello", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n"):
        with pytest.raises(KeyImportError), db.sync_transaction() as session:
            directory.import_keys(session, data)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(PublicKey)) == 0


async def test_import_skips_our_own_domains_and_keys_without_address(db: Database, directory: KeyDirectory):
    _, mixed = _key(f"<dr.martin@{LOCAL}>", "<martin@autre-operateur.fr>")
    _, nameless = _key("Just a name")
    with db.sync_transaction() as session:
        report = directory.import_report(session, bytes(mixed) + bytes(nameless))
    assert report.stored == [("martin@autre-operateur.fr", mixed.fingerprint.upper())]
    assert [why for _, why in report.skipped] == [
        f"{LOCAL} is our own domain: accounts manage their own keys",
        "no e-mail address in its user IDs",
    ]


async def test_revoked_keys_are_stored_but_never_used(db: Database, directory: KeyDirectory):
    tsk, cert = _key("<revoque@autre-operateur.fr>")
    with db.sync_transaction() as session:
        directory.import_keys(session, bytes(cert))
    assert len(await directory.certs_for("revoque@autre-operateur.fr")) == 1
    with db.sync_transaction() as session:
        report = directory.import_report(session, bytes(_revoked(tsk, cert)))
    assert report.revoked == {cert.fingerprint.upper()}
    assert await directory.certs_for("revoque@autre-operateur.fr") == []
    # The revocation sticks even if the old copy is imported again (merge).
    with db.sync_transaction() as session:
        directory.import_keys(session, bytes(cert))
    assert await directory.certs_for("revoque@autre-operateur.fr") == []


async def test_local_accounts(db: Database, directory: KeyDirectory):
    _, alice = _key(f"Alice <alice@{LOCAL}>")
    _, gone = _key(f"<gone@{LOCAL}>")
    _add_account(db, f"alice@{LOCAL}", alice)
    _add_account(db, f"gone@{LOCAL}", gone, disabled=True)
    fpr = alice.fingerprint.upper()

    assert [c.fingerprint.upper() for c in await directory.certs_for(f"ALICE@{LOCAL}")] == [fpr]
    assert await directory.certs_for(f"gone@{LOCAL}") == []

    found = await directory.lookup_local(LOCAL, wkd_hash("alice"))
    assert found is not None and found.fingerprint == fpr and found.address == f"alice@{LOCAL}"
    assert (await directory.lookup_local(LOCAL.upper(), wkd_hash("Alice"), local="Alice")) == found
    assert await directory.lookup_local(LOCAL, f"Alice@{LOCAL}") == found
    assert await directory.lookup_local(LOCAL, wkd_hash("alice"), local="bob") is None
    assert await directory.lookup_local("autre-operateur.fr", wkd_hash("alice")) is None
    assert await directory.lookup_local(LOCAL, "alice@autre-operateur.fr") is None
    assert await directory.lookup_local(LOCAL, wkd_hash("gone")) is None
    assert await directory.lookup_local(LOCAL, wkd_hash("gone"), local="gone") is None

    for key_id in (fpr, fpr.lower(), fpr[-16:], fpr[-8:]):
        assert await directory.lookup_local_key_id(key_id) == [found]
    assert await directory.lookup_local_key_id(fpr[:16]) == []  # a v4 key ID is the low 64 bits
    assert await directory.lookup_local_key_id(gone.fingerprint) == []


def test_only_user_id_keeps_the_published_address():
    _, cert = _key("Alice <alice@a.test>", "Alice perso <alice@perso.example>")
    reduced = sq.Cert.from_bytes(only_user_id(bytes(cert), "ALICE@a.test"))
    assert reduced.fingerprint == cert.fingerprint
    assert [str(u) for u in reduced.user_ids] == ["Alice <alice@a.test>"]
    assert only_user_id(bytes(cert), "someone@else.test") == bytes(cert)  # never a key without user ID


def test_hkp_index_lines():
    tsk, cert = _key("Dr Élodie: Test <elodie@a.test>", "100% <x@a.test>")
    fpr = cert.fingerprint.upper()
    lines = hkp_index([bytes(cert), bytes(_revoked(tsk, cert))]).splitlines()
    assert lines[0] == "info:1:2"
    assert lines[1].startswith(f"pub:{fpr}:22:255:") and lines[1].endswith("::")
    uids = sorted(line.rsplit(":", 3)[0] for line in lines[2:4])
    assert uids == ["uid:100%25 <x@a.test>", "uid:Dr %C3%89lodie%3A Test <elodie@a.test>"]
    assert all(line.endswith("::") for line in lines[2:4])
    assert lines[4].startswith(f"pub:{fpr}:") and lines[4].endswith(":r")
    assert len(lines) == 7


def test_hkp_index_key_lengths():
    rsa = sq.Tsk.generate("<r@a.test>", profile=sq.Profile.RFC4880, cipher_suite=sq.CipherSuite.RSA2k)
    p256 = sq.Tsk.generate("<p@a.test>", profile=sq.Profile.RFC4880, cipher_suite=sq.CipherSuite.P256)
    v6 = sq.Tsk.generate("<v6@a.test>", profile=sq.Profile.RFC9580)
    lines = hkp_index([bytes(k.extract_certificate()) for k in (rsa, p256, v6)]).splitlines()
    pubs = [line.split(":") for line in lines if line.startswith("pub:")]
    assert [(p[2], p[3]) for p in pubs] == [("1", "2048"), ("19", "256"), ("27", "255")]
    assert len(pubs[2][1]) == 64  # a v6 fingerprint


async def test_import_keys_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    url = await pg_database_url("keys_cli") or ""
    settings = Settings(data_dir=tmp_path / "data", database_url=url, domains=[LOCAL])
    _, cert = _key("<p.bernard@autre-operateur.fr>", f"<bernard@{LOCAL}>")
    keyfile = tmp_path / "bernard.asc"
    keyfile.write_text(str(cert))
    assert await import_keys_cli(settings, keyfile) == 0
    out = capsys.readouterr()
    assert f"imported {cert.fingerprint.upper()} for p.bernard@autre-operateur.fr" in out.out
    assert f"bernard@{LOCAL}: {LOCAL} is our own domain" in out.err

    tsk, _ = _key("<secret@autre-operateur.fr>")
    keyfile.write_bytes(bytes(tsk))
    assert await import_keys_cli(settings, keyfile) == 1
    assert "secret key" in capsys.readouterr().err
    assert await import_keys_cli(settings, tmp_path / "missing.asc") == 2
    assert "cannot read" in capsys.readouterr().err
