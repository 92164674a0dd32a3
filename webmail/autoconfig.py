"""Mail client set-up: Mozilla's autoconfig file for the domains served here.

Thunderbird (and others: K-9/Thunderbird for Android, Evolution, FairEmail) ask, for
``user@domain``, ``https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=…`` and
``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=…``. The answer
is the "config-v1.1" format (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat):
IMAP and SMTP submission, implicit TLS first (RFC 8314 §3 prefers it to STARTTLS), the
address as user name, the password sent in the clear inside TLS (AUTH only after TLS here).

The domain comes from ``emailaddress`` when given, else from the Host (``autoconfig.`` removed).
A domain not served here gets 404 with a JSON body, like the other HTTP errors of the server.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from openmss.settings import Settings

PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
MEDIA_TYPE = "application/xml"
# Thunderbird replaces it with the address the user typed.
USERNAME = "%EMAILADDRESS%"


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "imap" (incomingServer) or "smtp" (outgoingServer)
    port: int
    socket_type: str  # "SSL" (implicit TLS) or "STARTTLS"


def endpoints(settings: Settings) -> list[Endpoint]:
    """In order of preference: implicit TLS first (RFC 8314 §3.3, §4.1)."""
    return [
        Endpoint("imap", settings.imaps_port, "SSL"),
        Endpoint("imap", settings.imap_port, "STARTTLS"),
        Endpoint("smtp", settings.submissions_port, "SSL"),
        Endpoint("smtp", settings.submission_port, "STARTTLS"),
    ]


def config_xml(domain: str, hostname: str, servers: Sequence[Endpoint]) -> bytes:
    """The ``clientConfig`` document for *domain*."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"OpenMSS ({domain})"
    ET.SubElement(provider, "displayShortName").text = "OpenMSS"
    for server in servers:
        tag = "incomingServer" if server.kind == "imap" else "outgoingServer"
        element = ET.SubElement(provider, tag, type=server.kind)
        ET.SubElement(element, "hostname").text = hostname
        ET.SubElement(element, "port").text = str(server.port)
        ET.SubElement(element, "socketType").text = server.socket_type
        ET.SubElement(element, "authentication").text = "password-cleartext"
        ET.SubElement(element, "username").text = USERNAME
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def requested_domain(request: Request, emailaddress: str | None) -> str | None:
    """The domain asked for: from ``emailaddress``, else the Host; None when malformed."""
    if emailaddress is not None:
        local, at, domain = emailaddress.strip().rpartition("@")
        return domain.lower().rstrip(".") if at and local and domain else None
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):
        return None  # an IPv6 literal names no mail domain
    host = host.partition(":")[0].rstrip(".")
    return host.removeprefix("autoconfig.") or None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def autoconfig_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["client set-up"])
    domains = frozenset(settings.domains)
    servers = endpoints(settings)

    async def autoconfig(request: Request, emailaddress: str | None = None) -> Response:
        """Mozilla autoconfig (config-v1.1) for a domain served here."""
        domain = requested_domain(request, emailaddress)
        if domain is None:
            return _error(400, "emailaddress is not an e-mail address")
        if domain not in domains:
            return _error(404, f"this server does not serve {domain}")
        body = config_xml(domain, settings.hostname, servers)
        return Response(body, media_type=MEDIA_TYPE, headers={"Cache-Control": "max-age=3600"})

    for path in PATHS:
        router.add_api_route(path, autoconfig, methods=["GET", "HEAD"], response_class=Response)
    return router
