"""decision-view/serve.py: its API over sources that work, lie or are down (no browser here)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import serve  # noqa: E402

SNAPSHOT = {"format_version": 1, "sequence": 3, "generated_at_ms": 1, "endpoints": []}
STATS = {"stats": [
    {"name": "wasmcustom.wis.decisions", "value": 7},
    {"name": "wasmcustom.wis.endpoint.127.0.0.1:8001.decisions", "value": 5},
    {"name": "wasmcustom.wis.endpoint.127.0.0.1:8002.decisions", "value": 2},
    {"name": "wasmcustom.wis.endpoint.127.0.0.1:8001.index_capacity_blocks", "value": 1000},
    {"name": "wasmcustom.wis.prefix.bytes_per_token_x100", "value": 487},
    {"name": "wasmcustom.wis.model.Qwen_Qwen3_0_6B.bytes_per_token_x100", "value": 487},
    {"name": "wasmcustom.wis.scheduling_us", "histograms": {"computed_quantiles": []}},
]}


class Upstream(BaseHTTPRequestHandler):
    """The scraper and Envoy's admin in one: /snapshot and /stats."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/snapshot":
            body, status = json.dumps(SNAPSHOT).encode(), 200
        elif self.path.startswith("/stats?"):
            assert "format=json" in self.path and "filter=" in self.path
            body, status = json.dumps(STATS).encode(), 200
        else:
            body, status = b"nope", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"{host}:{port}"


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    yield start(server)
    server.shutdown()


def view(tmp_path: Path, **overrides) -> str:
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "decision_view.js").write_text("export default 1;")
    (pkg / "decision_view_bg.wasm").write_bytes(b"\0asm\1\0\0\0")
    fields = dict(scraper=None, envoy_admin=None, decision_log=None, plugin_config={"debugHeader": "json"},
                  plugin_config_path=None, gateway_url="http://gw", chat_url="http://chat", pkg_dir=pkg)
    fields.update(overrides)
    server = serve.make_server("127.0.0.1", 0, serve.Sources(**fields))
    return "http://" + start(server)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def test_page_module_and_wasm_are_served_with_their_types(tmp_path):
    base = view(tmp_path)
    status, kind, body = get(base + "/")
    assert status == 200 and kind == "text/html" and b"decision view" in body.lower()
    assert get(base + "/app.js")[1] == "text/javascript"
    assert get(base + "/pkg/decision_view_bg.wasm")[:2] == (200, "application/wasm")


def test_nothing_outside_the_page_and_module_is_served(tmp_path):
    (tmp_path / "secret.txt").write_text("no")
    base = view(tmp_path)
    assert get(base + "/pkg/../secret.txt")[0] == 404
    assert get(base + "/pkg/%2e%2e/secret.txt")[0] == 404
    assert get(base + "/../serve.py")[0] == 404
    assert get(base + "/api/nothing")[0] == 404


def test_info_snapshot_and_stats_come_from_the_sources(tmp_path, upstream):
    base = view(tmp_path, scraper=serve.base_url(upstream), envoy_admin=serve.base_url(upstream))
    info = json.loads(get(base + "/api/info")[2])
    assert info["plugin_config"] == {"debugHeader": "json"} and info["chat_url"] == "http://chat"
    assert json.loads(get(base + "/api/snapshot")[2]) == SNAPSHOT
    stats = json.loads(get(base + "/api/stats")[2])
    assert stats["decisions"] == {"127.0.0.1:8001": 5, "127.0.0.1:8002": 2}
    assert stats["counters"]["wis.decisions"] == 7
    assert stats["capacity"] == {"127.0.0.1:8001": 1000}
    assert stats["bytes_per_token"] == 4.87
    assert stats["model_bytes_per_token"] == {"Qwen_Qwen3_0_6B": 4.87}


def test_a_source_that_is_down_or_missing_is_a_502_naming_it(tmp_path):
    base = view(tmp_path, scraper="http://127.0.0.1:9", envoy_admin=None)
    status, _, body = get(base + "/api/snapshot")
    assert status == 502 and "the scraper" in json.loads(body)["error"]
    status, _, body = get(base + "/api/stats")
    assert status == 502 and "no Envoy admin" in json.loads(body)["error"]
    status, _, body = get(base + "/api/recent")
    assert status == 502 and "no decision log" in json.loads(body)["error"]


def test_recent_is_newest_first_with_decisions_parsed_and_bad_lines_skipped(tmp_path):
    log = tmp_path / "decisions.jsonl"
    decision = {"primary": "127.0.0.1:8001", "fallbacks": [], "scores": []}
    lines = [
        json.dumps({"path": "/v1/chat/completions", "status": 200, "decision": json.dumps(decision)}),
        json.dumps({"path": "/v1/chat/completions", "status": 400, "decision": None}),
        '{"path": "/half-writ',
        json.dumps({"path": "/v1/models", "status": 200, "decision": "-"}),
    ]
    log.write_text("\n".join(lines) + "\n")
    base = view(tmp_path, decision_log=log)
    got = json.loads(get(base + "/api/recent?n=10")[2])["requests"]
    assert [r["path"] for r in got] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert [r["decision"] for r in got] == [None, None, decision]
    assert len(json.loads(get(base + "/api/recent?n=1")[2])["requests"]) == 1
    assert get(base + "/api/recent?n=0")[0] == 400
    assert get(base + "/api/recent?n=lots")[0] == 400


def test_a_log_not_written_yet_is_an_empty_list(tmp_path):
    base = view(tmp_path, decision_log=tmp_path / "later.jsonl")
    assert json.loads(get(base + "/api/recent")[2]) == {"requests": []}


def test_the_tail_of_a_long_log_drops_the_cut_line(tmp_path):
    log = tmp_path / "big.jsonl"
    log.write_text("".join(json.dumps({"i": i, "pad": "x" * 100}) + "\n" for i in range(1000)))
    lines = serve.tail_lines(log, limit_bytes=1000)
    assert all(json.loads(line)["i"] > 990 for line in lines)
    assert json.loads(lines[-1])["i"] == 999
