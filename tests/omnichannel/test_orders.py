"""Order lookup (omnichannel/orders.py): the number as customers and voice transcripts give it,
and only for the order's owner: someone else's order is None, exactly like a missing number."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omnichannel.identity import ContactProfile
from omnichannel.orders import Customer, find_order, is_identified, order_digits

pytestmark = pytest.mark.unit

DEMO = Customer(phone="+14155552671", user_id="demo-customer")
STRANGER = Customer(phone="+16175550123", user_id="someone-else")


@pytest.mark.parametrize(
    "given",
    ["12345", "#12345", "order 12345", "1 2 3 4 5", "1-2-3-4-5", "one two three four five"],
)
def test_an_order_number_as_given_finds_the_owners_order(given: str) -> None:
    order = find_order(given, DEMO)
    assert order is not None and order.number == "12345"


def test_spoken_digits_become_digits() -> None:
    assert order_digits("Four zero two one three") == "40213"
    assert order_digits("seven seven eight oh one") == "77801"


@pytest.mark.parametrize("given", [None, "", "99999", "not a number", "1234"])
def test_no_order_for_anything_else(given: str) -> None:
    assert find_order(given, DEMO) is None


@pytest.mark.parametrize("number", ["12345", "40213", "77801", "55555"])
def test_every_demo_order_is_the_demo_customers_by_phone_and_by_site_user(number: str) -> None:
    assert find_order(number, Customer(phone=DEMO.phone)) is not None
    assert find_order(number, Customer(user_id=DEMO.user_id)) is not None


@pytest.mark.parametrize(
    "identity",
    [
        STRANGER,
        Customer(phone="+16175550123"),
        Customer(user_id="someone-else"),
        # Either half must be the owner's own: a phone claimed as a user id is not the phone.
        Customer(user_id=DEMO.phone),
        Customer(phone="+14155552672", user_id="demo-customer "),
    ],
)
def test_someone_elses_order_is_the_same_none_as_a_missing_one(identity: Customer) -> None:
    assert find_order("12345", identity) is None
    assert find_order("99999", identity) is None


def test_nobody_identified_finds_nothing_even_an_order_without_that_half() -> None:
    anonymous = Customer()
    assert not is_identified(anonymous)
    assert find_order("12345", anonymous) is None
    assert is_identified(Customer(user_id="x")) and is_identified(Customer(phone="+15105550100"))


def test_a_contact_profile_is_a_verified_identity() -> None:
    """What the actions pass: the conversation's profile from omnichannel.identity."""
    linked = ContactProfile(conversation_id="c_1", phone=DEMO.phone, user_id="site-user-9")
    assert find_order("40213", linked).number == "40213"
    assert find_order("40213", ContactProfile(conversation_id="c_2")) is None


def _write(path: Path, orders: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(orders), encoding="utf-8")
    os.replace(temporary, path)


def _order(**owner: str) -> dict:
    return {"items": ["Mug"], "status": "processing", "ordered_on": "2026-11-20", "owner": owner}


def test_a_changed_fixture_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "orders.json"
    _write(path, {"20001": _order(phone="+15105550100")})
    monkeypatch.setenv("ORDERS_FIXTURE", str(path))
    owner = Customer(phone="+15105550100")
    assert find_order("20001", owner).items == ("Mug",)
    assert find_order("20002", Customer(user_id="u-2")) is None

    _write(path, {"20001": _order(phone="+15105550100"), "20002": _order(user_id="u-2")})

    assert find_order("20002", Customer(user_id="u-2")).number == "20002"
    assert find_order("20002", owner) is None


@pytest.mark.parametrize(
    "owner",
    [None, {}, {"phone": "4155552671"}, {"phone": "+1 415 555 2671"}, {"user_id": "  "}],
    ids=["missing", "empty", "not-e164", "spaces", "blank-user"],
)
def test_an_order_without_a_usable_owner_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: object
) -> None:
    path = tmp_path / "orders.json"
    order = _order()
    if owner is None:
        del order["owner"]
    else:
        order["owner"] = owner
    _write(path, {"20003": order})
    monkeypatch.setenv("ORDERS_FIXTURE", str(path))
    with pytest.raises(ValueError, match="order 20003: owner"):
        find_order("20003", DEMO)
