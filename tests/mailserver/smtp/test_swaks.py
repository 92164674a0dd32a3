"""Debian's swaks, a client no one here wrote, against submission (STARTTLS and implicit TLS)."""

from __future__ import annotations

import asyncio

import pytest


async def _swaks(swaks: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        swaks, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode("utf-8", "replace")


@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
async def test_swaks_starttls_and_implicit_tls_auth_delivers(server, swaks, mode):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    port = server.settings.submission_port if mode == "--tls" else server.settings.submissions_port
    code, out = await _swaks(
        swaks,
        "--server",
        f"127.0.0.1:{port}",
        mode,
        "--tls-verify",
        "--tls-ca-path",
        str(server.ca),
        "--auth",
        "PLAIN",
        "--auth-user",
        alice,
        "--auth-password",
        server.passwords[alice],
        "--from",
        alice,
        "--to",
        bob,
        "--header",
        "Subject: swaks " + mode,
        "--body",
        "Bonjour de swaks",
    )
    assert code == 0, out
    assert "250 2.0.0 OK: queued as" in out
    [stored] = await server.messages(bob)
    assert b"Subject: swaks " + mode.encode() in stored and b"Bonjour de swaks" in stored


async def test_swaks_auth_login_wrong_password(server, swaks):
    alice = await server.add_account("alice")
    code, out = await _swaks(
        swaks,
        "--server",
        f"127.0.0.1:{server.settings.submission_port}",
        "--tls",
        "--tls-ca-path",
        str(server.ca),
        "--auth",
        "LOGIN",
        "--auth-user",
        alice,
        "--auth-password",
        "wrong",
        "--from",
        alice,
        "--to",
        alice,
    )
    assert code != 0
    assert "535 5.7.8" in out
    assert await server.messages(alice) == []


@pytest.mark.parametrize(
    ("protocol", "cipher", "ok"),
    [
        ("tlsv1_1", None, False),
        ("tlsv1_2", "AES128-SHA256", False),  # no forward secrecy, CBC: refused
        ("tlsv1_2", "ECDHE-RSA-AES128-GCM-SHA256", True),
        ("tlsv1_3", None, True),
    ],
)
async def test_swaks_tls_versions_and_ciphers(server, swaks, protocol, cipher, ok):
    args = ["--server", f"127.0.0.1:{server.settings.submission_port}", "--tls", "--tls-protocol", protocol]
    if cipher:
        args += ["--tls-cipher", cipher]
    _, out = await _swaks(swaks, *args, "--quit-after", "TLS")
    assert ("=== TLS started with cipher" in out) is ok, out
    if not ok:
        assert "STARTTLS attempted but failed" in out
