"""Connector options: one typed model per connector, declared next to its class.

A connector's tunables come from its section of ``credentials.yml``. Each connector declares them
as a subclass of :class:`ConnectorOptions` (fields with types, defaults and bounds), and reads
them once, in ``from_credentials``, with :meth:`ConnectorOptions.parse`. Every connector thus
behaves the same way on bad input: an unknown key (a typo such as ``inline_budget_second``) or a
value out of bounds stops start-up with a :class:`ConfigError` that names the section and the key,
instead of being ignored or failing on the first webhook.

pydantic (1.x, the version Rasa 3.6 pins) does the conversion: YAML's ``"5"`` and ``5`` both give
an ``int``, ``"yes"`` a ``bool``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Type, TypeVar

from pydantic import BaseModel, Extra, ValidationError

from omnichannel.errors import ConfigError

_O = TypeVar("_O", bound="ConnectorOptions")


class ConnectorOptions(BaseModel):
    """Base of every connector's options: immutable, unknown keys refused."""

    class Config:
        extra = Extra.forbid
        allow_mutation = False
        anystr_strip_whitespace = True

    @classmethod
    def parse(cls: Type[_O], section: str, values: Optional[Mapping[str, Any]]) -> _O:
        """The options in ``credentials.yml``'s ``section`` (None or empty: all defaults)."""
        try:
            return cls(**dict(values or {}))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc'])}: "
                + ("unknown option" if issue["type"] == "value_error.extra" else issue["msg"])
                for issue in error.errors()
            )
            raise ConfigError(f"credentials.yml, {section}: {problems}") from None
