"""The IMAP server driven by Python's imaplib (and raw sockets where imaplib cannot go)."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import socket
import ssl
import time

import pytest

from mailserver.message import pgpmime
from mailserver.store.mailboxes import MailboxStore
from openmss.audit import events_for

PASSWORD = "correct horse battery"


def _submit(inst, user: str, recipients: list[str], subject: str, body: str = "Corps du message.") -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        message = f"From: {user}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        client.sendmail(user, recipients, message.encode())


def _imaps(inst, user: str | None = None, password: str = PASSWORD) -> imaplib.IMAP4_SSL:  # type: ignore[no-untyped-def]
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", inst.settings.imaps_port, ssl_context=inst.client_tls(), timeout=10
    )
    if user:
        client.login(user, password)
    return client


async def test_starttls_port_refuses_plaintext_login(server):
    alice = await server.add_account("alice")

    def run() -> None:
        client = imaplib.IMAP4("127.0.0.1", server.settings.imap_port, timeout=10)
        caps = client.capabilities
        assert "STARTTLS" in caps and "LOGINDISABLED" in caps and "IMAP4REV1" in caps
        with pytest.raises(imaplib.IMAP4.error):
            client.login(alice, PASSWORD)
        client.starttls(ssl_context=server.client_tls())
        assert "LOGINDISABLED" not in client.capabilities and "STARTTLS" not in client.capabilities
        typ, _ = client.login(alice, PASSWORD)
        assert typ == "OK"
        client.logout()

    await asyncio.to_thread(run)


async def test_login_failures_and_app_passwords(server):
    alice = await server.add_account("alice")
    app = await server.runtime.accounts.create_app_password(alice, PASSWORD, "imap", actor="test")

    def run() -> None:
        client = _imaps(server)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(alice, "wrong")
        client.logout()
        client = _imaps(server, alice, app.password)
        assert client.select("INBOX")[0] == "OK"
        client.logout()
        # AUTHENTICATE PLAIN (with the initial response, RFC 4959).
        client = _imaps(server)
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0{alice}\0{PASSWORD}".encode())
        assert typ == "OK"
        client.logout()

    await asyncio.to_thread(run)


async def test_read_a_delivered_message(server):
    alice = await server.add_account("alice")
    bob = await server.add_account("bob")
    await asyncio.to_thread(_submit, server, alice, [bob], "Résultats", "Tout va bien.")
    [expected] = await server.wait_for_messages(bob, 1)
    [stored] = await server.stored(bob)
    assert pgpmime.is_encrypted(stored)

    def run() -> None:
        client = _imaps(server, bob)
        typ, data = client.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        assert client.untagged_responses.get("UNSEEN") == [b"1"]
        typ, data = client.fetch("1", "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        meta, body = data[0]
        assert body == expected  # decrypted, byte for byte
        assert f"RFC822.SIZE {len(expected)}".encode() in meta and b"FLAGS ()" in meta
        typ, data = client.fetch("1", "(BODYSTRUCTURE ENVELOPE)")
        assert typ == "OK"
        response = b"".join(part if isinstance(part, bytes) else b"".join(part) for part in data)
        assert b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit"' in response.replace(
            b"TEXT", b"text"
        ).replace(b"PLAIN", b"plain")
        assert b'(NIL NIL "bob" "a.test")' in response  # the To address in the ENVELOPE
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1].startswith("Subject: Résultats".encode())
        typ, data = client.fetch("1", "(FLAGS)")
        assert data == [b"1 (FLAGS ())"]
        client.fetch("1", "(BODY[TEXT])")  # not PEEK: sets \Seen (RFC 3501 §6.4.5)
        typ, data = client.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0]
        client.logout()

    await asyncio.to_thread(run)
    # Every read left a trace in the audit trail (written at the latest when the session ends).
    await asyncio.sleep(0.3)
    async with server.runtime.db.read() as session:
        events = await events_for(session, actor=bob)
    actions = [(e.action, e.target) for e in events]
    assert ("imap.mailbox.select", f"{bob}/INBOX") in actions
    assert ("imap.message.read", f"{bob}/INBOX") in actions
    assert all(e.peer == "127.0.0.1" for e in events if e.action.startswith("imap."))


async def test_flags_search_copy_move_expunge(server):
    alice = await server.add_account("alice")
    for n in range(5):
        await asyncio.to_thread(_submit, server, alice, [alice], f"Message {n}")
    await server.wait_for_messages(alice, 5)

    def run() -> None:
        client = _imaps(server, alice)
        client.select("INBOX")
        typ, data = client.store("1:2", "+FLAGS", "(\\Seen \\Flagged)")
        assert typ == "OK" and len(data) == 2
        assert client.search(None, "UNSEEN")[1] == [b"3 4 5"]
        assert client.search(None, "FLAGGED SUBJECT", '"Message 1"')[1] == [b"2"]
        assert client.uid("SEARCH", "SUBJECT", '"Message 4"')[1] == [b"5"]
        typ, data = client.copy("1", "Archive")  # imaplib returns the tagged text of COPY
        assert typ == "OK" and re.search(rb"\[COPYUID \d+ 1 1\]", data[0])
        typ, data = client.uid("MOVE", "2", "Trash")
        assert typ == "OK"
        assert client.select("INBOX")[1] == [b"4"]
        client.store("1", "+FLAGS", "\\Deleted")
        typ, data = client.expunge()
        assert typ == "OK" and data == [b"1"]
        typ, data = client.status("Trash", "(MESSAGES UNSEEN UIDNEXT)")
        assert typ == "OK" and b"MESSAGES 1" in data[0]
        client.logout()

    await asyncio.to_thread(run)


async def test_mailbox_management_and_special_use(server):
    alice = await server.add_account("alice")

    def run() -> None:
        client = _imaps(server, alice)
        typ, data = client.list()
        lines = b"\n".join(data)
        assert typ == "OK" and b'(\\HasNoChildren \\Sent) "/" Sent' in lines
        assert client.create("Patients/Dupont")[0] == "OK"
        assert client.create("Patients/Dupont")[0] == "NO"
        assert client.rename("Patients", "Dossiers")[0] == "OK"
        names = b"\n".join(client.list()[1])
        assert b"Dossiers/Dupont" in names and b"Patients" not in names
        assert client.delete("Dossiers/Dupont")[0] == "OK"
        assert client.delete("INBOX")[0] == "NO"
        assert client.create("Caf&AOk-")[0] == "OK"  # modified UTF-7 (RFC 3501 §5.1.3): "Café"
        assert b"Caf&AOk-" in b"\n".join(client.list()[1])
        client.logout()

    await asyncio.to_thread(run)
    store = server.runtime.store
    async with server.runtime.db.read() as session:
        account = await store.account_by_address(session, alice)
    async with server.runtime.db.reads() as reads:
        names = [b.name for b in await MailboxStore(store.blobs).list_mailboxes(reads, account.id)]
    assert "Café" in names and "Dossiers" in names


async def test_append_is_encrypted_and_readable(server):
    alice = await server.add_account("alice")
    message = b"From: alice@a.test\r\nSubject: Brouillon SECRET-APPEND\r\n\r\nNote SECRET-APPEND\r\n"

    def run() -> None:
        client = _imaps(server, alice)
        typ, data = client.append("Drafts", "(\\Draft)", imaplib.Time2Internaldate(time.time()), message)
        assert typ == "OK" and re.search(rb"\[APPENDUID \d+ 1\]", data[0])
        client.select("Drafts")
        assert client.fetch("1", "(BODY.PEEK[])")[1][0][1] == message
        client.logout()

    await asyncio.to_thread(run)
    [stored] = await server.stored(alice, "Drafts")
    assert b"SECRET-APPEND" not in stored and pgpmime.is_encrypted(stored)


async def test_expunge_in_one_session_shows_in_another(server):
    alice = await server.add_account("alice")
    for n in range(3):
        await asyncio.to_thread(_submit, server, alice, [alice], f"M{n}")
    await server.wait_for_messages(alice, 3)

    def run() -> None:
        one, two = _imaps(server, alice), _imaps(server, alice)
        one.select("INBOX")
        two.select("INBOX")
        one.store("2", "+FLAGS", "\\Deleted")
        one.expunge()
        typ, _ = two.noop()
        assert typ == "OK"
        assert two.untagged_responses.get("EXPUNGE") == [b"2"]
        assert two.fetch("2", "(UID)")[1] == [b"2 (UID 3)"]
        one.logout()
        two.logout()

    await asyncio.to_thread(run)


def _raw_tls(inst) -> ssl.SSLSocket:  # type: ignore[no-untyped-def]
    sock = socket.create_connection(("127.0.0.1", inst.settings.imaps_port), timeout=10)
    return inst.client_tls().wrap_socket(sock, server_hostname="127.0.0.1")


def _read_until(sock: ssl.SSLSocket, marker: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


async def test_idle_sees_new_mail_within_a_second(server):
    alice = await server.add_account("alice")
    sock = await asyncio.to_thread(_raw_tls, server)
    try:
        await asyncio.to_thread(_read_until, sock, b"\r\n")
        sock.sendall(f"a LOGIN {alice} {{{len(PASSWORD)}+}}\r\n{PASSWORD}\r\n".encode())
        assert b"a OK" in await asyncio.to_thread(_read_until, sock, b"a OK")
        sock.sendall(b"b SELECT INBOX\r\nc IDLE\r\n")
        assert b"+ idling" in await asyncio.to_thread(_read_until, sock, b"+ idling")
        started = time.monotonic()
        await asyncio.to_thread(_submit, server, alice, [alice], "Nouveau")
        got = await asyncio.to_thread(_read_until, sock, b"EXISTS", 5.0)
        assert b"* 1 EXISTS" in got and time.monotonic() - started < 2.0
        sock.sendall(b"DONE\r\n")
        assert b"c OK" in await asyncio.to_thread(_read_until, sock, b"c OK")
    finally:
        sock.close()


async def test_bad_input_gets_bad_and_the_session_goes_on(server):
    alice = await server.add_account("alice")
    sock = await asyncio.to_thread(_raw_tls, server)
    try:
        await asyncio.to_thread(_read_until, sock, b"\r\n")
        for line in [b"\x00\xff garbage", b"x1 FETCH", b"x2 NOSUCHCOMMAND", b"x3 LOGIN (((("]:
            sock.sendall(line + b"\r\n")
        got = await asyncio.to_thread(_read_until, sock, b"x3 BAD")
        assert b"x1 BAD" in got and b"x2 BAD" in got and b"x3 BAD" in got
        sock.sendall(b"x4 " + b"A" * 200_000 + b"\r\n")
        assert b"BAD" in await asyncio.to_thread(_read_until, sock, b"BAD")
        sock.sendall(f'x5 LOGIN {alice} "{PASSWORD}"\r\n'.encode())
        assert b"x5 OK" in await asyncio.to_thread(_read_until, sock, b"x5 ")
    finally:
        sock.close()


async def test_client_dropping_mid_literal_leaves_nothing(server):
    alice = await server.add_account("alice")
    sock = await asyncio.to_thread(_raw_tls, server)
    try:
        await asyncio.to_thread(_read_until, sock, b"\r\n")
        sock.sendall(f'a LOGIN {alice} "{PASSWORD}"\r\n'.encode())
        await asyncio.to_thread(_read_until, sock, b"a OK")
        sock.sendall(b"b APPEND INBOX {1000}\r\n")
        assert b"+ " in await asyncio.to_thread(_read_until, sock, b"+ ")
        sock.sendall(b"From: x@y\r\nSubject: half")
    finally:
        sock.close()
    await asyncio.sleep(0.3)
    assert await server.stored(alice) == []

    def run() -> None:
        client = _imaps(server, alice)
        assert client.select("INBOX")[1] == [b"0"]
        client.logout()

    await asyncio.to_thread(run)


async def test_no_expunge_during_fetch_store_or_search(server):
    """RFC 3501 §7.4.1: another session's expunge is told at NOOP, not in the middle of a
    FETCH, STORE or SEARCH (sequence numbers must not move under the client)."""
    alice = await server.add_account("alice")
    for n in range(3):
        await asyncio.to_thread(_submit, server, alice, [alice], f"M{n}")
    await server.wait_for_messages(alice, 3)

    def run() -> None:
        one, two = _imaps(server, alice), _imaps(server, alice)
        one.select("INBOX")
        two.select("INBOX")
        one.store("1", "+FLAGS", "\\Deleted")
        one.expunge()
        for command in (
            lambda: two.fetch("1:3", "(FLAGS)"),
            lambda: two.store("3", "+FLAGS", "\\Flagged"),
            lambda: two.search(None, "ALL"),
        ):
            two.untagged_responses.pop("EXPUNGE", None)
            typ, _ = command()
            assert typ == "OK" and "EXPUNGE" not in two.untagged_responses
        # The numbers did not move: the two remaining messages are still 2 and 3 (the expunged
        # one is left out of results, as RFC 2180 §4.1.3 allows).
        assert two.search(None, "ALL")[1] == [b"2 3"]
        two.noop()
        assert two.untagged_responses.get("EXPUNGE") == [b"1"]
        assert two.search(None, "ALL")[1] == [b"1 2"]
        one.logout()
        two.logout()

    await asyncio.to_thread(run)


async def test_own_key_account_reads_its_mail_encrypted(server, tmp_path):
    """An account that keeps its own secret key: IMAP serves the PGP/MIME as stored (the server
    cannot read it), and GnuPG, holding the key, opens what IMAP served."""
    from gnupg import GnuPG

    gpg = GnuPG(tmp_path / "gnupg")
    alice = await server.add_account("alice")
    public = await asyncio.to_thread(gpg.generate, alice)
    await server.runtime.accounts.set_own_key(alice, public, actor="test")
    note = b"From: alice@a.test\r\nSubject: Note OWN-KEY-7d1\r\n\r\nOWN-KEY-7d1\r\n"

    def run() -> bytes:
        client = _imaps(server, alice)
        typ, _ = client.append("INBOX", None, None, note)
        assert typ == "OK"
        client.select("INBOX")
        served = client.fetch("1", "(BODY.PEEK[])")[1][0][1]
        client.logout()
        return served

    served = await asyncio.to_thread(run)
    assert b"OWN-KEY-7d1" not in served and pgpmime.is_encrypted(served)
    inner = await asyncio.to_thread(gpg.decrypt, pgpmime.encrypted_payload(served))
    assert b"Subject: Note OWN-KEY-7d1" in inner and inner.endswith(b"\r\n\r\nOWN-KEY-7d1\r\n")


async def _index_rows(inst, expected: int = 0) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
    """The header index's rows, once there are ``expected`` of them (sessions write theirs as
    they end, just after the client saw LOGOUT's answer), or after 5 s."""
    from sqlalchemy import select

    from mailserver.store.tables import MessageHeader

    deadline = time.monotonic() + 5
    while True:
        async with inst.runtime.db.read() as session:
            rows = await session.execute(select(MessageHeader.message_id, MessageHeader.sealed))
            found = {int(mid): bytes(sealed) for mid, sealed in rows}
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_header_search_builds_and_uses_the_sealed_index(server):
    alice = await server.add_account("alice")
    encoded = "=?UTF-8?Q?R=C3=A9sultats_rendu?="
    subjects = ["Compte rendu SECRET-IDX", "Ordonnance", "Compte rendu bis", encoded]
    for n, subject in enumerate(subjects):
        await asyncio.to_thread(_submit, server, alice, [alice], subject, f"corps {n}")
    await server.wait_for_messages(alice, 4)
    assert await _index_rows(server) == {}  # delivery holds no key to seal with

    def search(subject: str) -> list[bytes]:
        client = _imaps(server, alice)
        client.select("INBOX")
        if subject.isascii():
            typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
        else:  # a literal, in UTF-8 (imaplib sends its last argument so)
            client.literal = subject.encode()
            typ, data = client.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
        assert typ == "OK"
        client.logout()  # the session writes its index entries before it ends
        return data[0].split()

    assert await asyncio.to_thread(search, "compte rendu") == [b"1", b"3"]
    rows = await _index_rows(server, 4)
    assert len(rows) == 4 and all(b"SECRET-IDX" not in v and b"Compte" not in v for v in rows.values())
    # The index answers now; a tampered entry does not open and that message is read instead.
    first = min(rows)
    async with server.runtime.db.transaction() as session:
        from sqlalchemy import update

        from mailserver.store.tables import MessageHeader

        await session.execute(
            update(MessageHeader).where(MessageHeader.message_id == first).values(sealed=rows[max(rows)])
        )
    assert await asyncio.to_thread(search, "SECRET-IDX") == [b"1"]
    assert await asyncio.to_thread(search, "ordonnance") == [b"2"]
    assert await asyncio.to_thread(search, "RENDU") == [b"1", b"3", b"4"]  # 4: an encoded-word
    assert await asyncio.to_thread(search, "résultats") == [b"4"]


async def test_append_indexes_at_once_and_a_copy_is_indexed_when_read(server):
    alice = await server.add_account("alice")
    message = b"From: alice@a.test\r\nSubject: Brouillon indexe\r\n\r\nNote\r\n"

    def run() -> None:
        client = _imaps(server, alice)
        assert client.append("Drafts", None, None, message)[0] == "OK"
        client.select("Drafts")
        assert client.uid("SEARCH", "SUBJECT", "indexe")[1] == [b"1"]
        assert client.uid("COPY", "1", "Archive")[0] == "OK"
        client.select("Archive")
        assert client.fetch("1", "(BODY.PEEK[])")[1][0][1] == message
        assert client.uid("SEARCH", "FROM", "alice@a.test")[1] == [b"1"]
        client.logout()

    before = len(await _index_rows(server))
    await asyncio.to_thread(run)
    assert before == 0 and len(await _index_rows(server, 2)) == 2


async def test_header_searches_share_the_accounts_cache_and_see_changes(server):
    """Two sessions of one account share the opened headers (headercache): a message that
    arrives, one that is expunged, a second field of the same messages and a key without a
    required word all give the right answer; the last logout drops the cache."""
    alice = await server.add_account("alice")
    for subject in ("Compte rendu sortie", "Ordonnance", "Sortie prevue"):
        await asyncio.to_thread(_submit, server, alice, [alice], subject, "corps")
    await server.wait_for_messages(alice, 3)
    caches = server.runtime.imap.deps.imap.header_caches

    def first_part() -> tuple[imaplib.IMAP4_SSL, imaplib.IMAP4_SSL]:
        one, two = _imaps(server, alice), _imaps(server, alice)
        one.select("INBOX")
        two.select("INBOX")
        assert one.uid("SEARCH", "SUBJECT", "sortie")[1] == [b"1 3"]
        assert caches.accounts() == 1 and caches.used > 0
        return one, two

    one, two = await asyncio.to_thread(first_part)
    await asyncio.to_thread(_submit, server, alice, [alice], "Nouvelle sortie", "corps")
    await server.wait_for_messages(alice, 4)

    def second_part() -> None:
        two.noop()
        assert two.uid("SEARCH", "SUBJECT", "sortie")[1] == [b"1 3 4"]
        assert two.uid("SEARCH", "FROM", "alice@a.test", "SUBJECT", "ordonnance")[1] == [b"2"]
        assert two.uid("SEARCH", "OR", "SUBJECT", "ordonnance", "SUBJECT", "nouvelle")[1] == [b"2 4"]
        assert two.uid("SEARCH", "NOT", "SUBJECT", "sortie")[1] == [b"2"]
        one.noop()
        one.uid("STORE", "3", "+FLAGS", "\\Deleted")
        one.expunge()
        assert one.uid("SEARCH", "SUBJECT", "sortie")[1] == [b"1 4"]
        one.logout()
        assert caches.accounts() == 1  # the other session still holds it
        two.noop()
        assert two.search(None, "SUBJECT", "sortie")[1] == [b"1 3"]  # sequence numbers now
        two.logout()

    await asyncio.to_thread(second_part)
    for _ in range(100):  # the server ends the session just after LOGOUT's answer
        if not caches.accounts():
            break
        await asyncio.sleep(0.05)
    assert caches.accounts() == 0 and caches.used == 0


async def test_reselecting_a_mailbox_shows_what_changed_meanwhile(server):
    """A session re-opens a mailbox from the rows it kept, updated with what changed since: the
    answer (EXISTS, UIDs, flags, first unseen) is the one a new session gets."""
    alice = await server.add_account("alice")
    for n in range(5):
        await asyncio.to_thread(_submit, server, alice, [alice], f"Message {n}", "corps")
    await server.wait_for_messages(alice, 5)

    def listing(client: imaplib.IMAP4_SSL) -> list[bytes]:
        return client.uid("FETCH", "1:*", "(FLAGS)")[1]

    def run() -> None:
        one, other = _imaps(server, alice), _imaps(server, alice)
        assert one.select("INBOX")[1] == [b"5"]
        one.uid("STORE", "1:2", "+FLAGS", "(\\Seen)")
        one.select("Archive")
        # Meanwhile: flags change, one message is expunged, another arrives by APPEND.
        other.select("INBOX")
        other.uid("STORE", "3", "+FLAGS", "(\\Flagged \\Deleted)")
        other.uid("STORE", "4", "+FLAGS", "(\\Seen $Label1)")
        other.expunge()
        assert other.append("INBOX", "(\\Seen)", None, b"Subject: appended\r\n\r\nx\r\n")[0] == "OK"
        typ, data = one.select("INBOX")
        assert typ == "OK" and data == [b"5"]
        unseen = one.untagged_responses.get("UNSEEN")
        fresh = _imaps(server, alice)
        assert fresh.select("INBOX")[1] == [b"5"]
        assert fresh.untagged_responses.get("UNSEEN") == unseen == [b"4"]  # UID 5, now fourth
        assert listing(one) == listing(fresh)
        assert b"3 (FLAGS (\\Seen $Label1) UID 4)" in listing(one)
        # Nothing changed: the kept rows are the answer.
        one.select("Archive")
        assert one.select("INBOX")[1] == [b"5"] and listing(one) == listing(fresh)
        for client in (one, other, fresh):
            client.logout()

    await asyncio.to_thread(run)


async def test_light_fetch_and_flag_search_answers(server):
    """FETCH of UID/FLAGS/MODSEQ in the client's order, over a sequence set with overlapping
    ranges, and flag searches with and without MODSEQ, all answered from the session's view."""
    alice = await server.add_account("alice")
    for n in range(4):
        await asyncio.to_thread(_submit, server, alice, [alice], f"Message {n}", "corps")
    await server.wait_for_messages(alice, 4)

    def run() -> None:
        client = _imaps(server, alice)
        client.select("INBOX")
        client.uid("STORE", "2,4", "+FLAGS", "(\\Seen)")
        typ, data = client.fetch("4,1:2,2", "(MODSEQ FLAGS)")
        assert typ == "OK" and [line.split(b" ", 1)[0] for line in data] == [b"1", b"2", b"4"]
        assert re.fullmatch(rb"4 \(MODSEQ \(\d+\) FLAGS \(\\Seen\)\)", data[2])
        typ, data = client.uid("FETCH", "3:*", "(FLAGS)")
        assert data == [b"3 (FLAGS () UID 3)", b"4 (FLAGS (\\Seen) UID 4)"]
        assert client.fetch("1", "(UID)")[1] == [b"1 (UID 1)"]
        assert client.uid("SEARCH", "UNSEEN")[1] == [b"1 3"]
        assert client.search(None, "SEEN")[1] == [b"2 4"]
        modseq = int(re.search(rb"MODSEQ \((\d+)\)", client.fetch("4", "(MODSEQ)")[1][0]).group(1))
        typ, data = client.uid("SEARCH", "SEEN", "MODSEQ", "1")
        assert data == [b"2 4 (MODSEQ %d)" % modseq]
        assert client.search(None, "2:3", "UNSEEN")[1] == [b"3"]
        client.logout()

    await asyncio.to_thread(run)


async def test_header_search_without_a_cache(servers):
    """``imap_header_cache_bytes = 0``: every header search reads the sealed index (or the
    messages) again, with the same answers."""
    server = await servers.start("a", imap_header_cache_bytes=0)
    alice = await server.add_account("alice")
    for subject in ("Compte rendu", "Ordonnance", "=?UTF-8?Q?R=C3=A9sultats_rendu?="):
        await asyncio.to_thread(_submit, server, alice, [alice], subject, "corps")
    await server.wait_for_messages(alice, 3)

    def run() -> None:
        client = _imaps(server, alice)
        client.select("INBOX")
        for _ in range(2):
            assert client.uid("SEARCH", "SUBJECT", "rendu")[1] == [b"1 3"]
            assert client.uid("SEARCH", "NOT", "SUBJECT", "rendu")[1] == [b"2"]
        client.logout()

    await asyncio.to_thread(run)
    assert server.runtime.imap.deps.imap.header_caches.used == 0


async def test_reading_an_indexed_message_does_not_seal_its_header_again(server, monkeypatch):
    """A message already in the header index (APPEND indexes at once) is not sealed and sent to
    the index again when a later session reads it; a delivered one is, once."""
    from mailserver.imap import backend

    alice = await server.add_account("alice")
    saved: list[int] = []
    real_save = backend.headerindex.save

    def recording_save(session, entries):  # type: ignore[no-untyped-def]
        saved.extend(message_id for message_id, _ in entries)
        return real_save(session, entries)

    monkeypatch.setattr(backend.headerindex, "save", recording_save)
    await asyncio.to_thread(_submit, server, alice, [alice], "Delivered, not indexed")
    await server.wait_for_messages(alice, 1)
    note = b"From: alice@a.test\r\nSubject: Appended\r\n\r\nNote\r\n"

    def session(append: bool) -> None:
        client = _imaps(server, alice)
        if append:
            assert client.append("INBOX", None, None, note)[0] == "OK"
        client.select("INBOX")
        assert client.fetch("1:2", "(BODY.PEEK[])")[0] == "OK"
        client.logout()

    await asyncio.to_thread(session, True)
    rows = await _index_rows(server, 2)
    assert len(rows) == 2 and sorted(saved) == sorted(rows)  # each sealed once: appended, then read
    saved.clear()
    await asyncio.to_thread(session, False)
    await asyncio.sleep(0.3)  # a session writes its entries as it ends
    assert saved == [] and await _index_rows(server) == rows


async def test_a_body_gone_meanwhile_gets_no_expungeissued_and_the_rest(server):
    """A message expunged by another session between the metadata and the body reads (possible
    on PostgreSQL, whose reads are READ COMMITTED; simulated here by its body's rows going):
    the other messages' data, then NO [EXPUNGEISSUED] (RFC 2180 §4.1.2, RFC 5530), and the
    session goes on."""
    from sqlalchemy import delete, select

    from mailserver.store.tables import BlobChunk, Mailbox, Message

    alice = await server.add_account("alice")
    for n in range(2):
        await asyncio.to_thread(_submit, server, alice, [alice], f"Message {n}", f"corps {n}")
    await server.wait_for_messages(alice, 2)
    async with server.runtime.db.transaction() as session:
        blob = await session.scalar(
            select(Message.blob_id)
            .join(Mailbox, Mailbox.id == Message.mailbox_id)
            .where(Mailbox.name == "INBOX", Message.uid == 2)
        )
        await session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob))

    def run() -> None:
        client = _imaps(server, alice)
        client.select("INBOX")
        typ, data = client.fetch("1:2", "(BODY.PEEK[])")
        assert typ == "NO" and b"EXPUNGEISSUED" in data[0]
        fetched = [item for item in client.response("FETCH")[1] if isinstance(item, tuple)]
        assert len(fetched) == 1 and fetched[0][0].startswith(b"1 (") and b"corps 0" in fetched[0][1]
        assert client.noop()[0] == "OK"
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and b"corps 0" in data[0][1]
        client.logout()

    await asyncio.to_thread(run)
