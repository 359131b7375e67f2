"""Order lookup (omnichannel/orders.py): the number as customers and voice transcripts give it."""

from __future__ import annotations

import pytest

from omnichannel.orders import find_order, order_digits


@pytest.mark.parametrize(
    "given",
    ["12345", "#12345", "order 12345", "1 2 3 4 5", "1-2-3-4-5", "one two three four five"],
)
def test_an_order_number_as_given_finds_the_order(given: str) -> None:
    order = find_order(given)
    assert order is not None and order.number == "12345"


def test_spoken_digits_become_digits() -> None:
    assert order_digits("Four zero two one three") == "40213"


@pytest.mark.parametrize("given", [None, "", "99999", "not a number", "1234"])
def test_no_order_for_anything_else(given: str) -> None:
    assert find_order(given) is None
