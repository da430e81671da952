"""names.py is the Python side's one definition of every shared name; here each name is checked
against the Rust definition it mirrors, so renaming one side without the other fails a test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import names
from names import PLUGIN_HEADERS, Header, Snapshot, Stat

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SRC = ROOT / "plugin" / "src"


def rust_header_defaults() -> dict[str, str]:
    """`HeaderNames::default()` (plugin/src/config), as {field: header}."""
    texts = [p.read_text() for p in sorted(PLUGIN_SRC.rglob("*.rs"))]
    text = next((t for t in texts if "impl Default for HeaderNames" in t), "")
    if not text:
        return {}
    body = text[text.index("impl Default for HeaderNames") :]
    body = body[: body.index("\n}\n")]
    return dict(re.findall(r'(\w+): "([^"]+)"\.into\(\)', body))


def rust_string_literals() -> set[str]:
    found: set[str] = set()
    for path in PLUGIN_SRC.rglob("*.rs"):
        found.update(re.findall(r'"([^"\\]*)"', path.read_text()))
    return found


def test_plugin_header_names_are_the_plugins_defaults():
    rust = rust_header_defaults()
    assert rust, "found no HeaderNames::default() in plugin/src"
    for key, header in PLUGIN_HEADERS.items():
        assert rust.get(key) == header, f"headers.{key}: Python says {header!r}, config.rs says {rust.get(key)!r}"


def test_the_destination_header_is_the_endpoint_picker_protocols():
    # GAIE's Endpoint Picker Protocol fixes this name; Envoy's override_host reads it by default.
    assert Header.DESTINATION == "x-gateway-destination-endpoint"
    assert Header.SUBSET == "x-gateway-destination-endpoint-subset"


@pytest.mark.parametrize("name", [v for k, v in vars(Stat).items() if k.isupper()])
def test_every_stat_name_is_one_the_plugin_defines(name):
    defined = name in rust_string_literals()
    assert defined, f"stat {name!r} is not a string in plugin/src"


@pytest.mark.parametrize("per_endpoint", [Stat.endpoint_decisions, Stat.index_capacity_blocks])
def test_per_endpoint_stats_have_the_plugins_shape(per_endpoint):
    name = per_endpoint("10.0.0.7:8000")
    assert name.startswith("wis.endpoint.10.0.0.7:8000.")
    suffix = name.removeprefix("wis.endpoint.10.0.0.7:8000")
    defined = any(s.startswith("wis.endpoint.{") and s.endswith(suffix) for s in rust_string_literals())
    assert defined, f"plugin/src formats no per-endpoint stat ending in {suffix!r}"


def test_envoy_reports_plugin_stats_under_its_prefixes():
    assert names.envoy_stat(Stat.DECISIONS) == "wasmcustom.wis.decisions"
    assert names.envoy_prometheus_name(Stat.endpoint_decisions("10.0.0.7:8000")) == "wis_endpoint_10_0_0_7_8000_decisions"


@pytest.mark.parametrize("key", [v for k, v in vars(Snapshot).items() if k.isupper()])
def test_every_snapshot_key_is_a_field_of_the_wire_format(key):
    assert re.search(rf"\bpub {key}:", (PLUGIN_SRC / "pool.rs").read_text()), f"{key!r} is no field in pool.rs"


def test_the_model_id_is_the_hugging_face_id_the_simulator_serves():
    assert names.MODEL == "Qwen/Qwen3-0.6B"
    assert f'"{names.MODEL}"' in (ROOT / "sim" / "src" / "profile.rs").read_text()
