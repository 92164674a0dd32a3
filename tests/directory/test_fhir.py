"""The FHIR R4 API (``/fhir``) over real HTTPS, on a directory filled by the importer: every
answer parses with ``fhir.resources``; searches by family name, national id / RPPS and
mailbox find the right resources; paging by ``Bundle.link`` walks every result once;
red-listed mailboxes never appear; OperationOutcome with 400 and 404."""

from __future__ import annotations

from typing import Any

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.practitioner import Practitioner
from test_search import KNOWN, PASSWORD, RPPS, SECRET, SECRET_RPPS, Directory, starts

from directory import fhir

OID = "urn:oid:1.2.250.1.71.4.2.1"


async def bundle(http: httpx.AsyncClient, url: str, params: dict[str, str] | None = None) -> Bundle:
    reply = await http.get(url, params=params)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/fhir+json")
    found = Bundle.model_validate_json(reply.content)
    assert found.type == "searchset"
    return found


async def walk(http: httpx.AsyncClient, url: str, params: dict[str, str]) -> list[Any]:
    """Every resource of a search, following ``Bundle.link`` ``next`` until there is none."""
    resources: list[Any] = []
    page = await bundle(http, url, params)
    for _ in range(1000):
        resources.extend(entry.resource for entry in page.entry or [])
        following = [link.url for link in page.link or [] if link.relation == "next"]
        if not following:
            return resources
        page = await bundle(http, str(following[0]))
    raise AssertionError("paging does not end")


def national_id(resource: Practitioner) -> str:
    return next(str(i.value) for i in resource.identifier or [] if i.system == OID)


def mailboxes(resource: Any) -> set[str]:
    return {str(t.value) for t in resource.telecom or []}


def people(directory: Directory, prefix: str) -> set[str]:
    return {f[4] for f in directory.visible if f[0] == "PER" and starts(f[9], prefix)}


async def test_family_search_pages_walk_every_practitioner_once(directory, http):
    expected = people(directory, "lefevre")
    assert "8" + RPPS in expected and "8" + SECRET_RPPS not in expected
    found = await walk(http, "/fhir/Practitioner", {"family": "lefèvre", "_count": "4"})
    ids = [national_id(p) for p in found]
    assert len(ids) == len(set(ids)), "a practitioner appears twice"
    assert set(ids) == expected
    assert len({p.id for p in found}) == len(found)
    # Without the accent or the case, and through "name" too (family or given).
    again = await walk(http, "/fhir/Practitioner", {"family": "LEFEVRE", "_count": "50"})
    assert {national_id(p) for p in again} == expected
    by_name = await walk(http, "/fhir/Practitioner", {"name": "lefevre", "_count": "7"})
    assert {national_id(p) for p in by_name} == expected
    # The whole walk in id order as well (a search with no name).
    codes = await walk(http, "/fhir/Practitioner", {"qualification-code": "SM26", "_count": "9"})
    expected_codes = {f[4] for f in directory.visible if f[0] == "PER" and f[15] == "SM26"}
    assert [national_id(p) for p in codes] and {national_id(p) for p in codes} == expected_codes
    assert len(codes) == len(expected_codes)


async def test_identifier_and_mailbox_searches(directory, http):
    for value in (f"{OID}|8{RPPS}", f"8{RPPS}", RPPS, f"http://rpps.fr|{RPPS}"):
        found = await walk(http, "/fhir/Practitioner", {"identifier": value})
        assert [national_id(p) for p in found] == ["8" + RPPS], value
    practitioner = found[0]
    assert practitioner.name[0].family == "LEFÈVRE" and practitioner.name[0].given == ["Hélène"]
    assert mailboxes(practitioner) == {KNOWN}  # the red-listed one is not shown
    telecom = practitioner.telecom[0]
    assert telecom.system == "email"
    email_type = next(e for e in telecom.extension if e.url == fhir.EMAIL_TYPE)
    assert (email_type.valueCoding.system, email_type.valueCoding.code) == (fhir.TRE_R256, "MSSANTE")
    qualifications = {(q.code.coding[0].system, q.code.coding[0].code) for q in practitioner.qualification}
    assert qualifications == {(fhir.TRE_G15, "10"), (fhir.TRE_R38, "SM26")}
    # Another system's identifier, or one nobody has: an empty bundle.
    assert await walk(http, "/fhir/Practitioner", {"identifier": f"urn:oid:1.2.3|8{RPPS}"}) == []
    assert await walk(http, "/fhir/Practitioner", {"identifier": "812345678901"}) == []
    # By mailbox, in any case; several values separated by commas mean "or".
    found = await walk(http, "/fhir/Practitioner", {"mailbox-mss": KNOWN.upper()})
    assert [national_id(p) for p in found] == ["8" + RPPS]
    other = next(f for f in directory.visible if f[0] == "PER" and f[4] != "8" + RPPS)
    found = await walk(http, "/fhir/Practitioner", {"mailbox-mss": f"{KNOWN},{other[1]}"})
    assert {national_id(p) for p in found} == {"8" + RPPS, other[4]}
    # Repeated parameters mean "and".
    both = {"family": "lef", "given": "hel", "identifier": RPPS}
    assert [national_id(p) for p in await walk(http, "/fhir/Practitioner", both)] == ["8" + RPPS]
    # The practitioner's roles: one per visible mailbox, each with its organisation.
    roles = await walk(http, "/fhir/PractitionerRole", {"practitioner": f"Practitioner/{practitioner.id}"})
    assert [mailboxes(r) for r in roles] == [{KNOWN}]
    assert roles[0].code[0].coding[0].code == "10"
    organization_ref = roles[0].organization.reference
    reply = await http.get(f"/fhir/{organization_ref}")
    assert reply.status_code == 200
    Organization.model_validate_json(reply.content)
    found = await walk(http, "/fhir/PractitionerRole", {"mailbox-mss": KNOWN})
    assert [r.id for r in found] == [roles[0].id]


async def test_red_listed_mailboxes_never_appear(directory, http):
    assert await walk(http, "/fhir/Practitioner", {"mailbox-mss": SECRET}) == []
    assert await walk(http, "/fhir/PractitionerRole", {"mailbox-mss": SECRET}) == []
    assert await walk(http, "/fhir/Practitioner", {"identifier": SECRET_RPPS}) == []
    found = await walk(http, "/fhir/Practitioner", {"family": "lefevre", "given": "zoe", "_count": "100"})
    assert "8" + SECRET_RPPS not in {national_id(p) for p in found}


async def test_organizations(directory, http):
    expected = {f[6] for f in directory.visible if starts(f[18], "clinique") and f[28].startswith("75")}
    found = await walk(
        http, "/fhir/Organization", {"name": "Clinique", "address-postalcode": "75", "_count": "3"}
    )
    assert expected and {o.identifier[0].value[1:] for o in found} == expected
    assert all(o.address[0].postalCode.startswith("75") for o in found)
    org_box = next(f for f in directory.visible if f[0] == "ORG")
    found = await walk(http, "/fhir/Organization", {"mailbox-mss": org_box[1]})
    assert len(found) == 1 and org_box[1] in mailboxes(found[0])
    assert found[0].identifier[0].system == "urn:oid:1.2.250.1.71.4.2.2"


async def test_read_and_errors(directory, http):
    [practitioner] = await walk(http, "/fhir/Practitioner", {"identifier": RPPS})
    reply = await http.get(f"/fhir/Practitioner/{practitioner.id}")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/fhir+json")
    assert Practitioner.model_validate_json(reply.content).id == practitioner.id
    for url, status in [
        ("/fhir/Practitioner/999999999", 404),
        ("/fhir/Practitioner/not-an-id", 404),
        ("/fhir/Patient/1", 404),
        ("/fhir/Practitioner?famly=martin", 400),
        ("/fhir/Practitioner?family:exact=martin", 400),
        ("/fhir/Practitioner?family=", 400),
        ("/fhir/Practitioner?family=--", 400),
        ("/fhir/Practitioner?_count=0", 400),
        ("/fhir/Practitioner?_count=lots", 400),
        ("/fhir/Practitioner?family=martin&_cursor=bogus", 400),
        ("/fhir/Organization?active=maybe", 400),
    ]:
        reply = await http.get(url)
        assert reply.status_code == status, url
        assert reply.headers["content-type"].startswith("application/fhir+json")
        outcome = OperationOutcome.model_validate_json(reply.content)
        assert outcome.issue[0].severity == "error"
    # The practitioner whose only mailbox is red-listed is not there at all.
    secret = await walk(http, "/fhir/Practitioner", {"family": "lefevre", "_count": "100"})
    assert all(national_id(p) != "8" + SECRET_RPPS for p in secret)


async def test_authentication(directory, server):
    async with httpx.AsyncClient(base_url=server.http_base, verify=server.client_tls()) as client:
        reply = await client.get("/fhir/Practitioner", params={"family": "martin"})
    assert reply.status_code == 401 and reply.headers["www-authenticate"].startswith("Basic")
    assert OperationOutcome.model_validate_json(reply.content).issue[0].code == "login"


async def test_capability_statement(server):
    """``/fhir/metadata`` needs no credentials and says what each type supports, as read by
    ``fhir.resources``; every parameter it lists is one the search accepts."""
    async with httpx.AsyncClient(base_url=server.http_base, verify=server.client_tls()) as client:
        reply = await client.get("/fhir/metadata")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/fhir+json")
        statement = CapabilityStatement.model_validate_json(reply.content)
        assert statement.kind == "instance" and statement.fhirVersion == "4.0.1"
        [rest] = statement.rest
        assert rest.security.service[0].coding[0].code == "Basic"
        by_type = {resource.type: resource for resource in rest.resource}
        assert set(by_type) == {"Practitioner", "PractitionerRole", "Organization"}
        params = {p.name: p.type for p in by_type["Practitioner"].searchParam}
        assert params["family"] == "string" and params["identifier"] == "token"
        role_params = {p.name: p.type for p in by_type["PractitionerRole"].searchParam}
        assert role_params["practitioner"] == "reference"
        user = await server.add_account("reader", PASSWORD)
        for resource_type, resource in by_type.items():
            for param in resource.searchParam:
                value = {"number": "5", "reference": "1"}.get(param.type, "x")
                value = "true" if param.name == "active" else value
                answer = await client.get(
                    f"/fhir/{resource_type}", params={param.name: value}, auth=(user, PASSWORD)
                )
                assert answer.status_code == 200, (resource_type, param.name, answer.text)
