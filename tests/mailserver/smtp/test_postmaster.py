"""postmaster@ of every served domain is accepted (RFC 5321 §4.5.1), in any case
(§4.1.1.3), on submission and from other operators, and lands in the configured account."""

from __future__ import annotations

import asyncio
import smtplib

from peers import pair
from servers import Instance, ServerFactory

BODY = "From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nBonjour.\r\n"


def _submit(inst: Instance, user: str, rcpts: list[str], subject: str) -> dict[str, tuple[int, bytes]]:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        body = BODY.format(sender=user, rcpt=", ".join(rcpts), subject=subject).encode()
        return client.sendmail(user, rcpts, body)
    finally:
        client.close()


def _rcpt_reply(inst: Instance, user: str, rcpt: str) -> tuple[int, bytes]:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        client.mail(user)
        return client.rcpt(rcpt)
    finally:
        client.close()


def _subjects(messages: list[bytes]) -> list[str]:
    return sorted(
        line.split(":", 1)[1].strip()
        for m in messages
        for line in m.decode().splitlines()
        if line.startswith("Subject:")
    )


async def test_postmaster_goes_to_the_configured_account(servers: ServerFactory) -> None:
    a = await servers.start("a", postmaster="admin@a.test")
    admin = await a.add_account("admin")
    alice = await a.add_account("alice")
    refused = await asyncio.to_thread(_submit, a, alice, ["PostMaster@A.test"], "first")
    assert refused == {}
    # To the alias and to its account in one message: one copy, not two.
    await asyncio.to_thread(_submit, a, alice, ["postmaster@a.test", admin], "second")
    assert _subjects(await a.wait_for_messages(admin, 2)) == ["first", "second"]
    await asyncio.sleep(0.3)
    assert len(await a.messages(admin)) == 2


async def test_an_own_postmaster_account_wins_and_none_is_refused(servers: ServerFactory) -> None:
    a = await servers.start("a", postmaster="admin@a.test")
    await a.add_account("admin")
    postmaster = await a.add_account("postmaster")
    alice = await a.add_account("alice")
    await asyncio.to_thread(_submit, a, alice, ["postmaster@a.test"], "own")
    assert _subjects(await a.wait_for_messages(postmaster, 1)) == ["own"]

    b = await servers.start("b")  # no postmaster configured, no such account
    bob = await b.add_account("bob")
    code, text = await asyncio.to_thread(_rcpt_reply, b, bob, "postmaster@b.test")
    assert code == 550 and text.startswith(b"5.1.1")


async def test_other_operators_reach_our_postmaster(servers: ServerFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = await pair(servers, tmp_path, postmaster="admin@b.test")
    admin = await b.add_account("admin")
    alice = await a.add_account("alice")
    assert await asyncio.to_thread(_submit, a, alice, ["postmaster@b.test"], "from a") == {}
    [message] = await b.wait_for_messages(admin, 1)
    assert b"Subject: from a" in message
