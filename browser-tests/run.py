#!/usr/bin/env python3
"""Runs the real-browser tests against a live local stack.

Starts a simulated fleet, the scraper, Envoy with the plugin (JSON debug header, JSON decision
log), the Gradio chat and the decision view (envoy/ui.py), then runs the Node tests in tests/
(headless Debian Chromium through playwright-core) with the addresses in the environment, and
stops everything. Screenshots land in the run folder's artifacts/ (path printed at the end).

    .venv/bin/python browser-tests/run.py [test files...]
browser-tests/test.sh installs and builds everything first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "envoy"))
import stack as stack_mod  # noqa: E402
import ui as ui_mod  # noqa: E402

PODS = 4
NODE_TEST_TIMEOUT_MS = 180_000


def main(argv: list[str]) -> int:
    files = argv or sorted(str(p) for p in (HERE / "tests").glob("*.test.mjs"))
    run_dir = stack_mod.RunDir.create("browser", base=ROOT / ".run" / "tests")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    artifacts = run_dir.path / "artifacts"
    try:
        with stack_mod.Stack(run_dir) as stack:
            pool = stack.start_fleet(PODS, ["--enable-prompt-tokens-details"])
            scraper = stack.start_scraper(pool)
            envoy = ui_mod.ui_envoy(stack, pool, scraper)
            ui = ui_mod.start_ui(stack, envoy, scraper, pool, chat_port=0, view_port=0)
            print(f"browser tests: chat {ui.chat_url}, decision view {ui.view_url}, gateway {ui.gateway_url}", flush=True)
            env = {
                **os.environ,
                "WIS_CHAT_URL": ui.chat_url,
                "WIS_VIEW_URL": ui.view_url,
                "WIS_GATEWAY_URL": ui.gateway_url,
                "WIS_POOL": ",".join(pool),
                "WIS_MODEL": ui_mod.SIM_MODEL,
                "WIS_DECISION_LOG": str(ui.decision_log),
                "WIS_ARTIFACTS": str(artifacts),
            }
            argv_node = ["node", "--test", "--test-concurrency=1", f"--test-timeout={NODE_TEST_TIMEOUT_MS}", *files]
            rc = subprocess.call(argv_node, cwd=HERE, env=env)
            if rc != 0:
                for proc in stack.processes:
                    if proc.name in ("chat", "decision-view") or not proc.alive():
                        print(f"--- {proc.name} log tail ({proc.log}):\n{proc.log_tail()}", file=sys.stderr)
    except stack_mod.StackError as e:
        print(f"browser tests: the stack did not start: {e}", file=sys.stderr)
        return 1
    print(f"browser tests: screenshots and logs in {artifacts} and {run_dir.path}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
