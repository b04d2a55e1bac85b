"""States the previous release left in changelogs (codec v2) still decode, exactly.

The fixture (``data/state_v2.json``, see `state_fixture`) holds blobs written by
the codec-v2 code itself and the signals that code computed after decoding them.
The current code must decode the same blobs into states that go on computing the
very same signals, whether it keeps them decoded or writes them back in its own
layout first; and a damaged blob of either layout must fail closed (`ModelError`,
which the stream turns into a STATE_RECOVERING deny), as it always did.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import reference_signals as ref
import state_fixture

from holdgate.errors import ModelError
from holdgate.models import AgentState, SignalComputer, SignalConfig
from holdgate.models.state import CODEC_VERSION, request_key

DATA = json.loads((Path(__file__).parent / "data" / "state_v2.json").read_text())


def _follow(agent: str, state: AgentState) -> list[list[int]]:
    comp = SignalComputer(config=SignalConfig(**DATA["config"]))
    live = {agent: state}
    rows = []
    for j, req in enumerate(state_fixture.follow_ups(agent, state.clock)):
        rows.append(list(comp.observe_batch(live, [req])[0].values()))
        comp.record_outcomes(live, [req], [j % 3 == 1])
    return rows


@pytest.mark.parametrize("agent", state_fixture.AGENTS)
def test_v2_blob_decodes_and_computes_as_the_previous_release(agent: str) -> None:
    blob = bytes.fromhex(DATA["blobs"][agent])
    assert blob[:5] == b"HGAS\x02"
    st = AgentState.from_bytes(blob)
    assert st.clock == st.last_seen == DATA["clocks"][agent]
    for rid in DATA["remembered"][agent]:
        assert st.has_request(request_key(rid))
    assert not st.has_request(request_key("never-seen"))
    assert _follow(agent, st) == DATA["follow"][agent]


@pytest.mark.parametrize("agent", state_fixture.AGENTS)
def test_v2_blob_rewritten_by_the_current_code_computes_the_same(agent: str) -> None:
    v3 = AgentState.from_bytes(bytes.fromhex(DATA["blobs"][agent])).to_bytes()
    assert v3[4] == CODEC_VERSION
    st = AgentState.from_bytes(v3)
    assert st.to_bytes() == v3
    assert st.clock == DATA["clocks"][agent]
    for rid in DATA["remembered"][agent]:
        assert st.has_request(request_key(rid))
    assert _follow(agent, st) == DATA["follow"][agent]


def test_fixture_is_what_the_frozen_reference_writes() -> None:
    """The reference is the codec-v2 code: the scenario on it gives the stored bytes."""
    comp = ref.SignalComputer(config=ref.SignalConfig(**DATA["config"]))
    again = state_fixture.run(comp, ref.AgentState, ref.request_key)
    assert again == DATA


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


@pytest.mark.parametrize("layout", ["v2", "current"])
def test_damaged_blobs_of_either_layout_fail_closed(layout: str) -> None:
    good = bytes.fromhex(DATA["blobs"]["fx-busy"])
    if layout == "current":
        good = AgentState.from_bytes(good).to_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x08
    bad: dict[str, Any] = {
        "bit flip": bytes(flipped), "truncated": good[:-3], "extended": good + b"\x00",
        "bad magic": b"HGAX" + good[4:], "empty": b"", "header only": good[:12],
        "body without crc": good[:-4],
    }
    for version in (0, 4, 99, 255):          # unknown versions, even with a valid CRC
        bad[f"v{version}"] = _with_crc(good[:4] + bytes((version,)) + good[5:-4])
    for name, blob in bad.items():
        try:
            AgentState.from_bytes(blob)
        except ModelError:
            continue
        pytest.fail(f"{name}: decoded without an error")


def test_a_v2_baseline_no_agent_could_have_fails_on_reading() -> None:
    """A NaN in a v2 blob's online baseline (CRC and all): refused on reading, as the
    stream needs, rather than scored on the agent's next action."""
    good = bytes.fromhex(DATA["blobs"]["fx-busy"])
    n_recent = good[36]                       # after the 36-byte v2 header
    at = 36 + 1 + 8 * n_recent + 1 + 8 * good[36 + 1 + 8 * n_recent] + 2 * 37
    assert struct.unpack_from("<d", good, at)[0] >= 1.0          # the observation count
    with pytest.raises(ModelError):
        AgentState.from_bytes(_with_crc(good[:at] + struct.pack("<d", math.nan)
                                        + good[at + 8:-4]))
