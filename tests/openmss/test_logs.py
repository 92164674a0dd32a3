"""Logs never carry a message body or a password (the audit trail records the login instead)."""

from __future__ import annotations

import asyncio
import io
import logging
import smtplib

from openmss.audit import AuditEvent, events_for
from openmss.logs import JsonFormatter, configure_logging

MARKER_BODY = "CONFIDENTIEL-diagnostic-7f3a"
MARKER_SUBJECT = "Sujet-secret-91bd"


async def test_no_body_subject_or_password_in_logs(server):
    configure_logging("DEBUG", "json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        alice = await server.add_account("alice", "Mot-de-passe-tres-secret")

        def send() -> None:
            client = smtplib.SMTP("127.0.0.1", server.settings.submission_port, timeout=10)
            client.set_debuglevel(0)
            client.starttls(context=server.client_tls())
            try:
                try:
                    client.login(alice, "wrong-Mot-de-passe")
                except smtplib.SMTPAuthenticationError:
                    pass
                client.login(alice, "Mot-de-passe-tres-secret")
                body = f"From: {alice}\r\nSubject: {MARKER_SUBJECT}\r\n\r\n{MARKER_BODY}\r\n"
                client.sendmail(alice, [alice], body.encode())
            finally:
                client.close()

        await asyncio.to_thread(send)
    finally:
        root.removeHandler(handler)
        configure_logging("WARNING", "text")
    logs = stream.getvalue()
    assert "message accepted" in logs  # the logs did see the delivery...
    for secret in (MARKER_BODY, MARKER_SUBJECT, "Mot-de-passe-tres-secret", "wrong-Mot-de-passe"):
        assert secret not in logs  # ...but none of its content
    async with server.runtime.db.read() as session:
        actions = [e.action for e in await events_for(session, target=alice)]
        by_actor = [e.action for e in await events_for(session, actor=alice)]
    # smtplib's login() tries PLAIN, then LOGIN: two failures for the wrong password.
    assert actions == ["account.create", "smtp.auth.failure", "smtp.auth.failure", "smtp.auth.success"]
    assert by_actor == actions[1:]  # the account was created by the test harness, not by alice
    assert all(e.peer == "127.0.0.1" for e in await _events(server, alice) if e.action.startswith("smtp."))


def test_json_formatter_redacts_secret_extras():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.password = "hunter2"
    record.queue_id = "Q1"
    line = JsonFormatter().format(record)
    assert "hunter2" not in line and '"queue_id": "Q1"' in line


async def _events(server, address: str) -> list[AuditEvent]:
    async with server.runtime.db.read() as session:
        return await events_for(session, target=address)
