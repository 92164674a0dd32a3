"""Directory search: the queries behind ``/directory/search`` and the FHIR API (``/fhir``).

Names are found by prefix on the ``*_norm`` columns (``directory.tables.search_key``: lower
case, no accents), each as ``LIKE 'prefix%'``, the pattern written into the SQL
(``starts_with``): with the literal both databases turn it into a range on the column's
index. The strings ``search_key`` makes hold no LIKE wildcard (``%`` and ``_`` become
spaces), so nothing needs escaping.

Red-listed mailboxes never appear, nor anyone whose every mailbox is red-listed.

Paging is by key (keyset), never by offset: a page costs the same at the 1st or the 500th
page, and an import running between two pages neither repeats nor skips rows before the cursor.

* ``/directory/search`` lists mailboxes in name order: mailboxes of professionals by family
  name (``family_norm``, then professional id, then mailbox id: the index on ``family_norm``
  holds the row id after the key, so the scan yields that order without a sort on SQLite), and
  mailboxes of organisations (no professional) by organisation name. The two are read with
  one query each, ``limit + 1`` rows, and merged here; the cursor is the sort key of the last
  row given: ``(name key, side, owner id, mailbox id)``.
* FHIR searches list resources by id, or by name then id when they search a name (see
  ``ResourceQuery``).

The statements' fixed parts (columns, joins, the keyset condition) are built once at import,
with ``bindparam``; a request adds the conditions it has (only those given). The name range
must drive the query: the other filters (profession, postcode, mailbox type...) are wrapped so
that no index is used for them (``unindexed``), because SQLite, which plans without statistics,
would otherwise start from an equality on a large set (a sixth of the directory for a
profession) and sort it. SQLAlchemy caches the compiled SQL of each shape.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    exists,
    false,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.visitors import InternalTraversal

from directory.tables import DirectoryMailbox, Organisation, Professional, search_key
from openmss.db.base import table
from openmss.db.reads import Reads

PROS = table(Professional)
ORGS = table(Organisation)
BOXES = table(DirectoryMailbox)

KINDS = frozenset({"PER", "ORG", "APP", "CAB"})  # TRE_R257
MAX_LIMIT = 100


class SearchError(ValueError):
    """A parameter the search cannot use (the APIs answer 400)."""


# Prefix conditions -------------------------------------------------------------------------


def normalised(text: str, what: str) -> str:
    key = search_key(text)
    if not key:
        raise SearchError(f"{what}: give at least one letter or digit")
    return key


def starts_with(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix`` (already a ``search_key``): ``LIKE 'prefix%'``.

    The pattern is written into the SQL (``literal_execute``; safe: letters, digits and
    spaces): both databases turn a LIKE into a range on the column's index only when they see
    the pattern (SQLite plans a statement without its parameters), and PostgreSQL estimates
    from it how many rows the range holds."""
    return column.like(bindparam(None, prefix + "%", type_=column.type, literal_execute=True))  # type: ignore[no-any-return]


class _Unindexed(ColumnElement[Any]):
    """See ``unindexed``."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _unindexed_sqlite(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    # SQLite's unary + changes nothing, not even the collation, but hides the index.
    return f"+{compiler.process(element.column, **kw)}"


@compiles(_Unindexed, "postgresql")
def _unindexed_postgresql(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


def unindexed(column: Any) -> Any:
    """``column`` such that SQLite uses no index for it (``+column``): SQLite plans without
    statistics and prefers any equality (``kind = 'PER'``, a profession...) to a range, then
    sorts tens of thousands of rows; the name range, which yields rows in the order asked, is
    what must drive these searches. PostgreSQL gets the bare column: it has statistics to
    choose with, and an expression would blind them."""
    return _Unindexed(column)


VISIBLE_BOX = BOXES.c.red_list.is_(false())


# /directory/search ---------------------------------------------------------------------------

PRO_SIDE, ORG_SIDE = 0, 1  # professionals' mailboxes sort before organisations' on equal keys

_BOX_COLUMNS = (
    BOXES.c.id.label("box_id"),
    BOXES.c.address,
    BOXES.c.kind,
    BOXES.c.service,
    BOXES.c.accepts_documents,
)
_ORG_COLUMNS = (
    ORGS.c.id.label("org_id"),
    ORGS.c.national_id.label("org_national_id"),
    ORGS.c.name.label("org_name"),
    ORGS.c.postcode,
    ORGS.c.town,
)
_PRO_COLUMNS = (
    PROS.c.id.label("pro_id"),
    PROS.c.national_id.label("pro_national_id"),
    PROS.c.civility,
    PROS.c.family_name,
    PROS.c.given_name,
    PROS.c.profession_code,
    PROS.c.profession_label,
    PROS.c.specialty_code,
    PROS.c.specialty_label,
)


def _keyset(key: ColumnClause[Any], owner: ColumnClause[Any]) -> ColumnElement[bool]:
    """After the cursor ``(:key, :side, :owner, :box)``, for one side: ``:later_side`` /
    ``:same_side`` say how this side compares with the cursor's. ``key >= :key`` is repeated
    apart so that the planner sees a range on the index."""
    return and_(
        key >= bindparam("after_key"),
        or_(
            key > bindparam("after_key"),
            bindparam("later_side"),
            and_(
                bindparam("same_side"),
                or_(
                    owner > bindparam("after_owner"),
                    and_(owner == bindparam("after_owner"), BOXES.c.id > bindparam("after_box")),
                ),
            ),
        ),
    )


_PRO_BASE: Select[Any] = (
    select(PROS.c.family_norm.label("sort_key"), *_BOX_COLUMNS, *_PRO_COLUMNS, *_ORG_COLUMNS)
    .select_from(
        PROS.join(BOXES, BOXES.c.professional_id == PROS.c.id).outerjoin(
            ORGS, ORGS.c.id == BOXES.c.organisation_id
        )
    )
    .where(VISIBLE_BOX, _keyset(PROS.c.family_norm, PROS.c.id))
    .order_by(PROS.c.family_norm, PROS.c.id, BOXES.c.id)
    .limit(bindparam("limit"))
)
_ORG_BASE: Select[Any] = (
    select(ORGS.c.name_norm.label("sort_key"), *_BOX_COLUMNS, *_ORG_COLUMNS)
    .select_from(ORGS.join(BOXES, BOXES.c.organisation_id == ORGS.c.id))
    .where(VISIBLE_BOX, unindexed(BOXES.c.professional_id).is_(None), _keyset(ORGS.c.name_norm, ORGS.c.id))
    .order_by(ORGS.c.name_norm, ORGS.c.id, BOXES.c.id)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True)
class Cursor:
    key: str
    side: int
    owner: int
    box: int

    def encode(self) -> str:
        raw = json.dumps([self.key, self.side, self.owner, self.box], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            key, side, owner, box = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise SearchError("cursor: not one this server gave") from None
        if not (isinstance(key, str) and side in (PRO_SIDE, ORG_SIDE)):
            raise SearchError("cursor: not one this server gave")
        if not (isinstance(owner, int) and isinstance(box, int)):
            raise SearchError("cursor: not one this server gave")
        return cls(key, side, owner, box)


@dataclass(frozen=True)
class SearchQuery:
    """What ``/directory/search`` was asked. ``q`` is the start of a family name or of an
    organisation's name (``"lefevre"`` finds Lefèvre, ``"le boeuf"`` Le Bœuf); ``given``
    narrows professionals to a given-name prefix; ``postcode`` is a prefix too ("75": Paris)."""

    q: str
    given: str | None = None
    profession: str | None = None  # TRE_G15 code
    specialty: str | None = None  # TRE_R38 code
    postcode: str | None = None
    town: str | None = None
    kind: str | None = None  # TRE_R257: PER, ORG, APP, CAB
    limit: int = 20
    cursor: str | None = None


@dataclass
class SearchPage:
    results: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


def _organisation_filters(query: SearchQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.postcode:
        postcode = query.postcode.strip()
        if not postcode.isalnum() or len(postcode) > 10:
            raise SearchError("postcode: digits (a prefix such as 75 or 75013)")
        conditions.append(starts_with(unindexed(ORGS.c.postcode), postcode))
    if query.town:
        conditions.append(starts_with(unindexed(ORGS.c.town_norm), normalised(query.town, "town")))
    if query.kind:
        conditions.append(unindexed(BOXES.c.kind) == query.kind)
    return conditions


def _statements(query: SearchQuery, key: str) -> list[tuple[int, Select[Any]]]:
    """The queries of the sides that can match, with the request's filters."""
    if query.kind is not None and query.kind not in KINDS:
        raise SearchError(f"kind: one of {', '.join(sorted(KINDS))}")
    common = _organisation_filters(query)
    statements: list[tuple[int, Select[Any]]] = []
    pro = [starts_with(PROS.c.family_norm, key), *common]
    if query.given:
        pro.append(starts_with(unindexed(PROS.c.given_norm), normalised(query.given, "given")))
    if query.profession:
        pro.append(unindexed(PROS.c.profession_code) == query.profession)
    if query.specialty:
        pro.append(unindexed(PROS.c.specialty_code) == query.specialty)
    statements.append((PRO_SIDE, _PRO_BASE.where(*pro)))
    # Organisations' own mailboxes have no profession, specialty or given name.
    if not (query.given or query.profession or query.specialty or query.kind == "PER"):
        statements.append((ORG_SIDE, _ORG_BASE.where(starts_with(ORGS.c.name_norm, key), *common)))
    return statements


def _hit(side: int, row: Any) -> dict[str, Any]:
    organisation = (
        None
        if row.org_id is None
        else {
            "id": row.org_id,
            "national_id": row.org_national_id,
            "name": row.org_name,
            "postcode": row.postcode,
            "town": row.town,
        }
    )
    professional = (
        None
        if side != PRO_SIDE
        else {
            "id": row.pro_id,
            "national_id": row.pro_national_id,
            "civility": row.civility,
            "family_name": row.family_name,
            "given_name": row.given_name,
            "profession": {"code": row.profession_code, "label": row.profession_label}
            if row.profession_code
            else None,
            "specialty": {"code": row.specialty_code, "label": row.specialty_label}
            if row.specialty_code
            else None,
        }
    )
    return {
        "address": row.address,
        "kind": row.kind,
        "service": row.service,
        "accepts_documents": row.accepts_documents,
        "professional": professional,
        "organisation": organisation,
    }


async def search(reads: Reads, query: SearchQuery) -> SearchPage:
    """One page of mailboxes matching ``query``, in name order."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise SearchError(f"limit: between 1 and {MAX_LIMIT}")
    key = normalised(query.q, "q")
    after = Cursor.decode(query.cursor) if query.cursor else Cursor("", -1, 0, 0)
    found: list[tuple[tuple[str, int, int, int], dict[str, Any]]] = []
    for side, statement in _statements(query, key):
        params = {
            # The cursor's key only: on the first page, "" (the LIKE gives the range; repeating it
            # would make PostgreSQL count its selectivity twice and misjudge the plan).
            "after_key": after.key,
            "later_side": side > after.side,
            "same_side": side == after.side,
            "after_owner": after.owner,
            "after_box": after.box,
            "limit": query.limit + 1,
        }
        for row in await reads.rows(statement, params):
            owner = row.pro_id if side == PRO_SIDE else row.org_id
            found.append(((row.sort_key, side, owner, row.box_id), _hit(side, row)))
    found.sort(key=lambda item: item[0])
    page = SearchPage([hit for _, hit in found[: query.limit]])
    if len(found) > query.limit:
        page.next_cursor = Cursor(*found[query.limit - 1][0]).encode()
    return page


# FHIR ----------------------------------------------------------------------------------------


@dataclass
class ResourceQuery:
    """The conditions of one FHIR search, ANDed, and its page: ``count`` resources after the
    cursor ``(after_key, after)``.

    Resources come in id order, except when the search has a name range (``family``,
    ``name`` of an organisation...): then in the order of that name (``order``), then id,
    so that the name's index gives the rows in order and the page stops early. In id order,
    SQLite would walk the primary key through the whole table for a rare name; sorting every
    "Martin" by id, for each page, would cost as much the other way."""

    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    count: int = 50
    order: Any = None  # a *_norm column
    after_key: str = ""
    after: int = 0
    # A condition is a name range but none gives the order ("name": family or given): the
    # keyset on the id must then not use the primary key (see ``_listing``).
    by_range: bool = False

    def cursor(self, row: Any) -> str:
        """The cursor after ``row``, the last of a page."""
        key = getattr(row, self.order.name) if self.order is not None else ""
        raw = json.dumps([key, row.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def resume(self, cursor: str) -> None:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            key, after = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise SearchError("_cursor: not one this server gave") from None
        if not isinstance(key, str) or not isinstance(after, int):
            raise SearchError("_cursor: not one this server gave")
        self.after_key, self.after = key, after


PRO_VISIBLE = exists().where(BOXES.c.professional_id == PROS.c.id, VISIBLE_BOX)
ORG_VISIBLE = exists().where(BOXES.c.organisation_id == ORGS.c.id, VISIBLE_BOX)
ROLE_BOX = and_(BOXES.c.professional_id.is_not(None), VISIBLE_BOX)


@dataclass(frozen=True)
class _Listing:
    """A resource's rows (``base``, visible ones only) and its id column."""

    base: Select[Any]
    key: Any

    def page(self, query: ResourceQuery) -> Select[Any]:
        base = self.base.where(*query.conditions).limit(bindparam("limit"))
        after: Any = bindparam("after")
        if query.order is not None:
            by, after_key = query.order, bindparam("after_key", type_=String())
            # ``>=`` apart: the range the planner needs; the id part hidden from it.
            keyset = and_(by >= after_key, or_(by > after_key, unindexed(self.key) > after))
            return base.where(keyset).order_by(by, self.key)
        # A name range without an order of its own: the planner must take that range, not the
        # primary key (it would walk the table for a rare name), then sort it.
        keyset = unindexed(self.key) > after if query.by_range else self.key > after
        return base.where(keyset).order_by(self.key)


_PRACTITIONERS = _Listing(select(PROS).where(PRO_VISIBLE), PROS.c.id)
_ORGANIZATIONS = _Listing(select(ORGS).where(ORG_VISIBLE), ORGS.c.id)
_ROLES = _Listing(
    select(BOXES, *_PRO_COLUMNS, ORGS.c.name.label("org_name"))
    .select_from(
        BOXES.join(PROS, PROS.c.id == BOXES.c.professional_id).outerjoin(
            ORGS, ORGS.c.id == BOXES.c.organisation_id
        )
    )
    .where(ROLE_BOX),
    BOXES.c.id,
)
# The visible mailboxes of a page of practitioners, of organisations (their own: no
# professional), for their telecom entries.
_PRO_BOXES = (
    select(BOXES)
    .where(BOXES.c.professional_id.in_(bindparam("ids", expanding=True)), VISIBLE_BOX)
    .order_by(BOXES.c.id)
)
_ORG_BOXES = (
    select(BOXES)
    .where(
        BOXES.c.organisation_id.in_(bindparam("ids", expanding=True)),
        BOXES.c.professional_id.is_(None),
        VISIBLE_BOX,
    )
    .order_by(BOXES.c.id)
)


async def _page(reads: Reads, listing: _Listing, query: ResourceQuery) -> tuple[Sequence[Any], str | None]:
    """A page of rows and the cursor of the next page (None: this is the last)."""
    params = {"after": query.after, "after_key": query.after_key, "limit": query.count + 1}
    rows = await reads.rows(listing.page(query), params)
    if len(rows) <= query.count:
        return rows, None
    return rows[: query.count], query.cursor(rows[query.count - 1])


async def practitioners(
    reads: Reads, query: ResourceQuery
) -> tuple[Sequence[Any], dict[int, list[Any]], str | None]:
    """A page of professionals, their visible mailboxes by professional id, and whether next_cursor follow."""
    rows, next_cursor = await _page(reads, _PRACTITIONERS, query)
    boxes: dict[int, list[Any]] = {row.id: [] for row in rows}
    if rows:
        for box in await reads.rows(_PRO_BOXES, {"ids": list(boxes)}):
            boxes[box.professional_id].append(box)
    return rows, boxes, next_cursor


async def organizations(
    reads: Reads, query: ResourceQuery
) -> tuple[Sequence[Any], dict[int, list[Any]], str | None]:
    rows, next_cursor = await _page(reads, _ORGANIZATIONS, query)
    boxes: dict[int, list[Any]] = {row.id: [] for row in rows}
    if rows:
        for box in await reads.rows(_ORG_BOXES, {"ids": list(boxes)}):
            boxes[box.organisation_id].append(box)
    return rows, boxes, next_cursor


async def roles(reads: Reads, query: ResourceQuery) -> tuple[Sequence[Any], str | None]:
    """A page of PractitionerRoles: one per visible mailbox of a professional."""
    return await _page(reads, _ROLES, query)


# Conditions the FHIR API combines (each one uses an index) ------------------------------------


def national_ids(value: str) -> list[str]:
    """A plain identifier: the national id itself, or an RPPS, ADELI, FINESS... given without
    its one-digit type prefix (``10102727017`` is ``810102727017``)."""
    return [value, *(digit + value for digit in "0123456789")]


def pro_mailbox(address: str) -> ColumnElement[bool]:
    return PROS.c.id.in_(
        select(BOXES.c.professional_id).where(BOXES.c.address == address.strip().lower(), VISIBLE_BOX)
    )


def org_mailbox(address: str) -> ColumnElement[bool]:
    return ORGS.c.id.in_(
        select(BOXES.c.organisation_id).where(
            BOXES.c.address == address.strip().lower(), BOXES.c.professional_id.is_(None), VISIBLE_BOX
        )
    )


def never() -> ColumnElement[bool]:
    """A condition nothing meets (an identifier of a system we do not hold)."""
    return false()


def always() -> ColumnElement[bool]:
    return true()
