"""Publication of our accounts' keys (WKD and HKP) through the real HTTPS port, read with the
real ``curl`` and checked with the real ``gpg``."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pysequoia as sq
import pytest
from sqlalchemy import select, update

from directory.wkd import wkd_hash
from mailserver.store.tables import Account
from openmss.keyring.tables import AccountKey

WK = "/.well-known/openpgpkey"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@pytest.fixture
def curl(server, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``curl`` against the server's HTTPS port, trusting its CA (no ``-k``)."""
    binary = shutil.which("curl")
    if binary is None:
        pytest.skip("curl is not installed")
    out = tmp_path / "curl"
    out.mkdir()

    async def get(
        path: str, *, host: str | None = None, method: str = "GET", data: str | None = None
    ) -> Reply:
        args = [binary, "-sS", "--max-time", "10", "--cacert", str(server.ca)]
        args += ["-o", str(out / "body"), "-D", str(out / "headers"), "-w", "%{http_code}"]
        if method == "HEAD":
            args.append("-I")
        elif method != "GET":
            args += ["-X", method]
        if data is not None:
            args += ["--data", data]
        if host is not None:
            args += ["-H", f"Host: {host}"]
        args.append(server.http_base + path)
        # The server runs on this event loop: never block it while curl talks to it.
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        headers: dict[str, str] = {}
        for line in (out / "headers").read_text("latin-1").splitlines()[1:]:
            name, _, value = line.partition(":")
            if value:
                headers[name.strip().lower()] = value.strip()
        body = (out / "body").read_bytes() if (out / "body").exists() else b""
        if method == "HEAD":  # with -I, curl writes the headers where the body would go
            body = body.split(b"\r\n\r\n", 1)[1]
        (out / "body").unlink(missing_ok=True)
        return Reply(int(stdout.decode()), headers, body)

    return get


@pytest.fixture
def gpg(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``gpg`` in a throw-away home: import, then list a key in colon format."""
    binary = shutil.which("gpg")
    if binary is None:
        pytest.skip("gpg is not installed")
    count = 0

    async def run(*args: str, stdin: bytes = b"", home: Path | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--batch",
            "--no-autostart",
            "--homedir",
            str(home),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate(stdin)
        return proc.returncode or 0, stdout.decode() + stderr.decode()

    async def import_and_list(data: bytes, address: str) -> str:
        nonlocal count
        count += 1
        home = tmp_path / f"gnupg{count}"
        home.mkdir(mode=0o700)
        code, output = await run("--import", stdin=data, home=home)
        assert code == 0, output
        code, listing = await run("--with-colons", "--list-keys", address, home=home)
        assert code == 0, listing
        return listing

    return import_and_list


async def _current_fingerprint(server, address: str) -> str:  # type: ignore[no-untyped-def]
    async with server.runtime.db.read() as session:
        fpr = await session.scalar(
            select(AccountKey.fingerprint)
            .join(Account, Account.id == AccountKey.account_id)
            .where(Account.address == address, AccountKey.current.is_(True))
        )
    assert fpr
    return str(fpr)


def _fingerprints(listing: str) -> list[str]:
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]


def _error(reply: Reply, status: int) -> str:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert isinstance(body, dict) and set(body) == {"error"}
    return str(body["error"])


async def test_wkd_advanced_and_direct_methods_serve_a_key_gpg_imports(server, curl, gpg):
    alice = (await server.add_account("Alice.Martin")).lower()  # stored lower-cased
    fpr = await _current_fingerprint(server, alice)
    h = wkd_hash("alice.martin")

    advanced = await curl(f"{WK}/a.test/hu/{h}?l=Alice.Martin")
    assert advanced.status == 200
    assert advanced.headers["content-type"] == "application/octet-stream"
    assert advanced.headers["access-control-allow-origin"] == "*"
    assert not advanced.body.startswith(b"-----BEGIN")  # binary, not armoured (§3.1)
    listing = await gpg(advanced.body, alice)
    assert _fingerprints(listing)[0] == fpr
    assert f"<{alice}>" in listing

    # Direct method: the domain is the Host of the request.
    direct = await curl(f"{WK}/hu/{h}?l=alice.martin", host="a.test")
    assert direct.status == 200 and direct.body == advanced.body
    assert direct.headers["access-control-allow-origin"] == "*"
    # A Host that is an IP address: the only domain served is meant.
    assert (await curl(f"{WK}/hu/{h}")).body == advanced.body
    # Without l: the domain's accounts are hashed.
    assert (await curl(f"{WK}/a.test/hu/{h}")).body == advanced.body
    # HEAD answers the same headers without the body (existence check).
    head = await curl(f"{WK}/a.test/hu/{h}?l=alice.martin", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(advanced.body))


async def test_wkd_policy_and_errors(server, curl):
    await server.add_account("bob")
    for path, host in ((f"{WK}/a.test/policy", None), (f"{WK}/policy", "a.test"), (f"{WK}/policy", None)):
        policy = await curl(path, host=host)
        assert policy.status == 200 and policy.body == b""
        assert policy.headers["access-control-allow-origin"] == "*"

    unknown_domain = await curl(f"{WK}/b.test/policy")
    assert "b.test" in _error(unknown_domain, 404)
    assert unknown_domain.headers["access-control-allow-origin"] == "*"
    _error(await curl(f"{WK}/policy", host="b.test:443"), 404)
    _error(await curl(f"{WK}/b.test/hu/{wkd_hash('bob')}?l=bob"), 404)
    _error(await curl(f"{WK}/hu/{wkd_hash('bob')}?l=bob", host="elsewhere.example"), 404)

    nobody = await curl(f"{WK}/a.test/hu/{wkd_hash('nobody')}?l=nobody")
    assert _error(nobody, 404) == "no key for this address"
    assert nobody.headers["access-control-allow-origin"] == "*"
    _error(await curl(f"{WK}/a.test/hu/{wkd_hash('nobody')}"), 404)
    assert "does not hash" in _error(await curl(f"{WK}/a.test/hu/{wkd_hash('bob')}?l=alice"), 400)
    _error(await curl(f"{WK}/a.test/hu/not-a-hash"), 404)
    _error(await curl(f"{WK}/a.test/submission-address"), 404)


async def test_wkd_hides_disabled_accounts_and_other_user_ids(server, curl):
    carol = await server.add_account("carol")
    # Carol brings her own key, which also names a personal address.
    tsk = sq.Tsk.generate(
        user_ids=[f"Carol <{carol}>", "Carol perso <carol@perso.example>"],
        profile=sq.Profile.RFC4880,
        cipher_suite=sq.CipherSuite.Cv25519,
    )
    own = tsk.extract_certificate()
    await server.runtime.accounts.set_own_key(carol, bytes(own), actor="test")
    reply = await curl(f"{WK}/a.test/hu/{wkd_hash('carol')}?l=carol")
    assert reply.status == 200
    published = sq.Cert.from_bytes(reply.body)
    assert published.fingerprint == own.fingerprint
    assert [str(uid) for uid in published.user_ids] == [f"Carol <{carol}>"]  # the personal one stays private

    async with server.runtime.db.transaction() as session:
        await session.execute(update(Account).where(Account.address == carol).values(disabled=True))
    _error(await curl(f"{WK}/a.test/hu/{wkd_hash('carol')}?l=carol"), 404)
    _error(await curl(f"/pks/lookup?op=get&search={carol}"), 404)


async def test_hkp_get_and_index(server, curl, gpg):
    elodie = f"elodie@{server.domain}"
    await server.runtime.accounts.create(elodie, "correct horse battery", "Dr Élodie: Test", actor="test")
    fpr = await _current_fingerprint(server, elodie)

    for search in (elodie, f"<{elodie.upper()}>", f"0x{fpr}", f"0x{fpr[-16:]}", f"0x{fpr[-8:].lower()}"):
        reply = await curl(f"/pks/lookup?op=get&options=mr&search={quote(search)}")
        assert reply.status == 200, (search, reply.body)
        assert reply.headers["content-type"] == "application/pgp-keys"
        assert reply.body.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    listing = await gpg(reply.body, elodie)
    assert _fingerprints(listing)[0] == fpr

    index = await curl(f"/pks/lookup?op=index&options=mr&search={elodie}")
    assert index.status == 200 and index.headers["content-type"].startswith("text/plain")
    lines = index.body.decode("ascii").splitlines()
    assert lines[0] == "info:1:1"
    # pub:<fingerprint>:<algo>:<keylen>:<creationdate>:<expirationdate>:<flags> (§5.2);
    # our keys are EdDSA (22) on Ed25519 (255 bits, as GnuPG counts) and do not expire.
    assert re.fullmatch(rf"pub:{fpr}:22:255:\d{{10}}::", lines[1]), lines[1]
    # uid:<escaped uid string>:<creationdate>:<expirationdate>:<flags>; ':' and non-ASCII escaped.
    assert re.fullmatch(r"uid:Dr %C3%89lodie%3A Test <elodie@a\.test>:\d{10}::", lines[2]), lines[2]
    assert len(lines) == 3


async def test_hkp_errors(server, curl):
    await server.add_account("dan")
    assert "'op'" in _error(await curl("/pks/lookup?search=dan@a.test"), 400)
    assert "not implemented" in _error(await curl("/pks/lookup?op=vindex&search=dan@a.test"), 501)
    _error(await curl("/pks/lookup?op=x-stats"), 501)
    assert "'search'" in _error(await curl("/pks/lookup?op=get"), 400)
    _error(await curl("/pks/lookup?op=get&search=Dan"), 400)
    _error(await curl("/pks/lookup?op=get&search=0x1234"), 400)
    _error(await curl("/pks/lookup?op=get&search=nobody@a.test"), 404)
    assert "a.test" in _error(await curl("/pks/lookup?op=get&search=dan@b.test"), 404)
    _error(await curl("/pks/lookup?op=index&search=0x" + "AB" * 20), 404)
    _error(await curl("/pks/add", method="POST", data="keytext=x"), 501)
