"""check(..., with_proof=True): the verdict plus the evidence an executor verifies on its own."""
from __future__ import annotations

import dataclasses

from test_sdk_mock import AGENT, SIGNER, TICKET, TRUST, agate, gate, worker

from holdgate.client import Checked, SignedVerdict
from holdgate.client.mock import MockBroker
from holdgate.events import Verdict, action_digest, decode_verdict, encode
from holdgate.keys import Signer
from holdgate.reasons import INVALID_VERDICT, NO_PERMIT, TIMEOUT
from holdgate.signing import read_signature, sign_headers, verify_record


def test_default_check_still_returns_a_bare_verdict() -> None:
    with gate(MockBroker(worker, signer=SIGNER)) as g:
        v = g.check(action="tickets.read", resource=TICKET)
    assert type(v) is Verdict and v.allowed


def test_allow_with_proof_carries_the_exact_signed_record_and_action_bytes() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    with gate(broker) as g:
        c = g.check(action="tickets.read", resource=TICKET, with_proof=True)
    assert isinstance(c, Checked) and c.allowed and c.signed is not None
    assert c.action == broker.actions[0].value                       # exactly as published
    assert c.verdict.action_digest == action_digest(c.action)
    assert c.signed.value == broker.verdicts[broker.actions[0].partition][0][0]
    assert verify_record(TRUST, c.signed.value, c.signed.headers) is None
    assert read_signature(c.signed.headers)[0] == SIGNER.key_id
    assert c.signed.verdict is c.verdict
    assert decode_verdict(c.signed.value).request_id == c.verdict.request_id


def test_worker_deny_with_proof_keeps_its_record() -> None:
    with gate(MockBroker(worker, signer=SIGNER)) as g:
        c = g.check(action="tickets.delete", resource=TICKET, with_proof=True)
    assert not c.allowed and c.verdict.codes == [NO_PERMIT]
    assert c.signed is not None and decode_verdict(c.signed.value).decision == "deny"


def test_local_denies_carry_no_record() -> None:
    """A timeout or an invalid verdict is the SDK's own deny: no worker evidence to show."""
    silent = MockBroker(lambda request: None, signer=SIGNER)
    with gate(silent) as g:
        c = g.check(action="tickets.read", resource=TICKET, timeout=0.2, with_proof=True)
    assert c.verdict.codes == [TIMEOUT] and c.signed is None
    assert c.action == silent.actions[0].value

    forger = Signer.generate()

    def forged(request: object) -> bytes:
        return encode(worker(request))  # type: ignore[arg-type]

    broker = MockBroker(forged, signer=forger)       # signed, but not by a trusted key
    with gate(broker) as g:
        c = g.check(action="tickets.read", resource=TICKET, with_proof=True)
    assert c.verdict.codes == [INVALID_VERDICT] and c.signed is None


def test_proof_survives_a_digest_rejection_as_a_local_deny() -> None:
    """A signed allow binding other bytes is rejected by the SDK: no record is attached."""
    def wrong_digest(request: object) -> Verdict:
        return dataclasses.replace(worker(request), action_digest="sha256:" + "0" * 64)  # type: ignore[arg-type]

    with gate(MockBroker(wrong_digest, signer=SIGNER)) as g:
        c = g.check(action="tickets.read", resource=TICKET, with_proof=True)
    assert c.verdict.codes == [INVALID_VERDICT] and c.signed is None


async def test_async_gate_with_proof() -> None:
    broker = MockBroker(worker, signer=SIGNER)
    async with agate(broker) as g:
        plain = await g.check(action="tickets.read", resource=TICKET)
        c = await g.check(action="tickets.read", resource=TICKET, with_proof=True)
    assert type(plain) is Verdict
    assert isinstance(c, Checked) and c.allowed and isinstance(c.signed, SignedVerdict)
    assert c.action == broker.actions[1].value
    assert c.signed.headers == sign_headers(SIGNER, c.signed.value)
    assert c.verdict.agent_id == AGENT
