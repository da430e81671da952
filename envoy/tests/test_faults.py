"""Fault runs (issue 12): Envoy (2 workers) + the plugin + the scraper in front of a fleet, a steady
chat load, and one fault in the middle. While at least one pod can serve, no request may fail.

A failed scrape is not a dead pod: only connect failures and timeouts take an endpoint out, a pool
whose endpoints all look unhealthy still routes among its members, and a scraper that is gone or
talks garbage leaves the plugin routing on what it has."""

from __future__ import annotations

import signal

import pytest

import stack as stack_mod
from backends import GARBAGE_ANSWERS, start_garbage_snapshots
from load import SteadyLoad
from names import Snapshot, Stat

PODS = 3
WORKERS = 2
# Requests the load must serve in each phase of a run (before, during and after a fault).
PHASE_REQUESTS = 20
# Wait for the scraper and the plugin to notice a change.
NOTICE_TIMEOUT_S = 20.0


class Gateway:
    """The stack under test: a fleet, the scraper, Envoy with the plugin."""

    def __init__(self, stack: stack_mod.Stack, wasm, pool: list[str]):
        self.stack = stack
        self.pool = pool
        self.scraper = stack.start_scraper(pool)
        self.envoy = stack.start_envoy("plugin", pool, scraper=self.scraper, workers=WORKERS, wasm=wasm)

    def note(self) -> str:
        return f"\nscraper log:\n{self.stack.process('scraper').log_tail(15)}\nenvoy log:\n{self.envoy.log_tail(15)}"

    def wait_for_plugin_snapshot(self) -> None:
        """Until the plugin holds a snapshot naming every pod (so the run starts from the steady state)."""
        stack_mod.wait_until(
            "the plugin's snapshot names every pod",
            lambda: self.envoy.plugin_stat(Stat.SNAPSHOT_ENDPOINTS) == len(self.pool),
            NOTICE_TIMEOUT_S,
            self.note,
        )

    def endpoints(self) -> list[dict]:
        return stack_mod.snapshot(self.scraper)[Snapshot.ENDPOINTS]

    def wait_for_endpoints(self, what: str, check) -> list[dict]:
        """Until every endpoint of the scraper's snapshot passes `check`; returns them."""
        seen: list[list[dict]] = [[]]

        def ready() -> bool:
            seen[0] = self.endpoints()
            return len(seen[0]) == len(self.pool) and all(check(e) for e in seen[0])

        stack_mod.wait_until(what, ready, NOTICE_TIMEOUT_S, lambda: f"\nlast snapshot endpoints: {seen[0]}{self.note()}")
        return seen[0]


def assert_no_failures(load: SteadyLoad, pool: list[str]) -> None:
    assert not load.failures(), load.report()
    assert set(load.served()) <= set(pool), f"served outside the pool: {set(load.served()) - set(pool)}"


def metrics_unreadable(endpoint: dict, reasons: frozenset[str] = frozenset({"http_status"})) -> bool:
    error = endpoint.get(Snapshot.LAST_ERROR) or {}
    return error.get(Snapshot.REASON) in reasons and endpoint.get(Snapshot.STALE) is True


# A body that is no Prometheus text: whichever of these the scraper names, it is not a dead pod.
GARBAGE_REASONS = frozenset({"not_text", "parse", "missing_metric", "bad_value"})


@pytest.mark.parametrize(
    "fleet,fault,reasons",
    [
        ("sim", "metrics404", frozenset({"http_status"})),
        ("mini", "metrics404", frozenset({"http_status"})),
        ("sim", "metrics-garbage", GARBAGE_REASONS),
    ],
    ids=["sim-404", "mini-404", "sim-garbage"],
)
def test_every_pods_metrics_unreadable_costs_no_request(stack, wasm_path, fleet, fault, reasons):
    gw = Gateway(stack, wasm_path, stack.start_fleet(PODS, kind=fleet))
    gw.wait_for_plugin_snapshot()
    with SteadyLoad(gw.envoy.listen) as load:
        load.wait_for(PHASE_REQUESTS, "load before the fault")
        for pod in gw.pool:
            stack_mod.sim_fault(pod, fault)
        endpoints = gw.wait_for_endpoints(
            f"every endpoint's metrics unreadable ({fault})", lambda e: metrics_unreadable(e, reasons)
        )
        assert all(e[Snapshot.HEALTHY] for e in endpoints), f"a 404 on /metrics is not a dead pod: {endpoints}"
        stack_mod.wait_until(
            "the plugin counts endpoints with unknown metrics",
            lambda: gw.envoy.plugin_stat(Stat.UNKNOWN_METRICS) > 0,
            NOTICE_TIMEOUT_S,
            gw.note,
        )
        during = load.wait_for(PHASE_REQUESTS, "load with every pod's metrics unreadable")
    assert_no_failures(load, gw.pool)
    assert len(set(load.served(during - PHASE_REQUESTS))) >= 2, "with unknown metrics the load still spreads"


def test_pods_whose_metrics_were_never_readable_still_serve(stack, wasm_path):
    """Python stand-in pods whose /metrics answers 404 from the start: the scraper never had a
    reading of any of them, and the plugin still routes among them."""
    gw = Gateway(stack, wasm_path, stack.start_fleet(PODS, ["--fault", "metrics404"], kind="mini"))
    endpoints = gw.wait_for_endpoints("every endpoint's metrics unreadable (HTTP 404)", metrics_unreadable)
    assert all(e[Snapshot.HEALTHY] for e in endpoints), f"a 404 on /metrics is not a dead pod: {endpoints}"
    with SteadyLoad(gw.envoy.listen) as load:
        load.wait_for(2 * PHASE_REQUESTS, "load on pods without readable metrics")
    assert_no_failures(load, gw.pool)


def test_the_scraper_killed_mid_run_and_restarted_costs_no_request(stack, wasm_path):
    gw = Gateway(stack, wasm_path, stack.start_fleet(PODS))
    gw.wait_for_plugin_snapshot()
    with SteadyLoad(gw.envoy.listen) as load:
        load.wait_for(PHASE_REQUESTS, "load before the kill")
        failed = gw.envoy.plugin_stat(Stat.SNAPSHOT_FETCH_FAILED)
        scraper = stack.process("scraper")
        scraper.signal(signal.SIGKILL)
        stack_mod.wait_until("the scraper is gone", lambda: not scraper.alive(), NOTICE_TIMEOUT_S)
        stack_mod.wait_until(
            "the plugin's snapshot fetches fail",
            lambda: gw.envoy.plugin_stat(Stat.SNAPSHOT_FETCH_FAILED) > failed,
            NOTICE_TIMEOUT_S,
            gw.note,
        )
        load.wait_for(PHASE_REQUESTS, "load without the scraper")
        stack.start_scraper(gw.pool, address=gw.scraper)  # where Envoy's scraper cluster points
        fetched = gw.envoy.plugin_stat(Stat.SNAPSHOT_FETCH_OK)
        stack_mod.wait_until(
            "the plugin fetches from the restarted scraper",
            lambda: gw.envoy.plugin_stat(Stat.SNAPSHOT_FETCH_OK) > fetched,
            NOTICE_TIMEOUT_S,
            gw.note,
        )
        load.wait_for(PHASE_REQUESTS, "load after the restart")
    assert_no_failures(load, gw.pool)


def test_a_snapshot_endpoint_answering_garbage_costs_no_request(stack, wasm_path):
    gw = Gateway(stack, wasm_path, stack.start_fleet(PODS))
    gw.wait_for_plugin_snapshot()
    with SteadyLoad(gw.envoy.listen) as load:
        load.wait_for(PHASE_REQUESTS, "load before the garbage")
        stack.stop(stack.process("scraper"))
        failed = gw.envoy.plugin_stat(Stat.SNAPSHOT_FETCH_FAILED)
        garbage = start_garbage_snapshots(gw.scraper)
        try:
            stack_mod.wait_until(
                "every kind of garbage served to the plugin",
                lambda: len(garbage.served) == len(GARBAGE_ANSWERS),
                NOTICE_TIMEOUT_S,
                gw.note,
            )
            load.wait_for(PHASE_REQUESTS, "load while the snapshot is garbage")
            stack_mod.wait_until(
                "every bad snapshot counted as a failed fetch",
                lambda: gw.envoy.plugin_stat(Stat.SNAPSHOT_FETCH_FAILED) - failed >= len(GARBAGE_ANSWERS),
                NOTICE_TIMEOUT_S,
                gw.note,
            )
            assert gw.envoy.plugin_stat(Stat.SNAPSHOT_ENDPOINTS) == len(gw.pool), "a bad snapshot replaced the pool"
        finally:
            garbage.stop()
    assert_no_failures(load, gw.pool)


def busiest(pods: list[str | None]) -> str:
    counts = {p: pods.count(p) for p in set(pods) if p}
    return max(counts, key=lambda p: counts[p])


@pytest.mark.parametrize("how", ["exit-fault", "sigkill"])
def test_one_pod_killed_mid_run_costs_no_request(stack, wasm_path, how):
    """`exit-fault`: the simulator's `exit` fault (the pod stops listening and drops its
    connections). `sigkill`: each pod is its own process and the victim's is killed outright."""
    if how == "sigkill":
        pool = [stack.start_fleet(1, name=f"pod{i}")[0] for i in range(PODS)]
    else:
        pool = stack.start_fleet(PODS)
    gw = Gateway(stack, wasm_path, pool)
    gw.wait_for_plugin_snapshot()
    with SteadyLoad(gw.envoy.listen) as load:
        load.wait_for(PHASE_REQUESTS, "load before the kill")
        victim = busiest(load.served())
        if how == "sigkill":
            stack.process(f"pod{pool.index(victim)}").signal(signal.SIGKILL)
        else:
            stack_mod.sim_fault(victim, "exit")
        killed_at = load.count()
        load.wait_for(2 * PHASE_REQUESTS, "load after the kill")
    assert_no_failures(load, gw.pool)
    # Requests in flight at the kill may have finished on the victim just before; none after them.
    later = load.served(killed_at + load.workers)
    assert later and victim not in later, f"requests still reached the dead pod {victim}"
