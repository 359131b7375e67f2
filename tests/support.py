"""Small helpers shared by the test modules that talk to the shared stack."""

from __future__ import annotations

import random

import httpx
import phonenumbers

from devtools.stack import RasaStack
from devtools.twilio_webhook import signed_sms

#: Text NLU cannot place, so its turn goes through the LLM fallback (and the fake LLM's script).
GIBBERISH = "zxqv blorft wibble"

_AREA_CODES = ("212", "312", "415", "510", "617", "628", "646", "650", "718", "917")


def new_phone_number() -> str:
    """A random valid US number, so tests on the shared stack never share a conversation."""
    while True:
        area = random.choice(_AREA_CODES)
        number = f"+1{area}{random.randint(200, 999)}{random.randint(0, 9999):04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number


async def post_sms(stack: RasaStack, number: str, text: str) -> httpx.Response:
    """An inbound SMS through the real Twilio connector, signed as Twilio signs it."""
    sms = signed_sms(stack.env, number, text)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(stack.base_url + sms.path, data=sms.form, headers=sms.headers)
