"""Files in the exact format of the national "Extraction Correspondance MSSanté".

Deterministic for a seed, and fast enough for the full size (535,000 rows in a few seconds,
streamed to disk). Rows look like the real ones: PER rows for professionals (RPPS, some
ADELI, accents in names, empty specialty for most non-doctors, some people with two
mailboxes), ORG rows naming nobody, structures shared by many rows, empty address lines, and
a few stray quotes (the file does not use quoting). ``generate`` can add rows repeating an
earlier address and broken rows, at known line numbers.

Used by tests/directory/test_import.py and bench/directory.py.
"""

from __future__ import annotations

import io
import random
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HEADER = (
    "Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|"
    "Type identifiant structure|Identification Structure|Service de rattachement|"
    "Civilité d'exercice|Nom d'exercice|Prénom d'exercice|Catégorie profession|"
    "Libellé de catégorie profession|Code Profession|Libellé Profession|Code savoir-faire|"
    "Libellé savoir-faire|Dématérialisation|Raison Sociale structure BAL|"
    "Enseigne commerciale structure BAL|L2COMPLEMENTLOCALISATION structure BAL|"
    "L3COMPLEMENTDISTRIBUTION structure BAL|L4NUMEROVOIE structure BAL|"
    "L4COMPLEMENTNUMEROVOIE structure BAL|NL4TYPEVOIE structure BAL|L4LIBELLEVOIE structure BAL|"
    "L5LIEUDITMENTION structure BAL|L6LIGNEACHEMINEMENT structure BAL|Code postal structure BAL|"
    "Département structure BAL|Pays structure BAL"
)
ZIP_MEMBER = "Extraction_Correspondance_MSSante_202611240313.txt"

FAMILY = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "García", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Lefebvre", "Mercier", "Dupont",
    "Lambert", "Bonnet", "François", "Martínez", "Légaré", "Éluard", "Lemaître", "Le Bœuf",
    "D'Hérouville", "Nguyễn", "Müller", "Ngô", "Chevalier-Guérin", "Çelik", "Gaëtan", "Noël",
)  # fmt: skip
GIVEN = (
    "Jean", "Marie", "Hélène", "François", "Chloé", "Zoé", "Anaïs", "Jérôme", "Noël",
    "Maëlle", "Loïc", "Cécile", "Benoît", "Agnès", "Inès", "Léa", "Raphaël", "Joël", "Éric",
    "Camille", "Thérèse", "Jean-Pierre", "Marie-Françoise", "Gaëlle", "Ségolène", "Björn",
)  # fmt: skip
# Specialties (TRE_R38) of doctors; PROFESSIONS: TRE_G15 code, label, the specialties that go with it.
DOCTORS = (
    ("SM26", "Qualifié en Médecine Générale"),
    ("SM04", "Cardiologie et maladies vasculaires"),
    ("SM54", "Médecine générale"),
    ("SM42", "Pédiatrie"),
    ("SM40", "Psychiatrie"),
)
PROFESSIONS = (
    ("10", "Médecin", DOCTORS),
    ("21", "Pharmacien", ()),
    ("60", "Infirmier", ()),
    ("40", "Chirurgien-Dentiste", (("SCD01", "Orthopédie dento-faciale"),)),
    ("50", "Sage-Femme", ()),
    ("70", "Masseur-Kinésithérapeute", ()),
)
CIVILITIES = ("DR", "M", "MME", "PR")
TOWNS = (
    ("75013", "PARIS", "75"), ("13005", "MARSEILLE", "13"), ("69003", "LYON", "69"),
    ("31000", "TOULOUSE", "31"), ("06000", "NICE", "06"), ("44000", "NANTES", "44"),
    ("67000", "STRASBOURG", "67"), ("33000", "BORDEAUX", "33"), ("59000", "LILLE", "59"),
    ("25000", "BESANÇON", "25"), ("97400", "SAINT-DENIS", "974"), ("20000", "AJACCIO", "2A"),
    ("63000", "CLERMONT-FERRAND", "63"), ("29200", "BREST", "29"), ("57000", "METZ", "57"),
)  # fmt: skip
KINDS_OF_PLACE = (
    "Centre hospitalier",
    "Clinique",
    "Cabinet médical",
    "Pharmacie",
    "Centre de santé",
    "EHPAD",
)
STREETS = ("de la République", "Victor Hugo", "des Écoles", "du Général Leclerc", "Pasteur", "de l'Église")
STREET_TYPES = ("R", "AV", "BD", "PL", "CHE")
SERVICES = ("Cardiologie", "Urgences", "Secrétariat médical", "Pédiatrie", "Laboratoire", "Imagerie")
DOMAINS = ("medecin.mssante.fr", "pharmacien.mssante.fr", "infirmier.mssante.fr", "mssante.aphp.fr")


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower().replace("œ", "oe"))
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if c.isalnum() else "-" for c in kept).strip("-")


def _mix(value: int) -> int:
    # Cheap deterministic scrambling (Knuth's multiplicative hash): a structure's attributes
    # follow from its number alone, so every row naming it describes it the same way.
    return (value * 2654435761) & 0xFFFFFFFF


def structure(index: int) -> list[str]:
    """Columns 6, 7 and 19 to 31 (in that order) of structure number ``index``."""
    h = _mix(index + 1)
    postcode, town, department = TOWNS[h % len(TOWNS)]
    place = KINDS_OF_PLACE[(h >> 8) % len(KINDS_OF_PLACE)]
    finess = h % 3 != 0
    return [
        "1" if finess else "3",  # FINESS or SIRET
        f"{index + 100000000:09d}" if finess else f"{index + 10000000000000:014d}",
        f"{place} {town.title()} {index}",
        f'Centre "Les Tilleuls" {index}' if h % 17 == 0 else "",  # a stray quote, as in real data
        "Bâtiment B" if h % 5 == 0 else "",
        "BP 42" if h % 11 == 0 else "",
        str(1 + h % 120),
        "BIS" if h % 13 == 0 else "",
        STREET_TYPES[(h >> 4) % len(STREET_TYPES)],
        STREETS[(h >> 12) % len(STREETS)],
        "Lieu-dit Les Églantiers" if h % 23 == 0 else "",
        f"{postcode} {town}",
        postcode,
        department,
        "FRANCE" if h % 7 else "",
    ]


def _row(kind: str, address: str, person: list[str], service: str, demat: str, place: list[str]) -> list[str]:
    # person: type, id, national id, civility, family, given, category, its label, profession,
    # its label, specialty, its label.
    return [kind, address, *person[:3], *place[:2], service, *person[3:], demat, *place[2:]]


def rows(count: int, seed: int = 0, *, structures: int | None = None) -> Iterator[list[str]]:
    """``count`` valid rows with distinct addresses (lists of the 31 fields), drawn among
    ``structures`` structures (default ``count // 6``). For a given seed and structures, row
    ``i`` is the same whatever ``count``: a longer file is the shorter one plus new rows."""
    rng = random.Random(seed)
    structures = structures or max(1, count // 6)
    person: list[str] = []
    for i in range(count):
        place = structure(rng.randrange(structures))
        demat = rng.choice(("O", "O", "N", ""))
        if i % 7 == 6:  # about 80,000 ORG rows in 535,000, like the real file
            service = SERVICES[i % len(SERVICES)]
            address = f"{_ascii(service)}.{i}@{_ascii(place[2].split()[0])}-{place[1]}.mssante.fr"
            yield _row("ORG", address, [""] * 12, service, demat, place)
            continue
        if not person or i % 50 != 0:  # every 50th PER row: a second mailbox of the same person
            family, given = rng.choice(FAMILY), rng.choice(GIVEN)
            code, label, specialties = PROFESSIONS[rng.randrange(len(PROFESSIONS))]
            specialty = rng.choice(specialties) if specialties else ("", "")
            if i % 10 == 3:
                id_type, identifier = "0", f"{i % 95 + 1:02d}{i % 10}{i:06d}"[-9:]  # ADELI
            else:
                id_type, identifier = "8", f"1{i:010d}"  # RPPS, 11 digits
            civility = "DR" if code == "10" else rng.choice(CIVILITIES[1:])
            person = [id_type, identifier, id_type + identifier, civility, family.upper(), given]
            person += ["C", "Civil", code, label, *specialty]
        address = f"{_ascii(person[5])}.{_ascii(person[4])}.{i}@{DOMAINS[i % len(DOMAINS)]}"
        yield _row("PER", address, person, "", demat, place)


def line(fields: list[str]) -> str:
    return "|".join(fields)


def write(
    path: Path, lines: Iterable[list[str] | str], *, zip_member: str | None = None, crlf: bool = False
) -> Path:
    """Write a file (or a ZIP holding it as ``zip_member``): the header, then each row (a
    ``str`` is written as is, for broken rows). Returns ``path``."""
    end = "\r\n" if crlf else "\n"

    def emit(out: io.TextIOBase) -> None:
        out.write(HEADER + end)
        for item in lines:
            out.write((item if isinstance(item, str) else line(item)) + end)

    if zip_member is None:
        with path.open("w", encoding="utf-8", newline="") as out:
            emit(out)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            with archive.open(zip_member, "w") as raw, io.TextIOWrapper(raw, "utf-8", newline="") as out:
                emit(out)
    return path


@dataclass
class Generated:
    path: Path
    rows: int = 0  # data lines
    addresses: set[str] | None = None  # the distinct addresses, when asked for
    duplicate_lines: list[int] = field(default_factory=list)
    broken_lines: list[int] = field(default_factory=list)


def generate(
    path: Path,
    count: int,
    *,
    seed: int = 0,
    duplicates: int = 0,
    broken: int = 0,
    zip_member: str | None = None,
    keep_addresses: bool = False,
) -> Generated:
    """A file of ``count`` good rows plus ``duplicates`` rows repeating an earlier address
    (with other values, that must be ignored) and ``broken`` rows, spread through the file."""
    result = Generated(path, addresses=set() if keep_addresses else None)
    extra_every = max(1, count // (duplicates + broken + 1))

    def lines() -> Iterator[list[str] | str]:
        pending_dup, pending_broken = duplicates, broken
        recent: list[str] = []
        number = 1  # the header
        for i, fields in enumerate(rows(count, seed)):
            number += 1
            result.rows += 1
            if result.addresses is not None:
                result.addresses.add(fields[1])
            yield fields
            recent = fields
            if i % extra_every == extra_every - 1:
                if pending_dup:
                    pending_dup -= 1
                    number += 1
                    result.rows += 1
                    result.duplicate_lines.append(number)
                    yield [*recent[:7], "Doublon ignoré", *recent[8:]]
                elif pending_broken:
                    pending_broken -= 1
                    number += 1
                    result.rows += 1
                    result.broken_lines.append(number)
                    yield "PER|cassé@|trop|peu|de|colonnes"

    write(path, lines(), zip_member=zip_member)
    return result
