"""Reading PromQL and Prometheus exposition text: which metric names and labels a query uses,
and which series a /metrics page lets a query select."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")  # Grafana's $__rate_interval, ${lane}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")  # 0.95, 1e3, 5m
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}
_LABEL_LIST = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds to every scraped series, and the bucket bound of histograms.
TARGET_LABELS = {"job", "instance", "le"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers used bare or before `{` / `[`, not
    functions or aggregations (before `(`), label names, strings, durations or keywords."""
    text = _VARIABLE.sub(" ", expr)
    text = _STRING.sub(" ", text)
    for pattern in (_MATCHERS, _RANGE, _GROUPING, _NUMBER):
        text = pattern.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def promql_label_names(expr: str) -> set[str]:
    """The labels an expression groups by or matches on."""
    text = _STRING.sub('""', _VARIABLE.sub(" ", expr))
    labels = {name.strip() for group in _LABEL_LIST.findall(text) for name in group.split(",")}
    for block in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(block))
    return labels - {""}


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics text lets PromQL select, families without samples too
    (a labelled counter nobody incremented yet still counts)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def sample_labels(exposition: str) -> dict[str, set[str]]:
    """Series name -> the label names its samples carry (series with samples only)."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels
