"""Pure parts of the SMTP protocol layer."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from mailserver.smtp.protocol import (
    DsnSyntaxError,
    OpenMSSSMTP,
    split_dsn_params,
    validate_mail_dsn,
    validate_rcpt_dsn,
)


@pytest.fixture(scope="module")
def engines():
    loop = asyncio.new_event_loop()
    try:
        yield OpenMSSSMTP(object(), loop=loop), SMTP(object(), loop=loop)
    finally:
        loop.close()


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
paths = st.one_of(
    st.builds(
        lambda local, domain, rest: f"<{local}@{domain}>{rest}",
        st.text(alphabet=_ATEXT + ".", min_size=1, max_size=20),
        st.text(alphabet="abc019-.", min_size=1, max_size=20),
        st.sampled_from(["", " SIZE=100", " BODY=8BITMIME SMTPUTF8", "  x", " (c) SIZE=1", "\tX", "(c)"]),
    ),
    st.text(max_size=40),
)


def _theirs(engine: SMTP, arg: str) -> tuple[str | None, str | None]:
    try:
        return engine._getaddr(arg)
    except Exception:  # aiosmtpd's own crash on e.g. "<": ours answers "malformed"
        return None, None


@given(paths)
def test_fast_address_path_agrees_with_aiosmtpd(engines, arg):
    ours, theirs = engines
    assert ours._getaddr(arg) == _theirs(theirs, arg)


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.fr>",
        "<a.b@c.d> SIZE=10",
        " <x@y.z>",
        "<>",
        "<a..b@c.d>",
        "<.a@b.c>",
        '<"q u"@b.c>',
        "<a@[127.0.0.1]>",
        "<é@b.fr>",
        "a@b.fr",
        "<a@-b.fr>",
        "<" + "a" * 70 + "@b.fr>",
    ],
)
def test_address_path_examples(engines, arg):
    ours, theirs = engines
    assert ours._getaddr(arg) == _theirs(theirs, arg)


def test_dsn_parameters_are_taken_out_and_checked():
    rest, found = split_dsn_params("<a@b.c> RET=HDRS ENVID=AB+2Bc SIZE=10", {"RET", "ENVID"})
    assert rest == "<a@b.c> SIZE=10" and found == {"RET": "HDRS", "ENVID": "AB+2Bc"}
    assert validate_mail_dsn(found) == ("HDRS", "AB+2Bc")
    assert validate_rcpt_dsn({"NOTIFY": "delay,failure"}) == ("DELAY,FAILURE", None)
    for bad in ({"NOTIFY": "NEVER,SUCCESS"}, {"NOTIFY": "SOMETIMES"}, {"ORCPT": "nosemicolon"}):
        with pytest.raises(DsnSyntaxError):
            validate_rcpt_dsn(bad)
    with pytest.raises(DsnSyntaxError):
        split_dsn_params("<a@b.c> RET=FULL RET=HDRS", {"RET"})
