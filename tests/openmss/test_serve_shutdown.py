"""``openmss serve`` stopped the way service managers stop it: SIGTERM to its whole process
group (``systemctl stop``, ``docker stop``, ``kill -- -PGID``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from processes import ServerProcess, openmss_env
from servers import pg_database_url


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


async def test_sigterm_to_the_group_is_a_clean_stop(tmp_path: Path) -> None:
    database_url = await pg_database_url("shutdown")
    await asyncio.to_thread(_sigterm_the_group, tmp_path, database_url)


def _sigterm_the_group(tmp_path: Path, database_url: str | None) -> None:
    server = ServerProcess(
        openmss_env(tmp_path / "data", domain="stop.test", database_url=database_url), tmp_path
    )
    server.start()
    assert server.process is not None
    pgid = server.process.pid
    assert len(_group_members(pgid)) >= 2  # the server and its storage worker process
    code = server.stop(group=True)
    logs = server.logs()
    assert code == 0, logs
    # The storage worker outlived the signal and left when the server told it to: no error,
    # no worker started again in the middle of the shutdown.
    assert "died" not in logs, logs
    deadline = time.monotonic() + 5
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(pgid) == []
