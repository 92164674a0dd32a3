"""``openmss account app-password | password | key``, run as real processes."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest
from gnupg import GnuPG
from test_cli import _env, _run

from openmss.accounts import Accounts
from openmss.settings import Settings

from servers import pg_database_url

PASSWORD = "mot de passe du compte"


@pytest.fixture
async def cli_env(tmp_path: Path) -> dict[str, str]:
    # Cheap argon2id for the keys: each command derives keys more than once.
    return _env(
        tmp_path / "data",
        await pg_database_url("cli"),
        OPENMSS_KEY_KDF_MEMORY_KIB="1024",
        OPENMSS_KEY_KDF_TIME_COST="1",
        OPENMSS_KEY_KDF_PARALLELISM="1",
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _unlock(env: dict[str, str], address: str, password: str) -> bool:
    """Whether ``password`` opens the account's keys (through the same service the CLI uses)."""
    from openmss.cli import _accounts
    from openmss.keyring.store import Locked

    settings = Settings(
        data_dir=Path(env["OPENMSS_DATA_DIR"]), database_url=env["OPENMSS_DATABASE_URL"], domains=["cli.test"]
    )
    async with _accounts(settings) as accounts:
        assert isinstance(accounts, Accounts)
        try:
            chain = await accounts.unlock_address(address, password)
        except Locked:
            return False
        return len(chain.secrets) >= 1


async def test_app_passwords_from_the_cli(cli_env):
    _ok(_run(cli_env, "account", "add", "dr.a@cli.test", stdin=PASSWORD + "\n"))
    refused = _run(cli_env, "account", "app-password", "dr.a@cli.test", stdin="wrong\n")
    assert refused.returncode == 1 and "wrong" in refused.stderr
    out = _ok(
        _run(
            cli_env,
            "account",
            "app-password",
            "dr.a@cli.test",
            "--label",
            "Thunderbird",
            stdin=PASSWORD + "\n",
        )
    )
    [app_password] = re.findall(r"^[a-z2-9]{5}(?:-[a-z2-9]{5}){3}$", out, re.M)
    listed = _ok(_run(cli_env, "account", "app-password", "dr.a@cli.test", "--list"))
    assert "Thunderbird" in listed and app_password not in listed
    app_id = listed.split("\t", 1)[0]
    assert await _unlock(cli_env, "dr.a@cli.test", app_password)
    _ok(_run(cli_env, "account", "app-password", "dr.a@cli.test", "--revoke", app_id))
    assert not await _unlock(cli_env, "dr.a@cli.test", app_password)
    assert "no app passwords" in _ok(_run(cli_env, "account", "app-password", "dr.a@cli.test", "--list"))
    gone = _run(cli_env, "account", "app-password", "dr.a@cli.test", "--revoke", app_id)
    assert gone.returncode == 1


async def test_password_change_from_the_cli(cli_env):
    _ok(_run(cli_env, "account", "add", "dr.b@cli.test", stdin=PASSWORD + "\n"))
    wrong = _run(cli_env, "account", "password", "dr.b@cli.test", stdin="nope\nnouveau secret 123\n")
    assert wrong.returncode == 1
    _ok(_run(cli_env, "account", "password", "dr.b@cli.test", stdin=f"{PASSWORD}\nnouveau secret 123\n"))
    assert await _unlock(cli_env, "dr.b@cli.test", "nouveau secret 123")
    assert not await _unlock(cli_env, "dr.b@cli.test", PASSWORD)


async def test_own_key_from_the_cli(cli_env, tmp_path):
    gpg = GnuPG(tmp_path / "gnupg")
    _ok(_run(cli_env, "account", "add", "dr.c@cli.test", stdin=PASSWORD + "\n"))
    public = tmp_path / "dr.c.pub"
    public.write_bytes(await asyncio.to_thread(gpg.generate, "dr.c@cli.test"))
    out = _ok(_run(cli_env, "account", "key", "dr.c@cli.test", str(public)))
    assert "own key" in out
    other = tmp_path / "other.pub"
    other.write_bytes(await asyncio.to_thread(gpg.generate, "someone@else.test"))
    refused = _run(cli_env, "account", "key", "dr.c@cli.test", str(other))
    assert refused.returncode == 1 and "no user ID for dr.c@cli.test" in refused.stderr


async def test_lost_password_recovered_with_the_escrow_key(cli_env, tmp_path):
    gpg = GnuPG(tmp_path / "gnupg")
    escrow_public = tmp_path / "escrow.pub"
    escrow_public.write_bytes(await asyncio.to_thread(gpg.generate, "escrow@operator.test"))
    escrow_secret = tmp_path / "escrow.sec"
    escrow_secret.write_bytes(
        (await asyncio.to_thread(gpg.run, "--export-secret-keys", "escrow@operator.test")).stdout
    )
    # An account made before the escrow key was configured cannot be recovered.
    _ok(_run(cli_env, "account", "add", "early@cli.test", stdin=PASSWORD + "\n"))
    with_escrow = {**cli_env, "OPENMSS_ESCROW_KEY_FILE": str(escrow_public)}
    _ok(_run(with_escrow, "account", "add", "dr.d@cli.test", stdin=PASSWORD + "\n"))
    _ok(_run(with_escrow, "account", "app-password", "dr.d@cli.test", stdin=PASSWORD + "\n"))
    before = await _fingerprints(cli_env, "dr.d@cli.test", PASSWORD)

    recover = ("account", "recover", "--escrow-secret-key", str(escrow_secret))
    refused = _run(cli_env, *recover, "early@cli.test", stdin="un nouveau mot de passe\n")
    assert refused.returncode == 1 and "without an escrow key" in refused.stderr
    wrong_key = tmp_path / "wrong.sec"
    await asyncio.to_thread(gpg.generate, "other@operator.test")
    wrong_key.write_bytes(
        (await asyncio.to_thread(gpg.run, "--export-secret-keys", "other@operator.test")).stdout
    )
    refused = _run(
        cli_env,
        "account",
        "recover",
        "--escrow-secret-key",
        str(wrong_key),
        "dr.d@cli.test",
        stdin="x" * 12 + "\n",
    )
    assert refused.returncode == 1 and "does not open" in refused.stderr

    _ok(_run(cli_env, *recover, "dr.d@cli.test", stdin="un nouveau mot de passe\n"))
    assert await _fingerprints(cli_env, "dr.d@cli.test", "un nouveau mot de passe") == before
    assert not await _unlock(cli_env, "dr.d@cli.test", PASSWORD)
    assert "no app passwords" in _ok(_run(cli_env, "account", "app-password", "dr.d@cli.test", "--list"))


async def _fingerprints(env: dict[str, str], address: str, password: str) -> list[str]:
    from openmss.cli import _accounts

    settings = Settings(
        data_dir=Path(env["OPENMSS_DATA_DIR"]), database_url=env["OPENMSS_DATABASE_URL"], domains=["cli.test"]
    )
    async with _accounts(settings) as accounts:
        return (await accounts.unlock_address(address, password)).fingerprints
