"""Pairs of OpenMSS instances that trust each other, for relay tests."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

from servers import Instance, ServerFactory, free_port


def bundle(path: Path, *cas: Path) -> Path:
    path.write_bytes(b"".join(ca.read_bytes() for ca in cas))
    return path


def trust_file(path: Path, *lines: str) -> Path:
    path.write_text("# test trust list\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def allow_list_xml(path: Path, entries: list[tuple[str, str]]) -> Path:
    """A ``ListeBlancheMSSante`` file as the national authority publishes it."""
    domains = "".join(
        f"<Domaine><Nom>{name}</Nom><Description>Opérateur de test</Description>"
        f"<DNCertificatOperateur>{dn}</DNCertificatOperateur>"
        "<ResponsableContact>rssi@example.test</ResponsableContact><SupportContact>support@example.test"
        "</SupportContact><DateMAJ>2026-11-01T00:00:00</DateMAJ></Domaine>"
        for name, dn in entries
    )
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
        f"<DateDeGeneration>2026-11-23T06:00:00</DateDeGeneration><ListeDomaines>{domains}</ListeDomaines>"
        "</ListeBlancheMSSante>\n",
        encoding="utf-8",
    )
    return path


async def pair(servers: ServerFactory, tmp_path: Path, **b_overrides: object) -> tuple[Instance, Instance]:
    cache = servers.tls_cache
    cas = bundle(
        tmp_path / "peers.pem", cache / "a" / "ca.pem", cache / "b" / "ca.pem", cache / "c" / "ca.pem"
    )
    b_port = int(b_overrides.pop("smtp_port", free_port()))  # type: ignore[call-overload]
    a = await servers.start(
        "a",
        peer_ca_file=cas,
        trust_list=trust_file(tmp_path / "trust-a.txt", "b.test | CN=mx.b.test, O=Operator B"),
        routes={"b.test": f"127.0.0.1:{b_port}"},
        queue_retry_schedule=[0.3],
    )
    b = await servers.start(
        "b",
        smtp_port=b_port,
        peer_ca_file=cas,
        # B reads the national allow-list format; a.test has two operator certificates in it.
        trust_list=allow_list_xml(
            tmp_path / "trust-b.xml",
            [("a.test", "CN=mx2.a.test,O=Operator A"), ("a.test", "O=Operator A, CN=mx.a.test")],
        ),
        routes={"a.test": f"127.0.0.1:{a.settings.smtp_port}"},
        queue_retry_schedule=[0.3],
        **b_overrides,
    )
    return a, b


def submit(inst: Instance, user: str, rcpts: list[str], subject: str = "Avis") -> tuple[int, bytes]:
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    client.starttls(context=inst.client_tls())
    try:
        client.login(user, inst.passwords[user])
        body = (
            f"From: {user}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n\r\nCorps du message.\r\n"
        ).encode()
        errors = client.sendmail(user, rcpts, body)
        assert not errors
        return 250, b""
    finally:
        client.close()


async def queue_empties(inst: Instance, timeout: float = 5) -> bool:
    """Whether the instance's outbound queue is empty within ``timeout`` seconds. A peer stores
    a message before it answers 250; the sender removes its queue entry (and the sealed body)
    only once it has read that answer, so the queue empties a moment after the peer's INBOX
    fills."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with inst.runtime.db.read() as session:
            if await inst.runtime.queue_store.list(session) == []:
                return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
