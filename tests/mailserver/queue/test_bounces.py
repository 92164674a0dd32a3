"""Delivery status notifications end to end: RFC 3461 parameters and expiry (RFC 3464 reports)."""

from __future__ import annotations

import asyncio
import smtplib

from peers import pair, trust_file
from servers import free_port


def _send(inst, user: str, rcpt: str, mail_options=(), rcpt_options=(), subject: str = "DSN"):
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        code, text = client.mail(user, list(mail_options))
        if code != 250:
            return code, text
        code, text = client.rcpt(rcpt, list(rcpt_options))
        if code != 250:
            return code, text
        return client.data(f"From: {user}\r\nSubject: {subject}\r\n\r\nCorps ORIGINAL-BODY\r\n".encode())
    finally:
        client.close()


async def _queue_empty(inst, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        async with inst.runtime.db.read() as session:
            if not await inst.runtime.queue_store.list(session):
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the queue did not empty")


async def test_notify_never_suppresses_the_bounce(servers, tmp_path):
    a, _b = await pair(servers, tmp_path)
    alice = await a.add_account("alice")
    code, _ = await asyncio.to_thread(_send, a, alice, "nobody@b.test", (), ("NOTIFY=NEVER",))
    assert code == 250
    await _queue_empty(a)
    await asyncio.sleep(0.3)
    assert await a.messages(alice) == []


async def test_envid_and_ret_full_come_back_in_the_dsn(servers, tmp_path):
    a, _b = await pair(servers, tmp_path)
    alice = await a.add_account("alice")
    code, _ = await asyncio.to_thread(
        _send,
        a,
        alice,
        "nobody@b.test",
        ("RET=FULL", "ENVID=QQ314159"),
        ("NOTIFY=FAILURE", "ORCPT=rfc822;nobody@b.test"),
    )
    assert code == 250
    [dsn] = await a.wait_for_messages(alice, 1)
    text = dsn.decode("utf-8", "replace")
    assert "Original-Envelope-Id: QQ314159" in text
    assert "Original-Recipient: rfc822;nobody@b.test" in text.replace("rfc822; ", "rfc822;")
    assert "message/rfc822" in text and "ORIGINAL-BODY" in text


async def test_malformed_dsn_parameters_get_501(server):
    alice = await server.add_account("alice")
    code, text = await asyncio.to_thread(_send, server, alice, alice, ("RET=MAYBE",))
    assert code == 501 and text.startswith(b"5.5.4")
    code, text = await asyncio.to_thread(_send, server, alice, alice, (), ("NOTIFY=NEVER,SUCCESS",))
    assert code == 501 and text.startswith(b"5.5.4")


async def test_expired_message_bounces_with_4_4_7(servers, tmp_path):
    trust = trust_file(tmp_path / "trust.txt", "b.test | CN=mx.b.test,O=Operator B")
    a = await servers.start(
        "a",
        trust_list=trust,
        routes={"b.test": f"127.0.0.1:{free_port()}"},
        queue_retry_schedule=[0.5],
        queue_lifetime_seconds=1.5,
    )
    alice = await a.add_account("alice")
    code, _ = await asyncio.to_thread(_send, a, alice, "bob@b.test")
    assert code == 250
    [dsn] = await a.wait_for_messages(alice, 1, timeout=15)
    text = dsn.decode("utf-8", "replace")
    assert "Status: 4.4.7" in text and "Action: failed" in text and "bob@b.test" in text
    await _queue_empty(a)
