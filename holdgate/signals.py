"""The signal vocabulary: the one list of behavioural signal names and their zero record.

Signals are computed by `holdgate.models`, read by Cedar policies as
``context.signals.<name>`` (`holdgate.policies`), recorded in every verdict and
read back by analysts.  Three layers speak this vocabulary, so it lives in the
lowest one, once: a name added here is known to the policy validator, the
signal computer and the wire schema at the same time.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = ["SIGNAL_NAMES", "ZERO_SIGNALS"]

#: In the order the signal computer produces them (the order of a feature row).
SIGNAL_NAMES: tuple[str, ...] = (
    "rate_1s", "rate_60s", "rate_1h",
    "action_rate_1s", "action_rate_60s", "action_rate_1h",
    "repeat_10s", "streak", "fanout_60s",
    "new_action", "new_resource_type", "deny_ratio_pct", "anomaly",
)

#: Every signal at 0: what a policy sees for a signal nobody computed.
ZERO_SIGNALS: Mapping[str, int] = MappingProxyType(dict.fromkeys(SIGNAL_NAMES, 0))
