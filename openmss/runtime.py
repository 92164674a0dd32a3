"""Builds every service from the settings and runs them in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.orm import Session

from directory.conversations import MessagingPolicy
from directory.policy import AddressKinds, default_patient_domains
from directory.trust import TrustListSource
from mailserver.delivery import DeliveryReport, build_delivery
from mailserver.imap.backend import ImapDeps
from mailserver.imap.headercache import HeaderCaches
from mailserver.imap.server import ImapServer
from mailserver.imap.session import SessionDeps
from mailserver.queue.worker import QueueWorker
from mailserver.smtp.common import SmtpDeps
from mailserver.smtp.inbound import InboundHandler
from mailserver.smtp.listeners import start_inbound, start_submission
from mailserver.smtp.senderkeys import SenderKeys
from mailserver.smtp.submission import SubmissionHandler
from mailserver.store.mailboxes import MailboxStore
from mailserver.store.notify import MailboxEvents
from openmss.accounts import Accounts
from openmss.auth import Authenticator
from openmss.crypto.keywrap import KdfParams
from openmss.db.commit import Backend, GroupCommitter, ProcessBackend, ThreadBackend
from openmss.db.engine import Database
from openmss.db.migrate import upgrade
from openmss.http import create_app
from openmss.keyring.escrow import load_escrow
from openmss.keyring.store import Keyring
from openmss.metrics import Metrics
from openmss.passwords import Passwords
from openmss.settings import Settings
from openmss.throttle import LoginThrottle
from openmss.tls import TlsFiles, client_context, ensure_local_tls, server_context
from webmail.api.account import AccountApiDeps, account_router

log = logging.getLogger("openmss")


class _EmbeddedUvicorn(uvicorn.Server):
    """Uvicorn inside our loop: signals are ours, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.effective_database_url)
        self.metrics = Metrics()
        # Re-read when the file changes (``openmss trust import`` replaces it): no restart.
        self.trust = (
            TrustListSource(settings.trust_list, check_interval=settings.trust_list_check_seconds)
            if settings.trust_list
            else TrustListSource.empty()
        )
        self.passwords = Passwords()
        self.throttle = LoginThrottle(
            max_failures=settings.login_max_failures,
            max_failures_per_address=settings.login_max_failures_per_address,
            window=settings.login_window_seconds,
        )
        self.committer = GroupCommitter(
            self.db,
            max_batch=settings.commit_batch_max,
            batch_delay=settings.commit_batch_delay,
            on_commit=self._committed,
        )
        storage_backend: Backend = (
            ProcessBackend("mailserver.delivery:storage_handlers", settings.model_dump(mode="json"))
            if settings.storage_process
            else ThreadBackend(self.db, {"deliver": self._deliver_many})
        )
        self.storage = GroupCommitter(
            storage_backend,
            max_batch=settings.commit_batch_max,
            batch_delay=settings.commit_batch_delay,
            in_flight=settings.commit_in_flight,
            on_commit=self._committed,
        )
        self.authenticator = Authenticator(
            self.db, self.passwords, self.throttle, self.committer, failure_delay=settings.login_failure_delay
        )
        self.delivery = build_delivery(settings, self.db, self.trust)
        self.store = self.delivery.store
        self.queue_store = self.delivery.queue
        self.keyring = Keyring(
            KdfParams(settings.key_kdf_memory_kib, settings.key_kdf_time_cost, settings.key_kdf_parallelism),
            escrow=load_escrow(settings),
        )
        self.sender_keys = SenderKeys(self.db, self.keyring)
        self.accounts = Accounts(
            db=self.db,
            store=self.store,
            keyring=self.keyring,
            passwords=self.passwords,
            write=self.committer.run,
            on_key_change=self.sender_keys.forget,
        )
        self.events = MailboxEvents()
        self.policy = MessagingPolicy(
            self.db,
            AddressKinds(frozenset(settings.patient_domains) or default_patient_domains(settings.domains)),
        )
        self.imap: ImapServer | None = None
        self.tls_files: TlsFiles | None = None
        self.worker: QueueWorker | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None

    # TLS -------------------------------------------------------------------------------------

    def _tls(self) -> TlsFiles:
        s = self.settings
        if s.tls_cert and s.tls_key:
            ca = s.peer_ca_file or s.tls_cert
            return TlsFiles(ca_cert=ca, cert=s.tls_cert, key=s.tls_key)
        files, created = ensure_local_tls(s.tls_dir, s.hostname)
        if created:
            log.info("generated a local CA and server certificate", extra={"ca": str(files.ca_cert)})
        return files

    def http_routers(self) -> list[APIRouter]:
        from directory.fhir_api import fhir_router
        from directory.publication import publication_router
        from directory.search_api import directory_access, search_router
        from webmail.autoconfig import autoconfig_router

        directory_gate = directory_access(self.authenticator, self.settings.directory_search_auth)

        return [
            account_router(
                AccountApiDeps(
                    db=self.db,
                    store=self.store,
                    accounts=self.accounts,
                    authenticator=self.authenticator,
                    committer=self.committer,
                )
            ),
            publication_router(self.db, self.settings),
            autoconfig_router(self.settings),
            search_router(self.db, directory_gate),
            fhir_router(self.db, directory_gate, secured=self.settings.directory_search_auth),
        ]

    # Events ----------------------------------------------------------------------------------

    def delivered(self, report: DeliveryReport) -> None:
        if report.queued and self.worker is not None:
            self.worker.wake()
        # Sessions of this process watching those mailboxes (IMAP IDLE); other instances
        # learn it from PostgreSQL's NOTIFY.
        boxes = [copy.mailbox_id for _, copy in report.stored]
        if report.sent_copy is not None:
            boxes.append(report.sent_copy.mailbox_id)
        self.events.publish(boxes)

    def _deliver_many(self, session: Session, messages: Sequence[Any]) -> Sequence[Any]:
        return self.delivery.deliver_many(session, messages)

    def _committed(self, units: int) -> None:
        self.metrics.group_commits.inc()
        self.metrics.group_commit_units.inc(units)

    async def health(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.db.read() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        # Every listener: SMTP (relay, submission) and IMAP.
        checks["listeners"] = "ok" if self._servers and all(s.is_serving() for s in self._servers) else "down"
        return checks

    # Lifecycle -------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Migrate (when allowed) and start the database writer; no listener yet."""
        if self.settings.auto_migrate:
            await upgrade(self.db)
        self.committer.start()
        self.storage.start()

    async def start(self) -> None:
        """Start everything; if any part fails (a port in use...), stop what was started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        await self.prepare()
        self.tls_files = self._tls()
        files = self.tls_files
        peer_ca = s.peer_ca_file or files.ca_cert
        submission_tls = server_context(files.cert, files.key)
        inbound_tls = server_context(files.cert, files.key, client_ca=peer_ca, require_client_cert=False)
        relay_tls = client_context(peer_ca, files.cert, files.key)
        deps = SmtpDeps(
            hostname=s.hostname,
            delivery=self.delivery,
            storage=self.storage,
            metrics=self.metrics,
            max_recipients=s.max_recipients,
            on_delivered=self.delivered,
            policy=self.policy,
        )
        submission = SubmissionHandler(
            deps,
            self.authenticator,
            s.domains[0] if s.domains else s.hostname,
            sender_keys=self.sender_keys,
            accounts=self.accounts,
        )
        inbound = InboundHandler(deps, self.trust)
        host = s.listen_host
        self.imap = ImapServer(
            SessionDeps(
                imap=ImapDeps(
                    db=self.db,
                    committer=self.committer,
                    mailboxes=MailboxStore(self.store.blobs),
                    store=self.store,
                    at_rest=self.delivery.at_rest,
                    events=self.events,
                    max_message_size=s.max_message_size,
                    header_caches=HeaderCaches(s.imap_header_cache_bytes),
                ),
                authenticator=self.authenticator,
                accounts=self.accounts,
            ),
            hostname=s.hostname,
            tls=submission_tls,
            max_message_size=s.max_message_size,
        )
        if s.database_url.startswith("postgresql"):
            self.events.start_listening(s.database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        self._servers = [
            await start_inbound(
                inbound,
                host=host,
                port=s.smtp_port,
                hostname=s.hostname,
                tls=inbound_tls,
                max_size=s.max_message_size,
            ),
            await start_submission(
                submission,
                host=host,
                port=s.submission_port,
                hostname=s.hostname,
                tls=submission_tls,
                implicit_tls=False,
                max_size=s.max_message_size,
            ),
            await start_submission(
                submission,
                host=host,
                port=s.submissions_port,
                hostname=s.hostname,
                tls=submission_tls,
                implicit_tls=True,
                max_size=s.max_message_size,
            ),
            await self.imap.start(host, s.imap_port, implicit_tls=False),
            await self.imap.start(host, s.imaps_port, implicit_tls=True),
        ]
        self.worker = QueueWorker(
            db=self.db,
            committer=self.committer,
            queue=self.queue_store,
            delivery=self.delivery,
            metrics=self.metrics,
            hostname=s.hostname,
            routes=s.routes,
            client_tls=relay_tls,
            retry_schedule=s.queue_retry_schedule,
            poll_seconds=s.queue_poll_seconds,
            connect_timeout=s.queue_connect_timeout,
            on_delivered=self.delivered,
        )
        self.worker.start()
        if s.http_port:
            app = create_app(metrics=self.metrics, health=self.health, routers=self.http_routers())
            config = uvicorn.Config(
                app, host=host, port=s.http_port, log_config=None, lifespan="off", access_log=False
            )
            if s.http_tls:
                # Our own context (TLS 1.2+, AEAD suites only) rather than uvicorn's defaults.
                config.load()
                config.ssl = server_context(files.cert, files.key)
            self._http = _EmbeddedUvicorn(config)
            self._http_task = asyncio.create_task(self._http.serve(), name="http")
            # uvicorn offers no start-up event to wait on; poll its flag briefly.
            while not self._http.started and not self._http_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if self._http_task.done():
                self._http_task.result()
        log.info(
            "OpenMSS is serving",
            extra={
                "smtp": s.smtp_port,
                "submission": s.submission_port,
                "submissions": s.submissions_port,
                "imap": s.imap_port,
                "imaps": s.imaps_port,
                "http": s.http_port,
                "domains": s.domains,
            },
        )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.imap is not None:
            await self.imap.close_sessions()
        await self.events.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers = []
        if self.worker is not None:
            await self.worker.stop()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 5)
        await self.storage.stop()
        await self.committer.stop()
        await self.db.dispose()

    async def serve_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()
