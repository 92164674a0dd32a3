"""Web Key Directory hashing and paths (draft-koch-openpgp-webkey-service §3.1, §4.5)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.wkd import (
    Method,
    WkdPath,
    ascii_lower,
    is_wkd_hash,
    local_matches,
    parse_wkd_path,
    split_address,
    wkd_hash,
    wkd_url,
    zbase32_decode,
    zbase32_encode,
)

# The example of the draft (§3.1) and values computed by GnuPG's gpg-wks-client
# (``--print-wkd-hash``), an independent implementation.
VECTORS = [
    ("Joe.Doe", "iy9q119eutrkn8s1mk4r39qejnbu3n5q"),  # the draft's own example
    ("joe.doe", "iy9q119eutrkn8s1mk4r39qejnbu3n5q"),
    ("alice", "kei1q4tipxxu1yj79k9kfukdhfy631xe"),
    ("X", "n85k5dsffewajk7k9i6dswmfyphfaed1"),
    ("dr.martin", "6etubxzoz3ea6o5hdykttaas8ebcxq5o"),
    # Only ASCII letters are lower-cased: "É" stays, so both spellings hash differently.
    ("Élodie", "9w44q4btxxqya7ytw65qip4ndutt6cpb"),
    ("élodie", "m8xhq3weo4psdpxfye93mm6yqy4bg585"),
]


@pytest.mark.parametrize(("local", "expected"), VECTORS)
def test_wkd_hash_vectors(local, expected):
    assert wkd_hash(local) == expected


def test_wkd_hash_agrees_with_gnupg():
    tool = shutil.which("gpg-wks-client") or "/usr/lib/gnupg/gpg-wks-client"
    if not os.path.exists(tool):
        pytest.skip("gpg-wks-client is not installed")
    for local in ("Joe.Doe", "MiXeD.Case+tag", "élodie", "o'brien", "a_b-c"):
        out = subprocess.run(
            [tool, "--print-wkd-hash", f"{local}@example.org"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert out[0] == wkd_hash(local), local


def test_ascii_lower_leaves_other_letters():
    assert ascii_lower("Joe.DOE") == "joe.doe"
    assert ascii_lower("ÉLODIE") == "Élodie"
    assert ascii_lower("ǅ") == "ǅ"


def test_zbase32_known_values():
    assert zbase32_encode(b"") == ""
    # RFC 6189 §5.1.6: most significant bits first, the last group padded with zeros.
    assert zbase32_encode(b"\x80") == "oy"  # 10000 000(00)
    assert zbase32_encode(b"\x00" * 20) == "y" * 32
    assert zbase32_encode(b"\xff" * 20) == "9" * 32
    # 0b00000 00010 00100 00110 01000 01010 01100 00111 = indices 0, 2, 4, 6, 8, 10, 12, 7.
    assert zbase32_encode(bytes([0b00000000, 0b10001000, 0b01100100, 0b00101001, 0b10000111])) == "ynrgekc8"
    digest = hashlib.sha1(b"joe.doe").digest()
    assert zbase32_encode(digest) == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"


@given(st.binary(max_size=64))
def test_zbase32_round_trip(data):
    encoded = zbase32_encode(data)
    assert len(encoded) == (len(data) * 8 + 4) // 5
    assert zbase32_decode(encoded) == data


def test_zbase32_decode_refuses_foreign_characters():
    with pytest.raises(ValueError, match="z-base-32"):
        zbase32_decode("l0")  # l and 0 are not in the alphabet (easy to misread)


@given(st.text(max_size=40))
def test_every_hash_is_32_zbase32_characters(local):
    assert is_wkd_hash(wkd_hash(local))


def test_parse_advanced_and_direct_paths():
    h = "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    assert parse_wkd_path(f"/.well-known/openpgpkey/example.org/hu/{h}") == WkdPath(
        Method.ADVANCED, "example.org", h
    )
    assert parse_wkd_path(f"/.well-known/openpgpkey/Example.ORG/hu/{h}") == WkdPath(
        Method.ADVANCED, "example.org", h
    )
    assert parse_wkd_path(f"/.well-known/openpgpkey/hu/{h}") == WkdPath(Method.DIRECT, None, h)
    policy = parse_wkd_path("/.well-known/openpgpkey/example.org/policy")
    assert policy == WkdPath(Method.ADVANCED, "example.org", None) and policy.is_policy
    assert parse_wkd_path("/.well-known/openpgpkey/policy") == WkdPath(Method.DIRECT, None, None)


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/openpgpkey/",
        "/.well-known/openpgpkey/hu/",
        "/.well-known/openpgpkey/hu/short",
        "/.well-known/openpgpkey/hu/IY9Q119EUTRKN8S1MK4R39QEJNBU3N5Q",  # the alphabet is lower-case
        "/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5ql",  # 33 characters
        "/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q/extra",
        "/.well-known/openpgpkey/example.org/submission-address",
        "/.well-known/openpgpkey/not a domain/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q",
        "/.well-known/openpgpkey/localhost/policy",  # not a mail domain: no dot
        "/.well-known/openpgpkey/../hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q",
        "/.well-known/other/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q",
    ],
)
def test_parse_refuses_other_paths(path):
    assert parse_wkd_path(path) is None


def test_local_matches():
    assert local_matches("iy9q119eutrkn8s1mk4r39qejnbu3n5q", "Joe.Doe")
    assert local_matches("iy9q119eutrkn8s1mk4r39qejnbu3n5q", "JOE.DOE")
    assert not local_matches("iy9q119eutrkn8s1mk4r39qejnbu3n5q", "joe.dae")
    assert not local_matches("iy9q119eutrkn8s1mk4r39qejnbu3n5q", "")


def test_urls_of_the_draft_example():
    assert wkd_url("Joe.Doe@Example.ORG") == (
        "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/"
        "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )
    assert wkd_url("Joe.Doe@Example.ORG", Method.DIRECT) == (
        "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )
    assert wkd_url("a+b@x.fr", Method.DIRECT, host="127.0.0.1:8443").startswith(
        "https://127.0.0.1:8443/.well-known/openpgpkey/hu/"
    )
    assert wkd_url("a+b@x.fr").endswith("?l=a%2Bb")


def test_split_address():
    assert split_address("Joe.Doe@Example.ORG.") == ("Joe.Doe", "example.org")
    assert split_address('"a@b"@x.fr') == ('"a@b"', "x.fr")
    for bad in ("nobody", "@x.fr", "x@"):
        with pytest.raises(ValueError):
            split_address(bad)
