"""What the outbound client tells the next hop about a message's content (RFC 6152 8BITMIME,
RFC 6531 SMTPUTF8), and the DSN the sender gets when the next hop cannot take it."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from peers import bundle, trust_file
from servers import Instance, ServerFactory, free_port

BODY_8BIT = "From: {user}\r\nSubject: Compte rendu\r\n\r\nRésultats de l'échographie.\r\n"
HEADER_UTF8 = "From: {user}\r\nSubject: Résultats\r\n\r\nPlain body.\r\n"


@dataclass
class Recorder:
    """The fake next hop's handler: keeps every envelope it accepts."""

    envelopes: list[tuple[str, list[str], list[str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.envelopes.append(
            (envelope.mail_from or "", list(envelope.rcpt_tos), list(envelope.mail_options), content)
        )
        self.arrived.set()
        return "250 2.0.0 OK"


@dataclass
class Peer:
    port: int
    recorder: Recorder


async def _peer(tls_dir: Path, *, modern: bool) -> AsyncIterator[Peer]:
    """An operator for b.test (its certificate): a current one (8BITMIME, SMTPUTF8) or an
    old one that offers neither."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_dir / "server.pem", tls_dir / "server.key")
    recorder = Recorder()
    port = free_port()

    def protocol() -> SMTP:
        return SMTP(
            recorder,
            hostname="mx.b.test",
            tls_context=context,
            require_starttls=True,
            enable_SMTPUTF8=modern,
            decode_data=not modern,  # aiosmtpd offers 8BITMIME only on raw bytes
        )

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)
    try:
        yield Peer(port, recorder)
    finally:
        server.close()
        await server.wait_closed()


async def _sender(servers: ServerFactory, tmp_path: Path, port: int) -> tuple[Instance, str]:
    cache = servers.tls_cache
    a = await servers.start(
        "a",
        peer_ca_file=bundle(tmp_path / "peers.pem", cache / "a" / "ca.pem", cache / "b" / "ca.pem"),
        trust_list=trust_file(tmp_path / "trust-a.txt", "b.test | CN=mx.b.test, O=Operator B"),
        routes={"b.test": f"127.0.0.1:{port}"},
        queue_retry_schedule=[0.3],
    )
    return a, await a.add_account("alice")


def _submit(inst: Instance, user: str, rcpt: str, text: str) -> None:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        body = text.format(user=user).encode("utf-8")
        client.sendmail(user, [rcpt], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    finally:
        client.close()


@pytest.fixture
async def modern_peer(servers: ServerFactory) -> AsyncIterator[Peer]:
    async for peer in _peer(servers.tls_cache / "b", modern=True):
        yield peer


@pytest.fixture
async def old_peer(servers: ServerFactory) -> AsyncIterator[Peer]:
    async for peer in _peer(servers.tls_cache / "b", modern=False):
        yield peer


async def _first(recorder: Recorder, timeout: float = 10.0) -> tuple[str, list[str], list[str], bytes]:
    async with asyncio.timeout(timeout):
        await recorder.arrived.wait()
    return recorder.envelopes[0]


async def test_8bit_and_utf8_are_declared_to_the_next_hop(
    servers: Any, tmp_path: Path, modern_peer: Peer
) -> None:
    a, alice = await _sender(servers, tmp_path, modern_peer.port)
    await asyncio.to_thread(_submit, a, alice, "josé.garcia@b.test", BODY_8BIT)
    mail_from, rcpts, options, content = await _first(modern_peer.recorder)
    assert mail_from == alice and rcpts == ["josé.garcia@b.test"]
    assert "SMTPUTF8" in options and "BODY=8BITMIME" in options
    # The extensions were read after STARTTLS, before MAIL: SIZE (RFC 1870) is declared too.
    assert f"SIZE={len(content)}" in options
    assert "Résultats de l'échographie.".encode() in content


async def test_what_an_old_next_hop_cannot_take_bounces_with_the_reason(
    servers: Any, tmp_path: Path, old_peer: Peer
) -> None:
    a, alice = await _sender(servers, tmp_path, old_peer.port)
    await asyncio.to_thread(_submit, a, alice, "bob@b.test", BODY_8BIT)
    await asyncio.to_thread(_submit, a, alice, "bob@b.test", HEADER_UTF8)
    await asyncio.to_thread(
        _submit, a, alice, "josé.garcia@b.test", "From: {user}\r\nSubject: ascii\r\n\r\nx\r\n"
    )
    dsns = [m.decode("utf-8", "replace") for m in await a.wait_for_messages(alice, 3)]
    statuses = sorted(
        line.split(":", 1)[1].strip() for d in dsns for line in d.splitlines() if line.startswith("Status:")
    )
    assert statuses == ["5.6.3", "5.6.7", "5.6.9"], dsns
    assert old_peer.recorder.envelopes == []  # nothing was sent that it could not take
