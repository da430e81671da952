"""The chat's gateway client and turn logic against a real local HTTP server standing in for the
gateway (SSE streaming, errors, broken streams); no browser (browser-tests/ has those)."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app  # noqa: E402

POD = "10.0.0.7:8000"


def chunk(**body) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


class Gateway(BaseHTTPRequestHandler):
    """Behaves as the test's `mode` says; records every request body."""

    mode = "ok"
    seen: list[dict] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        mode = type(self).mode
        if mode == "error":
            payload = json.dumps({"error": {"message": "the model 'x' does not exist", "type": "NotFoundError",
                                            "code": 404}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        decision = {"json": json.dumps({"primary": POD, "fallbacks": []}), "summary": f"endpoint={POD} total=1.0"}
        if mode in decision:
            self.send_header(app.DEBUG_HEADER, decision[mode])
        self.end_headers()
        self.wfile.write(b": keep-alive\n\n")
        self.wfile.write(chunk(choices=[{"index": 0, "delta": {"role": "assistant"}}]))
        self.wfile.write(chunk(choices=[{"index": 0, "delta": {"content": "Hel"}}]))
        self.wfile.write(chunk(choices=[{"index": 0, "delta": {"content": "lo"}}]))
        if mode == "broken":
            self.wfile.write(b"data: {\"choices\": [{\"del")
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if mode == "midstream-error":
            self.wfile.write(chunk(error={"message": "engine overloaded", "type": "ServiceUnavailable"}))
            return
        self.wfile.write(chunk(choices=[], usage={"prompt_tokens": 40, "completion_tokens": 2,
                                                  "prompt_tokens_details": {"cached_tokens": 32}}))
        if mode != "no-done":
            self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def gateway():
    Gateway.mode, Gateway.seen = "json", []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield app.ChatConfig(gateway_url=f"http://{host}:{port}", model=app.DEFAULT_MODEL, system_prompt="Be brief.")
    server.shutdown()
    server.server_close()


def turn(config, text, display=None, session=None):
    """Runs one turn; returns the last thing the page would show."""
    return list(app.respond(config, text, display or [], session or app.Session()))[-1]


def test_config_needs_the_gateway_and_reads_the_rest():
    with pytest.raises(app.ConfigError, match="WIS_GATEWAY_URL"):
        app.config_from_env({})
    c = app.config_from_env({"WIS_GATEWAY_URL": "127.0.0.1:10000/", "WIS_CHAT_PORT": "0", "WIS_MAX_TOKENS": "64"})
    assert c.completions_url == "http://127.0.0.1:10000/v1/chat/completions"
    assert (c.model, c.port, c.max_tokens) == ("Qwen/Qwen3-0.6B", 0, 64)
    with pytest.raises(app.ConfigError, match="WIS_CHAT_PORT must be a whole number"):
        app.config_from_env({"WIS_GATEWAY_URL": "http://x", "WIS_CHAT_PORT": "http"})


@pytest.mark.parametrize("url", ["ftp://10.0.0.5", "http://", "http://10.0.0.5:http", "http://10.0.0.5/?x=1",
                                 "http://10.0.0.5/#v1"])
def test_a_gateway_url_that_is_no_http_url_is_refused(url):
    with pytest.raises(app.ConfigError, match="expected http"):
        app.config_from_env({"WIS_GATEWAY_URL": url})


def test_the_internal_load_balancer_address_is_a_gateway_url():
    # What the GKE overlays set (manifests/tools/configure_overlay.py): the reserved address, port 80.
    c = app.config_from_env({"WIS_GATEWAY_URL": "http://10.128.0.50"})
    assert c.completions_url == "http://10.128.0.50/v1/chat/completions"
    assert c.model == "Qwen/Qwen3-0.6B"


def test_the_check_sends_one_short_turn_and_says_what_came_back(gateway):
    ok, message = app.check_gateway(gateway)
    assert ok
    assert message == (f"gateway {gateway.gateway_url}, model Qwen/Qwen3-0.6B answered 'Hello'; "
                       f"served by {POD} · cached 32/40 prompt tokens")
    [sent] = Gateway.seen
    assert sent["model"] == "Qwen/Qwen3-0.6B" and sent["max_tokens"] == app.CHECK_MAX_TOKENS and sent["stream"]
    assert sent["messages"][-1] == {"role": "user", "content": app.CHECK_PROMPT}


def test_the_check_reports_a_gateway_error(gateway):
    Gateway.mode = "error"
    ok, message = app.check_gateway(gateway)
    assert not ok
    assert message.endswith("the gateway answered HTTP 404: the model 'x' does not exist (NotFoundError)")


def test_the_check_command_exit_codes(gateway, monkeypatch, capsys):
    monkeypatch.setenv("WIS_GATEWAY_URL", gateway.gateway_url)
    assert app.main(["--check"]) == 0
    assert capsys.readouterr().out.startswith("chat check: ok: gateway ")
    monkeypatch.setenv("WIS_GATEWAY_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    assert app.main(["--check"]) == 1
    assert "chat check: FAILED: gateway http://127.0.0.1:9" in capsys.readouterr().err
    assert app.main(["--chek"]) == 2
    monkeypatch.delenv("WIS_GATEWAY_URL")
    assert app.main(["--check"]) == 2


def test_a_turn_streams_and_names_the_pod_and_the_cached_tokens(gateway):
    _, display, line, table, session = turn(gateway, "hi")
    assert display == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
    assert line == f"turn 1: served by {POD} · cached 32/40 prompt tokens"
    assert f"| 1 | {POD} | 32 / 40 |" in table
    sent = Gateway.seen[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert session.conversation[-1] == {"role": "assistant", "content": "Hello"}


def test_the_next_turn_sends_the_whole_conversation_so_it_shares_the_prefix(gateway):
    _, display, _, _, session = turn(gateway, "first")
    _, display, line, table, session = turn(gateway, "second", display, session)
    first, second = (m["messages"] for m in Gateway.seen)
    assert second[: len(first)] == first
    assert second[len(first):] == [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "second"}]
    assert line.startswith("turn 2: served by")
    assert len(display) == 4 and table.count(POD) == 2


def test_the_summary_debug_header_and_its_absence(gateway):
    Gateway.mode = "summary"
    assert turn(gateway, "x")[2].startswith(f"turn 1: served by {POD}")
    Gateway.mode = "ok"
    assert "unknown pod" in turn(gateway, "x")[2]


def test_a_stream_without_done_still_completes(gateway):
    Gateway.mode = "no-done"
    assert turn(gateway, "x")[1][-1]["content"] == "Hello"


@pytest.mark.parametrize("mode, expected", [
    ("error", "HTTP 404: the model 'x' does not exist (NotFoundError)"),
    ("broken", "a chunk that is not JSON"),
    ("midstream-error", "engine overloaded"),
])
def test_a_failed_turn_shows_the_error_and_keeps_the_conversation(gateway, mode, expected):
    _, display, _, _, session = turn(gateway, "first")
    Gateway.mode = mode
    box, display2, line, _, session2 = turn(gateway, "second", display, session)
    assert expected in display2[-1]["content"] and expected in line
    assert "Traceback" not in display2[-1]["content"]
    assert box == "second", "the message stays in the box to send again"
    assert session2.conversation == session.conversation, "nothing half-done enters the conversation"
    Gateway.mode = "json"
    _, _, line, _, session3 = turn(gateway, "second", display2, session2)
    assert line.startswith("turn 2:") and len(session3.conversation) == 4


def test_an_unreachable_gateway_is_a_clear_message():
    config = app.ChatConfig(gateway_url="http://127.0.0.1:9")
    _, display, line, _, _ = turn(config, "hi")
    assert "unreachable" in line and "127.0.0.1:9" in display[-1]["content"]


def test_an_empty_message_sends_nothing(gateway):
    box, display, _, _, _ = turn(gateway, "   ")
    assert display == [] and Gateway.seen == []


def test_message_text_from_every_content_shape():
    assert app.text_of("a") == "a"
    assert app.text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert app.text_of({"text": "c"}) == "c" and app.text_of(None) == ""
    msgs = app.build_messages("S", [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                                    {"role": "tool", "content": "ignored"}], "next")
    assert msgs == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                    {"role": "user", "content": "next"}]


def test_the_page_builds_with_the_ids_the_browser_tests_use(gateway):
    ui = app.build_ui(gateway)
    ids = {block.elem_id for block in ui.blocks.values() if getattr(block, "elem_id", None)}
    assert {"chatbot", "chat-input", "chat-send", "route-info", "route-history"} <= ids
