"""Drop-in for Rasa's own Redis stores: an endpoints.yml written for Rasa's ``RedisTrackerStore``
and ``RedisLockStore`` (host, port, db, password, key_prefix, record_exp) works once only
``type:`` changes, here against a password-protected redis-server, through Rasa's own
``create_tracker_store`` and ``LockStore.create``."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import redis
from rasa.core.lock_store import LockStore
from rasa.core.tracker_store import create_tracker_store
from rasa.core.utils import AvailableEndpoints
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered

from connectors.lock_store import RedisFifoLockStore
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel.redis_client import conversation_key
from testkit.processes import RedisServer
from tests.connectors.test_tracker_store import DOMAIN, event_dicts

#: The key the start-up ACL check writes (it expires after 10 s): not a store's data.
ACCESS_PROBE = conversation_key("access-check", "probe")

ENDPOINTS = """
tracker_store:
  type: connectors.tracker_store.RedisEventLogTrackerStore
  url: 127.0.0.1
  port: ${OMNI_TEST_REDIS_PORT}
  db: 3
  password: ${OMNI_TEST_REDIS_PASSWORD}
  key_prefix: shop_a
  record_exp: 600
lock_store:
  type: connectors.lock_store.RedisFifoLockStore
  host: 127.0.0.1
  port: ${OMNI_TEST_REDIS_PORT}
  db: 3
  password: ${OMNI_TEST_REDIS_PASSWORD}
  key_prefix: shop_a
"""


async def test_rasa_style_options_reach_a_password_protected_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secrets.token_hex(16)
    server = RedisServer(tmp_path / "redis", admin_password=password).start()
    try:
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setenv("OMNI_TEST_REDIS_PORT", str(server.port))
        monkeypatch.setenv("OMNI_TEST_REDIS_PASSWORD", password)
        (tmp_path / "endpoints.yml").write_text(ENDPOINTS)
        endpoints = AvailableEndpoints.read_endpoints(str(tmp_path / "endpoints.yml"))
        tracker_store = create_tracker_store(endpoints.tracker_store, DOMAIN)
        lock_store = LockStore.create(endpoints.lock_store)
        assert isinstance(tracker_store, RedisEventLogTrackerStore)
        assert isinstance(lock_store, RedisFifoLockStore)

        cid = "c_" + secrets.token_hex(6)
        tracker = tracker_store.init_tracker(cid)
        for event in (ActionExecuted("action_session_start"), SessionStarted()):
            tracker.update(event)
        tracker.update(UserUttered("hi", intent={"name": "greet", "confidence": 1.0}))
        async with lock_store.lock(cid):
            await tracker_store.save(tracker)
            with server.admin_client(db=3) as admin:
                held = sorted(key.decode() for key in admin.scan_iter(count=1000))

        with server.admin_client(db=3) as admin:
            events_key = f"omni:shop_a:{{{cid}}}:events"
            assert admin.llen(events_key) == 3
            assert 590 < admin.ttl(events_key) <= 600  # record_exp
            stored = sorted(key.decode() for key in admin.scan_iter(count=1000))
        with server.admin_client(db=0) as admin:
            assert admin.dbsize() == 0  # db: 3 was used, not the URL's default
        with redis.Redis(port=server.port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()  # so the stores did use the password

        assert any(key.startswith(f"omni:shop_a:{{{cid}}}:lock:") for key in held)
        # Besides the conversation's keys, the insight page's day figures (kept apart per
        # namespace too: omnichannel/insight/store.py).
        figures = "omni:shop_a:{insight}:"
        own_keys = [k for k in held + stored if k != ACCESS_PROBE and not k.startswith(figures)]
        assert all(key.startswith(f"omni:shop_a:{{{cid}}}:") for key in own_keys), own_keys
        assert event_dicts(await tracker_store.retrieve(cid)) == event_dicts(tracker)
        assert await tracker_store.keys() == [cid]
        assert await lock_store.live_tickets(cid) == 0
    finally:
        server.stop()
