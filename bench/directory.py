#!/usr/bin/env python
"""Directory benchmark: import of the national file at its real size (535,000 rows).

A file in the exact published format is generated (``tests/directory/annuaire_generator.py``:
accents, ORG rows naming nobody, shared structures, a few duplicate addresses and broken rows)
into a temporary folder, with a fresh database (SQLite there, or the PostgreSQL database of
``--database-url``, whose ``public`` schema is wiped). The schema is created first
(``openmss db upgrade``, not measured); then ``openmss directory import FILE`` runs as a
separate process, twice:

1. the first import, into the empty directory;
2. a re-import of the next day's file: 0.5 % of the mailboxes gone, 1 % with another service,
   1 % of the professionals renamed, 2,000 new mailboxes.

For each, the wall-clock seconds and the peak resident memory of the importing process
(``ru_maxrss`` from ``wait4``) are printed, against the targets (under 120 s, under 500 MB).
Then the directory search is measured on the result, through a real server (``bench_search``).

    .venv/bin/python bench/directory.py                      # 535,000 rows, SQLite
    .venv/bin/python bench/directory.py --rows 50000         # quicker
    .venv/bin/python bench/directory.py --zip                # the ZIP as the ANS publishes it
    .venv/bin/python bench/directory.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/openmss_bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repository before bench/ (this file is called directory.py: it must not shadow the package),
# then the test generator; bench/smtp.py for the helpers the benchmarks share.
_HERE = Path(__file__).resolve().parent
sys.path[:] = (
    [str(ROOT / "tests" / "directory")]
    + [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    + [str(ROOT), str(_HERE)]
)

import annuaire_generator as generator  # noqa: E402
from smtp import free_port, reset_postgres  # noqa: E402

TARGET_SECONDS = 120.0
TARGET_MIB = 500.0
_OPENMSS_BIN = Path(sys.executable).with_name("openmss")
OPENMSS = [str(_OPENMSS_BIN)] if _OPENMSS_BIN.exists() else [sys.executable, "-m", "openmss.cli"]


@dataclass
class Run:
    seconds: float
    peak_mib: float
    output: str


def openmss_env(data_dir: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMSS_")}
    env.update(OPENMSS_DATA_DIR=str(data_dir), OPENMSS_DATABASE_URL=database_url, OPENMSS_LOG_LEVEL="WARNING")
    return env


def run_measured(argv: list[str], env: dict[str, str], log: Path) -> Run:
    """Run a command; its wall time and peak RSS (``wait4``: that process alone)."""
    with log.open("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} exited with {process.returncode}:\n{output}")
    return Run(seconds, usage.ru_maxrss / 1024, output)  # ru_maxrss is in KiB on Linux


def next_day(count: int, seed: int) -> Iterator[list[str]]:
    """The same file a day later: some mailboxes gone, some changed, some new."""
    added = 2000
    for i, fields in enumerate(generator.rows(count + added, seed, structures=max(1, count // 6))):
        if i < count and i % 200 == 0:
            continue  # gone
        if i % 100 == 1:
            fields[7] = "Service réorganisé"
        if i % 100 == 2 and fields[0] == "PER":
            fields[9] = fields[9] + "-ÉPOUSE"
        yield fields


SEARCH_TARGET_MS = 50.0


def _search_queries(count: int, seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A few hundred varied ``/directory/search`` queries (name prefixes as people type
    them, without accents or in capitals, alone or with filters, some page-walks) and FHIR
    Practitioner searches (family, identifier with and without its system, mailbox)."""
    import random

    rng = random.Random(seed)
    names = sorted({generator._ascii(name).replace("-", " ") for name in generator.FAMILY})
    places = ["Centre", "Clinique", "Pharmacie", "EHPAD", "Cabinet medical"]
    directory: list[dict[str, str]] = []
    for name in names:
        for length in (3, 5, len(name)):
            directory.append({"q": name[:length]})
        directory.append({"q": name.upper(), "profession": rng.choice(["10", "21", "60"])})
        directory.append({"q": name[:4], "postcode": rng.choice(["75", "13005", "69003", "33"])})
        directory.append({"q": name, "town": rng.choice(["paris", "lyon", "saint denis"]), "kind": "PER"})
        directory.append({"q": name, "profession": "10", "specialty": "SM26"})
        directory.append({"q": name[:4], "given": rng.choice(["jean", "marie", "helene", "lo"])})
    for place in places:
        directory.append({"q": place, "kind": "ORG"})
        directory.append({"q": place, "postcode": "75"})
    directory.append({"q": "zzz"})  # nothing
    rows = [fields for i, fields in enumerate(generator.rows(min(count, 20_000), seed)) if i % 200]
    people = [fields for fields in rows if fields[0] == "PER"]
    fhir: list[dict[str, str]] = []
    for name in names:
        fhir.append({"family": name[:5]})
    for fields in rng.sample(people, 40):
        fhir.append({"identifier": f"urn:oid:1.2.250.1.71.4.2.1|{fields[4]}"})
        fhir.append({"identifier": fields[3]})
        fhir.append({"mailbox-mss": fields[1]})
    rng.shuffle(directory)
    rng.shuffle(fhir)
    return directory, fhir


def _percentiles(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    ok = at(0.99) < SEARCH_TARGET_MS
    print(
        f"{name:<22} {len(ordered):4d} requests   p50 {at(0.50):6.1f} ms   p99 {at(0.99):6.1f} ms   "
        f"max {ordered[-1] * 1000:6.1f} ms   (target p99 < {SEARCH_TARGET_MS:.0f} ms: "
        f"{'ok' if ok else 'MISSED'})"
    )


def bench_search(env: dict[str, str], workdir: Path, count: int, seed: int) -> None:
    """The directory search on the imported rows, through a real server (``openmss serve``,
    HTTPS, one client, sequential requests on one kept-alive connection, as a webmail's
    back-end would): ``/directory/search`` (every page of some searches, following ``next``)
    and FHIR ``/fhir/Practitioner`` searches. Latency is measured at the client. The search
    is opened to anonymous clients for the run (``directory_search_auth = false``): HTTP Basic
    costs an argon2id verification per request, a cost of the login, not of the search."""
    import ssl

    import httpx

    directory_queries, fhir_queries = _search_queries(count, seed)
    ports = {
        name: str(free_port()) for name in ("SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "HTTP")
    }
    server_env = {
        **env,
        **{f"OPENMSS_{name}_PORT": port for name, port in ports.items()},
        "OPENMSS_DIRECTORY_SEARCH_AUTH": "false",
    }
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen([*OPENMSS, "serve"], env=server_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{ports['HTTP']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            # The CA appears when the server starts (generated on first start).
            ca = workdir / "data" / "tls" / "ca.pem"
            context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else None
            try:
                if context is None:
                    raise OSError("no CA yet")
                context.check_hostname = False  # the local certificate names the mail host
                with httpx.Client(base_url=base, verify=context) as probe:
                    if probe.get("/healthz").status_code in (200, 503):
                        break
            except (httpx.HTTPError, OSError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: openmss serve did not start: see {workdir / 'serve.log'}")
            time.sleep(0.2)
        assert context is not None
        with httpx.Client(base_url=base, verify=context, timeout=30) as client:

            def get(path: str, params: dict[str, str] | None = None) -> tuple[float, httpx.Response]:
                started = time.perf_counter()
                reply = client.get(path, params=params)
                elapsed = time.perf_counter() - started
                if reply.status_code != 200:
                    raise SystemExit(f"error: {reply.request.url} answered {reply.status_code}: {reply.text}")
                return elapsed, reply

            for query in directory_queries[:20]:  # warm-up: the page cache, the statements
                get("/directory/search", query)
            searches: list[float] = []
            hits = 0
            for number, query in enumerate(directory_queries):
                params = dict(query)
                pages = 5 if number % 10 == 0 else 1  # every tenth: walk five pages
                for _ in range(pages):
                    elapsed, reply = get("/directory/search", params)
                    searches.append(elapsed)
                    body = reply.json()
                    hits += len(body["results"])
                    if not body["next"]:
                        break
                    params["cursor"] = body["next"]
            fhir_times: list[float] = []
            for query in fhir_queries:
                elapsed, reply = get("/fhir/Practitioner", query)
                fhir_times.append(elapsed)
                next_links = [link for link in reply.json().get("link", []) if link["relation"] == "next"]
                if "family" in query and next_links:  # and the second page
                    elapsed, reply = get(next_links[0]["url"].removeprefix(base))
                    fhir_times.append(elapsed)
        print(f"search: {len(directory_queries)} queries ({hits} results), {len(fhir_queries)} FHIR searches")
        _percentiles("/directory/search", searches)
        _percentiles("/fhir/Practitioner", fhir_times)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def report(name: str, run: Run) -> None:
    ok = run.seconds < TARGET_SECONDS and run.peak_mib < TARGET_MIB
    print(
        f"{name:<12} {run.seconds:7.1f} s   peak RSS {run.peak_mib:6.0f} MiB   "
        f"(targets < {TARGET_SECONDS:.0f} s, < {TARGET_MIB:.0f} MB: {'ok' if ok else 'MISSED'})"
    )
    for line in run.output.splitlines()[1:5]:
        print(f"             {line.strip()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=535_000, help="rows of the generated file")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--zip", action="store_true", help="import the file inside a ZIP, as the ANS publishes it")
    p.add_argument("--database-url", default="", help="PostgreSQL URL (its public schema is wiped!)")
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary folder goes")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()
    if args.database_url and not args.database_url.startswith("postgresql+asyncpg://"):
        raise SystemExit("error: --database-url must be a postgresql+asyncpg:// URL (empty means SQLite)")

    workdir = Path(tempfile.mkdtemp(prefix="openmss-bench-directory-", dir=args.workdir))
    try:
        suffix = ".zip" if args.zip else ".txt"
        member = generator.ZIP_MEMBER if args.zip else None
        started = time.perf_counter()
        first = generator.generate(
            workdir / f"day1{suffix}", args.rows, seed=args.seed, duplicates=169, broken=3, zip_member=member
        )
        second = generator.write(workdir / f"day2{suffix}", next_day(args.rows, args.seed), zip_member=member)
        print(
            f"generated {first.rows} + {args.rows + 2000 - args.rows // 200} rows in "
            f"{time.perf_counter() - started:.1f} s ({first.path.stat().st_size / 1e6:.0f} MB{suffix})"
        )
        if args.database_url:
            asyncio.run(reset_postgres(args.database_url))
        env = openmss_env(workdir / "data", args.database_url)
        subprocess.run([*OPENMSS, "db", "upgrade"], env=env, check=True, capture_output=True)
        store = "PostgreSQL" if args.database_url else "SQLite"
        print(f"store: {store}; each import runs as its own process ({' '.join(OPENMSS)} directory import)")
        report(
            "import", run_measured([*OPENMSS, "directory", "import", str(first.path)], env, workdir / "1.log")
        )
        report(
            "re-import", run_measured([*OPENMSS, "directory", "import", str(second)], env, workdir / "2.log")
        )
        bench_search(env, workdir, args.rows, args.seed)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
