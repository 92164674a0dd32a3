"""The account API over HTTPS: credentials unlock keys, app passwords, password change,
server-side signing, and the Autocrypt header on outgoing mail."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import smtplib

import httpx
import pytest

from mailserver.message import pgpmime
from openmss.crypto import pgp

PASSWORD = "correct horse battery"


def _send(inst, user: str, password: str, recipients: list[str], subject: str = "Avis") -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, password)
        message = f"From: {user}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n\r\nCorps.\r\n"
        client.sendmail(user, recipients, message.encode())


def _smtp_login(inst, user: str, password: str) -> int:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        try:
            code, _ = client.login(user, password)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        return code


@pytest.fixture
async def http(server):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=server.http_base, verify=server.client_tls(), timeout=20) as client:
        yield client


async def test_wrong_password_unlocks_nothing(server, http):
    alice = await server.add_account("alice")
    await asyncio.to_thread(_send, server, alice, PASSWORD, [alice])
    await server.wait_for_messages(alice, 1)
    for auth in [(alice, "wrong password"), ("nobody@a.test", PASSWORD), None]:
        reply = await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=auth)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Basic")
        assert "detail" in reply.json()
    reply = await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=(alice, PASSWORD))
    assert reply.status_code == 200 and b"Subject: Avis" in reply.content
    assert reply.headers["content-type"].startswith("message/rfc822")
    assert (await http.get("/api/v1/mailboxes/INBOX/messages/99", auth=(alice, PASSWORD))).status_code == 404
    assert (await http.get("/api/v1/mailboxes/Nope/messages", auth=(alice, PASSWORD))).status_code == 404
    with pytest.raises(Exception, match="does not unlock"):
        await server.runtime.accounts.unlock_address(alice, "wrong password")


async def test_app_passwords_unlock_and_are_revoked_at_once(server, http):
    alice = await server.add_account("alice")
    await asyncio.to_thread(_send, server, alice, PASSWORD, [alice], "Avant")
    await server.wait_for_messages(alice, 1)
    created = await http.post(
        "/api/v1/account/app-passwords", json={"label": "Thunderbird"}, auth=(alice, PASSWORD)
    )
    assert created.status_code == 201
    app = created.json()
    assert len(app["password"].replace("-", "")) == 20
    # The app password reads mail (it unlocks the same key) and logs in to SMTP...
    reply = await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=(alice, app["password"]))
    assert reply.status_code == 200 and b"Subject: Avant" in reply.content
    assert await asyncio.to_thread(_smtp_login, server, alice, app["password"]) == 235
    # ...but does not manage the account.
    other = await http.post(
        "/api/v1/account/app-passwords", json={"label": "x"}, auth=(alice, app["password"])
    )
    assert other.status_code == 403
    listed = (await http.get("/api/v1/account", auth=(alice, PASSWORD))).json()
    assert [a["label"] for a in listed["app_passwords"]] == ["Thunderbird"]
    assert listed["key"]["mode"] == "server" and len(listed["key"]["fingerprint"]) == 40
    assert app["password"] not in str(listed)
    # Revoked: it stops working at once, everywhere.
    revoked = await http.delete(f"/api/v1/account/app-passwords/{app['id']}", auth=(alice, PASSWORD))
    assert revoked.status_code == 204
    assert (
        await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=(alice, app["password"]))
    ).status_code == 401
    assert await asyncio.to_thread(_smtp_login, server, alice, app["password"]) == 535
    assert (
        await http.delete(f"/api/v1/account/app-passwords/{app['id']}", auth=(alice, PASSWORD))
    ).status_code == 404


async def test_password_change_keeps_old_mail_readable(server, http):
    alice = await server.add_account("alice")
    await asyncio.to_thread(_send, server, alice, PASSWORD, [alice], "Ancien message")
    await server.wait_for_messages(alice, 1)
    app = (
        await http.post("/api/v1/account/app-passwords", json={"label": "mobile"}, auth=(alice, PASSWORD))
    ).json()
    wrong = await http.post(
        "/api/v1/account/password",
        json={"current": "not it", "new": "nouveau mot de passe"},
        auth=(alice, PASSWORD),
    )
    assert wrong.status_code == 403
    changed = await http.post(
        "/api/v1/account/password",
        json={"current": PASSWORD, "new": "nouveau mot de passe"},
        auth=(alice, PASSWORD),
    )
    assert changed.status_code == 204
    assert (await http.get("/api/v1/account", auth=(alice, PASSWORD))).status_code == 401
    old = await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=(alice, "nouveau mot de passe"))
    assert old.status_code == 200 and b"Subject: Ancien message" in old.content
    # An app password made before the change still opens the same key.
    assert (
        await http.get("/api/v1/mailboxes/INBOX/messages/1", auth=(alice, app["password"]))
    ).status_code == 200


async def test_server_side_signing_and_autocrypt(server, http):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    await asyncio.to_thread(_send, server, alice, PASSWORD, [bob], "Non signé")
    [plain] = await server.wait_for_messages(bob, 1)
    key = (await http.get("/api/v1/account", auth=(alice, PASSWORD))).json()["key"]
    parsed = email.message_from_bytes(plain, policy=email.policy.default)
    assert parsed["Autocrypt"].startswith(f"addr={alice}; keydata=")
    assert "Authentication-Results" not in parsed
    enabled = await http.put("/api/v1/account/signing", json={"enabled": True}, auth=(alice, PASSWORD))
    assert enabled.status_code == 200
    await asyncio.to_thread(_send, server, alice, PASSWORD, [bob], "Signé")
    [_, signed] = await server.wait_for_messages(bob, 2)
    assert pgpmime.signed_parts(signed) is not None
    results = email.message_from_bytes(signed, policy=email.policy.default)["Authentication-Results"]
    assert results.startswith(f"mx.a.test; x-openpgp=pass (good signature, key {key['fingerprint']})")
    assert f"header.from={alice}" in results


async def test_bad_input_gets_a_clear_json_error(server, http):
    alice = await server.add_account("alice")
    auth = (alice, PASSWORD)
    for body in (
        b"",
        b"not a key",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\ngarbage\n",
        b"x" * (1 << 20 | 1),
    ):
        reply = await http.put("/api/v1/account/key", content=body, auth=auth)
        assert reply.status_code == 400 and reply.json()["detail"]
    generated = pgp.generate_key(alice)
    secret = await http.put("/api/v1/account/key", content=generated.secret, auth=auth)
    assert secret.status_code == 400 and "secret key" in secret.json()["detail"]
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x"):
        reply = await http.get("/api/v1/account", headers={"Authorization": header})
        assert reply.status_code in (400, 401) and "detail" in reply.json()
    weak = await http.post("/api/v1/account/password", json={"current": PASSWORD, "new": "short"}, auth=auth)
    assert weak.status_code == 422 and "detail" in weak.json()
    assert (await http.get("/api/v1/account", auth=auth)).json()["key"]["mode"] == "server"  # nothing changed
