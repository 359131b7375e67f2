"""The test kit: the local parts that tests, benchmarks and the designers' tools run against.

Real processes on free loopback ports (:mod:`~testkit.processes`: Redis, the action server and
the Rasa server; :mod:`~testkit.redis_topologies`: Redis Cluster, Sentinel, TLS with
:mod:`~testkit.tls`, ACL users; :mod:`~testkit.stack`: a trained Rasa server with its action
server), local HTTP fakes of the vendors outside this machine, following their documented APIs
(:mod:`~testkit.fake_twilio`, :mod:`~testkit.fake_vapi_control`, :mod:`~testkit.fake_llm`, on
:mod:`~testkit.fake_http`), and the vendors' requests made as they make them (Twilio's signed
webhooks: :mod:`~testkit.twilio_webhook`; a VAPI call: :mod:`~testkit.vapi_call`), signed with
the local settings of :mod:`~testkit.local_env`.

Imported by ``tests/``, ``bench/`` and ``devtools/``; it imports none of them, and nothing here is
loaded by the Rasa server or the action server.
"""
