"""Tests for mailserver.imap.search: SEARCH key evaluation (RFC 3501 §6.4.4)."""

from __future__ import annotations

from collections.abc import Set
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap import searchkeys as sk
from mailserver.imap.search import (
    CompiledSearch,
    SearchContext,
    SearchMessage,
    decode_header_value,
    fold_text,
    matches,
    needs_message,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def in_set(numbers: object, number: int) -> bool:
    assert isinstance(numbers, Set)
    return number in numbers


CONTEXT = SearchContext(
    in_sequence_set=in_set, in_uid_set=in_set, now=datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
)

PARIS = timezone(timedelta(hours=1))
MESSAGE = crlf(
    "From: =?ISO-8859-1?Q?Andr=E9?= Dupont <andre@example.fr>\n"
    'To: Bob <bob@example.org>, "Team" <team@example.org>\n'
    "Cc: carol@example.org\n"
    "Subject: =?UTF-8?B?UsOpdW5pb24=?= =?UTF-8?Q?_de_l'=C3=A9quipe?=\n"
    "Date: Sat, 2 Mar 2024 23:30:00 -0500\n"
    "X-Priority: 1\n"
    "X-Empty:\n"
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: multipart/alternative; boundary=a\n"
    "\n"
    "--a\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Bonjour, la r=E9union est d=E9plac=E9e =\n"
    "=E0 jeudi.\n"
    "--a\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "PHA+U2FsbGUgPGI+Qm9yw6lhbDwvYj4gJmFtcDsgY2Fmw6k8L3A+\n"
    "--a--\n"
    "--b\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "c2VjcmV0IGF0dGFjaG1lbnQ=\n"
    "--b\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: Forwarded minutes\n"
    "From: erin@example.org\n"
    "\n"
    "Minutes of the forwarded meeting.\n"
    "--b--\n"
)


def target(
    data: bytes = MESSAGE,
    *,
    flags: Set[str] = frozenset({"\\Seen", "$Important"}),
    internal_date: datetime = datetime(2024, 3, 3, 0, 30, tzinfo=PARIS),
    seq: int = 3,
    uid: int = 42,
    modseq: int = 7,
) -> SearchMessage:
    return SearchMessage(seq, uid, flags, internal_date, len(data), modseq, lambda: data)


def check(key: sk.SearchKey, expected: bool, message: SearchMessage | None = None) -> None:
    assert matches(key, message or target(), CONTEXT) is expected, key


def unreadable() -> bytes:
    raise AssertionError("the message content was read")


# --- Header decoding ------------------------------------------------------------------------


def test_decode_header_value() -> None:
    assert decode_header_value(b"=?ISO-8859-1?Q?Andr=E9?= Dupont") == "André Dupont"
    # White space between adjacent encoded-words disappears (RFC 2047 §6.2), other text stays.
    assert decode_header_value(b"=?UTF-8?Q?a?= \r\n =?UTF-8?Q?b?= c =?UTF-8?B?w6k=?=") == "ab c é"
    assert decode_header_value(b"=?utf-8*fr?q?=C3=A9t=C3=A9?=") == "été"  # RFC 2231 language
    assert decode_header_value(b"caf\xc3\xa9") == "café"  # RFC 6532 UTF-8
    assert decode_header_value(b"caf\xe9") == "café"  # Latin-1 fallback
    assert decode_header_value(b"=?x-unknown?Q?abc?=") == "abc"
    assert decode_header_value(b"=?utf-8?B?!!!?=") == ""
    assert decode_header_value(b"=?utf-8?Q?broken") == "=?utf-8?Q?broken"


def test_fold_text() -> None:
    assert fold_text("Stra\u00dfe  CAFE\u0301\n\tx") == "strasse café x"


# --- Keys -----------------------------------------------------------------------------------


def test_structure_keys() -> None:
    check(sk.All(), True)
    check(sk.And(()), True)
    check(sk.And((sk.All(), sk.Flag("\\Seen"))), True)
    check(sk.And((sk.All(), sk.Flag("\\Draft"))), False)
    check(sk.Or(sk.Flag("\\Draft"), sk.Flag("\\Seen")), True)
    check(sk.Or(sk.Flag("\\Draft"), sk.Flag("\\Deleted")), False)
    check(sk.Not(sk.Flag("\\Draft")), True)
    check(sk.Not(sk.Not(sk.All())), True)


def test_flags_and_keywords_case_insensitive() -> None:
    check(sk.Flag("\\SEEN"), True)
    check(sk.Flag("\\Seen", False), False)
    check(sk.Flag("\\Answered", False), True)
    check(sk.Keyword("$important"), True)
    check(sk.Keyword("$Important", False), False)
    check(sk.Keyword("$Junk"), False)


def test_no_recent() -> None:
    unseen = target(flags=frozenset())
    check(sk.Recent(), False, unseen)
    check(sk.New(), False, unseen)
    check(sk.Old(), True, unseen)


def test_sequence_and_uid_sets() -> None:
    check(sk.SequenceKey({1, 3}), True)
    check(sk.SequenceKey({42}), False)
    check(sk.UidKey({42}), True)
    check(sk.UidKey({3}), False)


def test_internal_date_uses_its_own_zone() -> None:
    # 2024-03-03 00:30 +01:00 is still 2 March in UTC: the date compared is 3 March.
    check(sk.On(date(2024, 3, 3)), True)
    check(sk.On(date(2024, 3, 2)), False)
    check(sk.Before(date(2024, 3, 3)), False)
    check(sk.Before(date(2024, 3, 4)), True)
    check(sk.Since(date(2024, 3, 3)), True)
    check(sk.Since(date(2024, 3, 4)), False)


def test_sent_dates_use_the_date_header_in_its_zone() -> None:
    # "Sat, 2 Mar 2024 23:30:00 -0500" is 3 March in UTC; the date written is 2 March.
    check(sk.SentOn(date(2024, 3, 2)), True)
    check(sk.SentBefore(date(2024, 3, 2)), False)
    check(sk.SentBefore(date(2024, 3, 3)), True)
    check(sk.SentSince(date(2024, 3, 2)), True)
    check(sk.SentSince(date(2024, 3, 3)), False)


@pytest.mark.parametrize("header", ["", "Date: not a date\n", "Date: Mon, 31 Feb 2024 10:00:00 +0000\n"])
def test_sent_date_falls_back_to_internal_date(header: str) -> None:
    message = target(
        crlf(header + "Subject: x\n\nbody\n"), internal_date=datetime(2024, 1, 5, 8, 0, tzinfo=UTC)
    )
    check(sk.SentOn(date(2024, 1, 5)), True, message)


def test_older_younger() -> None:
    now = CONTEXT.now
    assert now is not None
    day_old = target(internal_date=now - timedelta(days=1))
    check(sk.Older(3600), True, day_old)
    check(sk.Younger(3600), False, day_old)
    check(sk.Younger(2 * 86400), True, day_old)
    check(sk.Older(86400), True, day_old)
    check(sk.Younger(86400), False, day_old)


def test_size_and_modseq() -> None:
    size = len(MESSAGE)
    check(sk.Larger(size - 1), True)
    check(sk.Larger(size), False)
    check(sk.Smaller(size + 1), True)
    check(sk.Smaller(size), False)
    check(sk.ModSeq(7), True)
    check(sk.ModSeq(8, "/flags/\\seen", "all"), False)


def test_address_fields_and_subject_decoded() -> None:
    check(sk.From("andré"), True)
    check(sk.From("ANDRE@EXAMPLE.FR"), True)
    check(sk.From("=?ISO"), False)  # the decoded text is searched, not the encoded form
    check(sk.To("team@"), True)
    check(sk.To("carol"), False)
    check(sk.Cc("carol@example.org"), True)
    check(sk.Bcc("anyone"), False)
    check(sk.Subject("réunion de l'équipe"), True)  # two encoded-words, the space between kept
    check(sk.Subject("RÉUNION"), True)
    check(sk.Subject("Forwarded"), False)  # only the top-level header


def test_header_key() -> None:
    check(sk.Header("x-priority", "1"), True)
    check(sk.Header("X-Priority", "2"), False)
    check(sk.Header("X-Priority", ""), True)  # "" matches any message with the field
    check(sk.Header("X-Empty", ""), True)
    check(sk.Header("X-Missing", ""), False)
    check(sk.Header("Content-Type", "boundary=b"), True)


def test_body_key() -> None:
    check(sk.Body("réunion est déplacée à jeudi"), True)  # QP soft line break, Latin-1
    check(sk.Body("salle boréal & café"), True)  # base64 UTF-8 HTML, tags dropped, entities
    check(sk.Body("<b>"), False)
    check(sk.Body("secret attachment"), False)  # not a text part
    check(sk.Body("forwarded minutes"), True)  # an encapsulated message's header
    check(sk.Body("minutes of the forwarded meeting"), True)
    check(sk.Body("andré dupont"), False)  # the top-level header is not the body
    check(sk.Body(""), True)


def test_text_key() -> None:
    check(sk.Text("andré dupont"), True)
    check(sk.Text("X-PRIORITY: 1"), True)
    check(sk.Text("boréal"), True)
    check(sk.Text("nowhere to be found"), False)


def test_flag_only_search_never_reads_the_message() -> None:
    lazy = SearchMessage(1, 1, frozenset({"\\Seen"}), datetime(2024, 1, 1, tzinfo=UTC), 10, 1, unreadable)
    key = sk.And(
        (
            sk.Flag("\\Seen"),
            sk.Not(sk.Flag("\\Deleted")),
            sk.Larger(5),
            sk.UidKey({1}),
            sk.Since(date(2023, 1, 1)),
        )
    )
    assert matches(key, lazy, CONTEXT)
    assert not needs_message(key)
    # Metadata keys are tried first: a failing one spares reading the body.
    assert not matches(sk.And((sk.Body("x"), sk.Flag("\\Seen", False))), lazy, CONTEXT)
    assert not matches(sk.Not(sk.Or(sk.Subject("x"), sk.Flag("\\Seen"))), lazy, CONTEXT)
    assert needs_message(sk.Or(sk.All(), sk.Not(sk.SentOn(date(2024, 1, 1)))))


def test_message_is_loaded_once() -> None:
    calls = []

    def loader() -> bytes:
        calls.append(1)
        return MESSAGE

    message = SearchMessage(1, 1, frozenset(), datetime(2024, 1, 1, tzinfo=UTC), len(MESSAGE), 1, loader)
    compiled = CompiledSearch(sk.And((sk.Subject("réunion"), sk.Body("jeudi"), sk.From("andré"))))
    assert compiled.needs_message
    assert compiled.matches(message, CONTEXT)
    assert compiled.matches(message, CONTEXT)
    assert len(calls) == 1


def test_deep_key_trees_do_not_recurse() -> None:
    key: sk.SearchKey = sk.All()
    for _ in range(20_000):
        key = sk.Not(key)
    assert matches(key, target(), CONTEXT) is True
    chain: sk.SearchKey = sk.Flag("\\Seen")
    for _ in range(20_000):
        chain = sk.Or(sk.Flag("\\Draft"), chain)
    assert matches(chain, target(), CONTEXT) is True


def test_unknown_key_raises_type_error() -> None:
    with pytest.raises(TypeError):
        matches(sk.SearchKey(), target(), CONTEXT)


def test_bare_lf_and_headerless_messages() -> None:
    message = target(b"Subject: caf\xc3\xa9\n\nplain body\n")
    check(sk.Subject("CAFÉ"), True, message)
    check(sk.Body("plain body"), True, message)
    empty = target(b"")
    check(sk.Subject(""), False, empty)
    check(sk.Body("x"), False, empty)
    check(sk.Text(""), True, empty)


# --- Properties -----------------------------------------------------------------------------

TEXT = st.text(max_size=8)
DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1))
CONTENT_KEYS = st.one_of(
    TEXT.map(sk.Body),
    TEXT.map(sk.Text),
    TEXT.map(sk.Subject),
    TEXT.map(sk.From),
    st.builds(sk.Header, TEXT, TEXT),
    DATES.map(sk.SentBefore),
    DATES.map(sk.SentOn),
    DATES.map(sk.SentSince),
)
MESSAGES = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [
                b"\r\n",
                b"Subject: =?utf-8?b?w6k=?=\r\n",
                b"Date: Mon, 99 Xyz 20240 25:61:61 +9999\r\n",
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"Content-Type: text/html; charset=x-nonexistent\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Transfer-Encoding: quoted-printable\r\n",
                b"--b\r\n",
                b"=?utf-8?q?=ZZ?= <a\r\n",
                b"PHA+=\r\n",
                b"\xff\xfe",
            ]
        ),
        max_size=30,
    ).map(b"".join),
)


@settings(max_examples=300, deadline=None)
@given(MESSAGES, st.lists(CONTENT_KEYS, min_size=1, max_size=4))
def test_arbitrary_messages_never_raise(data: bytes, keys: list[sk.SearchKey]) -> None:
    message = target(data)
    result = matches(sk.And(tuple(keys)), message, CONTEXT)
    assert result is matches(sk.Not(sk.Not(sk.And(tuple(keys)))), message, CONTEXT)
    assert matches(sk.Or(sk.And(tuple(keys)), sk.Not(sk.And(tuple(keys)))), message, CONTEXT)


# The shortcut for plain 7-bit messages (a needle absent from the octets cannot match) must give
# the same answers as decoding: each case below is one the shortcut must not get wrong.
@pytest.mark.parametrize(
    ("header", "needle", "expected"),
    [
        ("Subject: DISCHARGE summary", "discharge", True),  # case
        ("Subject: discharge", "\uff44\uff49\uff53charge", True),  # full-width letters, NFKC
        ("Subject: =?UTF-8?Q?d=C3=A9charge?=", "décharge", True),  # encoded-word
        ("Subject: =?UTF-8?Q?discharge?=", "discharge", True),  # encoded-word, ASCII needle
        ("Subject: compte\n rendu", "compte rendu", True),  # folded, needle with a space
        ("Subject: compte\n rendu", "compterendu", False),
        ("Subject: hello\nFrom: discharge@x.test", "discharge", False),  # another field
        ("Subject: résumé", "resume", False),
        ("Subject: résumé", "résumé", True),  # 8-bit header
        ("Subject: ﬁchier", "fichier", True),  # ligature in 8-bit text, NFKC
        ("Subject: nothing here", "discharge", False),
    ],
)
def test_header_match_shortcut_agrees_with_decoding(header: str, needle: str, expected: bool) -> None:
    message = target(crlf(f"{header}\nFrom: a@x.test\n\nbody with discharge\n"))
    assert matches(sk.Subject(needle), message, CONTEXT) is expected


def test_required_words_come_only_from_conjunctions_of_ascii_header_keys() -> None:
    def words(key: sk.SearchKey) -> tuple[bytes, ...]:
        return CompiledSearch(key).required_words()

    assert words(sk.Subject("Discharge")) == (b"discharge",)
    assert sorted(words(sk.And((sk.Subject("a1"), sk.From("B2"), sk.Flag("\\Seen"))))) == [b"a1", b"b2"]
    assert words(sk.Or(sk.Subject("a"), sk.From("b"))) == ()
    assert words(sk.Not(sk.Subject("a"))) == ()
    assert words(sk.Subject("compte rendu")) == ()  # white space: folding may split it
    assert words(sk.Subject("résumé")) == ()
    assert words(sk.Header("X-Priority", "")) == ()  # "has the field": no word
    assert words(sk.Body("discharge")) == ()  # bodies are encoded: no shortcut
