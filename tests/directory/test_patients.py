"""Patients' mailboxes from a qualified INS: the matricule's checks, and ``openmss patient add``
run as a real process (password on stdin), then mail from a professional to that patient."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
from datetime import date
from pathlib import Path

import pytest
from cli import cli_env, run_cli
from sqlalchemy import select

from directory.patients import PatientError, check_ins
from directory.tables import Patient
from openmss.db.engine import Database

from servers import pg_database_url

TEST_NIR = "1.2.250.1.213.1.4.10"


@pytest.mark.parametrize("ins", ["146026322000196", "162018885045327", "277076322082910"])
def test_the_ans_examples_are_valid(ins: str) -> None:
    assert check_ins(ins, TEST_NIR) == ins


def test_corsica_departments_count_as_19_and_18() -> None:
    # 2A: the number with 19 in the department's place gives the key.
    number = int("18501" + "19" + "004123")
    key = 97 - number % 97
    assert check_ins(f"185012A004123{key:02d}", TEST_NIR) == f"185012A004123{key:02d}"
    assert check_ins(f"185012a004123{key:02d}", TEST_NIR) == f"185012A004123{key:02d}"
    with pytest.raises(PatientError, match="key"):
        check_ins(f"185012B004123{key:02d}", TEST_NIR)  # 2B counts as 18: another key


@pytest.mark.parametrize(
    ("ins", "oid", "reason"),
    [
        ("146026322000197", TEST_NIR, "key"),  # one digit off
        ("14602632200019", TEST_NIR, "not an INS matricule"),  # 14 characters
        ("946026322000196", TEST_NIR, "not an INS matricule"),  # no such first digit
        ("14602632200019X", TEST_NIR, "not an INS matricule"),
        ("146026322000196", "1.2.3", "unknown INS system"),
    ],
)
def test_bad_matricules_are_refused_with_a_reason(ins: str, oid: str, reason: str) -> None:
    with pytest.raises(PatientError, match=reason):
        check_ins(ins, oid)


def _run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, stdin=stdin)


@pytest.fixture
async def env(tmp_path: Path) -> dict[str, str]:
    url = await pg_database_url("patients")
    domains = '["cli.test", "patient.cli.test"]'
    return cli_env(tmp_path / "data", domains=domains, database_url=url or "", key_kdf_memory_kib="8192")


IDENTITY = ["--oid", TEST_NIR, "--birth-name", "DURAND", "--given-names", "Léa Marie", "--birth-date"]


def _add(
    env: dict[str, str], ins: str, born: str, password: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return _run(env, "patient", "add", ins, *IDENTITY, born, *extra, stdin=password + "\n")


async def test_patient_add_creates_the_mailbox_and_the_directory_entry(env):
    assert _run(env, "account", "add", "parent@cli.test", stdin="mot de passe parent\n").returncode == 0
    made = await asyncio.to_thread(
        _add, env, "146026322000196", "2014-02-03", "mot de passe patient", "--sex", "F",
        "--representative", "parent@cli.test",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created 146026322000196@patient.cli.test" in made.stdout
    again = _run(
        env, "patient", "add", "146026322000196", *IDENTITY, "2014-02-03", stdin="autre mot de passe\n"
    )
    assert again.returncode == 1 and "already has a mailbox" in again.stderr
    wrong = _add(env, "146026322000197", "2014-02-03", "mot de passe x")
    assert wrong.returncode == 1 and "key" in wrong.stderr
    nobody = _add(env, "162018885045327", "2015-01-01", "mot de passe y", "--representative", "x@cli.test")
    assert nobody.returncode == 1 and "legal representative" in nobody.stderr

    url = (
        env["OPENMSS_DATABASE_URL"]
        or f"sqlite+aiosqlite:///{Path(env['OPENMSS_DATA_DIR']) / 'openmss.sqlite3'}"
    )
    db = Database(url)
    try:
        async with db.read() as session:
            [patient] = (await session.scalars(select(Patient))).all()
    finally:
        await db.dispose()
    assert patient.address == "146026322000196@patient.cli.test" and patient.ins_oid == TEST_NIR
    assert patient.birth_date == date(2014, 2, 3) and patient.given_names == "Léa Marie"
    assert patient.account_id is not None and patient.representative_account_id is not None


async def test_patient_add_needs_a_served_patients_domain(env):
    env = {**env, "OPENMSS_DOMAINS": '["cli.test"]'}
    refused = _run(
        env, "patient", "add", "146026322000196", *IDENTITY, "2014-02-03", stdin="mot de passe p\n"
    )
    assert refused.returncode == 2 and "patient.cli.test" in refused.stderr


async def test_a_professional_writes_to_a_patient_made_by_the_cli(servers, tmp_path):
    server = await servers.start("a", domains=["a.test", "patient.a.test"])
    doctor = await server.add_account("dr.roux")
    settings = server.settings
    env = cli_env(
        settings.data_dir,
        domains='["a.test", "patient.a.test"]',
        database_url=settings.database_url or "",
        key_kdf_memory_kib=str(settings.key_kdf_memory_kib),
    )
    made = await asyncio.to_thread(
        _run,
        env,
        "patient",
        "add",
        "162018885045327",
        *IDENTITY,
        "1962-01-08",
        stdin="mot de passe patient\n",
    )
    assert made.returncode == 0, made.stderr
    patient = "162018885045327@patient.a.test"
    server.passwords[patient] = "mot de passe patient"

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", settings.submission_port, timeout=10) as client:
            client.starttls(context=server.client_tls())
            client.login(doctor, server.passwords[doctor])
            body = f"From: {doctor}\r\nTo: {patient}\r\nSubject: Vos résultats\r\n\r\nBonjour.\r\n"
            client.sendmail(doctor, [patient], body.encode())

    await asyncio.to_thread(send)
    [got] = await server.wait_for_messages(patient, 1)
    assert b"Bonjour." in got and doctor.encode() in got
