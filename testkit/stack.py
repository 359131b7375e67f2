"""The local stack: action server + Rasa server (+ Redis), started the same way by `make run`,
the tests and the benchmarks."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from testkit.processes import ROOT, free_port, python, spawn, stop, wait_for_port


def local_secrets(rasa_port: int) -> Dict[str, str]:
    """Fresh secrets for a local stack, handed to its processes through the environment only."""
    return {
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{rasa_port}",
        "RASA_AUTH_TOKEN": secrets.token_urlsafe(24),
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_PHONE_NUMBER": "+15005550006",
        "VAPI_SERVER_SECRET": secrets.token_urlsafe(24),
        "VAPI_CUSTOM_LLM_KEY": secrets.token_urlsafe(24),
        "WEBCHAT_JWT_SECRET": secrets.token_urlsafe(32),
        "NOTIFICATIONS_API_KEY": secrets.token_urlsafe(24),
        "WEBCHAT_ALLOW_ANONYMOUS": "true",
        # Agents' inbox tokens: the host's SSO would sign them (connectors/inbox/auth.py).
        "INBOX_JWT_SECRET": secrets.token_urlsafe(32),
        "DEFAULT_PHONE_REGION": "US",
    }


def with_rest_channel(directory: Path) -> Path:
    """credentials.yml plus Rasa's REST channel, for tests and benchmarks only (it has no auth)."""
    credentials = directory / "credentials.yml"
    credentials.write_text((ROOT / "credentials.yml").read_text() + "\nrest:\n")
    return credentials


def action_server_command(port: int) -> List[str]:
    return [python(), "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)]


#: How the Rasa server starts: `rasa run` behind our entry point (connectors/rasa_main.py), which
#: leaves TensorFlow unimported unless the model needs it. ``"rasa"`` is Rasa's own.
RASA_ENTRY_POINT = "connectors.rasa_main"


def rasa_server_command(
    model: Path,
    port: int,
    credentials: Path,
    auth_token: str,
    endpoints: Path = ROOT / "endpoints.yml",
    entry_point: str = RASA_ENTRY_POINT,
) -> List[str]:
    return [
        python(),
        "-m",
        entry_point,
        "run",
        "--model",
        str(model),
        "--endpoints",
        str(endpoints),
        "--credentials",
        str(credentials),
        "--port",
        str(port),
        "--enable-api",
        # One argument: a random token may start with "-", which argparse would take for a flag.
        f"--auth-token={auth_token}",
    ]


def wait_for_model(
    base_url: str, auth_token: str, timeout: float, proc: Optional[subprocess.Popen]
) -> None:
    """Rasa answers HTTP before its model is loaded; a turn needs the model, so wait for it."""
    deadline = time.monotonic() + timeout
    url = f"{base_url}/status?token={auth_token}"
    while time.monotonic() < deadline:
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc is not None else None
            raise RuntimeError(f"rasa server exited with {code} while loading")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if json.load(response).get("model_file"):
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the Rasa server at {base_url} did not load its model in {timeout:.0f} s")


@dataclass
class RasaStack:
    """One action server and one Rasa server sharing a Redis; `env` is their environment."""

    model: Path
    env: Dict[str, str]
    credentials: Path
    log_dir: Path
    rasa_port: int = field(default_factory=free_port)
    action_port: int = field(default_factory=free_port)
    action_proc: Optional[subprocess.Popen] = None
    rasa_proc: Optional[subprocess.Popen] = None
    owns_action_server: bool = True
    endpoints: Path = ROOT / "endpoints.yml"
    entry_point: str = RASA_ENTRY_POINT

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def action_url(self) -> str:
        return f"http://127.0.0.1:{self.action_port}/webhook"

    def process_env(self) -> Dict[str, str]:
        return {**self.env, "ACTION_SERVER_URL": self.action_url}

    def start_actions(self) -> None:
        self.action_proc = spawn(
            action_server_command(self.action_port),
            env=self.process_env(),
            log_path=self.log_dir / f"actions-{self.action_port}.log",
        )

    def start_rasa(self) -> None:
        self.rasa_proc = spawn(
            rasa_server_command(
                self.model,
                self.rasa_port,
                self.credentials,
                self.env["RASA_AUTH_TOKEN"],
                self.endpoints,
                self.entry_point,
            ),
            env=self.process_env(),
            log_path=self.log_dir / f"rasa-{self.rasa_port}.log",
        )

    def start(self, timeout: float = 180) -> RasaStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.action_proc is None:
            self.start_actions()
        self.start_rasa()
        wait_for_port(self.action_port, 60, self.action_proc)
        wait_for_model(self.base_url, self.env["RASA_AUTH_TOKEN"], timeout, self.rasa_proc)
        return self

    def restart_rasa(self, timeout: float = 180) -> None:
        """Stop and start the Rasa server only (same port), as an operator's restart would."""
        stop(self.rasa_proc)
        self.start_rasa()
        wait_for_model(self.base_url, self.env["RASA_AUTH_TOKEN"], timeout, self.rasa_proc)

    def replica(self, timeout: float = 180) -> RasaStack:
        """A second Rasa server on the same Redis and action server, with the same settings
        (``PUBLIC_BASE_URL`` included, as replicas behind one load balancer have)."""
        other = RasaStack(
            model=self.model,
            env=self.env,
            credentials=self.credentials,
            log_dir=self.log_dir,
            action_port=self.action_port,
            action_proc=self.action_proc,
            owns_action_server=False,
            endpoints=self.endpoints,
            entry_point=self.entry_point,
        )
        other.start_rasa()
        wait_for_model(other.base_url, self.env["RASA_AUTH_TOKEN"], timeout, other.rasa_proc)
        return other

    def stop(self) -> None:
        """Stop the Rasa server, and the action server too unless a replica borrowed it."""
        stop(self.rasa_proc)
        if self.owns_action_server:
            stop(self.action_proc)

    def rasa_log(self) -> str:
        path = self.log_dir / f"rasa-{self.rasa_port}.log"
        return path.read_text(errors="replace") if path.exists() else ""
