"""docker-compose.yml and the Dockerfile agree with the code they run.

No Docker here: the files are parsed, the compose file is validated against the
compose-spec schema (docker/check_compose.py, the validator of .ci/check-compose), the
key script runs on a temporary folder, and the settings the containers would get are
loaded with the keys it made.  Each check is a function returning problems, so the
tests can also show that a broken file (a removed or misspelled HOLDGATE_ variable, a
wrong subcommand, a port that does not line up) is caught.
"""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest

from holdgate.cli import cli
from holdgate.cli.localkafka import KAFKA_VERSION
from holdgate.keys import TrustStore, load_signer
from holdgate.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
KEYS_ROOT = "/keys"                      # where docker/init-keys.sh writes in the image
PORT_VAR = "HOLDGATE_COMPOSE_KAFKA_PORT"
DEV_PORTS = {9092, 9093}                 # ./dev's broker: client and controller port
SETTING_VARS = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
# Settings fields naming files or folders, and how to split each into paths.
PATH_FIELDS = {
    "signing_key_file": "one", "operator_key_file": "one", "approver_key_file": "one",
    "sasl_password_file": "one", "ssl_cafile": "one", "ssl_certfile": "one",
    "ssl_keyfile": "one", "datadir": "one", "policy_dir": "one", "model": "one",
    "trusted_keys": "comma", "operator_keys": "comma", "approver_keys": "roles",
}
PRIVATE_KEY_FIELDS = ("signing_key_file", "operator_key_file", "approver_key_file")


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_compose",
                                                  REPO / "docker" / "check_compose.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


# ── reading the two files ────────────────────────────────────────────────────────────
@dataclasses.dataclass
class Dockerfile:
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    copies: list[tuple[str, str]]  # (source, destination)
    run: str                       # every RUN line, joined


def parse_dockerfile(text: str) -> Dockerfile:
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    df = Dockerfile({}, [], [], [], "")
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":                # only the last stage counts
            df = Dockerfile({}, [], [], [], "")
        elif instr == "ENV":
            words = shlex.split(args)
            if words and "=" not in words[0]:
                df.env[words[0]] = " ".join(words[1:])
            else:
                df.env.update(w.split("=", 1) for w in words)   # type: ignore[misc]
        elif instr in ("ENTRYPOINT", "CMD"):
            assert args.startswith("["), f"{instr} must use the exec (JSON) form: the " \
                "process is then PID 1 and gets docker stop's SIGTERM"
            setattr(df, instr.lower(), json.loads(args))
        elif instr == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            df.copies += [(source, words[-1]) for source in words[:-1]]
        elif instr == "RUN":
            df.run += args + "\n"
    return df


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return dict(checker.load(COMPOSE, {} if env is None else env))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the image built from the Dockerfile."""
    return {name: s for name, s in compose["services"].items()
            if s.get("build") in (".", "./") or (isinstance(s.get("build"), dict)
                                                  and s["build"].get("context") in (".", "./"))}


def service_env(service: dict[str, Any], df: Dockerfile) -> dict[str, str]:
    assert "env_file" not in service, "env_file: read it here too before using it"
    given = service.get("environment") or {}
    if isinstance(given, list):
        given = dict(item.split("=", 1) for item in given)
    return {**df.env, **{k: "" if v is None else str(v) for k, v in given.items()}}


def argv(service: dict[str, Any], df: Dockerfile) -> list[str]:
    entry = service.get("entrypoint", df.entrypoint)
    # as in Docker: a service's own entrypoint drops the image's CMD
    cmd = service.get("command", df.cmd if "entrypoint" not in service else [])
    entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
    return entry + (shlex.split(cmd) if isinstance(cmd, str) else list(cmd))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> named volume (bind mounts are not used here)."""
    out = {}
    for entry in service.get("volumes") or []:
        kind, source, target = checker._volume(entry)
        assert kind == "volume" and source, f"only named volumes expected: {entry}"
        out[target] = source
    return out


def volume_of(service: dict[str, Any], path: str) -> tuple[str, str] | None:
    """(volume, mount target) holding `path` in this service, or None."""
    for target, volume in sorted(mounts(service).items(), key=lambda t: -len(t[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return volume, target
    return None


def setting_paths(name: str, value: str) -> Iterator[str]:
    kind = PATH_FIELDS[name]
    if kind == "one":
        yield value
    elif kind == "comma":
        yield from (p.strip() for p in value.split(",") if p.strip())
    else:                                               # role=a;b,role=c
        for part in (p for p in value.split(",") if p.strip()):
            yield from (p.strip() for p in part.partition("=")[2].split(";") if p.strip())


# ── the checks ───────────────────────────────────────────────────────────────────────
def env_problems(compose: dict[str, Any], df: Dockerfile) -> list[str]:
    """Every HOLDGATE_ variable set is a Settings field, and Settings accepts the values."""
    problems = [f"Dockerfile: ENV {k} is no setting" for k in df.env
                if k.startswith(ENV_PREFIX) and k not in SETTING_VARS]
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        keys = [e.split("=", 1)[0] for e in env] if isinstance(env, list) else list(env)
        problems += [f"services.{name}: {k} is not a field of holdgate.settings.Settings "
                     "(misspelled or removed: the code would ignore it)"
                     for k in keys if k.startswith(ENV_PREFIX) and k not in SETTING_VARS]
    for name, service in ours(compose).items():
        try:
            Settings.from_env(service_env(service, df))
        except Exception as exc:                        # noqa: BLE001 - any refusal counts
            problems.append(f"services.{name}: Settings.from_env refuses its env: {exc}")
    return problems


def command_problems(compose: dict[str, Any], df: Dockerfile) -> list[str]:
    """Each container runs a real `holdgate` subcommand, or the key script (whose own
    holdgate calls are real), with options those commands have."""
    problems = []
    runs = {"Dockerfile": df.entrypoint + df.cmd}
    runs.update({f"services.{n}": argv(s, df) for n, s in ours(compose).items()})
    for where, args in runs.items():
        if not args:
            problems.append(f"{where}: runs nothing")
        elif args[0] == "holdgate":
            problems += [f"{where}: {p}" for p in _holdgate_problems(args[1:])]
        else:
            script = _script_source(args[0], df)
            if script is None:
                problems.append(f"{where}: {args[0]} is neither holdgate nor a script the "
                                "Dockerfile copies onto the PATH")
                continue
            for line in script.read_text().splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] == "holdgate":
                    problems += [f"{script.name}: {p}" for p in _holdgate_problems(words[1:])]
    return problems


def _script_source(program: str, df: Dockerfile) -> Path | None:
    for source, dest in df.copies:
        on_path = dest.startswith(("/usr/local/bin/", "/usr/bin/"))
        if on_path and (dest == program or Path(dest).name == program):
            return REPO / source
    return None


def _holdgate_problems(args: list[str]) -> list[str]:
    command: click.Command = cli
    path = ["holdgate"]
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            have = ", ".join(sorted(command.commands))
            return [f"`{' '.join(path)} {name}` is no command (have: {have})"]
        command, path = sub, path + [name]
    if isinstance(command, click.Group) and not rest:
        return [f"`{' '.join(path)}` needs a subcommand"]
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    return [f"`{' '.join(path)}` has no option {w.split('=')[0]}" for w in rest
            if w.startswith("-") and w.split("=")[0] not in known]


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def port_problems(compose: dict[str, Any]) -> list[str]:
    """Published, listening, advertised and dialled Kafka ports line up."""
    problems = []
    name, kafka = next((n, s) for n, s in compose["services"].items()
                       if str(s.get("image", "")).startswith("apache/kafka:"))
    env = {k: str(v) for k, v in kafka["environment"].items()}
    listen = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = {v.split("@")[1] for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")}
    if voters != {f"{kafka.get('hostname', name)}:{listen[controller][1]}"}:
        problems.append(f"controller voters {voters} are not the {controller} listener")
    for lname, (_host, port) in advertised.items():
        if lname not in listen:
            problems.append(f"advertised listener {lname} does not listen")
        elif listen[lname][1] != port:
            # then the advertised address works on one side of the port mapping only
            problems.append(f"listener {lname} listens on {listen[lname][1]} but "
                            f"advertises {port}")
    for entry in kafka.get("ports") or []:
        host_ip, host_port, container_port = str(entry).rsplit(":", 2) if \
            str(entry).count(":") == 2 else ("", *str(entry).split(":"))
        if host_ip != "127.0.0.1":
            problems.append(f"{entry}: publish on 127.0.0.1 only")
        if int(host_port) in DEV_PORTS:
            problems.append(f"{entry}: host port {host_port} is ./dev's broker's")
        match = [n for n, (_, p) in advertised.items() if p == int(container_port)]
        if not match or advertised[match[0]] != ("127.0.0.1", int(host_port)):
            problems.append(f"{entry}: no listener advertises 127.0.0.1:{host_port}")
        if controller in match:
            problems.append(f"{entry}: publishes the controller listener")
    test = " ".join(kafka["healthcheck"]["test"])
    probe = re.search(r"--bootstrap-server[ =](\S+)", test)
    if not probe or int(probe.group(1).rpartition(":")[2]) not in \
            {p for n, (_, p) in listen.items() if n != controller}:
        problems.append("kafka healthcheck does not probe a client listener")
    inside = {f"{h}:{p}" for h, p in advertised.values() if h in (name, kafka.get("hostname"))}
    for sname, service in compose["services"].items():
        boot = (service.get("environment") or {}).get("HOLDGATE_BOOTSTRAP")
        if boot is not None and boot not in inside:
            problems.append(f"services.{sname}: HOLDGATE_BOOTSTRAP {boot} is none of the "
                            f"broker's in-network addresses {sorted(inside)}")
    return problems


# ── tests ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("env", [{}, {PORT_VAR: "29999"}], ids=["defaults", "port-set"])
def test_compose_file_is_valid_compose(env: dict[str, str]) -> None:
    assert checker.validate(COMPOSE, env) == []


def test_check_compose_script_passes_and_fails(tmp_path: Path) -> None:
    env = {**os.environ, "CHECK_COMPOSE_PYTHON": sys.executable}
    script = REPO / ".ci" / "check-compose"
    ok = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    depends_on:", "    depends:", 1))
    bad = subprocess.run([str(script), str(broken)], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 1 and "depends" in bad.stderr


def test_holdgate_variables_are_settings(compose: dict[str, Any], dockerfile: Dockerfile
                                         ) -> None:
    assert env_problems(compose, dockerfile) == []


@pytest.mark.parametrize("var, value", [
    ("HOLDGATE_SIGNING_KEY", "secret"),                   # the removed HMAC secret
    ("HOLDGATE_SIGNING_KEYFILE", "/keys/worker/worker.key"),   # misspelled
    ("HOLDGATE_PARTITIONS", "four"),                      # a value Settings refuses
])
def test_a_wrong_variable_is_caught(compose: dict[str, Any], dockerfile: Dockerfile,
                                    var: str, value: str) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["environment"][var] = value
    assert env_problems(broken, dockerfile)


def test_every_path_setting_is_known() -> None:
    """A new file or folder setting must be added to PATH_FIELDS, so it is checked here."""
    names = {f.name for f in dataclasses.fields(Settings)}
    looks_like_path = {n for n in names if n.endswith(("_file", "_keys", "_dir", "dir"))
                       or n in ("model",) or n.startswith("ssl_")}
    assert looks_like_path <= set(PATH_FIELDS) <= names


def test_commands_are_real(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    assert command_problems(compose, dockerfile) == []


@pytest.mark.parametrize("command", [["wroker"], ["worker", "--data-dir", "/x"], ["keys"]])
def test_a_wrong_command_is_caught(compose: dict[str, Any], dockerfile: Dockerfile,
                                   command: list[str]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["command"] = command
    assert command_problems(broken, dockerfile)


@pytest.mark.parametrize("env", [{}, {PORT_VAR: "29999"}], ids=["defaults", "port-set"])
def test_ports_line_up(env: dict[str, str]) -> None:
    assert port_problems(load_compose(env)) == []


def test_default_port_leaves_dev_broker_alone(compose: dict[str, Any]) -> None:
    ports = compose["services"]["kafka"]["ports"]
    assert ports == ["127.0.0.1:19092:19092"]
    assert port_problems(load_compose({PORT_VAR: "9092"})), "./dev's port must be flagged"


@pytest.mark.parametrize("change", ["advertise", "bootstrap"])
def test_a_port_mismatch_is_caught(compose: dict[str, Any], change: str) -> None:
    broken = copy.deepcopy(compose)
    if change == "advertise":
        kafka_env = broken["services"]["kafka"]["environment"]
        kafka_env["KAFKA_ADVERTISED_LISTENERS"] = kafka_env[
            "KAFKA_ADVERTISED_LISTENERS"].replace("127.0.0.1:19092", "127.0.0.1:9092")
    else:
        broken["services"]["worker"]["environment"]["HOLDGATE_BOOTSTRAP"] = "kafka:9092"
    assert port_problems(broken)


def test_kafka_matches_the_local_broker_and_keeps_its_data(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"   # KRaft
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert volume_of(kafka, log_dirs), "Kafka's log dirs must be on a volume"
    worker = compose["services"]["worker"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert kafka["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


@pytest.fixture(scope="module")
def made_keys(tmp_path_factory: pytest.TempPathFactory, dockerfile: Dockerfile,
              compose: dict[str, Any]) -> Path:
    """docker/init-keys.sh run as the `keys` service would, on a temporary folder."""
    keys = compose["services"]["keys"]
    script = _script_source(argv(keys, dockerfile)[0], dockerfile)
    assert script is not None
    root = tmp_path_factory.mktemp("keys")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    env = {k: v for k, v in env.items() if not k.startswith(ENV_PREFIX)}

    def run() -> str:
        done = subprocess.run(["sh", str(script), str(root)], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.split("key ids in", 1)[1]

    first = run()
    assert run() == first, "a second start must keep every key"
    assert argv(keys, dockerfile)[1:] == [KEYS_ROOT]
    return root


def _in_tmp(value: str, root: Path) -> str:
    return value.replace(KEYS_ROOT + "/", f"{root}/")


def test_every_referenced_path_exists_where_the_container_looks(
        compose: dict[str, Any], dockerfile: Dockerfile, made_keys: Path) -> None:
    keys_service = compose["services"]["keys"]
    for name, service in ours(compose).items():
        env = service_env(service, dockerfile)
        for field in PATH_FIELDS:
            value = env.get(ENV_PREFIX + field.upper())
            if not value:
                continue
            for path in setting_paths(field, value):
                where = f"services.{name} {ENV_PREFIX}{field.upper()}={path}"
                if path.startswith(KEYS_ROOT + "/"):
                    held = volume_of(service, path)
                    assert held, f"{where}: no volume mounted there"
                    assert mounts(keys_service).get(held[1]) == held[0], \
                        f"{where}: the keys service does not write volume {held[0]} there"
                    assert Path(_in_tmp(path, made_keys)).is_file(), \
                        f"{where}: docker/init-keys.sh does not make it"
                else:
                    assert path in dockerfile.run, f"{where}: the Dockerfile does not create it"
    worker_datadir = service_env(compose["services"]["worker"], dockerfile)["HOLDGATE_DATADIR"]
    assert volume_of(compose["services"]["worker"], worker_datadir), \
        "the worker's state must survive a new container: put its datadir on a volume"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore: a path is out when it or a parent matches (last match wins)."""
    out = False
    parts = Path(path).parts
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pattern) or (pattern.startswith("**/") and
                                                         fnmatch.fnmatchcase(parts[i - 1],
                                                                             pattern[3:])):
                out = not negate
    return out


def test_build_context_has_what_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [source for source, _ in dockerfile.copies]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for needed in ("pyproject.toml", "setup.py", "README.md", "holdgate", "stream", "models",
                   "policies"):
        assert needed in sources, f"`pip install` needs {needed}"
    assert _ignored(".venv", patterns) and _ignored("holdgate/__pycache__/x.pyc", patterns)


def test_volume_folders_exist_in_the_image(compose: dict[str, Any], dockerfile: Dockerfile
                                           ) -> None:
    """An empty named volume takes the owner of the folder it is mounted on: the image
    must create each one for the holdgate user, or the container cannot write it."""
    for name, service in ours(compose).items():
        for target in mounts(service):
            assert re.search(rf"(install -d|mkdir)[^\n]*\s{re.escape(target)}(\s|$)",
                             dockerfile.run), f"services.{name}: {target} not made in image"


def test_private_keys_stay_with_their_signer(compose: dict[str, Any],
                                             dockerfile: Dockerfile, made_keys: Path) -> None:
    """A service mounts a volume with private keys only to sign with one of them."""
    private = {target for target in mounts(compose["services"]["keys"])
               if list(Path(_in_tmp(target + "/", made_keys)).glob("*.key"))}
    assert private, "the keys service writes no private key"
    for name, service in ours(compose).items():
        if name == "keys":
            continue
        env = service_env(service, dockerfile)
        signs_with = {volume_of(service, env[ENV_PREFIX + f.upper()]) for f in
                      PRIVATE_KEY_FIELDS if env.get(ENV_PREFIX + f.upper())}
        for target, volume in mounts(service).items():
            if target in private:
                assert (volume, target) in signs_with, \
                    f"services.{name} mounts private keys of {target} it never signs with"


def test_settings_load_the_generated_keys(compose: dict[str, Any], dockerfile: Dockerfile,
                                          made_keys: Path) -> None:
    """The env as written, pointed at the keys the script made: the worker's verdicts
    verify with the CLI's trust, and the CLI's operator and approver keys are the ones
    the worker trusts."""
    def settings(name: str) -> Settings:
        env = service_env(compose["services"][name], dockerfile)
        return Settings.from_env({k: _in_tmp(v, made_keys) for k, v in env.items()})

    worker, tool = settings("worker"), settings("cli")
    signer = worker.signer()                     # also refuses a key others can read
    assert tool.trust().verify(signer.key_id, b"verdict", signer.sign(b"verdict")) is None
    operator = load_signer(tool.operator_key_file)
    assert operator.key_id in worker.operators()
    assert operator.key_id in tool.operators(), "`holdgate controls` must trust the operator"
    approver = load_signer(tool.approver_key_file)
    approvers = worker.approvers()
    assert approvers is not None and approvers.roles == ["human"]
    human = TrustStore.from_paths(setting_paths("approver_keys", worker.approver_keys))
    assert approver.key_id in human
    assert signer.key_id not in human and operator.key_id not in human
    for field in ("bootstrap", "partitions", "actions_topic", "verdicts_topic",
                  "control_topic", "approvals_topic", "security_protocol"):
        assert getattr(worker, field) == getattr(tool, field), f"{field} differs"
