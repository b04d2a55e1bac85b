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
#:
#: Counters (event time, this action included; the 1 h windows count *allowed*
#: actions only, so an agent throttled once is not locked out for an hour):
#:   rate_1s, rate_60s, rate_1h, action_rate_1s/60s/1h, repeat_10s, streak,
#:   fanout_60s, fanout_10m (distinct resources in ~10 min, capped at 64),
#:   new_action, new_resource_type, deny_ratio_pct
#: Model: anomaly (0..1000; > 900 is beyond the fitted threshold)
#: Relative to the agent's fitted baseline (its role's when its history is
#: thin; fleet defaults equal to the old fixed thresholds without a model), in
#: percent rounded up, so ``> 100`` means "above this agent's normal":
#:   rate_1s_pct, rate_60s_pct, rate_1h_pct, action_rate_1s_pct, fanout_pct,
#:   fanout_10m_pct
#: Fitted profile (0 without a model): unusual_action, unusual_resource_type
#: (never seen for this agent, or for its role when it is new), off_hours (the
#: agent is not usually active in this 3-hour block of the day).
SIGNAL_NAMES: tuple[str, ...] = (
    "rate_1s", "rate_60s", "rate_1h",
    "action_rate_1s", "action_rate_60s", "action_rate_1h",
    "repeat_10s", "streak", "fanout_60s",
    "new_action", "new_resource_type", "deny_ratio_pct", "anomaly",
    "rate_1s_pct", "rate_60s_pct", "rate_1h_pct", "action_rate_1s_pct", "fanout_pct",
    "unusual_action", "unusual_resource_type", "off_hours", "fanout_10m", "fanout_10m_pct",
)

#: Every signal at 0: what a policy sees for a signal nobody computed.
ZERO_SIGNALS: Mapping[str, int] = MappingProxyType(dict.fromkeys(SIGNAL_NAMES, 0))
