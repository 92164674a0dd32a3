"""The operations endpoints on the HTTP port, over a real socket."""

from __future__ import annotations

import asyncio
import smtplib

import httpx


async def test_healthz_and_metrics(server):
    base = server.http_base
    alice = await server.add_account("alice")

    def send() -> None:
        client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
        client.starttls(context=server.client_tls())
        try:
            client.login(alice, server.passwords[alice])
            client.sendmail(alice, [alice], f"From: {alice}\r\nSubject: m\r\n\r\nx\r\n".encode())
        finally:
            client.close()

    await asyncio.to_thread(send)
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=server.client_tls()) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "checks": {"database": "ok", "listeners": "ok"}}
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'openmss_smtp_messages_accepted_total{service="submission"} 1.0' in text
        assert "openmss_store_commit_seconds_count 1.0" in text
        missing = await http.get("/nothing-here")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


async def test_healthz_reports_a_broken_database(server):
    await server.runtime.db.dispose()
    # Point the read engine at a database that cannot be opened.
    from openmss.db.engine import Database

    server.runtime.db = Database("sqlite+aiosqlite:////nonexistent-dir/x.sqlite3")
    async with httpx.AsyncClient(base_url=server.http_base, verify=server.client_tls()) as http:
        health = await http.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["database"].startswith("error")


async def test_a_failed_start_leaves_nothing_running(servers):
    import socket

    from openmss.runtime import Runtime

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = await servers.settings_for("a", submission_port=busy.getsockname()[1])
        runtime = Runtime(settings)
        try:
            await runtime.start()
        except OSError:
            pass
        else:  # pragma: no cover - the port was taken: start must fail
            await runtime.stop()
            raise AssertionError("started on a port in use")
    assert runtime.storage._task is None and runtime.committer._task is None
    assert runtime.worker is None or runtime.worker._task is None
