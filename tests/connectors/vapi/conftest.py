"""The VAPI tests' fixtures: the shared stack, VAPI's fake control URL, calls placed on it."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from testkit.fake_vapi_control import FakeVapiControl
from testkit.phone_numbers import new_phone_number
from testkit.vapi_call import VapiCall


@pytest.fixture(scope="module")
def control() -> FakeVapiControl:
    fake = FakeVapiControl().start()
    yield fake
    fake.stop()


@pytest.fixture
def stack(rasa_stack):
    return rasa_stack


@pytest.fixture
def make_call(stack, control):
    def make(number: Optional[str] = "new", **kwargs: Any) -> VapiCall:
        call = VapiCall(
            base_url=stack.base_url,
            server_secret=stack.env["VAPI_SERVER_SECRET"],
            number=new_phone_number() if number == "new" else number,
            **kwargs,
        )
        call.control_url = control.control_url(call.call_id)
        return call

    return make
