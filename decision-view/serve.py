#!/usr/bin/env python3
"""The decision view's local server: the static page, the browser module, and a small read-only
API over what the gateway already exposes.

    GET /                  the page (decision-view/web/)
    GET /pkg/...           the scheduling core built for the browser (build_decision_view)
    GET /api/info          plugin configuration, chat and gateway URLs, where each source is
    GET /api/snapshot      the scraper's latest pool snapshot, passed through unchanged
    GET /api/stats         the plugin's counters from Envoy's admin (decisions per endpoint, ...)
    GET /api/recent?n=50   the last n requests from Envoy's JSON decision log, newest first

Only the standard library; binds to loopback by default. Every source may be down: the API then
answers 502 with a JSON error naming it, and the page says so instead of going blank.

    decision-view/serve.py --scraper 127.0.0.1:9100 --envoy-admin 127.0.0.1:9901 \\
        --decision-log .run/.../envoy-decisions.jsonl --plugin-config plugin.json
(each flag also reads an environment variable: WIS_SCRAPER_URL, WIS_ENVOY_ADMIN, WIS_DECISION_LOG,
WIS_PLUGIN_CONFIG, WIS_GATEWAY_URL, WIS_CHAT_URL, WIS_VIEW_PKG, WIS_VIEW_HOST, WIS_VIEW_PORT).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WEB_DIR = HERE / "web"
UPSTREAM_TIMEOUT_S = 2.0
# The decision log grows for the whole run; only its tail is read (a line is at most a few KB:
# the plugin bounds the JSON decision to 32 endpoint rows).
TAIL_BYTES = 2 * 1024 * 1024
MAX_RECENT = 500
STATS_FILTER = r"^wasmcustom\.wis\."

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


class SourceError(Exception):
    """A source (scraper, Envoy admin, decision log) could not be read; the message says which."""


@dataclass
class Sources:
    scraper: str | None
    envoy_admin: str | None
    decision_log: Path | None
    plugin_config: dict[str, Any]
    plugin_config_path: str | None
    gateway_url: str | None
    chat_url: str | None
    pkg_dir: Path


def base_url(address: str | None) -> str | None:
    """"127.0.0.1:9100" or "http://127.0.0.1:9100/" → "http://127.0.0.1:9100"."""
    if not address:
        return None
    address = address.strip().rstrip("/")
    return address if "://" in address else f"http://{address}"


def fetch(url: str, what: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT_S) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        raise SourceError(f"{what} ({url}) answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SourceError(f"{what} ({url}) is unreachable: {reason}") from None


def snapshot(sources: Sources) -> bytes:
    if not sources.scraper:
        raise SourceError("no scraper configured (--scraper / WIS_SCRAPER_URL)")
    body = fetch(f"{sources.scraper}/snapshot", "the scraper")
    try:
        json.loads(body)
    except ValueError as e:
        raise SourceError(f"the scraper's snapshot is not JSON: {e}") from None
    return body


def stats(sources: Sources) -> dict[str, Any]:
    """The plugin's stats: `decisions` and `capacity` (prefix-index blocks) per endpoint address, the
    learned `bytes_per_token` (pool-wide, and per model in `model_bytes_per_token`), and every
    `wis.*` counter and gauge."""
    if not sources.envoy_admin:
        raise SourceError("no Envoy admin configured (--envoy-admin / WIS_ENVOY_ADMIN)")
    query = urllib.parse.urlencode({"format": "json", "filter": STATS_FILTER})
    body = fetch(f"{sources.envoy_admin}/stats?{query}", "Envoy's admin")
    try:
        entries = json.loads(body).get("stats", [])
    except (ValueError, AttributeError) as e:
        raise SourceError(f"Envoy's admin /stats is not the expected JSON: {e}") from None
    counters: dict[str, float] = {}
    per_endpoint: dict[str, dict[str, float]] = {"decisions": {}, "index_capacity_blocks": {}}
    per_model: dict[str, float] = {}
    for entry in entries:
        name, value = entry.get("name"), entry.get("value")
        if not isinstance(name, str) or not isinstance(value, (int, float)):
            continue  # histograms come as objects; the page does not plot them
        short = name.removeprefix("wasmcustom.")
        counters[short] = value
        if short.startswith("wis.endpoint."):
            address, _, stat = short[len("wis.endpoint.") :].rpartition(".")
            if stat in per_endpoint:
                per_endpoint[stat][address] = value
        elif short.startswith("wis.model.") and short.endswith(".bytes_per_token_x100"):
            per_model[short[len("wis.model.") : -len(".bytes_per_token_x100")]] = value / 100
    learned = counters.get("wis.prefix.bytes_per_token_x100")
    return {
        "decisions": per_endpoint["decisions"],
        "capacity": per_endpoint["index_capacity_blocks"],
        "bytes_per_token": learned / 100 if learned else None,
        "model_bytes_per_token": per_model,
        "counters": counters,
    }


def tail_lines(path: Path, limit_bytes: int = TAIL_BYTES) -> list[str]:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        start = max(0, size - limit_bytes)
        f.seek(start)
        data = f.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut by the seek
    return lines


def recent(sources: Sources, n: int) -> list[dict[str, Any]]:
    """The last n requests, newest first; each with `decision` parsed (None when the request got
    no decision: a local reply, a pass-through path, or a plugin without `debugHeader: "json"`)."""
    if not sources.decision_log:
        raise SourceError("no decision log configured (--decision-log / WIS_DECISION_LOG)")
    if not sources.decision_log.is_file():
        return []  # Envoy creates it at its first request
    out: list[dict[str, Any]] = []
    for line in reversed(tail_lines(sources.decision_log)):
        if len(out) >= n:
            break
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if not isinstance(entry, dict):
            continue
        raw = entry.get("decision")
        decision = None
        if isinstance(raw, str) and raw.startswith("{"):
            try:
                decision = json.loads(raw)
            except ValueError:
                decision = None
        entry["decision"] = decision
        out.append(entry)
    return out


class Handler(BaseHTTPRequestHandler):
    server_version = "wis-decision-view"
    sources: Sources  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if os.environ.get("WIS_VIEW_ACCESS_LOG"):
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        try:
            if path == "/api/info":
                self.send_json(self.info())
            elif path == "/api/snapshot":
                self.send_bytes(HTTPStatus.OK, snapshot(self.sources), "application/json")
            elif path == "/api/stats":
                self.send_json(stats(self.sources))
            elif path == "/api/recent":
                self.send_json({"requests": recent(self.sources, self.count(url.query))})
            elif path.startswith("/api/"):
                self.send_json({"error": f"no such API: {path}"}, HTTPStatus.NOT_FOUND)
            elif path.startswith("/pkg/"):
                self.send_file(self.sources.pkg_dir, path[len("/pkg/") :])
            else:
                self.send_file(WEB_DIR, path.lstrip("/") or "index.html")
        except SourceError as e:
            self.send_json({"error": str(e)}, HTTPStatus.BAD_GATEWAY)
        except ValueError as e:
            self.send_json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away mid-answer

    def info(self) -> dict[str, Any]:
        s = self.sources
        return {
            "plugin_config": s.plugin_config,
            "plugin_config_path": s.plugin_config_path,
            "gateway_url": s.gateway_url,
            "chat_url": s.chat_url,
            "scraper": s.scraper,
            "envoy_admin": s.envoy_admin,
            "decision_log": str(s.decision_log) if s.decision_log else None,
        }

    @staticmethod
    def count(query: str) -> int:
        values = urllib.parse.parse_qs(query).get("n", ["50"])
        try:
            n = int(values[0])
        except ValueError:
            raise ValueError(f"n must be a whole number, got {values[0]!r}") from None
        if not 1 <= n <= MAX_RECENT:
            raise ValueError(f"n must be between 1 and {MAX_RECENT}, got {n}")
        return n

    def send_file(self, root: Path, relative: str) -> None:
        target = (root / urllib.parse.unquote(relative)).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            self.send_json({"error": f"not found: {self.path}"}, HTTPStatus.NOT_FOUND)
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self.send_bytes(HTTPStatus.OK, target.read_bytes(), kind)

    def send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_bytes(status, json.dumps(value).encode(), "application/json")

    def send_bytes(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def make_server(host: str, port: int, sources: Sources) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"sources": sources})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def load_plugin_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"decision view: --plugin-config {path}: {e}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"decision view: --plugin-config {path}: expected a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description="Serve the scheduler's decision view on loopback.")
    p.add_argument("--host", default=env("WIS_VIEW_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("WIS_VIEW_PORT", "7861")), help="0 picks a free port")
    p.add_argument("--scraper", default=env("WIS_SCRAPER_URL"), help="the scraper's address (serves /snapshot)")
    p.add_argument("--envoy-admin", default=env("WIS_ENVOY_ADMIN"), help="Envoy's admin address")
    p.add_argument("--decision-log", default=env("WIS_DECISION_LOG"), help="Envoy's JSON decision log")
    p.add_argument("--plugin-config", default=env("WIS_PLUGIN_CONFIG"), help="the plugin's JSON configuration")
    p.add_argument("--gateway-url", default=env("WIS_GATEWAY_URL"))
    p.add_argument("--chat-url", default=env("WIS_CHAT_URL"))
    p.add_argument("--pkg", default=env("WIS_VIEW_PKG"), help="the built browser module (build_decision_view)")
    a = p.parse_args(argv)

    pkg = Path(a.pkg) if a.pkg else HERE.parent / "target" / "decision-view" / "pkg"
    if not (pkg / "decision_view.js").is_file():
        print(f"decision view: no browser module at {pkg}; build it with build_decision_view "
              "(scripts/common.sh) or ./build.sh view", file=sys.stderr)
        return 2
    sources = Sources(
        scraper=base_url(a.scraper),
        envoy_admin=base_url(a.envoy_admin),
        decision_log=Path(a.decision_log) if a.decision_log else None,
        plugin_config=load_plugin_config(a.plugin_config),
        plugin_config_path=a.plugin_config,
        gateway_url=a.gateway_url,
        chat_url=a.chat_url,
        pkg_dir=pkg,
    )
    server = make_server(a.host, a.port, sources)
    host, port = server.server_address[:2]
    print(f"decision view: http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
