"""SMTP smuggling (CVE-2023-51766 family): only <CRLF>.<CRLF> ends DATA (RFC 5321 §4.1.1.4),
and nothing with bare LF or CR is relayed or stored as-is."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

SMUGGLED = "MAIL FROM:<{user}>\r\nRCPT TO:<{user}>\r\nDATA\r\nFrom: {user}\r\nSubject: smuggled\r\n\r\nX\r\n"


def _session(port: int, ctx: ssl.SSLContext, user: str, password: str, data: bytes) -> list[bytes]:
    """A raw conversation: returns the server's replies after DATA's payload."""
    import base64

    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = raw.makefile("rb")

    def cmd(line: bytes, sock: socket.socket) -> bytes:
        sock.sendall(line + b"\r\n")
        reply = b""
        while True:
            chunk = f.readline()
            reply += chunk
            if chunk[3:4] != b"-":
                return reply

    f.readline()  # greeting
    cmd(b"EHLO client.test", raw)
    cmd(b"STARTTLS", raw)
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    f = tls.makefile("rb")
    cmd(b"EHLO client.test", tls)
    token = base64.b64encode(f"\0{user}\0{password}".encode())
    assert cmd(b"AUTH PLAIN " + token, tls).startswith(b"235")
    cmd(f"MAIL FROM:<{user}>".encode(), tls)
    cmd(f"RCPT TO:<{user}>".encode(), tls)
    assert cmd(b"DATA", tls).startswith(b"354")
    tls.sendall(data)
    replies = [f.readline()]
    tls.sendall(b"QUIT\r\n")
    replies.append(f.readline())
    tls.close()
    return replies


@pytest.mark.parametrize("terminator", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
async def test_bare_lf_dot_does_not_end_data(server, terminator):
    alice = await server.add_account("alice")
    payload = (
        f"From: {alice}\r\nSubject: first\r\n\r\nhello".encode()
        + terminator
        + SMUGGLED.format(user=alice).encode()
        + b"\r\n.\r\n"
    )
    replies = await asyncio.to_thread(
        _session,
        server.settings.submission_port,
        server.client_tls(),
        alice,
        server.passwords[alice],
        payload,
    )
    assert replies[0].startswith(b"250 2.0.0"), replies
    stored = await server.messages(alice)
    # One message, not two: the smuggled commands are body text of the first.
    assert len(stored) == 1
    body = stored[0]
    assert b"Subject: first" in body
    # Stored with CRLF only: the ambiguous sequence can never reach another server as-is.
    assert body.count(b"\n") == body.count(b"\r\n") and body.count(b"\r") == body.count(b"\r\n")


async def test_inbound_relay_refuses_bare_lf(servers, tmp_path):
    # Between operators we are strict (as Postfix is): bare LF is refused, not repaired.
    cache = servers.tls_cache
    trust = tmp_path / "trust.txt"
    trust.write_text("b.test | CN=mx.b.test,O=Operator B\n")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((cache / "a" / "ca.pem").read_bytes() + (cache / "b" / "ca.pem").read_bytes())
    a = await servers.start("a", trust_list=trust, peer_ca_file=bundle)
    alice = await a.add_account("alice")

    def relay() -> tuple[int, bytes]:
        import smtplib

        ctx = ssl.create_default_context(cafile=str(a.ca))
        ctx.load_cert_chain(str(cache / "b" / "server.pem"), str(cache / "b" / "server.key"))
        client = smtplib.SMTP("127.0.0.1", a.settings.smtp_port, timeout=10)
        try:
            client.starttls(context=ctx)
            client.ehlo("mx.b.test")
            client.mail("x@b.test")
            client.rcpt(alice)
            return client.data(b"From: x@b.test\r\nSubject: lf\r\n\r\nline one\nline two\r\n")
        finally:
            client.close()

    code, text = await asyncio.to_thread(relay)
    assert code == 550 and text.startswith(b"5.6.0")
    assert await a.messages(alice) == []
