#!/usr/bin/env python3
"""Will the rendered workloads schedule and roll out on the node pools docs/deploy.md creates?

The node pools are stated once, here, in the numbers a platform engineer checks before applying:
what each node can give pods (GKE's allocatable: capacity minus kubelet and system reservations),
less what GKE's own pods and DaemonSets (DNS, metrics, logging, Managed Prometheus, CSI, device
plugin) request. A pod goes to the GPU pool when it requests nvidia.com/gpu (the pool is tainted,
nothing else tolerates it), else to the default pool.

Two questions, answered from the manifests alone:
  - capacity: at the worst moment of a rollout (every Deployment surging at once, maxSurge
    rounded up as Kubernetes does; StatefulSets replace pods one by one without surge), do the
    pods' requests fit the pool, and does every single pod fit one node?
  - rollout: does each Deployment's progressDeadlineSeconds (default 600 s) outlast the time its
    probes may legitimately take before the pod is ready (startup probe, then readiness)?
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_PROGRESS_DEADLINE_S = 600


@dataclass(frozen=True)
class NodePool:
    machine_type: str
    nodes: int
    # Per node, for our pods: allocatable minus GKE's system pods.
    cpu_m: int
    memory_mi: int
    gpus: int = 0


# e2-standard-4: 4 vCPU, 16 GB; allocatable ~3920m and ~13.3 GiB; GKE's system pods request ~1 vCPU
# and ~1.5 GiB on a single-node pool, which leaves us 2.5 vCPU and 8 GiB with margin.
# g2-standard-8 (one L4): 8 vCPU, 32 GB; allocatable ~7910m and ~28 GiB; the GPU node's DaemonSets
# request ~0.5 vCPU and ~1 GiB.
GKE_POOLS = {
    "default": NodePool("e2-standard-4", nodes=1, cpu_m=2500, memory_mi=8 * 1024),
    "gpu": NodePool("g2-standard-8", nodes=2, cpu_m=7000, memory_mi=24 * 1024, gpus=1),
}
# overlays/local: one node with one NVIDIA GPU, 8 vCPU and 32 GiB (its kustomization says so); the
# same node runs everything.
LOCAL_POOLS = {
    "default": NodePool("local", nodes=1, cpu_m=7000, memory_mi=28 * 1024, gpus=1),
}
POOLS_BY_OVERLAY = {"gke": GKE_POOLS, "gke-envoy": GKE_POOLS, "local": LOCAL_POOLS}


def cpu_m(value) -> int:
    s = str(value)
    return int(s[:-1]) if s.endswith("m") else int(float(s) * 1000)


def memory_mi(value) -> int:
    s = str(value)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "k": 1000 / 1024**2, "M": 1000**2 / 1024**2,
             "G": 1000**3 / 1024**2}
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return math.ceil(float(s[: -len(suffix)]) * factor)
    return math.ceil(int(s) / 1024**2)


@dataclass(frozen=True)
class PodRequests:
    cpu_m: int
    memory_mi: int
    gpus: int


def pod_requests(pod_spec: dict) -> PodRequests:
    """Kubernetes' effective requests of a pod: the sum of its containers, or its largest init container."""
    def total(containers):
        cpu = mem = gpu = 0
        for c in containers:
            req = (c.get("resources") or {}).get("requests") or {}
            cpu += cpu_m(req.get("cpu", 0))
            mem += memory_mi(req.get("memory", 0))
            gpu += int(req.get("nvidia.com/gpu", 0))
        return cpu, mem, gpu
    app = total(pod_spec.get("containers") or [])
    inits = [total([c]) for c in pod_spec.get("initContainers") or []]
    return PodRequests(*(max([app[i]] + [x[i] for x in inits]) for i in range(3)))


def percent_or_int(value, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = replicas * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def peak_pods(workload: dict) -> int:
    """Pods that can exist at once during a rollout."""
    spec = workload.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    if workload["kind"] != "Deployment":
        return replicas  # StatefulSet RollingUpdate: delete one, then create it again
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return replicas
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    return replicas + percent_or_int(surge, replicas, round_up=True)


def node_pool_errors(objs: list[dict], pools: dict[str, NodePool]) -> list[str]:
    errs: list[str] = []
    used = {name: [0, 0, 0] for name in pools}
    for w in objs:
        if w.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        name = f"{w['kind']}/{w['metadata']['name']}"
        req = pod_requests(w["spec"]["template"]["spec"])
        pool_name = "gpu" if req.gpus and "gpu" in pools else "default"
        pool = pools[pool_name]
        if req.gpus > pool.gpus:
            errs.append(f"{name}: requests {req.gpus} GPU per pod; a {pool.machine_type} node has {pool.gpus}")
        if req.cpu_m > pool.cpu_m or req.memory_mi > pool.memory_mi:
            errs.append(f"{name}: one pod requests {req.cpu_m}m CPU and {req.memory_mi}Mi, more than a "
                        f"{pool.machine_type} node gives pods ({pool.cpu_m}m, {pool.memory_mi}Mi)")
        n = peak_pods(w)
        for i, amount in enumerate((req.cpu_m, req.memory_mi, req.gpus)):
            used[pool_name][i] += n * amount
    for pool_name, (cpu, mem, gpus) in used.items():
        pool = pools[pool_name]
        if cpu > pool.nodes * pool.cpu_m:
            errs.append(f"pool {pool_name} ({pool.nodes} x {pool.machine_type}): pods request {cpu}m CPU at the peak "
                        f"of a rollout, the pool gives {pool.nodes * pool.cpu_m}m")
        if mem > pool.nodes * pool.memory_mi:
            errs.append(f"pool {pool_name} ({pool.nodes} x {pool.machine_type}): pods request {mem}Mi at the peak "
                        f"of a rollout, the pool gives {pool.nodes * pool.memory_mi}Mi")
        if gpus > pool.nodes * pool.gpus:
            errs.append(f"pool {pool_name} ({pool.nodes} x {pool.machine_type}): pods request {gpus} GPUs at the peak "
                        f"of a rollout, the pool has {pool.nodes * pool.gpus}")
    return errs


def probe_budget_s(probe: dict | None) -> int:
    """The longest a probe may keep failing before it gives up."""
    if not probe:
        return 0
    period = int(probe.get("periodSeconds", 10))
    return int(probe.get("initialDelaySeconds", 0)) + period * int(probe.get("failureThreshold", 3)) + int(
        probe.get("timeoutSeconds", 1))


def rollout_errors(objs: list[dict]) -> list[str]:
    errs = []
    for w in objs:
        if w.get("kind") != "Deployment":
            continue
        deadline = int(w["spec"].get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_S))
        for c in w["spec"]["template"]["spec"].get("containers") or []:
            budget = probe_budget_s(c.get("startupProbe")) + probe_budget_s(c.get("readinessProbe"))
            if budget > deadline:
                errs.append(f"Deployment/{w['metadata']['name']}: spec.progressDeadlineSeconds: {deadline} s, but container "
                            f"{c['name']!r} may take {budget} s to become ready (startup + readiness probes)")
    return errs
