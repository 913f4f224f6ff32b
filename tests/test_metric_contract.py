"""The metric contract is declared once (exporter.metrics.contract) and documented once
(docs/metrics.md): the two must list the same metrics, types and label names."""

from __future__ import annotations

from support import declared_metrics, documented_metrics


def test_every_declared_metric_is_documented_as_declared():
    documented = documented_metrics()
    assert {name: spec for name, spec in declared_metrics().items() if documented.get(name) != spec} == {}


def test_every_documented_metric_is_declared():
    declared = declared_metrics()
    assert {name: spec for name, spec in documented_metrics().items() if declared.get(name) != spec} == {}
