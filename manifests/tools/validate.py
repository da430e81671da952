#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests offline.

Every object is checked against a schema: core kinds with kubernetes-validate (the Kubernetes
OpenAPI schemas, strict: unknown fields are errors), Gateway API, Inference Extension and GKE kinds
against the openAPIV3Schema of the CRDs in shared/crds (read at run time, never copied into the
repository) with jsonschema, unknown fields rejected the way a structural schema with
`kubectl apply --validate=strict` does; the one kind whose CRD is not there (Managed Prometheus's
PodMonitoring) against a schema of the fields we use, written from its API reference. CEL rules
(x-kubernetes-validations) need a cluster; the few that our objects could break are re-checked by
hand below.

Then project checks, the references a cluster would resolve: selectors (workloads, Services,
InferencePools, PodMonitorings, PDBs) match pod labels; Service target ports, probe ports,
InferencePool target ports and PodMonitoring ports exist on the pods; an HTTPRoute's parents and
backends, an InferencePool's endpoint picker and every policy's target are rendered objects with
the named listener or port; ConfigMap keys read by containers exist; a key a scheduler
configuration reads from the environment (`secretEnv`) reaches it (a Secret-backed variable on the
container, and Envoy's vm_config.environment_variables.host_env_keys); every image is pinned; no
secret value is inline; every container declares requests and limits.

Each finding is one line `Kind/name: field: what is wrong` (namespace omitted).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"
# Kinds whose CRD is not in shared/crds get a schema of our own below, written from their API
# reference and limited to the fields we use (strict: anything else is an error, so a typo cannot
# pass). No kind is left unchecked: an unknown kind fails.
_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
LOCAL_SCHEMAS = {
    # Managed Prometheus (monitoring.googleapis.com/v1 PodMonitoring, GoogleCloudPlatform/prometheus-engine
    # doc/api.md): scrapes the selected pods of its namespace; it ignores prometheus.io/* annotations.
    ("monitoring.googleapis.com/v1", "PodMonitoring"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "additionalProperties": False,
                                 "required": ["matchLabels"], "properties": {"matchLabels": _LABELS}},
                    "endpoints": {
                        "type": "array", "minItems": 1, "maxItems": 10,
                        "items": {
                            "type": "object",
                            "required": ["port", "interval"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 65535},
                                                   {"type": "string", "minLength": 1}]},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "timeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            },
                        },
                    },
                },
            },
        },
    },
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Env var names that carry credentials: their values must come from a Secret, never inline.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|APIKEY|PRIVATE_KEY|CREDENTIALS?)$", re.I)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON schema, from every CRD file under crd_dir."""
    schemas = {}
    for path in sorted(crd_dir.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return schemas


def strict_schema(s: dict) -> dict:
    """OpenAPI v3 structural schema -> JSON schema that rejects unknown fields and honours nullable."""
    if not isinstance(s, dict):
        return s
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for key in ("properties", "patternProperties"):
        for name, sub in (s.get(key) or {}).items():
            s[key][name] = strict_schema(sub)
    if isinstance(s.get("items"), dict):
        s["items"] = strict_schema(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict_schema(s["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = [strict_schema(x) for x in s[key]]
    if (
        "properties" in s
        and "additionalProperties" not in s
        and not s.get("x-kubernetes-preserve-unknown-fields")
        and s.get("type") in ("object", ["object", "null"])
    ):
        # metadata is typed only as `object` in CRDs; the API server checks it, so leave it open.
        s["additionalProperties"] = False
    return s


def obj_name(obj: dict) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def field_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def schema_errors(obj: dict, crds: dict) -> list[str]:
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    name = obj_name(obj)
    schema = crds.get(key) or LOCAL_SCHEMAS.get(key)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{name}: {field_path(e.absolute_path)}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: apiVersion/kind: no schema for {key[0]} {key[1]} (not core, not in shared/crds)"]
    except kubernetes_validate.ValidationError as e:
        # kubernetes-validate reports the first schema violation it meets.
        return [f"{name}: {field_path(e.absolute_path)}: {e.message}"]
    return []


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    return None


def pod_labels(workload: dict) -> dict:
    return ((workload.get("spec") or {}).get("template", {}).get("metadata") or {}).get("labels") or {}


def container_ports(workload: dict) -> list[dict]:
    return [p for c in pod_spec(workload).get("containers") or [] for p in c.get("ports") or []]


def has_port(ports: list[dict], port) -> bool:
    """A port named (string) or numbered (int) among a pod's container ports."""
    if isinstance(port, str):
        return any(p.get("name") == port for p in ports)
    return any(p.get("containerPort") == port for p in ports)


class Index:
    """The rendered objects by (kind, namespace, name), and the workloads a label selector matches."""

    def __init__(self, objs: list[dict]):
        self.objs = objs
        self.by_key = {(o.get("kind"), (o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name")): o
                       for o in objs}
        self.workloads = [o for o in objs if pod_spec(o) is not None]

    def get(self, kind: str, ns: str | None, name: str) -> dict | None:
        return self.by_key.get((kind, ns, name))

    def pods_matching(self, selector: dict, ns: str | None) -> list[dict]:
        return [w for w in self.workloads
                if w["metadata"].get("namespace") == ns and all(pod_labels(w).get(k) == v for k, v in selector.items())]


# Policy kinds attached through spec.targetRef (or spec.targetRefs); the target must be rendered too.
POLICY_KINDS = {"GCPBackendPolicy", "HealthCheckPolicy", "GCPTrafficDistributionPolicy", "GCPGatewayPolicy",
                "GCPSessionAffinityPolicy"}
# (group, kind) of targets/backends and the kind we look up for them.
REF_KINDS = {("", "Service"): "Service", ("gateway.networking.k8s.io", "Gateway"): "Gateway",
             ("inference.networking.k8s.io", "InferencePool"): "InferencePool"}


def project_errors(objs: list[dict]) -> list[str]:
    errs: list[str] = []
    index = Index(objs)
    for o in objs:
        kind = o.get("kind")
        check = PROJECT_CHECKS.get(kind)
        if check:
            errs += check(o, index)
        if kind in WORKLOAD_KINDS:
            errs += workload_errors(o, index)
        if kind in POLICY_KINDS:
            errs += policy_errors(o, index)
    return errs + secret_env_errors(objs, index)


def workload_errors(o: dict, index: Index) -> list[str]:
    errs, name, spec = [], obj_name(o), o.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = pod_labels(o)
    for k, v in sel.items():
        if labels.get(k) != v:
            errs.append(f"{name}: spec.selector.matchLabels.{k}: {v!r} not in the pod template's labels")
    ps = pod_spec(o)
    ns = o["metadata"].get("namespace")
    for group in ("initContainers", "containers"):
        for i, c in enumerate(ps.get(group) or []):
            path = f"spec.template.spec.{group}[{i}]"
            errs += container_errors(name, path, c)
            errs += probe_errors(name, path, c)
            errs += config_ref_errors(name, path, c, ns, index)
    for i, vol in enumerate(ps.get("volumes") or []):
        if "image" in vol:
            errs += image_errors(name, f"spec.template.spec.volumes[{i}].image.reference", vol["image"].get("reference", ""))
    return errs


def probe_errors(name: str, path: str, c: dict) -> list[str]:
    """Every probe targets a port this container declares (a named port must exist by that name)."""
    errs, ports = [], c.get("ports") or []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in p:
                port = p[handler].get("port")
                if not has_port(ports, port):
                    errs.append(f"{name}: {path}.{probe}.{handler}.port: {port!r} is no port of container {c.get('name')!r}")
    return errs


def config_ref_errors(name: str, path: str, c: dict, ns: str | None, index: Index) -> list[str]:
    """A ConfigMap key the container reads must be rendered (Secrets are created out of band)."""
    errs = []
    for i, env in enumerate(c.get("env") or []):
        ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
        if not ref or ref.get("optional"):
            continue
        cm = index.get("ConfigMap", ns, ref.get("name"))
        if cm is None:
            errs.append(f"{name}: {path}.env[{i}].valueFrom.configMapKeyRef: no ConfigMap {ref.get('name')!r}")
        elif ref.get("key") not in (cm.get("data") or {}):
            errs.append(f"{name}: {path}.env[{i}].valueFrom.configMapKeyRef: ConfigMap {ref.get('name')!r} has no key {ref.get('key')!r}")
    return errs


def service_errors(o: dict, index: Index) -> list[str]:
    errs, name, spec = [], obj_name(o), o.get("spec") or {}
    sel = spec.get("selector") or {}
    targets = index.pods_matching(sel, o["metadata"].get("namespace")) if sel else []
    if sel and not targets:
        errs.append(f"{name}: spec.selector: {sel} matches no workload's pod labels")
    for i, port in enumerate(spec.get("ports") or []):
        tp = port.get("targetPort", port.get("port"))
        for w in targets:
            if not has_port(container_ports(w), tp):
                errs.append(f"{name}: spec.ports[{i}].targetPort: {tp!r} is no container port of {obj_name(w)}")
    return errs


def inference_pool_errors(o: dict, index: Index) -> list[str]:
    errs, name, spec = [], obj_name(o), o.get("spec") or {}
    ns = o["metadata"].get("namespace")
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    targets = index.pods_matching(sel, ns)
    if not targets:
        errs.append(f"{name}: spec.selector.matchLabels: {sel} matches no workload's pod labels")
    for i, tp in enumerate(spec.get("targetPorts") or []):
        for w in targets:
            if not has_port(container_ports(w), tp.get("number")):
                errs.append(f"{name}: spec.targetPorts[{i}].number: {tp.get('number')} is no container port of {obj_name(w)}")
    epp = spec.get("endpointPickerRef")
    if epp is not None and epp.get("kind", "Service") == "Service" and epp.get("group", "") == "":
        # The CRD's CEL rule (not evaluated offline): a Service picker needs its port.
        number = (epp.get("port") or {}).get("number")
        svc = index.get("Service", ns, epp.get("name"))
        if number is None:
            errs.append(f"{name}: spec.endpointPickerRef.port: required when kind is Service")
        if svc is None:
            errs.append(f"{name}: spec.endpointPickerRef.name: no Service {epp.get('name')!r} in namespace {ns}")
        elif number is not None and not any(p.get("port") == number for p in svc["spec"].get("ports") or []):
            errs.append(f"{name}: spec.endpointPickerRef.port.number: {number} is no port of Service/{epp.get('name')}")
    return errs


def http_route_errors(o: dict, index: Index) -> list[str]:
    errs, name, spec = [], obj_name(o), o.get("spec") or {}
    ns = o["metadata"].get("namespace")
    for i, parent in enumerate(spec.get("parentRefs") or []):
        if parent.get("kind", "Gateway") != "Gateway":
            continue
        gw = index.get("Gateway", parent.get("namespace", ns), parent.get("name"))
        if gw is None:
            errs.append(f"{name}: spec.parentRefs[{i}].name: no Gateway {parent.get('name')!r}")
        elif "sectionName" in parent and parent["sectionName"] not in [l.get("name") for l in gw["spec"].get("listeners") or []]:
            errs.append(f"{name}: spec.parentRefs[{i}].sectionName: Gateway/{parent.get('name')} has no listener {parent['sectionName']!r}")
    for r, rule in enumerate(spec.get("rules") or []):
        for b, ref in enumerate(rule.get("backendRefs") or []):
            path = f"spec.rules[{r}].backendRefs[{b}]"
            target_kind = REF_KINDS.get((ref.get("group", ""), ref.get("kind", "Service")))
            if target_kind is None:
                errs.append(f"{name}: {path}: backend kind {ref.get('group', '')}/{ref.get('kind', 'Service')} is not one we deploy")
                continue
            target = index.get(target_kind, ref.get("namespace", ns), ref.get("name"))
            if target is None:
                errs.append(f"{name}: {path}.name: no {target_kind} {ref.get('name')!r}")
            elif target_kind == "Service":
                if "port" not in ref:
                    errs.append(f"{name}: {path}.port: required for a Service backend")
                elif not any(p.get("port") == ref["port"] for p in target["spec"].get("ports") or []):
                    errs.append(f"{name}: {path}.port: {ref['port']} is no port of Service/{ref.get('name')}")
    return errs


def policy_errors(o: dict, index: Index) -> list[str]:
    errs, name, spec = [], obj_name(o), o.get("spec") or {}
    ns = o["metadata"].get("namespace")
    refs = [("spec.targetRef", spec["targetRef"])] if "targetRef" in spec else []
    refs += [(f"spec.targetRefs[{i}]", r) for i, r in enumerate(spec.get("targetRefs") or [])]
    for path, ref in refs:
        target_kind = REF_KINDS.get((ref.get("group", ""), ref.get("kind")))
        if target_kind is None or index.get(target_kind, ref.get("namespace", ns), ref.get("name")) is None:
            errs.append(f"{name}: {path}: targets {ref.get('group', '')}/{ref.get('kind')}/{ref.get('name')}, which is not rendered")
    if o.get("kind") == "HealthCheckPolicy":
        # The CRD's CEL rules (not evaluated offline) on the port of each health check type.
        for check_type, hc in ((((spec.get("default") or {}).get("config")) or {}).items()):
            if not isinstance(hc, dict):
                continue
            path = f"spec.default.config.{check_type}"
            mode = hc.get("portSpecification", "USE_SERVING_PORT")
            if mode == "USE_SERVING_PORT" and ("port" in hc or "portName" in hc):
                errs.append(f"{name}: {path}: port and portName must be unset with portSpecification USE_SERVING_PORT (the default)")
            if mode == "USE_FIXED_PORT" and ("port" not in hc or "portName" in hc):
                errs.append(f"{name}: {path}: USE_FIXED_PORT needs port and no portName")
            if mode == "USE_NAMED_PORT" and ("portName" not in hc or "port" in hc):
                errs.append(f"{name}: {path}: USE_NAMED_PORT needs portName and no port")
    return errs


def pod_monitoring_errors(o: dict, index: Index) -> list[str]:
    """Managed Prometheus scrapes only what its selector picks, on ports those pods declare."""
    errs, name, spec = [], obj_name(o), o.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    targets = index.pods_matching(sel, o["metadata"].get("namespace"))
    if not targets:
        errs.append(f"{name}: spec.selector.matchLabels: {sel} matches no workload's pod labels")
    for i, ep in enumerate(spec.get("endpoints") or []):
        for w in targets:
            if not has_port(container_ports(w), ep.get("port")):
                errs.append(f"{name}: spec.endpoints[{i}].port: {ep.get('port')!r} is no container port of {obj_name(w)}")
    return errs


def pdb_errors(o: dict, index: Index) -> list[str]:
    sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not index.pods_matching(sel, o["metadata"].get("namespace")):
        return [f"{obj_name(o)}: spec.selector.matchLabels: {sel} matches no workload's pod labels"]
    return []


def secret_errors(o: dict, index: Index) -> list[str]:
    if o.get("data") or o.get("stringData"):
        return [f"{obj_name(o)}: data: a Secret with inline values; create it out of band and reference it by name"]
    return []


def config_map_errors(o: dict, index: Index) -> list[str]:
    errs, name = [], obj_name(o)
    for key, value in (o.get("data") or {}).items():
        if SECRET_NAME.search(key):
            errs.append(f"{name}: data.{key}: looks like a credential; keep it in a Secret created out of band")
        if isinstance(value, str) and "-----BEGIN" in value and "PRIVATE KEY" in value:
            errs.append(f"{name}: data.{key}: holds a private key")
    return errs


def plugin_configs(cm: dict) -> list[tuple[str, dict, list[str] | None]]:
    """The scheduler configurations a ConfigMap carries: (data key, config, host_env_keys) for each
    wasm filter of an Envoy bootstrap (host_env_keys: what Envoy passes into the VM), and
    (key, config, None) for a JSON file in the plugin's schema (wis-epp's --config-file)."""
    out = []
    for key, text in (cm.get("data") or {}).items():
        if key.endswith((".yaml", ".yml")):
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            for f in _wasm_filters(doc):
                wasm = (f.get("typed_config") or {}).get("config") or {}
                try:
                    config = json.loads(((wasm.get("configuration") or {}).get("value")) or "{}")
                except ValueError:
                    config = {}
                env = ((wasm.get("vm_config") or {}).get("environment_variables") or {}).get("host_env_keys") or []
                out.append((key, config, list(env)))
        elif key.endswith(".json"):
            try:
                config = json.loads(text)
            except ValueError:
                continue
            if isinstance(config, dict) and ({"models", "endpointPickerConfig", "pool"} & set(config)):
                out.append((key, config, None))
    return out


def _wasm_filters(node):
    if isinstance(node, dict):
        if node.get("name") == "envoy.filters.http.wasm":
            yield node
        for v in node.values():
            yield from _wasm_filters(v)
    elif isinstance(node, list):
        for v in node:
            yield from _wasm_filters(v)


def secret_envs(config: dict) -> list[str]:
    """Environment variables the configuration's scorers read their keys from ({"secretEnv": NAME})."""
    plugins = ((config.get("endpointPickerConfig") or {}).get("plugins")) or []
    return [p["parameters"]["secretEnv"] for p in plugins
            if isinstance(p, dict) and isinstance(p.get("parameters"), dict) and p["parameters"].get("secretEnv")]


def secret_env_errors(objs: list[dict], index: Index) -> list[str]:
    """A key named by secretEnv must reach the scheduler: a Secret-backed env var on every container
    that mounts the configuration, and, inside Envoy, vm_config.environment_variables.host_env_keys."""
    errs = []
    for cm in (o for o in objs if o.get("kind") == "ConfigMap"):
        configs = plugin_configs(cm)
        if not configs:
            continue
        name, ns = obj_name(cm), cm["metadata"].get("namespace")
        for key, config, host_env in configs:
            for env_name in secret_envs(config):
                if host_env is not None and env_name not in host_env:
                    errs.append(f"{name}: data.{key}: the plugin reads {env_name} (secretEnv) but "
                                "vm_config.environment_variables.host_env_keys does not pass it into the VM")
                for w in index.workloads:
                    if w["metadata"].get("namespace") != ns:
                        continue
                    ps = pod_spec(w)
                    vols = {v["name"] for v in ps.get("volumes") or [] if (v.get("configMap") or {}).get("name") == cm["metadata"]["name"]}
                    for c in ps.get("containers") or []:
                        if not vols & {m["name"] for m in c.get("volumeMounts") or []}:
                            continue
                        env = {e["name"]: e for e in c.get("env") or []}
                        if "secretKeyRef" not in ((env.get(env_name) or {}).get("valueFrom") or {}):
                            errs.append(f"{obj_name(w)}: container {c['name']!r}: reads {name} whose plugin "
                                        f"configuration names secretEnv {env_name}, but has no env {env_name} from a Secret")
    return errs


PROJECT_CHECKS = {
    "Service": service_errors,
    "InferencePool": inference_pool_errors,
    "HTTPRoute": http_route_errors,
    "PodMonitoring": pod_monitoring_errors,
    "PodDisruptionBudget": pdb_errors,
    "Secret": secret_errors,
    "ConfigMap": config_map_errors,
}


def image_errors(name: str, path: str, image: str) -> list[str]:
    if not image:
        return [f"{name}: {path}: no image"]
    if DIGEST.search(image):
        return []
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return [f"{name}: {path}: image {image!r} is not pinned (no tag or digest)"]
    if last.rsplit(":", 1)[1] == "latest":
        return [f"{name}: {path}: image {image!r} uses the moving tag 'latest'"]
    return []


def container_errors(name: str, path: str, c: dict) -> list[str]:
    errs = image_errors(name, f"{path}.image", c.get("image", ""))
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                errs.append(f"{name}: {path}.resources.{part}.{r}: not set (every container declares requests and limits)")
    for i, env in enumerate(c.get("env") or []):
        if SECRET_NAME.search(env.get("name", "")) and "value" in env:
            errs.append(f"{name}: {path}.env[{i}].value: {env['name']} is set inline; use valueFrom.secretKeyRef")
    return errs


def validate(objs: list[dict], crds: dict) -> list[str]:
    errs = []
    for o in objs:
        errs += schema_errors(o, crds)
    return errs + project_errors(objs)


def load_objects(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="validate rendered manifests (YAML stream on a file or stdin)")
    p.add_argument("--crds", required=True, type=Path, help="directory of CRD YAML files (shared/crds)")
    p.add_argument("file", nargs="?", type=Path)
    a = p.parse_args(argv)
    text = a.file.read_text() if a.file else sys.stdin.read()
    errs = validate(load_objects(text), load_crd_schemas(a.crds))
    for e in errs:
        print(e, file=sys.stderr)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
