"""Client tests share one fixture: a real-broker responder standing in for the worker."""
from __future__ import annotations

from typing import Iterator

import pytest
from test_sdk_responder import Responder, running_responder

from holdgate.settings import Settings


@pytest.fixture
def responder(gate_settings: Settings) -> Iterator[Responder]:
    with running_responder(gate_settings) as r:
        yield r
