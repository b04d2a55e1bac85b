"""Validate a Compose file without Docker, the way `docker compose config` does.

Docker Compose v2 loads a file with compose-go: YAML (1.2), `${VAR}` interpolation,
the compose-spec JSON Schema, then its own consistency checks.  This does the same
steps in Python, with the schema compose-go itself embeds (vendored, pinned and
hashed in `compose-spec/`, see SOURCE.md there):

* YAML with YAML 1.2 scalars (``on``/``yes`` stay strings, ``80:80`` is no base-60
  number) and duplicate keys refused;
* interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
  ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``;
* the schema (JSON Schema 2020-12) with `jsonschema`;
* the checks of compose-go's ``loader/validate.go`` that a file of this project can
  trip: image or build, known depends_on services, declared volumes and networks,
  healthcheck test form, one mount per target, Go duration strings.

Not covered: ``.env`` files, ``include``/``extends``, anything needing the engine
(building the image, pulling, port availability).

    python docker/check_compose.py [FILE ...]        exit 1 on any problem
    python docker/check_compose.py --verify-vendored  re-download the pinned compose-go
                                                      module and compare the schema
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

__all__ = ["SCHEMA_PATH", "interpolate", "load", "load_yaml", "validate"]

HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "compose-spec" / "compose-spec.json"
COMPOSE_GO = "github.com/compose-spec/compose-go/v2"
COMPOSE_GO_VERSION = "v2.16.2"
ZIP_SHA256 = "75410c9723430b920592093014fc53641f6207e01b52c016c848ba62bf2da805"
SCHEMA_SHA256 = "f266dcbb043229405d7cedd5aec918f9102c2b3d5e3850808fdd8edd564a43ff"


# ── YAML 1.2 core schema, duplicate keys refused ─────────────────────────────────────
class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int",
                              re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    assert isinstance(text, str)
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)


def _bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# ── interpolation (compose-go template/template.go, the forms this project needs) ────
_VAR = re.compile(r"\$(?:(?P<esc>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)"
                     r"(?P<arg>.*))?$", re.DOTALL)


class InterpolationError(ValueError):
    pass


def _substitute(text: str, env: Mapping[str, str], where: str, unset: set[str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group("esc"):
            return "$"
        if m.group("named"):
            name = m.group("named")
            if name not in env:
                unset.add(name)
            return env.get(name, "")
        body = m.group("braced")
        parts = _BRACED.match(body)
        if not parts or "$" in (parts.group("arg") or ""):
            raise InterpolationError(f"{where}: unsupported substitution ${{{body}}}")
        name, op, arg = parts.group("name"), parts.group("op"), parts.group("arg") or ""
        value = env.get(name)
        empty = not value
        if op is None:
            if value is None:
                unset.add(name)
            return value or ""
        if op in (":-", "-"):
            return arg if (empty if op == ":-" else value is None) else str(value)
        if op in (":?", "?"):
            if empty if op == ":?" else value is None:
                raise InterpolationError(f"{where}: required variable {name} is missing a "
                                         f"value: {arg}")
            return str(value)
        return arg if not (empty if op == ":+" else value is None) else ""   # :+ and +

    return _VAR.sub(one, text)


def interpolate(node: Any, env: Mapping[str, str], where: str = "",
                unset: set[str] | None = None) -> Any:
    """Substitute variables in every string value (never in keys), like compose does."""
    unset = set() if unset is None else unset
    if isinstance(node, dict):
        return {k: interpolate(v, env, f"{where}.{k}" if where else str(k), unset)
                for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, f"{where}[{i}]", unset) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _substitute(node, env, where, unset)
    return node


# ── compose-go's consistency checks ─────────────────────────────────────────────────
_DURATION = re.compile(r"^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))+$|^0$")
_DURATION_KEYS = ("interval", "timeout", "start_period", "start_interval")


def _volume(entry: Any) -> tuple[str, str, str]:
    """(type, source, target) of a short or long volume entry."""
    if isinstance(entry, dict):
        return (str(entry.get("type", "volume")), str(entry.get("source", "")),
                str(entry.get("target", "")))
    parts = str(entry).split(":")
    if len(parts) == 1:
        return "volume", "", parts[0]
    source, target = parts[0], parts[1]
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return kind, source, target


def _consistency(model: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = model.get("services") or {}
    volumes = model.get("volumes") or {}
    networks = set(model.get("networks") or {}) | {"default"}
    for name, s in services.items():
        where = f"services.{name}"
        if "image" not in s and "build" not in s and "provider" not in s:
            problems.append(f"{where}: has neither an image nor a build context")
        deps = s.get("depends_on") or {}
        for dep in (deps if isinstance(deps, (list, dict)) else []):
            if dep not in services:
                problems.append(f"{where}.depends_on: undefined service {dep!r}")
        for net in (s.get("networks") or {}):
            if net not in networks:
                problems.append(f"{where}.networks: undefined network {net!r}")
        if s.get("network_mode") and s.get("networks"):
            problems.append(f"{where}: network_mode and networks are mutually exclusive")
        targets: dict[str, int] = {}
        for i, entry in enumerate(s.get("volumes") or []):
            kind, source, target = _volume(entry)
            if kind == "volume" and source and source not in volumes:
                problems.append(f"{where}.volumes[{i}]: undefined volume {source!r}")
            if target in targets:
                problems.append(f"{where}.volumes[{i}]: target {target} already mounted by "
                                f"volumes[{targets[target]}]")
            targets[target] = i
        health = s.get("healthcheck") or {}
        test = health.get("test")
        if isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            problems.append(f"{where}.healthcheck.test must start with CMD, CMD-SHELL or NONE")
        for key in _DURATION_KEYS:
            if key in health and not _DURATION.match(str(health[key])):
                problems.append(f"{where}.healthcheck.{key}: {health[key]!r} is not a duration")
        if "stop_grace_period" in s and not _DURATION.match(str(s["stop_grace_period"])):
            problems.append(f"{where}.stop_grace_period: not a duration")
    return problems


# ── the whole check ─────────────────────────────────────────────────────────────────
def _schema() -> dict[str, Any]:
    raw = SCHEMA_PATH.read_bytes()
    if hashlib.sha256(raw).hexdigest() != SCHEMA_SHA256:
        raise SystemExit(f"{SCHEMA_PATH}: not the vendored compose-go {COMPOSE_GO_VERSION} "
                         "schema (sha256 differs); see compose-spec/SOURCE.md")
    return dict(json.loads(raw))


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None,
         unset: set[str] | None = None) -> dict[str, Any]:
    """The file as compose sees it after interpolation (raises on YAML/syntax errors)."""
    text = Path(path).read_text(encoding="utf-8")
    model = load_yaml(text)
    if not isinstance(model, dict):
        raise InterpolationError(f"{path}: top level must be a mapping")
    return dict(interpolate(model, os.environ if env is None else env, unset=unset))


def validate(path: str | os.PathLike[str], env: Mapping[str, str] | None = None,
             unset: set[str] | None = None) -> list[str]:
    """Every problem `docker compose config` would report (as far as covered); [] if none.

    `unset` collects the variables used without a value (compose warns about them).
    """
    try:
        model = load(path, env, unset)
    except (yaml.YAMLError, InterpolationError, OSError) as exc:
        return [str(exc)]
    validator = Draft202012Validator(_schema())
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                for e in sorted(validator.iter_errors(model), key=lambda e: list(
                    map(str, e.absolute_path)))]
    return problems + _consistency(model)


def verify_vendored() -> int:
    """Download the pinned compose-go module from the Go module proxy and compare."""
    url = f"https://proxy.golang.org/{COMPOSE_GO}/@v/{COMPOSE_GO_VERSION}.zip"
    with urllib.request.urlopen(url, timeout=60) as resp:
        blob = resp.read()
    if hashlib.sha256(blob).hexdigest() != ZIP_SHA256:
        print(f"{url}: sha256 differs from the pinned {ZIP_SHA256}", file=sys.stderr)
        return 1
    prefix = f"{COMPOSE_GO}@{COMPOSE_GO_VERSION}/"
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for member, local in (("schema/compose-spec.json", "compose-spec.json"),
                              ("LICENSE", "LICENSE"), ("NOTICE", "NOTICE")):
            if z.read(prefix + member) != (SCHEMA_PATH.parent / local).read_bytes():
                print(f"compose-spec/{local} differs from {member} of the module",
                      file=sys.stderr)
                return 1
    print(f"vendored schema, LICENSE and NOTICE equal {COMPOSE_GO}@{COMPOSE_GO_VERSION}")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--verify-vendored"]:
        return verify_vendored()
    files = argv or [str(HERE.parent / "docker-compose.yml")]
    failed = False
    for path in files:
        unset: set[str] = set()
        problems = validate(path, unset=unset)
        for name in sorted(unset):
            print(f"{path}: warning: {name} is not set, defaulting to a blank string",
                  file=sys.stderr)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"{path}: valid (compose-spec schema of compose-go {COMPOSE_GO_VERSION})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
