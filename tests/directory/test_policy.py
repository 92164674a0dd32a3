"""The messaging policy's decisions (directory/policy.py), without any server."""

from __future__ import annotations

import pytest

from directory.policy import (
    CONVERSATION_CLOSED,
    NOT_WRITTEN_FIRST,
    PATIENT,
    PATIENT_TO_PATIENT,
    PROFESSIONAL,
    AddressKinds,
    ConversationState,
    ConversationUpdate,
    check_recipient,
    closes_conversation,
    conversation_updates,
    default_patient_domains,
    needs_conversations,
)

KINDS = AddressKinds(default_patient_domains(["openmss.test"]))
PATIENT_A = "146026322000196@patient.openmss.test"
PATIENT_B = "2850175123456@patient.openmss.test"
DOCTOR = "dr.martin@openmss.test"
SECRETARIAT = "secretariat@openmss.test"
OTHER = "dr.bernard@openmss.test"


def test_default_patient_domains_are_derived_from_the_served_ones():
    assert default_patient_domains(["openmss.test", "CH-Exemple.mssante.fr.", "patient.x.test", " "]) == {
        "patient.openmss.test",
        "patient.ch-exemple.mssante.fr",
        "patient.x.test",
    }


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        (PATIENT_A, PATIENT),
        ("146026322000196@PATIENT.openmss.test", PATIENT),
        ("146026322000196@patient.mssante.fr", PATIENT),  # another operator's patients
        (DOCTOR, PROFESSIONAL),
        ("cardiologie@ch-xyz.mssante.fr", PROFESSIONAL),
        ("patient@openmss.test", PROFESSIONAL),  # the local part does not matter
        ("x@patients.openmss.test", PROFESSIONAL),
    ],
)
def test_kind_is_decided_by_the_domain(address, kind):
    assert KINDS(address) == kind


def test_configured_patient_domain_with_another_first_label():
    kinds = AddressKinds(frozenset({"usagers.openmss.test"}))
    assert kinds("1@usagers.openmss.test") == PATIENT
    assert kinds("1@patient.openmss.test") == PATIENT  # the national convention still holds


def test_professionals_write_to_anyone():
    for recipient in (PATIENT_A, OTHER, "x@autre-operateur.fr"):
        assert check_recipient(DOCTOR, recipient, KINDS) is None
        assert not needs_conversations(DOCTOR, recipient, KINDS)


def test_bounces_reach_patients():
    assert check_recipient("", PATIENT_A, KINDS) is None


def test_patient_never_writes_to_a_patient():
    assert not needs_conversations(PATIENT_A, PATIENT_B, KINDS)
    assert check_recipient(PATIENT_A, PATIENT_B, KINDS) is PATIENT_TO_PATIENT
    # Not even through a Reply-To naming a patient.
    state = [ConversationState(DOCTOR, PATIENT_B, closed=False)]
    assert check_recipient(PATIENT_A, PATIENT_B, KINDS, state) is PATIENT_TO_PATIENT


def test_patient_answers_only_who_wrote_first():
    assert needs_conversations(PATIENT_A, DOCTOR, KINDS)
    assert check_recipient(PATIENT_A, DOCTOR, KINDS, []) is NOT_WRITTEN_FIRST
    state = [ConversationState(DOCTOR, None, closed=False)]
    assert check_recipient(PATIENT_A, DOCTOR, KINDS, state) is None
    assert check_recipient(PATIENT_A, "DR.Martin@OpenMSS.test", KINDS, state) is None
    assert check_recipient(PATIENT_A, OTHER, KINDS, state) is NOT_WRITTEN_FIRST


def test_reply_to_is_allowed_besides_the_professional():
    state = [ConversationState(DOCTOR, SECRETARIAT, closed=False)]
    assert check_recipient(PATIENT_A, SECRETARIAT, KINDS, state) is None
    assert check_recipient(PATIENT_A, DOCTOR, KINDS, state) is None


def test_closed_conversation_refuses_with_its_own_reason():
    state = [ConversationState(DOCTOR, SECRETARIAT, closed=True)]
    assert check_recipient(PATIENT_A, DOCTOR, KINDS, state) is CONVERSATION_CLOSED
    assert check_recipient(PATIENT_A, SECRETARIAT, KINDS, state) is CONVERSATION_CLOSED
    # Another professional's open conversation naming the same Reply-To still allows it.
    state.append(ConversationState(OTHER, SECRETARIAT, closed=False))
    assert check_recipient(PATIENT_A, SECRETARIAT, KINDS, state) is None
    assert check_recipient(PATIENT_A, DOCTOR, KINDS, state) is CONVERSATION_CLOSED


def test_refusals_are_550_5_7_1_sentences():
    reply = NOT_WRITTEN_FIRST.reply(DOCTOR)
    assert reply == f"550 5.7.1 <{DOCTOR}>: A patient can only answer a professional who wrote to them first"
    for refusal in (PATIENT_TO_PATIENT, NOT_WRITTEN_FIRST, CONVERSATION_CLOSED):
        assert refusal.reply("x@y").startswith("550 5.7.1 ") and refusal.sentence[0].isupper()


@pytest.mark.parametrize(
    ("marks", "subject", "closes"),
    [
        (["FIN"], "Résultats", True),
        ([" fin "], None, True),
        (["OUVERT", "FIN"], None, True),
        ([], "[FIN]", True),
        ([], " [FIN] ", True),
        ([], "=?utf-8?q?=5BFIN=5D?=", True),  # RFC 2047 encoded
        ([], "[fin]", False),
        ([], "Re: [FIN]", False),
        ([], "[FIN] résultats", False),
        (["FINI"], "FIN", False),
        ([], None, False),
    ],
)
def test_what_closes_a_conversation(marks, subject, closes):
    assert closes_conversation(marks, subject) is closes


def test_updates_one_per_patient_recipient():
    updates = conversation_updates(
        "Dr.Martin@openmss.test",
        [PATIENT_A, OTHER, PATIENT_A.upper(), PATIENT_B],
        KINDS,
        closes=False,
        reply_to=[SECRETARIAT],
    )
    assert updates == [
        ConversationUpdate(DOCTOR, PATIENT_A, SECRETARIAT, closes=False),
        ConversationUpdate(DOCTOR, PATIENT_B, SECRETARIAT, closes=False),
    ]


def test_updates_ignore_patients_and_bounces_as_senders():
    assert conversation_updates(PATIENT_A, [DOCTOR], KINDS, closes=False) == []
    assert conversation_updates("", [PATIENT_A], KINDS, closes=True) == []
    assert conversation_updates(DOCTOR, [OTHER], KINDS, closes=True) == []


def test_reply_to_naming_a_patient_or_the_sender_is_not_kept():
    [update] = conversation_updates(DOCTOR, [PATIENT_A], KINDS, closes=True, reply_to=[PATIENT_B])
    assert update.reply_to is None and update.closes
    [update] = conversation_updates(DOCTOR, [PATIENT_A], KINDS, closes=False, reply_to=[DOCTOR.upper()])
    assert update.reply_to is None
    [update] = conversation_updates(DOCTOR, [PATIENT_A], KINDS, closes=False, reply_to=[PATIENT_B, OTHER])
    assert update.reply_to == OTHER
