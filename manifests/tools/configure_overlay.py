#!/usr/bin/env python3
"""Write the overlay you apply: a template overlay plus your registry, tag, host, IAP client and address.

The template overlays (manifests/overlays/gke, gke-envoy, local) name our images by short names and
carry placeholders where a deployment's own values go. This writes a small kustomization on top of
one of them, which is then the one place those values live:

  images:             every image of ours -> REGISTRY/NAME:TAG (one registry, one tag)
  wis-chat-gateway    WIS_GATEWAY_URL=http://INTERNAL_IP (the internal Gateway's reserved address)
  HTTPRoute wis-chat  hostnames: [CHAT_HOST]
  GCPBackendPolicy wis-chat  iap.clientID: IAP_CLIENT_ID

Every value is checked first (an empty or placeholder value is an error, never written), and when
kubectl is on PATH the result is rendered and must contain no placeholder.

  configure_overlay.py --template gke --out manifests/overlays/my-gke --registry REGION-docker.pkg.dev/P/wis \\
      --tag TAG --chat-host chat.example.org --iap-client-id N-x.apps.googleusercontent.com --internal-ip 10.128.0.50
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MANIFESTS = Path(__file__).resolve().parent.parent
# Our images, by the short names the manifests use (components/images tags them for the templates).
IMAGES = ("wis-chat", "wis-epp", "wis-envoy", "wis-scraper", "wis-plugin")
GKE_TEMPLATES = ("gke", "gke-envoy")
# Templates with the self-managed Envoy gateway, which components/plugin-image-volume can change.
ENVOY_TEMPLATES = ("gke-envoy", "local")
# Strings of the templates that a configured overlay must not render any more.
PLACEHOLDERS = ("INTERNAL_GATEWAY_IP", "IAP_CLIENT_ID", "chat.example.com")
MARKER = "# Written by manifests/tools/configure_overlay.py"

REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
IAP_CLIENT = re.compile(r"^[0-9]+-[a-z0-9]+\.apps\.googleusercontent\.com$")


class ConfigError(ValueError):
    """A value that would make a broken deployment; the message says which and what is expected."""


def check_values(a: argparse.Namespace) -> None:
    if a.template not in GKE_TEMPLATES + ("local",):
        raise ConfigError(f"--template {a.template!r}: expected one of {', '.join(GKE_TEMPLATES + ('local',))}")
    if not REGISTRY.match(a.registry or ""):
        raise ConfigError(f"--registry {a.registry!r}: expected a registry path without scheme or tag, "
                          "e.g. us-central1-docker.pkg.dev/my-project/wis")
    if "PROJECT_ID" in (a.registry or "").upper():
        raise ConfigError(f"--registry {a.registry!r}: still names the placeholder project")
    if not TAG.match(a.tag or "") or a.tag == "latest":
        raise ConfigError(f"--tag {a.tag!r}: expected a version tag (letters, digits, . _ -), not 'latest'")
    gke_values = {"--chat-host": a.chat_host, "--iap-client-id": a.iap_client_id, "--internal-ip": a.internal_ip}
    if a.template == "local":
        given = [flag for flag, value in gke_values.items() if value]
        if given:
            raise ConfigError(f"{', '.join(given)}: only for the GKE templates ({', '.join(GKE_TEMPLATES)})")
    else:
        for flag, value in gke_values.items():
            if not value:
                raise ConfigError(f"{flag}: required for --template {a.template} (empty: did you export it?)")
        if not HOST.match(a.chat_host) or re.search(r"(^|\.)example\.(com|org|net)$", a.chat_host):
            raise ConfigError(f"--chat-host {a.chat_host!r}: expected your DNS name for the chat, e.g. chat.your-domain.dev")
        if not IAP_CLIENT.match(a.iap_client_id):
            raise ConfigError(f"--iap-client-id {a.iap_client_id!r}: expected the OAuth client ID, "
                              "NUMBER-ID.apps.googleusercontent.com")
        try:
            ip = ipaddress.IPv4Address(a.internal_ip)
        except ValueError:
            raise ConfigError(f"--internal-ip {a.internal_ip!r}: expected the IPv4 address of wis-internal-ip") from None
        if not ip.is_private:
            raise ConfigError(f"--internal-ip {a.internal_ip}: not a private address; the internal Gateway's "
                              "address comes from your VPC subnet")
    if a.image_volume and a.template not in ENVOY_TEMPLATES:
        raise ConfigError(f"--image-volume: only for templates with the Envoy gateway ({', '.join(ENVOY_TEMPLATES)})")


def kustomization(a: argparse.Namespace, out: Path) -> str:
    template = os.path.relpath(MANIFESTS / "overlays" / a.template, out)
    lines = [
        f"{MARKER} (--template {a.template}); run it again to change a value.",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "namespace: wis",
        "resources:",
        f"  - {template}",
    ]
    if a.image_volume:
        lines += ["components:", f"  - {os.path.relpath(MANIFESTS / 'components' / 'plugin-image-volume', out)}"]
    lines += ["# This deployment's registry and tag: the one place they are set.", "images:"]
    for name in IMAGES:
        lines += [f"  - name: {name}", f"    newName: {a.registry}/{name}", f"    newTag: {a.tag}"]
    if a.template in GKE_TEMPLATES:
        lines += [
            "configMapGenerator:",
            "  # The chat calls the internal Gateway at its reserved address wis-internal-ip.",
            "  - name: wis-chat-gateway",
            "    behavior: replace",
            "    literals:",
            f"      - WIS_GATEWAY_URL=http://{a.internal_ip}",
            "patches:",
            "  - target:",
            "      kind: HTTPRoute",
            "      name: wis-chat",
            "    patch: |-",
            "      - op: replace",
            "        path: /spec/hostnames",
            f"        value: [{a.chat_host}]",
            "  - target:",
            "      kind: GCPBackendPolicy",
            "      name: wis-chat",
            "    patch: |-",
            "      - op: replace",
            "        path: /spec/default/iap/clientID",
            f"        value: {a.iap_client_id}",
        ]
    return "\n".join(lines) + "\n"


def write(a: argparse.Namespace) -> Path:
    check_values(a)
    out = Path(a.out).resolve()
    target = out / "kustomization.yaml"
    if target.exists() and not target.read_text().startswith(MARKER):
        raise ConfigError(f"{target}: exists and was not written by this tool; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    target.write_text(kustomization(a, out))
    return target


def rendered_placeholders(out: Path, kubectl: str) -> list[str]:
    res = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise ConfigError(f"kubectl kustomize {out} failed:\n{res.stderr}")
    return [p for p in PLACEHOLDERS if p in res.stdout]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--template", required=True, help=f"template overlay: {', '.join(GKE_TEMPLATES)} or local")
    p.add_argument("--out", required=True, help="directory of the overlay to write, e.g. manifests/overlays/my-gke")
    p.add_argument("--registry", required=True, help="where the images are pushed, e.g. REGION-docker.pkg.dev/PROJECT/wis")
    p.add_argument("--tag", required=True, help="the tag every image was pushed with")
    p.add_argument("--chat-host", help="GKE: the chat's DNS name (certificate and HTTPRoute)")
    p.add_argument("--iap-client-id", help="GKE: the OAuth client ID IAP uses")
    p.add_argument("--internal-ip", help="GKE: the address of wis-internal-ip (the internal Gateway)")
    p.add_argument("--image-volume", action="store_true",
                   help="mount the plugin from its OCI image (components/plugin-image-volume, Kubernetes >= 1.35)")
    a = p.parse_args(argv)
    try:
        target = write(a)
        kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
        if kubectl:
            left = rendered_placeholders(target.parent, kubectl)
            if left:
                raise ConfigError(f"{target.parent} still renders placeholders: {', '.join(left)}")
    except ConfigError as e:
        print(f"configure_overlay: {e}", file=sys.stderr)
        return 2
    print(f"configure_overlay: wrote {target}" + ("" if kubectl else " (kubectl not found: not rendered)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
