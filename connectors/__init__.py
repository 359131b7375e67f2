"""rasa-omnichannel: Rasa 3.6 channel connectors and Redis stores that keep one conversation
per customer across voice (VAPI), SMS (Twilio) and web chat."""
