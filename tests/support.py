"""Small helpers shared by the test modules that talk to the shared stack."""

from __future__ import annotations

import random
import uuid

import httpx
import phonenumbers
from twilio.request_validator import RequestValidator

from devtools.stack import RasaStack

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
    url = f"{stack.env['PUBLIC_BASE_URL']}/webhooks/twilio_sms/webhook"
    form = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": stack.env["TWILIO_ACCOUNT_SID"],
        "From": number,
        "To": stack.env["TWILIO_PHONE_NUMBER"],
        "Body": text,
        "NumMedia": "0",
    }
    signature = RequestValidator(stack.env["TWILIO_AUTH_TOKEN"]).compute_signature(url, form)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{stack.base_url}/webhooks/twilio_sms/webhook",
            data=form,
            headers={"X-Twilio-Signature": signature},
        )
