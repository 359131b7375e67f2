"""How ``make test`` spreads the tests over parallel workers (pytest-xdist, ``-n``).

Each worker is a pytest process with session fixtures of its own: its own ``redis-server``\\ s,
Rasa stack, fakes and free ports (testkit.processes.free_port reserves ports machine-wide), so
workers share nothing but the trained model, which ``make test`` trains before they start.

A module is the unit of work: all its tests run on one worker, so a module-scoped fixture (a
cluster, four Rasa servers) starts once. Modules marked ``@pytest.mark.xdist_group("name")``
travel together (run with ``--dist loadgroup``). The longest units go first, so the run does not
end waiting on one that started last: their measured times are in :data:`SECONDS`; a unit not
listed counts :data:`SECONDS_PER_TEST` per test. The table only orders the work: a stale entry
makes a run slower, never wrong.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScopeScheduling

#: Wall seconds of the longest units on a 2-core machine (serial run), longest first.
SECONDS = {
    "tests/fleet/test_fleet.py": 240,
    "tests/connectors/test_tracker_store.py": 190,
    "tests/connectors/test_redis_failover.py": 160,
    "tests/connectors/test_rasa_light_start.py": 95,
    "tests/connectors/webchat/test_live.py": 90,
    "chatwoot": 90,
    "tests/connectors/test_lock_store.py": 80,
    "tests/browser/test_widget.py": 80,
    "tests/connectors/handoff/test_voice_handoff.py": 45,
    "tests/browser/test_inbox.py": 40,
    "tests/connectors/test_drain.py": 75,
    "tests/connectors/twilio_sms/test_turns.py": 60,
    "tests/connectors/vapi/test_takeover.py": 55,
    "tests/connectors/test_rasa_speedups.py": 55,
    "tests/connectors/test_lock_store_order.py": 50,
    "tests/devtools/test_evaluate.py": 50,
    "tests/connectors/webchat/test_turns.py": 45,
    "tests/test_rasa_server.py": 45,
    "tests/connectors/twilio_sms/test_channel.py": 40,
    "tests/connectors/vapi/test_callbacks.py": 45,
    "tests/testkit/test_redis_topologies.py": 40,
    "tests/actions/test_barge_in.py": 40,
}
SECONDS_PER_TEST = 0.5


class LongestFirst(LoadScopeScheduling):
    """xdist's per-module scheduling, with groups as one unit and the longest unit first."""

    def _split_scope(self, nodeid: str) -> str:
        # With --dist loadgroup, xdist appends "@<group>" to the ids of grouped tests.
        if nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.rsplit("@", 1)[-1]
        return nodeid.split("::", 1)[0]

    def _seconds(self, scope: str) -> float:
        return SECONDS.get(scope, SECONDS_PER_TEST * len(self.workqueue[scope]))

    def _assign_work_unit(self, node: Any) -> None:
        longest = max(self.workqueue, key=self._seconds)
        self.workqueue.move_to_end(longest, last=False)
        super()._assign_work_unit(node)
