"""Directory mailboxes and local accounts: linked by the import for existing accounts, and by
``openmss account add`` for an address the directory already lists."""

from __future__ import annotations

from pathlib import Path

from annuaire_generator import rows, write
from cli import cli_env, run_cli
from sqlalchemy import select

from directory.tables import DirectoryMailbox
from mailserver.store.tables import Account
from openmss.db.engine import Database

from servers import pg_database_url


async def test_accounts_and_directory_mailboxes_are_linked_whichever_comes_first(tmp_path: Path):
    url = await pg_database_url("dirlinks") or f"sqlite+aiosqlite:///{tmp_path / 'links.sqlite3'}"
    data = list(rows(6, seed=3))
    first, second = data[0][1], data[1][1]  # column 2: the mailbox address
    domains = f'["{first.split("@")[1]}", "{second.split("@")[1]}"]'
    env = cli_env(tmp_path / "data", domains=domains, database_url=url, key_kdf_memory_kib="8192")
    made = run_cli(env, "account", "add", first, stdin="un mot de passe long\n")
    assert made.returncode == 0, made.stderr
    imported = run_cli(env, "directory", "import", str(write(tmp_path / "a.txt", data)))
    assert imported.returncode == 0, imported.stderr
    made = run_cli(env, "account", "add", second, stdin="un autre mot de passe\n")
    assert made.returncode == 0, made.stderr

    db = Database(url)
    try:
        async with db.read() as session:
            accounts = dict((await session.execute(select(Account.address, Account.id))).all())
            links = dict(
                (await session.execute(select(DirectoryMailbox.address, DirectoryMailbox.account_id))).all()
            )
    finally:
        await db.dispose()
    assert links[first] == accounts[first]  # the account existed before the import
    assert links[second] == accounts[second]  # the directory listed it before the account
    assert sorted(a for a, linked in links.items() if linked is not None) == sorted([first, second])
