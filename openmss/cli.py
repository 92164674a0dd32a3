"""The ``openmss`` command."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from openmss.logs import configure_logging
from openmss.settings import Settings, load_settings

DEMO_ACCOUNTS = (
    ("dr.martin", "Dr Claire Martin (médecin généraliste)"),
    ("dr.bernard", "Dr Paul Bernard (cardiologue)"),
    ("secretariat", "Secrétariat du cabinet"),
)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


async def cmd_db_upgrade(settings: Settings) -> int:
    from openmss.db.engine import Database
    from openmss.db.migrate import current_revision, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    try:
        await upgrade(db)
        print(f"database at revision {await current_revision(db)}")
    finally:
        await db.dispose()
    return 0


async def _add_account(settings: Settings, address: str, password: str, display_name: str = "") -> bool:
    from mailserver.store import DatabaseBlobStore, MailStore
    from openmss import audit
    from openmss.db.engine import Database
    from openmss.db.migrate import upgrade
    from openmss.passwords import Passwords

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    try:
        if settings.auto_migrate:
            await upgrade(db)
        store = MailStore(DatabaseBlobStore())
        async with db.read() as session:
            if await store.account_by_address(session, address) is not None:
                return False
        hashed = await asyncio.to_thread(Passwords().hash, password)
        with db.sync_transaction() as sync:
            store.create_account(sync, address, hashed, display_name)
            audit.record(sync, actor="cli", action="account.create", target=address.lower())
        return True
    finally:
        await db.dispose()


def cmd_account_add(settings: Settings, address: str, display_name: str) -> int:
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        print(f"error: {address!r} is not an e-mail address", file=sys.stderr)
        return 2
    if not settings.is_local_domain(domain):
        print(
            f"error: {domain} is not one of this server's domains ({', '.join(settings.domains)})",
            file=sys.stderr,
        )
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print(
            "error: the password (read from standard input) must have at least 8 characters", file=sys.stderr
        )
        return 2
    created = asyncio.run(_add_account(settings, address, password, display_name))
    if not created:
        print(f"error: {address} already exists", file=sys.stderr)
        return 1
    print(f"created {address}")
    return 0


def cmd_demo(settings: Settings) -> int:
    domain = settings.domains[0]
    print(f"Demo accounts on {domain} (passwords are shown only now):")
    for local, name in DEMO_ACCOUNTS:
        address = f"{local}@{domain}"
        password = secrets.token_urlsafe(12)
        if asyncio.run(_add_account(settings, address, password, name)):
            print(f"  {address:<40} {password}")
        else:
            print(f"  {address:<40} (exists already; password unchanged)")
    return 0


async def _queue(settings: Settings, action: str, queue_id: str | None) -> int:
    from mailserver.queue.store import QueueStore
    from mailserver.store import DatabaseBlobStore
    from openmss.db.engine import Database

    db = Database(settings.effective_database_url)
    queue = QueueStore(DatabaseBlobStore())
    try:
        if action == "list":
            async with db.read() as session:
                entries = await queue.list(session)
            if not entries:
                print("the queue is empty")
            for e in entries:
                print(
                    f"{e.queue_id}  {e.mail_from or '<>'} -> {e.recipient}  attempts={e.attempts}  "
                    f"next={e.next_attempt_at:%Y-%m-%d %H:%M:%S}Z  expires={e.expires_at:%Y-%m-%d %H:%M}Z"
                    + (f"  last_error={e.last_error}" if e.last_error else "")
                )
        else:
            with db.sync_transaction() as sync:
                count = queue.retry_now(sync, queue_id)
            print(f"{count} recipient(s) scheduled for immediate retry")
    finally:
        await db.dispose()
    return 0


def cmd_serve(settings: Settings) -> int:
    from openmss.runtime import Runtime

    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        runtime = Runtime(settings)
        await runtime.serve_forever()

    s = settings
    print(
        f"OpenMSS for {', '.join(s.domains)} on {s.listen_host}:\n"
        f"  submission  STARTTLS  port {s.submission_port}   implicit TLS port {s.submissions_port}\n"
        f"  relay (other operators, mutual TLS)  port {s.smtp_port}\n"
        f"  HTTP  http://{s.listen_host}:{s.http_port}/healthz  /metrics\n"
        f"  TLS certificates in {s.tls_cert or s.tls_dir} (trust {s.tls_dir / 'ca.pem'} in your client)",
        flush=True,
    )
    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmss", description="OpenMSS secure health messaging server")
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file (or OPENMSS_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run every service in one process")
    sub.add_parser("demo", help="create demo accounts and print their passwords once")
    account = sub.add_parser("account", help="manage accounts").add_subparsers(dest="action", required=True)
    add = account.add_parser("add", help="create an account; the password is read from standard input")
    add.add_argument("address")
    add.add_argument("--name", default="", help="display name")
    db = sub.add_parser("db", help="database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply schema migrations")
    queue = sub.add_parser("queue", help="the outbound queue").add_subparsers(dest="action", required=True)
    queue.add_parser("list", help="list waiting recipients")
    retry = queue.add_parser("retry", help="retry waiting recipients now")
    retry.add_argument("queue_id", nargs="?", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except Exception as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return cmd_serve(settings)
    if args.command == "demo":
        return cmd_demo(settings)
    if args.command == "account":
        return cmd_account_add(settings, args.address, args.name)
    if args.command == "db":
        return asyncio.run(cmd_db_upgrade(settings))
    if args.command == "queue":
        return asyncio.run(_queue(settings, args.action, getattr(args, "queue_id", None)))
    return 2


if __name__ == "__main__":
    sys.exit(main())
