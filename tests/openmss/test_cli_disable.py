"""``openmss account disable|enable``: what a running server then does for that account."""

from __future__ import annotations

import asyncio
import smtplib
import time

from cli import cli_env, run_cli
from sqlalchemy import select

from openmss.audit import AuditEvent

from servers import Instance, ServerFactory


def _env(inst: Instance) -> dict[str, str]:
    return cli_env(
        inst.settings.data_dir,
        database_url=inst.settings.database_url,
        domains=f'["{inst.domain}"]',
    )


def _login(inst: Instance, user: str) -> int:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        return 235
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code
    finally:
        client.close()


def _rcpt(inst: Instance, user: str, rcpt: str) -> int:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        client.mail(user)
        return client.rcpt(rcpt)[0]
    finally:
        client.close()


def _rcpt_until(inst: Instance, user: str, rcpt: str, code: int, timeout: float = 10.0) -> int:
    """Running servers remember for a few seconds which addresses have a mailbox."""
    deadline = time.monotonic() + timeout
    while (got := _rcpt(inst, user, rcpt)) != code and time.monotonic() < deadline:
        time.sleep(0.5)
    return got


def _disabled_before_data(inst: Instance, user: str, rcpt: str) -> tuple[int, bytes]:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    try:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        client.mail(user)
        assert client.rcpt(rcpt)[0] == 250
        done = run_cli(_env(inst), "account", "disable", rcpt)
        assert done.returncode == 0, done.stderr
        return client.data(f"From: {user}\r\nTo: {rcpt}\r\nSubject: trop tard\r\n\r\nx\r\n".encode())
    finally:
        client.close()


async def test_disabled_between_rcpt_and_data_gets_a_temporary_failure(servers: ServerFactory) -> None:
    a = await servers.start("a")
    alice = await a.add_account("alice")
    bob = await a.add_account("bob")
    code, text = await asyncio.to_thread(_disabled_before_data, a, alice, bob)
    # The delivery transaction saw the account disabled: nothing stored, the client may retry.
    assert code == 450 and text.startswith(b"4.2.0"), text
    assert await a.messages(alice, "Sent") == []


async def test_disable_then_enable(servers: ServerFactory) -> None:
    a = await servers.start("a")
    alice = await a.add_account("alice")
    bob = await a.add_account("bob")
    env = _env(a)

    done = await asyncio.to_thread(run_cli, env, "account", "disable", "Bob@a.test")
    assert done.returncode == 0 and "bob@a.test disabled" in done.stdout, done.stderr
    assert await asyncio.to_thread(_login, a, bob) == 535
    assert await asyncio.to_thread(_rcpt, a, alice, bob) == 550
    again = await asyncio.to_thread(run_cli, env, "account", "disable", bob)
    assert again.returncode == 0 and "already disabled" in again.stdout

    done = await asyncio.to_thread(run_cli, env, "account", "enable", bob)
    assert done.returncode == 0 and "bob@a.test enabled" in done.stdout
    assert await asyncio.to_thread(_login, a, bob) == 235
    assert await asyncio.to_thread(_rcpt_until, a, alice, bob, 250) == 250

    unknown = await asyncio.to_thread(run_cli, env, "account", "disable", "nobody@a.test")
    assert unknown.returncode == 1 and "no account nobody@a.test" in unknown.stderr
    async with a.runtime.db.read() as session:
        actions = [
            e.action
            for e in await session.scalars(
                select(AuditEvent).where(AuditEvent.target == bob).order_by(AuditEvent.id)
            )
            if e.action.startswith("account.")
        ]
    assert actions[-2:] == ["account.disable", "account.enable"]
