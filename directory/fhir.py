"""Directory rows as FHIR R4 resources (``fhir.resources`` R4B models, which R4 clients read:
Practitioner, PractitionerRole, Organization, Bundle and OperationOutcome are the same there),
shaped like the national directory's API (Annuaire Santé, ANS profiles ``as-*``):

* ``Practitioner``: one per professional (id: ours, stable across imports); identifier the
  national id (IDNPS, ``urn:oid:1.2.250.1.71.4.2.1``: ``8`` + RPPS...), plus the RPPS alone
  (``http://rpps.fr``) when there is one; name; qualification the profession (TRE_G15) and the
  specialty (TRE_R38); telecom every visible mailbox.
* ``PractitionerRole``: one per visible mailbox of a professional (id: the mailbox's): the
  practitioner, the organisation, the profession as ``code``, the specialty, and the mailbox.
* ``Organization``: one per structure (identifier ``urn:oid:1.2.250.1.71.4.2.2``, the national
  id as published), name, address, and its own mailboxes (those of no professional).

A mailbox is a ``telecom`` entry as the national API gives it (profile ``as-mailbox-mss``,
from fr-core's ``FrContactPoint``): ``system: email``, the address as ``value``, the type of
messaging TRE_R256 ``MSSANTE`` in fr-core's extension ``fr-core-contact-point-email-type``,
and the mailbox's own metadata (type TRE_R257 PER/ORG/APP/CAB, service) in the extension
``as-mailbox-mss-metadata``.

The mapping builds plain dicts in FHIR JSON form. ``validate`` turns one into its
``fhir.resources`` model, which checks it against the R4(B) definitions: the API does so for
every resource it reads out alone and every OperationOutcome, and the tests for every answer
they get. A search page is sent as built, not validated again: fhir.resources costs about
1.5 ms to validate a Practitioner and 2 ms to serialise it (pydantic with fhir-core's Python
validators), 150 to 200 ms for a page of 50, four times the latency budget of the search; the
mapping that builds the page's entries is the one ``validate`` checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
from fhir.resources.R4B.resource import Resource

Json = dict[str, Any]

FHIR_JSON = "application/fhir+json"

OID_IDNPS = "urn:oid:1.2.250.1.71.4.2.1"  # professionals' national ids
OID_IDNST = "urn:oid:1.2.250.1.71.4.2.2"  # structures' national ids
RPPS_SYSTEM = "http://rpps.fr"
NOS = "https://mos.esante.gouv.fr/NOS"
TRE_G15 = f"{NOS}/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
TRE_R38 = f"{NOS}/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
TRE_R256 = f"{NOS}/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
TRE_R257 = f"{NOS}/TRE_R257-TypeBAL/FHIR/TRE-R257-TypeBAL"
EMAIL_TYPE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
MAILBOX_METADATA = (
    "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-mailbox-mss-metadata"
)
IDENTIFIER_TYPE = "http://interopsante.org/fhir/CodeSystem/fr-v2-0203"
RPPS_PREFIX = "8"


def _coding(system: str, code: str | None, display: str | None) -> dict[str, Any]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def telecom(box: Any) -> dict[str, Any]:
    """A mailbox as a ``telecom`` entry (profile as-mailbox-mss)."""
    metadata: list[dict[str, Any]] = [
        {"url": "type", "valueCodeableConcept": {"coding": [_coding(TRE_R257, box.kind, None)]}}
    ]
    if box.service:
        metadata.append({"url": "service", "valueString": box.service})
    if box.accepts_documents is not None:
        metadata.append({"url": "digitization", "valueBoolean": box.accepts_documents})
    return {
        "extension": [
            {"url": EMAIL_TYPE, "valueCoding": _coding(TRE_R256, "MSSANTE", "Messageries MSSanté")},
            {"url": MAILBOX_METADATA, "extension": metadata},
        ],
        "system": "email",
        "value": box.address,
    }


def _human_name(row: Any) -> dict[str, Any]:
    name: dict[str, Any] = {}
    if row.family_name:
        name["family"] = row.family_name
    if row.given_name:
        name["given"] = [row.given_name]
    if row.civility:
        name["prefix"] = [row.civility]
    return name


def _qualifications(row: Any) -> list[dict[str, Any]]:
    found = []
    if row.profession_code:
        found.append({"code": {"coding": [_coding(TRE_G15, row.profession_code, row.profession_label)]}})
    if row.specialty_code:
        found.append({"code": {"coding": [_coding(TRE_R38, row.specialty_code, row.specialty_label)]}})
    return found


def practitioner(row: Any, boxes: Iterable[Any]) -> Json:
    identifiers: list[dict[str, Any]] = []
    if row.national_id:
        identifiers.append(
            {
                "use": "official",
                "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "IDNPS"}]},
                "system": OID_IDNPS,
                "value": row.national_id,
            }
        )
    if row.id_type == RPPS_PREFIX and row.identifier:
        identifiers.append(
            {
                "use": "official",
                "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "RPPS"}]},
                "system": RPPS_SYSTEM,
                "value": row.identifier,
            }
        )
    name = _human_name(row)
    return _clean(
        {
            "resourceType": "Practitioner",
            "id": str(row.id),
            "meta": {"lastUpdated": row.updated_at.isoformat()},
            "identifier": identifiers or None,
            "active": True,
            "name": [name] if name else None,
            "telecom": [telecom(box) for box in boxes] or None,
            "qualification": _qualifications(row) or None,
        }
    )


def practitioner_role(row: Any) -> Json:
    """``row``: a mailbox with its professional's columns (``search._ROLES``)."""
    specialty = (
        [{"coding": [_coding(TRE_R38, row.specialty_code, row.specialty_label)]}]
        if row.specialty_code
        else None
    )
    code = (
        [{"coding": [_coding(TRE_G15, row.profession_code, row.profession_label)]}]
        if row.profession_code
        else None
    )
    return _clean(
        {
            "resourceType": "PractitionerRole",
            "id": str(row.id),
            "meta": {"lastUpdated": row.updated_at.isoformat()},
            "active": True,
            "practitioner": {"reference": f"Practitioner/{row.professional_id}"},
            "organization": _clean(
                {"reference": f"Organization/{row.organisation_id}", "display": row.org_name}
            )
            if row.organisation_id is not None
            else None,
            "code": code,
            "specialty": specialty,
            "telecom": [telecom(row)],
        }
    )


def _address(row: Any) -> dict[str, Any] | None:
    street = " ".join(
        part
        for part in (row.street_number, row.street_number_complement, row.street_type, row.street_name)
        if part
    )
    lines = [
        part for part in (row.complement_location, row.complement_distribution, street, row.locality) if part
    ]
    address = _clean(
        {
            "line": lines or None,
            "city": row.town,
            "postalCode": row.postcode,
            "district": row.department,
            "country": row.country,
        }
    )
    return {"use": "work", **address} if address else None


def organization(row: Any, boxes: Iterable[Any]) -> Json:
    address = _address(row)
    return _clean(
        {
            "resourceType": "Organization",
            "id": str(row.id),
            "meta": {"lastUpdated": row.updated_at.isoformat()},
            "identifier": [
                {
                    "use": "official",
                    "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "IDNST"}]},
                    "system": OID_IDNST,
                    "value": row.national_id,
                }
            ]
            if row.national_id
            else None,
            "active": True,
            "name": row.name,
            "alias": [row.trade_name] if row.trade_name else None,
            "telecom": [telecom(box) for box in boxes] or None,
            "address": [address] if address else None,
        }
    )


def searchset(base: str, resources: Sequence[Json], self_url: str, next_url: str | None) -> Json:
    """A page of search results (``Bundle.link`` ``self`` and, when more follow, ``next``).
    No ``total``: counting every match would cost more than the page."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return _clean(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
                    "resource": resource,
                    "search": {"mode": "match"},
                }
                for resource in resources
            ]
            or None,
        }
    )


def capability_statement(
    base: str, kinds: dict[str, dict[str, str]], *, secured: bool, software_version: str, published: str
) -> Json:
    """What this server implements (FHIR R4 §3.1.0.5 ``/metadata``; most clients, HAPI's first
    of all, read it before anything else): per resource type, read and search with its search
    parameters (``kinds``: type -> parameter -> FHIR search parameter type)."""
    resources = [
        {
            "type": kind,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": name, "type": kind_of} for name, kind_of in sorted(params.items())],
        }
        for kind, params in kinds.items()
    ]
    rest: dict[str, Any] = {"mode": "server", "resource": resources}
    if secured:
        rest["security"] = {
            "service": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                             "code": "Basic"}]}
            ],
            "description": "HTTP Basic with the credentials of an account of this server",
        }  # fmt: skip
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "kind": "instance",
        "software": {"name": "OpenMSS", "version": software_version},
        "implementation": {"description": "OpenMSS health professional directory", "url": base},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [rest],
    }


def outcome(code: str, diagnostics: str) -> Json:
    """An error as FHIR gives them (``code`` from the issue-type value set: invalid, not-found...)."""
    return _clean(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
        }
    )


def _clean(resource: Json) -> Json:
    """Without the empty fields (FHIR JSON has no nulls), at the top level where the mapping
    leaves them (nested values are built without)."""
    return {key: value for key, value in resource.items() if value is not None}


_MODELS = (Practitioner, PractitionerRole, Organization, Bundle, OperationOutcome, CapabilityStatement)
MODELS: dict[str, type[Resource]] = {model.__name__: model for model in _MODELS}


def validate(resource: Json) -> Resource:
    """``resource`` as its ``fhir.resources`` model: raises ``pydantic.ValidationError`` when
    it is not a valid R4(B) resource."""
    return MODELS[resource["resourceType"]].model_validate(resource)


def to_json(resource: Json | Resource) -> bytes:
    if isinstance(resource, Resource):
        return resource.model_dump_json(exclude_none=True, by_alias=True).encode()
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
