"""QRESYNC (RFC 7162 §3.2) through a raw TLS connection: ENABLE, SELECT with the QRESYNC
parameter, VANISHED instead of EXPUNGE, UID FETCH with the VANISHED modifier, [CLOSED]."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import socket
import ssl

PASSWORD = "correct horse battery"


def _submit(inst, user: str, subject: str) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10) as client:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        client.sendmail(
            user, [user], f"From: {user}\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nx\r\n".encode()
        )


class Raw:
    """A line-level IMAP client: each command's whole answer, as text."""

    def __init__(self, inst) -> None:  # type: ignore[no-untyped-def]
        sock = socket.create_connection(("127.0.0.1", inst.settings.imaps_port), timeout=10)
        self.sock: ssl.SSLSocket = inst.client_tls().wrap_socket(sock, server_hostname="127.0.0.1")
        self.buffer = b""
        self._until(b"\r\n")
        self.n = 0

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buffer += chunk
        end = self.buffer.index(marker) + len(marker)
        head, self.buffer = self.buffer[:end], self.buffer[end:]
        return head

    def command(self, text: str) -> str:
        self.n += 1
        tag = f"q{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        answer = b""
        while True:
            line = self._until(b"\r\n")
            answer += line
            if line.startswith(f"{tag} ".encode()):
                return answer.decode()

    def close(self) -> None:
        self.sock.close()


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return int(match.group(1))


async def test_qresync_resynchronises_a_mailbox_in_one_select(server):
    alice = await server.add_account("alice")
    for n in range(5):
        await asyncio.to_thread(_submit, server, alice, f"M{n}")
    await server.wait_for_messages(alice, 5)

    def run() -> None:
        first = Raw(server)
        first.command(f'LOGIN {alice} "{PASSWORD}"')
        assert "QRESYNC" in first.command("CAPABILITY")
        assert "BAD" in first.command("SELECT INBOX (QRESYNC (1 1))")  # not enabled yet
        assert "* ENABLED QRESYNC" in first.command("ENABLE QRESYNC")
        selected = first.command("SELECT INBOX")
        uidvalidity = _number(r"UIDVALIDITY (\d+)", selected)
        before = _number(r"HIGHESTMODSEQ (\d+)", selected)

        other = imaplib.IMAP4_SSL("127.0.0.1", server.settings.imaps_port, ssl_context=server.client_tls())
        other.login(alice, PASSWORD)
        other.select("INBOX")
        other.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
        other.uid("STORE", "3:4", "+FLAGS", "(\\Deleted)")
        other.expunge()
        other.logout()

        # The selected session learns of the expunges as VANISHED (RFC 7162 §3.2.10).
        noop = first.command("NOOP")
        assert "* VANISHED 3:4" in noop and "EXPUNGE" not in noop
        assert re.search(r"\* 2 FETCH \(FLAGS \(\\Flagged\) UID 2 MODSEQ \(\d+\)\)", noop)
        # UID FETCH ... (CHANGEDSINCE m VANISHED) (§3.2.6).
        changed = first.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before} VANISHED)")
        assert "* VANISHED (EARLIER) 3:4" in changed
        assert re.findall(r"UID (\d+)", changed) == ["2"]
        # Selecting another mailbox ends this one with [CLOSED] (§3.2.11).
        assert "* OK [CLOSED]" in first.command("EXAMINE Sent")
        # Its own expunge, too, is told as VANISHED.
        first.command("SELECT INBOX")
        first.command("UID STORE 5 +FLAGS.SILENT (\\Deleted)")
        assert "* VANISHED 5" in first.command("EXPUNGE")
        first.close()

        second = Raw(server)
        second.command(f'LOGIN {alice} "{PASSWORD}"')
        second.command("ENABLE QRESYNC")
        resync = second.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {before}))")
        assert "* VANISHED (EARLIER) 3:5" in resync
        assert re.findall(r"\* \d+ FETCH \(UID (\d+)", resync) == ["2"]
        assert "\\Flagged" in resync and "MODSEQ" in resync
        # Only the known UIDs are reported; a stale UIDVALIDITY gets the plain SELECT.
        known = second.command(f"EXAMINE INBOX (QRESYNC ({uidvalidity} {before} 1:2))")
        assert "VANISHED" not in known and re.findall(r"FETCH \(UID (\d+)", known) == ["2"]
        stale = second.command(f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {before}))")
        assert "VANISHED" not in stale and "FETCH" not in stale and " OK " in stale
        second.close()

    await asyncio.to_thread(run)
