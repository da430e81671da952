#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests offline.

Every object is checked against a schema (schemas.py: core kinds with kubernetes-validate, the
Gateway API, Inference Extension and GKE kinds against the CRDs in shared/crds read at run time, and
a schema of our own for the one kind whose CRD is not there), then by the project checks
(project_checks.py: the references a cluster would resolve, the CEL rules our objects could break,
pinned images, no inline secret, requests and limits on every container).

Each finding is one line `Kind/name: field: what is wrong` (namespace omitted).

  validate.py --crds shared/crds [FILE]     (a YAML stream on FILE or stdin; exit 1 on any finding)

Every name of schemas.py and project_checks.py is importable from here as well (the tests read them
as validate.X).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# Re-exported: the tests and the tooling read these as validate.X.
from project_checks import (  # noqa: F401
    DIGEST,
    POLICY_KINDS,
    PROJECT_CHECKS,
    REF_KINDS,
    SECRET_NAME,
    WORKLOAD_KINDS,
    Index,
    _wasm_filters,
    config_map_errors,
    config_ref_errors,
    container_errors,
    container_ports,
    has_port,
    http_route_errors,
    image_errors,
    inference_pool_errors,
    pdb_errors,
    plugin_configs,
    pod_labels,
    pod_monitoring_errors,
    pod_spec,
    policy_errors,
    probe_errors,
    project_errors,
    secret_env_errors,
    secret_envs,
    secret_errors,
    service_errors,
    workload_errors,
)
from schemas import (  # noqa: F401
    _LABELS,
    _STR,
    K8S_VERSION,
    LOCAL_SCHEMAS,
    field_path,
    load_crd_schemas,
    obj_name,
    schema_errors,
    strict_schema,
)


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
