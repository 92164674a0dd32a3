"""aiosmtpd's protocol engine with what OpenMSS needs on top.

The policy lives in the handlers (``submission.py``, ``inbound.py``); this class only mends
protocol-level gaps of aiosmtpd 1.4:

- every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code (RFC 2034 §3), also
  aiosmtpd's built-in ones;
- AUTH PLAIN/LOGIN credentials are checked by an async handler hook, so that argon2 runs off
  the event loop (aiosmtpd's ``authenticator`` is synchronous);
- the RFC 3461 DSN parameters (RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT), which aiosmtpd
  would refuse, are taken off the command line, validated, and handed to the handler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from mailserver.smtp.enhanced import with_enhanced_code

# The ordinary path argument: <dot-atom@domain> with ASCII atext (RFC 5321 §4.1.2), and
# whatever follows (the parameters). Anything else goes to aiosmtpd's full parser.
_SIMPLE_PATH = re.compile(
    r"<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*))>"
)
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")
_NOTIFY_VALUES = {"NEVER", "SUCCESS", "FAILURE", "DELAY"}


class AuthHandler(Protocol):
    async def authenticate(
        self, server: OpenMSSSMTP, session: Session, mechanism: str, login: str, password: str
    ) -> AuthResult: ...


@dataclass
class DsnParams:
    """RFC 3461 parameters of the current transaction."""

    ret: str | None = None  # FULL | HDRS (§4.3)
    envid: str | None = None  # xtext (§4.4)
    rcpt: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # addr -> (NOTIFY, ORCPT)


class DsnSyntaxError(ValueError):
    pass


def split_dsn_params(arg: str, names: set[str]) -> tuple[str, dict[str, str]]:
    """Take ``NAME=value`` parameters in ``names`` out of a MAIL/RCPT argument.

    Returns the argument without them (for aiosmtpd) and the values found, keys upper-cased.
    """
    head, sep, params = arg.partition(">")
    if not sep:
        return arg, {}
    kept: list[str] = []
    found: dict[str, str] = {}
    for token in params.split():
        key, eq, value = token.partition("=")
        if key.upper() in names:
            if not eq or not value:
                raise DsnSyntaxError(f"{key.upper()} needs a value")
            if key.upper() in found:
                raise DsnSyntaxError(f"{key.upper()} given twice")
            found[key.upper()] = value
        else:
            kept.append(token)
    return head + sep + ("" if not kept else " " + " ".join(kept)), found


def validate_mail_dsn(found: dict[str, str]) -> tuple[str | None, str | None]:
    ret = found.get("RET")
    if ret is not None:
        ret = ret.upper()
        if ret not in {"FULL", "HDRS"}:
            raise DsnSyntaxError("RET must be FULL or HDRS")
    envid = found.get("ENVID")
    if envid is not None and (len(envid) > 100 or not _XTEXT.match(envid)):
        raise DsnSyntaxError("ENVID must be xtext of at most 100 characters")
    return ret, envid


def validate_rcpt_dsn(found: dict[str, str]) -> tuple[str | None, str | None]:
    notify = found.get("NOTIFY")
    if notify is not None:
        values = {v for v in notify.upper().split(",") if v}
        if not values or not values <= _NOTIFY_VALUES or ("NEVER" in values and len(values) > 1):
            raise DsnSyntaxError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        notify = ",".join(sorted(values))
    orcpt = found.get("ORCPT")
    if orcpt is not None:
        addr_type, semi, xtext = orcpt.partition(";")
        if not semi or not addr_type or not _XTEXT.match(xtext) or len(orcpt) > 500:
            raise DsnSyntaxError("ORCPT must be addr-type;xtext")
    return notify, orcpt


class OpenMSSSMTP(SMTP):
    def __init__(self, handler: Any, *args: Any, size_limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(handler, *args, **kwargs)
        self._in_helo = False
        self._size_limit = size_limit
        self.dsn = DsnParams()
        self._pending_credentials: LoginPassword | None = None

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None
        super().connection_made(transport)
        opened = getattr(self.event_handler, "connection_opened", None)
        if first and opened is not None:
            opened()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every MAIL/RCPT path with the email package's full RFC 5322 grammar,
        # the costliest step of a message. The ordinary form takes a regular expression; the
        # results are the same (tests/mailserver/smtp/test_protocol.py checks it).
        stripped = arg.lstrip()
        match = _SIMPLE_PATH.match(stripped)
        if match is not None:
            address = match.group(1)
            rest = stripped[match.end() :].lstrip(" \t")  # as the grammar eats trailing CFWS
            limit_ok = not self.local_part_limit or len(address.rpartition("@")[0]) <= self.local_part_limit
            if limit_ok and not rest.startswith("("):  # a comment: leave it to the full parser
                return address, rest
        try:
            result: tuple[str | None, str | None] = super()._getaddr(arg)
        except Exception:  # aiosmtpd 1.4 raises IndexError on "<": a malformed address, 553
            return None, None
        return result

    # Replies ---------------------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        if not self._in_helo:
            text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
            if text == "220 Ready to start TLS":  # the greeting is the only 220 left without a code
                text = "220 2.0.0 Ready to start TLS"
            await super().push(with_enhanced_code(text, size_limit=self._size_limit))
            return
        await super().push(status)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        # RFC 2034 §3: no enhanced codes in the replies to HELO and EHLO.
        self._in_helo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

    def _set_rset_state(self) -> None:
        super()._set_rset_state()  # type: ignore[no-untyped-call]
        self.dsn = DsnParams()

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        self.dsn = DsnParams()

    # RFC 3461 parameters -----------------------------------------------------------------------

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg is not None:
            try:
                arg, found = split_dsn_params(arg, {"RET", "ENVID"})
                ret, envid = validate_mail_dsn(found)
            except DsnSyntaxError as exc:
                await self.push(f"501 5.5.4 {exc} (RFC 3461)")
                return
            self.dsn = DsnParams(ret=ret, envid=envid)
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg is not None:
            try:
                arg, found = split_dsn_params(arg, {"NOTIFY", "ORCPT"})
                params = validate_rcpt_dsn(found)
            except DsnSyntaxError as exc:
                await self.push(f"501 5.5.4 {exc} (RFC 3461)")
                return
            self.pending_rcpt_dsn = params
        await super().smtp_RCPT(arg)

    pending_rcpt_dsn: tuple[str | None, str | None] = (None, None)

    # Authentication ------------------------------------------------------------------------

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # Called synchronously by aiosmtpd's auth_PLAIN/auth_LOGIN once the credentials are
        # decoded: keep them for the async check in the wrappers below.
        assert isinstance(auth_data, LoginPassword)
        self._pending_credentials = auth_data
        return AuthResult(success=False, handled=False)

    async def _checked(self, mechanism: str, result: AuthResult) -> AuthResult:
        creds, self._pending_credentials = self._pending_credentials, None
        if creds is None:
            return result  # aborted or malformed: aiosmtpd already answered
        assert self.session is not None
        try:
            login = creds.login.decode("utf-8")
            password = creds.password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Credentials are not UTF-8")
        handler: AuthHandler = self.event_handler
        return await handler.authenticate(self, self.session, mechanism, login, password)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked("LOGIN", await super().auth_LOGIN(_, args))


def tls_object(server: SMTP) -> Any:
    """The SSL object of the connection, for STARTTLS and implicit TLS alike (or None)."""
    transport = server.transport
    return transport.get_extra_info("ssl_object") if transport is not None else None


def client_ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


__all__ = ["DsnParams", "Envelope", "OpenMSSSMTP", "client_ip", "tls_object"]
