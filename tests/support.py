"""Small helpers shared by the test modules that talk to the shared stack."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import httpx
import redis

from omnichannel.orders import DEFAULT_FIXTURE
from testkit.fake_http import FakeServer, JsonHandler
from testkit.stack import RasaStack
from testkit.twilio_webhook import signed_sms

#: Text NLU cannot place, so its turn goes through the LLM fallback (and the fake LLM's script).
GIBBERISH = "zxqv blorft wibble"


async def post_sms(stack: RasaStack, number: str, text: str) -> httpx.Response:
    """An inbound SMS through the real Twilio connector, signed as Twilio signs it."""
    sms = signed_sms(stack.env, number, text)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(stack.base_url + sms.path, data=sms.form, headers=sms.headers)


#: Seeded order numbers stay below this, so tests can use 90000-99999 as numbers that do not exist.
SEEDED_NUMBERS_BELOW = 90000


def stack_orders(directory: Path) -> Path:
    """The order fixture of a test stack (its ``ORDERS_FIXTURE``): the demo orders, which
    :func:`seed_order` adds each test's own to while the stack runs."""
    path = directory / "orders.json"
    path.write_text(DEFAULT_FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def seed_order(
    stack_or_path: Union[RasaStack, Path],
    *,
    phone: Optional[str] = None,
    user_id: Optional[str] = None,
    like: str = "12345",
    **fields: Any,
) -> str:
    """Adds an order owned by ``phone`` and/or ``user_id`` to a stack's order fixture and
    returns its fresh 5-digit number. It is demo order ``like`` (items, status, dates, tracking)
    with ``fields`` changed, so tests keep their exact expectations under a number only their
    own customer can look up. The file is replaced whole, so the servers, which read it again
    when it changes, never see half of it."""
    if not (phone or user_id):
        raise ValueError("a seeded order needs an owner: phone and/or user_id")
    path = Path(
        stack_or_path.env["ORDERS_FIXTURE"]
        if isinstance(stack_or_path, RasaStack)
        else stack_or_path
    )
    orders = json.loads(path.read_text(encoding="utf-8"))
    owner = {key: value for key, value in (("phone", phone), ("user_id", user_id)) if value}
    number = str(random.randrange(10000, SEEDED_NUMBERS_BELOW))
    while number in orders:
        number = str(random.randrange(10000, SEEDED_NUMBERS_BELOW))
    demo = json.loads(DEFAULT_FIXTURE.read_text(encoding="utf-8"))[like]
    orders[number] = {**demo, **fields, "owner": owner}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".orders-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(orders, file, indent=1)
    os.replace(temporary, path)
    return number


def key_kind(key: bytes) -> str:
    """A Redis key with its ids elided (conversation hash tags, call and item ids), so keys
    group by what they hold: ``omni:{…}:events``, ``omni:{…}:work:chat_turn``."""
    parts = key.decode("utf-8", "replace").split(":")
    if parts[:1] != ["omni"]:
        return ":".join(parts[:2])
    kind = ["{…}" if part.startswith("{") else part for part in parts[:5]]
    return ":".join(kind[:4] if kind[2:3] in (["vapi"], ["work"]) else kind[:3])


def key_kinds(redis_url: str) -> Tuple[Set[str], Dict[str, int]]:
    """The kinds of key a Redis holds, and how many keys of each kind have no expiry."""
    kinds: Set[str] = set()
    without_expiry: Counter = Counter()
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(count=1000):
            kinds.add(key_kind(key))
            if client.pttl(key) == -1:
                without_expiry[key_kind(key)] += 1
    return kinds, dict(without_expiry)
#: A real (1x1) JPEG, so the photo passes the check of its bytes.
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c"
    "1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0"
    "000b080001000101011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bff"
    "c400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a10823"
    "42b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a5354555657"
    "58595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aa"
    "b2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
    "f9faffda0008010100003f00fbfcffd9"
)


class _Recorder(JsonHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.fake.requests.append(self.path)  # type: ignore[attr-defined]
        self.send_json(200, {"secret": "internal"})


class RecordingServer(FakeServer):
    """A server that must never be asked (an internal address a hostile MediaUrl points at)."""

    handler_class = _Recorder

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[str] = []
