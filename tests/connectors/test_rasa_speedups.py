"""The speed patches of Rasa (connectors/rasa_speedups.py) against Rasa's own methods, on the
project's trained model: the same parse of every training example and of texts it never saw,
the same tracker states and the same prediction at every step of every story and rule, the
graph runner's contract (inputs, missing inputs, errors), and the version pin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import rasa
from rasa.core.agent import Agent, load_agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.engine.exceptions import GraphRunError
from rasa.engine.graph import ExecutionContext, GraphSchema, SchemaNode
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, EntitiesAdded, SlotSet, UserUttered
from rasa.shared.core.generator import TrainingDataGenerator
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.importers.importer import TrainingDataImporter

from connectors import rasa_patches, rasa_speedups
from testkit.processes import ROOT

#: Texts the training data does not hold: typos, unknown words, symbols, long. (Whitespace
#: alone fails Rasa's own LogisticRegressionClassifier: no regex features, a narrower X.)
UNSEEN_TEXTS = (
    "wher is my ordr 12345??",
    "zxqv blorp",
    "🙂",
    "refund refund refund " * 20,
    "I want to talk to a human right now, this is the third time",
    "ORDER 55555 STATUS",
)


@pytest.fixture(scope="module")
def agent(trained_model: Path) -> Iterator[Agent]:
    rasa_speedups.uninstall()
    loaded = asyncio.run(load_agent(model_path=str(trained_model)))
    yield loaded
    rasa_speedups.uninstall()


@pytest.fixture(scope="module")
def training_trackers() -> List[DialogueStateTracker]:
    importer = TrainingDataImporter.load_from_config(
        str(ROOT / "config.yml"), str(ROOT / "domain.yml"), [str(ROOT / "data")]
    )
    generator = TrainingDataGenerator(
        importer.get_stories(),
        importer.get_domain(),
        augmentation_factor=0,
        use_story_concatenation=False,
    )
    trackers = generator.generate()
    assert any(t.is_rule_tracker for t in trackers) and any(not t.is_rule_tracker for t in trackers)
    return trackers


def _parse(agent: Agent, text: str) -> Dict[str, Any]:
    assert agent.processor is not None
    return asyncio.run(agent.processor.parse_message(UserMessage(text)))


def _predict(agent: Agent, tracker: DialogueStateTracker) -> Any:
    assert agent.processor is not None
    target = agent.processor.model_metadata.core_target
    return agent.processor.graph_runner.run(inputs={"__tracker__": tracker}, targets=[target])[
        target
    ]


#: Conversations served by the agent in process (the turn context in process, as served; no
#: action server: the business actions fail and the turn goes on), so their trackers hold what
#: served turns log: rule turns marked hidden, forms started and interrupted, fallbacks.
SERVED = (
    ("hello", "where is my order", "12345", "thanks", "no"),
    ("what is your refund policy", "I want a refund", "hold on", "55555", "are you a bot?"),
    ("where is my package", "what is your refund policy", "98765", "thanks", "yes", "bye"),
    ("zxqv blorp", "help", "can I talk to a person", "ok", "hello", "thanks"),
)


@pytest.fixture(scope="module")
def served_trackers(agent: Agent) -> List[DialogueStateTracker]:
    rasa_patches.install()
    rasa_speedups.uninstall()
    trackers = []
    for number, texts in enumerate(SERVED):
        sender = f"served-{number}"
        for text in texts:
            asyncio.run(agent.handle_message(UserMessage(text, CollectingOutputChannel(), sender)))
        assert agent.processor is not None
        trackers.append(asyncio.run(agent.processor.get_tracker(sender)))
    assert any(
        isinstance(e, ActionExecuted) and e.hide_rule_turn for t in trackers for e in t.events
    )
    return trackers


def _training_texts() -> List[str]:
    importer = TrainingDataImporter.load_from_config(
        str(ROOT / "config.yml"), str(ROOT / "domain.yml"), [str(ROOT / "data")]
    )
    return sorted({m.get("text") for m in importer.get_nlu_data().intent_examples})


def test_parses_are_identical(agent: Agent) -> None:
    texts = _training_texts() + list(UNSEEN_TEXTS)
    assert len(texts) > 100
    rasa_speedups.uninstall()
    stock = [_parse(agent, text) for text in texts]
    rasa_speedups.install()
    patched = [_parse(agent, text) for text in texts]
    for text, expected, got in zip(texts, stock, patched, strict=True):
        assert got == expected, text


def _growing(tracker: DialogueStateTracker, domain: Domain) -> Iterator[DialogueStateTracker]:
    """One tracker object replaying ``tracker``'s events, yielded before each action (the
    moments a policy predicts), as Rasa's processor grows its tracker during a turn."""
    growing = DialogueStateTracker(
        tracker.sender_id, domain.slots, is_rule_tracker=tracker.is_rule_tracker
    )
    for event in tracker.events:
        if isinstance(event, ActionExecuted):
            yield growing
        growing.update(event)


@pytest.mark.parametrize("source", ["training_trackers", "served_trackers"])
def test_states_and_predictions_are_identical(
    agent: Agent, source: str, request: pytest.FixtureRequest
) -> None:
    trackers: List[DialogueStateTracker] = request.getfixturevalue(source)
    domain = agent.domain
    assert domain is not None
    rule_only_data = {"slots": ["offer"], "loops": ["order_status_form"]}
    steps = 0
    for tracker in trackers:
        for growing in _growing(tracker, domain):
            steps += 1
            rasa_speedups.uninstall()
            stock_states = [
                domain.states_for_tracker_history(growing, False, ignore, data)
                for ignore in (False, True)
                for data in (None, rule_only_data)
            ]
            stock_prediction = _predict(agent, growing)
            rasa_speedups.install()
            for _ in range(2):  # the second time from what the first one kept
                patched_states = [
                    domain.states_for_tracker_history(growing, False, ignore, data)
                    for ignore in (False, True)
                    for data in (None, rule_only_data)
                ]
                assert patched_states == stock_states, tracker.sender_id
            assert _predict(agent, growing) == stock_prediction, tracker.sender_id
    assert steps > 50


def test_a_caller_changing_its_states_does_not_change_the_next_callers(agent: Agent) -> None:
    domain = agent.domain
    assert domain is not None
    tracker = DialogueStateTracker.from_events(
        "s",
        [
            ActionExecuted(ACTION_LISTEN_NAME),
            UserUttered("hi", {"name": "greet", "confidence": 1.0}),
        ],
        slots=domain.slots,
    )
    rasa_speedups.install()
    first = domain.states_for_tracker_history(tracker)
    expected = [dict((k, dict(v)) for k, v in state.items()) for state in first]
    first[-1]["user"].pop("intent")  # what RulePolicy does when it predicts by text
    first[-1].clear()
    assert domain.states_for_tracker_history(tracker) == expected


def test_a_replay_that_changes_events_goes_to_rasas_code(agent: Agent) -> None:
    """EntitiesAdded changes the logged user event when replayed: no replay is kept."""
    domain = agent.domain
    assert domain is not None
    tracker = DialogueStateTracker.from_events(
        "e",
        [
            ActionExecuted(ACTION_LISTEN_NAME),
            UserUttered("12345", {"name": "inform", "confidence": 1.0}),
            EntitiesAdded([{"entity": "order_number", "value": "12345"}]),
            ActionExecuted("action_listen"),
        ],
        slots=domain.slots,
    )
    rasa_speedups.install()
    domain.states_for_tracker_history(tracker)
    assert rasa_speedups.PRIOR_STATES_ATTRIBUTE not in tracker.__dict__


def test_a_tracker_whose_history_changed_is_replayed_again(agent: Agent) -> None:
    """Reverted or restarted events are not a continuation: the kept replay is dropped."""
    domain = agent.domain
    assert domain is not None
    tracker = DialogueStateTracker.from_events(
        "r",
        [ActionExecuted(ACTION_LISTEN_NAME), SlotSet("channel", "sms")],
        slots=domain.slots,
    )
    rasa_speedups.install()
    domain.states_for_tracker_history(tracker)
    kept = tracker.__dict__[rasa_speedups.PRIOR_STATES_ATTRIBUTE]
    replaced = DialogueStateTracker.from_events(
        "r", [ActionExecuted(ACTION_LISTEN_NAME), SlotSet("channel", "chat")], slots=domain.slots
    )
    replaced.__dict__[rasa_speedups.PRIOR_STATES_ATTRIBUTE] = kept  # as a shallow copy would
    states = domain.states_for_tracker_history(replaced)
    rasa_speedups.uninstall()
    assert states == domain.states_for_tracker_history(replaced)


class _Node:
    """A graph node stand-in: records its arguments, returns (name, output)."""

    def __init__(self, name: str, calls: List[tuple]) -> None:
        self.name, self.calls = name, calls

    def __call__(self, *inputs: Any) -> tuple:
        self.calls.append((self.name, inputs))
        if self.name == "broken":
            raise RuntimeError("node failed")
        return self.name, [i[1] if isinstance(i, tuple) else i for i in inputs]


def _runner(needs: Dict[str, Dict[str, str]], calls: List[tuple]) -> DaskGraphRunner:
    schema = GraphSchema(
        {
            name: SchemaNode(
                needs=need, uses=DaskGraphRunner, constructor_name="create", fn="run", config={}
            )
            for name, need in needs.items()
        }
    )
    runner = DaskGraphRunner.__new__(DaskGraphRunner)
    runner._graph_schema = schema
    runner._execution_context = ExecutionContext(graph_schema=schema)
    runner._instantiated_nodes = {name: _Node(name, calls) for name in needs}  # type: ignore[misc]
    return runner


@pytest.mark.unit
@pytest.mark.parametrize("patched", [False, True])
def test_graph_runner_contract(patched: bool) -> None:
    """Rasa's dask runner and ours give the same outputs for the same graph: inputs by name,
    a key nothing provides passed as its name, nodes not needed by the targets not run."""
    (rasa_speedups.install if patched else rasa_speedups.uninstall)()
    calls: List[tuple] = []
    runner = _runner(
        {
            "a": {"x": "__input__"},
            "b": {"x": "a", "y": "__missing__"},
            "c": {"x": "a", "y": "b"},
            "unused": {"x": "a"},
        },
        calls,
    )
    result = runner.run(inputs={"__input__": 7}, targets=["c"])
    assert result == {"c": [[7], [[7], "__missing__"]]}
    assert sorted(name for name, _ in calls) == ["a", "b", "c"]
    with pytest.raises(GraphRunError):
        runner.run(inputs={"__input__": "a"}, targets=["c"])
    broken = _runner({"broken": {"x": "__input__"}}, [])
    with pytest.raises(GraphRunError):
        broken.run(inputs={"__input__": 1}, targets=["broken"])
    rasa_speedups.uninstall()


def test_domain_emptiness_is_asked_once(agent: Agent) -> None:
    rasa_speedups.install()
    assert agent.domain is not None
    assert agent.domain.is_empty() is False
    assert Domain.empty().is_empty() is True
    assert agent.domain.__dict__["_omni_is_empty"] is False
    rasa_speedups.uninstall()


@pytest.mark.unit
def test_refuses_another_rasa_version(monkeypatch: pytest.MonkeyPatch) -> None:
    rasa_speedups.uninstall()
    monkeypatch.setattr(rasa, "__version__", "3.6.20")
    with pytest.raises(RuntimeError, match="3.6.21"):
        rasa_speedups.install()
    assert DaskGraphRunner.run is rasa_speedups._ORIGINALS[(DaskGraphRunner, "run")]
