"""Import of the national file into the directory, committed in one transaction.

The file (about 535,000 rows) is streamed into temporary staging tables in batches (COPY on
PostgreSQL, executemany on SQLite), then merged with a handful of set-based statements, so
that memory stays flat and the database does the diff with its indexes:

1. organisations and professionals: rows whose values changed are updated, new ones inserted
   (matched on ``import_key``: the national id, or ``@`` + the mailbox address for an entry the
   file gives no identifier);
2. mailboxes (matched on the address): changed ones updated, new ones inserted, and those the
   file no longer lists removed, except the mailboxes of our own accounts, which only lose
   their ``national`` mark;
3. professionals and organisations no mailbox refers to any more are removed.

The directory is written in one transaction: a failure anywhere (a damaged ZIP found at its
end, the database) leaves it as it was. Re-importing the same file changes
nothing. A row appearing twice with the same address: the first is kept, the others reported;
a row that does not parse is skipped and reported with its line number.

A file that would remove more than half of the listed mailboxes is refused unless forced: a
truncated download must not empty the directory.

On SQLite a transaction that writes holds the database's write lock until it ends: the file
is therefore staged in a first transaction that writes only TEMP tables, and merged in a
second one (``import_file``), so that a server running meanwhile waits only for the merge
(its ``busy_timeout`` is 30 s). PostgreSQL's other writers are not held up by an import.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Executable,
    FromClause,
    MetaData,
    String,
    Table,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from directory.annuaire import Person, Row, RowError, Structure, read_rows
from directory.links import link_accounts
from directory.tables import DirectoryMailbox, Organisation, Professional, search_key
from openmss import audit
from openmss.db.base import UTCDateTime, table, utcnow
from openmss.db.engine import Database

BATCH = 2000
MAX_REPORTED = 1000  # problems kept for the report; all of them are counted
MAX_REMOVED_FRACTION = 0.5
PG_IMPORT_LOCK = 0x4F4D53534449520  # an arbitrary advisory lock key: "directory import"
SQLITE_CACHE_SIZE = -64 * 1024  # page cache during the import (negative: in KiB, so 64 MiB)

PRO_FIELDS = (
    "national_id",
    "id_type",
    "identifier",
    "civility",
    "family_name",
    "given_name",
    "family_norm",
    "given_norm",
    "category_code",
    "category_label",
    "profession_code",
    "profession_label",
    "specialty_code",
    "specialty_label",
)
ORG_FIELDS = (
    "national_id",
    "id_type",
    "identifier",
    "name",
    "name_norm",
    "trade_name",
    "complement_location",
    "complement_distribution",
    "street_number",
    "street_number_complement",
    "street_type",
    "street_name",
    "locality",
    "routing_line",
    "postcode",
    "town",
    "town_norm",
    "department",
    "country",
)
MAILBOX_FIELDS = ("kind", "professional_id", "organisation_id", "service", "accepts_documents")


class ImportRefused(Exception):
    """The import would do something an operator must confirm (``--force``)."""


@dataclass
class Changes:
    added: int = 0
    updated: int = 0
    removed: int = 0


@dataclass(frozen=True, slots=True)
class Duplicate:
    line: int
    address: str
    first_line: int


@dataclass
class ImportSummary:
    rows: int = 0  # data rows read, good or not
    mailboxes: Changes = field(default_factory=Changes)
    unlisted: int = 0  # our own mailboxes the file no longer lists: kept, no longer "national"
    linked: int = 0  # mailboxes newly linked to the local account of the same address
    professionals: Changes = field(default_factory=Changes)
    organisations: Changes = field(default_factory=Changes)
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first MAX_REPORTED
    duplicates: int = 0
    duplicate_rows: list[Duplicate] = field(default_factory=list)  # the first MAX_REPORTED

    def detail(self) -> dict[str, Any]:
        """Counts for the audit trail (no names: the file is public, the trail needs none)."""
        return {
            "rows": self.rows,
            "mailboxes": vars(self.mailboxes),
            "professionals": vars(self.professionals),
            "organisations": vars(self.organisations),
            "unlisted": self.unlisted,
            "linked": self.linked,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
        }


def _staging_tables() -> tuple[Table, Table, Table]:
    """Temporary tables with the target columns' own types (collations included). No key
    while they fill (entries arrive deduplicated): the one index the merge needs is built
    once they are full, a bulk build being cheaper than half a million index inserts."""
    metadata = MetaData()
    pros, orgs = table(Professional), table(Organisation)
    stage_pros = Table(
        "directory_import_professionals",
        metadata,
        Column("import_key", String(330)),
        *(Column(name, pros.c[name].type) for name in PRO_FIELDS),
        prefixes=["TEMPORARY"],
    )
    stage_orgs = Table(
        "directory_import_organisations",
        metadata,
        Column("import_key", String(330)),
        *(Column(name, orgs.c[name].type) for name in ORG_FIELDS),
        prefixes=["TEMPORARY"],
    )
    stage_mailboxes = Table(
        "directory_import_mailboxes",
        metadata,
        Column("address", String(320)),
        Column("kind", String(3)),
        Column("pro_key", String(330)),
        Column("org_key", String(330)),
        Column("service", String(255)),
        Column("accepts_documents", Boolean),
        prefixes=["TEMPORARY"],
    )
    return stage_pros, stage_orgs, stage_mailboxes


class _SearchKeys:
    """``search_key`` with a memory: names and towns repeat a lot across 535,000 rows."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self.known: dict[str, str | None] = {}

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        key = self.known.get(text)
        if key is None:
            if len(self.known) >= self.LIMIT:
                self.known.clear()  # a bound on memory; a miss only costs a recomputation
            key = self.known[text] = search_key(text)
        return key


# Staging columns filled from the file, in the order of the tuples below.
PRO_COLUMNS = ("import_key", *PRO_FIELDS)
ORG_COLUMNS = ("import_key", *ORG_FIELDS)
MAILBOX_COLUMNS = ("address", "kind", "pro_key", "org_key", "service", "accepts_documents")


def _bulk_insert(
    conn: Connection, staging: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Rows into a staging table at the driver's speed: COPY on PostgreSQL, executemany on
    SQLite (SQLAlchemy's per-row parameter processing would cost more than the insert)."""
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection  # psycopg, in this transaction
        assert driver is not None
        cursor = driver.cursor()
        with cursor.copy(f"COPY {staging.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {staging.name} ({names}) VALUES ({marks})"  # noqa: S608 (our own names)
    conn.exec_driver_sql(sql, rows)


class _Stager:
    """Streams rows into the staging tables; keeps only what deduplication needs."""

    def __init__(self, conn: Connection, summary: ImportSummary) -> None:
        self.conn = conn
        self.summary = summary
        self.pros_table, self.orgs_table, self.mailboxes_table = _staging_tables()
        self.first_line: dict[str, int] = {}  # address -> line of its first row
        self.seen_pros: set[str] = set()
        self.seen_orgs: set[str] = set()
        self.pros: list[tuple[Any, ...]] = []
        self.orgs: list[tuple[Any, ...]] = []
        self.mailboxes: list[tuple[Any, ...]] = []
        self.norm = _SearchKeys()

    def create(self) -> None:
        for staging in (self.pros_table, self.orgs_table, self.mailboxes_table):
            # Left over by an earlier import on this pooled connection (SQLite keeps them).
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staging.name}")
            staging.create(self.conn)

    def finish(self) -> None:
        """The last rows in, the index the merge needs, and statistics for the planner
        (PostgreSQL's autovacuum never analyses temporary tables)."""
        self.flush()
        mailboxes = self.mailboxes_table
        self.conn.exec_driver_sql(f"CREATE INDEX {mailboxes.name}_address ON {mailboxes.name} (address)")
        if self.conn.dialect.name == "postgresql":
            for staging in (self.pros_table, self.orgs_table, mailboxes):
                self.conn.exec_driver_sql(f"ANALYZE {staging.name}")

    def drop(self) -> None:
        for staging in (self.pros_table, self.orgs_table, self.mailboxes_table):
            staging.drop(self.conn)

    def add(self, item: Row | RowError) -> None:
        summary = self.summary
        summary.rows += 1
        if isinstance(item, RowError):
            summary.skipped += 1
            if len(summary.errors) < MAX_REPORTED:
                summary.errors.append(item)
            return
        first = self.first_line.setdefault(item.address, item.line)
        if first != item.line:
            summary.duplicates += 1
            if len(summary.duplicate_rows) < MAX_REPORTED:
                summary.duplicate_rows.append(Duplicate(item.line, item.address, first))
            return
        pro_key = org_key = None
        if item.person is not None:
            pro_key = item.person.national_id or "@" + item.address
            if pro_key not in self.seen_pros:  # the first row naming someone describes them
                self.seen_pros.add(pro_key)
                self.pros.append(self._pro(pro_key, item.person))
        if item.structure is not None:
            org_key = item.structure.national_id or "@" + item.address
            if org_key not in self.seen_orgs:
                self.seen_orgs.add(org_key)
                self.orgs.append(self._org(org_key, item.structure))
        self.mailboxes.append(
            (item.address, item.kind, pro_key, org_key, item.service, item.accepts_documents)
        )
        if len(self.mailboxes) >= BATCH:
            self.flush()

    def _pro(self, key: str, p: Person) -> tuple[Any, ...]:
        # In the order of PRO_COLUMNS.
        return (
            key,
            *p[:6],  # national_id, id_type, identifier, civility, family_name, given_name
            self.norm(p.family_name),
            self.norm(p.given_name),
            *p[6:],  # category, profession and specialty codes and labels
        )

    def _org(self, key: str, s: Structure) -> tuple[Any, ...]:
        # In the order of ORG_COLUMNS.
        town = s.town
        return (
            key,
            s.national_id,
            s.id_type,
            s.identifier,
            s.name,
            self.norm(s.name),
            *s[3:13],  # trade name, then the address lines up to the routing line and postcode
            town,
            self.norm(town),
            s.department,
            s.country,
        )

    def flush(self) -> None:
        for staging, columns, rows in (
            (self.pros_table, PRO_COLUMNS, self.pros),
            (self.orgs_table, ORG_COLUMNS, self.orgs),
            (self.mailboxes_table, MAILBOX_COLUMNS, self.mailboxes),
        ):
            if rows:
                _bulk_insert(self.conn, staging, columns, rows)
                rows.clear()


def _changed(target: Table, staging: FromClause, fields: Sequence[str]) -> ColumnElement[bool]:
    return or_(*(target.c[name].is_distinct_from(staging.c[name]) for name in fields))


def _affected(conn: Connection, statement: Executable) -> int:
    """How many rows ``statement`` changed (psycopg only keeps it for INSERT ... SELECT when
    SQLAlchemy is asked to)."""
    return int(conn.execute(statement, execution_options={"preserve_rowcount": True}).rowcount)


def _merge(conn: Connection, target: Table, staging: Table, fields: Sequence[str], now: datetime) -> Changes:
    """Update the rows of ``target`` whose values differ from ``staging`` and insert the
    missing ones, matched on ``import_key``."""
    key = target.c.import_key
    updated = _affected(
        conn,
        update(target)
        .where(key == staging.c.import_key, _changed(target, staging, fields))
        .values({name: staging.c[name] for name in fields} | {"updated_at": now}),
    )
    stamp = literal(now, UTCDateTime)
    added = _affected(
        conn,
        insert(target).from_select(
            ["import_key", *fields, "created_at", "updated_at"],
            select(staging.c.import_key, *(staging.c[name] for name in fields), stamp, stamp).where(
                ~exists().where(key == staging.c.import_key)
            ),
        ),
    )
    return Changes(added=added, updated=updated)


def _merge_mailboxes(
    conn: Connection, staging: Table, now: datetime, summary: ImportSummary, *, force: bool
) -> None:
    pros, orgs, mailboxes = table(Professional), table(Organisation), table(DirectoryMailbox)
    # The staging rows with their owners' ids (two hash joins, no per-row look-ups).
    resolved = (
        select(
            staging.c.address,
            staging.c.kind,
            pros.c.id.label("professional_id"),
            orgs.c.id.label("organisation_id"),
            staging.c.service,
            staging.c.accepts_documents,
        )
        .select_from(
            staging.outerjoin(pros, pros.c.import_key == staging.c.pro_key).outerjoin(
                orgs, orgs.c.import_key == staging.c.org_key
            )
        )
        .subquery("resolved")
    )
    listed = exists().where(staging.c.address == mailboxes.c.address)
    unlisted = mailboxes.c.national.is_(True) & ~listed
    gone = conn.execute(select(func.count()).where(unlisted)).scalar_one()
    national = conn.execute(select(func.count()).where(mailboxes.c.national.is_(True))).scalar_one()
    if not force and gone and gone > national * MAX_REMOVED_FRACTION:
        raise ImportRefused(
            f"the file would remove {gone} of the {national} listed mailboxes "
            f"(more than {MAX_REMOVED_FRACTION:.0%}): a truncated file? --force to import it anyway"
        )
    updated = _affected(
        conn,
        update(mailboxes)
        .where(
            mailboxes.c.address == resolved.c.address,
            or_(_changed(mailboxes, resolved, MAILBOX_FIELDS), mailboxes.c.national.is_(False)),
        )
        .values({name: resolved.c[name] for name in MAILBOX_FIELDS} | {"national": True, "updated_at": now}),
    )
    stamp = literal(now, UTCDateTime)
    added = _affected(
        conn,
        insert(mailboxes).from_select(
            ["address", *MAILBOX_FIELDS, "red_list", "national", "created_at", "updated_at"],
            select(
                resolved.c.address,
                *(resolved.c[name] for name in MAILBOX_FIELDS),
                literal(False),
                literal(True),
                stamp,
                stamp,
            ).where(~exists().where(mailboxes.c.address == resolved.c.address)),
        ),
    )
    # Ours (linked to a local account) stay: the account still receives mail here.
    summary.unlisted = _affected(
        conn,
        update(mailboxes)
        .where(unlisted, mailboxes.c.account_id.is_not(None))
        .values(national=False, updated_at=now),
    )
    removed = _affected(conn, delete(mailboxes).where(unlisted))
    summary.mailboxes = Changes(added, updated, removed)


def _remove_orphans(conn: Connection, summary: ImportSummary) -> None:
    mailboxes = table(DirectoryMailbox)
    for target, column, changes in (
        (table(Professional), mailboxes.c.professional_id, summary.professionals),
        (table(Organisation), mailboxes.c.organisation_id, summary.organisations),
    ):
        # Only what an import brought (import_key set); entries made here are not ours to drop.
        orphan = target.c.import_key.is_not(None) & ~exists().where(column == target.c.id)
        changes.removed = _affected(conn, delete(target).where(orphan))


@contextmanager
def _import_settings(conn: Connection) -> Iterator[None]:
    """Settings for a few statements over half a million rows, in this transaction only."""
    if conn.dialect.name == "postgresql":
        # Two imports at once would both insert the same new entries: the second waits here.
        # (SQLite's BEGIN IMMEDIATE already makes writers take turns.)
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_IMPORT_LOCK})")
        # Compiling these statements to machine code (JIT) costs more than it saves.
        conn.exec_driver_sql("SET LOCAL jit = off")
        yield
        return
    # The default page cache (2 MB) is small for the indexes of 535,000 new rows: pages would
    # be written out and read back. The setting belongs to the connection: put it back.
    previous = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size = {SQLITE_CACHE_SIZE}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(previous or -2000)}")


def _stage(conn: Connection, rows: Iterable[Row | RowError], summary: ImportSummary) -> _Stager:
    """Every row into the (TEMPORARY) staging tables."""
    stager = _Stager(conn, summary)
    stager.create()
    for item in rows:
        stager.add(item)
    stager.finish()
    return stager


def _apply(session: Session, stager: _Stager, summary: ImportSummary, *, actor: str, force: bool) -> None:
    """The staged file merged into the directory, in ``session``'s transaction."""
    conn = session.connection()
    now = utcnow()
    summary.organisations = _merge(conn, table(Organisation), stager.orgs_table, ORG_FIELDS, now)
    summary.professionals = _merge(conn, table(Professional), stager.pros_table, PRO_FIELDS, now)
    _merge_mailboxes(conn, stager.mailboxes_table, now, summary, force=force)
    _remove_orphans(conn, summary)
    summary.linked = link_accounts(conn)  # mailboxes of our own accounts
    if conn.dialect.name == "postgresql":
        # Statistics for the searches' plans, committed with the data: right after an import
        # PostgreSQL would otherwise plan the directory search on empty statistics (p99
        # 404 ms against 137 ms once analysed, 535,000 rows).
        for searched in (Professional, Organisation, DirectoryMailbox):
            conn.exec_driver_sql(f"ANALYZE {table(searched).name}")
    stager.drop()
    audit.record(session, actor=actor, action="directory.import", **summary.detail())


def import_rows(
    session: Session, rows: Iterable[Row | RowError], *, actor: str = "cli", force: bool = False
) -> ImportSummary:
    """Apply a whole national file, given as parsed rows, in ``session``'s transaction."""
    conn = session.connection()
    summary = ImportSummary()
    with _import_settings(conn):
        stager = _stage(conn, rows, summary)
        _apply(session, stager, summary, actor=actor, force=force)
    return summary


def import_file(
    db: Database, lines: Iterable[str | bytes], *, actor: str = "cli", force: bool = False
) -> ImportSummary:
    """Parse and apply a national file given line by line (header first), committed once.

    On SQLite the file is staged first, in a deferred transaction that writes only TEMP
    tables (the database's write lock stays free: deliveries and flag changes go on), then
    merged in a second transaction, the only one that writes the directory: the lock is held
    for the merge alone. PostgreSQL holds no lock that matters to others: one transaction."""
    engine = db.sync_engine()
    if engine.dialect.name != "sqlite":
        with db.sync_transaction() as session:
            return import_lines(session, lines, actor=actor, force=force)
    summary = ImportSummary()
    with engine.connect() as conn:
        try:
            conn.execution_options(sqlite_begin="BEGIN")
            with conn.begin(), _import_settings(conn):
                stager = _stage(conn, read_rows(lines), summary)
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin(), _import_settings(conn), Session(bind=conn) as session:
                _apply(session, stager, summary, actor=actor, force=force)
                session.flush()
        except BaseException:
            # The directory is as it was (the merge, if it started, was rolled back); the
            # staged rows go with this connection instead of back to the pool.
            conn.invalidate()
            raise
    return summary


def import_lines(
    session: Session, lines: Iterable[str | bytes], *, actor: str = "cli", force: bool = False
) -> ImportSummary:
    """Parse and apply a national file given line by line (header first)."""
    return import_rows(session, read_rows(lines), actor=actor, force=force)
