"""The deployment files agree with the code (issue 13): images cannot be built on this machine,
so what can drift is checked here: environment variable names, ports, probe routes, commands
and the Python version."""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Set

import yaml

from connectors.drain import DEFAULT_DRAIN_SECONDS
from omnichannel.settings import _VARIABLES
from testkit.processes import ROOT
from testkit.stack import action_server_command

DEPLOY = ROOT / "deploy"
#: Sanic 21.12's GRACEFUL_SHUTDOWN_TIMEOUT default, which Rasa does not change.
SANIC_GRACEFUL_SHUTDOWN_SECONDS = 15.0
#: Variables the code reads outside Settings (endpoints.yml, the stack, the ops channel).
CODE = [*ROOT.glob("omnichannel/**/*.py"), *ROOT.glob("connectors/**/*.py"), ROOT / "endpoints.yml"]


def _code_text() -> str:
    return "\n".join(path.read_text() for path in CODE)


def _k8s_documents() -> Iterator[Dict]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def _containers() -> Iterator[Dict]:
    for doc in _k8s_documents():
        if doc["kind"] == "Deployment":
            yield from doc["spec"]["template"]["spec"]["containers"]


def _deploy_env_names() -> Set[str]:
    names: Set[str] = set()
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    for service in compose["services"].values():
        names |= set((service.get("environment") or {}).keys())
    for container in _containers():
        names |= {item["name"] for item in container.get("env", [])}
    for doc in _k8s_documents():
        if doc["kind"] == "Secret":
            names |= set(doc["stringData"])
    return names


def test_every_variable_the_deploy_files_set_is_read_by_the_code() -> None:
    code = _code_text()
    unknown = sorted(
        name
        for name in _deploy_env_names()
        if name not in _VARIABLES and f'"{name}"' not in code and f"${{{name}}}" not in code
    )
    assert not unknown, f"deploy files set variables nothing reads: {unknown}"


def test_every_secret_a_channel_requires_is_provided() -> None:
    required = set(re.findall(r'require\(\s*"([A-Z_]+)"', _code_text()))
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    rasa_env = set(compose["services"]["rasa"]["environment"])
    secret = next(doc for doc in _k8s_documents() if doc["kind"] == "Secret")
    assert required, "found no settings.require(...) calls to check"
    assert required <= rasa_env, required - rasa_env
    assert required <= set(secret["stringData"]), required - set(secret["stringData"])


def _probe_paths() -> List[str]:
    paths = []
    for container in _containers():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                paths.append(container[probe]["httpGet"]["path"])
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    paths += re.findall(r"option httpchk GET (\S+)", haproxy)
    for dockerfile in DEPLOY.glob("*.Dockerfile"):
        paths += re.findall(r"http://127\.0\.0\.1:\d+(/[\w/]+)", dockerfile.read_text())
    return paths


def test_probe_routes_exist() -> None:
    """Each probe path is one the ops channel or the action server serves."""
    ops = (ROOT / "connectors" / "ops" / "channel.py").read_text()
    paths = _probe_paths()
    assert "/webhooks/ops/readyz" in paths and "/webhooks/ops/livez" in paths
    for path in paths:
        if path.startswith("/webhooks/ops/"):
            assert f'"/{path.rsplit("/", 1)[1]}"' in ops, f"no ops route for {path}"
        else:
            assert path == "/health", f"unknown probe path {path}"  # rasa_sdk's health route


def test_ports_and_commands_match_the_local_stack() -> None:
    rasa_docker = (DEPLOY / "rasa.Dockerfile").read_text()
    actions_docker = (DEPLOY / "actions.Dockerfile").read_text()
    assert "--port 5005" in rasa_docker and "--enable-api" in rasa_docker
    assert (
        "--credentials credentials.yml" in rasa_docker
        and "--endpoints endpoints.yml" in rasa_docker
    )
    command = action_server_command(5055)[1:]
    assert f'CMD ["python", {", ".join(repr(a).replace(chr(39), chr(34)) for a in command)}]' in (
        actions_docker
    )
    ports = {
        container["name"]: {port["containerPort"] for port in container["ports"]}
        for container in _containers()
    }
    assert ports == {"rasa": {5005, 9102}, "actions": {5055}}
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert compose["services"]["rasa"]["environment"]["ACTION_SERVER_URL"].endswith(":5055/webhook")


def test_images_use_the_projects_python() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    for dockerfile in DEPLOY.glob("*.Dockerfile"):
        assert f"FROM python:{version}-slim" in dockerfile.read_text(), dockerfile.name


def test_grace_periods_cover_the_drain() -> None:
    """SIGTERM grace: the drain (connectors/drain.py) plus Sanic's own wait for connections still
    open after it, or the orchestrator kills a replica mid-drain."""
    needed = DEFAULT_DRAIN_SECONDS + SANIC_GRACEFUL_SHUTDOWN_SECONDS
    for doc in _k8s_documents():
        if doc["kind"] == "Deployment":
            assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    for name in ("rasa", "actions"):
        assert int(compose["services"][name]["stop_grace_period"].rstrip("s")) > needed
