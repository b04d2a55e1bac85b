"""Settings: env over defaults, flags over env, bad values refused, secrets not shown."""
from __future__ import annotations

import pytest

from holdgate.errors import ConfigError
from holdgate.settings import Settings


def test_env_then_overrides() -> None:
    s = Settings.from_env({"HOLDGATE_PARTITIONS": "8", "HOLDGATE_BATCH_WITHIN": "0.01",
                           "HOLDGATE_BOOTSTRAP": "k:1"}, bootstrap="k:2")
    assert (s.partitions, s.batch_within, s.bootstrap) == (8, 0.01, "k:2")


def test_round_trip_through_env() -> None:
    s = Settings(partitions=3, signing_key_file="/keys/worker.key", app_id="x",
                 max_clock_skew=5.0, trusted_keys="/keys/a.pub,/keys/b.pub")
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize("env, words", [
    ({"HOLDGATE_PARTITIONS": "many"}, "HOLDGATE_PARTITIONS='many' is not an integer"),
    ({"HOLDGATE_PARTITIONS": "0"}, "partitions must be >= 1"),
    ({"HOLDGATE_VERDICTS_TOPIC": "holdgate.actions"}, "must differ"),
    ({"HOLDGATE_SIGNALS": "maybe"}, "signals must be"),
])
def test_bad_values_are_refused_with_the_name(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings.from_env(env)


def test_a_worker_without_a_key_refuses_and_a_readable_key_is_refused(tmp_path: object) -> None:
    import os

    from holdgate.keys import generate_keypair

    with pytest.raises(ConfigError, match="holdgate keys generate"):
        Settings().signer()
    private, _, _ = generate_keypair(str(tmp_path), "worker")
    assert Settings(signing_key_file=str(private)).signer().key_id.startswith("ed25519:")
    os.chmod(private, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Settings(signing_key_file=str(private)).signer()
