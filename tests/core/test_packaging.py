"""The wheel is what users get: every module and all policy data must be in it."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"holdgate": "holdgate", "stream": "holdgate/stream", "models": "holdgate/models",
           "policies": "holdgate/policies"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("HOLDGATE_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)
    return next(out.glob("holdgate-*.whl"))


def _expected(suffixes: tuple[str, ...]) -> set[str]:
    want = set()
    for folder, target in FOLDERS.items():
        for path in (REPO / folder).rglob("*"):
            if path.suffix in suffixes and "__pycache__" not in path.parts:
                rel = path.relative_to(REPO / folder)
                if folder == "holdgate" and rel.parts[0] in ("stream", "models", "policies"):
                    continue
                want.add(f"{target}/{rel.as_posix()}")
    return want


def test_wheel_has_every_module_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _expected((".py", ".cedar", ".cedarschema", ".json")) - names
    assert not missing, f"missing from {wheel.name}: {sorted(missing)}"
    assert any(n.startswith("holdgate/policies/default/cases/allow/") for n in names)
    assert "holdgate/schemas/action_request.schema.json" in names
    assert not any(n.startswith(("stream/", "models/", "policies/")) for n in names), \
        "top-level folders must install under holdgate/"


def test_every_module_imports() -> None:
    import holdgate

    root = Path(holdgate.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        mod = ".".join(("holdgate", *path.relative_to(root).with_suffix("").parts))
        importlib.import_module(mod.removesuffix(".__init__"))


@pytest.mark.skipif(not os.environ.get("HOLDGATE_TEST_INSTALLED"),
                    reason="only when the suite runs against the installed wheel (./dev test)")
def test_suite_runs_against_the_installed_package_not_the_checkout() -> None:
    import holdgate
    import holdgate.stream

    assert "site-packages" in holdgate.__file__, holdgate.__file__
    assert "site-packages" in holdgate.stream.__file__


def test_no_code_imports_a_bare_top_level_folder() -> None:
    offenders = []
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                s = line.strip()
                if s.startswith(("import stream", "import models", "import policies",
                                 "from stream", "from models", "from policies")):
                    offenders.append(f"{path.relative_to(REPO)}: {s}")
    assert not offenders, offenders
