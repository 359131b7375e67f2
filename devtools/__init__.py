"""Local tooling: the `make run` launcher, the embedded Redis, the Twilio and VAPI simulators
and the benchmarks. Nothing here is imported by the Rasa server in production."""
