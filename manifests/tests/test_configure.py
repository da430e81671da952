"""configure_overlay.py: the one place a deployment's own values go, checked before they are written."""

import subprocess
import sys

import configure_overlay
import pytest
from conftest import CONFIGURED, MANIFESTS, configure, kustomize

TOOL = [sys.executable, str(MANIFESTS / "tools" / "configure_overlay.py")]
GKE_ARGS = {"--registry": CONFIGURED["registry"], "--tag": CONFIGURED["tag"], "--chat-host": CONFIGURED["chat_host"],
            "--iap-client-id": CONFIGURED["iap_client_id"], "--internal-ip": CONFIGURED["internal_ip"]}


def run(tmp_path, template, **changes):
    args = {**GKE_ARGS, **changes}
    argv = [*TOOL, "--template", template, "--out", str(tmp_path / "out")]
    for flag, value in args.items():
        if value is True:
            argv.append(flag)
        elif value is not None:
            argv += [flag, value]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("template", ["gke", "gke-envoy"])
def test_the_templates_carry_exactly_the_known_placeholders(template):
    text = kustomize(MANIFESTS / "overlays" / template)
    for placeholder in configure_overlay.PLACEHOLDERS:
        assert placeholder in text, f"{placeholder} no longer in the {template} template: update PLACEHOLDERS"
    # No other placeholder-looking token (PROJECT_ID, YOUR_DOMAIN, ...) hides in the templates'
    # objects (the generated Envoy bootstrap, full of Envoy's own enums, aside).
    import re

    import validate
    import yaml

    objs = [o for o in validate.load_objects(text) if not (o["kind"] == "ConfigMap" and "envoy.yaml" in o.get("data", {}))]
    text = yaml.safe_dump_all(objs)
    tokens = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text))
    env_names = set(re.findall(r"name: ([A-Z][A-Z0-9_]+)", text)) | set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", text))
    unknown = tokens - env_names - {"INTERNAL_GATEWAY_IP", "IAP_CLIENT_ID", "POD_NAMESPACE", "USE_SERVING_PORT"}
    assert not unknown, f"unknown placeholder-like tokens in the {template} template: {sorted(unknown)}"


@pytest.mark.parametrize("template", ["gke", "gke-envoy", "local"])
def test_a_configured_overlay_renders_no_placeholder(tmp_path, template):
    text = kustomize(configure(tmp_path, template))
    assert [p for p in configure_overlay.PLACEHOLDERS if p in text] == []
    if template != "local":
        assert CONFIGURED["chat_host"] in text and CONFIGURED["iap_client_id"] in text
        assert f"WIS_GATEWAY_URL: http://{CONFIGURED['internal_ip']}" in text


def test_running_it_again_rewrites_its_own_file(tmp_path):
    assert run(tmp_path, "gke").returncode == 0
    res = run(tmp_path, "gke", **{"--tag": "v2"})
    assert res.returncode == 0, res.stderr
    assert "newTag: v2" in (tmp_path / "out" / "kustomization.yaml").read_text()


def test_it_never_overwrites_a_kustomization_it_did_not_write(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kustomization.yaml").write_text("resources: [../gke]\n")
    res = run(tmp_path, "gke")
    assert res.returncode == 2 and "was not written by this tool" in res.stderr
    assert (tmp_path / "out" / "kustomization.yaml").read_text() == "resources: [../gke]\n"


@pytest.mark.parametrize("template,changes,expected", [
    # docs/deploy.md's old defect: a variable never exported, so an empty client ID was written.
    ("gke", {"--iap-client-id": ""}, "--iap-client-id: required for --template gke (empty: did you export it?)"),
    ("gke", {"--iap-client-id": "IAP_CLIENT_ID.apps.googleusercontent.com"}, "--iap-client-id 'IAP_CLIENT_ID"),
    ("gke", {"--internal-ip": None}, "--internal-ip: required"),
    ("gke", {"--internal-ip": "34.1.2.3"}, "not a private address"),
    ("gke", {"--internal-ip": "INTERNAL_GATEWAY_IP"}, "expected the IPv4 address of wis-internal-ip"),
    ("gke-envoy", {"--chat-host": "chat.example.com"}, "--chat-host 'chat.example.com'"),
    ("gke", {"--registry": "us-docker.pkg.dev/PROJECT_ID/wis"}, "--registry"),
    ("gke", {"--registry": "https://us-docker.pkg.dev/p/wis"}, "without scheme or tag"),
    ("gke", {"--tag": "latest"}, "not 'latest'"),
    ("gke", {"--tag": ""}, "--tag ''"),
    ("gke", {"--image-volume": True}, "--image-volume: only for templates with the Envoy gateway"),
    ("local", {}, "--chat-host, --iap-client-id, --internal-ip: only for the GKE templates"),
    ("gcp", {}, "--template 'gcp'"),
])
def test_a_bad_value_is_refused_and_nothing_written(tmp_path, template, changes, expected):
    res = run(tmp_path, template, **changes)
    assert res.returncode == 2
    assert expected in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()
