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
