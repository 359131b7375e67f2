"""Shared fixtures: real redis-servers, the trained model and one Rasa stack per test run."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import pytest
import redis

from devtools.model import ensure_model
from testkit.fake_llm import FakeLlm
from testkit.fake_otlp import FakeOtlp
from testkit.fake_twilio import FakeTwilio
from testkit.fake_vapi import FakeVapi
from testkit.processes import RedisServer, free_port
from testkit.redis_topologies import RedisClusterProcesses, RedisDeployment, RedisSentinelProcesses
from testkit.stack import RasaStack, local_secrets, with_rest_channel
from tests import parallel, tiers
from tests.support import key_kinds, stack_orders

#: The shared stack's Rasa port, chosen once so its secrets (PUBLIC_BASE_URL) are known early.
STACK_RASA_PORT = free_port()
STACK_SECRETS = {
    **local_secrets(STACK_RASA_PORT),
    # VAPI's call API, for callbacks (the fake_vapi fixture serves it).
    "VAPI_API_KEY": secrets.token_urlsafe(24),
    "VAPI_PHONE_NUMBER_ID": str(uuid.uuid4()),
}


@pytest.fixture(autouse=True)
def short_redis_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that stop Redis on purpose wait out 1 s of retries, not production's default
    (tests of the retry bound itself set their own)."""
    monkeypatch.setenv("REDIS_RETRY_SECONDS", "1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """URL of the real test Redis, emptied before the test and exported as REDIS_URL."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    return redis_server.url


@pytest.fixture(scope="session")
def trained_model() -> Path:
    return ensure_model(quiet=True)


@pytest.fixture(scope="session")
def stack_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """The Redis behind the shared Rasa stack (never flushed: the stack's state lives there).

    Once every test that used the stack is done (the stack is stopped first), every key in it
    must have an expiry: the last of the key-expiry checks (tests/test_key_expiry.py), over the
    keys of all of them, whatever ran in which order."""
    server = RedisServer(tmp_path_factory.mktemp("stack-redis")).start()
    yield server
    try:
        _, without_expiry = key_kinds(server.url)
    finally:
        server.stop()
    if without_expiry:
        pytest.fail(f"the tests left keys without an expiry in the stack's Redis: {without_expiry}")


@pytest.fixture(scope="session")
def fake_twilio() -> FakeTwilio:
    """Twilio's REST API on loopback, for the shared stack's account (see testkit/fake_twilio)."""
    fake = FakeTwilio(STACK_SECRETS["TWILIO_ACCOUNT_SID"], STACK_SECRETS["TWILIO_AUTH_TOKEN"])
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_vapi() -> FakeVapi:
    """VAPI's call API (and Live Call Control) on loopback, for the shared stack's org: the
    callbacks it places go here (see testkit/fake_vapi)."""
    fake = FakeVapi(
        STACK_SECRETS["VAPI_API_KEY"], STACK_SECRETS["VAPI_PHONE_NUMBER_ID"]
    ).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_llm() -> FakeLlm:
    """An OpenAI-compatible LLM provider on loopback; tests script its answers."""
    fake = FakeLlm().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_otlp() -> FakeOtlp:
    """An OTLP/HTTP trace receiver on loopback: the shared stack exports its traces here."""
    fake = FakeOtlp().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def rasa_stack(
    trained_model: Path,
    stack_redis: RedisServer,
    fake_twilio: FakeTwilio,
    fake_llm: FakeLlm,
    fake_otlp: FakeOtlp,
    fake_vapi: FakeVapi,
    tmp_path_factory: pytest.TempPathFactory,
) -> RasaStack:
    """One action server and one Rasa server with every connector, for the whole test run.

    Loading a model takes tens of seconds, so tests share this stack and keep their
    conversations apart by using fresh phone numbers and user ids. Twilio's API, the LLM
    provider and the tracing backend are the local fakes above; ``stack.env`` holds every
    secret the tests sign with.
    """
    work = tmp_path_factory.mktemp("stack")
    credentials = with_rest_channel(work)
    env = {
        **STACK_SECRETS,
        "REDIS_URL": stack_redis.url,
        "TWILIO_API_BASE_URL": fake_twilio.url,
        "VAPI_API_BASE_URL": fake_vapi.url,
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": "sk-local-fake",
        "LLM_MODEL": "fake-model",
        # Where "talk to a person" transfers a call (action_handoff_to_human).
        "HANDOFF_PHONE_NUMBER": "+14155550100",
        # As behind a proxy: per-client limits then key on X-Forwarded-For, so each test can
        # be its own client (requests without the header count as 127.0.0.1).
        "TRUSTED_PROXY_HOPS": "1",
        # The demo orders plus each test's own (tests.support.seed_order), owned by its customer.
        "ORDERS_FIXTURE": str(stack_orders(work)),
        # Prometheus /metrics (tests/connectors/test_ops.py); a replica on the same host finds
        # the port taken and serves without metrics.
        "METRICS_PORT": str(free_port()),
        # Traces of every turn, exported as production would (OTLP over HTTP), to the fake
        # receiver, in batches sent every 200 ms so a test waits little for its spans.
        "OTEL_EXPORTER_OTLP_ENDPOINT": fake_otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    stack = RasaStack(
        model=trained_model,
        env=env,
        credentials=credentials,
        log_dir=work / "logs",
        rasa_port=STACK_RASA_PORT,
    )
    try:
        stack.start()
    except Exception:
        print(stack.rasa_log()[-5000:])
        stack.stop()
        raise
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def rasa_replica(rasa_stack: RasaStack) -> RasaStack:
    """A second Rasa server process behind the same "load balancer" (same Redis, action server
    and settings), for cross-replica tests. Started once, on first use."""
    replica = rasa_stack.replica()
    yield replica
    replica.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> RedisClusterProcesses:
    """A Redis Cluster of 3 primaries with a replica each, shared by the run. Tests that kill
    nodes start their own: this one must stay whole."""
    cluster = RedisClusterProcesses(
        tmp_path_factory.mktemp("redis-cluster"), primaries=3, replicas=1, node_timeout_ms=1000
    ).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> RedisSentinelProcesses:
    """A master, one replica and 3 Sentinels, shared by the run (never killed: see above)."""
    sentinel = RedisSentinelProcesses(
        tmp_path_factory.mktemp("redis-sentinel"), replicas=1, sentinels=3
    ).start()
    yield sentinel
    sentinel.stop()


#: Which session fixture backs each kind of deployment.
REDIS_DEPLOYMENTS = {
    "single": "redis_server",
    "cluster": "redis_cluster",
    "sentinel": "redis_sentinel",
}


@pytest.fixture(params=list(REDIS_DEPLOYMENTS), ids=list(REDIS_DEPLOYMENTS))
def redis_deployment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> RedisDeployment:
    """Runs the test once per deployment (single node, cluster, Sentinel): the deployment is
    emptied (FLUSHALL on every primary), its URL exported as REDIS_URL. A deployment is only
    started when a test first asks for it."""
    deployment = request.getfixturevalue(REDIS_DEPLOYMENTS[request.param])
    deployment.flushall()
    monkeypatch.setenv("REDIS_URL", deployment.url)
    return RedisDeployment(kind=request.param, url=deployment.url)


# --- tiers -----------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    tiers.refuse_server_fixtures(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with tiers.guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with tiers.guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    with tiers.guarded(item):
        return (yield)


# --- parallel workers (make test) -----------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is None and config.getoption("numprocesses", None):
        ensure_model(quiet=True)  # trained once, before the workers start and all load it


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> parallel.LongestFirst:
    return parallel.LongestFirst(config, log)
