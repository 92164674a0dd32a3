"""The ``openmss`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from openmss.logs import configure_logging
from openmss.settings import Settings, load_settings

if TYPE_CHECKING:
    from openmss.accounts import Accounts
    from openmss.db.engine import Database

DEMO_ACCOUNTS = (
    ("dr.martin", "Dr Claire Martin (médecin généraliste)"),
    ("dr.bernard", "Dr Paul Bernard (cardiologue)"),
    ("secretariat", "Secrétariat du cabinet"),
    # RFC 5321 §4.5.1: every domain has a postmaster; DSNs name it.
    ("postmaster", "Postmaster (administration de la messagerie)"),
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


@contextlib.asynccontextmanager
async def accounts_for(settings: Settings) -> AsyncIterator[tuple[Database, Accounts]]:
    """The database and the account service on their own (no server running): one transaction
    per change."""
    from mailserver.store import DatabaseBlobStore, MailStore
    from openmss.accounts import Accounts, transaction_writer
    from openmss.crypto.keywrap import KdfParams
    from openmss.db.engine import Database
    from openmss.db.migrate import upgrade
    from openmss.keyring.escrow import load_escrow
    from openmss.keyring.store import Keyring
    from openmss.passwords import Passwords

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    try:
        if settings.auto_migrate:
            await upgrade(db)
        keyring = Keyring(
            KdfParams(settings.key_kdf_memory_kib, settings.key_kdf_time_cost, settings.key_kdf_parallelism),
            escrow=load_escrow(settings),
        )
        yield (
            db,
            Accounts(
                db=db,
                store=MailStore(DatabaseBlobStore()),
                keyring=keyring,
                passwords=Passwords(),
                write=transaction_writer(db),
            ),
        )
    finally:
        await db.dispose()


@contextlib.asynccontextmanager
async def _accounts(settings: Settings) -> AsyncIterator[Accounts]:
    async with accounts_for(settings) as (_, accounts):
        yield accounts


async def _add_account(settings: Settings, address: str, password: str, display_name: str = "") -> bool:
    from directory.links import link_accounts

    async with accounts_for(settings) as (db, accounts):
        if await accounts.create(address, password, display_name, actor="cli") is None:
            return False
        async with db.transaction() as session:  # the directory's entry for this address, if any
            await session.run_sync(lambda s: link_accounts(s.connection(), address))
        return True


def read_new_password() -> str | None:
    """A new account's password, one line of standard input (never the command line); None,
    said on stderr, when it is too short."""
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print(
            "error: the password (read from standard input) must have at least 8 characters", file=sys.stderr
        )
        return None
    return password


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
    password = read_new_password()
    if password is None:
        return 2
    created = asyncio.run(_add_account(settings, address, password, display_name))
    if not created:
        print(f"error: {address} already exists", file=sys.stderr)
        return 1
    print(f"created {address}")
    return 0


def _stdin_line() -> str:
    return sys.stdin.readline().rstrip("\r\n")


async def cmd_app_password(settings: Settings, args: argparse.Namespace) -> int:
    from openmss.accounts import AccountError
    from openmss.keyring.store import Locked

    async with _accounts(settings) as accounts:
        account = await accounts.find(args.address)
        if account is None:
            print(f"error: no account {args.address}", file=sys.stderr)
            return 1
        if args.list:
            rows = await accounts.app_passwords(account.address)
            for row in rows:
                used = f"{row.last_used_at:%Y-%m-%d %H:%M}Z" if row.last_used_at else "never"
                print(f"{row.id}\t{row.label}\tcreated {row.created_at:%Y-%m-%d %H:%M}Z\tlast used {used}")
            if not rows:
                print("no app passwords")
            return 0
        if args.revoke is not None:
            if await accounts.revoke_app_password(account.address, args.revoke, actor="cli"):
                print(f"revoked app password {args.revoke}")
                return 0
            print(f"error: {account.address} has no app password {args.revoke}", file=sys.stderr)
            return 1
        password = _stdin_line()  # the account password: it unlocks the key the app password wraps
        try:
            created = await accounts.create_app_password(account.address, password, args.label, actor="cli")
        except (Locked, AccountError):
            print("error: the account password (read from standard input) is wrong", file=sys.stderr)
            return 1
        print(f"app password {created.id} ({created.label}) for {account.address}, shown only now:")
        print(created.password)
        return 0


async def cmd_password(settings: Settings, address: str) -> int:
    from openmss.keyring.store import Locked

    current, new = _stdin_line(), _stdin_line()
    if len(new) < 8:
        print("error: the new password must have at least 8 characters", file=sys.stderr)
        return 2
    async with _accounts(settings) as accounts:
        if await accounts.find(address) is None:
            print(f"error: no account {address}", file=sys.stderr)
            return 1
        try:
            await accounts.change_password(address, current, new, actor="cli")
        except Locked:
            print("error: the current password is wrong", file=sys.stderr)
            return 1
    print(f"password changed for {address}; the account's keys were re-wrapped")
    return 0


async def cmd_account_state(settings: Settings, address: str, *, disabled: bool) -> int:
    from openmss.accounts import AccountError

    async with _accounts(settings) as accounts:
        try:
            changed = await accounts.set_disabled(address, disabled, actor="cli")
        except AccountError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    state = "disabled" if disabled else "enabled"
    if not changed:
        print(f"{address} was already {state}")
    elif disabled:
        # Running servers remember for a few seconds which addresses have a mailbox; a message
        # accepted meanwhile gets a temporary failure at the end of DATA, never a lost message.
        print(f"{address} disabled: no login, no mail delivered to it (its mail and keys are kept)")
    else:
        print(f"{address} enabled")
    return 0


async def cmd_key(settings: Settings, address: str, path: Path) -> int:
    from openmss.accounts import AccountError

    try:
        public = path.read_bytes()  # noqa: ASYNC240 (a small file read once by a CLI command)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    async with _accounts(settings) as accounts:
        try:
            fingerprint = await accounts.set_own_key(address, public, actor="cli")
        except (AccountError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"{address}: mail is now encrypted to {fingerprint} (own key; the secret key stays with its owner)")
    return 0


async def cmd_recover(settings: Settings, address: str, escrow_secret: Path) -> int:
    from openmss.accounts import AccountError
    from openmss.keyring.store import Locked

    try:
        secret = escrow_secret.read_bytes()  # noqa: ASYNC240 (a small file read once by a CLI command)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    new = _stdin_line()
    if len(new) < 8:
        print(
            "error: the new password (read from standard input) must have at least 8 characters",
            file=sys.stderr,
        )
        return 2
    async with _accounts(settings) as accounts:
        try:
            await accounts.recover_with_escrow(address, secret, new, actor="cli")
        except (AccountError, Locked) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(
        f"{address}: new password set with the escrow key; its mail is readable again, app passwords revoked"
    )
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
        f"  IMAP  STARTTLS  port {s.imap_port}   implicit TLS port {s.imaps_port}\n"
        f"  HTTP{'S' if s.http_tls else ''}  http{'s' if s.http_tls else ''}://{s.listen_host}:{s.http_port}/healthz"
        "  /metrics  /api/docs  /.well-known/openpgpkey/…\n"
        f"  TLS certificates in {s.tls_cert or s.tls_dir} (trust {s.tls_dir / 'ca.pem'} in your client)",
        flush=True,
    )
    try:
        import uvloop
    except ImportError:  # not on every platform: the standard loop serves the same, a bit slower
        asyncio.run(run())
    else:
        # uvloop's event loop and TLS transport (compiled) take a tenth off an IMAP FETCH of one
        # message (bench/imap.py).
        uvloop.run(run())
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
    app = account.add_parser(
        "app-password", help="create (account password on stdin), --list or --revoke app passwords"
    )
    app.add_argument("address")
    app.add_argument("--label", default="mail client", help="what the app password is for")
    app.add_argument("--list", action="store_true", help="list app passwords")
    app.add_argument("--revoke", type=int, default=None, metavar="ID", help="revoke an app password")
    for name, text in (
        ("disable", "no login and no mail delivered to it; its mail and keys are kept"),
        ("enable", "undo disable"),
    ):
        account.add_parser(name, help=text).add_argument("address")
    password = account.add_parser("password", help="change a password: current then new, on stdin")
    password.add_argument("address")
    recover = account.add_parser(
        "recover", help="after a lost password: new password (stdin) with the operator's escrow secret key"
    )
    recover.add_argument("address")
    recover.add_argument("--escrow-secret-key", type=Path, required=True, help="the escrow secret key file")
    key = account.add_parser("key", help="use the user's own public key (the secret key stays with them)")
    key.add_argument("address")
    key.add_argument("file", type=Path, help="the public key, armoured or binary")
    keys = sub.add_parser("key", help="the key directory").add_subparsers(dest="action", required=True)
    key_import = keys.add_parser(
        "import", help="import public keys of other operators' professionals (FILE, or - for stdin)"
    )
    key_import.add_argument("file")
    trusts = sub.add_parser("trust", help="the trust list of operators")
    trust = trusts.add_subparsers(dest="action", required=True)
    trust_import = trust.add_parser(
        "import", help="check a trust list (national XML or 'domain | DN' lines) and install it at trust_list"
    )
    trust_import.add_argument("file", help="the file, or - for standard input")
    trust_list = trust.add_parser("list", help="print the trusted domains and their certificate DNs")
    trust_list.add_argument("file", nargs="?", default=None, help="another file than the trust_list setting")
    from directory.cli import add_parser as add_directory_parser
    from directory.patient_cli import add_parser as add_patient_parser

    add_directory_parser(sub)
    add_patient_parser(sub)
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
        if args.action == "app-password":
            return asyncio.run(cmd_app_password(settings, args))
        if args.action == "password":
            return asyncio.run(cmd_password(settings, args.address.strip().lower()))
        if args.action == "recover":
            return asyncio.run(cmd_recover(settings, args.address.strip().lower(), args.escrow_secret_key))
        if args.action == "key":
            return asyncio.run(cmd_key(settings, args.address.strip().lower(), args.file))
        if args.action in ("disable", "enable"):
            address = args.address.strip().lower()
            return asyncio.run(cmd_account_state(settings, address, disabled=args.action == "disable"))
        return cmd_account_add(settings, args.address, args.name)
    if args.command == "key":
        from directory.keys import import_keys_cli

        return asyncio.run(import_keys_cli(settings, args.file))
    if args.command == "trust":
        from directory.trust_cli import cmd_trust_import, cmd_trust_list

        if args.action == "import":
            return cmd_trust_import(settings, args.file)
        return cmd_trust_list(settings, args.file)
    if args.command == "patient":
        from directory.patient_cli import run as run_patient

        return run_patient(settings, args)
    if args.command == "directory":
        from directory.cli import run as run_directory

        return run_directory(settings, args)
    if args.command == "db":
        return asyncio.run(cmd_db_upgrade(settings))
    if args.command == "queue":
        return asyncio.run(_queue(settings, args.action, getattr(args, "queue_id", None)))
    return 2


if __name__ == "__main__":
    sys.exit(main())
