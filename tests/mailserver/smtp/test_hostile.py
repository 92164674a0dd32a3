"""Hostile and malformed input: a clear reply with an enhanced code, and nothing else breaks."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl


def _open(port: int, ctx: ssl.SSLContext, user: str, password: str) -> tuple[ssl.SSLSocket, object]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"EHLO x\r\n")
    while f.readline()[3:4] == b"-":
        pass
    raw.sendall(b"STARTTLS\r\n")
    f.readline()
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    f = tls.makefile("rb")
    tls.sendall(b"EHLO x\r\n")
    while f.readline()[3:4] == b"-":
        pass
    tls.sendall(b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n")
    assert f.readline().startswith(b"235")
    return tls, f


def _reply(f) -> bytes:  # type: ignore[no-untyped-def]
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    return line


async def test_endless_command_line_and_garbage(server):
    alice = await server.add_account("alice")

    def talk() -> list[bytes]:
        tls, f = _open(server.settings.submission_port, server.client_tls(), alice, server.passwords[alice])
        try:
            out = []
            tls.sendall(b"MAIL FROM:<" + b"a" * 100_000 + b"@a.test>\r\n")
            out.append(_reply(f))
            tls.sendall(b"\x00\xff\xfe garbage \x01\r\n")
            out.append(_reply(f))
            tls.sendall(b"MAIL FROM:<\r\n")  # aiosmtpd's own parser crashes on this one
            out.append(_reply(f))
            tls.sendall(f"MAIL FROM:<{alice}>\r\n".encode())  # the session is still usable
            out.append(_reply(f))
            return out
        finally:
            tls.close()

    too_long, garbage, broken, ok = await asyncio.to_thread(talk)
    assert too_long.startswith(b"500 5.5.") or too_long.startswith(b"552 5."), too_long
    assert garbage[:1] == b"5" and garbage[4:5].isdigit(), garbage
    assert broken.startswith(b"553 5.1.3"), broken
    assert ok.startswith(b"250 2.1.0")


async def test_endless_line_in_data_is_refused_and_the_session_goes_on(server):
    alice = await server.add_account("alice")

    def talk() -> list[bytes]:
        tls, f = _open(server.settings.submission_port, server.client_tls(), alice, server.passwords[alice])
        try:
            out = []
            for cmd in (f"MAIL FROM:<{alice}>", f"RCPT TO:<{alice}>", "DATA"):
                tls.sendall(cmd.encode() + b"\r\n")
                _reply(f)
            tls.sendall(f"From: {alice}\r\nSubject: long\r\n\r\n".encode() + b"x" * 200_000 + b"\r\n.\r\n")
            out.append(_reply(f))
            for cmd in (f"MAIL FROM:<{alice}>", f"RCPT TO:<{alice}>", "DATA"):
                tls.sendall(cmd.encode() + b"\r\n")
                _reply(f)
            tls.sendall(f"From: {alice}\r\nSubject: fine\r\n\r\nshort\r\n.\r\n".encode())
            out.append(_reply(f))
            return out
        finally:
            tls.close()

    long_line, fine = await asyncio.to_thread(talk)
    # RFC 5321 §4.5.3.1.6: 1000 octets a line at most.
    assert long_line.startswith(b"500 5.5.2") or long_line.startswith(b"552 5."), long_line
    assert fine.startswith(b"250 2.0.0")
    stored = await server.messages(alice)
    assert len(stored) == 1 and b"Subject: fine" in stored[0]


async def test_connection_dropped_mid_data_stores_nothing(server):
    alice = await server.add_account("alice")

    def drop() -> None:
        tls, f = _open(server.settings.submission_port, server.client_tls(), alice, server.passwords[alice])
        for cmd in (f"MAIL FROM:<{alice}>", f"RCPT TO:<{alice}>", "DATA"):
            tls.sendall(cmd.encode() + b"\r\n")
            _reply(f)
        tls.sendall(f"From: {alice}\r\nSubject: half\r\n\r\nthe first half of".encode())
        tls.close()

    await asyncio.to_thread(drop)
    await asyncio.sleep(0.5)
    assert await server.messages(alice) == []
    assert await server.messages(alice, "Sent") == []


async def test_message_without_from_or_with_a_huge_header(server):
    alice = await server.add_account("alice")

    def send(data: bytes) -> bytes:
        tls, f = _open(server.settings.submission_port, server.client_tls(), alice, server.passwords[alice])
        try:
            for cmd in (f"MAIL FROM:<{alice}>", f"RCPT TO:<{alice}>", "DATA"):
                tls.sendall(cmd.encode() + b"\r\n")
                _reply(f)
            tls.sendall(data + b"\r\n.\r\n")
            return _reply(f)
        finally:
            tls.close()

    no_from = await asyncio.to_thread(send, b"Subject: who?\r\n\r\nbody")
    assert no_from.startswith(b"550 5.6.0")
    huge = b"".join(b"X-Junk-%d: %s\r\n" % (i, b"y" * 900) for i in range(1300))  # > 1 MiB of header
    huge_reply = await asyncio.to_thread(send, f"From: {alice}\r\n".encode() + huge + b"\r\nbody")
    assert huge_reply.startswith(b"550 5.6.0"), huge_reply
    assert await server.messages(alice) == []
