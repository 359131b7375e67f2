"""A Rasa stack with Chatwoot as the agent desk, for the Chatwoot tests that need a real server.

It is a stack of its own (its own Redis, action server and Rasa server, started once per run on
first use): with Chatwoot on, Chatwoot owns the agent side and the embedded inbox only shows
conversations, which the shared stack's inbox tests must not meet. Its credentials.yml is the
project's, with the Chatwoot section shipped commented out there uncommented (so the documented
section is the one that runs), and both webhook checks on: Chatwoot's signature and the secret
URL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import pytest

from testkit.fake_chatwoot import FakeChatwoot
from testkit.fake_llm import FakeLlm
from testkit.fake_twilio import FakeTwilio
from testkit.processes import ROOT, RedisServer, free_port
from testkit.stack import RasaStack, local_secrets
from tests.support import stack_orders

SECTION = "connectors.chatwoot.channel.ChatwootInput:"


def chatwoot_credentials(directory: Path, url_secret: bool = True) -> Path:
    """credentials.yml with its commented Chatwoot section switched on (and the REST channel,
    for tests); ``url_secret``: the secret webhook URL's line too."""
    lines = (ROOT / "credentials.yml").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"# {SECTION}")
    out = lines[:start]
    position = start
    while position < len(lines) and lines[position].startswith("#"):
        line = lines[position][2:]
        if url_secret and line.strip() == "# webhook_url_secret: ${CHATWOOT_WEBHOOK_URL_SECRET}":
            line = "  webhook_url_secret: ${CHATWOOT_WEBHOOK_URL_SECRET}"
        out.append(line)
        position += 1
    out += lines[position:] + ["", "rest:", ""]
    path = directory / "credentials.yml"
    path.write_text("\n".join(out), encoding="utf-8")
    return path


@dataclass
class ChatwootStack:
    stack: RasaStack
    chatwoot: FakeChatwoot
    twilio: FakeTwilio
    redis: RedisServer
    url_secret: str

    @property
    def webhook_url(self) -> str:
        return f"{self.stack.base_url}/webhooks/chatwoot/webhook/{self.url_secret}"


@pytest.fixture(scope="session")
def chatwoot_stack(
    trained_model: Path, fake_llm: FakeLlm, tmp_path_factory: pytest.TempPathFactory
) -> ChatwootStack:
    work = tmp_path_factory.mktemp("chatwoot-stack")
    redis = RedisServer(work / "redis").start()
    port = free_port()
    env: Dict[str, str] = local_secrets(port)
    twilio = FakeTwilio(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"]).start()
    chatwoot = FakeChatwoot(account_id=3, inbox_id=12).start()
    url_secret = secrets.token_urlsafe(32)
    env.update(
        {
            "REDIS_URL": redis.url,
            "TWILIO_API_BASE_URL": twilio.url,
            "OPENAI_BASE_URL": fake_llm.base_url,
            "OPENAI_API_KEY": "sk-local-fake",
            "LLM_MODEL": "fake-model",
            "ORDERS_FIXTURE": str(stack_orders(work)),
            "TRUSTED_PROXY_HOPS": "1",
            "CHATWOOT_URL": chatwoot.url,
            "CHATWOOT_ACCOUNT_ID": str(chatwoot.account_id),
            "CHATWOOT_INBOX_ID": str(chatwoot.inbox_id),
            "CHATWOOT_API_ACCESS_TOKEN": chatwoot.access_token,
            "CHATWOOT_WEBHOOK_SECRET": chatwoot.webhook_secret,
            "CHATWOOT_WEBHOOK_URL_SECRET": url_secret,
        }
    )
    stack = RasaStack(
        model=trained_model,
        env=env,
        credentials=chatwoot_credentials(work),
        log_dir=work / "logs",
        rasa_port=port,
    )
    found = ChatwootStack(stack, chatwoot, twilio, redis, url_secret)
    chatwoot.webhook_url = found.webhook_url
    try:
        stack.start()
    except Exception:
        print(stack.rasa_log()[-5000:])
        stack.stop()
        raise
    yield found
    stack.stop()
    chatwoot.stop()
    twilio.stop()
    redis.stop()
