"""The single exception tree of holdgate.

Inside the decision engine a deny is a `Verdict`, never an exception: these
errors are for callers (bad configuration, invalid bundles, a guard refusing to
run a tool) where stopping is the right, fail-closed answer.

    HoldgateError
    ├── ConfigError            settings or flags that cannot work
    ├── ValidationError        a wire record that breaks the schema (names the field)
    ├── PolicyError            a Cedar bundle that cannot be loaded
    │   └── PolicyTestFailure  bundle cases whose decision differs from the expectation
    ├── ModelError             a baseline/model artifact that cannot be loaded
    ├── KafkaSetupError        the local broker could not be fetched/started/stopped
    ├── GateError              the client SDK could not talk to the gate
    └── ActionDenied           raised by `Gate.guard`; carries the deny `Verdict`
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.events import Verdict

__all__ = [
    "HoldgateError",
    "ConfigError",
    "ValidationError",
    "PolicyError",
    "PolicyTestFailure",
    "ModelError",
    "KafkaSetupError",
    "GateError",
    "ActionDenied",
]


class HoldgateError(Exception):
    """Root of every error holdgate raises on purpose."""


class ConfigError(HoldgateError):
    """Settings or flags that cannot work together."""


class ValidationError(HoldgateError):
    """A wire record broke its schema; `field` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PolicyError(HoldgateError):
    """A policy bundle could not be parsed, validated or evaluated at load."""


class PolicyTestFailure(PolicyError):
    """One or more bundle cases did not get their expected decision."""

    def __init__(self, failures: list[Any]) -> None:
        super().__init__(f"{len(failures)} policy case(s) failed")
        self.failures = failures


class ModelError(HoldgateError):
    """A model artifact is missing, tampered with, or of an unknown format."""


class KafkaSetupError(HoldgateError):
    """The project's local Kafka could not be fetched, formatted, started or stopped."""


class GateError(HoldgateError):
    """The SDK could not reach the gate (it still fails closed: check() returns a deny)."""


class ActionDenied(HoldgateError):
    """Raised by `Gate.guard` when the verdict is not a verified allow."""

    def __init__(self, verdict: Verdict) -> None:
        codes = ", ".join(r.code for r in verdict.reasons) or "DENY"
        super().__init__(f"action {verdict.request_id} denied: {codes}")
        self.verdict = verdict
