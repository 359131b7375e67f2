"""Custom actions of the omnichannel support assistant (rasa-sdk action server)."""

from actions.server import install

install()
