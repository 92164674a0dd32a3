"""A 20 MB message goes through without being copied in memory again and again."""

from __future__ import annotations

import asyncio
import smtplib
import tracemalloc

SIZE = 20 * 1024 * 1024


async def test_large_message_memory_and_integrity(server):
    alice = await server.add_account("alice")
    line = b"A" * 998 + b"\r\n"
    body = f"From: {alice}\r\nSubject: gros fichier\r\n\r\n".encode() + line * (SIZE // len(line))

    def send() -> tuple[int, bytes]:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=120)
        client.starttls(context=server.client_tls())
        try:
            client.login(alice, server.passwords[alice])
            client.mail(alice)
            client.rcpt(alice)
            return client.data(body)
        finally:
            client.close()

    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        code, _ = await asyncio.to_thread(send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 250
    # The client holds one copy (plus smtplib's dot-quoted one); aiosmtpd reads lines and joins
    # them once; the store writes 1 MiB chunks. Anything near 8 copies would mean a regression.
    assert peak - baseline < 6 * SIZE, f"peak {(peak - baseline) / SIZE:.1f} x the message size"
    [stored] = await server.messages(alice)
    assert stored.endswith(body)
    [sent] = await server.messages(alice, "Sent")
    assert len(sent) == len(stored)
