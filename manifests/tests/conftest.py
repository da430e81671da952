import os
import subprocess
import sys
from pathlib import Path

import pytest

MANIFESTS = Path(__file__).resolve().parent.parent
ROOT = MANIFESTS.parent
CRDS = ROOT.parent / "shared" / "crds"
sys.path.insert(0, str(MANIFESTS / "tools"))


def kustomize(path: Path) -> str:
    res = subprocess.run([os.environ.get("KUBECTL", "kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"kubectl kustomize {path} failed:\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="session")
def crds():
    import validate

    assert CRDS.is_dir(), f"official CRDs expected at {CRDS}"
    return validate.load_crd_schemas(CRDS)
