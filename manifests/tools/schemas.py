"""Schema checks of rendered Kubernetes manifests, offline.

Every object is checked against a schema: core kinds with kubernetes-validate (the Kubernetes
OpenAPI schemas, strict: unknown fields are errors), Gateway API, Inference Extension and GKE kinds
against the openAPIV3Schema of the CRDs in shared/crds (read at run time, never copied into the
repository) with jsonschema, unknown fields rejected the way a structural schema with
`kubectl apply --validate=strict` does; the one kind whose CRD is not there (Managed Prometheus's
PodMonitoring) against a schema of the fields we use, written from its API reference. CEL rules
(x-kubernetes-validations) need a cluster; the few that our objects could break are re-checked by
hand in project_checks.py.

A finding is one line `Kind/name: field: what is wrong` (`obj_name`, `field_path`).
"""

from __future__ import annotations

import copy
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
