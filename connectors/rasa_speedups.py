"""Patches of Rasa 3.6.21 that remove work its turn repeats, each with the same results.

A profile of the Rasa server at saturation (py-spy, web chat customers at random phases; see
docs/DEVELOPERS.md, "Benchmarks") put these costs on every turn, none of which changes what
the turn decides:

- **Dask around a sequential graph.** Rasa runs its NLU graph and its policy graph through
  ``dask.get``, dask's synchronous scheduler (one thread, one task after another:
  https://github.com/RasaHQ/rasa/issues/10754), and on every run first recomputes the graph's
  minimal schema (a recursive walk without memo), rebuilds the dask graph and lets dask order
  it: 8% of the process at
  saturation. :func:`_run_graph` runs the same nodes, with the same arguments (a missing input
  passed as its name, as dask does), in one topological order computed once per target list.
- **The classifier's features combined twice.** ``LogisticRegressionClassifier._create_X``
  asks each message for its combined sparse features, which combines both the sequence
  features (a matrix per token, then unused) and the sentence features, one ``hstack`` and a
  deep copy per featurizer: 9% of the process. :func:`_create_x` combines the sentence features
  only, in one ``hstack`` (the same values, positions and dtype), then builds X as Rasa does.
- **The same tracker states computed five times a turn.** Every policy featurises the whole
  tracker for every prediction (``Domain.states_for_tracker_history``): a replay of its events
  from the start, and the active state of the tracker before each action. MemoizationPolicy and
  RulePolicy do it separately, RulePolicy twice after a user message (by text, then by intent),
  and a turn predicts two or three times on a tracker that only grew: 13% of the process.
  :func:`_states_for_tracker_history` keeps, on the tracker, the replay and the active states
  of the prior trackers it has seen (:class:`PriorStates`), extends them when the tracker's
  applied events still begin with the same event objects, and assembles each caller's states
  from them with Rasa's own steps (rule-only turns hidden, rule-only features removed), each
  call getting its own state dicts. Anything it was not written for goes to Rasa's code:
  slots left out when unset (``omit_unset_slots``), an ``EntitiesAdded`` event (applying one
  changes the logged user event in place, so a second replay differs from the first).
- **The domain compared with an empty one on every message.** ``Domain.is_empty`` serialises
  the whole domain and a new empty one to compare them, for a warning check on every parsed
  message: 1.5%. A loaded domain does not change, so :func:`_domain_is_empty` answers from
  the first comparison.

Like :mod:`connectors.rasa_patches` (whose ``install`` installs these too), they replace
methods of Rasa's classes and refuse any other Rasa version. tests/connectors/test_rasa_speedups.py
compares every patched method with Rasa's own on the trained model: the same parses for every
training example, the same predictions at every step of every story and rule.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import rasa
import scipy.sparse
from rasa.engine.exceptions import GraphRunError
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.core import constants as core_constants
from rasa.shared.core.domain import Domain, State, SubState
from rasa.shared.core.events import ActionExecuted, EntitiesAdded, Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import TEXT

#: The Rasa version whose code these patches were written against.
RASA_VERSION = "3.6.21"

_ORIGINALS: Dict[Tuple[type, str], Any] = {
    (DaskGraphRunner, "run"): DaskGraphRunner.run,
    (LogisticRegressionClassifier, "_create_X"): LogisticRegressionClassifier._create_X,
    (Domain, "states_for_tracker_history"): Domain.states_for_tracker_history,
    (Domain, "is_empty"): Domain.is_empty,
}


# -- the graph, node after node ---------------------------------------------------------------


@dataclass(frozen=True)
class GraphPlan:
    """The nodes one run of a graph executes, in order, each with the keys of its inputs."""

    steps: Tuple[Tuple[str, Tuple[str, ...]], ...]

    @classmethod
    def of(cls, runner: DaskGraphRunner, targets: Sequence[str]) -> GraphPlan:
        schema = runner._graph_schema.minimal_graph_schema(list(targets))
        order = graphlib.TopologicalSorter(
            {
                name: [need for need in node.needs.values() if need in schema.nodes]
                for name, node in schema.nodes.items()
            }
        ).static_order()
        return cls(tuple((name, tuple(schema.nodes[name].needs.values())) for name in order))


def _plan(runner: DaskGraphRunner, targets: Tuple[str, ...]) -> GraphPlan:
    plans: Dict[Tuple[str, ...], GraphPlan] = runner.__dict__.setdefault("_omni_plans", {})
    plan = plans.get(targets)
    if plan is None:
        plan = plans[targets] = GraphPlan.of(runner, targets)
    return plan


def _run_graph(
    self: DaskGraphRunner,
    inputs: Optional[Dict[str, Any]] = None,
    targets: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """``DaskGraphRunner.run`` without dask: the same nodes and arguments, in order."""
    run_targets = tuple(targets if targets else self._graph_schema.target_names)
    plan = _plan(self, run_targets)
    # What dask's graph holds: each input as (name, value), each node's output as (name, output).
    results: Dict[str, Any] = {}
    for name, value in (inputs or {}).items():
        if isinstance(value, str) and (value in results or any(value == s for s, _ in plan.steps)):
            raise GraphRunError(
                f"Input value '{value}' clashes with a node name. Make sure "
                f"that none of the input names passed to the `run` method are the "
                f"same as node names in the graph schema."
            )
        results[name] = (name, value)
    try:
        for name, needs in plan.steps:
            if name in results:  # an input named like a node replaces it, as in dask's graph
                continue
            # A key nothing provides reaches the node as its name (dask passes it through).
            results[name] = self._instantiated_nodes[name](*(results.get(n, n) for n in needs))
        return dict(results[target] for target in run_targets)
    except RuntimeError as error:
        raise GraphRunError("Error running runner.") from error


# -- the classifier's input -------------------------------------------------------------------


def _sentence_features(message: Any) -> Optional[scipy.sparse.spmatrix]:
    """What ``message.get_sparse_features(TEXT)[1].features`` is, without the sequence half."""
    _, sentence = message._filter_sparse_features(TEXT, [])
    if not sentence:
        return None
    if len(sentence) == 1:
        return sentence[0].features
    return scipy.sparse.hstack([feature.features for feature in sentence])


def _create_x(self: LogisticRegressionClassifier, messages: List[Any]) -> scipy.sparse.csr_matrix:
    """``LogisticRegressionClassifier._create_X`` with the sentence features combined once."""
    rows = []
    for message in messages:
        sparse = _sentence_features(message)
        dense = message.get_dense_features(attribute=TEXT)[1]
        rows.append(
            scipy.sparse.hstack(
                [
                    scipy.sparse.csr_matrix(sparse if sparse is not None else []),
                    scipy.sparse.csr_matrix(dense.features if dense else []),
                ]
            )
        )
    return scipy.sparse.vstack(rows)


# -- tracker states, computed once per prior tracker -------------------------------------------


@dataclass
class PriorTracker:
    """What states need of one prior tracker (the tracker before an action, or the last one)."""

    hide_rule_turn: bool
    latest_action: Optional[Dict[str, Any]]
    followup_action: Optional[str]
    latest_action_name: Optional[str]
    active_loop_name: Optional[str]
    active_state: State

    @classmethod
    def of(
        cls, domain: Domain, tracker: DialogueStateTracker, hide_rule_turn: bool
    ) -> PriorTracker:
        return cls(
            hide_rule_turn=hide_rule_turn,
            latest_action=domain._get_prev_action_sub_state(tracker),
            followup_action=tracker.followup_action,
            latest_action_name=tracker.latest_action_name,
            active_loop_name=tracker.active_loop_name,
            active_state=domain.get_active_state(tracker, omit_unset_slots=False),
        )


@dataclass
class PriorStates:
    """One tracker's replay so far: the applied events replayed, the tracker they built, and
    the prior tracker before each ``ActionExecuted`` among them (kept on the tracker itself, so
    it lives as long as the tracker and goes with it)."""

    domain: Domain
    applied: List[Event] = field(default_factory=list)
    replay: Optional[DialogueStateTracker] = None
    before_actions: List[PriorTracker] = field(default_factory=list)
    last: Optional[PriorTracker] = None

    def extends(self, domain: Domain, applied: List[Event]) -> bool:
        """Whether ``applied`` begins with the events replayed here (the same objects)."""
        return (
            domain is self.domain
            and len(applied) >= len(self.applied)
            and all(new is old for new, old in zip(applied, self.applied, strict=False))
        )

    def catch_up(self, tracker: DialogueStateTracker, applied: List[Event]) -> List[PriorTracker]:
        """The prior trackers of ``applied`` (which :meth:`extends` the replay), in order."""
        if self.replay is None:
            self.replay = tracker.init_copy()
        new_events = applied[len(self.applied) :]
        for event in new_events:
            if isinstance(event, ActionExecuted):
                self.before_actions.append(
                    PriorTracker.of(self.domain, self.replay, event.hide_rule_turn)
                )
            self.replay.update(event)
        self.applied = list(applied)
        if new_events or self.last is None:
            self.last = PriorTracker.of(self.domain, self.replay, False)
        return [*self.before_actions, self.last]


PRIOR_STATES_ATTRIBUTE = "_omni_prior_states"


def _prior_trackers(domain: Domain, tracker: DialogueStateTracker) -> Optional[List[PriorTracker]]:
    """The prior trackers of ``tracker``, from what earlier calls replayed where they still
    apply; None when its events are ones this was not written for (Rasa's code runs then)."""
    applied = tracker.applied_events()
    if any(isinstance(event, EntitiesAdded) for event in applied):
        return None
    cached: Optional[PriorStates] = tracker.__dict__.get(PRIOR_STATES_ATTRIBUTE)
    if cached is None or not cached.extends(domain, applied):
        cached = PriorStates(domain)
        tracker.__dict__[PRIOR_STATES_ATTRIBUTE] = cached
    return cached.catch_up(tracker, applied)


def _own_state(state: State) -> State:
    """A copy of a cached state the caller may change (sub-states are dicts of immutables)."""
    return {key: dict(sub_state) for key, sub_state in state.items()}


def _states_for_tracker_history(
    self: Domain,
    tracker: DialogueStateTracker,
    omit_unset_slots: bool = False,
    ignore_rule_only_turns: bool = False,
    rule_only_data: Optional[Dict[str, Any]] = None,
) -> List[State]:
    """``Domain.states_for_tracker_history`` from the tracker's cached prior trackers."""
    priors = None if omit_unset_slots else _prior_trackers(self, tracker)
    if priors is None:
        return _ORIGINALS[(Domain, "states_for_tracker_history")](
            self, tracker, omit_unset_slots, ignore_rule_only_turns, rule_only_data
        )
    # Rasa's loop (rasa/shared/core/domain.py), on the recorded prior trackers.
    states: List[State] = []
    last_ml_action_sub_state: Optional[SubState] = None
    turn_was_hidden = False
    for prior in priors:
        if ignore_rule_only_turns:
            if not turn_was_hidden:
                last_ml_action_sub_state = prior.latest_action
            if not prior.followup_action and not (
                prior.latest_action_name == prior.active_loop_name
            ):
                turn_was_hidden = prior.hide_rule_turn
            if turn_was_hidden:
                continue
        state = _own_state(prior.active_state)
        if ignore_rule_only_turns:
            self._remove_rule_only_features(state, rule_only_data)
            if states:
                self._substitute_rule_only_user_input(state, states[-1])
            if last_ml_action_sub_state:
                state[core_constants.PREVIOUS_ACTION] = dict(last_ml_action_sub_state)
        states.append(self._clean_state(state))
    return states


# -- the domain's emptiness ---------------------------------------------------------------------


def _domain_is_empty(self: Domain) -> bool:
    """``Domain.is_empty``, compared once per domain (a loaded domain does not change)."""
    known = self.__dict__.get("_omni_is_empty")
    if known is None:
        known = self.__dict__["_omni_is_empty"] = _ORIGINALS[(Domain, "is_empty")](self)
    return bool(known)


_PATCHES: Dict[Tuple[type, str], Any] = {
    (DaskGraphRunner, "run"): _run_graph,
    (LogisticRegressionClassifier, "_create_X"): _create_x,
    (Domain, "states_for_tracker_history"): _states_for_tracker_history,
    (Domain, "is_empty"): _domain_is_empty,
}


def install() -> None:
    """Applies the patches (idempotent); raises RuntimeError on another Rasa version."""
    if rasa.__version__ != RASA_VERSION:
        raise RuntimeError(
            f"connectors/rasa_speedups.py targets Rasa {RASA_VERSION}, found "
            f"{rasa.__version__}: re-read the patched methods in the new version, or set "
            "rasa_patches: false"
        )
    for (owner, name), patched in _PATCHES.items():
        setattr(owner, name, patched)


def uninstall() -> None:
    """Puts Rasa's own methods back (the tests compare both)."""
    for (owner, name), original in _ORIGINALS.items():
        setattr(owner, name, original)
