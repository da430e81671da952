#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests offline.

Every object is checked against an official schema: core kinds with kubernetes-validate (the
Kubernetes OpenAPI schemas, strict: unknown fields are errors), Gateway API, Inference Extension
and GKE kinds against the openAPIV3Schema of the CRDs in shared/crds (read at run time, never
copied into the repository) with jsonschema, unknown fields rejected the way a structural schema
with `kubectl apply --validate=strict` does. CEL rules (x-kubernetes-validations) need a cluster
and are not evaluated. Then project checks: selectors match pod labels, Service target ports name
container ports, every image pinned, no secret value inline, resources on every container.

Each finding is one line `Kind/name: field: what is wrong` (namespace omitted).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"
# Kinds without a schema we can read here; each is listed with the reason, anything else unknown fails.
UNCHECKED_KINDS = {
    ("networking.gke.io/v1", "GCPWasmPlugin"): "GKE ships no public CRD for it; fields follow the GKE guide",
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
    if key in crds:
        validator = jsonschema.Draft7Validator(crds[key])
        return [
            f"{name}: {field_path(e.absolute_path)}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]
    if key in UNCHECKED_KINDS:
        return []
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


def project_errors(objs: list[dict]) -> list[str]:
    errs = []
    workloads = [o for o in objs if pod_spec(o) is not None]

    def pods_matching(selector: dict, ns: str | None):
        for w in workloads:
            labels = (w["spec"]["template"].get("metadata") or {}).get("labels") or {}
            if (w["metadata"].get("namespace") == ns) and all(labels.get(k) == v for k, v in selector.items()):
                yield w

    for o in objs:
        name, kind, spec = obj_name(o), o.get("kind"), o.get("spec") or {}
        ns = (o.get("metadata") or {}).get("namespace")
        if kind in WORKLOAD_KINDS:
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = (spec["template"].get("metadata") or {}).get("labels") or {}
            for k, v in sel.items():
                if labels.get(k) != v:
                    errs.append(f"{name}: spec.selector.matchLabels.{k}: {v!r} not in the pod template's labels")
            ps = pod_spec(o)
            for group in ("initContainers", "containers"):
                for i, c in enumerate(ps.get(group) or []):
                    errs += container_errors(name, f"spec.template.spec.{group}[{i}]", c)
            for i, vol in enumerate(ps.get("volumes") or []):
                if "image" in vol:
                    errs += image_errors(name, f"spec.template.spec.volumes[{i}].image.reference",
                                         vol["image"].get("reference", ""))
        elif kind == "Service":
            sel = spec.get("selector") or {}
            targets = list(pods_matching(sel, ns)) if sel else []
            if sel and not targets:
                errs.append(f"{name}: spec.selector: {sel} matches no workload's pod labels")
            for i, port in enumerate(spec.get("ports") or []):
                tp = port.get("targetPort", port.get("port"))
                for w in targets:
                    ports = [p for c in pod_spec(w).get("containers") or [] for p in c.get("ports") or []]
                    ok = any(p.get("name") == tp for p in ports) if isinstance(tp, str) else any(
                        p.get("containerPort") == tp for p in ports)
                    if not ok:
                        errs.append(f"{name}: spec.ports[{i}].targetPort: {tp!r} is no container port of {obj_name(w)}")
        elif kind == "InferencePool":
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            targets = list(pods_matching(sel, ns))
            if not targets:
                errs.append(f"{name}: spec.selector.matchLabels: {sel} matches no workload's pod labels")
            for i, tp in enumerate(spec.get("targetPorts") or []):
                for w in targets:
                    ports = [p.get("containerPort") for c in pod_spec(w).get("containers") or [] for p in c.get("ports") or []]
                    if tp.get("number") not in ports:
                        errs.append(f"{name}: spec.targetPorts[{i}].number: {tp.get('number')} is no container port of {obj_name(w)}")
        elif kind == "PodDisruptionBudget":
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            if not list(pods_matching(sel, ns)):
                errs.append(f"{name}: spec.selector.matchLabels: {sel} matches no workload's pod labels")
        elif kind == "GCPWasmPlugin":
            for i, v in enumerate(spec.get("versions") or []):
                errs += image_errors(name, f"spec.versions[{i}].image", v.get("image", ""))
        elif kind == "Secret":
            if o.get("data") or o.get("stringData"):
                errs.append(f"{name}: data: a Secret with inline values; create it out of band and reference it by name")
        elif kind == "ConfigMap":
            for key, value in (o.get("data") or {}).items():
                if SECRET_NAME.search(key):
                    errs.append(f"{name}: data.{key}: looks like a credential; keep it in a Secret created out of band")
                if isinstance(value, str) and "-----BEGIN" in value and "PRIVATE KEY" in value:
                    errs.append(f"{name}: data.{key}: holds a private key")
    return errs


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
