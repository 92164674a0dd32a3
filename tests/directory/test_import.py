"""Import of the national file into the directory: first import, re-import after changes,
broken rows, duplicates, ZIP input, one transaction; through ``openmss directory import``
(a real process) and through the function it calls."""

from __future__ import annotations

import sqlite3
import subprocess
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from annuaire_generator import ZIP_MEMBER, generate, rows, write
from cli import cli_env, run_cli
from sqlalchemy import func, select, update

from directory.annuaire import WIDTHS, AnnuaireError, open_annuaire
from directory.importer import ImportRefused, ImportSummary, import_file
from directory.tables import DirectoryMailbox, Organisation, Professional, search_key
from mailserver.store.tables import Account
from openmss.audit import AuditEvent
from openmss.db.engine import Database
from openmss.db.migrate import upgrade
from openmss.db.tables import metadata

from servers import pg_database_url


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    return await pg_database_url("dirimport") or f"sqlite+aiosqlite:///{tmp_path / 'directory.sqlite3'}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


def _import(db: Database, path: Path, *, force: bool = False) -> ImportSummary:
    with open_annuaire(path) as lines:
        return import_file(db, lines, actor="test", force=force)


def _all(db: Database, statement: Any) -> list[Any]:
    with db.sync_transaction() as session:
        return list(session.execute(statement))


def _count(db: Database, model: Any) -> int:
    [(n,)] = _all(db, select(func.count()).select_from(model))
    return int(n)


def _mailbox(db: Database, address: str) -> tuple[DirectoryMailbox, Professional | None, Organisation | None]:
    with db.sync_transaction() as session:
        box = session.scalars(select(DirectoryMailbox).where(DirectoryMailbox.address == address)).one()
        pro = session.get(Professional, box.professional_id) if box.professional_id else None
        org = session.get(Organisation, box.organisation_id) if box.organisation_id else None
        return box, pro, org


def _cli(data: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cli_env(data, database_url=url), *args)  # the tests' database, also SQLite


def test_search_key():
    assert search_key("LEFÈVRE-D'HÉROUVILLE") == "lefevre d herouville"
    assert search_key("Le Bœuf") == "le boeuf"
    assert search_key("  ") is None and search_key(None) is None


async def test_the_migration_creates_what_the_models_declare(db: Database):
    with db.sync_transaction() as session:
        diffs = compare_metadata(MigrationContext.configure(session.connection()), metadata)
    mine = [d for d in diffs if "directory_" in repr(d)]
    assert mine == []


async def test_cli_import_reports_broken_rows_and_duplicates(tmp_path: Path, db_url: str):
    made = generate(tmp_path / "extraction.txt", 300, seed=5, duplicates=2, broken=2)
    done = _cli(tmp_path / "data", db_url, "directory", "import", str(made.path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{made.rows} rows" in out
    assert "mailboxes:     300 added, 0 updated, 0 removed" in out
    assert "skipped: 2 row(s)" in out and "duplicates: 2 row(s)" in out
    for number in made.broken_lines:
        assert f"line {number}: 6 columns, expected 31" in out
    for number in made.duplicate_lines:
        assert f"line {number}: " in out and f"(first at line {number - 1})" in out
    # The same file in the ZIP the ANS publishes: nothing to change.
    packed = generate(tmp_path / "extraction.zip", 300, seed=5, duplicates=2, broken=2, zip_member=ZIP_MEMBER)
    again = _cli(tmp_path / "data", db_url, "directory", "import", str(packed.path))
    assert again.returncode == 0 and "mailboxes:     0 added, 0 updated, 0 removed" in again.stdout
    assert "professionals: 0 added, 0 updated, 0 removed" in again.stdout


async def test_cli_refuses_a_file_that_is_not_the_national_file(tmp_path: Path, db_url: str):
    other = tmp_path / "other.csv"
    other.write_text("nom;prenom\nDupont;Jean\n", encoding="utf-8")
    done = _cli(tmp_path / "data", db_url, "directory", "import", str(other))
    assert done.returncode == 2 and "line 1: the header has 1 columns" in done.stderr
    missing = _cli(tmp_path / "data", db_url, "directory", "import", str(tmp_path / "absent.zip"))
    assert missing.returncode == 2 and "nothing imported" in missing.stderr


async def test_first_import_stores_professionals_organisations_and_mailboxes(db: Database, tmp_path: Path):
    data = list(rows(120, seed=7))
    summary = _import(db, write(tmp_path / "a.txt", data))
    assert (summary.rows, summary.skipped, summary.duplicates) == (120, 0, 0)
    assert summary.mailboxes.added == 120 == _count(db, DirectoryMailbox)
    persons = {f[4] for f in data if f[0] == "PER"}
    structures = {f[5] + f[6] for f in data}
    assert summary.professionals.added == len(persons) == _count(db, Professional)
    assert summary.organisations.added == len(structures) == _count(db, Organisation)

    per = next(f for f in data if f[0] == "PER" and f[15])
    box, pro, org = _mailbox(db, per[1])
    assert box.kind == "PER" and box.national and not box.red_list and box.account_id is None
    assert pro is not None and org is not None
    assert (pro.national_id, pro.id_type, pro.identifier) == (per[4], per[2], per[3])
    assert (pro.family_name, pro.given_name, pro.civility) == (per[9], per[10], per[8])
    assert (pro.profession_code, pro.profession_label, pro.specialty_code, pro.specialty_label) == (
        per[13],
        per[14],
        per[15],
        per[16],
    )
    assert (pro.family_norm, pro.given_norm) == (search_key(per[9]), search_key(per[10]))
    assert (org.national_id, org.name, org.postcode, org.routing_line) == (
        per[5] + per[6],
        per[18],
        per[28],
        per[27],
    )
    assert org.town == per[27].split(" ", 1)[1] and org.town_norm == search_key(org.town)
    assert box.accepts_documents is {"O": True, "N": False, "": None}[per[17]]


async def test_org_rows_without_a_person_and_accents_kept(db: Database, tmp_path: Path):
    data = list(rows(40, seed=2))
    data[3][9:11] = ["LÉGARÉ-NGUYỄN", "Maëlle"]
    data[3][2:5] = ["", "", ""]  # a personal mailbox without national id: kept by name
    _import(db, write(tmp_path / "a.txt", data))
    org_row = next(f for f in data if f[0] == "ORG")
    box, pro, org = _mailbox(db, org_row[1])
    assert box.kind == "ORG" and pro is None and org is not None and box.service == org_row[7]
    box, pro, _ = _mailbox(db, data[3][1])
    assert pro is not None and pro.national_id is None and pro.import_key == "@" + data[3][1]
    assert (pro.family_name, pro.given_name) == ("LÉGARÉ-NGUYỄN", "Maëlle")
    assert (pro.family_norm, pro.given_norm) == ("legare nguyen", "maelle")
    [(found,)] = _all(db, select(Professional.given_name).where(Professional.family_norm.like("legare ng%")))
    assert found == "Maëlle"


async def test_reimport_updates_adds_and_removes(db: Database, tmp_path: Path):
    data = list(rows(60, seed=11))
    _import(db, write(tmp_path / "day1.txt", data))
    pers = [f for f in data if f[0] == "PER"]
    renamed, moved, gone = pers[0], pers[1], pers[2]
    orgs = [f for f in data if f[0] == "ORG"]
    with db.sync_transaction() as session:  # operator's local settings must survive
        session.execute(
            update(DirectoryMailbox).where(DirectoryMailbox.address == renamed[1]).values(red_list=True)
        )

    day2 = [f.copy() for f in data if f is not gone]
    by_address = {f[1]: f for f in day2}
    by_address[renamed[1]][10] = "Anaïs-Éloïse"
    by_address[moved[1]][7] = "Service de réanimation"
    by_address[orgs[0][1]][17] = "O" if orgs[0][17] != "O" else "N"
    new = list(rows(62, seed=11, structures=60 // 6))[60:]
    summary = _import(db, write(tmp_path / "day2.txt", day2 + new))

    assert (summary.mailboxes.added, summary.mailboxes.updated, summary.mailboxes.removed) == (2, 2, 1)
    assert summary.professionals.updated == 1
    gone_alone = sum(1 for f in data if f[4] == gone[4]) == 1
    assert summary.professionals.removed == (1 if gone_alone else 0)
    assert _count(db, DirectoryMailbox) == 61
    box, pro, _ = _mailbox(db, renamed[1])
    assert pro is not None and pro.given_name == "Anaïs-Éloïse" and pro.given_norm == "anais eloise"
    assert box.red_list  # not in the file: never touched by an import
    assert _mailbox(db, moved[1])[0].service == "Service de réanimation"
    assert _all(db, select(DirectoryMailbox.id).where(DirectoryMailbox.address == gone[1])) == []
    for f in new:
        assert _mailbox(db, f[1])[0].national

    again = _import(db, write(tmp_path / "day2-again.txt", day2 + new))
    for changes in (again.mailboxes, again.professionals, again.organisations):
        assert (changes.added, changes.updated, changes.removed) == (0, 0, 0)


async def test_organisations_and_professionals_no_longer_referenced_are_removed(db: Database, tmp_path: Path):
    data = list(rows(30, seed=4))
    _import(db, write(tmp_path / "a.txt", data))
    keep = data[:15]
    summary = _import(db, write(tmp_path / "b.txt", keep), force=True)
    assert summary.mailboxes.removed == 15
    assert _count(db, Professional) == len({f[4] for f in keep if f[0] == "PER"})
    assert _count(db, Organisation) == len({f[5] + f[6] for f in keep})


async def test_duplicate_addresses_keep_the_first(db: Database, tmp_path: Path):
    made = generate(tmp_path / "a.txt", 50, seed=9, duplicates=3)
    summary = _import(db, made.path)
    assert summary.duplicates == 3 and [d.line for d in summary.duplicate_rows] == made.duplicate_lines
    assert _count(db, DirectoryMailbox) == 50
    duplicate = summary.duplicate_rows[0]
    assert duplicate.first_line == duplicate.line - 1
    assert _mailbox(db, duplicate.address)[0].service != "Doublon ignoré"  # the second row's value


async def test_a_zip_imports_like_the_text(db: Database, tmp_path: Path):
    made = generate(tmp_path / "a.zip", 80, seed=3, broken=1, zip_member=ZIP_MEMBER)
    summary = _import(db, made.path)
    assert summary.mailboxes.added == 80 and [e.line for e in summary.errors] == made.broken_lines
    same = _import(db, write(tmp_path / "a.txt", rows(80, seed=3)))
    assert (same.mailboxes.added, same.mailboxes.updated, same.mailboxes.removed) == (0, 0, 0)


async def test_a_failure_applies_nothing(db: Database, tmp_path: Path):
    _import(db, write(tmp_path / "day1.txt", rows(100, seed=1)))
    before = _all(
        db, select(DirectoryMailbox.address, DirectoryMailbox.service).order_by(DirectoryMailbox.address)
    )
    path = write(tmp_path / "day2.zip", rows(3000, seed=2), zip_member=ZIP_MEMBER)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(ZIP_MEMBER)
    end = info.header_offset + 30 + len(ZIP_MEMBER) + info.compress_size
    raw[end - 200 : end - 100] = bytes(100)  # damaged near the end: most rows already staged
    path.write_bytes(bytes(raw))
    with pytest.raises(AnnuaireError, match="damaged ZIP"):
        _import(db, path, force=True)
    after = _all(
        db, select(DirectoryMailbox.address, DirectoryMailbox.service).order_by(DirectoryMailbox.address)
    )
    assert after == before


async def test_a_file_removing_most_mailboxes_needs_force(db: Database, tmp_path: Path, db_url: str):
    data = list(rows(40, seed=6))
    _import(db, write(tmp_path / "full.txt", data))
    truncated = write(tmp_path / "truncated.txt", data[:10])
    with pytest.raises(ImportRefused, match="remove 30 of the 40"):
        _import(db, truncated)
    assert _count(db, DirectoryMailbox) == 40
    refused = _cli(tmp_path / "data", db_url, "directory", "import", str(truncated))
    assert refused.returncode == 1 and "refused:" in refused.stderr
    forced = _cli(tmp_path / "data", db_url, "directory", "import", "--force", str(truncated))
    assert forced.returncode == 0 and "30 removed" in forced.stdout


async def test_our_own_mailboxes_stay_when_the_file_drops_them(db: Database, tmp_path: Path):
    data = list(rows(10, seed=8))
    _import(db, write(tmp_path / "a.txt", data))
    with db.sync_transaction() as session:
        account = Account(address=data[0][1], password_hash="-")
        session.add(account)
        session.flush()
        session.execute(
            update(DirectoryMailbox)
            .where(DirectoryMailbox.address == data[0][1])
            .values(account_id=account.id)
        )
    summary = _import(db, write(tmp_path / "b.txt", data[1:]))
    assert (summary.mailboxes.removed, summary.unlisted) == (0, 1)
    box, _, _ = _mailbox(db, data[0][1])
    assert box.account_id is not None and not box.national
    back = _import(db, write(tmp_path / "c.txt", data))
    assert back.mailboxes.updated == 1 and _mailbox(db, data[0][1])[0].national


async def test_the_import_is_audited(db: Database, tmp_path: Path):
    _import(db, write(tmp_path / "a.txt", rows(5, seed=1)))
    query = select(AuditEvent.actor, AuditEvent.detail).where(AuditEvent.action == "directory.import")
    [(actor, detail)] = _all(db, query)
    assert actor == "test" and '"rows": 5' in detail


async def test_a_row_at_the_widest_values_kept_imports(db: Database, tmp_path: Path):
    # PostgreSQL enforces column widths: what the parser lets through must fit.
    fields = ["É" * 255 for _ in range(31)]
    fields[0], fields[1], fields[17] = "PER", "a" * 64 + "@" + "b" * 240 + ".fr", "O"
    for index, width, _ in WIDTHS:
        fields[index] = "9" * width
    fields[4] = fields[2] + fields[3]
    too_long = fields.copy()
    too_long[9] = "É" * 256
    summary = _import(db, write(tmp_path / "a.txt", [fields, too_long]))
    assert summary.mailboxes.added == 1 and summary.skipped == 1
    assert summary.errors[0].message == "'Nom d'exercice' longer than 255 characters"
    _, pro, org = _mailbox(db, fields[1])
    assert pro is not None and org is not None
    assert pro.national_id == "9" * 80 and pro.family_name == "É" * 255 and org.postcode == "9" * 16


def _can_write(sqlite_path: str) -> bool:
    """Whether another connection gets the SQLite write lock within half a second."""
    conn = sqlite3.connect(sqlite_path, timeout=0.5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def test_staging_leaves_the_database_writable(db: Database, db_url: str, tmp_path: Path):
    """SQLite: while the file is read and staged, the server can still write (deliveries, flag
    changes); only the merge holds the write lock, and the result is the same."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's writers are not held up by an import")
    sqlite_path = db_url.split("///", 1)[1]
    path = write(tmp_path / "a.txt", rows(300, seed=4))
    probes: list[bool] = []

    def lines() -> Iterator[str | bytes]:
        with open_annuaire(path) as source:
            for number, line in enumerate(source):
                if number == 150:
                    probes.append(_can_write(sqlite_path))
                yield line

    summary = import_file(db, lines(), actor="test")
    assert probes == [True] and summary.mailboxes.added == 300 and _count(db, DirectoryMailbox) == 300
    assert _can_write(sqlite_path)
