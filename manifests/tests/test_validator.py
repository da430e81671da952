"""The validator (tools/validate.py) names each mistake: the object, the field and what is wrong, for
a broken fixture, one mutation of a rendered overlay per check, a `secretEnv` that cannot reach the
scheduler, an inline Secret and a kind without a schema."""

import copy
import json

import pytest
import validate
import yaml
from conftest import MANIFESTS, by_kind, container, get


# ---- the validator names each mistake ----------------------------------------------------------


def test_broken_fixture_names_object_and_field(crds):
    objs = validate.load_objects((MANIFESTS / "tests" / "fixtures" / "broken.yaml").read_text())
    errs = "\n".join(validate.validate(objs, crds))
    assert "Deployment/broken-deploy: spec.replicas:" in errs
    assert "HTTPRoute/broken-route: spec.rules[0].backendRefs[0].port:" in errs
    assert "GCPBackendPolicy/broken-policy: spec.default.iap:" in errs and "oauthSecret" in errs


def mutate(objs, name, fn):
    out = copy.deepcopy(objs)
    fn(next(o for o in out if validate.obj_name(o) == name))
    return out


def first(items, **match):
    return next(i for i in items if all(i.get(k) == v for k, v in match.items()))


MISTAKES = [
    ("gke", "Deployment/wis-epp",
     lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="us-docker.pkg.dev/p/wis/wis-epp:latest"),
     "Deployment/wis-epp: spec.template.spec.containers[0].image: image 'us-docker.pkg.dev/p/wis/wis-epp:latest' uses the moving tag"),
    ("gke", "Deployment/wis-chat",
     lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("resources"),
     "Deployment/wis-chat: spec.template.spec.containers[0].resources.requests.cpu: not set"),
    ("gke", "Deployment/wis-chat",
     lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "OPENAI_API_KEY", "value": "x"}),
     "Deployment/wis-chat: spec.template.spec.containers[0].env[5].value: OPENAI_API_KEY is set inline"),
    ("gke", "Service/wis-chat",
     lambda o: o["spec"]["ports"][0].update(targetPort="web"),
     "Service/wis-chat: spec.ports[0].targetPort: 'web' is no container port of Deployment/wis-chat"),
    ("gke", "StatefulSet/vllm-qwen3",
     lambda o: o["spec"]["selector"]["matchLabels"].update({"tier": "gpu"}),
     "StatefulSet/vllm-qwen3: spec.selector.matchLabels.tier:"),
    ("gke", "InferencePool/vllm-qwen3",
     lambda o: o["spec"]["targetPorts"][0].update(number=9000),
     "InferencePool/vllm-qwen3: spec.targetPorts[0].number: 9000 is no container port"),
    ("gke", "InferencePool/vllm-qwen3",
     lambda o: o["spec"]["endpointPickerRef"]["port"].update(number=9003),
     "InferencePool/vllm-qwen3: spec.endpointPickerRef.port.number: 9003 is no port of Service/wis-epp"),
    ("gke", "InferencePool/vllm-qwen3",
     lambda o: o["spec"]["endpointPickerRef"].pop("port"),
     "InferencePool/vllm-qwen3: spec.endpointPickerRef.port: required when kind is Service"),
    ("gke", "InferencePool/vllm-qwen3",
     lambda o: o["spec"]["endpointPickerRef"].update(failureMode="FailOpn"),
     "InferencePool/vllm-qwen3: spec.endpointPickerRef.failureMode:"),
    ("gke", "HTTPRoute/wis-inference",
     lambda o: o["spec"]["rules"][0]["backendRefs"][0].update(name="vllm"),
     "HTTPRoute/wis-inference: spec.rules[0].backendRefs[0].name: no InferencePool 'vllm'"),
    ("gke", "HTTPRoute/wis-inference",
     lambda o: o["spec"]["parentRefs"][0].update(sectionName="https"),
     "HTTPRoute/wis-inference: spec.parentRefs[0].sectionName: Gateway/wis-internal has no listener 'https'"),
    ("gke-envoy", "HTTPRoute/wis-inference",
     lambda o: o["spec"]["rules"][0]["backendRefs"][0].update(port=8080),
     "HTTPRoute/wis-inference: spec.rules[0].backendRefs[0].port: 8080 is no port of Service/wis-gateway"),
    ("gke", "HealthCheckPolicy/vllm-qwen3",
     lambda o: o["spec"]["default"]["config"]["httpHealthCheck"].update(port=8000),
     "HealthCheckPolicy/vllm-qwen3: spec.default.config.httpHealthCheck: port and portName must be unset"),
    ("gke", "GCPBackendPolicy/vllm-qwen3",
     lambda o: o["spec"]["targetRef"].update(group=""),
     "GCPBackendPolicy/vllm-qwen3: spec.targetRef: targets /InferencePool/vllm-qwen3, which is not rendered"),
    ("gke", "PodMonitoring/wis-epp",
     lambda o: o["spec"]["endpoints"][0].update(port="grpc-metrics"),
     "PodMonitoring/wis-epp: spec.endpoints[0].port: 'grpc-metrics' is no container port of Deployment/wis-epp"),
    ("gke", "PodMonitoring/wis-epp",
     lambda o: o["spec"]["endpoints"][0].pop("interval"),
     "PodMonitoring/wis-epp: spec.endpoints[0]: 'interval' is a required property"),
    ("gke-envoy", "PodMonitoring/wis-gateway",
     lambda o: o["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "envoy"}),
     "PodMonitoring/wis-gateway: spec.selector.matchLabels:"),
    ("gke", "Deployment/wis-epp",
     lambda o: o["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"].update(port=9004),
     "Deployment/wis-epp: spec.template.spec.containers[0].readinessProbe.grpc.port: 9004 is no port of container 'epp'"),
    ("gke", "Deployment/wis-chat",
     lambda o: first(o["spec"]["template"]["spec"]["containers"][0]["env"], name="WIS_GATEWAY_URL")["valueFrom"]
     ["configMapKeyRef"].update(key="URL"),
     "Deployment/wis-chat: spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef: ConfigMap"),
    ("gke", "Gateway/wis-internal",
     lambda o: o["spec"]["listeners"][0].update(protocol="http "),
     "Gateway/wis-internal: spec.listeners[0].protocol:"),
]


@pytest.mark.parametrize("overlay,name,change,expected", MISTAKES, ids=[m[3].split(":")[0] + ":" + m[3].split(":")[1]
                                                                          for m in MISTAKES])
def test_each_mistake_is_named(overlay_objs, crds, overlay, name, change, expected):
    errs = validate.validate(mutate(overlay_objs[overlay], name, change), crds)
    assert any(e.startswith(expected) for e in errs), f"expected {expected!r} in:\n" + "\n".join(errs)


def with_session_scorer(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("endpointPickerConfig", {"plugins": []})["plugins"].append(
        {"type": "session-affinity-scorer", "parameters": {"secretEnv": "WIS_SESSION_SECRET"}})
    return cfg


def test_a_secret_env_that_cannot_reach_the_vm_is_named(overlay_objs, crds):
    objs = copy.deepcopy(overlay_objs["gke-envoy"])
    cm = next(c for c in by_kind(objs, "ConfigMap") if "envoy.yaml" in c["data"])
    config = yaml.safe_load(cm["data"]["envoy.yaml"])
    [f] = list(validate._wasm_filters(config))
    wasm = f["typed_config"]["config"]
    wasm["configuration"]["value"] = json.dumps(with_session_scorer(json.loads(wasm["configuration"]["value"])))
    cm["data"]["envoy.yaml"] = yaml.safe_dump(config)
    errs = validate.validate(objs, crds)
    assert f"{validate.obj_name(cm)}: data.envoy.yaml: the plugin reads WIS_SESSION_SECRET (secretEnv) but " \
           "vm_config.environment_variables.host_env_keys does not pass it into the VM" in errs
    # With the VM told to pass it, and the container holding it from a Secret, nothing is left.
    wasm["vm_config"]["environment_variables"] = {"host_env_keys": ["WIS_SESSION_SECRET"]}
    cm["data"]["envoy.yaml"] = yaml.safe_dump(config)
    assert validate.validate(objs, crds) == []
    # Without the Secret-backed variable on the container, the gap is named there.
    envoy = container(get(objs, "Deployment", "wis-gateway"), "envoy")
    envoy["env"] = [e for e in envoy["env"] if e["name"] != "WIS_SESSION_SECRET"]
    errs = validate.validate(objs, crds)
    assert any(e.startswith("Deployment/wis-gateway: container 'envoy': reads ConfigMap/") and
               "has no env WIS_SESSION_SECRET from a Secret" in e for e in errs), errs


def test_a_secret_env_missing_from_wis_epp_is_named(overlay_objs, crds):
    objs = copy.deepcopy(overlay_objs["gke"])
    cm = next(c for c in by_kind(objs, "ConfigMap") if "config.json" in c["data"])
    cm["data"]["config.json"] = json.dumps(with_session_scorer(json.loads(cm["data"]["config.json"])))
    assert validate.validate(objs, crds) == []  # the epp container already has it from a Secret
    epp = container(get(objs, "Deployment", "wis-epp"), "epp")
    epp["env"] = [e for e in epp["env"] if e["name"] != "WIS_SESSION_SECRET"]
    errs = validate.validate(objs, crds)
    assert any(e.startswith("Deployment/wis-epp: container 'epp':") for e in errs), errs


def test_inline_secret_is_rejected(overlay_objs, crds):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wis-iap-oauth", "namespace": "wis"},
              "stringData": {"key": "hunter2"}}
    errs = validate.validate(overlay_objs["gke"] + [secret], crds)
    assert any(e.startswith("Secret/wis-iap-oauth: data: a Secret with inline values") for e in errs)
    assert not [o for objs in overlay_objs.values() for o in objs if o["kind"] == "Secret"]


def test_unknown_kind_fails(crds):
    # GCPWasmPlugin among them: its CRD is not in shared/crds, so we do not ship one (docs/service-extensions.md).
    for api, kind in [("example.com/v1", "Widget"), ("networking.gke.io/v1", "GCPWasmPlugin")]:
        obj = {"apiVersion": api, "kind": kind, "metadata": {"name": "w"}}
        assert validate.validate([obj], crds) == [
            f"{kind}/w: apiVersion/kind: no schema for {api} {kind} (not core, not in shared/crds)"]
