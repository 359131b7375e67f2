"""The light start (connectors/rasa_light_start.py, connectors/rasa_main.py): the served model
without TensorFlow gives the same parses and predictions as with it, a served conversation never
imports it, a pipeline that needs TensorFlow still gets it, and the training graph read later is
the one the model holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import httpx

from testkit.processes import ROOT
from testkit.stack import RasaStack

#: Loads the model in a fresh process (light or not), parses texts and predicts every step of
#: every story and rule; prints what it found as JSON, and whether TensorFlow got imported.
PROBE = """
import asyncio, json, sys
light, model = sys.argv[1] == "light", sys.argv[2]
if light:
    from connectors import rasa_light_start
    rasa_light_start.install()
from rasa.core.agent import load_agent
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import ActionExecuted
from rasa.shared.core.generator import TrainingDataGenerator
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.importers.importer import TrainingDataImporter

agent = asyncio.run(load_agent(model_path=model))
served_without = "tensorflow" not in sys.modules
importer = TrainingDataImporter.load_from_config("config.yml", "domain.yml", ["data"])
texts = sorted({m.get("text") for m in importer.get_nlu_data().intent_examples})
texts += ["wher is my ordr 12345??", "zxqv blorp", "refund refund " * 30]
parses = [asyncio.run(agent.processor.parse_message(UserMessage(t))) for t in texts]
served_without = served_without and "tensorflow" not in sys.modules
trackers = TrainingDataGenerator(
    importer.get_stories(), importer.get_domain(), augmentation_factor=0,
    use_story_concatenation=False,
).generate()
target = agent.processor.model_metadata.core_target
predictions = []
for training in trackers:
    tracker = DialogueStateTracker(
        training.sender_id, agent.domain.slots, is_rule_tracker=training.is_rule_tracker
    )
    for event in training.events:
        if isinstance(event, ActionExecuted):
            p = agent.processor.graph_runner.run(
                inputs={"__tracker__": tracker}, targets=[target]
            )[target]
            events = [
                {k: v for k, v in e.as_dict().items() if k != "timestamp"} for e in p.events
            ]
            predictions.append([p.probabilities, p.policy_name, events])
        tracker.update(event)
print(json.dumps({
    "parses": parses,
    "predictions": predictions,
    "train_schema": agent.processor.model_metadata.train_schema.as_dict(),
    # Loaded and parsed without it (reading the training data imports it: not serving).
    "tensorflow": not served_without,
}, default=repr))
"""


def _probe(mode: str, model: Path) -> Dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(model)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_model_serves_the_same_without_tensorflow(trained_model: Path) -> None:
    light, stock = _probe("light", trained_model), _probe("stock", trained_model)
    assert light["tensorflow"] is False and stock["tensorflow"] is True
    assert len(light["parses"]) > 100 and len(light["predictions"]) > 200
    assert light["parses"] == stock["parses"]
    assert light["predictions"] == stock["predictions"]
    # The training graph, rebuilt when read, is the one the model holds.
    assert light["train_schema"] == stock["train_schema"]


def _mapped_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def test_a_served_conversation_never_imports_tensorflow(rasa_stack: RasaStack) -> None:
    """Through the stack (started as deploy/ starts it): greetings, rules, a form, a fallback."""
    assert rasa_stack.rasa_proc is not None
    url = f"{rasa_stack.base_url}/webhooks/rest/webhook"
    texts = [
        "hello",
        "what is your refund policy",
        "are you a bot?",
        "where is my order",
        "12345",
        "thanks",
        "zxqv blorp",
        "can I talk to a person",
    ]
    with httpx.Client(timeout=60) as client:
        for text in texts:
            reply = client.post(url, json={"sender": "c_light_start", "message": text})
            assert reply.status_code == 200, reply.text
    assert not _mapped_tensorflow(rasa_stack.rasa_proc.pid)


#: A light process asked for what a TensorFlow pipeline uses: it gets it.
TENSORFLOW_PIPELINE = """
import sys
from connectors import rasa_light_start
rasa_light_start.install()
import rasa.core.agent  # what `rasa run` imports
assert "tensorflow" not in sys.modules
from rasa.engine.graph import GraphComponent, GraphSchema
schema = GraphSchema.from_dict({"nodes": {
    "diet": {"needs": {}, "uses": "rasa.nlu.classifiers.diet_classifier.DIETClassifier",
             "constructor_name": "load", "fn": "process", "config": {}, "resource": None},
    "ted": {"needs": {}, "uses": "rasa.core.policies.ted_policy.TEDPolicy",
            "constructor_name": "load", "fn": "predict_action_probabilities", "config": {},
            "resource": None},
}})
assert all(issubclass(node.uses, GraphComponent) for node in schema.nodes.values())
import rasa.utils.train_utils as train_utils
assert callable(train_utils.rank_and_mask)
import tensorflow
assert tensorflow.keras.callbacks.Callback in train_utils.RasaTrainingLogger.__mro__
print("ok")
"""


def test_a_tensorflow_pipeline_still_gets_tensorflow() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TENSORFLOW_PIPELINE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_install_refuses_what_it_was_not_written_for() -> None:
    late = subprocess.run(
        [
            sys.executable,
            "-c",
            "import rasa.utils.train_utils\n"
            "from connectors import rasa_light_start\nrasa_light_start.install()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert late.returncode != 0 and "before Rasa is imported" in late.stderr
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata as m\nm.version = lambda name: '3.6.20'\n"
            "from connectors import rasa_light_start\nrasa_light_start.install()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert other.returncode != 0 and "targets Rasa 3.6.21, found 3.6.20" in other.stderr
