"""Who may use Redis and over what: ACL users and TLS with a private CA, as production runs them.

An ACL user with only the project's keys, channels and commands (``~omni:* &omni:* +@all``, and
the same without dangerous commands) runs every part on a single node and on a cluster: a
tracker save and retrieve, a lock, an identity resolve, a live-feed subscription. A user that
lacks one of those rights, or gives a wrong password, is refused when Rasa builds a store
(``create_tracker_store``, ``LockStore.create``), with a ConfigError naming what to fix. TLS
with a private CA works through REDIS_TLS_CA_FILE; a CA that did not sign the server's
certificate is named in the error. No error message and no log line carries a password.
"""

from __future__ import annotations

import re
import secrets
import traceback
import uuid
from typing import Dict, Iterator, List

import pytest
from rasa.core.lock_store import LockStore
from rasa.core.tracker_store import create_tracker_store
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
from rasa.utils.endpoints import EndpointConfig

from connectors.lock_store import RedisFifoLockStore
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel.addresses import phone_address
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import conversation_key, redis_client, subscriber
from testkit.processes import RedisServer
from testkit.redis_topologies import RedisClusterProcesses, with_credentials
from testkit.tls import TlsMaterial

PASSWORD = secrets.token_hex(12)
WRONG_PASSWORD = secrets.token_hex(12)
SECRETS = (PASSWORD, WRONG_PASSWORD)

#: ACL rights per user name. "minimal" is the least the code needs and all that is needed;
#: "hardened" also withholds dangerous commands, and then needs INFO back: redis-py's cluster
#: client checks ``cluster_enabled`` with INFO before it reads CLUSTER SLOTS.
RIGHTS: Dict[str, str] = {
    "minimal": "~omni:* &omni:* +@all",
    "hardened": "~omni:* &omni:* +@all -@dangerous +info",
    "no-channels": "resetchannels ~omni:* +@all",
    "no-keys": "~other:* &omni:* +@all",
    "no-scripts": "~omni:* &omni:* +@all -@scripting",
}
USERS: List[str] = [f"{name} on >{PASSWORD} {rights}" for name, rights in RIGHTS.items()]

TRACKER_STORE = "connectors.tracker_store.RedisEventLogTrackerStore"
LOCK_STORE = "connectors.lock_store.RedisFifoLockStore"

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet]
responses:
  utter_greet: [{text: "Hi!"}]
"""
)


@pytest.fixture(autouse=True)
def no_password_in_the_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert_no_secret(caplog.text)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a password leaked into an error or a log line"


def full_text(error: BaseException) -> str:
    """An error as a traceback would print it, causes and contexts included."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def store_endpoint(kind: str, url: str) -> EndpointConfig:
    return EndpointConfig.from_dict({"type": kind, "url": url})


def build_stores(url: str) -> tuple[RedisEventLogTrackerStore, RedisFifoLockStore]:
    """Both stores as Rasa builds them at start-up from endpoints.yml."""
    tracker_store = create_tracker_store(store_endpoint(TRACKER_STORE, url), DOMAIN)
    lock_store = LockStore.create(store_endpoint(LOCK_STORE, url))
    assert isinstance(tracker_store, RedisEventLogTrackerStore)
    assert isinstance(lock_store, RedisFifoLockStore)
    return tracker_store, lock_store


async def take_a_turn(url: str) -> str:
    """A locked tracker save and retrieve with both stores; returns the conversation id."""
    tracker_store, lock_store = build_stores(url)
    cid = f"c_access_{uuid.uuid4().hex[:10]}"
    text = f"hello from {cid}"
    async with lock_store.lock(cid):
        assert await lock_store.live_tickets(cid) == 1
        tracker = tracker_store.init_tracker(cid)
        for event in (
            ActionExecuted("action_session_start"),
            SessionStarted(),
            ActionExecuted("action_listen"),
            UserUttered(text, intent={"name": "greet", "confidence": 1.0}),
            ActionExecuted("utter_greet"),
            BotUttered("Hi!"),
        ):
            tracker.update(event)
        await tracker_store.save(tracker)
    assert await lock_store.live_tickets(cid) == 0
    stored = await tracker_store.retrieve(cid)
    assert stored.latest_message.text == text
    assert [event.as_dict() for event in stored.events] == [
        event.as_dict() for event in tracker.events
    ]
    assert cid in await tracker_store.keys()
    return cid


# --- deployments with ACL users ---------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("acl-single"), users=USERS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(
        tmp_path_factory.mktemp("acl-cluster"), primaries=3, replicas=0, users=USERS
    ).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def acl_url(request: pytest.FixtureRequest) -> str:
    """The URL (without credentials) of a deployment whose nodes know the users of USERS."""
    return request.getfixturevalue(f"acl_{request.param}").url


@pytest.mark.parametrize("user", ["minimal", "hardened"])
async def test_a_user_with_only_the_omni_rights_runs_every_part(acl_url: str, user: str) -> None:
    url = with_credentials(acl_url, user, PASSWORD)
    cid = await take_a_turn(url)

    identity = IdentityStore(redis_client(url))
    phone = phone_address("+14155550123")
    resolved = await identity.resolve_conversation(phone, channel="sms")
    assert await identity.lookup(phone) == resolved
    assert (await identity.profile(resolved)).phone == "+14155550123"

    feed = await subscriber(url)
    try:
        await feed.subscribe(conversation_key(cid, "live"))
        confirmation = await feed.get_message(timeout=2)
        assert confirmation is not None and confirmation["type"] == "subscribe"
        tracker_store, _ = build_stores(url)
        tracker = await tracker_store.retrieve(cid)
        tracker.update(UserUttered("a live one", intent={"name": "greet", "confidence": 1.0}))
        await tracker_store.save(tracker)
        heard = await feed.get_message(ignore_subscribe_messages=True, timeout=5)
        assert heard is not None and b'"a live one"' in heard["data"]
    finally:
        await feed.reset()


@pytest.mark.parametrize(
    ("user", "right"),
    [("no-channels", "&omni:*"), ("no-keys", "~omni:*"), ("no-scripts", "+@scripting")],
)
def test_a_user_lacking_a_right_is_refused_at_start_up_naming_it(
    acl_url: str, user: str, right: str
) -> None:
    url = with_credentials(acl_url, user, PASSWORD)
    for kind, build in (
        (TRACKER_STORE, lambda: create_tracker_store(store_endpoint(TRACKER_STORE, url), DOMAIN)),
        (LOCK_STORE, lambda: LockStore.create(store_endpoint(LOCK_STORE, url))),
    ):
        with pytest.raises(ConfigError, match=re.escape(right)) as refused:
            build()
        assert f"'{user}'" in str(refused.value), kind
        assert_no_secret(full_text(refused.value))


def test_a_wrong_password_is_refused_at_start_up(acl_url: str) -> None:
    url = with_credentials(acl_url, "minimal", WRONG_PASSWORD)
    with pytest.raises(ConfigError, match="refused the credentials") as refused:
        create_tracker_store(store_endpoint(TRACKER_STORE, url), DOMAIN)
    assert "minimal:***@" in str(refused.value)
    assert_no_secret(full_text(refused.value))


# --- TLS with a private CA --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return TlsMaterial(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, tls: TlsMaterial) -> Iterator[RedisServer]:
    """A TLS-only node signed by the private CA, with the ACL users (so a TLS failure's
    message can be checked for the password too)."""
    server = RedisServer(tmp_path_factory.mktemp("tls-single"), tls=tls, users=USERS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, tls: TlsMaterial
) -> Iterator[RedisServer]:
    """A TLS-only node that requires a client certificate signed by the private CA
    (``tls-auth-clients yes``), with the ACL users."""
    server = RedisServer(
        tmp_path_factory.mktemp("mtls-single"), tls=tls, client_certificates="yes", users=USERS
    ).start()
    yield server
    server.stop()


def tls_environment(monkeypatch: pytest.MonkeyPatch, tls: TlsMaterial, certificate: bool) -> None:
    monkeypatch.setenv("REDIS_TLS_CA_FILE", str(tls.ca_file))
    if certificate:
        monkeypatch.setenv("REDIS_TLS_CERT_FILE", str(tls.client_cert_file))
        monkeypatch.setenv("REDIS_TLS_KEY_FILE", str(tls.client_key_file))
    # Credentials from the environment this time, as a secret store would inject them.
    monkeypatch.setenv("REDIS_USERNAME", "minimal")
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)


async def test_tls_with_a_private_ca_via_redis_tls_ca_file(
    tls: TlsMaterial, tls_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_server.url.startswith("rediss://")
    tls_environment(monkeypatch, tls, certificate=False)
    await take_a_turn(tls_server.url)


async def test_a_client_certificate_via_redis_tls_cert_file_where_redis_requires_one(
    tls: TlsMaterial, mtls_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_environment(monkeypatch, tls, certificate=True)
    await take_a_turn(mtls_server.url)


def test_without_the_client_certificate_redis_requires_start_up_is_refused(
    tls: TlsMaterial, mtls_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server really asks for the certificate: the same set-up without it fails."""
    tls_environment(monkeypatch, tls, certificate=False)
    with pytest.raises(ConfigError) as refused:
        create_tracker_store(store_endpoint(TRACKER_STORE, mtls_server.url), DOMAIN)
    assert "requires a client certificate" in str(refused.value)
    assert "set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE" in str(refused.value)
    assert_no_secret(full_text(refused.value))


def test_a_client_certificate_of_another_ca_is_named_in_the_error(
    tls: TlsMaterial, mtls_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_environment(monkeypatch, tls, certificate=True)
    monkeypatch.setenv("REDIS_TLS_CERT_FILE", str(tls.stranger_cert_file))
    monkeypatch.setenv("REDIS_TLS_KEY_FILE", str(tls.stranger_key_file))
    with pytest.raises(ConfigError) as refused:
        create_tracker_store(store_endpoint(TRACKER_STORE, mtls_server.url), DOMAIN)
    assert "does not accept the client certificate of REDIS_TLS_CERT_FILE" in str(refused.value)
    assert_no_secret(full_text(refused.value))


@pytest.mark.parametrize("ca", ["wrong", "none"])
def test_a_server_certificate_the_ca_did_not_sign_is_named_in_the_error(
    tls: TlsMaterial, tls_server: RedisServer, monkeypatch: pytest.MonkeyPatch, ca: str
) -> None:
    trusted = "the system's trusted CAs"
    if ca == "wrong":
        monkeypatch.setenv("REDIS_TLS_CA_FILE", str(tls.wrong_ca_file))
        trusted = str(tls.wrong_ca_file)
    url = with_credentials(tls_server.url, "minimal", PASSWORD)
    with pytest.raises(ConfigError) as refused:
        create_tracker_store(store_endpoint(TRACKER_STORE, url), DOMAIN)
    message = str(refused.value)
    assert f"is not trusted by {trusted}" in message
    assert "REDIS_TLS_CA_FILE" in message
    assert_no_secret(full_text(refused.value))
