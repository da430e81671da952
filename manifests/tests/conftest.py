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
