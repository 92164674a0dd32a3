"""Message submission (RFC 6409) on 2587 (STARTTLS, RFC 3207) and 2465 (implicit TLS, RFC 8314).

Policy: AUTH (RFC 4954) only over TLS; the envelope sender and every ``From:`` address must be
the authenticated account; recipients are local mailboxes or addresses in trusted operators'
domains; the server adds ``Message-ID``/``Date`` when missing (RFC 6409 §8) and a trace field.
Between professionals and patients, the messaging policy (``directory/policy.py``) refuses at
RCPT what a patient may not write, and records the conversations professionals open or close.
"""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import AuthResult, Envelope, Session

from mailserver.delivery import Route
from mailserver.message.autocrypt import autocrypt_header, has_autocrypt
from mailserver.message.headers import header_addresses, missing_headers, select_fields
from mailserver.message.pgpmime import sign_message, signed_parts
from mailserver.smtp.common import BaseHandler, SmtpDeps, log, to_crlf
from mailserver.smtp.protocol import OpenMSSSMTP, client_ip
from mailserver.smtp.senderkeys import SenderKeys
from openmss.accounts import Accounts
from openmss.auth import Authenticator, AuthOutcome
from openmss.db.base import utcnow
from openmss.keyring.store import KeyChain, Locked


class SubmissionHandler(BaseHandler):
    service = "submission"

    def __init__(
        self,
        deps: SmtpDeps,
        authenticator: Authenticator,
        local_domain: str,
        *,
        sender_keys: SenderKeys | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        super().__init__(deps)
        self.authenticator = authenticator
        self.local_domain = local_domain
        self.sender_keys = sender_keys
        self.accounts = accounts

    # AUTH ------------------------------------------------------------------------------------

    async def authenticate(
        self, server: OpenMSSSMTP, session: Session, mechanism: str, login: str, password: str
    ) -> AuthResult:
        result = await self.authenticator.authenticate(
            login, password, client_ip=client_ip(session), service="smtp"
        )
        if result.outcome is AuthOutcome.OK:
            assert result.address is not None and result.account_id is not None
            # An account that asked the server to sign its mail: the key is unlocked for this
            # session only (in memory), with the credential just given.
            signer: KeyChain | None = None
            key = await self.sender_keys.get(result.account_id) if self.sender_keys else None
            if key is not None and key.sign_outgoing and self.accounts is not None:
                try:
                    signer = await self.accounts.unlock(result.account_id, password, result.app_password_id)
                except Locked:
                    log.warning("signing key did not unlock", extra={"user": result.address})
            return AuthResult(success=True, auth_data=(result.account_id, result.address, signer))
        self.deps.metrics.auth_failures.labels("smtp").inc()
        if result.outcome is AuthOutcome.THROTTLED:
            return AuthResult(
                success=False,
                handled=False,
                message=f"454 4.7.0 Too many failed logins, try again in {int(result.retry_after) + 1} s",
            )
        if result.outcome is AuthOutcome.DISABLED:
            return AuthResult(success=False, handled=False, message="535 5.7.8 This account is disabled")
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
        )

    @staticmethod
    def identity(session: Session) -> tuple[int, str] | None:
        data = session.auth_data
        if session.authenticated and isinstance(data, tuple):
            return data[0], data[1]
        return None

    @staticmethod
    def signer(session: Session) -> KeyChain | None:
        data = session.auth_data
        if session.authenticated and isinstance(data, tuple) and len(data) > 2:
            chain = data[2]
            return chain if isinstance(chain, KeyChain) else None
        return None

    # Envelope --------------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: OpenMSSSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        ident = self.identity(session)
        if ident is None:
            return self.reject("no-auth", "530 5.7.0 Authentication required")
        if address == "<>" or address.lower() != ident[1]:
            return self.reject(
                "forged-sender",
                f"550 5.7.1 Sender address rejected: you are logged in as {ident[1]} and may only send as it",
            )
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: OpenMSSSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.deps.max_recipients:
            return self.reject("too-many-rcpt", "452 4.5.3 Too many recipients")
        route = await self.deps.delivery.route(address)
        if route is Route.UNKNOWN_LOCAL:
            return self.reject("unknown-rcpt", f"550 5.1.1 <{address}>: no such mailbox here")
        if route is Route.UNTRUSTED:
            return self.reject(
                "untrusted-domain",
                f"550 5.7.1 <{address}>: this domain is not part of the health messaging trust space",
            )
        # Patients answer only professionals who wrote first (directory/policy.py).
        refusal = await self.policy_refusal(envelope.mail_from, address)
        if refusal:
            return refusal
        self.take_rcpt(server, envelope, address)
        return "250 2.1.5 Recipient OK"

    # DATA ------------------------------------------------------------------------------------

    async def handle_DATA(self, server: OpenMSSSMTP, session: Session, envelope: Envelope) -> str:
        ident = self.identity(session)
        content = envelope.original_content
        if ident is None or content is None:
            return "503 5.5.1 Bad sequence of commands"
        # RFC 6409 §8: a submission server may fix what a client got wrong. Bare newlines
        # become CRLF here, so nothing ambiguous ever leaves this server (SMTP smuggling).
        content = to_crlf(content)
        refusal = self.check_content(content)
        if refusal:
            return refusal
        headers = select_fields(content, ("From", "Sender", "Message-ID", "Date"))
        senders = header_addresses(headers, "From")
        if not senders:
            return self.reject("no-from", "550 5.6.0 Message refused: it has no From: header (RFC 5322 §3.6)")
        foreign = [a for a in senders if a.lower() != ident[1]]
        if foreign:
            log.info("forged From refused", extra={"user": ident[1], "peer": client_ip(session)})
            return self.reject(
                "forged-from",
                f"550 5.7.1 From: header rejected: you are logged in as {ident[1]} and may only send as it",
            )
        prefix = missing_headers(headers, domain=self.local_domain, now=utcnow())
        key = await self.sender_keys.get(ident[0]) if self.sender_keys else None
        if key is not None and not has_autocrypt(content):
            prefix += autocrypt_header(ident[1], key.public)
        chain = self.signer(session)
        if chain is not None and chain.signer() is not None and signed_parts(content) is None:
            # RFC 3156 §5, off the event loop (the message may be large).
            signed = await asyncio.to_thread(sign_message, prefix + content, chain.secrets[0])
            content, prefix = signed, b""
        return await self.accept(
            server,
            session,
            envelope,
            content,
            prefix=prefix,
            protocol="ESMTP",
            auth_user=ident[1],
            sender_account_id=ident[0],
        )
