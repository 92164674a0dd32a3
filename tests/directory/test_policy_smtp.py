"""The messaging policy through SMTP: smtplib against real servers (submission and relay)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path

from directory.policy import ConversationState

from peers import bundle, trust_file
from servers import Instance, ServerFactory, free_port

PATIENT = "146026322000196@patient.a.test"
OTHER_PATIENT = "2850175123456@patient.a.test"
Refused = dict[str, tuple[int, bytes]]


async def _account(inst: Instance, address: str, password: str = "correct horse battery") -> str:
    await inst.runtime.accounts.create(address, password, actor="test")
    inst.passwords[address] = password
    return address


def _send(inst: Instance, user: str, rcpts: list[str], subject: str = "Avis", *headers: str) -> Refused:
    """Submit a message; the recipients refused (all of them when none was accepted)."""
    client = smtplib.SMTP("127.0.0.1", inst.settings.submission_port, timeout=10)
    try:
        client.starttls(context=inst.client_tls())
        client.login(user, inst.passwords[user])
        extra = "".join(f"{h}\r\n" for h in headers)
        body = f"From: {user}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n{extra}\r\nTexte.\r\n"
        try:
            return client.sendmail(user, rcpts, body.encode())
        except smtplib.SMTPRecipientsRefused as exc:
            return dict(exc.recipients)
    finally:
        client.close()


async def send(inst: Instance, user: str, rcpts: list[str], subject: str = "Avis", *headers: str) -> Refused:
    return await asyncio.to_thread(_send, inst, user, rcpts, subject, *headers)


def assert_refused(refused: Refused, address: str, sentence: bytes) -> None:
    code, text = refused[address]
    assert code == 550 and text.startswith(b"5.7.1 "), (code, text)
    assert sentence in text, text


async def conversation(
    inst: Instance, patient: str, *, closed: bool, timeout: float = 10.0
) -> ConversationState:
    """The patient's only conversation once it is open (or closed). A relayed message becomes
    visible in the mailbox a moment before the conversation it opens is recorded (the write
    follows the delivery's commit, directory/conversations.py)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        states = await inst.runtime.policy.conversations_of(patient)
        if (len(states) == 1 and states[0].closed == closed) or loop.time() > deadline:
            [state] = states
            return state
        await asyncio.sleep(0.05)


async def _start(servers: ServerFactory) -> Instance:
    return await servers.start("a", domains=["a.test", "patient.a.test"])


async def test_patient_answers_only_an_open_conversation(servers):
    a = await _start(servers)
    doctor = await a.add_account("dr.martin")
    patient = await _account(a, PATIENT)

    refused = await send(a, patient, [doctor], "Bonjour docteur")
    assert_refused(refused, doctor, b"A patient can only answer a professional who wrote to them first")

    assert await send(a, doctor, [patient], "Vos résultats") == {}  # professional -> patient
    assert len(await a.wait_for_messages(patient, 1)) == 1
    assert await send(a, patient, [doctor], "Merci") == {}
    [answer] = await a.wait_for_messages(doctor, 1)
    assert b"Subject: Merci" in answer

    # Closed with the header: the patient's answer is refused.
    assert await send(a, doctor, [patient], "Bonne continuation", "X-MSS-MES: FIN") == {}
    assert_refused(
        await send(a, patient, [doctor], "Encore une question"), doctor, b"closed this conversation"
    )
    # A new message from the professional reopens it.
    assert await send(a, doctor, [patient], "Un complément") == {}
    assert await send(a, patient, [doctor], "Question") == {}
    # Closed with the subject exactly [FIN].
    assert await send(a, doctor, [patient], "[FIN]") == {}
    assert_refused(await send(a, patient, [doctor], "Et après ?"), doctor, b"closed this conversation")
    assert len(await a.wait_for_messages(patient, 4)) == 4  # every professional message arrived
    assert len(await a.messages(doctor)) == 2  # only the two allowed answers

    [state] = await a.runtime.policy.conversations_of(patient)
    assert state.professional == doctor and state.closed and state.reply_to is None


async def test_patient_never_writes_to_patients_nor_to_added_recipients(servers):
    a = await _start(servers)
    doctor = await a.add_account("dr.martin")
    colleague = await a.add_account("dr.bernard")
    patient = await _account(a, PATIENT)
    other_patient = await _account(a, OTHER_PATIENT)

    assert await send(a, doctor, [patient, other_patient], "Campagne de vaccination") == {}
    assert_refused(
        await send(a, patient, [other_patient], "Salut"), other_patient, b"cannot write to another patient"
    )
    refused = await send(a, patient, [doctor, colleague], "Merci")
    assert list(refused) == [colleague]
    assert_refused(refused, colleague, b"who wrote to them first")
    await a.wait_for_messages(doctor, 1)
    assert await a.messages(colleague) == []
    assert len(await a.messages(other_patient)) == 1  # the doctor's message only


async def test_patient_answers_the_reply_to_address(servers):
    a = await _start(servers)
    doctor = await a.add_account("dr.martin")
    secretariat = await a.add_account("secretariat")
    colleague = await a.add_account("dr.bernard")
    patient = await _account(a, PATIENT)

    assert_refused(await send(a, patient, [secretariat], "Rendez-vous"), secretariat, b"wrote to them first")
    reply_to = f"Reply-To: =?utf-8?q?Secr=C3=A9tariat?= <{secretariat}>"
    assert await send(a, doctor, [patient], "Prenez rendez-vous", reply_to) == {}
    assert await send(a, patient, [secretariat], "Rendez-vous") == {}
    assert await send(a, patient, [doctor], "Merci") == {}
    assert_refused(await send(a, patient, [colleague], "Bonjour"), colleague, b"wrote to them first")
    assert len(await a.wait_for_messages(secretariat, 1)) == 1
    # Closing the doctor's conversation closes the Reply-To's door too.
    assert await send(a, doctor, [patient], "Fin du suivi", "X-MSS-MES: FIN") == {}
    assert_refused(await send(a, patient, [secretariat], "Encore"), secretariat, b"closed this conversation")


def _inbound_rcpt(peer: Instance, operator_tls: Path, sender: str, rcpt: str) -> tuple[int, bytes]:
    """MAIL and RCPT on ``peer``'s inbound port, as the operator whose certificate is in
    ``operator_tls``."""
    context = ssl.create_default_context(cafile=str(peer.ca))
    context.load_cert_chain(str(operator_tls / "server.pem"), str(operator_tls / "server.key"))
    client = smtplib.SMTP("127.0.0.1", peer.settings.smtp_port, timeout=10)
    try:
        client.starttls(context=context)
        client.ehlo("mx.a.test")
        code, text = client.mail(sender)
        assert code == 250, text
        return client.rcpt(rcpt)
    finally:
        client.close()


async def test_conversation_opened_by_another_operators_professional(servers, tmp_path):
    """The conversation is recorded when the professional's message arrives on the inbound
    port; the patient's answer then leaves through submission and is accepted by the peer,
    which recorded the same conversation at its submission."""
    cache = servers.tls_cache
    cas = bundle(tmp_path / "peers.pem", cache / "a" / "ca.pem", cache / "b" / "ca.pem")
    a_port, b_port = free_port(), free_port()
    a = await servers.start(
        "a",
        domains=["a.test", "patient.a.test"],
        smtp_port=a_port,
        peer_ca_file=cas,
        trust_list=trust_file(tmp_path / "trust-a.txt", "b.test | CN=mx.b.test, O=Operator B"),
        routes={"b.test": f"127.0.0.1:{b_port}"},
        queue_retry_schedule=[0.3],
    )
    b = await servers.start(
        "b",
        smtp_port=b_port,
        peer_ca_file=cas,
        trust_list=trust_file(
            tmp_path / "trust-b.txt",
            "a.test | CN=mx.a.test, O=Operator A",
            "patient.a.test | CN=mx.a.test, O=Operator A",
        ),
        routes={"a.test": f"127.0.0.1:{a_port}", "patient.a.test": f"127.0.0.1:{a_port}"},
        queue_retry_schedule=[0.3],
    )
    doctor = await b.add_account("dr.lefebvre")
    patient = await _account(a, PATIENT)

    assert_refused(await send(a, patient, [doctor], "Bonjour"), doctor, b"wrote to them first")
    # B applies the policy itself to what another operator sends: A's certificate, A's patient.
    code, text = await asyncio.to_thread(_inbound_rcpt, b, cache / "a", patient, doctor)
    assert code == 550 and text.startswith(b"5.7.1") and b"wrote to them first" in text
    assert await send(b, doctor, [patient], "Compte rendu", "Reply-To: accueil@b.test") == {}
    assert len(await a.wait_for_messages(patient, 1)) == 1
    state = await conversation(a, patient, closed=False)
    assert (state.professional, state.reply_to, state.closed) == (doctor, "accueil@b.test", False)

    assert await send(a, patient, [doctor], "Merci") == {}
    [answer] = await b.wait_for_messages(doctor, 1)
    assert b"Subject: Merci" in answer
    assert (await b.runtime.policy.conversations_of(patient))[0].professional == doctor

    # The peer closes it: its FIN arrives, and the patient can no longer answer.
    assert await send(b, doctor, [patient], "[FIN]") == {}
    await a.wait_for_messages(patient, 2)
    assert (await conversation(a, patient, closed=True)).closed  # recorded with the delivery
    assert_refused(await send(a, patient, [doctor], "Encore"), doctor, b"closed this conversation")
