"""HTTP Basic authentication for the account API (RFC 7617), over TLS only (the HTTP port
speaks TLS). The password or an app password is checked by the shared ``Authenticator``, with
the same throttling as SMTP and IMAP."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import HTTPException, Request

from openmss.auth import Authenticator, AuthOutcome

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="OpenMSS", charset="UTF-8"'}


@dataclass(frozen=True)
class Caller:
    account_id: int
    address: str
    password: str  # kept for this request only: it unlocks the keys
    app_password_id: int | None
    peer: str

    @property
    def with_main_password(self) -> bool:
        return self.app_password_id is None


def _credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise HTTPException(401, "authentication required (HTTP Basic)", headers=_CHALLENGE)
    try:
        login, colon, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise HTTPException(400, "malformed Authorization header") from None
    if not colon:
        raise HTTPException(400, "malformed Authorization header")
    return login, password


async def authenticate(request: Request, authenticator: Authenticator) -> Caller:
    login, password = _credentials(request)
    peer = request.client.host if request.client else ""
    result = await authenticator.authenticate(login, password, client_ip=peer, service="http")
    if result.outcome is AuthOutcome.THROTTLED:
        raise HTTPException(
            429,
            "too many failed logins, try again later",
            headers={"Retry-After": str(int(result.retry_after) + 1)},
        )
    if result.outcome is AuthOutcome.DISABLED:
        raise HTTPException(403, "this account is disabled")
    if result.outcome is not AuthOutcome.OK or result.account_id is None or result.address is None:
        raise HTTPException(401, "authentication credentials invalid", headers=_CHALLENGE)
    return Caller(result.account_id, result.address, password, result.app_password_id, peer)
