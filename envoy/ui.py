#!/usr/bin/env python3
"""The chat and the decision view on a live local stack (used by the demo and the browser tests).

    start_ui(stack, envoy, scraper, pool)   → Ui(chat_url, view_url, ...)

The Envoy must run the plugin with `debugHeader: "json"` and a decision log
(`ui_envoy(stack, pool, scraper)` starts one like that): the chat shows which pod served each
turn from the debug header, and the decision view reads every gateway decision from the log.

Run alone, it starts a whole stack and holds it until Ctrl-C:

    .venv/bin/python envoy/ui.py [--pods 4] [--chat-port 7860] [--view-port 7861]
(`./build.sh demo` builds what it needs first; this script expects the binaries, .venv with
chat/requirements.txt, and the decision view's browser module to exist.)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import render  # noqa: E402
import stack as stack_mod  # noqa: E402

CHAT_APP = stack_mod.ROOT / "chat" / "app.py"
VIEW_SERVER = stack_mod.ROOT / "decision-view" / "serve.py"
# Gradio imports a lot on first start; a slow 2-core machine needs a while.
UI_READY_TIMEOUT_S = 90.0
DEFAULT_CHAT_PORT = 7860
DEFAULT_VIEW_PORT = 7861
UI_PLUGIN_CONFIG: dict[str, Any] = {"debugHeader": "json"}
# The model name `sim fleet` serves by default (its --served-model-name).
SIM_MODEL = "Qwen/Qwen3-0.6B"


@dataclass
class Ui:
    chat_url: str
    view_url: str
    gateway_url: str
    decision_log: Path


def port_or_free(preferred: int) -> int:
    """`preferred` if nothing listens there, else a free port (a second demo must still start)."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    return stack_mod.free_ports(1)[0]


def ui_envoy(stack: stack_mod.Stack, pool: Sequence[str], scraper: str | None, workers: int = 2) -> stack_mod.Envoy:
    """Envoy with the plugin, its JSON debug header and the JSON decision log."""
    return stack.start_envoy(
        "plugin", pool, scraper=scraper, workers=workers, plugin_config=UI_PLUGIN_CONFIG, decision_log=True
    )


def start_ui(
    stack: stack_mod.Stack,
    envoy: stack_mod.Envoy,
    scraper: str | None,
    pool: Sequence[str],
    *,
    chat_port: int = DEFAULT_CHAT_PORT,
    view_port: int = DEFAULT_VIEW_PORT,
    model: str = SIM_MODEL,
) -> Ui:
    """Starts the decision view and the chat against `envoy`; returns once both answer."""
    if envoy.decision_log is None:
        raise stack_mod.StackError("the UI needs an Envoy started with decision_log=True (see ui_envoy)")
    chat_port, view_port = port_or_free(chat_port), port_or_free(view_port)
    chat_url, view_url = f"http://127.0.0.1:{chat_port}/", f"http://127.0.0.1:{view_port}/"

    # The view schedules typed requests with the configuration Envoy hands the filter.
    opts = render.RenderOptions(scenario="plugin", pool=list(pool), scraper=scraper, plugin_config=UI_PLUGIN_CONFIG)
    config_file = stack.run_dir.file("plugin-config.json")
    config_file.write_text(json.dumps(render.plugin_configuration(opts), indent=1))
    view_argv = [
        sys.executable, VIEW_SERVER, "--port", str(view_port), "--envoy-admin", envoy.admin,
        "--decision-log", str(envoy.decision_log), "--plugin-config", str(config_file),
        "--gateway-url", envoy.url, "--chat-url", chat_url,
    ]
    if scraper:
        view_argv += ["--scraper", scraper]
    view = stack.spawn("decision-view", view_argv)

    chat_env = {
        "WIS_GATEWAY_URL": envoy.url,
        "WIS_CHAT_HOST": "127.0.0.1",
        "WIS_CHAT_PORT": str(chat_port),
        "WIS_DECISION_VIEW_URL": view_url,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "WIS_MODEL": model,
    }
    chat = stack.spawn("chat", [sys.executable, CHAT_APP], env=chat_env)

    for proc, port, what in ((view, view_port, "decision view"), (chat, chat_port, "chat")):
        stack_mod.wait_until(
            f"{what} on 127.0.0.1:{port}",
            lambda proc=proc, port=port: proc.alive() and stack_mod.http_get(f"127.0.0.1:{port}", "/")[0] == 200,
            UI_READY_TIMEOUT_S,
            proc.failure_note,
        )
    return Ui(chat_url, view_url, envoy.url, envoy.decision_log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A local stack with the chat and the decision view, until Ctrl-C.")
    p.add_argument("--pods", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chat-port", type=int, default=DEFAULT_CHAT_PORT)
    p.add_argument("--view-port", type=int, default=DEFAULT_VIEW_PORT)
    p.add_argument("--fleet-arg", action="append", default=[], help="extra argument for `sim fleet` (repeatable)")
    p.add_argument("--ready-file", help="write the URLs as JSON here once everything is up")
    a = p.parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    run_dir = stack_mod.RunDir.create("ui")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    try:
        with stack_mod.Stack(run_dir) as stack:
            pool = stack.start_fleet(a.pods, ["--enable-prompt-tokens-details", *a.fleet_arg])
            scraper = stack.start_scraper(pool)
            envoy = ui_envoy(stack, pool, scraper, a.workers)
            ui = start_ui(stack, envoy, scraper, pool, chat_port=a.chat_port, view_port=a.view_port)
            urls = {"chat": ui.chat_url, "decision_view": ui.view_url, "gateway": ui.gateway_url,
                    "envoy_admin": f"http://{envoy.admin}", "scraper": f"http://{scraper}", "pool": pool,
                    "run_dir": str(run_dir.path)}
            print(json.dumps(urls, indent=1), flush=True)
            if a.ready_file:
                Path(a.ready_file).write_text(json.dumps(urls))
            while all(p.alive() for p in stack.processes):
                time.sleep(0.5)
            dead = [p for p in stack.processes if not p.alive()]
            print(f"stopping: {', '.join(p.name for p in dead)} exited{dead[0].failure_note() if dead else ''}")
            return 1
    except KeyboardInterrupt:
        return 0
    except stack_mod.StackError as e:
        print(f"ui: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.exit(main())
