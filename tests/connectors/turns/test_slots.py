"""Turn slots (connectors/turns/slots.py): at most ``size`` turns at once, the others started in
arrival order, a slot lent out while its turn waits on a remote endpoint (Rasa's outbound
requests, patched in connectors/rasa_patches.py) and never lost to a cancellation."""

from __future__ import annotations

import asyncio
import http.server
import threading
from typing import Iterator, List

import pytest
from rasa.utils.endpoints import EndpointConfig

from connectors import rasa_patches
from connectors.turns.slots import TurnSlots, turn_slots, while_waiting


@pytest.mark.unit
def test_turns_start_in_arrival_order_and_never_more_than_the_slots() -> None:
    async def run() -> List[str]:
        slots = TurnSlots(2)
        events: List[str] = []
        most = 0

        async def turn(name: str) -> None:
            nonlocal most
            async with slots.held():
                most = max(most, slots.running)
                events.append(f"start {name}")
                await asyncio.sleep(0.01)
                events.append(f"end {name}")

        await asyncio.gather(*(turn(str(n)) for n in range(6)))
        assert most == 2 and slots.running == 0
        return [event for event in events if event.startswith("start")]

    assert asyncio.run(run()) == [f"start {n}" for n in range(6)]


@pytest.mark.unit
def test_a_turn_waiting_on_a_remote_call_lends_its_slot() -> None:
    async def run() -> List[str]:
        slots = TurnSlots(1)
        order: List[str] = []
        remote = asyncio.get_running_loop().create_future()

        async def slow() -> None:
            async with slots.held():
                order.append("slow starts")
                order.append(await while_waiting(remote))

        async def quick() -> None:
            await asyncio.sleep(0)  # arrives second
            async with slots.held():
                order.append("quick runs")
                remote.set_result("slow's action server answered")

        await asyncio.gather(slow(), quick())
        assert slots.running == 0
        return order

    assert asyncio.run(run()) == ["slow starts", "quick runs", "slow's action server answered"]


@pytest.mark.unit
def test_a_turn_cancelled_while_its_slot_is_lent_gives_back_nothing_it_does_not_hold() -> None:
    async def run() -> None:
        slots = TurnSlots(1)
        remote = asyncio.get_running_loop().create_future()
        started = asyncio.Event()

        async def lender() -> None:
            async with slots.held():
                started.set()
                await while_waiting(remote)

        async def holder() -> None:
            await started.wait()
            async with slots.held():
                remote.set_result(None)  # the lender now waits to take its slot back...
                await asyncio.sleep(0.01)

        lending = asyncio.create_task(lender())
        holding = asyncio.create_task(holder())
        await asyncio.sleep(0.005)
        lending.cancel()  # ...and is cancelled meanwhile
        await asyncio.gather(lending, holding, return_exceptions=True)
        assert slots.running == 0
        # Exactly one slot is free: a second concurrent holder has to wait.
        async with slots.held():
            assert slots.running == 1
            waiter = asyncio.create_task(slots.held().__aenter__())
            await asyncio.sleep(0.01)
            assert not waiter.done()
            waiter.cancel()

    asyncio.run(run())


@pytest.mark.unit
def test_outside_a_turn_a_remote_call_is_just_awaited() -> None:
    async def run() -> str:
        return await while_waiting(asyncio.sleep(0, result="answered"))

    assert asyncio.run(run()) == "answered"


@pytest.mark.unit
def test_the_loops_slots_follow_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_TURNS", "3")

    async def run() -> None:
        assert turn_slots() is turn_slots() and turn_slots().size == 3

    asyncio.run(run())


class _SlowEndpoint(http.server.BaseHTTPRequestHandler):
    """An action server that answers after the test lets it."""

    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        self.release.wait(10)
        body = b'{"events": [], "responses": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def slow_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _SlowEndpoint.release.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhook"
    _SlowEndpoint.release.set()
    server.shutdown()


def test_rasas_requests_to_an_endpoint_lend_the_slot(slow_endpoint: str) -> None:
    """Through Rasa's own EndpointConfig.request (as a remote action calls the action server)."""
    rasa_patches.install()

    async def run() -> List[str]:
        slots = TurnSlots(1)
        order: List[str] = []

        async def calls_the_action_server() -> None:
            async with slots.held():
                await EndpointConfig(slow_endpoint).request(json={"next_action": "x"})
                order.append("remote action done")

        async def another_turn() -> None:
            await asyncio.sleep(0.2)  # the first one is waiting on the endpoint by now
            async with slots.held():
                order.append("another turn ran")
            _SlowEndpoint.release.set()

        await asyncio.gather(calls_the_action_server(), another_turn())
        return order

    assert asyncio.run(run()) == ["another turn ran", "remote action done"]
