"""Incoming PGP/MIME signatures are verified against the directory's keys and the result is
recorded in an Authentication-Results field; GnuPG makes the signatures."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import smtplib
import subprocess
import sys

import httpx
from gnupg import GnuPG

from peers import pair


def _signed(
    gpg: GnuPG, signer: str, sender: str, recipient: str, text: str, *, tamper: bool = False
) -> bytes:
    """A PGP/MIME signed message (RFC 3156 §5) whose signature GnuPG made."""
    part = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}".encode()
    signature = gpg.sign_detached(part, signer).replace(b"\n", b"\r\n")
    if tamper:
        part = part.replace(b"100 mg", b"900 mg")
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: Ordonnance\r\nMIME-Version: 1.0\r\n".encode()
        + b"Content-Type: multipart/signed; micalg=pgp-sha512;"
        + b' protocol="application/pgp-signature"; boundary="s1"\r\n'
        + b"\r\n--s1\r\n"
        + part
        + b"\r\n--s1\r\nContent-Type: application/pgp-signature\r\n\r\n"
        + signature
        + b"\r\n--s1--\r\n"
    )


def _send(inst, user: str, recipient: str, message: bytes) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        client.sendmail(user, [recipient], message)


def _results(message: bytes) -> list[str]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return [str(v) for v in parsed.get_all("Authentication-Results") or []]


async def test_local_sender_with_a_gnupg_key(server, tmp_path):
    gpg = GnuPG(tmp_path / "gnupg")
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    public = await asyncio.to_thread(gpg.generate, alice)
    async with httpx.AsyncClient(base_url=server.http_base, verify=server.client_tls()) as http:
        reply = await http.put("/api/v1/account/key", content=public, auth=(alice, server.passwords[alice]))
        assert reply.status_code == 200
    fingerprint = reply.json()["fingerprint"]
    stranger = await asyncio.to_thread(gpg.generate, "stranger@elsewhere.test")
    assert stranger

    good = await asyncio.to_thread(_signed, gpg, alice, alice, bob, "Paracetamol 100 mg\r\n")
    bad = await asyncio.to_thread(_signed, gpg, alice, alice, bob, "Paracetamol 100 mg\r\n", tamper=True)
    unknown = await asyncio.to_thread(_signed, gpg, "stranger@elsewhere.test", alice, bob, "Repos\r\n")
    forged = (
        b"Authentication-Results: mx.a.test; x-openpgp=pass (good signature)\r\n"
        + f"From: {alice}\r\nTo: {bob}\r\nSubject: x\r\n\r\nfaux\r\n".encode()
    )
    for message in (good, bad, unknown, forged):
        await asyncio.to_thread(_send, server, alice, bob, message)
    received = await server.wait_for_messages(bob, 4)
    assert len(received) == 4
    assert _results(received[0]) == [
        f"mx.a.test; x-openpgp=pass (good signature, key {fingerprint}) header.from={alice}"
    ]
    assert received[0].endswith(good)  # verified, then stored unchanged (encrypted at rest)
    assert _results(received[1])[0].startswith("mx.a.test; x-openpgp=fail (bad signature")
    assert _results(received[2])[0].startswith("mx.a.test; x-openpgp=neutral (unknown key")
    assert _results(received[3]) == []  # a result claiming to be ours, written by the sender: removed


def _cli(inst, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMSS_")}
    env.update(
        OPENMSS_DATA_DIR=str(inst.settings.data_dir),
        OPENMSS_DATABASE_URL=inst.settings.database_url,
        OPENMSS_DOMAINS=f'["{inst.domain}"]',
    )
    return subprocess.run(
        [sys.executable, "-m", "openmss.cli", *args], input=stdin, env=env, capture_output=True, timeout=60
    )


async def test_remote_sender_key_imported_then_revoked(servers, tmp_path):
    """carol, at another operator, signs with GnuPG; our operator imported her key with
    ``openmss key import``. After her revocation is imported, her signatures fail."""
    gpg = GnuPG(tmp_path / "gnupg")
    a, b = await pair(servers, tmp_path)
    alice = await a.add_account("alice")
    carol = await b.add_account("carol")
    public = await asyncio.to_thread(gpg.generate, carol)
    imported = await asyncio.to_thread(_cli, a, "key", "import", "-", stdin=public)
    assert imported.returncode == 0, imported.stderr

    message = await asyncio.to_thread(_signed, gpg, carol, carol, alice, "Avis de cardiologie\r\n")
    await asyncio.to_thread(_send, b, carol, alice, message)
    [first] = await a.wait_for_messages(alice, 1, timeout=15)
    assert _results(first)[0].startswith("mx.a.test; x-openpgp=pass (good signature")

    revoked = await asyncio.to_thread(gpg.revoke, carol)
    again = await asyncio.to_thread(_cli, a, "key", "import", "-", stdin=revoked)
    assert again.returncode == 0, again.stderr
    await asyncio.to_thread(_send, b, carol, alice, message)
    [_, second] = await a.wait_for_messages(alice, 2, timeout=15)
    assert _results(second)[0].startswith("mx.a.test; x-openpgp=fail (key revoked")
