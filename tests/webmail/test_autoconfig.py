"""Mozilla autoconfig on the HTTPS port, fetched with curl as a client would."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from servers import Instance

WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
MOZILLA = "/mail/config-v1.1.xml"


def _curl(inst: Instance, path: str, *headers: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET with curl over TLS (-k: a test CA)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    args = [curl, "-k", "-sS", "-o", "-", "-w", "\n%{http_code} %{content_type}"]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run([*args, inst.http_base + path], capture_output=True, timeout=30, check=True)
    body, _, status = done.stdout.rpartition(b"\n")
    code, _, content_type = status.decode().partition(" ")
    return int(code), content_type, body


async def curl(inst: Instance, path: str, *headers: str) -> tuple[int, str, bytes]:
    return await asyncio.to_thread(_curl, inst, path, *headers)


def servers_of(config: ET.Element, tag: str) -> list[dict[str, str]]:
    return [
        {child.tag: child.text or "" for child in server} | {"type": server.get("type", "")}
        for server in config.iter(tag)
    ]


async def test_autoconfig_for_a_served_domain(servers):
    a = await servers.start("a", domains=["a.test", "patient.a.test"])
    s = a.settings
    code, content_type, body = await curl(a, f"{WELL_KNOWN}?emailaddress=dr.martin%40a.test")
    assert code == 200 and content_type.startswith("application/xml")
    config = ET.fromstring(body)
    assert config.tag == "clientConfig" and config.get("version") == "1.1"
    [provider] = config.findall("emailProvider")
    assert provider.get("id") == "a.test" and provider.findtext("domain") == "a.test"
    common = {"hostname": "mx.a.test", "authentication": "password-cleartext", "username": "%EMAILADDRESS%"}
    assert servers_of(config, "incomingServer") == [
        {**common, "type": "imap", "port": str(s.imaps_port), "socketType": "SSL"},
        {**common, "type": "imap", "port": str(s.imap_port), "socketType": "STARTTLS"},
    ]
    assert servers_of(config, "outgoingServer") == [
        {**common, "type": "smtp", "port": str(s.submissions_port), "socketType": "SSL"},
        {**common, "type": "smtp", "port": str(s.submission_port), "socketType": "STARTTLS"},
    ]

    # Thunderbird's other URL, and the domain taken from the Host (autoconfig.<domain>).
    code, _, other = await curl(a, f"{MOZILLA}?emailaddress=146026322000196@patient.a.test")
    assert code == 200 and ET.fromstring(other).find("emailProvider").get("id") == "patient.a.test"
    code, _, by_host = await curl(a, MOZILLA, "Host: autoconfig.a.test")
    assert code == 200 and by_host == body
    code, _, by_host = await curl(a, WELL_KNOWN, "Host: A.test:443")
    assert code == 200 and by_host == body


async def test_autoconfig_refuses_other_domains(servers):
    a = await servers.start("a")
    for path, headers in (
        (f"{WELL_KNOWN}?emailaddress=someone@gmail.com", ()),
        (f"{MOZILLA}?emailaddress=x@b.test", ()),
        (WELL_KNOWN, ()),  # Host 127.0.0.1 names no domain
        (MOZILLA, ("Host: autoconfig.example.org",)),
    ):
        code, content_type, body = await curl(a, path, *headers)
        assert code == 404 and content_type == "application/json", path
        assert "does not serve" in json.loads(body)["error"]
    code, content_type, body = await curl(a, f"{WELL_KNOWN}?emailaddress=not-an-address")
    assert code == 400 and "error" in json.loads(body)
