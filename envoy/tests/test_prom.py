"""prom.py: the Python side's one Prometheus text parser."""

from __future__ import annotations

import math

import pytest

import prom

EXPOSITION = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-0.6B"} 3.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-0.6B"} 2
vllm:cache_config_info{block_size="16",num_gpu_blocks="4096"} 1.0

envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="inference-pool"} 12 1764000000000
odd{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb",comma="x,y}z"} -Inf
vllm:kv_cache_usage_perc NaN
"""


def test_every_sample_is_read_with_its_labels_and_value():
    samples = prom.parse(EXPOSITION)
    assert [s.name for s in samples] == [
        "vllm:num_requests_waiting",
        "vllm:num_requests_waiting",
        "vllm:cache_config_info",
        "envoy_cluster_upstream_rq",
        "odd",
        "vllm:kv_cache_usage_perc",
    ]
    assert samples[0].labels == {"engine": "0", "model_name": "Qwen/Qwen3-0.6B"}
    assert samples[3].value == 12.0, "a trailing timestamp is not the value"
    assert samples[4].labels == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb", "comma": "x,y}z"}
    assert samples[4].value == -math.inf
    assert math.isnan(samples[5].value)


def test_value_sums_every_label_set_or_the_matching_ones():
    assert prom.value(EXPOSITION, "vllm:num_requests_waiting") == 5.0
    assert prom.value(EXPOSITION, "vllm:num_requests_waiting", engine="1") == 2.0
    assert prom.value(EXPOSITION, "vllm:num_requests_waiting", engine="7") is None
    assert prom.value(EXPOSITION, "vllm:num_requests") is None, "a name prefix is not the name"
    samples = prom.parse(EXPOSITION)
    assert prom.value(samples, "envoy_cluster_upstream_rq", envoy_cluster_name="inference-pool") == 12.0


@pytest.mark.parametrize(
    "line,message",
    [
        ("{a=\"b\"} 1", "expected a metric name"),
        ("metric", "expected `name{labels} value"),
        ("metric 1 2 3", "expected `name{labels} value"),
        ("metric one", "is not a number"),
        ('metric{a="b} 1', "unterminated"),
        ("metric{a=b} 1", 'expected label="value"'),
        ('metric{a="\\x"} 1', "unknown escape"),
        ('metric{a="b"}1', "expected `name{labels} value"),
    ],
)
def test_a_line_that_is_not_exposition_format_is_an_error_naming_the_line(line, message):
    with pytest.raises(prom.PromParseError, match=message) as e:
        prom.parse(f"# TYPE metric gauge\n{line}\n")
    assert "line 2" in str(e.value)
