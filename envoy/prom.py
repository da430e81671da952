"""The one Prometheus text-format parser of the Python side (version 0.0.4, what vLLM's
prometheus_client, the simulator, the scraper and Envoy's `/stats/prometheus` write).

    samples = prom.parse(text)                          # every sample, in order
    prom.value(samples, "vllm:num_requests_waiting")    # sum over every label set, None if absent
    prom.value(samples, "envoy_cluster_upstream_rq", envoy_cluster_name="inference-pool")

A line is `name{label="value",...} value [timestamp]`; `#` lines (HELP, TYPE, comments) and blank
lines carry no sample. Label values may escape `\\\\`, `\\"` and `\\n`. A line that is none of these
raises `PromParseError` naming the line, so a test never reads a half-understood exposition.
Standard library only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class PromParseError(ValueError):
    """Text that is not Prometheus exposition format, with the line and what was expected."""


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in labels.items())


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition text, in order."""
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            samples.append(_sample(line))
        except PromParseError as e:
            raise PromParseError(f"line {number}: {e}: {line[:200]!r}") from None
    return samples


def value(source: str | list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples named `name` whose labels include `labels`; None when there is none.
    `source` is exposition text or what `parse` returned."""
    samples = parse(source) if isinstance(source, str) else source
    found = [s.value for s in samples if s.matches(name, labels)]
    return math.fsum(found) if found else None


def _sample(line: str) -> Sample:
    m = _NAME.match(line)
    if not m:
        raise PromParseError("expected a metric name")
    name, pos = m.group(), m.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        labels, pos = _labels(line, pos + 1)
    rest = line[pos:].split()
    if not rest or len(rest) > 2 or (pos < len(line) and not line[pos].isspace()):
        raise PromParseError("expected `name{labels} value [timestamp]`")
    return Sample(name, _number(rest[0]), labels)


def _labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    """Parses `a="x",b="y"}` from pos; returns the labels and the position after `}`."""
    labels: dict[str, str] = {}
    while True:
        while pos < len(line) and line[pos] in " ,":
            pos += 1
        if pos < len(line) and line[pos] == "}":
            return labels, pos + 1
        m = _LABEL_NAME.match(line, pos)
        if not m or line[m.end() : m.end() + 2] != '="':
            raise PromParseError('expected label="value"')
        key, pos = m.group(), m.end() + 2
        out = []
        while True:
            if pos >= len(line):
                raise PromParseError(f"label {key}: unterminated value")
            ch = line[pos]
            if ch == '"':
                pos += 1
                break
            if ch == "\\":
                escaped = _ESCAPES.get(line[pos + 1 : pos + 2])
                if escaped is None:
                    raise PromParseError(f"label {key}: unknown escape")
                out.append(escaped)
                pos += 2
            else:
                out.append(ch)
                pos += 1
        labels[key] = "".join(out)


def _number(text: str) -> float:
    special = {"+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise PromParseError(f"value {text!r} is not a number") from None
