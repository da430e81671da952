"""Every overlay renders with real Kustomize and every object validates against its schema."""

import copy

import pytest
import validate
from conftest import CRDS, MANIFESTS, ROOT, kustomize

OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").exists())


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return request.param, validate.load_objects(kustomize(MANIFESTS / "overlays" / request.param))


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def test_overlays_exist():
    assert {"local", "gke"} <= set(OVERLAYS)


def test_every_object_validates(rendered, crds):
    name, objs = rendered
    errs = validate.validate(objs, crds)
    assert errs == [], f"overlay {name}:\n" + "\n".join(errs)


def test_crds_are_read_from_shared(crds):
    # The schemas come from ../shared/crds at test time; the kinds we deploy must be among them.
    for key in [
        ("gateway.networking.k8s.io/v1", "Gateway"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("inference.networking.k8s.io/v1", "InferencePool"),
        ("networking.gke.io/v1", "GCPBackendPolicy"),
        ("networking.gke.io/v1", "GCPTrafficExtension"),
        ("networking.gke.io/v1", "HealthCheckPolicy"),
    ]:
        assert key in crds, f"{key} missing from {CRDS}"


def test_reference_architecture_kinds_in_gke():
    objs = validate.load_objects(kustomize(MANIFESTS / "overlays" / "gke"))
    kinds = {o["kind"] for o in objs}
    assert {"Gateway", "HTTPRoute", "GCPBackendPolicy", "InferencePool", "HealthCheckPolicy",
            "GCPTrafficExtension", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    classes = {g["spec"]["gatewayClassName"] for g in by_kind(objs, "Gateway")}
    assert classes == {"gke-l7-global-external-managed", "gke-l7-rilb"}
    iap = [p for p in by_kind(objs, "GCPBackendPolicy") if p["spec"]["default"].get("iap", {}).get("enabled")]
    assert {p["spec"]["targetRef"]["name"] for p in iap} >= {"wis-chat"}
    for p in iap:
        assert set(p["spec"]["default"]["iap"]["oauth2ClientSecret"]) == {"name"}
    assert not by_kind(objs, "Secret"), "the IAP secret is created out of band, never rendered"
    wasm = by_kind(objs, "GCPWasmPlugin")[0]
    assert all(v["config"] == '{"mode":"service-extensions"}' for v in wasm["spec"]["versions"])
    ext = by_kind(objs, "GCPTrafficExtension")[0]
    refs = [e["backendRef"] for c in ext["spec"]["extensionChains"] for e in c["extensions"]]
    assert refs == [{"group": "networking.gke.io", "kind": "GCPWasmPlugin", "name": wasm["metadata"]["name"]}]


def test_vllm_serves_qwen3_with_prefix_caching(rendered):
    _, objs = rendered
    vllm = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == "vllm-qwen3")
    c = vllm["spec"]["template"]["spec"]["containers"][0]
    args = c["command"] + c["args"]
    assert "Qwen/Qwen3-0.6B" in args
    assert "--enable-prefix-caching" in args and "--enable-prompt-tokens-details" in args
    assert any(a.startswith("--max-model-len=") for a in args)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "vllm-qwen3")
    assert svc["spec"]["clusterIP"] == "None"


def test_chat_points_at_the_gateway_service(rendered):
    _, objs = rendered
    chat = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == "wis-chat")
    env = {e["name"]: e.get("value") for e in chat["spec"]["template"]["spec"]["containers"][0]["env"]}
    gw = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "wis-gateway")
    assert env["WIS_GATEWAY_URL"].startswith(f"http://wis-gateway.{gw['metadata']['namespace']}.svc")
    assert env["WIS_MODEL"] == "Qwen/Qwen3-0.6B"
    assert env["WIS_CHAT_HOST"] == "0.0.0.0", "inside a pod the chat must listen beyond loopback"
    # Every setting the manifest passes is one the app reads.
    app_source = (ROOT / "chat" / "app.py").read_text()
    for name in env:
        if name.startswith("WIS_"):
            assert f'"{name}"' in app_source, f"{name} is not read by chat/app.py"


def test_envoy_config_points_at_the_pool_service(rendered):
    _, objs = rendered
    cm = next(c for c in by_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("wis-envoy-config"))
    svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "vllm-qwen3")
    assert f"vllm-qwen3.{svc['metadata']['namespace']}.svc.cluster.local" in cm["data"]["envoy.yaml"]
    gw = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == "wis-gateway")
    vols = gw["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in vols)


def test_broken_fixture_names_object_and_field(crds):
    objs = validate.load_objects((MANIFESTS / "tests" / "fixtures" / "broken.yaml").read_text())
    errs = "\n".join(validate.validate(objs, crds))
    assert "Deployment/broken-deploy: spec.replicas:" in errs
    assert "HTTPRoute/broken-route: spec.rules[0].backendRefs[0].port:" in errs
    assert "GCPBackendPolicy/broken-policy: spec.default.iap:" in errs and "oauthSecret" in errs


@pytest.fixture(scope="module")
def gke_objs():
    return validate.load_objects(kustomize(MANIFESTS / "overlays" / "gke"))


def mutate(objs, name, fn):
    out = copy.deepcopy(objs)
    fn(next(o for o in out if validate.obj_name(o) == name))
    return out


@pytest.mark.parametrize(
    "name,change,expected",
    [
        ("Deployment/wis-gateway",
         lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="docker.io/envoyproxy/envoy:latest"),
         "Deployment/wis-gateway: spec.template.spec.containers[0].image: image 'docker.io/envoyproxy/envoy:latest'"),
        ("Deployment/wis-chat",
         lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("resources"),
         "Deployment/wis-chat: spec.template.spec.containers[0].resources.requests.cpu: not set"),
        ("Deployment/wis-chat",
         lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "OPENAI_API_KEY", "value": "x"}),
         "Deployment/wis-chat: spec.template.spec.containers[0].env[5].value: OPENAI_API_KEY is set inline"),
        ("Service/wis-chat",
         lambda o: o["spec"]["ports"][0].update(targetPort="web"),
         "Service/wis-chat: spec.ports[0].targetPort: 'web' is no container port of Deployment/wis-chat"),
        ("Deployment/vllm-qwen3",
         lambda o: o["spec"]["selector"]["matchLabels"].update({"tier": "gpu"}),
         "Deployment/vllm-qwen3: spec.selector.matchLabels.tier:"),
        ("InferencePool/vllm-qwen3",
         lambda o: o["spec"]["targetPorts"][0].update(number=9000),
         "InferencePool/vllm-qwen3: spec.targetPorts[0].number: 9000 is no container port"),
        ("Gateway/wis-internal",
         lambda o: o["spec"]["listeners"][0].update(protocol="http "),
         "Gateway/wis-internal: spec.listeners[0].protocol:"),
        ("GCPTrafficExtension/wis-plugin",
         lambda o: o["spec"]["extensionChains"][0]["extensions"][0]["backendRef"].update(kind="WasmPlugin"),
         "GCPTrafficExtension/wis-plugin: spec.extensionChains[0].extensions[0].backendRef.kind:"),
        ("GCPWasmPlugin/wis-plugin",
         lambda o: o["spec"]["versions"][0].update(image="us-docker.pkg.dev/p/wis/wis-plugin"),
         "GCPWasmPlugin/wis-plugin: spec.versions[0].image: image 'us-docker.pkg.dev/p/wis/wis-plugin' is not pinned"),
    ],
)
def test_each_mistake_is_named(gke_objs, crds, name, change, expected):
    errs = validate.validate(mutate(gke_objs, name, change), crds)
    assert any(e.startswith(expected) for e in errs), f"expected {expected!r} in:\n" + "\n".join(errs)


def test_inline_secret_is_rejected(gke_objs, crds):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wis-iap-oauth", "namespace": "wis"},
              "stringData": {"key": "hunter2"}}
    errs = validate.validate(gke_objs + [secret], crds)
    assert any(e.startswith("Secret/wis-iap-oauth: data: a Secret with inline values") for e in errs)


def test_unknown_kind_fails(crds):
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate.validate([obj], crds) == [
        "Widget/w: apiVersion/kind: no schema for example.com/v1 Widget (not core, not in shared/crds)"]
