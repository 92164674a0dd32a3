"""Patients' mailboxes: a qualified INS (the matricule, its OID and the identity traits) gives
the address ``<matricule>@patient.<domain>`` (see ../shared/reference/mssante.md).

The matricule is checked before anything is created: 15 characters, the 13 of the NIR (or NIA)
then its key, ``97 - (NIR mod 97)``, where Corsica's departments 2A and 2B count as 19 and 18
(the ANS examples ``146026322000196`` and ``162018885045327`` check out). A minor's mailbox
records the legal representative's account that manages it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from directory.tables import Patient
from mailserver.store.tables import Account
from openmss import audit
from openmss.accounts import Accounts
from openmss.db.engine import Database

# The identity systems of a qualified INS: the NIR, the NIA, and the test and demo NIRs that every
# ANS example uses.
INS_OIDS = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR (test)",
    "1.2.250.1.213.1.4.11": "INS-NIR (demo)",
}
_MATRICULE = re.compile(r"[12378][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{6}[0-9]{2}")


class PatientError(ValueError):
    """A patient that cannot be added, with a sentence an operator understands."""


@dataclass(frozen=True)
class PatientIdentity:
    ins: str  # the matricule, 15 characters
    ins_oid: str
    birth_name: str
    given_names: str  # every first name, space separated
    birth_date: date
    sex: str | None = None  # "M" or "F"
    used_name: str | None = None


def check_ins(matricule: str, oid: str) -> str:
    """The matricule in canonical form (upper case), or ``PatientError`` saying what is wrong."""
    ins = matricule.strip().upper()
    if oid not in INS_OIDS:
        raise PatientError(f"unknown INS system {oid!r} (expected one of {', '.join(INS_OIDS)})")
    if not _MATRICULE.fullmatch(ins):
        raise PatientError(
            f"{matricule!r} is not an INS matricule (15 characters: 13 of the NIR, then its key)"
        )
    number = int(ins[:5] + ins[5:7].replace("2A", "19").replace("2B", "18") + ins[7:13])
    if 97 - number % 97 != int(ins[13:]):
        raise PatientError(f"{matricule!r}: the key {ins[13:]} does not match the number (mistyped?)")
    return ins


def patient_address(ins: str, domain: str) -> str:
    return f"{ins.lower()}@{domain.lower()}"


async def add_patient(
    db: Database,
    accounts: Accounts,
    identity: PatientIdentity,
    *,
    domain: str,
    password: str,
    representative: str | None = None,
    actor: str,
) -> str:
    """Create the patient's mail account and directory entry; returns the address."""
    ins = check_ins(identity.ins, identity.ins_oid)
    if not identity.birth_name.strip() or not identity.given_names.strip():
        raise PatientError("the birth name and the first names of the INS are required")
    if identity.sex not in (None, "M", "F"):
        raise PatientError("sex is M or F, as in the INS")
    if identity.birth_date > date.today():
        raise PatientError("the birth date is in the future")
    address = patient_address(ins, domain)
    async with db.read() as session:
        known = await session.scalar(
            select(Patient.address).where(Patient.ins == ins, Patient.ins_oid == identity.ins_oid)
        )
        if known is not None:
            raise PatientError(f"this INS already has a mailbox: {known}")
        representative_id = None
        if representative is not None:
            representative_id = await session.scalar(
                select(Account.id).where(Account.address == representative.strip().lower())
            )
            if representative_id is None:
                raise PatientError(f"no account {representative!r} for the legal representative")
    display = f"{identity.given_names.split()[0]} {identity.used_name or identity.birth_name}"
    account_id = await accounts.create(address, password, display, actor=actor)
    if account_id is None:
        raise PatientError(f"{address} already exists")
    async with db.transaction() as session:
        session.add(
            Patient(
                ins=ins,
                ins_oid=identity.ins_oid,
                address=address,
                birth_name=identity.birth_name.strip(),
                given_names=" ".join(identity.given_names.split()),
                used_name=identity.used_name,
                sex=identity.sex,
                birth_date=identity.birth_date,
                account_id=account_id,
                representative_account_id=representative_id,
            )
        )
        audit.record(session, actor=actor, action="directory.patient.add", target=address)
    return address
