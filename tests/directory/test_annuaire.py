"""The parser of the national file "Extraction Correspondance MSSanté" (no database)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from annuaire_generator import HEADER, ZIP_MEMBER, line, rows, write

from directory import annuaire
from directory.annuaire import AnnuaireError, Row, RowError, open_annuaire, parse_row, read_rows

# A doctor (RPPS) in a hospital, as the published file has them.
PER = (
    "PER|claire.lefevre@ch-exemple.mssante.fr|8|10102727017|810102727017|1|750712184|Cardiologie|DR|"
    "LEFÈVRE|Hélène|C|Civil|10|Médecin|SM04|Cardiologie et maladies vasculaires|O|"
    "Centre hospitalier d'Exemple||Bâtiment B||12|BIS|R|de l'Église||75013 PARIS|75013|75|FRANCE"
)
# An organisational mailbox: nobody named.
ORG = (
    "ORG|secretariat.cardio@ch-exemple.mssante.fr||||1|750712184|Secrétariat de cardiologie||||||||||N|"
    "Centre hospitalier d'Exemple|||||||||PARIS CEDEX 13|75013|75|"
)


def _parse(*data: str | bytes) -> list[Row | RowError]:
    return list(read_rows([HEADER, *data]))


def _row(text: str, number: int = 2) -> Row:
    result = parse_row(text, number)
    assert isinstance(result, Row), result
    return result


def test_the_published_header_is_accepted_with_a_bom_and_crlf():
    assert _parse() == []
    [row] = read_rows(["\ufeff" + HEADER + "\r\n", PER + "\r\n"])
    assert isinstance(row, Row) and row.address.startswith("claire")
    assert len(list(read_rows([("\ufeff" + HEADER + "\r\n").encode(), (PER + "\r\n").encode()]))) == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.replace("|Nom d'exercice|", "|Nom|"), "column 10 is 'Nom'"),
        (HEADER.rsplit("|", 1)[0], "30 columns"),
        ("Type de BAL;Adresse BAL", "1 columns"),
    ],
)
def test_another_header_refuses_the_file(header: str, message: str):
    with pytest.raises(AnnuaireError, match=message):
        list(read_rows([header, PER]))


def test_an_empty_file_is_refused():
    with pytest.raises(AnnuaireError, match="empty"):
        list(read_rows([]))


def test_header_compared_without_case_accents_or_spacing_and_a_trailing_separator():
    relaxed = HEADER.upper().replace("É", "E").replace("|", " | ") + "|"
    assert len(list(read_rows([relaxed, PER + "|"]))) == 1


def test_a_professional_row_becomes_a_typed_record():
    row = _row(PER)
    assert (row.line, row.kind, row.address) == (2, "PER", "claire.lefevre@ch-exemple.mssante.fr")
    assert row.person is not None and row.structure is not None
    assert (row.person.national_id, row.person.id_type, row.person.identifier) == (
        "810102727017",
        "8",
        "10102727017",
    )
    assert (row.person.civility, row.person.family_name, row.person.given_name) == ("DR", "LEFÈVRE", "Hélène")
    assert (row.person.profession_code, row.person.profession_label) == ("10", "Médecin")
    assert (row.person.specialty_code, row.person.specialty_label) == (
        "SM04",
        "Cardiologie et maladies vasculaires",
    )
    assert (row.person.category_code, row.person.category_label) == ("C", "Civil")
    assert row.service == "Cardiologie" and row.accepts_documents is True
    s = row.structure
    assert (s.id_type, s.identifier, s.national_id) == ("1", "750712184", "1750712184")
    assert (s.name, s.trade_name, s.complement_location) == (
        "Centre hospitalier d'Exemple",
        None,
        "Bâtiment B",
    )
    assert (s.street_number, s.street_number_complement, s.street_type, s.street_name) == (
        "12",
        "BIS",
        "R",
        "de l'Église",
    )
    assert (s.routing_line, s.postcode, s.town, s.department, s.country) == (
        "75013 PARIS",
        "75013",
        "PARIS",
        "75",
        "FRANCE",
    )


def test_an_org_row_names_nobody():
    row = _row(ORG)
    assert row.kind == "ORG" and row.person is None and row.accepts_documents is False
    assert row.structure is not None and row.structure.town == "PARIS CEDEX 13"
    assert row.structure.country is None  # empty fields are None, never ""


def test_national_ids_and_their_prefixes():
    def person(kind: str, ident: str, national: str):  # type: ignore[no-untyped-def]
        fields = PER.split("|")
        fields[2:5] = [kind, ident, national]
        return parse_row("|".join(fields), 7)

    adeli = person("0", "751234567", "0751234567")
    assert isinstance(adeli, Row) and adeli.person and adeli.person.national_id == "0751234567"
    corsica = person("0", "2A1234567", "")
    assert isinstance(corsica, Row) and corsica.person and corsica.person.national_id == "02A1234567"
    derived = person("", "", "810102727017")  # type and identifier read from the national id
    assert isinstance(derived, Row) and derived.person
    assert (derived.person.id_type, derived.person.identifier) == ("8", "10102727017")
    staff = person("3", "750712184/12345", "")  # personnel identified by its facility
    assert isinstance(staff, Row) and staff.person and staff.person.national_id == "3750712184/12345"
    for kind, ident, national, message in [
        ("8", "1010272701", "", "RPPS number '1010272701' is not 11 digits"),
        ("0", "75123", "", "ADELI number '75123' is not 9 characters"),
        ("8", "10102727017", "899999999999", "is not '8' + '10102727017'"),
        ("", "10102727017", "", "without 'Type Identifiant PP'"),
    ]:
        error = person(kind, ident, national)
        assert isinstance(error, RowError) and error.line == 7 and message in error.message, error


def test_a_person_without_national_id_is_kept_by_name():
    fields = PER.split("|")
    fields[2:5] = ["", "", ""]
    row = _row("|".join(fields))
    assert row.person is not None and row.person.national_id is None and row.person.family_name == "LEFÈVRE"


def test_quotes_are_ordinary_characters():
    fields = ORG.split("|")
    fields[19] = 'Centre "Les Tilleuls'  # an unbalanced quote must not swallow the separators
    fields[7] = '"Urgences"'
    row = _row("|".join(fields))
    assert row.structure is not None and row.structure.trade_name == 'Centre "Les Tilleuls'
    assert row.service == '"Urgences"' and row.structure.postcode == "75013"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PER|x@y.fr|too|few", "4 columns, expected 31"),
        (PER + "|extra|fields", "33 columns, expected 31"),
        (PER.replace("PER|", "BAL|", 1), "unknown mailbox type 'BAL'"),
        (PER.replace("claire.lefevre@ch-exemple.mssante.fr", "pas une adresse"), "invalid mailbox address"),
        (PER.replace("claire.lefevre@ch-exemple.mssante.fr", "claire@localhost"), "invalid mailbox address"),
        (PER.replace("claire.lefevre@ch-exemple.mssante.fr", ""), "invalid mailbox address ''"),
    ],
)
def test_rows_that_do_not_parse_say_why_with_their_line(text: str, message: str):
    results = _parse(PER, "", text)
    assert isinstance(results[0], Row)
    error = results[1]
    assert isinstance(error, RowError) and error.line == 4 and message in error.message, error


def test_line_numbers_count_the_header_and_blank_lines():
    results = _parse(PER, "", "PER|x@y.fr|too|few", ORG.encode(), b"PER|\xff\xfe|bad utf-8" + b"|" * 28)
    assert [r.line for r in results] == [2, 4, 5, 6]
    assert isinstance(results[1], RowError) and results[1].message == "4 columns, expected 31"
    assert str(results[1]) == "line 4: 4 columns, expected 31"
    assert isinstance(results[3], RowError) and "not UTF-8" in results[3].message


def test_addresses_are_lower_cased_and_types_upper_cased():
    row = _row(PER.replace("PER|claire.lefevre", "per| Claire.Lefevre", 1))
    assert (row.kind, row.address) == ("PER", "claire.lefevre@ch-exemple.mssante.fr")


@pytest.mark.parametrize(
    ("value", "flag"), [("O", True), ("oui", True), ("N", False), ("Non", False), ("", None), ("?", None)]
)
def test_dematerialisation(value: str, flag: bool | None):
    fields = PER.split("|")
    fields[17] = value
    assert _row("|".join(fields)).accepts_documents is flag


def test_generated_rows_all_parse():
    results = _parse(*(line(fields) for fields in rows(700, seed=3)))
    assert all(isinstance(r, Row) for r in results) and len(results) == 700
    kinds = {r.kind for r in results if isinstance(r, Row)}
    assert kinds == {"PER", "ORG"}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_text_and_zip_give_the_same_rows(tmp_path: Path):
    data = [line(fields) for fields in rows(50, seed=1)]
    text = write(tmp_path / "extraction.txt", data)
    packed = write(tmp_path / "extraction.zip", data, zip_member=ZIP_MEMBER)
    with open_annuaire(text) as a, open_annuaire(packed) as b:
        assert list(read_rows(a)) == list(read_rows(b))


def test_the_zip_member_is_chosen_by_name(tmp_path: Path):
    body = (HEADER + "\n" + PER + "\n").encode()
    archive = _zip(
        tmp_path / "a.zip",
        {"LISEZMOI.txt": b"notes", f"export/{ZIP_MEMBER}": body, "__MACOSX/._x.txt": b"junk"},
    )
    with open_annuaire(archive) as lines:
        assert [r.address for r in read_rows(lines) if isinstance(r, Row)] == [
            "claire.lefevre@ch-exemple.mssante.fr"
        ]
    only = _zip(tmp_path / "b.zip", {"whatever.csv": body})
    with open_annuaire(only) as lines:
        assert len(list(read_rows(lines))) == 1
    for name, members in {
        "c.zip": {"a.txt": body, "b.txt": body},
        "d.zip": {"image.png": b"\x89PNG"},
    }.items():
        with pytest.raises(AnnuaireError, match=r"should hold one \.txt file"):
            with open_annuaire(_zip(tmp_path / name, members)):
                pass


def test_a_zip_bomb_is_refused_before_inflating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    archive = _zip(tmp_path / "bomb.zip", {ZIP_MEMBER: (HEADER + "\n").encode() + b"\n" * 100_000})
    monkeypatch.setattr(annuaire, "MAX_UNCOMPRESSED", 50_000)
    with pytest.raises(AnnuaireError, match="would inflate to 100"):
        with open_annuaire(archive):
            pass


def test_more_text_than_allowed_stops_the_reading():
    stream = io.BytesIO(b"x\n" * 1000)
    with pytest.raises(AnnuaireError, match="more than 500 bytes"):
        list(annuaire._bounded_lines(stream, 500))


def test_a_damaged_zip_is_refused_while_reading(tmp_path: Path):
    data = [line(fields) for fields in rows(2000, seed=2)]
    path = write(tmp_path / "extraction.zip", data, zip_member=ZIP_MEMBER)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(ZIP_MEMBER)
    middle = info.header_offset + 30 + len(ZIP_MEMBER) + info.compress_size // 2
    raw[middle : middle + 64] = bytes(64)  # a damaged transfer
    path.write_bytes(bytes(raw))
    with pytest.raises(AnnuaireError, match="damaged ZIP"), open_annuaire(path) as lines:
        list(read_rows(lines))


def test_an_over_long_line_is_reported_and_the_next_one_read(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(annuaire, "MAX_LINE", 2000)
    stream = io.BytesIO(f"{HEADER}\n{'x' * 5000}\n{PER}\n".encode())
    results = list(read_rows(annuaire._bounded_lines(stream)))
    assert (
        isinstance(results[0], RowError) and results[0].line == 2 and "longer than 2000" in results[0].message
    )
    assert isinstance(results[1], Row) and results[1].line == 3
