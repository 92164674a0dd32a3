"""The national file "Extraction Correspondance MSSanté", read as published.

UTF-8, one header line, 31 columns separated by ``|``, no quoting: a ``"`` inside a field is
just a character, so lines are split on ``|`` and nothing else (a CSV reader with quoting
would swallow the separators that follow a stray quote). The ANS publishes it as a ZIP that
holds one ``Extraction_Correspondance_MSSante_<timestamp>.txt``; data.gouv.fr the text alone.
Both are read as a stream: the ZIP entry is decompressed as it is read, never to disk.

Nothing here touches the database: :func:`read_rows` turns lines into :class:`Row` records,
or :class:`RowError` for a row that cannot be used (with its line number, the header being
line 1); the importer decides what to do with them. A file whose header is not the published
one is refused as a whole (:class:`AnnuaireError`): its columns cannot be trusted.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

HEADER = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
)
COLUMNS = len(HEADER)  # 31
MAILBOX_TYPES = frozenset({"PER", "ORG", "APP", "CAB"})  # TRE_R257-TypeBAL

# The longest value kept for each column (the directory's columns are at least this wide): a
# longer one makes its row unusable, instead of failing the whole import on PostgreSQL.
WIDTHS = (
    (2, 8, "Type Identifiant PP"),
    (3, 72, "Identifiant PP"),
    (4, 80, "Identification nationale PP"),  # type + identifier
    (5, 8, "Type identifiant structure"),
    (6, 72, "Identification Structure"),
    (8, 32, "Civilité d'exercice"),
    (11, 16, "Catégorie profession"),
    (13, 16, "Code Profession"),
    (15, 16, "Code savoir-faire"),
    (22, 32, "L4NUMEROVOIE"),
    (23, 32, "L4COMPLEMENTNUMEROVOIE"),
    (24, 64, "NL4TYPEVOIE"),
    (28, 16, "Code postal"),
    (29, 64, "Département"),
    (30, 64, "Pays"),
)
WIDTH = 255  # every other column (names, labels, address lines)

# Real rows are about 170 bytes; a "line" longer than this is not a row of this file, and
# reading it whole could exhaust memory.
MAX_LINE = 64 * 1024
# The real file is about 90 MB; an entry declaring (or inflating to) more is refused.
MAX_UNCOMPRESSED = 2 * 1024**3

# National ids of professionals: the prefix says which register the identifier comes from.
RPPS_PREFIX, ADELI_PREFIX = "8", "0"
_RPPS = re.compile(r"\d{11}")
_ADELI = re.compile(r"[0-9AB]{9}")  # Corsica's departments (2A, 2B) put letters in ADELI numbers
_ADDRESS = re.compile(r"[^@\s|<>()\[\],;:\"]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_YES = frozenset({"o", "oui", "y", "yes", "1", "true", "vrai"})
_NO = frozenset({"n", "non", "no", "0", "false", "faux"})


class AnnuaireError(ValueError):
    """The file as a whole cannot be read (wrong header, not a ZIP we accept...)."""


class Person(NamedTuple):
    """The professional a mailbox belongs to (columns 3 to 17)."""

    national_id: str | None  # prefix + identifier, e.g. "810102727017"
    id_type: str | None  # the prefix: "8" RPPS, "0" ADELI...
    identifier: str | None
    civility: str | None
    family_name: str | None
    given_name: str | None
    category_code: str | None
    category_label: str | None
    profession_code: str | None
    profession_label: str | None
    specialty_code: str | None
    specialty_label: str | None


class Structure(NamedTuple):
    """The organisation a mailbox is attached to, and its postal address (columns 6, 7, 19-31)."""

    id_type: str | None
    identifier: str | None
    name: str | None
    trade_name: str | None
    complement_location: str | None
    complement_distribution: str | None
    street_number: str | None
    street_number_complement: str | None
    street_type: str | None
    street_name: str | None
    locality: str | None
    routing_line: str | None
    postcode: str | None
    department: str | None
    country: str | None

    @property
    def national_id(self) -> str | None:
        """The type code as published followed by the identifier: what tells two structures
        apart across imports (TRE_G07 codes, e.g. "1" for FINESS, as far as we know)."""
        if self.identifier is None:
            return None
        return (self.id_type or "") + self.identifier

    @property
    def town(self) -> str | None:
        """The town of the routing line ("75013 PARIS" gives "PARIS")."""
        line = self.routing_line
        if line is None:
            return None
        head, _, rest = line.partition(" ")
        if rest and head.isdigit() and len(head) == 5:
            return rest.strip() or None
        return line


class Row(NamedTuple):
    line: int
    kind: str  # PER, ORG, APP, CAB
    address: str  # lower-cased
    person: Person | None  # None when the row names nobody (ORG rows)
    structure: Structure | None
    service: str | None
    accepts_documents: bool | None  # "Dématérialisation"; None when empty or not understood


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class _Invalid(ValueError):
    pass


def _header_key(name: str) -> str:
    # Compare headers without caring for case, accents or spacing: a re-saved file may differ
    # there, while a renamed or moved column must still be refused.
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


_EXPECTED = tuple(_header_key(name) for name in HEADER)


def check_header(line: str) -> None:
    fields = _split(line.lstrip("\ufeff").rstrip("\r\n"))
    if len(fields) != COLUMNS:
        raise AnnuaireError(f"line 1: the header has {len(fields)} columns, the published file has {COLUMNS}")
    for index, (got, expected) in enumerate(zip(fields, _EXPECTED, strict=True)):
        if _header_key(got) != expected:
            raise AnnuaireError(
                f"line 1: column {index + 1} is {got.strip()!r}, the published file has {HEADER[index]!r}"
            )


def _split(line: str) -> list[str]:
    fields = line.split("|")
    # Some extractions end every line with the separator: one empty field too many.
    if len(fields) == COLUMNS + 1 and not fields[-1].strip():
        fields.pop()
    return fields


def _flag(value: str | None) -> bool | None:
    value = (value or "").casefold()
    if value in _YES:
        return True
    if value in _NO:
        return False
    return None


def _person(v: list[str | None]) -> Person | None:
    """Columns 3 to 17 (``v``: the row's stripped fields, None when empty)."""
    id_type, identifier, national = v[2], v[3], v[4]
    if national is None and identifier is None:
        id_type = None  # a type alone identifies nobody
    elif national is None and identifier is not None:
        if id_type is None:
            raise _Invalid("'Identifiant PP' without 'Type Identifiant PP' nor national id")
        national = id_type + identifier
    elif national is not None:
        if id_type is None:
            id_type = national[0]
        if identifier is None:
            identifier = national[len(id_type) :]
        if national != id_type + identifier:
            raise _Invalid(f"national id {national!r} is not {id_type!r} + {identifier!r}")
    if id_type == RPPS_PREFIX and not _RPPS.fullmatch(identifier or ""):
        raise _Invalid(f"RPPS number {identifier!r} is not 11 digits")
    if id_type == ADELI_PREFIX and not _ADELI.fullmatch(identifier or ""):
        raise _Invalid(f"ADELI number {identifier!r} is not 9 characters")
    if national is None and v[9] is None and v[10] is None:
        return None  # an ORG, APP... row: nobody named (a bare profession code is not a person)
    return Person(national, id_type, identifier, *v[8:17])


def _structure(v: list[str | None]) -> Structure | None:
    if v[6] is None and not any(v[18:31]):
        return None  # a type alone says nothing
    return Structure(v[5], v[6], *v[18:31])


def _too_long(v: list[str | None], line_length: int) -> str | None:
    for index, width, name in WIDTHS:
        value = v[index]
        if value is not None and len(value) > width:
            return f"'{name}' longer than {width} characters"
    if line_length > WIDTH:  # only then can a wide column overflow
        for index, value in enumerate(v):
            if value is not None and len(value) > WIDTH and index != 1:
                return f"'{HEADER[index]}' longer than {WIDTH} characters"
    return None


def parse_row(line: str, number: int) -> Row | RowError:
    """One data line (without its end of line) as a record, or why it cannot be used."""
    fields = _split(line)
    if len(fields) != COLUMNS:
        return RowError(number, f"{len(fields)} columns, expected {COLUMNS}")
    # One pass over the fields (half a million rows): stripped, None when empty.
    v = [field.strip() or None for field in fields]
    kind = (v[0] or "").upper()
    if kind not in MAILBOX_TYPES:
        return RowError(number, f"unknown mailbox type {v[0] or ''!r}")
    address = (v[1] or "").lower()
    if len(address) > 320 or not _ADDRESS.fullmatch(address) or "." not in address.rpartition("@")[2]:
        return RowError(number, f"invalid mailbox address {v[1] or ''!r}")
    too_long = _too_long(v, len(line))
    if too_long:
        return RowError(number, too_long)
    try:
        person = _person(v)
    except _Invalid as exc:
        return RowError(number, str(exc))
    return Row(number, kind, address, person, _structure(v), v[7], _flag(v[17]))


def read_rows(lines: Iterable[str | bytes]) -> Iterator[Row | RowError]:
    """The records of a file given line by line (text, or bytes decoded as UTF-8 line by line
    so that one badly encoded row is reported instead of stopping the import). Blank lines
    are ignored. Raises :class:`AnnuaireError` when the header is not the published one."""
    numbered = enumerate(lines, start=1)
    first = next(numbered, None)
    if first is None:
        raise AnnuaireError("the file is empty (not even a header)")
    header = first[1]
    if isinstance(header, bytes):
        try:
            header = header.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise AnnuaireError("line 1: the header is not UTF-8") from None
    check_header(header)
    for number, raw in numbered:
        if isinstance(raw, bytes):
            if len(raw) > MAX_LINE:
                yield RowError(number, f"longer than {MAX_LINE} bytes")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RowError(number, f"not UTF-8 (byte {exc.start + 1})")
                continue
        else:
            text = raw
        text = text.rstrip("\r\n")
        if text.strip():
            yield parse_row(text, number)


def _bounded_lines(stream: BinaryIO, limit: int = MAX_UNCOMPRESSED) -> Iterator[bytes]:
    """The lines of ``stream``, each cut at ``MAX_LINE`` (the rest of an over-long line is
    skipped, and the line still reported as too long), refusing more than ``limit`` bytes.
    A damaged ZIP shows only while it is read (CRC, truncated data): that refuses the file."""
    total = 0
    try:
        while True:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                return
            total += len(line)
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                while True:  # drain the rest of this line without keeping it
                    more = stream.readline(MAX_LINE)
                    total += len(more)
                    if not more or more.endswith(b"\n"):
                        break
            if total > limit:
                raise AnnuaireError(f"more than {limit} bytes of text: not the national file")
            yield line
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise AnnuaireError(f"damaged ZIP: {exc}") from None


def _zip_entry(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    entries = [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and info.filename.rsplit("/", 1)[-1].lower().endswith((".txt", ".csv"))
    ]
    named = [e for e in entries if "extraction_correspondance_mssante" in e.filename.lower()]
    if len(named) == 1:
        return named[0]
    if len(entries) != 1:
        names = ", ".join(e.filename for e in entries) or "none"
        raise AnnuaireError(f"the ZIP should hold one .txt file, it holds: {names}")
    return entries[0]


@contextmanager
def open_annuaire(path: str | Path) -> Iterator[Iterator[bytes]]:
    """The lines of the file at ``path``: the text as published, or the ZIP holding it."""
    path = Path(path)
    with path.open("rb") as raw:
        if not zipfile.is_zipfile(raw):
            raw.seek(0)
            yield _bounded_lines(raw)
            return
        raw.seek(0)
        try:
            archive = zipfile.ZipFile(raw)
        except zipfile.BadZipFile as exc:
            raise AnnuaireError(f"not a readable ZIP: {exc}") from None
        with archive:
            entry = _zip_entry(archive)
            if entry.file_size > MAX_UNCOMPRESSED:
                raise AnnuaireError(
                    f"{entry.filename} would inflate to {entry.file_size} bytes: refused (zip bomb?)"
                )
            # The declared size bounds what zipfile returns, and _bounded_lines counts anyway.
            with archive.open(entry) as member, io.BufferedReader(member, 1 << 20) as buffered:  # type: ignore[type-var]
                yield _bounded_lines(buffered, min(entry.file_size, MAX_UNCOMPRESSED))
