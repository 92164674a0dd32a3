"""Mail from the other operators of the trust space, on 2525 (RFC 5321 relay, RFC 3207 STARTTLS).

Policy:
- STARTTLS before MAIL (RFC 3207 §4: a server may refuse other commands with 530);
- the peer presents a client certificate signed by a CA we trust for peers, and its subject is
  one of the certificate DNs of the sender's domain in the trust list (the national
  allow-list); the null reverse-path (bounces, RFC 5321 §4.5.5) is accepted from any trusted
  operator's certificate;
- a peer may not send as one of our own domains;
- recipients must be local mailboxes: never an open relay;
- the messaging policy between professionals and patients (``directory/policy.py``), as on
  submission: another operator's professional who writes to our patient opens a conversation.
"""

from __future__ import annotations

from aiosmtpd.smtp import Envelope, Session

from directory.trust import TrustListSource
from mailserver.delivery import Route
from mailserver.queue.store import domain_of
from mailserver.smtp.common import BaseHandler, SmtpDeps, log
from mailserver.smtp.protocol import OpenMSSSMTP, client_ip, tls_object
from openmss.tls import peer_certificate_der


class InboundHandler(BaseHandler):
    service = "inbound"

    def __init__(self, deps: SmtpDeps, trust: TrustListSource) -> None:
        super().__init__(deps)
        self.trust = trust

    async def handle_EHLO(
        self, server: OpenMSSSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # Peers authenticate with certificates, never with passwords: AUTH is not offered.
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [line for line in lines if not line.startswith("250-AUTH")]

    async def handle_MAIL(
        self, server: OpenMSSSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        ssl_object = tls_object(server)
        if ssl_object is None:
            return self.reject("no-tls", "530 5.7.0 Must issue a STARTTLS command first")
        der = peer_certificate_der(ssl_object)
        if der is None:
            return self.reject(
                "no-client-cert",
                "530 5.7.1 A client certificate of a trusted operator is required to relay mail here",
            )
        trust = self.trust.current()
        null_sender = address in ("<>", "")
        domain = "" if null_sender else domain_of(address)
        if not null_sender and self.deps.delivery.is_local_domain(domain):
            return self.reject(
                "spoofed-local", f"550 5.7.1 <{address}>: a peer may not send as our own domain"
            )
        if null_sender:
            if not trust.domains_for_certificate(der):
                return self.reject("untrusted-cert", "550 5.7.1 Your certificate is not in the trust list")
        elif not trust.is_trusted_domain(domain):
            return self.reject(
                "untrusted-domain",
                f"550 5.7.1 Domain {domain} is not part of the health messaging trust space",
            )
        elif not trust.certificate_matches(domain, der):
            log.warning(
                "certificate does not match the trust list",
                extra={"domain": domain, "peer": client_ip(session)},
            )
            return self.reject(
                "cert-mismatch",
                f"550 5.7.1 Your certificate is not the one the trust list holds for {domain}",
            )
        envelope.mail_from = "" if null_sender else address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: OpenMSSSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.deps.max_recipients:
            return self.reject("too-many-rcpt", "452 4.5.3 Too many recipients")
        if not self.deps.delivery.is_local_domain(domain_of(address)):
            return self.reject(
                "relay", f"550 5.7.1 <{address}>: relaying denied, not a domain of this server"
            )
        route = await self.deps.delivery.route(address)
        if route is not Route.LOCAL:
            return self.reject("unknown-rcpt", f"550 5.1.1 <{address}>: no such mailbox here")
        # The same messaging policy for patients of other operators (directory/policy.py).
        refusal = await self.policy_refusal(envelope.mail_from, address)
        if refusal:
            return refusal
        self.take_rcpt(server, envelope, address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: OpenMSSSMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        if content is None:
            return "503 5.5.1 Bad sequence of commands"
        refusal = self.check_content(content)
        if refusal:
            return refusal
        return await self.accept(
            server,
            session,
            envelope,
            content,
            prefix=b"",
            protocol="ESMTP",
            auth_user=None,
            sender_account_id=None,
        )
