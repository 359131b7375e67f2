"""Custom actions of the omnichannel support assistant (rasa-sdk action server)."""
