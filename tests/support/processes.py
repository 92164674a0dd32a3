"""Run the real ``openmss`` command as a subprocess: ``serve`` on free loopback ports, and the CLI.

Used by the tests that must see the server as an operator does: a separate process that can be
killed (SIGKILL) and restarted on the same data directory or database.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from servers import free_port

COMMAND = [sys.executable, "-m", "openmss.cli"]

# Health and metrics polls of a server this script started on loopback: its certificate is
# generated at its first start, so it is not verified here (the tests of TLS are elsewhere).
_LOOPBACK_TLS = ssl._create_unverified_context()


def openmss_env(
    data_dir: Path, *, domain: str, database_url: str | None, log_level: str = "WARNING"
) -> dict[str, str]:
    """The environment for ``openmss`` subcommands: this process's, minus any ``OPENMSS_*``
    variable of ours, plus the settings of one server on free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMSS_")}
    env.update(
        OPENMSS_DATA_DIR=str(data_dir),
        OPENMSS_DATABASE_URL=database_url or "",
        OPENMSS_DOMAINS=f'["{domain}"]',
        OPENMSS_HOSTNAME=f"mx.{domain}",
        OPENMSS_SMTP_PORT=str(free_port()),
        OPENMSS_SUBMISSION_PORT=str(free_port()),
        OPENMSS_SUBMISSIONS_PORT=str(free_port()),
        OPENMSS_IMAP_PORT=str(free_port()),
        OPENMSS_IMAPS_PORT=str(free_port()),
        OPENMSS_HTTP_PORT=str(free_port()),
        OPENMSS_LOG_LEVEL=log_level,
        OPENMSS_LOG_FORMAT="text",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str = "", timeout: float = 60.0) -> str:
    """Run ``openmss ARGS``; its combined output, or AssertionError when it fails."""
    done = subprocess.run(
        [*COMMAND, *args], input=stdin, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"openmss {' '.join(args)} exited with {done.returncode}:\n{output}"
    return output


@dataclass
class ServerProcess:
    """One ``openmss serve`` process after another on the same settings (same ports, same data).

    Each start gets its own log file in ``log_dir``; :meth:`logs` returns all of them.
    """

    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_files: list[Path] = field(default_factory=list)
    _log: IO[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.env["OPENMSS_DATA_DIR"])

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def http_port(self) -> int:
        return int(self.env["OPENMSS_HTTP_PORT"])

    @property
    def submission_port(self) -> int:
        return int(self.env["OPENMSS_SUBMISSION_PORT"])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, timeout: float = 30.0) -> None:
        """Start ``openmss serve`` and wait until ``/healthz`` answers 200."""
        assert not self.running, "the previous server process is still running"
        self.starts += 1
        path = self.log_dir / f"openmss-serve-{self.starts}.log"
        self.log_files.append(path)
        self._close_log()
        self._log = path.open("wb")
        # A process group of its own (its storage worker joins it), as under systemd or docker.
        self.process = subprocess.Popen(
            [*COMMAND, "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        url = f"https://127.0.0.1:{self.http_port}/healthz"
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise AssertionError(f"openmss serve exited with {code} before it was healthy\n{self.logs()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0, context=_LOOPBACK_TLS) as reply:
                    if reply.status == 200:
                        return
                    last = f"HTTP {reply.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"openmss serve not healthy after {timeout} s ({last})\n{self.logs()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or the OOM killer."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 10.0, *, group: bool = False) -> int | None:
        """SIGTERM (a clean shutdown), to the server or, with ``group``, to its whole process
        group (as ``systemctl stop`` or ``docker stop`` do), then SIGKILL after ``timeout``;
        the exit status."""
        code: int | None = None
        if self.process is not None:
            if self.process.poll() is None:
                if group:
                    os.killpg(self.process.pid, signal.SIGTERM)
                else:
                    self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            code = self.process.returncode
        self._close_log()
        return code

    def logs(self) -> str:
        parts = []
        for path in self.log_files:
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"----- {path.name} -----\n{text}")
        return "\n".join(parts)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
