"""Errors every layer shares."""


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message names the setting and never
    quotes a secret."""
