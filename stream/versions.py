"""Published artifacts to loaded bundles and models, and folders to checked artifacts.

Both directions check the version, because the version is the promise every
verdict makes: ``policy_version`` / ``model_version`` name exactly what
decided.  A bundle's version is the hash of its three files
(`holdgate.policies.bundle.bundle_version`), a model's the hash of its arrays
and manifest (`holdgate.models.artifact`), the same strings
`holdgate.stream.worker.build_snapshot` puts in a `Snapshot`.  So:

* `policy_artifact` / `model_artifact` refuse to make an artifact of anything
  a worker would refuse: a bundle that does not load or fails one of its cases
  (exactly `holdgate policy test`), a model that does not load;
* `load_policy` / `load_model` refuse an artifact whose files do not hash to
  the version it claims (tampered, corrupt, or published by a buggy tool).

Policy artifacts carry the three hashed files only; the cases stay with the
analyst (they are checked before publishing, and are not part of the version).
Model artifacts carry ``arrays.npz`` and ``manifest.json``; loading one writes
them to a private temporary folder (the loader reads folders), never runs code.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from holdgate.artifacts import Artifact
from holdgate.errors import ModelError, PolicyError, PolicyTestFailure

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.models.baseline_model import BaselineModel
    from holdgate.policies import PolicyBundle

__all__ = ["MODEL_FILES", "POLICY_FILES", "load_model", "load_policy", "model_artifact",
           "policy_artifact"]

POLICY_FILES = ("policy.cedar", "schema.cedarschema", "entities.json")
MODEL_FILES = ("arrays.npz", "manifest.json")


def _expect_files(artifact: Artifact, kind: str, names: tuple[str, ...],
                  error: type[PolicyError | ModelError]) -> None:
    if artifact.kind != kind:
        raise error(f"published {artifact.kind} {artifact.version} is not a {kind}")
    if set(artifact.files) != set(names):
        raise error(f"published {kind} {artifact.version} has files "
                    f"{sorted(artifact.files)}; a {kind} is exactly {list(names)}")


def load_policy(artifact: Artifact) -> PolicyBundle:
    """Parse and validate a published bundle in memory; its version must be its claim."""
    from holdgate.policies import PolicyBundle
    from holdgate.policies.bundle import BUNDLE_FILES

    assert tuple(BUNDLE_FILES) == POLICY_FILES, "policy bundle layout changed"
    _expect_files(artifact, "policy", POLICY_FILES, PolicyError)
    try:
        texts = {n: artifact.files[n].decode("utf-8") for n in POLICY_FILES}
    except UnicodeDecodeError as exc:
        raise PolicyError(f"published policy {artifact.version}: a file is not UTF-8: "
                          f"{exc}") from None
    bundle = PolicyBundle.from_sources(policy=texts["policy.cedar"],
                                       schema=texts["schema.cedarschema"],
                                       entities=texts["entities.json"],
                                       origin=f"published policy {artifact.version}")
    if bundle.version != artifact.version:
        raise PolicyError(f"published policy {artifact.version} hashes to {bundle.version}: "
                          "its files are not the ones published under that version "
                          "(tampered or corrupt); refused")
    return bundle


def load_model(artifact: Artifact) -> BaselineModel:
    """Verify and load a published model (from a private temporary folder)."""
    from holdgate.models.baseline_model import BaselineModel

    _expect_files(artifact, "model", MODEL_FILES, ModelError)
    with tempfile.TemporaryDirectory(prefix="holdgate-model-") as tmp:
        for name in MODEL_FILES:
            (Path(tmp) / name).write_bytes(artifact.files[name])
        try:
            model = BaselineModel.load(tmp)
        except ModelError as exc:
            raise ModelError(f"published model {artifact.version}: "
                             f"{str(exc).replace(tmp, '<artifact>')}") from None
    if model.version != artifact.version:
        raise ModelError(f"published model {artifact.version} hashes to {model.version}: its "
                         "files are not the ones published under that version (tampered or "
                         "corrupt); refused")
    return model


def policy_artifact(directory: str | Path, *, by: str, note: str = "", name: str = "default",
                    published_at: float | None = None) -> Artifact:
    """A checked policy artifact of the bundle folder: loads, and passes all its cases.

    Raises `PolicyError` (does not load, or has no cases) or `PolicyTestFailure`
    (carrying the failed `CaseResult`s), as ``holdgate policy test`` would fail.
    """
    from holdgate.policies import PolicyBundle, run_cases

    bundle = PolicyBundle.load(directory)
    results = run_cases(bundle)
    if not results:
        raise PolicyError(f"{directory} has no cases (cases/allow, cases/deny, "
                          "cases/pending): a bundle is published only with the cases that "
                          "show what it decides")
    failed = [r for r in results if not r.ok]
    if failed:
        raise PolicyTestFailure(failed)
    # The texts the bundle was validated from (line endings as loaded), so the worker
    # parses exactly what was tested and hashes it to the same version.
    artifact = Artifact(kind="policy", version=bundle.version, name=name, by=by, note=note,
                        files={n: bundle.sources[n].encode("utf-8") for n in POLICY_FILES},
                        published_at=published_at or time.time())
    load_policy(artifact)
    return artifact


def model_artifact(directory: str | Path, *, by: str, note: str = "", name: str = "default",
                   published_at: float | None = None) -> Artifact:
    """A checked model artifact of a folder written by ``holdgate fit``.

    Raises `ModelError` when the model does not load (missing, tampered, other
    features than this holdgate computes).
    """
    from holdgate.models.baseline_model import BaselineModel

    root = Path(directory)
    model = BaselineModel.load(root)
    try:
        files = {n: (root / n).read_bytes() for n in MODEL_FILES}
    except OSError as exc:
        raise ModelError(f"cannot read model {root}: {exc}") from None
    artifact = Artifact(kind="model", version=model.version, name=name, by=by, note=note,
                        files=files, published_at=published_at or time.time())
    load_model(artifact)       # the files read now are the files that loaded
    return artifact
