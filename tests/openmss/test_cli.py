"""The ``openmss`` command, run as a real process."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from cli import cli_env as base_env
from cli import run_cli

from openmss.db.migrate import alembic_config

from servers import pg_database_url


def _env(data: Path, url: str | None, **extra: str) -> dict[str, str]:
    return {**base_env(data, domains='["cli.test"]', database_url=url or ""), **extra}


def _run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, stdin=stdin, timeout=60)


@pytest.fixture
async def cli_env(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path / "data", await pg_database_url("cli"))


def test_db_upgrade_is_idempotent(cli_env):
    first = _run(cli_env, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and head >= "0004"
    assert f"database at revision {head}" in first.stdout
    assert _run(cli_env, "db", "upgrade").returncode == 0


def test_account_add_reads_the_password_from_stdin(cli_env):
    ok = _run(
        cli_env,
        "account",
        "add",
        "Jean.Dupont@cli.test",
        "--name",
        "Dr Jean Dupont",
        stdin="un mot de passe long\n",
    )
    assert ok.returncode == 0 and "created jean.dupont@cli.test" in ok.stdout
    assert "un mot de passe long" not in ok.stdout + ok.stderr
    again = _run(cli_env, "account", "add", "jean.dupont@cli.test", stdin="un mot de passe long\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    short = _run(cli_env, "account", "add", "x@cli.test", stdin="court\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    foreign = _run(cli_env, "account", "add", "x@ailleurs.fr", stdin="un mot de passe long\n")
    assert foreign.returncode == 2 and "not one of this server's domains" in foreign.stderr
    bad = _run(cli_env, "account", "add", "pas-une-adresse", stdin="un mot de passe long\n")
    assert bad.returncode == 2


async def test_demo_prints_passwords_once(cli_env):
    first = await asyncio.to_thread(_run, cli_env, "demo")
    assert first.returncode == 0, first.stderr
    lines = [line.split() for line in first.stdout.splitlines() if "@cli.test" in line]
    assert len(lines) == 4 and all(len(parts) == 2 for parts in lines)
    assert any(parts[0] == "postmaster@cli.test" for parts in lines)
    second = await asyncio.to_thread(_run, cli_env, "demo")
    assert second.stdout.count("exists already") == 4
    # Each printed password is the one whose hash was stored.
    from mailserver.store import DatabaseBlobStore, MailStore
    from openmss.db.engine import Database
    from openmss.passwords import Passwords
    from openmss.settings import Settings

    settings = Settings(
        data_dir=Path(cli_env["OPENMSS_DATA_DIR"]), database_url=cli_env["OPENMSS_DATABASE_URL"]
    )
    db = Database(settings.effective_database_url)
    try:
        async with db.read() as session:
            for address, password in lines:
                account = await MailStore(DatabaseBlobStore()).account_by_address(session, address)
                assert account is not None
                assert Passwords().verify(account.password_hash, password)
                assert not Passwords().verify(account.password_hash, password + "x")
    finally:
        await db.dispose()


def test_invalid_settings_are_reported(cli_env, tmp_path):
    env = dict(cli_env, OPENMSS_SMTP_PORT="not-a-number")
    bad = _run(env, "queue", "list")
    assert bad.returncode == 2 and "invalid settings" in bad.stderr
    missing = _run(cli_env, "--config", str(tmp_path / "nope.toml"), "queue", "list")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_settings_from_a_toml_file(cli_env, tmp_path):
    config = tmp_path / "openmss.toml"
    config.write_text('domains = ["toml.test"]\n', encoding="utf-8")
    env = {k: v for k, v in cli_env.items() if k != "OPENMSS_DOMAINS"}
    ok = _run(env, "--config", str(config), "account", "add", "a@toml.test", stdin="un mot de passe long\n")
    assert ok.returncode == 0, ok.stderr


async def test_queue_list_and_retry(servers, tmp_path):
    # A peer that is down: the message waits in the queue, the CLI shows it and retries it.
    trust = tmp_path / "trust.txt"
    trust.write_text("b.test | CN=mx.b.test,O=Operator B\n")
    from servers import free_port

    a = await servers.start(
        "a", trust_list=trust, routes={"b.test": f"127.0.0.1:{free_port()}"}, queue_retry_schedule=[3600]
    )
    alice = await a.add_account("alice")

    def send() -> None:
        client = smtplib.SMTP("127.0.0.1", a.settings.submission_port, timeout=10)
        client.starttls(context=a.client_tls())
        try:
            client.login(alice, a.passwords[alice])
            client.sendmail(alice, ["bob@b.test"], f"From: {alice}\r\nSubject: q\r\n\r\nx\r\n".encode())
        finally:
            client.close()

    await asyncio.to_thread(send)
    await asyncio.sleep(1.0)
    env = _env(a.settings.data_dir, a.settings.database_url or None, OPENMSS_DOMAINS='["a.test"]')
    listed = await asyncio.to_thread(_run, env, "queue", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice@a.test -> bob@b.test" in listed.stdout and "attempts=1" in listed.stdout
    assert "connection to 127.0.0.1" in listed.stdout
    retried = await asyncio.to_thread(_run, env, "queue", "retry")
    assert retried.returncode == 0 and "1 recipient(s)" in retried.stdout
    await asyncio.sleep(1.0)
    listed = await asyncio.to_thread(_run, env, "queue", "list")
    assert "attempts=2" in listed.stdout
