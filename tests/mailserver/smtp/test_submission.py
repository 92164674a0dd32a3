"""Submission through real sockets with Python's smtplib (STARTTLS and implicit TLS)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

import pytest


def _message(
    sender: str, to: str, subject: str = "Compte rendu", body: str = "Bonjour,\nvoici le CR.\n"
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes()


def _send(
    port: int,
    ctx: ssl.SSLContext,
    user: str,
    password: str,
    sender: str,
    rcpts: list[str],
    data: bytes,
    implicit: bool = False,
) -> tuple[int, bytes]:
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
        client.starttls(context=ctx)
    try:
        client.login(user, password)
        client.mail(sender)
        for r in rcpts:
            code, text = client.rcpt(r)
            if code >= 400:
                return code, text
        return client.data(data)
    finally:
        client.close()


async def test_starttls_auth_delivers_to_inbox_and_sent(server):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    data = _message(alice, bob)
    code, text = await asyncio.to_thread(
        _send,
        server.settings.submission_port,
        server.client_tls(),
        alice,
        server.passwords[alice],
        alice,
        [bob],
        data,
    )
    assert code == 250, text
    assert text.startswith(b"2.0.0")
    [stored] = await server.messages(bob)
    assert stored.endswith(data.replace(b"\n", b"\r\n")) or data.replace(b"\n", b"\r\n") in stored
    assert stored.startswith(b"Received: from ")
    assert b"ESMTPSA" in stored[:400]
    assert b"Message-ID: <" in stored and b"\r\nDate: " in stored
    [sent] = await server.messages(alice, "Sent")
    assert sent == stored


async def test_implicit_tls_port(server):
    alice = await server.add_account("alice")
    code, _ = await asyncio.to_thread(
        _send,
        server.settings.submissions_port,
        server.client_tls(),
        alice,
        server.passwords[alice],
        alice,
        [alice],
        _message(alice, alice),
        True,
    )
    assert code == 250
    assert len(await server.messages(alice)) == 1


def _ehlo_and(port: int, *commands: str, tls: ssl.SSLContext | None = None) -> list[tuple[int, bytes]]:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        client.ehlo("client.test")
        if tls is not None:
            client.starttls(context=tls)
            client.ehlo("client.test")
        return [client.docmd(c) for c in commands]
    finally:
        client.close()


async def test_auth_before_tls_is_refused_and_not_advertised(server):
    port = server.settings.submission_port

    def check() -> tuple[str, list[tuple[int, bytes]]]:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
        try:
            _, features = client.ehlo("client.test")
            return features.decode(), [
                client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA=="),
                client.docmd("MAIL", "FROM:<alice@a.test>"),
            ]
        finally:
            client.close()

    features, replies = await asyncio.to_thread(check)
    assert "AUTH" not in features and "STARTTLS" in features
    (auth_code, auth_text), (mail_code, mail_text) = replies
    # RFC 3207 §4: before STARTTLS every command but EHLO/NOOP/QUIT/STARTTLS gets 530.
    assert auth_code == 530 and auth_text.startswith(b"5.7.0")
    assert mail_code == 530 and mail_text.startswith(b"5.7.0")


async def test_ehlo_after_tls_advertises_extensions(server):
    def features() -> str:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
        try:
            client.starttls(context=server.client_tls())
            return client.ehlo("client.test")[1].decode()
        finally:
            client.close()

    text = await asyncio.to_thread(features)
    for ext in (
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "AUTH LOGIN PLAIN",
    ):
        assert ext in text


async def test_wrong_password_and_throttling(server):
    alice = await server.add_account("alice")

    def attempts() -> list[tuple[int, bytes]]:
        out = []
        for password in ["bad1", "bad2", "bad3", "bad4", "bad5", server.passwords[alice]]:
            client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
            client.starttls(context=server.client_tls())
            try:
                # One mechanism per attempt (smtplib's login() would try PLAIN then LOGIN).
                client.ehlo()
                client.user, client.password = alice, password
                out.append(client.auth("PLAIN", client.auth_plain))
            except smtplib.SMTPAuthenticationError as exc:
                out.append((exc.smtp_code, exc.smtp_error))
            except smtplib.SMTPResponseException as exc:
                out.append((exc.smtp_code, exc.smtp_error))
            finally:
                client.close()
        return out

    results = await asyncio.to_thread(attempts)
    assert [c for c, _ in results[:5]] == [535] * 5
    assert results[0][1].startswith(b"5.7.8")
    # Even the right password is refused while the account is throttled.
    assert results[5][0] == 454 and results[5][1].startswith(b"4.7.0")


@pytest.mark.parametrize("field", ["envelope", "header"])
async def test_forged_sender_is_refused(server, field):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")

    def send() -> tuple[int, bytes]:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
        client.starttls(context=server.client_tls())
        try:
            client.login(alice, server.passwords[alice])
            envelope_from = bob if field == "envelope" else alice
            code, text = client.mail(envelope_from)
            if code != 250:
                return code, text
            client.rcpt(bob)
            return client.data(_message(bob, bob))
        finally:
            client.close()

    code, text = await asyncio.to_thread(send)
    assert code == 550 and text.startswith(b"5.7.1")
    assert await server.messages(bob) == []


async def test_unknown_local_and_untrusted_remote_recipients(server):
    alice = await server.add_account("alice")

    def send() -> list[tuple[int, bytes]]:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
        client.starttls(context=server.client_tls())
        try:
            client.login(alice, server.passwords[alice])
            client.mail(alice)
            return [client.rcpt("nobody@a.test"), client.rcpt("someone@gmail.com")]
        finally:
            client.close()

    (c1, t1), (c2, t2) = await asyncio.to_thread(send)
    assert c1 == 550 and t1.startswith(b"5.1.1")
    assert c2 == 550 and t2.startswith(b"5.7.1") and b"trust space" in t2


async def test_oversized_message_gets_552_and_server_keeps_serving(server):
    alice = await server.add_account("alice")
    big = _message(alice, alice, body="x" * 70 + "\n") + (b"y" * 76 + b"\r\n") * (26 * 1024 * 1024 // 78)

    def send_big() -> tuple[int, bytes]:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=60)
        client.starttls(context=server.client_tls())
        try:
            client.login(alice, server.passwords[alice])
            client.mail(alice)
            client.rcpt(alice)
            return client.data(big)
        finally:
            client.close()

    code, text = await asyncio.to_thread(send_big)
    assert code == 552 and text.startswith(b"5.3.4")
    code, _ = await asyncio.to_thread(
        _send,
        server.settings.submission_port,
        server.client_tls(),
        alice,
        server.passwords[alice],
        alice,
        [alice],
        _message(alice, alice),
    )
    assert code == 250
    assert len(await server.messages(alice)) == 1


async def test_declared_size_over_limit_refused_at_mail(server):
    alice = await server.add_account("alice")

    def send() -> tuple[int, bytes]:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
        client.starttls(context=server.client_tls())
        try:
            client.login(alice, server.passwords[alice])
            return client.mail(alice, ["SIZE=30000000"])
        finally:
            client.close()

    code, text = await asyncio.to_thread(send)
    assert code == 552 and text.startswith(b"5.3.4")
