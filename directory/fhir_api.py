"""A FHIR R4 API for the directory, under ``/fhir``, with the national API's search parameters:

    GET /fhir/Practitioner?family=&given=&name=&identifier=&mailbox-mss=&qualification-code=
    GET /fhir/PractitionerRole?practitioner=&organization=&role=&mailbox-mss=
    GET /fhir/Organization?name=&identifier=&mailbox-mss=&address-postalcode=&address-city=
    GET /fhir/{type}/{id}
    GET /fhir/metadata          the CapabilityStatement (no credentials needed)

All of them also take ``_id``, ``active`` and ``_count`` (default 50 as the national API, at
most 200). Strings match the start of the value, ignoring case and accents (FHIR's default
string search); tokens are ``system|code`` or ``code``; a comma means "or", a repeated
parameter "and". ``identifier`` takes the OID of national ids (``urn:oid:1.2.250.1.71.4.2.1|
810102727017``), ``http://rpps.fr|<RPPS>``, or a bare value (the national id, or an RPPS/ADELI
without its type prefix). Paging follows ``Bundle.link`` ``next`` (its ``_cursor`` is the last
id given: keyset paging, see ``directory.search``).

Answers are ``application/fhir+json``; errors an ``OperationOutcome``: 400 for a parameter we
do not know or cannot read (servers may ignore unknown ones, but a client that misspells
``family`` had better hear it than get the whole directory), 404 for an unknown id.
"""

# No "from __future__ import annotations": FastAPI reads the annotations at run time.

import importlib.metadata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from fhir.resources.R4B.resource import Resource
from sqlalchemy import ColumnElement, or_

from directory import fhir
from directory.search import (
    BOXES,
    ORGS,
    PROS,
    ResourceQuery,
    SearchError,
    always,
    national_ids,
    never,
    normalised,
    org_mailbox,
    organizations,
    practitioners,
    pro_mailbox,
    roles,
    starts_with,
    unindexed,
)
from openmss.db.engine import Database
from openmss.db.reads import Reads

DEFAULT_COUNT, MAX_COUNT = 50, 200
# Parameters matched by a range on a name (or postcode) index: see ResourceQuery.by_range.
RANGES = frozenset({"family", "given", "name", "address-city", "address-postalcode"})
# Parameters about the answer, not the match: accepted and left alone.
IGNORED = frozenset({"_format", "_pretty"})

Condition = Callable[[str], ColumnElement[bool]]
Gate = Callable[[Request], Awaitable[None]]


def _token(value: str) -> tuple[str | None, str]:
    system, bar, code = value.rpartition("|")
    return (system or None) if bar else None, code


def _number(value: str) -> int:
    """A resource id: ours are numbers; anything else can match nothing."""
    return int(value) if value.isdigit() and len(value) < 19 else -1


def _reference(kind: str, value: str) -> int:
    return _number(value.removeprefix(f"{kind}/"))


def _active(value: str) -> ColumnElement[bool]:
    if value not in ("true", "false"):
        raise SearchError("active: true or false")
    return always() if value == "true" else never()  # only active entries are listed


def _identifier(column: Any, oid: str, rpps: bool) -> Condition:
    def condition(value: str) -> ColumnElement[bool]:
        system, code = _token(value)
        if system is None:
            return column.in_(national_ids(code))  # type: ignore[no-any-return]
        if system == oid:
            return column == code  # type: ignore[no-any-return]
        if rpps and system == fhir.RPPS_SYSTEM:
            return column == fhir.RPPS_PREFIX + code  # type: ignore[no-any-return]
        return never()

    return condition


def _qualification(value: str) -> ColumnElement[bool]:
    system, code = _token(value)
    # Not by their indexes: a profession covers a sixth of the directory, sorting it by id
    # costs far more than walking the ids until a page is full.
    profession, specialty = unindexed(PROS.c.profession_code), unindexed(PROS.c.specialty_code)
    if system is None:
        return or_(profession == code, specialty == code)
    if system == fhir.TRE_G15:
        return profession == code  # type: ignore[no-any-return]
    if system == fhir.TRE_R38:
        return specialty == code  # type: ignore[no-any-return]
    return never()


def _role(value: str) -> ColumnElement[bool]:
    system, code = _token(value)
    if system not in (None, fhir.TRE_G15):
        return never()
    return unindexed(PROS.c.profession_code) == code  # type: ignore[no-any-return]


def _prefix(column: Any, what: str) -> Condition:
    return lambda value: starts_with(column, normalised(value, what))


PRACTITIONER: dict[str, Condition] = {
    "_id": lambda value: PROS.c.id == _number(value),
    "active": _active,
    "family": _prefix(PROS.c.family_norm, "family"),
    "given": _prefix(PROS.c.given_norm, "given"),
    "name": lambda value: or_(
        starts_with(PROS.c.family_norm, normalised(value, "name")),
        starts_with(PROS.c.given_norm, normalised(value, "name")),
    ),
    "identifier": _identifier(PROS.c.national_id, fhir.OID_IDNPS, rpps=True),
    "mailbox-mss": pro_mailbox,
    "qualification-code": _qualification,
}
ROLE: dict[str, Condition] = {
    "_id": lambda value: BOXES.c.id == _number(value),
    "active": _active,
    "practitioner": lambda value: BOXES.c.professional_id == _reference("Practitioner", value),
    "organization": lambda value: BOXES.c.organisation_id == _reference("Organization", value),
    "role": _role,
    "mailbox-mss": lambda value: BOXES.c.address == value.strip().lower(),
}
ORGANIZATION: dict[str, Condition] = {
    "_id": lambda value: ORGS.c.id == _number(value),
    "active": _active,
    "name": _prefix(ORGS.c.name_norm, "name"),
    "identifier": _identifier(ORGS.c.national_id, fhir.OID_IDNST, rpps=False),
    "mailbox-mss": org_mailbox,
    "address-postalcode": lambda value: starts_with(ORGS.c.postcode, value.strip()),
    "address-city": _prefix(ORGS.c.town_norm, "address-city"),
}


def parse(
    params: Sequence[tuple[str, str]], known: dict[str, Condition], orders: dict[str, Any] | None = None
) -> ResourceQuery:
    """The query of a search's parameters; ``orders``: the parameters whose name range may
    give the order of the results (the first one given does)."""
    query = ResourceQuery(count=DEFAULT_COUNT)
    orders = orders or {}
    cursor = None
    for name, value in params:
        if name in IGNORED:
            continue
        if name == "_count":
            if not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
                raise SearchError(f"_count: a number between 1 and {MAX_COUNT}")
            query.count = int(value)
        elif name == "_cursor":
            cursor = value
        elif name in known:
            query.by_range = query.by_range or name in RANGES
            if query.order is None and name in orders and "," not in value:
                query.order = orders[name]
            if not value:
                raise SearchError(f"{name}: a value is required")
            alternatives = [known[name](part) for part in value.split(",")]
            query.conditions.append(or_(*alternatives) if len(alternatives) > 1 else alternatives[0])
        else:
            supported = ", ".join(sorted(known))
            raise SearchError(f"unknown search parameter {name!r} (supported: {supported}, _count)")
    if cursor is not None:
        query.resume(cursor)
    return query


@dataclass(frozen=True)
class Kind:
    """One resource type: its parameters and how a page of it is read."""

    params: dict[str, Condition]
    page: Callable[[Reads, ResourceQuery], Awaitable[tuple[list[fhir.Json], str | None]]]
    orders: dict[str, Any]


async def _practitioners(reads: Reads, query: ResourceQuery) -> tuple[list[fhir.Json], str | None]:
    rows, boxes, next_cursor = await practitioners(reads, query)
    return [fhir.practitioner(row, boxes[row.id]) for row in rows], next_cursor


async def _roles(reads: Reads, query: ResourceQuery) -> tuple[list[fhir.Json], str | None]:
    rows, next_cursor = await roles(reads, query)
    return [fhir.practitioner_role(row) for row in rows], next_cursor


async def _organizations(reads: Reads, query: ResourceQuery) -> tuple[list[fhir.Json], str | None]:
    rows, boxes, next_cursor = await organizations(reads, query)
    return [fhir.organization(row, boxes[row.id]) for row in rows], next_cursor


KINDS = {
    "Practitioner": Kind(
        PRACTITIONER, _practitioners, {"family": PROS.c.family_norm, "given": PROS.c.given_norm}
    ),
    "PractitionerRole": Kind(ROLE, _roles, {}),
    "Organization": Kind(
        ORGANIZATION, _organizations, {"name": ORGS.c.name_norm, "address-city": ORGS.c.town_norm}
    ),
}


# The FHIR type of each search parameter, for the CapabilityStatement.
PARAM_TYPES = {
    "family": "string", "given": "string", "name": "string", "address-city": "string",
    "address-postalcode": "string", "practitioner": "reference", "organization": "reference",
}  # fmt: skip


def _capabilities(base: str, secured: bool, published: str) -> fhir.Json:
    kinds = {
        name: {param: PARAM_TYPES.get(param, "token") for param in kind.params} | {"_count": "number"}
        for name, kind in KINDS.items()
    }
    return fhir.capability_statement(
        base, kinds, secured=secured, software_version=_version(), published=published
    )


def _version() -> str:
    try:
        return importlib.metadata.version("openmss")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _fhir(
    resource: fhir.Json | Resource, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(fhir.to_json(resource), status_code=status, media_type=fhir.FHIR_JSON, headers=headers)


def _failure(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _fhir(fhir.validate(fhir.outcome(code, message)), status, headers)


_AUTH_CODES = {401: "login", 403: "forbidden", 429: "throttled"}


def fhir_router(db: Database, gate: Gate, *, secured: bool = True) -> APIRouter:
    """``secured``: whether ``gate`` asks for credentials (said in the CapabilityStatement)."""
    router = APIRouter(prefix="/fhir", tags=["directory (FHIR)"])
    published = datetime.now(UTC).date().isoformat()

    async def refused(request: Request) -> Response | None:
        try:
            await gate(request)
        except HTTPException as exc:
            code = _AUTH_CODES.get(exc.status_code, "security")
            return _failure(exc.status_code, code, str(exc.detail), exc.headers)
        return None

    @router.get("/metadata")
    async def metadata(request: Request) -> Response:
        """The CapabilityStatement (FHIR RESTful ``capabilities``), open to anyone: clients read
        it before they log in."""
        base = str(request.base_url).rstrip("/") + "/fhir"
        return _fhir(fhir.validate(_capabilities(base, secured, published)))

    @router.get("/{resource_type}")
    async def search_resources(request: Request, resource_type: str) -> Response:
        """Search (FHIR RESTful search, GET): a ``searchset`` Bundle, paged by ``Bundle.link``."""
        if (denied := await refused(request)) is not None:
            return denied
        kind = KINDS.get(resource_type)
        if kind is None:
            return _failure(404, "not-supported", f"no resource type {resource_type!r} here")
        params = request.query_params.multi_items()
        try:
            query = parse(params, kind.params, kind.orders)
            async with db.reads() as reads:
                resources, cursor = await kind.page(reads, query)
        except SearchError as exc:
            return _failure(400, "invalid", str(exc))
        base = str(request.base_url).rstrip("/") + "/fhir"
        kept = [(name, value) for name, value in params if name != "_cursor"]
        url = f"{base}/{resource_type}"
        self_url = f"{url}?{urlencode(params)}" if params else url
        next_url = None
        if cursor is not None:
            next_url = f"{url}?{urlencode([*kept, ('_cursor', cursor)])}"
        # Not validated here: see directory.fhir (the cost of fhir.resources on a page).
        return _fhir(fhir.searchset(base, resources, self_url, next_url))

    @router.get("/{resource_type}/{resource_id}")
    async def read_resource(request: Request, resource_type: str, resource_id: str) -> Response:
        """Read (FHIR RESTful read): the resource, or an OperationOutcome with 404."""
        if (denied := await refused(request)) is not None:
            return denied
        kind = KINDS.get(resource_type)
        if kind is None:
            return _failure(404, "not-supported", f"no resource type {resource_type!r} here")
        query = ResourceQuery(conditions=[kind.params["_id"](resource_id)], count=1)
        async with db.reads() as reads:
            resources, _ = await kind.page(reads, query)
        if not resources:
            return _failure(404, "not-found", f"{resource_type}/{resource_id} is not known")
        return _fhir(fhir.validate(resources[0]))  # one resource: cheap enough to check

    return router
