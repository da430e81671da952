#!/usr/bin/env python3
"""The Gradio chat of the llm-d reference architecture, talking to the inference gateway.

Every turn sends the whole conversation (system prompt, earlier turns, the new message) to the
gateway's OpenAI-compatible `/v1/chat/completions`, streaming. Follow-up turns therefore share a
growing prefix with the earlier ones, which is what lets the scheduler keep a conversation on the
pod that already holds it in its KV cache; under each reply the chat shows which pod served it (from
the plugin's debug header, when the gateway enables it) and how many prompt tokens that pod found
cached (`usage.prompt_tokens_details.cached_tokens`).

Environment:
    WIS_GATEWAY_URL        the gateway, e.g. http://127.0.0.1:10000 (required)
    WIS_MODEL              model name sent (default Qwen/Qwen3-0.6B)
    WIS_SYSTEM_PROMPT      system prompt of every conversation (default: a short assistant prompt)
    WIS_MAX_TOKENS         max_tokens per reply (default 256)
    WIS_CHAT_HOST, WIS_CHAT_PORT   where the chat listens (default 127.0.0.1:7860)
    WIS_DECISION_VIEW_URL  optional: linked from the page header

`python app.py --check` sends one short turn to the gateway with these settings and this client,
prints what came back and exits 0, or prints why not and exits 1: the deployment's check that the
chat reaches the gateway (on GKE, the internal load balancer), run inside the chat's pod.

The gateway client (messages, SSE parsing, headers) is plain functions, tested without Gradio.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlsplit
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, concise assistant. Answer in plain language, and say so when you do not know."
)
DEFAULT_MAX_TOKENS = 256
DEBUG_HEADER = "x-wis-decision"
# A reply may take a while to start on a busy pool, and stream for minutes.
TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=5.0)


class ConfigError(ValueError):
    """The environment does not describe a usable chat; the message says what to set."""


@dataclass(frozen=True)
class ChatConfig:
    gateway_url: str
    model: str = DEFAULT_MODEL
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = DEFAULT_MAX_TOKENS
    host: str = "127.0.0.1"
    port: int = 7860
    decision_view_url: str | None = None

    @property
    def completions_url(self) -> str:
        return f"{self.gateway_url}/v1/chat/completions"


def config_from_env(env: Mapping[str, str]) -> ChatConfig:
    gateway = env.get("WIS_GATEWAY_URL", "").strip()
    if not gateway:
        raise ConfigError("WIS_GATEWAY_URL is not set: the chat needs the gateway's URL, e.g. http://127.0.0.1:10000")
    if "://" not in gateway:
        gateway = f"http://{gateway}"
    try:
        url = urlsplit(gateway)
        url.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise ConfigError(f"WIS_GATEWAY_URL {gateway!r}: expected http(s)://HOST[:PORT][/PREFIX], the gateway in "
                          "front of /v1/chat/completions")
    gateway = gateway.rstrip("/")

    def integer(name: str, default: int, low: int, high: int) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return ChatConfig(
        gateway_url=gateway,
        model=env.get("WIS_MODEL", "").strip() or DEFAULT_MODEL,
        system_prompt=env.get("WIS_SYSTEM_PROMPT", "").strip() or DEFAULT_SYSTEM_PROMPT,
        max_tokens=integer("WIS_MAX_TOKENS", DEFAULT_MAX_TOKENS, 1, 32768),
        host=env.get("WIS_CHAT_HOST", "").strip() or "127.0.0.1",
        port=integer("WIS_CHAT_PORT", 7860, 0, 65535),
        decision_view_url=env.get("WIS_DECISION_VIEW_URL", "").strip() or None,
    )


# ---- the gateway client ------------------------------------------------------------------------


def text_of(content: Any) -> str:
    """A chat message's text, whether a string or a list of parts (OpenAI's or Gradio's)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, Iterable):
        return "".join(text_of(part) for part in content)
    return str(content)


def build_messages(system_prompt: str, conversation: list[dict[str, Any]], user_text: str) -> list[dict[str, str]]:
    """The request's messages: the system prompt, every earlier turn, the new user message."""
    messages = [{"role": "system", "content": system_prompt}]
    for message in conversation:
        role = message.get("role")
        if role in ("user", "assistant"):
            messages.append({"role": role, "content": text_of(message.get("content"))})
    messages.append({"role": "user", "content": user_text})
    return messages


def request_body(config: ChatConfig, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "model": config.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": config.max_tokens,
    }


@dataclass
class Delta:
    text: str


@dataclass
class Usage:
    prompt_tokens: int | None
    cached_tokens: int | None
    completion_tokens: int | None


@dataclass
class Failure:
    message: str


def parse_sse(lines: Iterable[str]) -> Iterator[Delta | Usage | Failure]:
    """OpenAI chat-completion chunks from an SSE stream: text deltas, then usage if sent.

    Tolerates keep-alive comments, blank lines, chunks without choices (the usage chunk), a stream
    that ends without `[DONE]`, and reports an `error` object sent mid-stream as a Failure."""
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(":") or not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            yield Failure(f"the gateway sent a chunk that is not JSON: {data[:120]!r}")
            return
        if not isinstance(chunk, dict):
            continue
        if isinstance(chunk.get("error"), dict):
            yield Failure(error_message(chunk))
            return
        for choice in chunk.get("choices") or []:
            delta = (choice or {}).get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                yield Delta(text)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            yield Usage(
                prompt_tokens=usage.get("prompt_tokens"),
                cached_tokens=details.get("cached_tokens") if isinstance(details, dict) else None,
                completion_tokens=usage.get("completion_tokens"),
            )


def error_message(body: Any) -> str:
    """The message of an OpenAI-shaped error (`{"error": {"message", "type", "code"}}`)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        kind = err.get("type") or err.get("code")
        message = err.get("message") or "no message"
        return f"{message} ({kind})" if kind else str(message)
    return str(body)[:300]


def served_by(headers: Mapping[str, str]) -> str | None:
    """The pod the plugin chose, from its debug header: JSON (`{"primary": ...}`) or the one-line
    summary (`endpoint=IP:PORT ...`). None when the gateway does not send it."""
    value = headers.get(DEBUG_HEADER)
    if not value:
        return None
    value = value.strip()
    if value.startswith("{"):
        try:
            primary = json.loads(value).get("primary")
        except (ValueError, AttributeError):
            return None
        return primary if isinstance(primary, str) and primary else None
    for part in value.split():
        if part.startswith("endpoint="):
            return part[len("endpoint=") :] or None
    return None


@dataclass
class Done:
    pod: str | None
    usage: Usage | None


def stream_reply(
    config: ChatConfig, messages: list[dict[str, str]], client: httpx.Client | None = None
) -> Iterator[Delta | Done | Failure]:
    """Streams one reply: Deltas, then Done (pod, usage) or a Failure; never raises."""
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT, trust_env=False)
    try:
        with client.stream("POST", config.completions_url, json=request_body(config, messages)) as resp:
            if resp.status_code != 200:
                body = resp.read()
                try:
                    detail = error_message(json.loads(body))
                except ValueError:
                    detail = body.decode(errors="replace")[:300] or "empty body"
                yield Failure(f"the gateway answered HTTP {resp.status_code}: {detail}")
                return
            pod = served_by(resp.headers)
            usage = None
            got_text = False
            for event in parse_sse(resp.iter_lines()):
                if isinstance(event, Usage):
                    usage = event
                elif isinstance(event, Failure):
                    yield event
                    return
                else:
                    got_text = True
                    yield event
            if not got_text and usage is None:
                yield Failure("the gateway's stream ended without a reply")
                return
            yield Done(pod, usage)
    except httpx.TimeoutException:
        yield Failure(f"the gateway at {config.gateway_url} did not answer in time")
    except httpx.HTTPError as e:
        yield Failure(f"the gateway at {config.gateway_url} is unreachable or broke the stream: {e}")
    finally:
        if own:
            client.close()


# ---- what the page shows -----------------------------------------------------------------------


@dataclass
class Route:
    turn: int
    pod: str | None
    usage: Usage | None


def route_line(route: Route) -> str:
    pod = route.pod or "unknown pod (the gateway sent no x-wis-decision header)"
    parts = [f"turn {route.turn}: served by {pod}"]
    u = route.usage
    if u and u.prompt_tokens is not None:
        if u.cached_tokens is not None:
            parts.append(f"cached {u.cached_tokens}/{u.prompt_tokens} prompt tokens")
        else:
            parts.append(f"{u.prompt_tokens} prompt tokens (the pod does not report cached tokens)")
    return " · ".join(parts)


def routes_table(routes: list[Route]) -> str:
    if not routes:
        return "_No turn yet: each turn's pod and cached prompt tokens appear here._"
    rows = ["| turn | pod | cached / prompt tokens |", "|---|---|---|"]
    for r in routes:
        u = r.usage
        cached = "–"
        if u and u.prompt_tokens is not None:
            cached = f"{u.cached_tokens if u.cached_tokens is not None else '?'} / {u.prompt_tokens}"
        rows.append(f"| {r.turn} | {r.pod or 'unknown'} | {cached} |")
    return "\n".join(rows)


@dataclass
class Session:
    """One browser session: what was exchanged with the model, and where each turn went."""

    conversation: list[dict[str, str]] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


def respond(config: ChatConfig, user_text: str, display: list[dict[str, Any]], session: Session) -> Iterator[tuple]:
    """One turn, as the page sees it: yields (textbox, chatbot messages, route line, routes table,
    session) after every change. A failed turn shows the error and leaves the conversation as it
    was, so the user can simply send again."""
    user_text = (user_text or "").strip()
    display = list(display or [])
    if not user_text:
        yield "", display, last_route_line(session), routes_table(session.routes), session
        return
    messages = build_messages(config.system_prompt, session.conversation, user_text)
    display += [{"role": "user", "content": user_text}, {"role": "assistant", "content": ""}]
    yield "", display, "waiting for the gateway…", routes_table(session.routes), session
    reply = ""
    for event in stream_reply(config, messages):
        if isinstance(event, Delta):
            reply += event.text
            display[-1] = {"role": "assistant", "content": reply}
            yield "", display, "streaming…", routes_table(session.routes), session
        elif isinstance(event, Failure):
            shown = f"{reply}\n\n" if reply else ""
            display[-1] = {"role": "assistant", "content": f"{shown}⚠️ {event.message}"}
            line = f"turn failed: {event.message} (the conversation so far is kept; send again to retry)"
            yield user_text, display, line, routes_table(session.routes), session
            return
        else:
            session = Session(
                conversation=[*session.conversation, {"role": "user", "content": user_text},
                              {"role": "assistant", "content": reply}],
                routes=[*session.routes, Route(len(session.routes) + 1, event.pod, event.usage)],
            )
            yield "", display, route_line(session.routes[-1]), routes_table(session.routes), session


def last_route_line(session: Session) -> str:
    return route_line(session.routes[-1]) if session.routes else "no turn yet"


def build_ui(config: ChatConfig):  # -> gr.Blocks (imported lazily: the client needs no Gradio)
    import gradio as gr

    header = f"### Chat with `{config.model}` through the inference gateway\n" \
             f"Gateway `{config.gateway_url}`: each turn goes to the pod the scheduler picks."
    if config.decision_view_url:
        header += f" See why in the [decision view]({config.decision_view_url})."

    with gr.Blocks(title="Inference gateway chat", analytics_enabled=False) as ui:
        gr.Markdown(header)
        chatbot = gr.Chatbot(elem_id="chatbot", label="Conversation", height=420)
        route = gr.Markdown("no turn yet", elem_id="route-info")
        with gr.Row():
            box = gr.Textbox(elem_id="chat-input", placeholder="Type a message and press Enter", show_label=False,
                             scale=8, lines=1, max_lines=6)
            send = gr.Button("Send", elem_id="chat-send", variant="primary", scale=1)
            new = gr.Button("New conversation", elem_id="chat-new", scale=1)
        history = gr.Markdown(routes_table([]), elem_id="route-history")
        session = gr.State(Session())

        def turn(user_text, display, state):
            yield from respond(config, user_text, display, state)

        outputs = [box, chatbot, route, history, session]
        box.submit(turn, [box, chatbot, session], outputs)
        send.click(turn, [box, chatbot, session], outputs)
        new.click(lambda: ("", [], "no turn yet", routes_table([]), Session()), None, outputs)
    return ui


CHECK_PROMPT = "Reply with the single word: ready"
CHECK_MAX_TOKENS = 16


def check_gateway(config: ChatConfig, client: httpx.Client | None = None) -> tuple[bool, str]:
    """One short turn through the gateway, as the page would send it: (reached, what happened)."""
    messages = build_messages(config.system_prompt, [], CHECK_PROMPT)
    quick = replace(config, max_tokens=CHECK_MAX_TOKENS)
    text = ""
    for event in stream_reply(quick, messages, client):
        if isinstance(event, Delta):
            text += event.text
        elif isinstance(event, Failure):
            return False, f"gateway {config.gateway_url}, model {config.model}: {event.message}"
        else:
            route = route_line(Route(1, event.pod, event.usage)).removeprefix("turn 1: ")
            return True, f"gateway {config.gateway_url}, model {config.model} answered {text.strip()[:60]!r}; {route}"
    return False, f"gateway {config.gateway_url}: no answer"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if argv not in ([], ["--check"]):
        print("usage: app.py [--check]   (settings come from the environment, see the module doc)", file=sys.stderr)
        return 2
    try:
        config = config_from_env(os.environ)
    except ConfigError as e:
        print(f"chat: {e}", file=sys.stderr)
        return 2
    if argv == ["--check"]:
        ok, message = check_gateway(config)
        print(f"chat check: {'ok' if ok else 'FAILED'}: {message}", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    ui = build_ui(config)
    print(f"chat: http://{config.host}:{config.port}/ (gateway {config.gateway_url}, model {config.model})", flush=True)
    ui.queue().launch(server_name=config.host, server_port=config.port, show_error=True, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
