"""Connector options (omnichannel/options.py): typed, bounded, unknown keys refused by name."""

from __future__ import annotations

import pytest
from pydantic import confloat, conint

from omnichannel.errors import ConfigError
from omnichannel.options import ConnectorOptions

pytestmark = pytest.mark.unit


class ExampleOptions(ConnectorOptions):
    budget_seconds: confloat(gt=0, le=12) = 5.0
    page_size: conint(ge=1, le=200) = 50
    trust_header: bool = False


def test_defaults_apply_when_the_section_is_empty() -> None:
    options = ExampleOptions.parse("connectors.example.ExampleInput", None)
    assert (options.budget_seconds, options.page_size, options.trust_header) == (5.0, 50, False)


def test_yaml_strings_are_converted_to_the_declared_types() -> None:
    options = ExampleOptions.parse(
        "connectors.example.ExampleInput",
        {"budget_seconds": "2.5", "page_size": "10", "trust_header": "yes"},
    )
    assert (options.budget_seconds, options.page_size, options.trust_header) == (2.5, 10, True)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"budget_second": 3}, "budget_second"),
        ({"budget_seconds": 30}, "budget_seconds"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": "many"}, "page_size"),
    ],
)
def test_unknown_keys_and_values_out_of_bounds_stop_start_up(values: dict, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        ExampleOptions.parse("connectors.example.ExampleInput", values)
    assert "connectors.example.ExampleInput" in str(refused.value) and named in str(refused.value)


def test_options_cannot_be_changed_after_start_up() -> None:
    options = ExampleOptions.parse("connectors.example.ExampleInput", {})
    with pytest.raises(TypeError):
        options.page_size = 5
