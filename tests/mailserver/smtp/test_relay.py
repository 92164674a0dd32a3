"""Two (three) OpenMSS instances on loopback relaying to each other with mutual TLS."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
import ssl
from pathlib import Path

from peers import bundle as _bundle
from peers import pair as _pair
from peers import queue_empties as _queue_empties
from peers import submit as _submit
from peers import trust_file as _trust_file


async def test_relay_both_ways_with_mutual_tls(servers, tmp_path):
    a, b = await _pair(servers, tmp_path)
    alice = await a.add_account("alice")
    bob = await b.add_account("bob")
    await asyncio.to_thread(_submit, a, alice, [bob], "A vers B")
    [got] = await b.wait_for_messages(bob, 1)
    assert b"Subject: A vers B" in got
    assert b"by mx.b.test" in got and b"ESMTPS" in got  # B's trace field for the relay hop
    await asyncio.to_thread(_submit, b, bob, [alice], "B vers A")
    [back] = await a.wait_for_messages(alice, 1)
    assert b"Subject: B vers A" in back
    assert await _queue_empties(a, timeout=5) and await _queue_empties(b, timeout=5)


async def test_mail_waits_while_peer_is_down_then_is_delivered(servers, tmp_path):
    a, b = await _pair(servers, tmp_path)
    alice = await a.add_account("alice")
    bob = await b.add_account("bob")
    b_settings = b.settings
    await servers.stop(b)
    await asyncio.to_thread(_submit, a, alice, [bob], "En attente")
    await asyncio.sleep(1.5)
    async with a.runtime.db.read() as session:
        [entry] = await a.runtime.queue_store.list(session)
    assert entry.recipient == bob and entry.attempts >= 1 and "connection" in (entry.last_error or "")
    # The peer comes back on the same port with the same data.
    b2 = await servers.start(
        "b",
        **{
            k: getattr(b_settings, k)
            for k in (
                "smtp_port",
                "peer_ca_file",
                "trust_list",
                "routes",
                "queue_retry_schedule",
                "database_url",
            )
        },
    )
    [got] = await b2.wait_for_messages(bob, 1, timeout=15)
    assert b"Subject: En attente" in got
    assert await _queue_empties(a, timeout=5)


async def test_peer_550_produces_a_dsn_in_the_senders_inbox(servers, tmp_path):
    a, _b = await _pair(servers, tmp_path)
    alice = await a.add_account("alice")
    await asyncio.to_thread(_submit, a, alice, ["nobody@b.test"], "Perdu")
    [dsn] = await a.wait_for_messages(alice, 1)
    msg = email.message_from_bytes(dsn, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    text = dsn.decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; nobody@b.test" in text or "Final-Recipient: rfc822;nobody@b.test" in text
    assert "Status: 5.1.1" in text and "Action: failed" in text
    assert "Subject: Perdu" in text  # the original headers come back
    async with a.runtime.db.read() as session:
        assert await a.runtime.queue_store.list(session) == []


async def test_untrusted_operator_is_refused(servers, tmp_path):
    a, _b = await _pair(servers, tmp_path)
    cache = servers.tls_cache
    # C's CA is accepted at the TLS level (it is in A's peer bundle) but C is not in A's trust list.
    c = await servers.start(
        "c",
        peer_ca_file=_bundle(tmp_path / "c-peers.pem", cache / "a" / "ca.pem", cache / "c" / "ca.pem"),
        trust_list=_trust_file(tmp_path / "trust-c.txt", "a.test | CN=mx.a.test,O=Operator A"),
        routes={"a.test": f"127.0.0.1:{a.settings.smtp_port}"},
    )
    carol = await c.add_account("carol")
    alice = await a.add_account("alice")
    await asyncio.to_thread(_submit, c, carol, [alice], "Intrus")
    [dsn] = await c.wait_for_messages(carol, 1)
    assert b"Status: 5.7.1" in dsn
    assert await a.messages(alice) == []

    # Talking directly: C's certificate claiming to be b.test, and no certificate at all.
    def direct(cert: tuple[Path, Path] | None, sender: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(a.ca))
        if cert:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        client = smtplib.SMTP("127.0.0.1", a.settings.smtp_port, timeout=10)
        try:
            client.starttls(context=ctx)
            client.ehlo("peer.test")
            return client.mail(sender)
        finally:
            client.close()

    c_cert = (cache / "c" / "server.pem", cache / "c" / "server.key")
    code, text = await asyncio.to_thread(direct, c_cert, "x@b.test")
    assert code == 550 and text.startswith(b"5.7.1") and b"certificate" in text
    code, text = await asyncio.to_thread(direct, c_cert, "x@c.test")
    assert code == 550 and text.startswith(b"5.7.1") and b"trust space" in text
    code, text = await asyncio.to_thread(direct, None, "x@b.test")
    assert code == 530 and text.startswith(b"5.7.1")
    # A bounce (null reverse-path, RFC 5321 §4.5.5) names no domain: it is taken from any
    # operator of the trust list, and from no one else.
    code, text = await asyncio.to_thread(direct, c_cert, "<>")
    assert code == 550 and text.startswith(b"5.7.1") and b"trust list" in text
    b_cert = (cache / "b" / "server.pem", cache / "b" / "server.key")
    code, _ = await asyncio.to_thread(direct, b_cert, "<>")
    assert code == 250


async def test_inbound_requires_starttls_and_is_no_open_relay(servers, tmp_path):
    a, _b = await _pair(servers, tmp_path)
    cache = servers.tls_cache

    def plain() -> tuple[int, bytes]:
        client = smtplib.SMTP("127.0.0.1", a.settings.smtp_port, timeout=10)
        try:
            client.ehlo("peer.test")
            return client.mail("x@b.test")
        finally:
            client.close()

    code, text = await asyncio.to_thread(plain)
    assert code == 530 and text.startswith(b"5.7.0")

    def relay() -> list[tuple[int, bytes]]:
        ctx = ssl.create_default_context(cafile=str(a.ca))
        ctx.load_cert_chain(str(cache / "b" / "server.pem"), str(cache / "b" / "server.key"))
        client = smtplib.SMTP("127.0.0.1", a.settings.smtp_port, timeout=10)
        try:
            client.ehlo("mx.b.test")
            client.starttls(context=ctx)
            features = client.ehlo("mx.b.test")[1]
            assert b"AUTH" not in features
            return [client.mail("x@b.test"), client.rcpt("someone@gmail.com"), client.rcpt("nobody@a.test")]
        finally:
            client.close()

    (c1, _), (c2, t2), (c3, t3) = await asyncio.to_thread(relay)
    assert c1 == 250
    assert c2 == 550 and t2.startswith(b"5.7.1")
    assert c3 == 550 and t3.startswith(b"5.1.1")
