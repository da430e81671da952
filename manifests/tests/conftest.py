"""Shared by the manifest tests: rendering with a real `kubectl kustomize`, the official CRDs,
configure_overlay.py run the way docs/deploy.md runs it, and the rendered overlays (`rendered`,
`overlay_objs`, `configured`) with the helpers that find objects in them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MANIFESTS = Path(__file__).resolve().parent.parent
ROOT = MANIFESTS.parent
CRDS = Path(os.environ.get("WIS_SHARED_CRDS") or ROOT.parent / "shared" / "crds")
sys.path.insert(0, str(MANIFESTS / "tools"))


def kustomize(path: Path) -> str:
    res = subprocess.run([os.environ.get("KUBECTL", "kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"kubectl kustomize {path} failed:\n{res.stderr}"
    return res.stdout


def render(path: Path) -> list[dict]:
    import validate

    return validate.load_objects(kustomize(path))


@pytest.fixture(scope="session")
def crds():
    import validate

    assert CRDS.is_dir(), f"official CRDs expected at {CRDS}"
    return validate.load_crd_schemas(CRDS)


# What a deployment passes to configure_overlay.py: values of the shapes docs/deploy.md produces.
CONFIGURED = {
    "registry": "us-central1-docker.pkg.dev/wis-test-project/wis",
    "tag": "3f2a9c1",
    "chat_host": "chat.inference.test-domain.dev",
    "iap_client_id": "123456789012-abcdefghij.apps.googleusercontent.com",
    "internal_ip": "10.128.0.50",
}


def configure(tmp_path: Path, template: str, *extra: str) -> Path:
    """Runs configure_overlay.py like docs/deploy.md does and returns the overlay it wrote."""
    out = tmp_path / f"my-{template}"
    args = [sys.executable, str(MANIFESTS / "tools" / "configure_overlay.py"), "--template", template, "--out", str(out),
            "--registry", CONFIGURED["registry"], "--tag", CONFIGURED["tag"], *extra]
    if template != "local":
        args += ["--chat-host", CONFIGURED["chat_host"], "--iap-client-id", CONFIGURED["iap_client_id"],
                 "--internal-ip", CONFIGURED["internal_ip"]]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out


OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").exists())


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return request.param, render(MANIFESTS / "overlays" / request.param)


@pytest.fixture(scope="module")
def overlay_objs():
    return {name: render(MANIFESTS / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    """Each template as docs/deploy.md configures it, plus gke-envoy with the plugin image volume."""
    tmp = tmp_path_factory.mktemp("configured")
    out = {t: render(configure(tmp, t)) for t in OVERLAYS}
    out["gke-envoy+image-volume"] = render(configure(tmp / "iv", "gke-envoy", "--image-volume"))
    return out


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def get(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"{kind}/{name} not rendered"
    return found[0]


def container(workload, name):
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c):
    return {e["name"]: e for e in c.get("env") or []}
