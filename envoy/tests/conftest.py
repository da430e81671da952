"""Shared fixtures: the Envoy binary, the plugin .wasm, a run folder and a Stack per test."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # render.py, stack.py
sys.path.insert(0, str(HERE))  # backends.py, client.py

import stack as stack_mod  # noqa: E402


@pytest.fixture(scope="session")
def envoy_bin() -> Path:
    try:
        return stack_mod.envoy_binary()
    except stack_mod.StackError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def wasm_path() -> Path:
    path = stack_mod.plugin_wasm()
    if not path.is_file():
        pytest.fail(f"plugin .wasm not found at {path}: build it first (./build.sh, or envoy/test.sh does it)")
    return path


@pytest.fixture
def run_dir(request: pytest.FixtureRequest) -> stack_mod.RunDir:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    return stack_mod.RunDir.create(name, base=stack_mod.ROOT / ".run" / "tests")


@pytest.fixture
def stack(run_dir: stack_mod.RunDir):
    with stack_mod.Stack(run_dir) as s:
        yield s
