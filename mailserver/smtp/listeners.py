"""The SMTP listeners: inbound relay (2525), submission with STARTTLS (2587) and implicit TLS (2465)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiosmtpd.smtp import AuthResult

from mailserver.smtp.inbound import InboundHandler
from mailserver.smtp.protocol import OpenMSSSMTP
from mailserver.smtp.submission import SubmissionHandler


def _never(*_: Any) -> AuthResult:  # aiosmtpd wants an authenticator; ours is async (protocol.py)
    return AuthResult(success=False)


async def start_submission(
    handler: SubmissionHandler,
    *,
    host: str,
    port: int,
    hostname: str,
    tls: ssl.SSLContext,
    implicit_tls: bool,
    max_size: int,
) -> asyncio.Server:
    def factory() -> OpenMSSSMTP:
        return OpenMSSSMTP(
            handler,
            hostname=hostname,
            ident="OpenMSS ESMTP",
            data_size_limit=max_size,
            size_limit=max_size,
            enable_SMTPUTF8=True,
            # Implicit TLS: the whole connection is TLS already (RFC 8314), no STARTTLS.
            tls_context=None if implicit_tls else tls,
            require_starttls=not implicit_tls,
            auth_require_tls=not implicit_tls,
            authenticator=_never,
        )

    loop = asyncio.get_running_loop()
    if implicit_tls:
        return await loop.create_server(factory, host=host, port=port, ssl=tls, ssl_handshake_timeout=30)
    return await loop.create_server(factory, host=host, port=port)


async def start_inbound(
    handler: InboundHandler, *, host: str, port: int, hostname: str, tls: ssl.SSLContext, max_size: int
) -> asyncio.Server:
    def factory() -> OpenMSSSMTP:
        return OpenMSSSMTP(
            handler,
            hostname=hostname,
            ident="OpenMSS ESMTP",
            data_size_limit=max_size,
            size_limit=max_size,
            enable_SMTPUTF8=True,
            tls_context=tls,
            require_starttls=True,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
            authenticator=_never,
        )

    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, host=host, port=port)
