"""Reason codes: the closed vocabulary every verdict speaks.

A deny always carries at least one of these, so executors, dashboards and
auditors can switch on a code instead of parsing prose.  Codes from policy
rules come from their `@code` annotation and are free-form upper snake case;
the ones below are the codes holdgate itself emits.
"""
from __future__ import annotations

__all__ = [
    "PERMITTED", "NO_PERMIT", "FORBIDDEN", "POLICY_ERROR", "MALFORMED",
    "UNKNOWN_AGENT", "UNKNOWN_RESOURCE_TYPE", "TIMEOUT", "UNAVAILABLE",
    "STATE_RECOVERING", "CLOCK_SKEW", "RATE_LIMIT", "REPETITION", "FANOUT",
    "ANOMALY", "INVALID_VERDICT", "INTERNAL_ERROR", "SUSPENDED", "EXPIRED", "TOO_LARGE",
    "DUPLICATE_REQUEST", "REVOKED", "APPROVAL_INVALID", "APPROVAL_UNMATCHED",
    "APPROVAL_MISMATCH", "APPROVAL_WRONG_ROLE", "APPROVAL_EXPIRED",
]

PERMITTED = "PERMITTED"                  # a permit policy matched and no forbid did
NO_PERMIT = "NO_PERMIT"                  # Cedar's default deny: nothing permits it
FORBIDDEN = "FORBIDDEN"                  # a forbid policy without its own @code matched
POLICY_ERROR = "POLICY_ERROR"            # a policy raised while evaluating: fail closed
MALFORMED = "MALFORMED"                  # the request could be identified but not parsed
UNKNOWN_AGENT = "UNKNOWN_AGENT"          # principal not in the entity store
UNKNOWN_RESOURCE_TYPE = "UNKNOWN_RESOURCE_TYPE"  # resource type not in the schema
TIMEOUT = "TIMEOUT"                      # SDK: no verdict before the deadline
UNAVAILABLE = "UNAVAILABLE"              # SDK: the gate's topics/broker cannot be reached
STATE_RECOVERING = "STATE_RECOVERING"    # per-agent state not caught up: limits unknowable
CLOCK_SKEW = "CLOCK_SKEW"                # occurred_at too far from the worker's clock
RATE_LIMIT = "RATE_LIMIT"
REPETITION = "REPETITION"
FANOUT = "FANOUT"
ANOMALY = "ANOMALY"
INVALID_VERDICT = "INVALID_VERDICT"      # SDK: verdict failed signature/digest/expiry checks
INTERNAL_ERROR = "INTERNAL_ERROR"        # worker bug caught at the batch boundary
SUSPENDED = "SUSPENDED"                  # operator kill switch: actions, agents or roles paused
REVOKED = "REVOKED"                      # operator kill switch: the agent is revoked
EXPIRED = "EXPIRED"                      # decided after the runtime's deadline: never an allow
TOO_LARGE = "TOO_LARGE"                  # action record above the configured size limit
DUPLICATE_REQUEST = "DUPLICATE_REQUEST"  # dead letter: a request_id already decided for the agent
# Dead letters of the approvals topic: a token that lifted nothing, and why.
APPROVAL_INVALID = "APPROVAL_INVALID"      # not a token, or not signed by a key of its role
APPROVAL_UNMATCHED = "APPROVAL_UNMATCHED"  # no such action is held (decided, used, never held)
APPROVAL_MISMATCH = "APPROVAL_MISMATCH"    # the token names other bytes or another agent
APPROVAL_WRONG_ROLE = "APPROVAL_WRONG_ROLE"  # the hold awaits another approver role
APPROVAL_EXPIRED = "APPROVAL_EXPIRED"      # the token expired before it arrived
