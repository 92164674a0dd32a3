"""Who each stored copy is encrypted to (``AtRest.copies``)."""

from __future__ import annotations

import pytest

from mailserver.encryption import AtRest, NoKey, OwnerKey
from mailserver.message import pgpmime
from openmss.crypto import pgp

MESSAGE = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[OwnerKey, pgp.Tsk]]:
    made = {}
    for name, mode in (("sender", "server"), ("bob", "server"), ("bcc", "server"), ("own", "own")):
        key = pgp.generate_key(f"{name}@x.test")
        made[name] = (OwnerKey(key.fingerprint, key.public, mode), pgp.load_secret(key.secret))
    return made


def _opens(copy_body: bytes, secret: pgp.Tsk) -> bool:
    try:
        pgpmime.decrypt_message(copy_body, [secret])
    except pgpmime.PgpMimeError:
        return False
    return True


def test_sent_copy_is_shared_with_the_first_recipient_only(keys) -> None:  # type: ignore[no-untyped-def]
    owners = {1: keys["sender"][0], 2: keys["bob"][0], 3: keys["bcc"][0]}
    copies = AtRest().copies(MESSAGE, owners, sender=1)
    assert copies[1] is copies[2]  # one ciphertext for the Sent copy and bob's INBOX
    assert copies[3] is not copies[1]
    assert _opens(copies[1].body, keys["sender"][1]) and _opens(copies[1].body, keys["bob"][1])
    # The Bcc recipient's copy is to its key alone; the others' copy does not name it.
    assert _opens(copies[3].body, keys["bcc"][1])
    assert not _opens(copies[1].body, keys["bcc"][1]) and not _opens(copies[3].body, keys["bob"][1])
    assert all(c.decrypt_on_read and c.size == len(MESSAGE) for c in copies.values())


def test_own_keys_are_not_grouped_with_server_held_keys(keys) -> None:  # type: ignore[no-untyped-def]
    copies = AtRest().copies(MESSAGE, {1: keys["sender"][0], 2: keys["own"][0]}, sender=1)
    assert copies[1] is not copies[2]
    assert not copies[2].decrypt_on_read and copies[2].size == len(copies[2].body)
    assert not _opens(copies[1].body, keys["own"][1])


def test_no_key_no_copy_and_encrypted_mail_untouched(keys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NoKey):
        AtRest().copies(MESSAGE, {1: keys["sender"][0], 2: None}, sender=1)
    encrypted = pgpmime.encrypt_message(MESSAGE, [pgp.load_cert(keys["bob"][0].public)])
    copies = AtRest().copies(encrypted, {2: keys["bob"][0]})
    assert copies[2].body == encrypted and not copies[2].decrypt_on_read
