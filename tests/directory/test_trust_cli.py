"""``openmss trust import`` / ``trust list``, and the trust list in force on the inbound port."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest
from cli import cli_env, run_cli

from directory.trust import TrustListError, load_trust_list, normalize_dn
from directory.trust_cli import format_dn, install
from openmss.tls import issue_certificate

from peers import allow_list_xml, bundle, trust_file
from servers import Instance, ServerFactory

DN_B = "CN=mx.b.test, O=Operator B"
DN_C = "O=Operator C,CN=mx.c.test"


def _cli(tmp_path: Path, trust_list: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path / "cli-data", domains='["a.test"]')
    if trust_list is not None:
        env["OPENMSS_TRUST_LIST"] = str(trust_list)
    return run_cli(env, *args, timeout=60)


# Installing ----------------------------------------------------------------------------------


def test_install_replaces_atomically_and_refuses_bad_files(tmp_path):
    target = tmp_path / "etc" / "trust.xml"
    installed = install(allow_list_xml(tmp_path / "new.xml", [("b.test", DN_B)]).read_bytes(), target)
    assert installed.domains() == ["b.test"] and target.read_bytes() == (tmp_path / "new.xml").read_bytes()
    before = target.read_bytes()
    for bad in (b"<ListeBlancheMSSante><Domaine>", b"b.test without a DN\n", b"# nothing\n"):
        with pytest.raises(TrustListError):
            install(bad, target)
        assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["trust.xml"]  # no temporary left


def test_format_dn_is_what_the_server_compares():
    assert format_dn(normalize_dn("O=Operator B,  CN=MX.b.test")) == "CN=mx.b.test, O=operator b"
    assert format_dn(normalize_dn(r"CN=a\, b, O=x")) == r"CN=a\, b, O=x"


def test_cli_import_then_list(tmp_path):
    target = tmp_path / "trust.xml"
    source = allow_list_xml(tmp_path / "liste.xml", [("b.test", DN_B), ("b.test", DN_C), ("d.test", DN_C)])
    done = _cli(tmp_path, target, "trust", "import", str(source))
    assert done.returncode == 0, done.stderr
    assert "3 certificate DNs" in done.stdout and "2 domains" in done.stdout
    assert load_trust_list(target).domains() == ["b.test", "d.test"]

    listed = _cli(tmp_path, target, "trust", "list")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if not line.startswith("#")]
    assert lines == [
        "b.test\tCN=mx.b.test, O=operator b",
        "b.test\tCN=mx.c.test, O=operator c",
        "d.test\tCN=mx.c.test, O=operator c",
    ]

    broken = tmp_path / "broken.txt"
    broken.write_text("b.test | \n", encoding="utf-8")
    refused = _cli(tmp_path, target, "trust", "import", str(broken))
    assert refused.returncode == 1 and "line 1" in refused.stderr and "unchanged" in refused.stderr
    assert load_trust_list(target).domains() == ["b.test", "d.test"]

    unset = _cli(tmp_path, None, "trust", "import", str(source))
    assert unset.returncode == 2 and "trust_list" in unset.stderr


# In force on the inbound port ----------------------------------------------------------------


def _relay(a: Instance, cert: tuple[Path, Path], sender: str, rcpt: str) -> tuple[int, bytes]:
    """A peer presenting *cert* relays one message to A; the reply to MAIL, else to DATA."""
    ctx = ssl.create_default_context(cafile=str(a.ca))
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    client = smtplib.SMTP("127.0.0.1", a.settings.smtp_port, timeout=10)
    try:
        client.starttls(context=ctx)
        client.ehlo("peer.test")
        code, text = client.mail(sender)
        if code != 250:
            return code, text
        assert client.rcpt(rcpt)[0] == 250
        return client.data(f"From: {sender}\r\nTo: {rcpt}\r\nSubject: relais\r\n\r\nTexte.\r\n".encode())
    finally:
        client.close()


async def _a_with_trust_list(servers: ServerFactory, tmp_path: Path, trust_list: Path) -> Instance:
    cache = servers.tls_cache
    peers = bundle(tmp_path / "peers.pem", *(cache / n / "ca.pem" for n in ("a", "b", "c")))
    return await servers.start("a", peer_ca_file=peers, trust_list=trust_list, trust_list_check_seconds=0.2)


async def test_two_certificate_dns_for_one_domain(servers, tmp_path):
    cache = servers.tls_cache
    listed = allow_list_xml(tmp_path / "liste.xml", [("b.test", DN_B), ("b.test", DN_C)])
    a = await _a_with_trust_list(servers, tmp_path, listed)
    alice = await a.add_account("alice")
    # A third peer: signed by B's CA (accepted by TLS) but with a DN the list does not hold.
    third = (tmp_path / "mx9.pem", tmp_path / "mx9.key")
    issue_certificate(
        cache / "b" / "ca.pem",
        cache / "b" / "ca.key",
        *third,
        common_name="mx9.b.test",
        organization="Operator B",
    )
    for name in ("b", "c"):
        cert = (cache / name / "server.pem", cache / name / "server.key")
        code, _ = await asyncio.to_thread(_relay, a, cert, "dr@b.test", alice)
        assert code == 250, name
    code, text = await asyncio.to_thread(_relay, a, third, "dr@b.test", alice)
    assert code == 550 and text.startswith(b"5.7.1") and b"certificate" in text
    assert len(await a.wait_for_messages(alice, 2)) == 2


async def test_running_server_follows_trust_import_without_restart(servers, tmp_path):
    cache = servers.tls_cache
    path = trust_file(tmp_path / "trust.txt", f"b.test | {DN_B}")
    a = await _a_with_trust_list(servers, tmp_path, path)
    alice = await a.add_account("alice")
    b_cert = (cache / "b" / "server.pem", cache / "b" / "server.key")
    c_cert = (cache / "c" / "server.pem", cache / "c" / "server.key")
    assert (await asyncio.to_thread(_relay, a, b_cert, "dr@b.test", alice))[0] == 250
    code, text = await asyncio.to_thread(_relay, a, c_cert, "dr@c.test", alice)
    assert code == 550 and b"trust space" in text

    # The national list now holds C and no longer B.
    new = allow_list_xml(tmp_path / "liste.xml", [("c.test", DN_C)])
    done = await asyncio.to_thread(_cli, tmp_path, path, "trust", "import", str(new))
    assert done.returncode == 0, done.stderr

    async def reply(cert: tuple[Path, Path], sender: str, expected: int) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            code, _ = await asyncio.to_thread(_relay, a, cert, sender, alice)
            if code == expected or loop.time() > deadline:
                return code
            await asyncio.sleep(0.1)

    assert await reply(c_cert, "dr@c.test", 250) == 250
    code, text = await asyncio.to_thread(_relay, a, b_cert, "dr@b.test", alice)
    assert code == 550 and b"trust space" in text
    assert len(await a.wait_for_messages(alice, 2)) == 2
