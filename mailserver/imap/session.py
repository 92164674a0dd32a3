"""One IMAP4rev1 session (RFC 3501 §3): the state machine between the parsed commands and the
account's store. Parsing is ``parser.py``'s, rendering of message data ``fetch.py``'s, the
store ``backend.py``'s; what is here is the protocol's logic: states, responses, when other
sessions' changes may be told (§7.4.1), IDLE (RFC 2177), and the extensions real clients use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import operator
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailserver.imap import parser as p
from mailserver.imap import searchkeys as sk
from mailserver.imap import wire
from mailserver.imap.backend import AccountBackend, ImapDeps
from mailserver.imap.connection import Connection, ConnectionClosed
from mailserver.imap.fetch import flags_update, needs_content, render_fetch, sets_seen
from mailserver.imap.framing import CommandLine, ContinuationNeeded, FramingError
from mailserver.imap.headercache import CachedHeader
from mailserver.imap.search import CompiledSearch, SearchContext, SearchMessage, plain_lowered
from mailserver.imap.sequence import SequenceSet
from mailserver.imap.view import MailboxView
from mailserver.store.mailboxes import SEPARATOR, MailboxError, MailboxInfo
from mailserver.store.reader import MessageReader
from openmss.accounts import Accounts
from openmss.auth import Authenticator, AuthOutcome
from openmss.keyring.store import Locked

log = logging.getLogger("openmss.imap")

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"})
_FLUSH = 256 * 1024
_RECHECK = 5.0  # seconds: the store is asked at least this often, wake-up or not


class _Bye(Exception):
    """End the session after sending what was written."""


@dataclass(frozen=True)
class SessionConfig:
    hostname: str
    implicit_tls: bool
    tls: ssl.SSLContext
    idle_timeout: float = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes
    idle_command_timeout: float = 29 * 60.0  # RFC 2177: clients re-issue IDLE within 29 minutes


@dataclass(frozen=True)
class SessionDeps:
    imap: ImapDeps
    authenticator: Authenticator
    accounts: Accounts


class Session:
    def __init__(self, deps: SessionDeps, config: SessionConfig, conn: Connection) -> None:
        self.deps = deps
        self.config = config
        self.conn = conn
        self.account: AccountBackend | None = None
        self.view: MailboxView | None = None
        self.condstore = False
        self.qresync = False  # RFC 7162 §3.2.3, after ENABLE QRESYNC
        self._out: list[bytes] = []
        self._out_size = 0
        self._own_updates: set[tuple[int, int]] = set()  # (uid, modseq) this session already told
        # Wake-ups for the selected mailbox (MailboxEvents), and when the store was last asked.
        self._watch = contextlib.ExitStack()
        self._changed: asyncio.Event | None = None
        self._checked = 0.0
        self._handler_table = self._handlers()  # built once: every command looks it up

    # Output -----------------------------------------------------------------------------------

    async def _emit(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _FLUSH:
            await self._flush()

    async def _flush(self) -> None:
        if self._out:
            chunks, self._out, self._out_size = self._out, [], 0
            await self.conn.send(*chunks)

    async def _tagged(self, tag: str, status: str, text: str, code: str = "") -> None:
        code_part = f"[{code}] " if code else ""
        await self._emit(f"{tag} {status} {code_part}{text}\r\n".encode())
        await self._flush()

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        if self.account is None:
            if not self.conn.tls:
                caps += ["STARTTLS", "LOGINDISABLED"]
            else:
                caps += ["AUTH=PLAIN"]
        else:
            caps += [
                "UNSELECT", "UIDPLUS", "MOVE", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED",
                "LIST-STATUS", "CHILDREN", "CONDSTORE", "QRESYNC", "ESEARCH",
            ]  # fmt: skip
        return caps

    # The loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._deselect()
            if self.account is not None:
                with contextlib.suppress(Exception):
                    await self.account.close()

    async def _run(self) -> None:
        try:
            await self._emit(
                f"* OK [CAPABILITY {' '.join(self.capabilities())}] OpenMSS IMAP ready\r\n".encode()
            )
            await self._flush()
            while True:
                try:
                    event = await self.conn.next_event()
                except TimeoutError:
                    await self._emit(b"* BYE Autologout; idle for too long\r\n")
                    await self._flush()
                    return
                if isinstance(event, ContinuationNeeded):
                    await self.conn.send(b"+ Ready for literal data\r\n")
                    continue
                if isinstance(event, FramingError):
                    await self._framing_error(event)
                    if event.fatal:
                        return
                    continue
                try:
                    command = p.parse_command(event)
                except p.ParseError as exc:
                    await self._parse_error(exc)
                    continue
                try:
                    await self._dispatch(command)
                except _Bye:
                    await self._flush()
                    return
                except (ConnectionClosed, asyncio.CancelledError):
                    raise
                except Exception:
                    log.exception(
                        "IMAP command failed", extra={"command": command.name, "user": self._user()}
                    )
                    self._out, self._out_size = [], 0
                    await self._tagged(
                        command.tag, "NO", "Internal error, the command was not completed", "SERVERBUG"
                    )
        except ConnectionClosed:
            return

    def _deselect(self) -> None:
        self.view = None
        self._changed = None
        self._watch.close()

    def _user(self) -> str:
        return self.account.address if self.account else ""

    async def _framing_error(self, error: FramingError) -> None:
        code = f"[{error.code}] " if error.code else ""
        status = "NO" if error.code == "TOOBIG" else "BAD"
        if error.fatal:
            await self.conn.send(f"* BYE {error.reason}\r\n".encode())
        elif error.tag:
            await self.conn.send(f"{error.tag} {status} {code}{error.reason}\r\n".encode())
        else:
            await self.conn.send(f"* BAD {code}{error.reason}\r\n".encode())

    async def _parse_error(self, exc: p.ParseError) -> None:
        code = f"[{exc.code}] " if exc.code else ""
        await self.conn.send(f"{exc.tag or '*'} {exc.status} {code}{exc.reason}\r\n".encode())

    # Dispatch ---------------------------------------------------------------------------------

    async def _dispatch(self, command: p.Command) -> None:
        handler = self._handler_table.get(type(command))
        if handler is None:
            await self._tagged(command.tag, "BAD", f"{command.name} is not supported")
            return
        state, run = handler
        if state == "auth" and self.account is None:
            await self._tagged(command.tag, "BAD", f"{command.name}: log in first")
            return
        if state == "selected" and self.view is None:
            await self._tagged(command.tag, "BAD", f"{command.name}: select a mailbox first")
            return
        if state == "noauth" and self.account is not None:
            await self._tagged(command.tag, "BAD", f"{command.name}: already logged in")
            return
        await run(command)

    def _handlers(self) -> dict[type, tuple[str, Callable[[Any], Awaitable[None]]]]:
        return {
            p.Capability: ("any", self._capability),
            p.Noop: ("any", self._noop),
            p.Logout: ("any", self._logout),
            p.Id: ("any", self._id),
            p.StartTls: ("noauth", self._starttls),
            p.Login: ("noauth", self._login),
            p.Authenticate: ("noauth", self._authenticate),
            p.Enable: ("auth", self._enable),
            p.Namespace: ("auth", self._namespace),
            p.Select: ("auth", self._select),
            p.Examine: ("auth", self._select),
            p.Create: ("auth", self._create),
            p.Delete: ("auth", self._delete),
            p.Rename: ("auth", self._rename),
            p.Subscribe: ("auth", self._subscribe),
            p.Unsubscribe: ("auth", self._subscribe),
            p.List: ("auth", self._list),
            p.Lsub: ("auth", self._lsub),
            p.Status: ("auth", self._status),
            p.Append: ("auth", self._append),
            p.Idle: ("auth", self._idle),
            p.Check: ("selected", self._noop),
            p.Close: ("selected", self._close),
            p.Unselect: ("selected", self._close),
            p.Expunge: ("selected", self._expunge),
            p.Search: ("selected", self._search),
            p.Fetch: ("selected", self._fetch),
            p.Store: ("selected", self._store),
            p.Copy: ("selected", self._copy),
            p.Move: ("selected", self._copy),
        }

    # Keeping the view in step -----------------------------------------------------------------

    async def _sync(self, *, allow_expunge: bool) -> None:
        """Tell the client what other sessions changed in the selected mailbox."""
        view, account = self.view, self.account
        if view is None or account is None:
            return
        # Nothing was announced for this mailbox (by this process, or by another instance through
        # PostgreSQL's NOTIFY): no need to ask the database, but ask at least every few seconds.
        now = time.monotonic()
        quiet = self._changed is not None and not self._changed.is_set() and now - self._checked < _RECHECK
        if quiet and not (allow_expunge and view.has_pending_expunges):
            return
        if self._changed is not None:
            self._changed.clear()
        self._checked = now
        try:
            changes = await account.changes(view.mailbox_id, view.modseq, view.uidnext)
        except MailboxError:
            await self._emit(b"* BYE The selected mailbox was deleted\r\n")
            raise _Bye() from None
        told = view.apply(changes, allow_expunge=allow_expunge)
        await self._tell_expunged(list(zip(told.expunged, told.vanished, strict=True)))
        if told.exists is not None:
            await self._emit(b"* %d EXISTS\r\n" % told.exists)
        for seq, meta in told.updated:
            if (meta.uid, meta.modseq) in self._own_updates:
                continue
            await self._emit(flags_update(seq, meta, uid=True, modseq=self.condstore))
        self._own_updates.clear()

    async def _done(
        self, command: p.Command, text: str = "", code: str = "", *, allow_expunge: bool = True
    ) -> None:
        await self._sync(allow_expunge=allow_expunge)
        await self._tagged(command.tag, "OK", text or f"{command.name} completed", code)

    # Any state --------------------------------------------------------------------------------

    async def _capability(self, command: p.Capability) -> None:
        await self._emit(f"* CAPABILITY {' '.join(self.capabilities())}\r\n".encode())
        await self._done(command)

    async def _noop(self, command: p.Command) -> None:
        await self._done(command)

    async def _logout(self, command: p.Logout) -> None:
        await self._emit(b"* BYE OpenMSS IMAP closing the connection\r\n")
        await self._tagged(command.tag, "OK", "LOGOUT completed")
        raise _Bye()

    async def _id(self, command: p.Id) -> None:
        # RFC 2971: the client's identification is only for the logs.
        if command.params:
            log.info(
                "IMAP client", extra={"client": str(command.params.get("name"))[:60], "user": self._user()}
            )
        await self._emit(b'* ID ("name" "OpenMSS" "vendor" "OpenMSS")\r\n')
        await self._done(command)

    # Not authenticated ------------------------------------------------------------------------

    async def _starttls(self, command: p.StartTls) -> None:
        if self.conn.tls:
            await self._tagged(command.tag, "BAD", "TLS is already active")
            return
        await self._tagged(command.tag, "OK", "Begin TLS negotiation now")
        try:
            await self.conn.start_tls(self.config.tls)
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            raise ConnectionClosed() from exc

    async def _login(self, command: p.Login) -> None:
        await self._authenticate_with(command.tag, command.user, command.password)

    async def _authenticate(self, command: p.Authenticate) -> None:
        if command.mechanism.upper() != "PLAIN":
            await self._tagged(command.tag, "NO", f"unsupported mechanism {command.mechanism[:20]}")
            return
        if not self.conn.tls:
            await self._tagged(
                command.tag, "NO", "Authentication requires TLS: STARTTLS first", "PRIVACYREQUIRED"
            )
            return
        response = command.initial_response
        if response is None:
            await self.conn.send(b"+ \r\n")
            self.conn.framer.raw_lines = True
            try:
                event = await self.conn.next_event()
            finally:
                self.conn.framer.raw_lines = False
            line = event.text.strip() if isinstance(event, CommandLine) else b"*"
            if line == b"*":
                await self._tagged(command.tag, "BAD", "Authentication cancelled")
                return
            try:
                response = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError):
                await self._tagged(command.tag, "BAD", "Invalid base64")
                return
        parts = response.split(b"\0")
        if len(parts) != 3:
            await self._tagged(command.tag, "BAD", "Invalid PLAIN response (RFC 4616)")
            return
        authzid, user, password = (x.decode("utf-8", "replace") for x in parts)
        if authzid and authzid.lower() != user.lower():
            await self._tagged(
                command.tag, "NO", "Acting as another user is not allowed", "AUTHORIZATIONFAILED"
            )
            return
        await self._authenticate_with(command.tag, user, password)

    async def _authenticate_with(self, tag: str, user: str, password: str) -> None:
        if not self.conn.tls:
            # RFC 3501 §6.2.3 / LOGINDISABLED: never a password in clear.
            await self._tagged(tag, "NO", "Logging in requires TLS: STARTTLS first", "PRIVACYREQUIRED")
            return
        result = await self.deps.authenticator.authenticate(
            user, password, client_ip=self.conn.peer, service="imap"
        )
        if result.outcome is AuthOutcome.THROTTLED:
            await self._tagged(tag, "NO", "Too many failed logins, try again later", "UNAVAILABLE")
            return
        if result.outcome is not AuthOutcome.OK or result.account_id is None or result.address is None:
            await self._tagged(tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED")
            return
        try:
            chain = await self.deps.accounts.unlock(result.account_id, password, result.app_password_id)
        except Locked:
            await self._tagged(
                tag, "NO", "This credential does not unlock the mailbox keys", "AUTHENTICATIONFAILED"
            )
            return
        reader = MessageReader(self.deps.imap.store, chain)
        self.account = AccountBackend(
            self.deps.imap, result.account_id, result.address, reader, self.conn.peer
        )
        await self._tagged(tag, "OK", "Logged in", "CAPABILITY " + " ".join(self.capabilities()))

    # Authenticated ----------------------------------------------------------------------------

    def _backend(self) -> AccountBackend:
        assert self.account is not None
        return self.account

    async def _enable(self, command: p.Enable) -> None:
        enabled = [cap for cap in command.capabilities if cap in ("CONDSTORE", "QRESYNC")]
        if enabled:
            self.condstore = True  # RFC 7162 §3.2.3: enabling QRESYNC enables CONDSTORE too
        if "QRESYNC" in enabled:
            self.qresync = True
        await self._emit(("* ENABLED " + " ".join(enabled)).rstrip().encode() + b"\r\n")
        await self._done(command)

    async def _namespace(self, command: p.Namespace) -> None:
        await self._emit(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
        await self._done(command)

    async def _select(self, command: p.Select | p.Examine) -> None:
        account = self._backend()
        if command.qresync is not None and not self.qresync:
            # RFC 7162 §3.2.5: the parameter is only valid once QRESYNC is enabled.
            await self._tagged(command.tag, "BAD", "Send ENABLE QRESYNC before using QRESYNC")
            return
        if self.view is not None:
            # RFC 7162 §3.2.11: the end of the previous mailbox's responses.
            await self._emit(b"* OK [CLOSED] Previous mailbox closed\r\n")
        self._deselect()  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
        opened = await account.open(command.mailbox)
        if opened is None:
            await self._tagged(command.tag, "NO", "No such mailbox", "NONEXISTENT")
            return
        info, rows = opened
        readonly = isinstance(command, p.Examine)
        view = MailboxView(info, rows, readonly=readonly)
        _, first_unseen = view.unseen()
        if command.condstore:
            self.condstore = True
        flags = wire.flag_list(SYSTEM_FLAGS)
        await self._emit(b"* FLAGS " + flags + b"\r\n")
        permanent = b"()" if readonly else wire.flag_list((*SYSTEM_FLAGS, "\\*"))
        await self._emit(b"* OK [PERMANENTFLAGS " + permanent + b"] Flags permitted\r\n")
        await self._emit(b"* %d EXISTS\r\n* 0 RECENT\r\n" % view.exists)
        if first_unseen is not None:
            await self._emit(b"* OK [UNSEEN %d] First unseen\r\n" % first_unseen)
        await self._emit(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % info.uidvalidity)
        await self._emit(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % view.uidnext)
        await self._emit(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % info.modseq)
        if command.qresync is not None and command.qresync.uidvalidity == info.uidvalidity:
            await self._resync(view, command.qresync)
        self.view = view
        self._watch = contextlib.ExitStack()
        self._changed = self._watch.enter_context(self.deps.imap.events.subscribe(info.id))
        self._checked = time.monotonic()
        await self._tagged(
            command.tag, "OK", f"{command.name} completed", "READ-ONLY" if readonly else "READ-WRITE"
        )

    async def _resync(self, view: MailboxView, since: p.QResync) -> None:
        """RFC 7162 §3.2.5.1: what changed since the client's mod-sequence, right after SELECT's
        usual answers: the UIDs expunged meanwhile (``VANISHED (EARLIER)``, among the known
        UIDs when given), then the flags of every message changed meanwhile. Expunged UIDs are
        kept with their mod-sequence (``ExpungedMessage``), so the answer is exact."""
        largest = view.uidnext - 1
        known = since.known_uids
        gone = [
            uid
            for uid in await self._backend().vanished(view.mailbox_id, since.modseq)
            if known is None or known.contains(uid, largest)
        ]
        if gone:
            await self._emit(f"* VANISHED (EARLIER) {SequenceSet.from_numbers(gone)}\r\n".encode())
        rendered: dict[str, bytes] = {}
        for index, modseq in enumerate(view.modseqs):
            uid = view.uids[index]
            if modseq <= since.modseq or (known is not None and not known.contains(uid, largest)):
                continue
            flags = view.flags[index]
            flag_list = rendered.get(flags)
            if flag_list is None:
                flag_list = rendered[flags] = wire.flag_list(flags.split())
            await self._emit(
                b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (index + 1, uid, flag_list, modseq)
            )

    async def _create(self, command: p.Create) -> None:
        account = self._backend()
        uses = [u for u in command.special_use]
        unknown = [u for u in uses if u not in _SPECIAL_USES]
        if unknown or len(uses) > 1:
            await self._tagged(command.tag, "NO", "Unsupported special-use attribute", "USEATTR")
            return
        name = command.mailbox.rstrip(SEPARATOR)
        try:
            # RFC 3501 §6.3.3: create the superior names that are needed.
            existing = {b.name for b in await account.mailboxes()}
            parts = name.split(SEPARATOR)
            for depth in range(1, len(parts)):
                parent = SEPARATOR.join(parts[:depth])
                if parent not in existing and parent.upper() != "INBOX":
                    await account.create(parent)
            await account.create(name, uses[0] if uses else None)
        except MailboxError as exc:
            await self._tagged(command.tag, "NO", str(exc), exc.code)
            return
        await self._done(command)

    async def _delete(self, command: p.Delete) -> None:
        account = self._backend()
        if self.view is not None and self.view.info.name == command.mailbox:
            await self._tagged(command.tag, "NO", "Unselect the mailbox before deleting it", "INUSE")
            return
        try:
            await account.delete(command.mailbox)
        except MailboxError as exc:
            await self._tagged(command.tag, "NO", str(exc), exc.code)
            return
        await self._done(command)

    async def _rename(self, command: p.Rename) -> None:
        try:
            await self._backend().rename(command.old, command.new)
        except MailboxError as exc:
            await self._tagged(command.tag, "NO", str(exc), exc.code)
            return
        await self._done(command)

    async def _subscribe(self, command: p.Subscribe | p.Unsubscribe) -> None:
        try:
            await self._backend().subscribe(command.mailbox, isinstance(command, p.Subscribe))
        except MailboxError as exc:
            await self._tagged(command.tag, "NO", str(exc), exc.code)
            return
        await self._done(command)

    async def _list(self, command: p.List) -> None:
        account = self._backend()
        boxes = await account.mailboxes()
        if command.patterns == ("",) and not command.extended:
            # RFC 3501 §6.3.8: the hierarchy delimiter and root.
            await self._emit(b'* LIST (\\Noselect) "/" ""\r\n')
            await self._done(command)
            return
        names = {b.name for b in boxes}
        subscribed_only = "SUBSCRIBED" in command.selection
        special_only = "SPECIAL-USE" in command.selection
        for box in boxes:
            if not any(_matches(command.reference + pattern, box.name) for pattern in command.patterns):
                continue
            if subscribed_only and not box.subscribed:
                continue
            if special_only and not box.special_use:
                continue
            attrs = ["\\HasChildren" if _has_children(box.name, names) else "\\HasNoChildren"]
            if box.special_use and (not command.extended or "SPECIAL-USE" in command.returns or special_only
                                    or not command.returns):  # fmt: skip
                attrs.append(box.special_use)
            if box.subscribed and (subscribed_only or "SUBSCRIBED" in command.returns):
                attrs.append("\\Subscribed")
            await self._emit(
                b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + wire.mailbox(box.name) + b"\r\n"
            )
            if command.status_items:
                await self._emit(await self._status_line(box, command.status_items))
        await self._done(command)

    async def _lsub(self, command: p.Lsub) -> None:
        for box in await self._backend().mailboxes():
            if box.subscribed and _matches(command.reference + command.pattern, box.name):
                await self._emit(b'* LSUB () "/" ' + wire.mailbox(box.name) + b"\r\n")
        await self._done(command)

    async def _status_line(self, box: MailboxInfo, items: Sequence[str]) -> bytes:
        total, unseen = await self._backend().status(box)
        values = {
            "MESSAGES": total,
            "RECENT": 0,
            "UIDNEXT": box.uidnext,
            "UIDVALIDITY": box.uidvalidity,
            "UNSEEN": unseen,
            "HIGHESTMODSEQ": box.modseq,
        }
        parts = [f"{item} {values[item]}" for item in items if item in values]
        return b"* STATUS " + wire.mailbox(box.name) + b" (" + " ".join(parts).encode() + b")\r\n"

    async def _status(self, command: p.Status) -> None:
        box = await self._backend().mailbox(command.mailbox)
        if box is None:
            await self._tagged(command.tag, "NO", "No such mailbox", "NONEXISTENT")
            return
        await self._emit(await self._status_line(box, command.items))
        await self._done(command)

    async def _append(self, command: p.Append) -> None:
        account = self._backend()
        box = await account.mailbox(command.mailbox)
        if box is None:
            await self._tagged(command.tag, "NO", "No such mailbox", "TRYCREATE")
            return
        if not command.message:
            await self._tagged(command.tag, "NO", "An empty message cannot be appended")
            return
        if len(command.message) > self.deps.imap.max_message_size:
            await self._tagged(command.tag, "NO", "Message too large", "TOOBIG")
            return
        flags = [f for f in command.flags if f != "\\Recent"]
        when = command.internal_date or datetime.now(UTC)
        uidvalidity, uid = await account.append(box, command.message, flags, when)
        await self._done(command, "APPEND completed", f"APPENDUID {uidvalidity} {uid}")

    async def _idle(self, command: p.Idle) -> None:
        """RFC 2177: untagged updates as they happen, until the client sends DONE."""
        events = self.deps.imap.events
        with contextlib.ExitStack() as stack:
            # Subscribed before the first look, so that nothing delivered in between is missed.
            changed = (
                stack.enter_context(events.subscribe(self.view.mailbox_id)) if self.view else asyncio.Event()
            )
            await self._sync(allow_expunge=True)
            await self._emit(b"+ idling\r\n")
            await self._flush()
            self.conn.framer.raw_lines = True
            reading = asyncio.ensure_future(self.conn.next_event(timeout=self.config.idle_command_timeout))
            try:
                while True:
                    waiting = asyncio.ensure_future(changed.wait())
                    done, _ = await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
                    if waiting in done:
                        changed.clear()
                        await self._sync(allow_expunge=True)
                        await self._flush()
                    else:
                        waiting.cancel()
                    if reading in done:
                        break
            finally:
                self.conn.framer.raw_lines = False
                if not reading.done():
                    reading.cancel()
        try:
            event = reading.result()
        except TimeoutError:
            await self._emit(b"* BYE IDLE for too long\r\n")
            raise _Bye() from None
        line = event.text.strip().upper() if isinstance(event, CommandLine) else b""
        if line != b"DONE":
            await self._tagged(command.tag, "BAD", "Expected DONE")
            return
        await self._done(command, "IDLE terminated")

    # Selected ---------------------------------------------------------------------------------

    def _view(self) -> MailboxView:
        assert self.view is not None
        return self.view

    async def _close(self, command: p.Close | p.Unselect) -> None:
        view = self._view()
        if isinstance(command, p.Close) and not view.readonly:
            await self._backend().expunge(view.mailbox_id, None)  # silently (RFC 3501 §6.4.2)
        self._deselect()
        await self._tagged(command.tag, "OK", f"{command.name} completed")

    async def _expunge(self, command: p.Expunge) -> None:
        view = self._view()
        if view.readonly:
            await self._tagged(command.tag, "NO", "The mailbox is read-only", "READ-ONLY")
            return
        uids = view.resolve(command.uid_set, uid=True) if command.uid_set is not None else None
        gone = await self._backend().expunge(view.mailbox_id, uids)
        await self._tell_expunged(view.forget(gone))
        await self._done(command)

    async def _tell_expunged(self, told: list[tuple[int, int]]) -> None:
        """(sequence number, UID) of messages gone, highest first: ``* n EXPUNGE`` each, or,
        once QRESYNC is enabled, one ``* VANISHED uid-set`` (RFC 7162 §3.2.10)."""
        if not told:
            return
        if self.qresync:
            uids = SequenceSet.from_numbers(uid for _, uid in told)
            await self._emit(f"* VANISHED {uids}\r\n".encode())
            return
        for seq, _ in told:
            await self._emit(b"* %d EXPUNGE\r\n" % seq)

    def _uids(self, sequence: SequenceSet, *, uid: bool) -> list[int] | None:
        view = self._view()
        if not uid and view.sequence_out_of_range(sequence):
            return None
        return view.resolve(sequence, uid=uid)

    async def _fetch(self, command: p.Fetch) -> None:
        view, account = self._view(), self._backend()
        uids = self._uids(command.sequence_set, uid=command.uid)
        if uids is None:
            await self._tagged(command.tag, "BAD", "Invalid sequence number")
            return
        if command.vanished:
            # RFC 7162 §3.2.6: the UIDs of the set expunged since CHANGEDSINCE, before the FETCHes.
            assert command.changedsince is not None  # the parser insists
            largest = view.uidnext - 1
            gone = [
                u
                for u in await account.vanished(view.mailbox_id, command.changedsince)
                if command.sequence_set.contains(u, largest)
            ]
            if gone:
                await self._emit(f"* VANISHED (EARLIER) {SequenceSet.from_numbers(gone)}\r\n".encode())
        items = command.effective_items
        seen_changed: set[int] = set()
        if sets_seen(items) and not view.readonly and uids:
            changed, _ = await account.store_flags(view.mailbox_id, uids, "+", ["\\Seen"], None)
            seen_changed = {m.uid for m in changed}
            self._own_updates.update((m.uid, m.modseq) for m in changed)
            for meta in changed:
                view.set_flags(meta.uid, meta.flags, meta.modseq)
        names = [item.name for item in items]
        if set(names) <= _LIGHT_FETCH:
            # UID, FLAGS, MODSEQ only (a client's flag resync): answered from the view, brought
            # up to date first (never with an EXPUNGE: RFC 3501 §7.4.1).
            await self._sync(allow_expunge=False)
            await self._fetch_light(command, names)
            await self._done(command, allow_expunge=command.uid)
            return
        content = needs_content(items)
        read: list[int] = []
        vanished_meanwhile = False  # a message expunged by another session as this FETCH read it
        async for batch, bodies in account.fetch_batches(view.mailbox_id, uids, content=content):
            for meta in batch:
                if command.changedsince is not None and meta.modseq <= command.changedsince:
                    continue
                seq = view.seq_of(meta.uid)
                if seq is None:
                    continue
                wanted = items
                if meta.uid in seen_changed and "FLAGS" not in names:
                    wanted = (*items, p.FetchAttribute("FLAGS"))
                data = bodies.get(meta.uid)
                if data is not None:
                    read.append(meta.uid)
                elif content:
                    vanished_meanwhile = True
                    continue
                await self._emit(render_fetch(seq, meta, wanted, data))
        await account.record_read(view.info.name, read)
        if vanished_meanwhile:
            # RFC 2180 §4.1.2: the others' data, and NO for the whole command; RFC 5530's code
            # tells the client why (its NOOP will bring the EXPUNGE).
            await self._sync(allow_expunge=command.uid)
            await self._tagged(
                command.tag, "NO", "Some of the messages were expunged meanwhile", "EXPUNGEISSUED"
            )
            return
        await self._done(command, allow_expunge=command.uid)

    async def _fetch_light(self, command: p.Fetch, names: Sequence[str]) -> None:
        view = self._view()
        positions = view.positions(command.sequence_set, uid=command.uid)
        uids, flags, modseqs = view.uids, view.flags, view.modseqs
        since = command.changedsince
        # One line template for the command (the names in the client's order), then one
        # %-format per message: UID n, FLAGS (...), MODSEQ (n).
        template = b"* %d FETCH (" + b" ".join(_LIGHT_ITEM[name] for name in names) + b")\r\n"
        order = [("UID", "FLAGS", "MODSEQ").index(name) for name in names]
        # (UID, flags, mod-sequence) -> the values in the names' order; itemgetter of one index
        # gives the value itself, so that case is a tuple of one.
        pick: Callable[[tuple[int, bytes, int]], tuple[int | bytes, ...]] = (
            operator.itemgetter(*order) if len(order) > 1 else lambda row: (row[order[0]],)
        )
        rendered: dict[str, bytes] = {}
        lines: list[bytes] = []
        for index in positions:
            modseq = modseqs[index]
            if since is not None and modseq <= since:
                continue
            flag_list = rendered.get(flags[index])
            if flag_list is None:
                flag_list = rendered[flags[index]] = wire.flag_list(flags[index].split())
            lines.append(template % (index + 1, *pick((uids[index], flag_list, modseq))))
            if len(lines) >= 512:
                await self._emit(b"".join(lines))
                lines = []
        if lines:
            await self._emit(b"".join(lines))

    async def _store(self, command: p.Store) -> None:
        view, account = self._view(), self._backend()
        if view.readonly:
            await self._tagged(command.tag, "NO", "The mailbox is read-only", "READ-ONLY")
            return
        uids = self._uids(command.sequence_set, uid=command.uid)
        if uids is None:
            await self._tagged(command.tag, "BAD", "Invalid sequence number")
            return
        flags = [f for f in command.flags if f != "\\Recent"]
        changed, refused = await account.store_flags(
            view.mailbox_id, uids, command.mode, flags, command.unchangedsince
        )
        self._own_updates.update((m.uid, m.modseq) for m in changed)
        for meta in changed:
            view.set_flags(meta.uid, meta.flags, meta.modseq)
        if not command.silent:
            for meta in changed:
                seq = view.seq_of(meta.uid)
                if seq is not None:
                    await self._emit(flags_update(seq, meta, uid=command.uid, modseq=self.condstore))
        code = ""
        if refused:
            numbers = (
                refused if command.uid else [s for s in (view.seq_of(u) for u in refused) if s is not None]
            )
            code = f"MODIFIED {SequenceSet.from_numbers(numbers)}"
        await self._done(command, code=code, allow_expunge=command.uid)

    async def _copy(self, command: p.Copy | p.Move) -> None:
        view, account = self._view(), self._backend()
        moving = isinstance(command, p.Move)
        if moving and view.readonly:
            await self._tagged(command.tag, "NO", "The mailbox is read-only", "READ-ONLY")
            return
        uids = self._uids(command.sequence_set, uid=command.uid)
        if uids is None:
            await self._tagged(command.tag, "BAD", "Invalid sequence number")
            return
        target = await account.mailbox(command.mailbox)
        if target is None:
            await self._tagged(command.tag, "NO", "No such mailbox", "TRYCREATE")
            return
        pairs = await (account.move if moving else account.copy)(view.mailbox_id, uids, target)
        code = ""
        if pairs:
            source = SequenceSet.from_numbers(src for src, _ in pairs)
            dest = SequenceSet.from_numbers(dst for _, dst in pairs)
            code = f"COPYUID {target.uidvalidity} {source} {dest}"
        if moving:
            # RFC 6851 §4.3: COPYUID comes in an untagged OK, before the EXPUNGEs.
            if code:
                await self._emit(f"* OK [{code}] Moved\r\n".encode())
            await self._tell_expunged(view.forget([src for src, _ in pairs]))
            await self._done(command)
        else:
            await self._done(command, code=code)

    def _search_view(
        self, compiled: CompiledSearch, context: SearchContext, *, uid: bool
    ) -> tuple[list[int], int]:
        """A flag-only search over the view: (UIDs or sequence numbers, highest mod-sequence of
        the matches). When the key looks at nothing but flags, it is evaluated once per distinct
        set of flags, not once per message."""
        view = self._view()
        uids, flags, modseqs = view.uids, view.flags, view.modseqs
        pending = view.has_pending_expunges
        if not any(isinstance(n, _PER_MESSAGE_KEYS) for n in _nodes(compiled.key)):
            # The verdict depends on the flags alone: one evaluation per distinct set of flags,
            # then one pass in a comprehension.
            verdicts: dict[str, bool] = {}
            for index, flag_text in enumerate(flags):
                if flag_text not in verdicts:
                    flag_set = set(flag_text.split())
                    target = SearchMessage(
                        index + 1, uids[index], flag_set, _EPOCH, 0, modseqs[index], _loader(None)
                    )
                    verdicts[flag_text] = compiled.matches(target, context)
            matching = {text for text, verdict in verdicts.items() if verdict}
            positions = [i for i, text in enumerate(flags) if text in matching]
        else:
            positions = []
            for index, uid_ in enumerate(uids):
                target = SearchMessage(
                    index + 1, uid_, set(flags[index].split()), _EPOCH, 0, modseqs[index], _loader(None)
                )
                if compiled.matches(target, context):
                    positions.append(index)
        if pending:  # gone from the store, not yet told: left out (RFC 2180 §4.1.3)
            positions = [i for i in positions if not view.is_expunged(uids[i])]
        highest = max((modseqs[i] for i in positions), default=0) if _uses_modseq(compiled.key) else 0
        found = [uids[i] for i in positions] if uid else [i + 1 for i in positions]
        return found, highest

    async def _search_headers(
        self, compiled: CompiledSearch, context: SearchContext, *, uid: bool
    ) -> tuple[list[int], int, list[int]]:
        """A search on header fields (and flags, numbers): (UIDs or sequence numbers, highest
        mod-sequence of the matches, UIDs whose header was read). Headers come from the
        account's cache (``headercache``), else from the sealed header index, which fills it."""
        view, account = self._view(), self._backend()
        box, validity = view.mailbox_id, view.info.uidvalidity
        cached = account.headers.entries(box, validity)
        uncached: dict[int, CachedHeader] = {}  # read now, but the cache's budget is spent
        missing = [u for u in view.uids if u not in cached]
        if missing:
            async for _, headers in account.header_batches(box, missing, with_meta=False):
                for uid_, header in headers.items():
                    opened = CachedHeader(header, plain_lowered(header))
                    if not account.headers.put(box, validity, uid_, opened):
                        uncached[uid_] = opened
            cached = account.headers.entries(box, validity)
        if len(cached) > view.exists + 256:
            account.headers.keep_only(box, validity, view.uids)
        words = compiled.required_words()
        haystack = account.headers.haystack(box, validity) if words else None
        # Which messages to evaluate: with a required word, those whose header may hold it
        # (found in C in the joined headers), plus any not in the cache; else every one.
        candidates = None if haystack is None else haystack.candidates(words)
        uids = view.uids
        read = [u for u in uids if (u in cached or u in uncached) and not view.is_expunged(u)]
        if candidates is None:
            positions: Iterable[int] = range(len(uids))
        else:
            positions = sorted(i for u in candidates.union(uncached) if (i := view.index_of(u)) is not None)
        found: list[int] = []
        highest = 0
        flag_sets: dict[str, set[str]] = {}
        for index in positions:
            uid_ = uids[index]
            entry = cached.get(uid_) or uncached.get(uid_)
            if entry is None or view.is_expunged(uid_):
                continue  # expunged meanwhile
            if words and (lowered := entry.lowered) is not None:
                if any(word not in lowered for word in words):
                    continue  # a word the key requires is missing: no need to parse
            flag_text = view.flags[index]
            flags = flag_sets.get(flag_text)
            if flags is None:
                flags = flag_sets[flag_text] = set(flag_text.split())
            modseq = view.modseqs[index]
            target = SearchMessage(
                index + 1, uid_, flags, _EPOCH, 0, modseq, _loader(entry.header), entry.fields
            )
            if compiled.matches(target, context):
                found.append(uid_ if uid else index + 1)
                highest = max(highest, modseq)
        return found, highest, read

    async def _search(self, command: p.Search) -> None:
        view, account = self._view(), self._backend()
        compiled = CompiledSearch(command.key)
        exists, largest = view.exists, view.largest_uid()

        def in_seq(sequence: object, number: int) -> bool:
            assert isinstance(sequence, SequenceSet)
            return sequence.contains(number, exists)

        def in_uid(sequence: object, number: int) -> bool:
            assert isinstance(sequence, SequenceSet)
            return sequence.contains(number, largest) or (sequence.uses_star() and number == largest)

        context = SearchContext(in_seq, in_uid, datetime.now(UTC))
        found: list[int] = []
        highest = 0
        read: list[int] = []
        if _flags_only(command.key):
            # Flags, numbers and mod-sequences only: answered from the view, brought up to date
            # first (never with an EXPUNGE: RFC 3501 §7.4.1).
            await self._sync(allow_expunge=False)
            found, highest = self._search_view(compiled, context, uid=command.uid)
        elif compiled.needs_message and not compiled.needs_body and not _uses_metadata(command.key):
            # Header fields, flags and numbers: the sealed header index and the view answer.
            await self._sync(allow_expunge=False)
            found, highest, read = await self._search_headers(compiled, context, uid=command.uid)
        else:
            uids = list(view.uids)
            if compiled.needs_message and not compiled.needs_body:
                # Header fields only: the sealed header index answers (see headerindex).
                batches = account.header_batches(view.mailbox_id, uids, with_meta=True)
            else:
                batches = account.fetch_batches(view.mailbox_id, uids, content=compiled.needs_message)
            async for batch, bodies in batches:
                for meta in batch:
                    seq = view.seq_of(meta.uid)
                    if seq is None:
                        continue
                    data = bodies.get(meta.uid)
                    if data is not None:
                        read.append(meta.uid)
                    target = SearchMessage(
                        seq,
                        meta.uid,
                        set(meta.flags),
                        meta.internal_date,
                        meta.size,
                        meta.modseq,
                        _loader(data),
                    )
                    if compiled.matches(target, context):
                        found.append(meta.uid if command.uid else seq)
                        highest = max(highest, meta.modseq)
        await account.record_read(view.info.name, read)
        if command.returns is not None:
            await self._emit(_esearch(command, found))
        else:
            line = b"* SEARCH" + (b" " + " ".join(map(str, found)).encode() if found else b"")
            if found and _uses_modseq(command.key):
                line += b" (MODSEQ %d)" % highest
            await self._emit(line + b"\r\n")
        await self._done(command, allow_expunge=command.uid)


_LIGHT_FETCH = frozenset({"UID", "FLAGS", "MODSEQ"})
_LIGHT_ITEM = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)"}
# Keys on the internal date or the size: the view does not hold those.
_METADATA_KEYS = (sk.Before, sk.On, sk.Since, sk.Older, sk.Younger, sk.Larger, sk.Smaller)
_PER_MESSAGE_KEYS = (sk.SequenceKey, sk.UidKey, sk.ModSeq)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLAG_KEYS = (
    sk.All,
    sk.And,
    sk.Or,
    sk.Not,
    sk.SequenceKey,
    sk.UidKey,
    sk.Flag,
    sk.Keyword,
    sk.New,
    sk.Old,
    sk.Recent,
    sk.ModSeq,
)


def _nodes(key: sk.SearchKey) -> Iterator[sk.SearchKey]:
    """Every node of a search key tree (iteratively: trees may be very deep)."""
    stack: list[sk.SearchKey] = [key]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, sk.And):
            stack.extend(node.keys)
        elif isinstance(node, sk.Or):
            stack.extend((node.left, node.right))
        elif isinstance(node, sk.Not):
            stack.append(node.key)


def _flags_only(key: sk.SearchKey) -> bool:
    """Whether a search looks at nothing but flags, numbers and mod-sequences."""
    return all(isinstance(node, _FLAG_KEYS) for node in _nodes(key))


def _loader(data: bytes | None) -> Callable[[], bytes]:
    def load() -> bytes:
        return data if data is not None else b""

    return load


def _uses_metadata(key: sk.SearchKey) -> bool:
    return any(isinstance(node, _METADATA_KEYS) for node in _nodes(key))


def _uses_modseq(key: sk.SearchKey) -> bool:
    return any(isinstance(node, sk.ModSeq) for node in _nodes(key))


def _esearch(command: p.Search, found: list[int]) -> bytes:
    """RFC 4731 ESEARCH response."""
    returns = command.returns or frozenset({"ALL"})
    parts = [f'* ESEARCH (TAG "{command.tag}")'.encode()]
    if command.uid:
        parts.append(b"UID")
    if found:
        if "MIN" in returns:
            parts.append(b"MIN %d" % min(found))
        if "MAX" in returns:
            parts.append(b"MAX %d" % max(found))
        if "ALL" in returns:
            parts.append(b"ALL " + str(SequenceSet.from_numbers(sorted(found))).encode())
    if "COUNT" in returns:
        parts.append(b"COUNT %d" % len(found))
    return b" ".join(parts) + b"\r\n"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append(f"[^{re.escape(SEPARATOR)}]*")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _matches(pattern: str, name: str) -> bool:
    """RFC 3501 §6.3.8 wildcards; INBOX matches case-insensitively."""
    if pattern.upper().startswith("INBOX") and name.startswith("INBOX"):
        pattern = "INBOX" + pattern[5:]
    return _pattern_regex(pattern).match(name) is not None


def _has_children(name: str, names: set[str]) -> bool:
    prefix = name + SEPARATOR
    return any(other.startswith(prefix) for other in names)
