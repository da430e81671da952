"""The plugin OCI layout, the Dockerfiles' static checks and the generated Envoy config."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dockerfile_check
import oci_layout
import pytest
from conftest import MANIFESTS, ROOT

WASM = b"\0asm\x01\0\0\0" + bytes(range(256)) * 4


@pytest.fixture
def layout(tmp_path):
    wasm = tmp_path / "plugin.wasm"
    wasm.write_bytes(WASM)
    out = tmp_path / "oci"
    oci_layout.build(wasm, out, "0.1.0", "https://example.invalid/src", "abc123", 0)
    return out


def blob(layout, digest):
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def test_layout_is_a_valid_wasm_image(layout):
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [mdesc] = index["manifests"]
    assert mdesc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert mdesc["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    manifest_bytes = blob(layout, mdesc["digest"])
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == mdesc["digest"]
    manifest = json.loads(manifest_bytes)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    for desc in (manifest["config"], layer):
        data = blob(layout, desc["digest"])
        assert len(data) == desc["size"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"]
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    tar = gzip.decompress(blob(layout, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar).hexdigest()]
    assert oci_layout.verify(layout) == WASM
    # Exactly the three blobs of this image, nothing stale.
    assert len(list((layout / "blobs" / "sha256").iterdir())) == 3
    assert (layout / "plugin.wasm.sha256").read_text() == hashlib.sha256(WASM).hexdigest() + "  plugin.wasm\n"


def test_layout_is_reproducible(tmp_path, layout):
    again = tmp_path / "again"
    oci_layout.build(tmp_path / "plugin.wasm", again, "0.1.0", "https://example.invalid/src", "abc123", 0)
    assert (again / "index.json").read_bytes() == (layout / "index.json").read_bytes()


def test_verify_catches_a_tampered_blob(layout):
    manifest = json.loads(blob(layout, json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]))
    path = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(oci_layout.LayoutError, match="manifest layers\\[0\\]: blob content hashes to"):
        oci_layout.verify(layout)


def test_build_rejects_a_non_wasm_file(tmp_path):
    bad = tmp_path / "x.wasm"
    bad.write_bytes(b"ELF....")
    with pytest.raises(oci_layout.LayoutError, match="not a WebAssembly module"):
        oci_layout.build(bad, tmp_path / "o", "t", "s", "r", 0)


def test_real_plugin_layout_when_built(tmp_path):
    wasm = Path(os.environ.get("WIS_PLUGIN_WASM", ""))
    if not wasm.is_file():
        pytest.skip("plugin .wasm not built (./build.sh builds it); the synthetic module is tested above")
    res = subprocess.run([sys.executable, str(MANIFESTS / "tools" / "oci_layout.py"), "build", "--wasm", str(wasm),
                          "--out", str(tmp_path / "oci")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert oci_layout.verify(tmp_path / "oci") == wasm.read_bytes()


def test_our_dockerfiles_pass():
    files = sorted((MANIFESTS / "images").glob("*.Dockerfile"))
    assert {f.name for f in files} >= {"scraper.Dockerfile", "epp.Dockerfile", "envoy.Dockerfile", "chat.Dockerfile",
                                       "plugin.Dockerfile"}
    assert [e for f in files for e in dockerfile_check.check(f)] == []
    plugin = (MANIFESTS / "images" / "plugin.Dockerfile").read_text()
    assert "FROM scratch" in plugin and "plugin.wasm" in plugin


def test_every_image_a_manifest_names_has_a_dockerfile():
    import configure_overlay

    for name in configure_overlay.IMAGES:
        assert (MANIFESTS / "images" / f"{name.removeprefix('wis-')}.Dockerfile").is_file(), name


def test_the_envoy_image_bakes_the_checked_module_into_the_pinned_envoy():
    text = (MANIFESTS / "images" / "envoy.Dockerfile").read_text()
    [base] = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert base == "docker.io/envoyproxy/envoy:v1.40.0"
    assert "COPY plugin.wasm plugin.wasm.sha256 /etc/envoy/wasm/" in text
    assert "sha256sum -c plugin.wasm.sha256" in text
    # package.sh hands the engine a context with exactly what the Dockerfile copies.
    package = (MANIFESTS / "package.sh").read_text()
    assert 'cp manifests/images/envoy.Dockerfile "$ctx/Dockerfile"' in package
    assert 'cp "$out/plugin.wasm" "$out/plugin.wasm.sha256" "$ctx/"' in package


@pytest.mark.parametrize(
    "text,expected",
    [
        ("FROM debian\nUSER 1000\n", "no tag or digest"),
        ("FROM debian:latest\nUSER 1000\n", "moves"),
        ("FROM debian:12.8-slim\n", "final stage has no USER"),
        ("FROM debian:12.8-slim\nUSER root\n", "final stage runs as root"),
        ("FROM rust:1.95.0 AS b\nUSER 1000\nFROM debian:12.8-slim\n", "final stage has no USER"),
        ("FROM debian:12.8-slim\nENV API_TOKEN=abc\nUSER 1000\n", "ENV API_TOKEN bakes a credential"),
        ("FROM debian:12.8-slim\nADD https://x.invalid/a /a\nUSER 1000\n", "ADD from a URL"),
    ],
)
def test_dockerfile_checker_catches(tmp_path, text, expected):
    f = tmp_path / "Dockerfile"
    f.write_text(text)
    errs = dockerfile_check.check(f)
    assert any(expected in e for e in errs), errs


def test_committed_envoy_config_is_current(tmp_path):
    renderer = ROOT / "envoy" / "render.py"
    if not renderer.exists():
        pytest.skip("envoy/render.py MISSING: the committed Envoy config cannot be checked against the renderer")
    out = tmp_path / "envoy.yaml"
    res = subprocess.run([str(MANIFESTS / "render-envoy-config.sh"), str(out)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    committed = MANIFESTS / "components" / "envoy-gateway" / "envoy-config" / "envoy.yaml"
    assert out.read_text() == committed.read_text(), (
        "manifests/components/envoy-gateway/envoy-config/envoy.yaml is out of date with envoy/render.py: run manifests/render-envoy-config.sh")
