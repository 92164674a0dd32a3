"""The outbound queue worker: relays to other operators, retries, bounces with a DSN.

Each instance runs one worker. Due recipients are leased in the database (``locked_until``;
``FOR UPDATE SKIP LOCKED`` on PostgreSQL) so that several instances never send the same
recipient twice, and a worker that dies leaves its lease to expire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosmtplib
from sqlalchemy.orm import Session

from mailserver.delivery import AcceptedMessage, Delivery, DeliveryError, DeliveryReport
from mailserver.message.headers import split_header
from mailserver.queue.dsn import RecipientStatus, build_dsn
from mailserver.queue.store import (
    DELIVERED,
    FAILED,
    QUEUED,
    QueueEntry,
    QueueStore,
    RecipientSpec,
    new_queue_id,
)
from mailserver.queue.tables import QueuedMessage, QueuedRecipient
from openmss.db.base import utcnow
from openmss.db.commit import GroupCommitter
from openmss.db.engine import Database
from openmss.metrics import Metrics

log = logging.getLogger("openmss.queue")


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient in one attempt."""

    entry: QueueEntry
    code: int  # SMTP reply code; 0 for a connection-level failure
    text: str
    remote_mta: str | None

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300


def parse_route(route: str) -> tuple[str, int]:
    host, _, port = route.rpartition(":")
    if not host:
        return route, 25
    return host.strip("[]"), int(port)


def enhanced_status(code: int, text: str, default: str) -> str:
    head = text.split(" ", 1)[0]
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and head[0] in "245":
        return head
    if 500 <= code < 600:
        return "5.0.0"
    return default


@dataclass(frozen=True)
class _Needs:
    """What a message needs of the next hop (RFC 6531 §3.4, RFC 6532, RFC 6152 §2)."""

    utf8_address: bool  # a non-ASCII address in the envelope
    utf8_header: bool  # header fields in UTF-8
    eight_bit: bool  # any octet above 127

    @classmethod
    def of(cls, mail_from: str, body: bytes, group: Sequence[QueueEntry]) -> _Needs:
        end = body.find(b"\r\n\r\n")  # queued messages have CRLF line ends (RFC 5321 §2.3.8)
        return cls(
            utf8_address=not (mail_from.isascii() and all(e.recipient.isascii() for e in group)),
            utf8_header=not (body if end < 0 else body[:end]).isascii(),
            eight_bit=not body.isascii(),
        )

    @property
    def smtputf8(self) -> bool:
        return self.utf8_address or self.utf8_header

    def refusal(self, client: aiosmtplib.SMTP, host: str) -> tuple[int, str] | None:
        """A permanent failure when the next hop cannot take the message as it is. Converting
        it (RFC 6152 §3 allows a 7-bit downgrade) would break any signature over its content,
        and the operators of the trust space all support 8BITMIME: the sender gets a DSN that
        says why."""
        if self.smtputf8 and not client.supports_extension("smtputf8"):
            if self.utf8_address:
                return 553, f"5.6.7 {host} does not accept non-ASCII addresses (no SMTPUTF8, RFC 6531)"
            return 554, f"5.6.9 {host} cannot receive UTF-8 header fields (no SMTPUTF8, RFC 6531)"
        if self.eight_bit and not client.supports_extension("8bitmime"):
            return 554, f"5.6.3 {host} does not accept 8-bit content (no 8BITMIME, RFC 6152)"
        return None


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError):
        client.close()


class QueueWorker:
    def __init__(
        self,
        *,
        db: Database,
        committer: GroupCommitter,
        queue: QueueStore,
        delivery: Delivery,
        metrics: Metrics,
        hostname: str,
        routes: dict[str, str],
        client_tls: ssl.SSLContext,
        retry_schedule: Sequence[float],
        poll_seconds: float = 1.0,
        connect_timeout: float = 30.0,
        concurrency: int = 10,
        on_delivered: Callable[[DeliveryReport], None] = lambda report: None,
    ) -> None:
        self._db = db
        self._committer = committer
        self._queue = queue
        self._delivery = delivery
        self._metrics = metrics
        self._hostname = hostname
        self._routes = {k.lower(): v for k, v in routes.items()}
        self._tls = client_tls
        self._schedule = list(retry_schedule) or [60.0]
        self._poll = poll_seconds
        self._timeout = connect_timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_delivered = on_delivered
        self.worker_id = f"{hostname}:{os.getpid()}:{secrets.token_hex(3)}"

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="queue-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue run failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            except TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self) -> int:
        """Attempt every due recipient once; return how many were attempted."""
        entries = await self._committer.run(
            lambda session: self._queue.claim_due(session, worker=self.worker_id, lease=timedelta(minutes=10))
        )
        async with self._db.read() as session:
            waiting = await self._queue.count_waiting(session)
        self._metrics.queue_waiting.set(waiting)
        if not entries:
            return 0
        groups: dict[tuple[int, str], list[QueueEntry]] = defaultdict(list)
        for entry in entries:
            groups[(entry.message_id, entry.domain)].append(entry)
        await asyncio.gather(*(self._attempt(group) for group in groups.values()))
        return len(entries)

    async def _attempt(self, group: list[QueueEntry]) -> None:
        async with self._limit:
            first = group[0]
            async with self._db.read() as session:
                message = await self._queue.message(session, first.message_id)
                body = b"".join([chunk async for chunk in self._queue.blobs.get(session, message.blob_id)])
                specs = {e.recipient_id: await self._queue.recipient(session, e.recipient_id) for e in group}
            route = self._routes.get(first.domain)
            if route is None:
                outcomes = [Outcome(e, 0, f"no route to {first.domain}", None) for e in group]
            else:
                outcomes = await self._send(route, message, body, group, specs)
            await self._record(message, body, outcomes)

    async def _send(
        self,
        route: str,
        message: QueuedMessage,
        body: bytes,
        group: list[QueueEntry],
        specs: dict[int, QueuedRecipient],
    ) -> list[Outcome]:
        host, port = parse_route(route)
        remote = f"{host}"
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=self._hostname,
            tls_context=self._tls,
            start_tls=True,
            timeout=self._timeout,
        )
        try:
            await client.connect()
            # After STARTTLS the client forgets the extensions (RFC 3207 §4.2) and would only
            # say EHLO again with its first command: ask now, so that what the next hop
            # supports (DSN, SIZE, 8BITMIME, SMTPUTF8) is known before MAIL is written.
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            return [Outcome(e, 0, f"connection to {host}:{port} failed: {exc}", remote) for e in group]
        needs = _Needs.of(message.mail_from, body, group)
        refused = needs.refusal(client, host)
        if refused is not None:
            code, text = refused
            await _quit(client)
            return [Outcome(e, code, text, None) for e in group]
        outcomes: list[Outcome] = []
        encoding = "utf-8" if needs.smtputf8 else "ascii"
        try:
            dsn = client.supports_extension("dsn")
            mail_options = []
            # RFC 6531 §3.4 and RFC 6152 §2: say what the message needs of the next hop.
            if needs.smtputf8:
                mail_options.append("SMTPUTF8")
            if needs.eight_bit:
                mail_options.append("BODY=8BITMIME")
            if dsn and message.ret:
                mail_options.append(f"RET={message.ret}")
            if dsn and message.envid:
                mail_options.append(f"ENVID={message.envid}")
            if client.supports_extension("size"):
                mail_options.append(f"SIZE={len(body)}")
            response = await client.mail(message.mail_from, options=mail_options, encoding=encoding)
            accepted: list[QueueEntry] = []
            for entry in group:
                rcpt = specs[entry.recipient_id]
                options = []
                if dsn and rcpt.notify:
                    options.append(f"NOTIFY={rcpt.notify}")
                if dsn and rcpt.orcpt:
                    options.append(f"ORCPT={rcpt.orcpt}")
                try:
                    await client.rcpt(entry.recipient, options=options, encoding=encoding)
                    accepted.append(entry)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    outcomes.append(Outcome(entry, exc.code, exc.message, remote))
            if accepted:
                try:
                    response = await client.data(body)
                    outcomes.extend(Outcome(e, response.code, response.message, remote) for e in accepted)
                except aiosmtplib.SMTPDataError as exc:
                    outcomes.extend(Outcome(e, exc.code, exc.message, remote) for e in accepted)
            else:
                await client.rset()
        except aiosmtplib.SMTPSenderRefused as exc:
            outcomes = [Outcome(e, exc.code, exc.message, remote) for e in group]
        except aiosmtplib.SMTPResponseException as exc:
            done = {o.entry.recipient_id for o in outcomes}
            outcomes.extend(
                Outcome(e, exc.code, exc.message, remote) for e in group if e.recipient_id not in done
            )
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            done = {o.entry.recipient_id for o in outcomes if o.permanent}
            outcomes = [o for o in outcomes if o.entry.recipient_id in done]
            outcomes.extend(
                Outcome(e, 0, f"{type(exc).__name__}: {exc}", remote)
                for e in group
                if e.recipient_id not in done
            )
        finally:
            await _quit(client)
        return outcomes

    def _next_attempt(self, attempts: int, now: datetime) -> datetime:
        delay = self._schedule[min(attempts, len(self._schedule) - 1)]
        return now + timedelta(seconds=delay)

    async def _record(self, message: QueuedMessage, body: bytes, outcomes: list[Outcome]) -> None:
        report = await self._committer.run(
            lambda session: self._record_in(session, message, body, outcomes, utcnow())
        )
        if report is not None:
            self._on_delivered(report)

    def _record_in(
        self, session: Session, message: QueuedMessage, body: bytes, outcomes: list[Outcome], now: datetime
    ) -> DeliveryReport | None:
        """In the writer thread: the attempt's results, DSNs and clean-up, in one transaction."""
        failed: list[tuple[Outcome, str]] = []
        for outcome in outcomes:
            entry = outcome.entry
            if outcome.delivered:
                self._metrics.queue_deliveries.labels("delivered").inc()
                self._queue.mark(session, entry.recipient_id, state=DELIVERED)
                log.info("relayed", extra={"queue_id": entry.queue_id, "domain": entry.domain})
                continue
            if outcome.permanent:
                self._metrics.queue_deliveries.labels("failed").inc()
                status = enhanced_status(outcome.code, outcome.text, "5.0.0")
                self._queue.mark(session, entry.recipient_id, state=FAILED, error=outcome.text)
                failed.append((outcome, status))
                continue
            retry_at = self._next_attempt(entry.attempts, now)
            if retry_at > entry.expires_at:
                self._metrics.queue_deliveries.labels("expired").inc()
                self._queue.mark(session, entry.recipient_id, state=FAILED, error=outcome.text)
                failed.append((outcome, "4.4.7"))  # RFC 3463: delivery time expired
                continue
            self._metrics.queue_deliveries.labels("deferred").inc()
            self._queue.mark(
                session, entry.recipient_id, state=QUEUED, error=outcome.text, next_attempt_at=retry_at
            )
            log.info(
                "deferred",
                extra={
                    "queue_id": entry.queue_id,
                    "domain": entry.domain,
                    "retry_at": retry_at.isoformat(),
                },
            )
        report = self._bounce(session, message, body, failed, now)
        self._queue.finish_if_done(session, message.id)
        return report

    def _bounce(
        self,
        session: Session,
        message: QueuedMessage,
        body: bytes,
        failed: list[tuple[Outcome, str]],
        now: datetime,
    ) -> DeliveryReport | None:
        """A DSN (RFC 3464) to a local sender for the recipients that failed for good."""
        if not failed or not message.mail_from:
            return None  # never bounce a bounce (RFC 5321 §4.5.5)
        sender_domain = message.mail_from.rpartition("@")[2]
        if not self._delivery.is_local_domain(sender_domain):
            log.warning("cannot bounce to a remote sender", extra={"queue_id": message.queue_id})
            return None
        wanted: list[RecipientStatus] = []
        for outcome, status in failed:
            rcpt = self._queue.recipient_sync(session, outcome.entry.recipient_id)
            if rcpt.notify is not None and "FAILURE" not in rcpt.notify.split(","):
                continue  # RFC 3461 §4.1: NOTIFY=NEVER or without FAILURE
            wanted.append(
                RecipientStatus(
                    final_recipient=outcome.entry.recipient,
                    action="failed",
                    status=status,
                    diagnostic=f"smtp; {outcome.code} {outcome.text}" if outcome.code else None,
                    remote_mta=outcome.remote_mta,
                    original_recipient=rcpt.orcpt,
                    last_attempt=now,
                )
            )
        if not wanted:
            return None
        header, _ = split_header(body)
        dsn = build_dsn(
            reporting_mta=self._hostname,
            postmaster=f"postmaster@{sender_domain}",
            to=message.mail_from,
            original_headers=bytes(header),
            original_envelope_id=message.envid,
            arrival_date=message.created_at,
            recipients=wanted,
            original_body=body if message.ret == "FULL" else None,
            now=now,
            message_id_domain=sender_domain,
        )
        accepted = AcceptedMessage(
            mail_from="",
            recipients=[RecipientSpec(message.mail_from)],
            chunks=[dsn],
            size=len(dsn),
            queue_id=new_queue_id(),
            received_at=now,
        )
        log.info("bounced", extra={"queue_id": message.queue_id, "recipients": len(wanted)})
        try:
            with session.begin_nested():
                return self._delivery.deliver(session, accepted)
        except DeliveryError:
            # The sender's mailbox is gone: nobody to tell, and the queue must move on.
            log.warning("DSN dropped: the sender has no mailbox", extra={"queue_id": message.queue_id})
            return None
