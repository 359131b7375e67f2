"""Load and fleet tooling: a local fleet on real parts (:mod:`~bench.fleet.local_fleet`: Redis,
an action server, Rasa replicas behind HAProxy, as ``deploy/`` runs them), simulated customers
on every channel (:mod:`~bench.fleet.customers`), the check of what became of every message
(:mod:`~bench.fleet.checks`) and the long run of ``make soak`` (:mod:`~bench.fleet.soak`).
tests/fleet/test_fleet.py is the short run of the same, in ``make test``.
"""
