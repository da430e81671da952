"""The scraper against model servers written the way small Python servers are: stdlib `http.server`
pods that route on the raw request target, so an absolute-form target (`GET http://host/metrics`,
meant for proxies) gets 404, as from uvicorn's h11 parser. The scraper must send origin-form requests
(RFC 9112 §3.2.1) with a Host header, and the pods come out healthy with their metrics."""

from __future__ import annotations

import pytest

import client
import stack as stack_mod
from backends import MODEL_SERVER_KV_USAGE, SERVED_BY_HEADER, start_model_server
from names import MODEL, Snapshot

PODS = 3


@pytest.fixture
def pods():
    servers = [start_model_server(MODEL) for _ in range(PODS)]
    yield servers
    for s in servers:
        s.stop()


def test_the_scraper_reads_origin_servers_and_the_plugin_routes_to_them(stack, pods, wasm_path):
    pool = [p.address for p in pods]
    scraper = stack.start_scraper(pool)
    envoy = stack.start_envoy("plugin", pool, scraper=scraper, workers=2, wasm=wasm_path)
    last: list[list[dict]] = [[]]

    def readable() -> bool:
        last[0] = stack_mod.snapshot(scraper)[Snapshot.ENDPOINTS]
        return len(last[0]) == PODS and all(
            e[Snapshot.HEALTHY] and not e[Snapshot.STALE] and not e.get(Snapshot.LAST_ERROR) for e in last[0]
        )

    stack_mod.wait_until(
        "every stdlib pod healthy with fresh metrics in the snapshot",
        readable,
        20.0,
        lambda: f"\nlast snapshot endpoints: {last[0]}\npods saw GET {[p.targets('GET')[:3] for p in pods]}"
        f"\nscraper log:\n{stack.process('scraper').log_tail(15)}",
    )
    for endpoint in last[0]:
        assert endpoint[Snapshot.METRICS][Snapshot.KV_CACHE_USAGE] == pytest.approx(MODEL_SERVER_KV_USAGE), endpoint
        assert MODEL in endpoint[Snapshot.MODELS], endpoint

    for pod in pods:
        targets = pod.targets("GET")
        assert targets and all(t == "/metrics" for t in targets), f"{pod.address} saw GET targets {set(targets)}"
        assert all(r.headers.get("host") for r in pod.seen), "every request names its Host"

    for i in range(10):
        resp = client.chat(envoy.listen, client.conversation("You are terse.", f"Question {i}?"))
        assert resp.status == 200, resp.body
        assert resp.header(SERVED_BY_HEADER) in pool
