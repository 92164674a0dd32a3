"""The IMAP server driven by real clients nobody here wrote, through the real sockets.

aioimaplib (IDLE), curl (imaps://, imap:// with STARTTLS), mbsync (isync: a two-way sync of a
1,000-message mailbox), mutt (batch mode, reading a message that only exists encrypted in the
store) and two OpenMSS instances sharing one PostgreSQL database (IDLE and EXPUNGE across
processes, through NOTIFY). Each test skips when its client is not installed
(``scripts/install-test-tools.sh`` installs them as root).

The server runs in the test's event loop: every blocking client (imaplib, smtplib, a subprocess)
runs in a thread (``asyncio.to_thread``), never in the loop itself.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mailserver.message import pgpmime

from processes import ServerProcess, openmss_env
from servers import PG_ENV, Instance

PASSWORD = "correct horse battery"

pytestmark = pytest.mark.slow


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/install-test-tools.sh installs it as root)")
    return path


def _submit(inst: Instance, user: str, recipients: list[str], subject: str, body: str = "Corps.") -> None:
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        message = f"From: {user}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        client.sendmail(user, recipients, message.encode())


def _imaps(inst: Instance, user: str, port: int | None = None) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", port or inst.settings.imaps_port, ssl_context=inst.client_tls(), timeout=30
    )
    client.login(user, inst.passwords[user])
    return client


def _run(args: list[str], timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=timeout, check=False, **kwargs)


# aioimaplib ------------------------------------------------------------------------------------


async def test_aioimaplib_idle_push_within_a_second(server: Instance) -> None:
    aioimaplib = pytest.importorskip("aioimaplib")
    alice = await server.add_account("alice")
    client = aioimaplib.IMAP4_SSL(
        "127.0.0.1", server.settings.imaps_port, ssl_context=server.client_tls(), timeout=10
    )
    await client.wait_hello_from_server()
    assert (await client.login(alice, PASSWORD)).result == "OK"
    selected = await client.select("INBOX")
    assert selected.result == "OK" and b"0 EXISTS" in b"\n".join(selected.lines)
    idle = await client.idle_start(timeout=30)
    try:
        started = time.monotonic()
        await asyncio.to_thread(_submit, server, alice, [alice], "Poussé")
        submitted = time.monotonic()
        pushed: list[bytes] = []
        while not any(line.endswith(b" EXISTS") for line in pushed):
            pushed += await client.wait_server_push(timeout=1.0 - (time.monotonic() - submitted))
        seen = time.monotonic()
        assert b"1 EXISTS" in pushed, pushed
        assert seen - submitted < 1.0, f"EXISTS {seen - submitted:.3f} s after the 250 ({seen - started:.3f})"
        print(f"aioimaplib: EXISTS {(seen - submitted) * 1000:.0f} ms after the 250")
    finally:
        client.idle_done()
    done = await asyncio.wait_for(idle, 5)
    assert done.result == "OK"
    fetched = await client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert fetched.result == "OK" and "Subject: Poussé".encode() in b"".join(fetched.lines)
    await client.logout()


# curl ------------------------------------------------------------------------------------------


async def test_curl_fetch_over_imaps_and_starttls_and_list(server: Instance) -> None:
    curl = _tool("curl")
    alice = await server.add_account("alice")
    marker = f"CURL-SECRET-{uuid.uuid4().hex}"
    await asyncio.to_thread(_submit, server, alice, [alice], "Pour curl", marker)
    [expected] = await server.wait_for_messages(alice, 1)
    [stored] = await server.stored(alice)
    assert marker.encode() not in stored and pgpmime.is_encrypted(stored)
    user = f"{alice}:{PASSWORD}"
    s = server.settings

    def run() -> None:
        common = [
            curl,
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--cacert",
            str(server.ca),
            "-u",
            user,
        ]
        done = _run([*common, f"imaps://127.0.0.1:{s.imaps_port}/INBOX;UID=1"])
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected  # decrypted, byte for byte
        assert marker.encode() in done.stdout
        done = _run([*common, "--ssl-reqd", f"imap://127.0.0.1:{s.imap_port}/INBOX;UID=1"])
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected
        done = _run([*common, f"imaps://127.0.0.1:{s.imaps_port}/"])
        assert done.returncode == 0, done.stderr
        names = {
            m.group(1) for m in re.finditer(rb'^\* LIST \([^)]*\) "/" "?([^"\r\n]+)"?\r?$', done.stdout, re.M)
        }
        assert {b"INBOX", b"Sent", b"Drafts", b"Trash"} <= names, done.stdout
        # A wrong password: curl fails (67: login denied), and reads nothing.
        bad = [curl, "--silent", "--max-time", "20", "--cacert", str(server.ca), "-u", f"{alice}:wrong"]
        done = _run([*bad, f"imaps://127.0.0.1:{s.imaps_port}/INBOX;UID=1"])
        assert done.returncode == 67 and done.stdout == b""

    await asyncio.to_thread(run)


# mbsync (isync) --------------------------------------------------------------------------------

MESSAGES = 1000
MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
MESSAGE_ID_RE = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


def _numbered(i: int, to: str) -> bytes:
    return (
        f"From: Sender {i} <sender{i}@b.test>\r\n"
        f"To: {to}\r\n"
        f"Subject: Message {i}\r\n"
        f"Message-ID: <m{i}@clients.test>\r\n"
        "Date: Mon, 03 Jun 2024 10:00:00 +0200\r\n"
        "\r\n"
        f"Corps du message {i}.\r\n"
    ).encode()


def _mid(i: int) -> str:
    return f"<m{i}@clients.test>"


def _fill(inst: Instance, user: str, count: int, connections: int = 4) -> dict[int, int]:
    """APPEND messages 0 .. count-1 to INBOX over several connections at once (their writes
    share group commits), each pipelined; message number -> UID (from APPENDUID)."""
    uids: dict[int, int] = {}
    with ThreadPoolExecutor(connections) as pool:
        parts = [range(n, count, connections) for n in range(connections)]
        for done in pool.map(lambda numbers: _append_pipelined(inst, user, numbers), parts):
            uids.update(done)
    assert sorted(uids.values()) == list(range(1, count + 1))
    return uids


def _append_pipelined(inst: Instance, user: str, numbers: range, batch: int = 50) -> dict[int, int]:
    """APPEND pipelined (LITERAL+, RFC 7888): a batch of commands in one write.

    imaplib waits for each continuation and sends the literal and its CRLF in two writes, so one
    APPEND costs a delayed ACK (~40 ms): 1,000 of them a minute, not the store's speed."""
    uids = {}
    sock = ssl_socket(inst)
    with sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(f'l LOGIN "{user}" "{inst.passwords[user]}"\r\n'.encode())
        while not (line := reader.readline()).startswith(b"l "):
            assert line, "connection closed"
        assert line.startswith(b"l OK"), line
        for first in range(0, len(numbers), batch):
            chunk = numbers[first : first + batch]
            chunks = []
            for i in chunk:
                message = _numbered(i, user)
                chunks.append(f"a{i} APPEND INBOX {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
            sock.sendall(b"".join(chunks))
            for i in chunk:
                while not (line := reader.readline()).startswith(b"a"):
                    assert line, "connection closed"
                found = re.match(rb"a(\d+) OK \[APPENDUID \d+ (\d+)\]", line)
                assert found is not None and int(found.group(1)) == i, line
                uids[i] = int(found.group(2))
        sock.sendall(b"z LOGOUT\r\n")
    return uids


def ssl_socket(inst: Instance) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", inst.settings.imaps_port), timeout=30)
    sock: ssl.SSLSocket = inst.client_tls().wrap_socket(raw, server_hostname="127.0.0.1")
    return sock


def _server_state(client: imaplib.IMAP4_SSL) -> dict[str, dict[str, frozenset[str]]]:
    """mailbox -> Message-ID -> flags (without \\Recent), over every mailbox of the account."""
    state: dict[str, dict[str, frozenset[str]]] = {}
    typ, listed = client.list()
    assert typ == "OK"
    for line in listed:
        assert isinstance(line, bytes)
        name = line.rsplit(b' "/" ', 1)[1].strip(b'"').decode()
        typ, data = client.select(f'"{name}"', readonly=True)
        assert typ == "OK", (name, data)
        box: dict[str, frozenset[str]] = {}
        if int(data[0] or 0):
            typ, fetched = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert typ == "OK"
            for item in fetched:
                if not isinstance(item, tuple):
                    continue
                meta, header = item
                flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
                assert flags is not None, meta
                found = MESSAGE_ID_RE.search(header)
                assert found is not None, header
                mid = found.group(1).decode()
                assert mid not in box, f"{mid} twice in {name}"
                box[mid] = frozenset(f for f in flags.group(1).decode().split() if f != "\\Recent")
        state[name] = box
    return state


def _maildir_files(folder: Path) -> Iterator[Path]:
    for sub in ("cur", "new"):
        if (folder / sub).is_dir():
            yield from sorted((folder / sub).iterdir())


def _maildir_flags(path: Path) -> frozenset[str]:
    if ":2," not in path.name:
        return frozenset()
    return frozenset(MAILDIR_FLAGS[c] for c in path.name.split(":2,", 1)[1] if c in MAILDIR_FLAGS)


def _maildir_state(root: Path) -> dict[str, dict[str, frozenset[str]]]:
    state: dict[str, dict[str, frozenset[str]]] = {}
    for folder in sorted(p for p in root.rglob("*") if (p / "cur").is_dir()):
        box: dict[str, frozenset[str]] = {}
        for path in _maildir_files(folder):
            found = MESSAGE_ID_RE.search(path.read_bytes())
            assert found is not None, path
            mid = found.group(1).decode()
            assert mid not in box, f"{mid} twice in {folder}"
            box[mid] = _maildir_flags(path)
        state[folder.relative_to(root).as_posix()] = box
    return state


def _maildir_index(folder: Path) -> dict[str, Path]:
    return {MESSAGE_ID_RE.search(p.read_bytes()).group(1).decode(): p for p in _maildir_files(folder)}  # type: ignore[union-attr]


def _mbsyncrc(inst: Instance, user: str, root: Path) -> Path:
    """Host is ``localhost`` (a DNS name of the test certificate): mbsync 1.4 matches the host
    only against DNS names and the CN, never an IP address SAN, so 127.0.0.1 fails with
    "certificate owner does not match hostname". The chain is still verified against the CA.
    (``SSLType``: isync 1.4's name; 1.5 calls it ``TLSType`` and still reads ``SSLType``.)"""
    rc = root.parent / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount openmss
Host localhost
Port {inst.settings.imaps_port}
User {user}
Pass "{inst.passwords[user]}"
SSLType IMAPS
SystemCertificates no
CertificateFile {inst.ca}
Timeout 60

IMAPStore remote
Account openmss

MaildirStore local
Path {root}/
Inbox {root}/INBOX
SubFolders Verbatim

Channel openmss
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
"""
    )
    return rc


def _mbsync(mbsync: str, rc: Path) -> str:
    done = _run([mbsync, "-c", str(rc), "-a"], timeout=120)
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    return output


async def test_mbsync_two_way_sync_of_a_thousand_messages(server: Instance, tmp_path: Path) -> None:
    mbsync = _tool("mbsync")
    alice = await server.add_account("alice")
    timings: dict[str, float] = {}
    started = time.monotonic()
    appended = await asyncio.to_thread(_fill, server, alice, MESSAGES)
    timings["append"] = time.monotonic() - started
    root = tmp_path / "Mail"
    root.mkdir()
    rc = _mbsyncrc(server, alice, root)

    started = time.monotonic()
    await asyncio.to_thread(_mbsync, mbsync, rc)
    timings["first sync"] = time.monotonic() - started
    inbox = root / "INBOX"
    assert len(list(_maildir_files(inbox))) == MESSAGES
    local = _maildir_index(inbox)
    assert set(local) == {_mid(i) for i in range(MESSAGES)}
    # The Maildir holds the messages as sent (with Unix line ends), not their encrypted form.
    # (mbsync adds an X-TUID header line to the copies it makes.)
    copy = re.sub(rb"^X-TUID: .*\n", b"", local[_mid(7)].read_bytes(), flags=re.M)
    assert copy == _numbered(7, alice).replace(b"\r\n", b"\n")

    # Changes on the server ...
    def change_server() -> None:
        client = _imaps(server, alice)
        client.select("INBOX")

        def uids(numbers: range) -> str:
            return ",".join(str(appended[i]) for i in numbers)

        assert client.uid("STORE", uids(range(0, 100)), "+FLAGS.SILENT", "(\\Seen)")[0] == "OK"
        assert client.uid("STORE", uids(range(50, 150)), "+FLAGS.SILENT", "(\\Flagged)")[0] == "OK"
        assert client.uid("STORE", uids(range(200, 250)), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        assert client.expunge()[0] == "OK"
        assert client.uid("MOVE", uids(range(300, 350)), "Archive")[0] == "OK"
        client.logout()

    started = time.monotonic()
    await asyncio.to_thread(change_server)
    timings["server changes"] = time.monotonic() - started
    # ... and in the Maildir.
    for i in range(400, 450):
        path = local[_mid(i)]
        flags = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
        base = path.name.split(":2,", 1)[0]
        path.rename(inbox / "cur" / f"{base}:2,{''.join(sorted(flags + 'S'))}")
    for i in range(500, 550):
        local[_mid(i)].unlink()
    new_mid = "<local-new@clients.test>"
    (inbox / "new" / f"{int(time.time())}.local-new.test").write_bytes(
        f"From: {alice}\r\nTo: {alice}\r\nSubject: Local draft\r\nMessage-ID: {new_mid}\r\n"
        "\r\nEcrit hors ligne.\r\n".encode()
    )

    started = time.monotonic()
    await asyncio.to_thread(_mbsync, mbsync, rc)
    await asyncio.to_thread(_mbsync, mbsync, rc)
    timings["two more syncs"] = time.monotonic() - started

    def server_state() -> dict[str, dict[str, frozenset[str]]]:
        client = _imaps(server, alice)
        try:
            return _server_state(client)
        finally:
            client.logout()

    started = time.monotonic()
    remote = await asyncio.to_thread(server_state)
    timings["server state"] = time.monotonic() - started
    near = _maildir_state(root)
    print("mbsync timings:", {k: round(v, 2) for k, v in timings.items()})
    assert near == remote

    seen, flagged = {"\\Seen"}, {"\\Flagged"}
    gone = (*range(200, 250), *range(300, 350), *range(500, 550))  # expunged, moved, deleted locally
    expected: dict[str, frozenset[str]] = {_mid(i): frozenset() for i in range(MESSAGES) if i not in gone}
    for i in range(0, 100):
        expected[_mid(i)] |= seen
    for i in range(50, 150):
        expected[_mid(i)] |= flagged
    for i in range(400, 450):
        expected[_mid(i)] |= seen
    expected[new_mid] = frozenset()
    assert remote["INBOX"] == expected
    assert remote["Archive"] == {_mid(i): frozenset() for i in range(300, 350)}
    assert all(not remote[box] for box in remote if box not in ("INBOX", "Archive"))


# mutt ------------------------------------------------------------------------------------------


def _in_pty(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int | None, bytes]:
    """Run a full-screen program on a pseudo-terminal of its own; (exit status or None, screen)."""
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen(
        args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program is gone and its terminal closed
                    chunk = b""
                screen += chunk
                if not chunk and process.poll() is not None:
                    break
            elif process.poll() is not None:
                break
        return process.poll(), screen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)


async def test_mutt_reads_a_message_only_the_encrypted_store_holds(server: Instance, tmp_path: Path) -> None:
    mutt = _tool("mutt")
    alice = await server.add_account("alice")
    marker = f"MUTT-SECRET-{uuid.uuid4().hex}"
    await asyncio.to_thread(_submit, server, alice, [alice], "Pour mutt", f"Le marqueur est {marker}.")
    await server.wait_for_messages(alice, 1)
    [stored] = await server.stored(alice)
    assert marker.encode() not in stored and pgpmime.is_encrypted(stored)

    out = tmp_path / "piped.txt"
    rc = tmp_path / "muttrc"
    rc.write_text(
        "\n".join(
            [
                "set ssl_force_tls=yes",
                "set ssl_starttls=yes",
                f'set ssl_ca_certificates_file="{server.ca}"',
                f'set certificate_file="{tmp_path / "accepted-certs"}"',
                f'set imap_user="{alice}"',
                f'set imap_pass="{PASSWORD}"',
                f'set folder="imaps://127.0.0.1:{server.settings.imaps_port}/"',
                'set spoolfile="+INBOX"',
                "set pipe_decode=yes",
                "set wait_key=no",
                "set quit=yes",
                "set move=no",
                "set mark_old=no",
                "set header_cache=",
                "set message_cachedir=",
                "set timeout=1",
                "",
            ]
        )
    )
    env = {
        "HOME": str(tmp_path),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": "vt100",
        "LANG": "C.UTF-8",
    }
    keys = f"<pipe-message>cat > {out}<enter><quit>"
    args = [mutt, "-n", "-F", str(rc), "-f", "=INBOX", "-e", f'push "{keys}"']
    started = time.monotonic()
    status, screen = await asyncio.to_thread(_in_pty, args, env, tmp_path, 30.0)
    elapsed = time.monotonic() - started
    assert out.exists(), f"mutt (exit {status}) piped nothing:\n{screen.decode(errors='replace')[-3000:]}"
    piped = out.read_bytes()
    assert marker.encode() in piped and b"Subject: Pour mutt" in piped
    assert status == 0, screen.decode(errors="replace")[-3000:]
    # Verified against the CA: no certificate was accepted by hand.
    assert not (tmp_path / "accepted-certs").exists()
    print(f"mutt: {elapsed:.2f} s")


# Two instances sharing one PostgreSQL database ---------------------------------------------------


def _read_until(sock: ssl.SSLSocket, marker: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


async def test_two_instances_sharing_postgresql(server: Instance, tmp_path: Path) -> None:
    """IDLE on instance 1 sees a message submitted to instance 2 (an ``openmss serve`` process)
    within a second, through PostgreSQL's NOTIFY; a flag change and an EXPUNGE on instance 2 show
    on instance 1 at its next NOOP."""
    if not os.environ.get(PG_ENV):
        pytest.skip(f"needs PostgreSQL: set {PG_ENV}")
    alice = await server.add_account("alice")
    s = server.settings
    env = openmss_env(tmp_path / "second", domain=server.domain, database_url=s.database_url)
    assert s.tls_cert is not None and s.tls_key is not None
    env.update(
        OPENMSS_TLS_CERT=str(s.tls_cert),
        OPENMSS_TLS_KEY=str(s.tls_key),
        OPENMSS_PEER_CA_FILE=str(server.ca),
        OPENMSS_QUEUE_KEY_FILE=str(s.effective_queue_key_file),
        OPENMSS_KEY_KDF_MEMORY_KIB=str(s.key_kdf_memory_kib),
        OPENMSS_KEY_KDF_TIME_COST=str(s.key_kdf_time_cost),
        OPENMSS_KEY_KDF_PARALLELISM=str(s.key_kdf_parallelism),
        OPENMSS_LOGIN_FAILURE_DELAY="0.01",
    )
    second = ServerProcess(env, tmp_path)
    second_imaps = int(env["OPENMSS_IMAPS_PORT"])
    try:
        await asyncio.to_thread(second.start)
        sock = await asyncio.to_thread(ssl_socket, server)
        try:
            await asyncio.to_thread(_read_until, sock, b"\r\n")
            sock.sendall(f'a LOGIN "{alice}" "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
            assert b"b OK" in await asyncio.to_thread(_read_until, sock, b"b OK")
            sock.sendall(b"c IDLE\r\n")
            assert b"+ " in await asyncio.to_thread(_read_until, sock, b"+ ")

            def submit_to_second() -> float:
                with smtplib.SMTP("127.0.0.1", second.submission_port, timeout=10) as client:
                    client.starttls(context=server.client_tls())
                    client.login(alice, PASSWORD)
                    message = f"From: {alice}\r\nTo: {alice}\r\nSubject: Via l'instance 2\r\n\r\nCorps.\r\n"
                    client.sendmail(alice, [alice], message.encode())
                    return time.monotonic()

            accepted = await asyncio.to_thread(submit_to_second)
            got = await asyncio.to_thread(_read_until, sock, b"EXISTS", 5.0)
            latency = time.monotonic() - accepted
            assert b"* 1 EXISTS" in got, got
            assert latency < 1.0, f"EXISTS {latency:.3f} s after instance 2 accepted the message"
            sock.sendall(b"DONE\r\n")
            assert b"c OK" in await asyncio.to_thread(_read_until, sock, b"c OK")

            def change_on_second() -> None:
                client = _imaps(server, alice, port=second_imaps)
                assert client.select("INBOX")[1] == [b"1"]
                assert client.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
                client.logout()

            await asyncio.to_thread(change_on_second)
            sock.sendall(b"d NOOP\r\n")
            got = await asyncio.to_thread(_read_until, sock, b"d OK")
            assert re.search(rb"\* 1 FETCH \(.*FLAGS \([^)]*\\Flagged", got), got

            def expunge_on_second() -> None:
                client = _imaps(server, alice, port=second_imaps)
                client.select("INBOX")
                client.store("1", "+FLAGS", "(\\Deleted)")
                assert client.expunge() == ("OK", [b"1"])
                client.logout()

            await asyncio.to_thread(expunge_on_second)
            sock.sendall(b"e NOOP\r\n")
            got = await asyncio.to_thread(_read_until, sock, b"e OK")
            assert b"* 1 EXPUNGE" in got, got
            print(f"two instances: EXISTS {latency * 1000:.0f} ms after the 250 of instance 2")
        finally:
            sock.close()
    finally:
        code = await asyncio.to_thread(second.stop)
        assert code == 0, second.logs()
