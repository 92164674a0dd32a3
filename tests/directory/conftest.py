"""Fixtures of the directory's HTTP tests: a directory filled by the importer, and an HTTPS
client authenticated as one of the server's accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_search import PASSWORD, Directory, fill_directory


@pytest.fixture
async def directory(server: Any, tmp_path: Path) -> Directory:
    return await fill_directory(server, tmp_path)


@pytest.fixture
async def http(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    user = await server.add_account("reader", PASSWORD)
    async with httpx.AsyncClient(
        base_url=server.http_base, verify=server.client_tls(), timeout=20, auth=(user, PASSWORD)
    ) as client:
        yield client
