"""Model artifacts: npz + manifest roundtrip, content-hash versions, tamper detection."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest

from holdgate.errors import ModelError
from holdgate.models import load_model, save_model
from holdgate.models.artifact import ARRAYS_FILE, MANIFEST_FILE


def sample() -> dict[str, np.ndarray]:
    return {"mean": np.arange(4, dtype=np.float64), "counts": np.array([[1, 2], [3, 4]], np.uint16),
            "names": np.array(["rate_1s", "fanout_60s"]), "flag": np.array(True)}


def test_roundtrip(tmp_path: Path) -> None:
    version = save_model(tmp_path / "m", sample(), {"kind": "test", "features": ["a", "b"]})
    arrays, manifest = load_model(tmp_path / "m")
    assert version.startswith("sha256:") and len(version) == 7 + 16
    assert manifest["model_version"] == version and manifest["meta"]["kind"] == "test"
    assert set(arrays) == set(sample())
    for name, a in sample().items():
        assert arrays[name].dtype == a.dtype and np.array_equal(arrays[name], a)
    assert manifest["arrays"]["counts"] == {"dtype": "<u2", "shape": [2, 2]}


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    v1 = save_model(tmp_path / "a", sample(), {"k": 1})
    v2 = save_model(tmp_path / "b", sample(), {"k": 1})
    changed = dict(sample(), mean=np.arange(4, dtype=np.float64) + 1e-12)
    assert v1 == v2
    assert save_model(tmp_path / "c", changed, {"k": 1}) != v1
    assert save_model(tmp_path / "d", sample(), {"k": 2}) != v1
    assert save_model(tmp_path / "e", dict(sample(), mean=np.arange(4.0).astype(">f8")),
                      {"k": 1}) == v1  # byte order normalized


def _rewrite_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def test_tampered_array_is_detected(tmp_path: Path) -> None:
    save_model(tmp_path, sample(), {})
    evil = dict(sample(), mean=np.array([0.0, 1.0, 2.0, 300.0]))
    _rewrite_npz(tmp_path / ARRAYS_FILE, evil)
    with pytest.raises(ModelError, match="hash"):
        load_model(tmp_path)


def test_tampered_meta_is_detected(tmp_path: Path) -> None:
    save_model(tmp_path, sample(), {"threshold": 900})
    m = orjson.loads((tmp_path / MANIFEST_FILE).read_bytes())
    m["meta"]["threshold"] = 1000
    (tmp_path / MANIFEST_FILE).write_bytes(orjson.dumps(m))
    with pytest.raises(ModelError):
        load_model(tmp_path)


def test_flipped_byte_in_npz_is_detected(tmp_path: Path) -> None:
    save_model(tmp_path, {"w": np.zeros(1000)}, {})
    raw = bytearray((tmp_path / ARRAYS_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / ARRAYS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelError):
        load_model(tmp_path)


def test_extra_or_missing_arrays_are_detected(tmp_path: Path) -> None:
    save_model(tmp_path, sample(), {})
    _rewrite_npz(tmp_path / ARRAYS_FILE, dict(sample(), extra=np.zeros(1)))
    with pytest.raises(ModelError):
        load_model(tmp_path)
    arrays = sample()
    del arrays["flag"]
    _rewrite_npz(tmp_path / ARRAYS_FILE, arrays)
    with pytest.raises(ModelError):
        load_model(tmp_path)


def test_pickled_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    save_model(tmp_path, {"w": np.zeros(2)}, {})
    m = orjson.loads((tmp_path / MANIFEST_FILE).read_bytes())
    m["arrays"]["w"]["dtype"] = "|O"
    (tmp_path / MANIFEST_FILE).write_bytes(orjson.dumps(m))
    with zipfile.ZipFile(tmp_path / ARRAYS_FILE, "w") as z:  # object array = pickle inside
        buf = io.BytesIO()
        np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
        z.writestr("w.npy", buf.getvalue())
    with pytest.raises(ModelError):
        load_model(tmp_path)


def test_unsafe_inputs_are_refused_at_save(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        save_model(tmp_path, {"o": np.array([object()], dtype=object)}, {})
    with pytest.raises(ModelError):
        save_model(tmp_path, {"../x": np.zeros(1)}, {})
    with pytest.raises(ModelError):
        save_model(tmp_path, {"w": np.zeros(1)}, {"bad": object()})
    with pytest.raises(ModelError):
        save_model(tmp_path, {}, {})


def test_missing_or_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        load_model(tmp_path / "nope")
    save_model(tmp_path, sample(), {})
    (tmp_path / ARRAYS_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelError):
        load_model(tmp_path)
    (tmp_path / MANIFEST_FILE).write_bytes(b"{")
    with pytest.raises(ModelError):
        load_model(tmp_path)
