"""The rendered requests fit the node pools docs/deploy.md creates, every Deployment's progress
deadline outlasts its startup, and capacity.py names what does not fit (tools/capacity.py)."""

import copy
import re

import capacity
from conftest import ROOT, container, get


# ---- node pools and rollouts -------------------------------------------------------------------


def test_requests_fit_the_documented_node_pools(rendered):
    name, objs = rendered
    assert capacity.node_pool_errors(objs, capacity.POOLS_BY_OVERLAY[name]) == []


def test_the_node_pools_are_the_ones_docs_deploy_creates():
    docs = (ROOT / "docs" / "deploy.md").read_text()
    default, gpu = capacity.GKE_POOLS["default"], capacity.GKE_POOLS["gpu"]
    create = re.search(r"gcloud container clusters create .*?(?=\n\n|\n```)", docs, re.S).group(0)
    assert f"--machine-type {default.machine_type}" in create and f"--num-nodes {default.nodes}" in create
    pool = re.search(r"gcloud container node-pools create .*?(?=\n\n|\n```)", docs, re.S).group(0)
    assert f"--machine-type {gpu.machine_type}" in pool and f"--num-nodes {gpu.nodes}" in pool
    assert f"count={gpu.gpus}" in pool


def test_every_deployment_outlasts_its_startup(rendered):
    _, objs = rendered
    assert capacity.rollout_errors(objs) == []


def test_node_pool_and_rollout_checks_name_the_problem(overlay_objs):
    objs = copy.deepcopy(overlay_objs["gke-envoy"])
    gw = get(objs, "Deployment", "wis-gateway")
    container(gw, "envoy")["resources"]["requests"]["cpu"] = "2"  # the old 2-vCPU request
    errs = capacity.node_pool_errors(objs, capacity.GKE_POOLS)
    assert any(e.startswith("pool default (1 x e2-standard-4): pods request") for e in errs), errs
    vllm = get(objs, "StatefulSet", "vllm-qwen3")
    vllm["spec"]["replicas"] = 3
    errs = capacity.node_pool_errors(objs, capacity.GKE_POOLS)
    assert any("pods request 3 GPUs" in e for e in errs), errs
    # A Deployment whose startup probe allows 20 minutes under the default 600 s deadline.
    chat = get(objs, "Deployment", "wis-chat")
    container(chat, "chat")["startupProbe"] = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 10,
                                               "failureThreshold": 120}
    errs = capacity.rollout_errors(objs)
    assert errs and errs[0].startswith("Deployment/wis-chat: spec.progressDeadlineSeconds: 600 s")
    chat["spec"]["progressDeadlineSeconds"] = 1500
    assert capacity.rollout_errors(objs) == []


def test_a_surging_deployment_counts_its_extra_pod():
    d = {"kind": "Deployment", "spec": {"replicas": 2}}
    assert capacity.peak_pods(d) == 3
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert capacity.peak_pods(d) == 2
    assert capacity.peak_pods({"kind": "StatefulSet", "spec": {"replicas": 2}}) == 2
    assert capacity.memory_mi("16Gi") == 16384 and capacity.cpu_m("250m") == 250 and capacity.cpu_m("4") == 4000
