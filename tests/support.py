"""Small helpers shared by the test modules that talk to the shared stack."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import httpx

from omnichannel.orders import DEFAULT_FIXTURE
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
