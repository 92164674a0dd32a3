"""What submission and inbound relay share: accepting DATA into the store."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import Envelope, Session

from directory.conversations import MessagingPolicy
from mailserver.delivery import AcceptedMessage, Delivery, DeliveryError, DeliveryReport
from mailserver.message.headers import (
    MessageFormatError,
    find_bare_line_endings,
    received_header,
    split_header,
)
from mailserver.queue.store import RecipientSpec, new_queue_id
from mailserver.smtp.protocol import OpenMSSSMTP, client_ip, tls_object
from openmss.db.base import utcnow
from openmss.db.commit import GroupCommitter
from openmss.metrics import Metrics

log = logging.getLogger("openmss.smtp")


@dataclass
class SmtpDeps:
    """What an SMTP handler needs, passed in (no globals)."""

    hostname: str
    delivery: Delivery
    storage: GroupCommitter  # knows the batch handler "deliver" (mailserver.delivery)
    metrics: Metrics
    max_recipients: int
    on_delivered: Callable[[DeliveryReport], None] = lambda report: None
    # Who may write to patients (directory.policy); None: no policy (tools, benchmarks).
    policy: MessagingPolicy | None = None


_LINE_END = re.compile(rb"\r\n|\r|\n")


def to_crlf(data: bytes) -> bytes:
    """Every bare LF or CR turned into CRLF (RFC 5321 §2.3.8). Copies only when needed."""
    return _LINE_END.sub(b"\r\n", data) if find_bare_line_endings(data) else data


def tls_description(server: OpenMSSSMTP) -> str | None:
    ssl_object = tls_object(server)
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return f"version={ssl_object.version()} cipher={cipher[0] if cipher else '?'}"


class BaseHandler:
    service = "smtp"

    def __init__(self, deps: SmtpDeps) -> None:
        self.deps = deps
        # Label-bound metric children, looked up once rather than on every message.
        self._accepted = deps.metrics.smtp_accepted.labels(self.service)
        self._bytes = deps.metrics.smtp_bytes.labels(self.service)

    def connection_opened(self) -> None:
        self.deps.metrics.smtp_sessions.labels(self.service).inc()

    def reject(self, reason: str, reply: str) -> str:
        self.deps.metrics.smtp_rejected.labels(self.service, reason).inc()
        return reply

    async def handle_EHLO(
        self, server: OpenMSSSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # RFC 2920 pipelining, RFC 2034 enhanced codes, RFC 3461 DSN: insert before "250 HELP".
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-DSN", responses[-1]]

    def take_rcpt(self, server: OpenMSSSMTP, envelope: Envelope, address: str) -> None:
        notify, orcpt = server.pending_rcpt_dsn
        server.pending_rcpt_dsn = (None, None)
        server.dsn.rcpt[address.lower()] = (notify, orcpt)
        envelope.rcpt_tos.append(address)

    async def policy_refusal(self, sender: str | None, recipient: str) -> str | None:
        """The 550 5.7.1 for a recipient the messaging policy forbids to this sender, else None."""
        if self.deps.policy is None:
            return None
        refusal = await self.deps.policy.refusal(sender or "", recipient)
        return None if refusal is None else self.reject(refusal.reason, refusal.reply(recipient))

    async def _recipients(self, server: OpenMSSSMTP, rcpts: list[str]) -> list[RecipientSpec]:
        """The envelope's recipients as delivery takes them: an alias (postmaster) resolved to
        its mailbox, the address it was sent to kept as the original recipient (RFC 3461 §4.2)
        for any DSN; one recipient per mailbox."""
        specs: list[RecipientSpec] = []
        seen: set[str] = set()
        for rcpt in rcpts:
            notify, orcpt = server.dsn.rcpt.get(rcpt.lower(), (None, None))
            target = await self.deps.delivery.resolve(rcpt)
            if target.lower() in seen:
                continue
            seen.add(target.lower())
            if target != rcpt and orcpt is None:
                orcpt = f"rfc822;{rcpt}"
            specs.append(RecipientSpec(target, notify, orcpt))
        return specs

    def check_content(self, content: bytes, *, allow_bare_newlines: bool = False) -> str | None:
        """A refusal for content that must never be accepted, else None."""
        if not allow_bare_newlines and find_bare_line_endings(content):
            # RFC 5321 §2.3.8: CR and LF only as CRLF. Accepting bare LF is what makes
            # SMTP smuggling possible downstream.
            return self.reject(
                "bare-lf", "550 5.6.0 Message refused: bare LF or CR, lines must end with CRLF"
            )
        try:
            split_header(content)
        except MessageFormatError as exc:
            return self.reject("format", f"550 5.6.0 Message refused: {exc}")
        return None

    async def accept(
        self,
        server: OpenMSSSMTP,
        session: Session,
        envelope: Envelope,
        content: bytes,
        *,
        prefix: bytes,
        protocol: str,
        auth_user: str | None,
        sender_account_id: int | None,
    ) -> str:
        """Store (local) and queue (remote); answer 250 only once the commit is durable."""
        queue_id = new_queue_id()
        now = utcnow()
        rcpts = envelope.rcpt_tos
        trace = received_header(
            from_helo=session.host_name or "unknown",
            from_ip=client_ip(session),
            by_host=self.deps.hostname,
            protocol=protocol,
            recipient=rcpts[0] if len(rcpts) == 1 else None,
            queue_id=queue_id,
            tls=tls_description(server),
            when=now,
            auth_user=auth_user,
        )
        # Plain bytes: the storage worker process receives them pickled.
        chunks: list[bytes | memoryview] = [trace, prefix, content] if prefix else [trace, content]
        size = sum(len(c) for c in chunks)
        # The messaging policy's state changes with the message, in its delivery transaction.
        policy = self.deps.policy
        updates = policy.plan(envelope.mail_from or "", rcpts, content) if policy is not None else []
        message = AcceptedMessage(
            mail_from=envelope.mail_from or "",
            recipients=await self._recipients(server, rcpts),
            chunks=chunks,
            size=size,
            queue_id=queue_id,
            received_at=now,
            envid=server.dsn.envid,
            ret=server.dsn.ret,
            sender_account_id=sender_account_id,
            conversations=updates,
        )
        started = time.perf_counter()
        try:
            report: DeliveryReport = await self.deps.storage.run_batched("deliver", message, weight=size)
        except DeliveryError as exc:
            log.warning("delivery refused", extra={"queue_id": queue_id, "error": str(exc)})
            return self.reject("delivery", f"450 4.2.0 Mailbox unavailable, try again later ({queue_id})")
        except Exception:
            log.exception("storing a message failed", extra={"queue_id": queue_id})
            return self.reject("storage", "451 4.3.0 Could not store the message now, please try again later")
        self.deps.metrics.store_seconds.observe(time.perf_counter() - started)
        self._accepted.inc()
        self._bytes.inc(size)
        log.info(
            "message accepted",
            extra={
                "service": self.service,
                "queue_id": queue_id,
                "size": size,
                "recipients": len(rcpts),
                "local": len(report.stored),
                "queued": len(report.queued),
                "peer": client_ip(session),
                "user": auth_user,
            },
        )
        self.deps.on_delivered(report)
        return f"250 2.0.0 OK: queued as {queue_id}"
