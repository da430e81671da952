"""Reaching the local stack's components over the network: free loopback ports, a plain HTTP GET,
polling with a deadline (`wait_until`), whether a listener accepts, and the probes of the simulated
pods and the scraper (a pod's metric, its fault switch, the scraper's pool snapshot). Every failure
is a `StackError` that says which component did not answer and how."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any, Callable

import prom
import render
from names import Snapshot, SimMetric

# Polling period for readiness checks.
POLL_INTERVAL_S = 0.05


class StackError(RuntimeError):
    """A component that did not start or answer, with the reason and its log tail."""


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1; all held open together so they are distinct."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_get(address: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    host, port = render.parse_host_port(address, "address", need_ip=False)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(what: str, check: Callable[[], bool], timeout: float, on_fail: Callable[[], str] = lambda: "") -> None:
    """Polls `check` until it is true; raises StackError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s{on_fail()}")
        time.sleep(POLL_INTERVAL_S)


def sim_metric(pod: str, name: str) -> float:
    status, body = http_get(pod, "/metrics")
    if status != 200:
        raise StackError(f"sim pod {pod} /metrics: HTTP {status}")
    value = prom.value(body.decode(errors="replace"), name)
    if value is None:
        raise StackError(f"sim pod {pod} exports no {name}")
    return value


def sim_waiting(pod: str) -> float:
    """vLLM's queue length on one simulated pod."""
    return sim_metric(pod, SimMetric.WAITING)


def snapshot(scraper: str) -> dict[str, Any]:
    """The scraper's pool snapshot (`GET /snapshot`), parsed."""
    status, body = http_get(scraper, "/snapshot")
    if status != 200:
        raise StackError(f"scraper {scraper} /snapshot: HTTP {status} {body[:200]!r}")
    try:
        snap = json.loads(body)
    except ValueError as e:
        raise StackError(f"scraper {scraper} /snapshot is not JSON: {e}: {body[:200]!r}") from None
    if not isinstance(snap, dict) or not isinstance(snap.get(Snapshot.ENDPOINTS), list):
        raise StackError(f"scraper {scraper} /snapshot has no {Snapshot.ENDPOINTS} list: {body[:200]!r}")
    return snap


def sim_fault(pod: str, kind: str) -> None:
    """Injects a fault into one simulated pod (`POST /admin/fault`, see sim/src/pod/faults.rs): stall
    (requests and the engine hang, /metrics too), error500, close (connections closed unanswered),
    exit (the pod stops listening and drops its connections), metrics404 and metrics-garbage (only
    /metrics breaks, serving goes on), none (clear). minifleet.py knows stall, exit, metrics404."""
    host, port = render.parse_host_port(pod, "pod")
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", "/admin/fault", body=json.dumps({"mode": kind}), headers={"content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise StackError(f"fault {kind} on {pod}: HTTP {resp.status} {body[:200]!r}")


def accepts(address: str) -> bool:
    host, port = render.parse_host_port(address, "address")
    with socket.create_connection((host, port), timeout=1.0):
        return True
