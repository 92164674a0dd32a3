"""``openmss directory import FILE``: the national file (text or ZIP) into the directory.

Kept light at import time (argparse only): ``openmss`` builds its parser for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from directory.importer import ImportSummary
    from openmss.settings import Settings

SHOWN = 50  # problems printed one by one; the rest are counted


def add_parser(sub: Any) -> None:
    """Register ``directory import`` on the ``openmss`` sub-parsers (``sub``)."""
    directory = sub.add_parser("directory", help="the professional directory")
    actions = directory.add_subparsers(dest="action", required=True)
    command = actions.add_parser(
        "import", help='import the national "Extraction Correspondance MSSanté" file (.txt or .zip)'
    )
    command.add_argument("file", type=Path, help="the .txt (or .csv) as published, or the ZIP holding it")
    command.add_argument(
        "--force", action="store_true", help="apply even if it removes more than half of the mailboxes"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """0 when applied, 1 when refused or failed (nothing applied), 2 when the file is unusable."""
    return asyncio.run(_import(settings, args.file, force=args.force))


async def _import(settings: Settings, path: Path, *, force: bool) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from directory.annuaire import AnnuaireError, open_annuaire
    from directory.importer import ImportRefused, import_file
    from openmss.db.engine import Database
    from openmss.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)

    def work() -> ImportSummary:
        with open_annuaire(path) as lines:
            return import_file(db, lines, actor="cli", force=force)

    try:
        if settings.auto_migrate:
            await upgrade(db)
        summary = await asyncio.to_thread(work)
    except (OSError, AnnuaireError) as exc:
        print(f"error: {path}: {exc}; nothing imported", file=sys.stderr)
        return 2
    except ImportRefused as exc:
        print(f"refused: {exc}; nothing imported", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"error: database: {exc.__class__.__name__}: {exc}; nothing imported", file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    print(report(path, summary))
    return 0


def report(path: Path, s: ImportSummary) -> str:
    """The summary printed after an import."""
    lines = [
        f"imported {path}: {s.rows} rows",
        f"  mailboxes:     {s.mailboxes.added} added, {s.mailboxes.updated} updated, "
        f"{s.mailboxes.removed} removed"
        + (f", {s.unlisted} of ours no longer listed (kept)" if s.unlisted else ""),
        f"  professionals: {s.professionals.added} added, {s.professionals.updated} updated, "
        f"{s.professionals.removed} removed",
        f"  organisations: {s.organisations.added} added, {s.organisations.updated} updated, "
        f"{s.organisations.removed} removed",
        f"  skipped: {s.skipped} row(s) that do not parse",
    ]
    lines += [f"    {error}" for error in s.errors[:SHOWN]]
    if s.skipped > SHOWN:
        lines.append(f"    ... and {s.skipped - SHOWN} more")
    lines.append(f"  duplicates: {s.duplicates} row(s) repeating an address (the first is kept)")
    lines += [
        f"    line {d.line}: {d.address} (first at line {d.first_line})" for d in s.duplicate_rows[:SHOWN]
    ]
    if s.duplicates > SHOWN:
        lines.append(f"    ... and {s.duplicates - SHOWN} more")
    return "\n".join(lines)
