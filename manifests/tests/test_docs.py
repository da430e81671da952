"""docs/deploy.md works on an empty project: read as a shell session, in order, against the manifests."""

import re

import pytest
from conftest import MANIFESTS, ROOT, render

DEPLOY = ROOT / "docs" / "deploy.md"
# Set by the shell or the machine, never by the guide.
AMBIENT = {"HOME", "PATH", "USER", "PWD"}


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)


def shell_lines(text: str) -> list[str]:
    """The guide's commands in order, continuation lines joined, comments dropped."""
    out = []
    for block in sh_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


DEF = re.compile(r"(?:^|[\s;&(])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")
READ = re.compile(r"\bread\b(?:\s+-\w+)*(?:\s+'[^']*')?\s+([A-Za-z_][A-Za-z0-9_]*)")
FOR = re.compile(r"\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b")
USE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def undefined_uses(lines: list[str]) -> list[tuple[str, str]]:
    """(variable, line) for every $VARIABLE a line uses before any earlier line (or this one, to its
    left) assigned, exported or read it. `VAR=x cmd` counts as assigned for the rest of the guide,
    which is more lenient than the shell and still catches a variable never set."""
    defined, missing = set(AMBIENT), []
    for line in lines:
        events = [(m.start(1), "def", m.group(1)) for pattern in (DEF, READ, FOR) for m in pattern.finditer(line)]
        events += [(m.start(), "use", m.group(1)) for m in USE.finditer(line)]
        for _, kind, name in sorted(events):
            if kind == "def":
                defined.add(name)
            elif name not in defined:
                missing.append((name, line))
    return missing


def test_every_variable_is_exported_before_use():
    assert undefined_uses(shell_lines(DEPLOY.read_text())) == []


def test_the_variable_check_catches_the_old_defect():
    # The sed that wrote an empty clientID: IAP_CLIENT_ID used, never exported.
    lines = ["export PROJECT=p", 'sed -i "s/PROJECT_ID/$PROJECT/g; s/X/$IAP_CLIENT_ID/g" f.yaml']
    assert [name for name, _ in undefined_uses(lines)] == ["IAP_CLIENT_ID"]
    assert undefined_uses(["read -rsp 'secret: ' S && export S", 'echo "$S"']) == []
    assert undefined_uses(['echo "${LATER:?}"', "export LATER=1"]) == [("LATER", 'echo "${LATER:?}"')]


@pytest.fixture(scope="module")
def all_objs():
    return [o for name in ("gke", "gke-envoy", "local") for o in render(MANIFESTS / "overlays" / name)]


def test_the_guide_creates_every_name_the_manifests_reference_out_of_band(all_objs):
    commands = "\n".join(shell_lines(DEPLOY.read_text()))
    secrets, addresses, certs = set(), set(), set()
    for o in all_objs:
        spec = o.get("spec") or {}
        iap = (spec.get("default") or {}).get("iap") or {}
        if "oauth2ClientSecret" in iap:
            secrets.add(iap["oauth2ClientSecret"]["name"])
        for a in spec.get("addresses") or []:
            if a.get("type") == "NamedAddress":
                addresses.add(a["value"])
        for listener in spec.get("listeners") or []:
            certs.update(((listener.get("tls") or {}).get("options") or {}).get("networking.gke.io/pre-shared-certs", "").split(","))
        pod = ((spec.get("template") or {}).get("spec")) or {}
        for c in pod.get("containers") or []:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secrets.add(ref["name"])
    assert secrets == {"wis-iap-oauth", "hf-token", "wis-session-secret"}
    assert addresses == {"wis-external-ip", "wis-internal-ip"}
    for name in secrets:
        assert f"create secret generic {name} " in commands, name
    for name in addresses:
        assert f"gcloud compute addresses create {name} " in commands, name
    for name in certs - {""}:
        assert f"gcloud compute ssl-certificates create {name} " in commands, name


def test_the_guide_enables_the_apis_and_grants_the_roles_the_deployment_needs():
    commands = "\n".join(shell_lines(DEPLOY.read_text()))
    enable = " ".join(line for line in commands.splitlines() if line.startswith("gcloud services enable"))
    for api in ["container", "compute", "artifactregistry", "iap", "networkservices", "monitoring", "logging"]:
        assert f"{api}.googleapis.com" in enable, api
    # the nodes pull from Artifact Registry and write logs and metrics, as their own account
    assert re.search(r"artifacts repositories add-iam-policy-binding .*--member \"serviceAccount:\$NODE_SA\" "
                     r"--role roles/artifactregistry.reader", commands)
    assert "--role roles/container.defaultNodeServiceAccount" in commands
    assert commands.count('--service-account "$NODE_SA"') == 2, "both node pools run as the nodes' account"
    assert "--enable-managed-prometheus" in commands
    assert "roles/iap.httpsResourceAccessor" in commands
    assert "--purpose REGIONAL_MANAGED_PROXY" in commands, "gke-l7-rilb needs the proxy-only subnet"


def test_the_guide_names_where_the_inferencepool_crd_comes_from():
    text = DEPLOY.read_text()
    assert "1.34.0-gke.1626000" in text
    assert re.search(r"gateway-api-inference-extension/releases/download/\$GAIE_VERSION/v1-manifests\.yaml", text)


def test_the_guide_configures_the_overlay_with_every_value_and_verifies_through_the_chat():
    commands = shell_lines(DEPLOY.read_text())
    [configure] = [c for c in commands if "configure_overlay.py --template \"$OVERLAY\"" in c]
    for flag, var in [("--registry", "AR"), ("--tag", "TAG"), ("--chat-host", "CHAT_HOST"),
                      ("--iap-client-id", "IAP_CLIENT_ID"), ("--internal-ip", "INTERNAL_IP")]:
        assert f'{flag} "${var}"' in configure, flag
    assert "kubectl -n wis exec deploy/wis-chat -- python /app/app.py --check" in commands
    # the chat image runs app.py from /app, where the check is
    assert "COPY chat/ /app/" in (MANIFESTS / "images" / "chat.Dockerfile").read_text()
