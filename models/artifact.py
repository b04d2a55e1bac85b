"""Model artifacts: numpy arrays plus a JSON manifest, content-addressed.

Why not pickle/joblib: loading a pickle runs code chosen by whoever wrote the
file, and model files travel (analyst laptop -> compacted topic -> every
worker).  An artifact here is a directory with ``arrays.npz`` (read with
``allow_pickle=False``: plain numeric/string arrays only) and ``manifest.json``
naming each array's dtype and shape plus a SHA-256 over the canonical manifest
body and every array's bytes.  The model version *is* that hash
(``"sha256:" + 16 hex``), so every verdict can name exactly which model decided,
and any edit to arrays or metadata is detected at load and raises `ModelError`.

The hash detects corruption and tampering by anyone who does not also rewrite
the manifest; authenticity against that stronger attacker needs a signature over
the manifest (see ``holdgate.signing``), which this module leaves to its caller.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import numpy as np
import orjson

from holdgate.errors import ModelError

__all__ = ["ARTIFACT_FORMAT", "ARRAYS_FILE", "MANIFEST_FILE", "save_model", "load_model",
           "content_hash"]

ARTIFACT_FORMAT = "holdgate.model/1"
ARRAYS_FILE = "arrays.npz"
MANIFEST_FILE = "manifest.json"
_VERSION_HEX = 16
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_KINDS = frozenset("biufcU")  # never "O" (object = pickle) nor "V" (structured)


def _normalize(name: str, value: Any) -> np.ndarray:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelError(f"array name {name!r} must match {_NAME_RE.pattern}")
    a = np.asarray(value)
    if a.dtype.kind not in _KINDS:
        raise ModelError(f"array {name!r} has dtype {a.dtype} (only numeric/bool/str allowed)")
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a if a.flags.c_contiguous else a.copy(order="C")  # keeps 0-d arrays 0-d


def _spec(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in sorted(arrays.items())}


def content_hash(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """Hex SHA-256 over the canonical manifest body and the arrays' bytes."""
    h = hashlib.sha256()
    try:
        head = orjson.dumps({"format": ARTIFACT_FORMAT, "arrays": _spec(arrays), "meta": meta},
                            option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise ModelError(f"model meta is not JSON-serializable: {exc}") from None
    h.update(len(head).to_bytes(8, "little"))
    h.update(head)
    for _, a in sorted(arrays.items()):
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


def _atomic_write(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(path: str | os.PathLike[str], arrays: Mapping[str, Any],
               meta: Mapping[str, Any] | None = None) -> str:
    """Write the artifact directory ``path`` and return its model version.

    Files are written to temporaries and renamed, the manifest last, so a reader
    never sees a manifest that points at half-written arrays.
    """
    norm = {name: _normalize(name, a) for name, a in arrays.items()}
    if not norm:
        raise ModelError("a model needs at least one array")
    meta = dict(meta or {})
    digest = content_hash(norm, meta)
    version = f"sha256:{digest[:_VERSION_HEX]}"
    manifest = {"format": ARTIFACT_FORMAT, "model_version": version, "sha256": digest,
                "arrays": _spec(norm), "meta": meta}
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / ARRAYS_FILE, lambda f: np.savez(f, **norm))  # type: ignore[arg-type]
    _atomic_write(out / MANIFEST_FILE, lambda f: f.write(
        orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)))
    return version


def load_model(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify an artifact; returns ``(arrays, manifest)``.

    Raises `ModelError` when a file is missing or unreadable, an array is not
    what the manifest says, or the content hash does not match (tampering).
    """
    src = Path(path)
    try:
        manifest = orjson.loads((src / MANIFEST_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model manifest in {src}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{src / MANIFEST_FILE} is not a {ARTIFACT_FORMAT} manifest")
    spec, meta = manifest.get("arrays"), manifest.get("meta")
    if not isinstance(spec, dict) or not isinstance(meta, dict):
        raise ModelError("model manifest lacks its arrays/meta sections")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(src / ARRAYS_FILE, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(spec):
                raise ModelError("model arrays differ from the manifest's list")
            for name in spec:
                arrays[name] = npz[name]
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read model arrays in {src}: {exc}") from None
    for name, a in arrays.items():
        want = spec[name]
        if not isinstance(want, dict) or a.dtype.kind not in _KINDS or \
                want.get("dtype") != a.dtype.str or want.get("shape") != list(a.shape):
            raise ModelError(f"model array {name!r} does not match the manifest")
    digest = content_hash(arrays, meta)
    if digest != manifest.get("sha256") or \
            manifest.get("model_version") != f"sha256:{digest[:_VERSION_HEX]}":
        raise ModelError(f"model in {src} failed its content hash check (tampered or corrupt)")
    return arrays, manifest
