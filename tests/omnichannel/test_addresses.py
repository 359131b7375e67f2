"""Channel addresses (omnichannel/addresses.py): phone numbers normalised to E.164 or refused
without being echoed, user and anonymous ids checked, string forms round-tripped, masked forms
for logs. Pure: no Redis."""

from __future__ import annotations

import re

import pytest

from omnichannel.addresses import (
    Address,
    InvalidAddress,
    anon_address,
    parse_address,
    phone_address,
    user_address,
)

pytestmark = pytest.mark.unit

ANON_ID = "k3J9xQ2mT7vL0pZ8aB4c"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("415-555-2671", "US", "+14155552671"),
        ("415.555.2671", "us", "+14155552671"),
        ("  +1 (415) 555 2671  ", None, "+14155552671"),
        ("+14155552671", "GB", "+14155552671"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("07911 123456", "GB", "+447911123456"),
        ("whatsapp:+14155552671", None, "+14155552671"),
        ("WhatsApp:+1 415-555-2671", None, "+14155552671"),
        ("tel:+1-415-555-2671", None, "+14155552671"),
        ("tel:+442079460958", None, "+442079460958"),
    ],
)
def test_phone_numbers_normalise_to_e164(raw: str, region: str | None, expected: str) -> None:
    address = phone_address(raw, region)
    assert address == Address("tel", expected)
    assert str(address) == f"tel:{expected}"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "hello",
        "12345",
        "+15551234567",  # 555 is not a US area code: possible, not valid
        "+44 20 7946 09",
        "+1415555267112345678",
        "whatsapp:",
        "tel:abc",
        "+1 415 555 2671" + "9" * 60,
        "x" * 100,
    ],
)
def test_invalid_phone_numbers_are_rejected_without_echoing_them(raw: str) -> None:
    with pytest.raises(InvalidAddress) as error:
        phone_address(raw, "US")
    digits = re.sub(r"\D", "", raw)
    if len(digits) >= 7:
        assert digits not in re.sub(r"\D", "", str(error.value))


def test_national_numbers_use_the_configured_default_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEFAULT_PHONE_REGION", "GB")
    assert phone_address("020 7946 0958").value == "+442079460958"
    monkeypatch.setenv("DEFAULT_PHONE_REGION", "US")
    assert phone_address("(415) 555-2671").value == "+14155552671"
    with pytest.raises(InvalidAddress):
        phone_address("020 7946 0958")


def test_user_and_anon_addresses_are_validated() -> None:
    assert str(user_address("auth0|64f1c2")) == "user:auth0|64f1c2"
    assert str(anon_address(ANON_ID)) == f"anon:{ANON_ID}"
    for bad_user in ["", "   ", "a" * 129, "line\nbreak", " padded", "bell\x07"]:
        with pytest.raises(InvalidAddress):
            user_address(bad_user)
    for bad_anon in ["", "short", "has space in it xxxx", "ü" * 20, "a" * 129]:
        with pytest.raises(InvalidAddress):
            anon_address(bad_anon)
    with pytest.raises(InvalidAddress):
        Address("tel", "4155552671")
    with pytest.raises(InvalidAddress):
        Address("email", "someone@example.com")


def test_parse_address_round_trips_and_normalises() -> None:
    for address in [phone_address("+442079460958"), user_address("u:1"), anon_address(ANON_ID)]:
        assert parse_address(str(address)) == address
    assert parse_address("tel:+1 (415) 555-2671") == Address("tel", "+14155552671")
    for bad in ["", "+14155552671", "sms:+14155552671", "tel:+15551234567", "user:"]:
        with pytest.raises(InvalidAddress):
            parse_address(bad)


def test_masked_addresses_hide_the_middle() -> None:
    assert phone_address("+14155552671").masked() == "tel:+1415***2671"
    assert phone_address("+447911123456").masked() == "tel:+4479***3456"
    assert user_address("abcdef").masked() == "user:ab***"
    assert user_address("a").masked() == "user:***"
    assert anon_address(ANON_ID).masked() == "anon:k3J9***"
