"""``GET /directory/search`` over real HTTPS, on a directory filled by the importer from a
generated national file: name prefixes without case or accents, filters, keyset paging that
walks every result once, red-listed mailboxes never shown, errors, authentication."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from annuaire_generator import rows, structure, write
from sqlalchemy import update

from directory.annuaire import open_annuaire
from directory.importer import import_lines
from directory.tables import DirectoryMailbox, search_key

PASSWORD = "correct horse battery"
ROWS = 3000
# A professional of the ANS examples (RPPS 10102727017), with two mailboxes, one red-listed;
# and one whose only mailbox is red-listed.
RPPS = "10102727017"
KNOWN = "helene.lefevre@medecin.mssante.fr"
HIDDEN = "h.lefevre.private@medecin.mssante.fr"
SECRET = "secret.lefevre@medecin.mssante.fr"
SECRET_RPPS = "19999999990"


def person_row(
    address: str, rpps: str, family: str, given: str, place: int, specialty: str = "SM26"
) -> list[str]:
    """A PER row in the file's 31 columns."""
    p = structure(place)
    person = ["8", rpps, "8" + rpps, "DR", family, given, "C", "Civil", "10", "Médecin", specialty, "x"]
    return ["PER", address, *person[:3], *p[:2], "", *person[3:], "O", *p[2:]]


EXTRA = [
    person_row(KNOWN, RPPS, "LEFÈVRE", "Hélène", 1),
    person_row(HIDDEN, RPPS, "LEFÈVRE", "Hélène", 1),
    person_row(SECRET, SECRET_RPPS, "LEFÈVRE", "Zoé", 2),
]
RED_LISTED = {HIDDEN, SECRET}


@dataclass
class Directory:
    """What was imported: the rows (the red-listed ones left out)."""

    visible: list[list[str]]

    def addresses(self, keep: Callable[[list[str]], bool]) -> set[str]:
        return {fields[1] for fields in self.visible if keep(fields)}


async def fill_directory(server: Any, tmp_path: Path) -> Directory:
    """Import a generated file into the server's database, then red-list two mailboxes."""
    generated = [*rows(ROWS, seed=5), *EXTRA]
    path = write(tmp_path / "annuaire.txt", generated)

    def work() -> None:
        with open_annuaire(path) as lines, server.runtime.db.sync_transaction() as session:
            import_lines(session, lines, actor="test")
        with server.runtime.db.sync_transaction() as session:
            session.execute(
                update(DirectoryMailbox).where(DirectoryMailbox.address.in_(RED_LISTED)).values(red_list=True)
            )

    await asyncio.to_thread(work)
    return Directory([fields for fields in generated if fields[1] not in RED_LISTED])


async def walk(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    """Every result of a search, following ``next`` page by page."""
    found: list[dict[str, Any]] = []
    query = dict(params)
    for _ in range(1000):
        reply = await http.get("/directory/search", params=query)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert len(body["results"]) <= int(query.get("limit", 20))
        found.extend(body["results"])
        if body["next"] is None:
            return found
        query["cursor"] = body["next"]
    raise AssertionError("paging does not end")


def starts(text: str, prefix: str) -> bool:
    return (search_key(text) or "").startswith(prefix)


def family_is(prefix: str) -> Callable[[list[str]], bool]:
    return lambda f: f[0] == "PER" and starts(f[9], prefix)


async def test_prefix_ignores_case_and_accents_and_pages_walk_everything_once(directory, http):
    expected = directory.addresses(family_is("lefevre"))
    assert KNOWN in expected and len(expected) > 30
    for q in ("lefevre", "LEFÈV", "Lefèvre", "lefe"):
        found = await walk(http, q=q, limit="7")
        addresses = [hit["address"] for hit in found]
        assert len(addresses) == len(set(addresses)), "a result appears twice"
        wanted = expected if q != "lefe" else directory.addresses(family_is("lefe"))
        assert set(addresses) == wanted
    # In name order; the professional and the structure come with the mailbox.
    hit = next(h for h in found if h["address"] == KNOWN)
    assert hit["professional"]["family_name"] == "LEFÈVRE"
    assert hit["professional"]["national_id"] == "8" + RPPS
    assert hit["professional"]["specialty"]["code"] == "SM26"
    assert hit["organisation"]["name"] and hit["kind"] == "PER"
    keys = [search_key(h["professional"]["family_name"]) for h in found]
    assert keys == sorted(keys)


async def test_compound_names_and_organisations(directory, http):
    # "Le Bœuf" is found as typed without the ligature, "d'Hérouville" without the apostrophe.
    for q, prefix in (
        ("le boeuf", "le boeuf"),
        ("d herouville", "d herouville"),
        ("chevalier-gu", "chevalier gu"),
    ):
        found = await walk(http, q=q, limit="50")
        assert {h["address"] for h in found} == directory.addresses(family_is(prefix)) != set()
    # Organisations' own mailboxes by the organisation's name.
    found = await walk(http, q="clinique", limit="50")
    expected = directory.addresses(lambda f: f[0] == "ORG" and starts(f[18], "clinique"))
    assert expected and {h["address"] for h in found} == expected
    assert all(h["professional"] is None and h["organisation"]["name"] for h in found)


async def test_filters(directory, http):
    def check(expected: set[str], found: list[dict[str, Any]]) -> None:
        assert expected, "the test data should have matches"
        assert {h["address"] for h in found} == expected

    base = family_is("m")  # Martin, Moreau, Michel, Mercier, Morel, Martínez, Müller...
    check(
        directory.addresses(lambda f: base(f) and f[13] == "10"),
        await walk(http, q="m", profession="10", limit="100"),
    )
    check(
        directory.addresses(lambda f: base(f) and f[15] == "SM26"),
        await walk(http, q="m", specialty="SM26", limit="100"),
    )
    check(
        directory.addresses(lambda f: base(f) and f[28].startswith("75")),
        await walk(http, q="m", postcode="75", limit="100"),
    )
    check(
        directory.addresses(lambda f: base(f) and starts(f[27][6:], "saint denis")),
        await walk(http, q="m", town="Saint-Denis", limit="100"),
    )
    check(
        directory.addresses(lambda f: base(f) and starts(f[10], "he")),
        await walk(http, q="m", given="Hé", limit="100"),
    )
    centres = lambda f: f[0] == "ORG" and starts(f[18], "centre")  # noqa: E731
    check(directory.addresses(centres), await walk(http, q="centre", kind="org", limit="100"))
    assert await walk(http, q="centre", kind="PER") == []  # no professional called Centre...


async def test_red_listed_mailboxes_never_appear(directory, http):
    found = await walk(http, q="lefevre", limit="100")
    addresses = {h["address"] for h in found}
    assert KNOWN in addresses and not addresses & RED_LISTED
    zoes = await walk(http, q="lefevre", given="zoe", specialty="SM26")
    assert SECRET not in {h["address"] for h in zoes}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "q"),
        ({"q": "--"}, "q"),
        ({"q": "martin", "limit": "0"}, "limit"),
        ({"q": "martin", "limit": "many"}, "limit"),
        ({"q": "martin", "limit": "101"}, "limit"),
        ({"q": "martin", "kind": "XYZ"}, "kind"),
        ({"q": "martin", "cursor": "not-a-cursor"}, "cursor"),
        ({"q": "martin", "postcode": "75%"}, "postcode"),
    ],
)
async def test_bad_parameters(server, http, params, fragment):
    reply = await http.get("/directory/search", params=params)
    assert reply.status_code == 400
    assert fragment in reply.json()["error"]


async def test_authentication_is_a_setting(servers, tmp_path):
    closed = await servers.start("a")
    await fill_directory(closed, tmp_path)
    async with httpx.AsyncClient(base_url=closed.http_base, verify=closed.client_tls()) as client:
        reply = await client.get("/directory/search", params={"q": "lefevre"})
        assert reply.status_code == 401 and "error" in reply.json()
        assert reply.headers["www-authenticate"].startswith("Basic")
        reply = await client.get("/directory/search", params={"q": "lefevre"}, auth=("x@a.test", "wrong"))
        assert reply.status_code == 401
    opened = await servers.start("b", directory_search_auth=False)
    async with httpx.AsyncClient(base_url=opened.http_base, verify=opened.client_tls()) as client:
        reply = await client.get("/directory/search", params={"q": "lefevre"})
        assert reply.status_code == 200 and reply.json() == {"results": [], "next": None}
