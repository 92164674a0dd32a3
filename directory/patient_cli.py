"""``openmss patient add``: a patient's mailbox from a qualified INS (password on stdin).

Kept light at import time (argparse only): ``openmss`` builds its parser for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openmss.settings import Settings


def add_parser(sub: Any) -> None:
    """Register ``patient add`` on the ``openmss`` sub-parsers (``sub``)."""
    patient = sub.add_parser("patient", help="patients' mailboxes")
    actions = patient.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", help="create a patient's mailbox <INS>@patient.<domain>; the password is read from stdin"
    )
    add.add_argument("ins", help="the INS matricule (15 characters)")
    add.add_argument("--oid", default="1.2.250.1.213.1.4.8", help="the INS system (default: INS-NIR)")
    add.add_argument("--birth-name", required=True)
    add.add_argument("--given-names", required=True, help="every first name of the INS, space separated")
    add.add_argument("--birth-date", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    add.add_argument("--sex", choices=("M", "F"))
    add.add_argument("--used-name")
    add.add_argument("--domain", help="the patients' domain (default: the first served one)")
    add.add_argument("--representative", help="a minor: the legal representative's account address")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """0 when created; 1 when refused; 2 when the request is unusable."""
    from directory.policy import default_patient_domains

    patients = settings.patient_domains or sorted(default_patient_domains(settings.domains))
    domain = (args.domain or "").strip().lower() or next(
        (d for d in patients if settings.is_local_domain(d)), ""
    )
    if not domain or not settings.is_local_domain(domain):
        print(
            "error: patients' addresses need a patients' domain this server serves: add one such as "
            f"{patients[0] if patients else 'patient.<domain>'} to the domains setting",
            file=sys.stderr,
        )
        return 2
    from openmss.cli import read_new_password

    password = read_new_password()
    if password is None:
        return 2
    return asyncio.run(_add(settings, args, domain, password))


async def _add(settings: Settings, args: argparse.Namespace, domain: str, password: str) -> int:
    from directory.patients import PatientError, PatientIdentity, add_patient
    from openmss.cli import accounts_for

    identity = PatientIdentity(
        ins=args.ins,
        ins_oid=args.oid,
        birth_name=args.birth_name,
        given_names=args.given_names,
        birth_date=args.birth_date,
        sex=args.sex,
        used_name=args.used_name,
    )
    async with accounts_for(settings) as (db, accounts):
        try:
            address = await add_patient(
                db,
                accounts,
                identity,
                domain=domain,
                password=password,
                representative=args.representative,
                actor="cli",
            )
        except PatientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"created {address}")
    return 0
