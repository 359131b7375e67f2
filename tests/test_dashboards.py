"""The Grafana dashboard and the Prometheus alert rules in deploy/ match the code: every
expression parses as PromQL (promql-parser, the Rust parser Greptime maintains, pinned) and
names only metrics and labels the code's registry exports; the rule file has what Prometheus
requires of each rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from omnichannel import metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "omnichannel.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
#: Prometheus's own series a rule may use.
PROMETHEUS_SERIES = {"up": set()}
#: Grafana's macros, as a duration Prometheus reads.
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def exported() -> Dict[str, Set[str]]:
    """Series name → its labels, for every metric omnichannel/metrics.py registers, as the
    exposition names them (counters ``_total``, histograms ``_bucket``/``_sum``/``_count``)."""
    registered = {family.name for family in REGISTRY.collect()}
    series: Dict[str, Set[str]] = dict(PROMETHEUS_SERIES)
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, labels, kind = value._name, set(value._labelnames), value._type
        assert name in registered, f"{name} is not in the registry"
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


def selectors(node: Any) -> Iterator[Tuple[str, List[str], List[str]]]:
    """(metric name, matcher labels, labels of the aggregations above it) of every selector."""

    def walk(item: Any, grouping: List[str]) -> Iterator[Tuple[str, List[str], List[str]]]:
        if isinstance(item, promql_parser.VectorSelector):
            yield item.name, [m.name for m in item.matchers.matchers], grouping
            return
        if isinstance(item, promql_parser.AggregateExpr) and item.modifier is not None:
            if item.modifier.type == promql_parser.AggModifierType.By:
                grouping = grouping + list(item.modifier.labels)
        for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(item, attribute, None)
            if child is not None:
                yield from walk(child, grouping)
        for child in getattr(item, "args", None) or ():
            yield from walk(child, grouping)

    yield from walk(node, [])


def checked(expression: str, series: Dict[str, Set[str]]) -> List[str]:
    """The metric names of ``expression``, after checking its names and labels."""
    for macro, duration in GRAFANA_MACROS.items():
        expression = expression.replace(macro, duration)
    names = []
    for name, matched, grouped in selectors(promql_parser.parse(expression)):
        assert name in series, f"{name} is not exported by the code ({expression})"
        known = series[name] | TARGET_LABELS | {"__name__"}
        unknown = [label for label in matched + grouped if label not in known]
        assert not unknown, f"{name} has no label(s) {unknown} ({expression})"
        names.append(name)
    assert names, f"no metric in {expression}"
    return names


def test_the_checker_refuses_a_metric_or_label_the_code_does_not_export() -> None:
    series = exported()
    with pytest.raises(AssertionError, match="omnichannel_turns_totl"):
        checked("rate(omnichannel_turns_totl[5m])", series)
    with pytest.raises(AssertionError, match="chanel"):
        checked("sum by (chanel) (rate(omnichannel_turns_total[5m]))", series)
    with pytest.raises(AssertionError, match="kind"):
        checked('omnichannel_turns_total{kind="x"}', series)
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(omnichannel_turns_total[5m])")


def test_every_dashboard_panel_queries_exported_metrics() -> None:
    series = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    used: Set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        for target in panel["targets"]:
            used.update(checked(target["expr"], series))
    # What the dashboard is for: each of these is on it.
    for name in (
        "omnichannel_turns_total",
        "omnichannel_turn_seconds_bucket",
        "omnichannel_voice_turn_part_seconds_bucket",
        "omnichannel_lock_wait_seconds_bucket",
        "omnichannel_redis_retries_total",
        "omnichannel_in_flight_work",
        "omnichannel_takeovers_total",
        "omnichannel_sms_sends_total",
    ):
        assert name in used, name


def test_every_alert_rule_is_complete_and_queries_exported_metrics() -> None:
    series = exported()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"]]
    assert len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in alerts:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        promql_parser.parse_duration(rule["for"])
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
        checked(rule["expr"], series)
    expressions = " ".join(rule["expr"] for rule in alerts)
    for needed in (
        'dependency="redis"',
        "omnichannel_takeovers_total",
        "omnichannel_sms_sends_total",
        'outcome=~"state_unavailable',
    ):
        assert needed in expressions, needed
