"""The messaging policy between professionals and patients: pure decisions, no I/O.

The rules (ANS, MSSanté and Mon espace santé, see docs and /shared/reference):

* professional mailboxes (types PER, ORG, APP, CAB) write to any address of the trust space;
* a patient's address, ``<INS matricule>@patient.<domain>``, receives only from professionals;
* a patient writes only to a professional who wrote to them first (or to the ``Reply-To`` of
  that professional's message), never to another patient, and every recipient of a patient's
  message must be allowed;
* the professional closes the conversation with the header ``X-MSS-MES: FIN`` or the subject
  exactly ``[FIN]``; the patient's answers are then refused until the professional writes again.

The state these decisions read (who wrote to which patient, closed or not) is kept by
``directory.conversations``: stored messages are encrypted, so it cannot be read from them.
Whether an address is a patient's is decided by its domain alone, behind :class:`KindOf`, so
that the directory's mailbox types can replace it without touching the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from typing import Literal, Protocol

Kind = Literal["patient", "professional"]
PATIENT: Kind = "patient"
PROFESSIONAL: Kind = "professional"

# The first label of every patients' domain (``patient.mssante.fr`` nationally).
PATIENT_LABEL = "patient"
# The value of X-MSS-MES and the exact subject that close a conversation.
END_MARK = "FIN"
END_SUBJECT = "[FIN]"


class KindOf(Protocol):
    """Whether an address is a patient's or a professional's mailbox."""

    def __call__(self, address: str) -> Kind: ...


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def normalize_address(address: str) -> str:
    """The form addresses are compared and stored in: no angle brackets, lower case."""
    return address.strip().strip("<>").strip().lower()


def default_patient_domains(served: Iterable[str]) -> frozenset[str]:
    """``patient.<domain>`` for each served domain (a served domain that already starts with
    ``patient.`` is a patients' domain itself)."""
    result: set[str] = set()
    for domain in served:
        name = domain.strip().lower().rstrip(".")
        if not name:
            continue
        result.add(name if name.split(".", 1)[0] == PATIENT_LABEL else f"{PATIENT_LABEL}.{name}")
    return frozenset(result)


@dataclass(frozen=True)
class AddressKinds:
    """:class:`KindOf` by domain: the configured patients' domains, and any domain whose first
    label is ``patient`` (the national convention, e.g. ``patient.mssante.fr`` of another
    operator). Everything else is a professional mailbox."""

    patient_domains: frozenset[str]

    def __call__(self, address: str) -> Kind:
        domain = domain_of(address)
        if domain in self.patient_domains or domain.split(".", 1)[0] == PATIENT_LABEL:
            return PATIENT
        return PROFESSIONAL


# Decisions on a recipient --------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationState:
    """What the policy knows of one professional's conversation with the patient who writes."""

    professional: str
    reply_to: str | None
    closed: bool


@dataclass(frozen=True)
class Refusal:
    """Why a recipient is refused: a metric label and a sentence for a person."""

    reason: str
    sentence: str

    def reply(self, address: str) -> str:
        # RFC 3463 5.7.1: delivery not authorized, message refused.
        return f"550 5.7.1 <{address}>: {self.sentence}"


PATIENT_TO_PATIENT = Refusal("patient-to-patient", "A patient cannot write to another patient")
NOT_WRITTEN_FIRST = Refusal(
    "patient-not-invited", "A patient can only answer a professional who wrote to them first"
)
CONVERSATION_CLOSED = Refusal(
    "conversation-closed",
    "The professional closed this conversation; a patient can answer only after a new message from them",
)


def needs_conversations(sender: str, recipient: str, kind_of: KindOf) -> bool:
    """Whether :func:`check_recipient` must be given the sender's conversations (a patient
    writing to a professional); the caller can skip reading the state otherwise."""
    return bool(sender) and kind_of(sender) == PATIENT and kind_of(recipient) == PROFESSIONAL


def check_recipient(
    sender: str,
    recipient: str,
    kind_of: KindOf,
    conversations: Iterable[ConversationState] = (),
) -> Refusal | None:
    """None when *sender* may write to *recipient*, else the refusal.

    *sender* empty is the null reverse-path of a bounce (RFC 5321 §4.5.5): a delivery report
    to a patient is always let through. *conversations* are the sender's, when the sender is a
    patient (see :func:`needs_conversations`).
    """
    if not sender or kind_of(sender) == PROFESSIONAL:
        return None
    if kind_of(recipient) == PATIENT:
        return PATIENT_TO_PATIENT
    target = normalize_address(recipient)
    closed = False
    for conversation in conversations:
        if target in (conversation.professional, conversation.reply_to):
            if not conversation.closed:
                return None
            closed = True
    return CONVERSATION_CLOSED if closed else NOT_WRITTEN_FIRST


# What a professional's message changes ------------------------------------------------------


@dataclass(frozen=True)
class ConversationUpdate:
    """A professional's message to a patient: opens (or reopens) the conversation, or closes it."""

    professional: str
    patient: str
    reply_to: str | None
    closes: bool


def decoded_subject(raw: str | None) -> str | None:
    """The subject as a person reads it (RFC 2047 encoded words decoded), or None."""
    if raw is None:
        return None
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError):
        return raw


def closes_conversation(x_mss_mes: Sequence[str], subject: str | None) -> bool:
    """``X-MSS-MES: FIN`` (any case, surrounding spaces ignored) or the subject exactly
    ``[FIN]`` (only the spaces left by unfolding, RFC 5322 §2.2.3, are ignored)."""
    if any(value.strip().upper() == END_MARK for value in x_mss_mes):
        return True
    text = decoded_subject(subject)
    return text is not None and text.strip() == END_SUBJECT


def conversation_updates(
    sender: str,
    recipients: Iterable[str],
    kind_of: KindOf,
    *,
    closes: bool,
    reply_to: Sequence[str] = (),
) -> list[ConversationUpdate]:
    """The conversations a professional's message touches: one per patient recipient.

    *reply_to* are the addresses of the message's ``Reply-To``: the first one that is not a
    patient's is where the patient may answer besides the professional (a ``Reply-To`` naming
    a patient never lets a patient write to another patient).
    """
    if not sender or kind_of(sender) != PROFESSIONAL:
        return []
    professional = normalize_address(sender)
    answer_to = next((normalize_address(a) for a in reply_to if kind_of(a) == PROFESSIONAL), None)
    if answer_to == professional:
        answer_to = None
    patients = dict.fromkeys(normalize_address(r) for r in recipients if kind_of(r) == PATIENT)
    return [
        ConversationUpdate(professional=professional, patient=patient, reply_to=answer_to, closes=closes)
        for patient in patients
    ]
