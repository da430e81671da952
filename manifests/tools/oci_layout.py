#!/usr/bin/env python3
"""Write the plugin's .wasm as an OCI image layout (a directory), without a container engine.

The image is the one `docker build -f manifests/images/plugin.Dockerfile` would make: a single
layer, a gzip-compressed tar holding `plugin.wasm` at its root, with an OCI image config whose
platform is wasi/wasm. That is the "Docker/OCI image" variant of the Wasm image specification:
Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy both take the file named
`plugin.wasm` from the single layer, and Google Cloud Service Extensions (GCPWasmPlugin,
`gcloud service-extensions wasm-plugins`) expects the same shape. The other variant (layer media
type application/vnd.module.wasm.content.layer.v1+wasm) is understood by Istio and Envoy Gateway
only, so we do not produce it.

Output is byte-for-byte reproducible: fixed mtime (SOURCE_DATE_EPOCH, default 0), uid/gid 0,
no user names, gzip header with mtime 0 and no file name, JSON with sorted keys.
Copy it to a registry with `skopeo copy oci:DIR:TAG docker://REGISTRY/IMAGE:TAG` or
`crane push DIR REGISTRY/IMAGE:TAG` (neither needs a Docker engine).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

OCI_LAYOUT_VERSION = "1.0.0"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# The file name inside the layer that Istio, Envoy Gateway and Service Extensions look for.
WASM_NAME = "plugin.wasm"
WASM_MAGIC = b"\0asm"
# A module bigger than this is not a plugin build but a mistake (Service Extensions caps at 16 MiB per VM).
MAX_WASM_BYTES = 64 * 1024 * 1024


class LayoutError(Exception):
    """A wrong input or an invalid layout, with a message saying what was expected."""


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes, mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(WASM_NAME)
        info.size = len(wasm)
        info.mtime = mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no filename: the compressed bytes depend only on the input.
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def write_blob(out: Path, data: bytes) -> dict:
    digest = sha256(data)
    blob = out / "blobs" / "sha256" / digest.split(":", 1)[1]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def build(wasm_path: Path, out: Path, tag: str, source: str, revision: str, mtime: int) -> dict:
    """Writes the layout and returns the manifest descriptor."""
    try:
        wasm = wasm_path.read_bytes()
    except OSError as e:
        raise LayoutError(f"cannot read the plugin module {wasm_path}: {e.strerror}") from e
    if not wasm.startswith(WASM_MAGIC):
        raise LayoutError(f"{wasm_path} is not a WebAssembly module (expected the magic bytes \\0asm)")
    if len(wasm) > MAX_WASM_BYTES:
        raise LayoutError(f"{wasm_path} is {len(wasm)} bytes, over the {MAX_WASM_BYTES}-byte limit")
    tar = layer_tar(wasm, mtime)
    layer = gzip_bytes(tar)
    created = "1970-01-01T00:00:00Z" if mtime == 0 else _rfc3339(mtime)
    wasm_digest = sha256(wasm)
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "created": created,
        "config": {"Labels": {"org.opencontainers.image.source": source, "wasm.module.sha256": wasm_digest}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": created, "created_by": "manifests/tools/oci_layout.py: add plugin.wasm"}],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    config_desc = {"mediaType": MEDIA_CONFIG, **write_blob(out, canonical_json(config))}
    layer_desc = {
        "mediaType": MEDIA_LAYER,
        **write_blob(out, layer),
        "annotations": {"org.opencontainers.image.title": WASM_NAME},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
        "annotations": {
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.source": source,
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.title": "wasm-inference-scheduler",
        },
    }
    manifest_desc = {
        "mediaType": MEDIA_MANIFEST,
        **write_blob(out, canonical_json(manifest)),
        "platform": {"architecture": "wasm", "os": "wasip1"},
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest_desc]}
    (out / "index.json").write_bytes(canonical_json(index))
    # Drop blobs of earlier builds so the directory holds exactly one image.
    wanted = {d["digest"].split(":", 1)[1] for d in (config_desc, layer_desc, manifest_desc)}
    for blob in (out / "blobs" / "sha256").iterdir():
        if blob.name not in wanted:
            blob.unlink()
    (out / (WASM_NAME + ".sha256")).write_text(f"{wasm_digest.split(':', 1)[1]}  {WASM_NAME}\n")
    return manifest_desc


def _rfc3339(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_blob(layout: Path, desc: dict, what: str) -> bytes:
    digest = desc.get("digest", "")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise LayoutError(f"{what}: digest {digest!r} is not sha256:<64 hex>")
    path = layout / "blobs" / "sha256" / digest[7:]
    if not path.is_file():
        raise LayoutError(f"{what}: blob {digest} missing from {layout}/blobs/sha256")
    data = path.read_bytes()
    if sha256(data) != digest:
        raise LayoutError(f"{what}: blob content hashes to {sha256(data)}, descriptor says {digest}")
    if desc.get("size") != len(data):
        raise LayoutError(f"{what}: descriptor size {desc.get('size')} but blob has {len(data)} bytes")
    return data


def verify(layout: Path) -> bytes:
    """Checks the layout the way a registry client would; returns the plugin.wasm bytes."""
    try:
        marker = json.loads((layout / "oci-layout").read_text())
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise LayoutError(f"{layout}: oci-layout or index.json missing or not JSON ({e})") from e
    if marker.get("imageLayoutVersion") != OCI_LAYOUT_VERSION:
        raise LayoutError(f"oci-layout: imageLayoutVersion {marker.get('imageLayoutVersion')!r}, expected 1.0.0")
    if index.get("schemaVersion") != 2 or index.get("mediaType") != MEDIA_INDEX:
        raise LayoutError("index.json: expected schemaVersion 2 and mediaType " + MEDIA_INDEX)
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise LayoutError(f"index.json: expected exactly one manifest, found {len(manifests)}")
    mdesc = manifests[0]
    if mdesc.get("mediaType") != MEDIA_MANIFEST:
        raise LayoutError(f"index.json manifests[0].mediaType {mdesc.get('mediaType')!r}, expected {MEDIA_MANIFEST}")
    manifest = json.loads(_read_blob(layout, mdesc, "index.json manifests[0]"))
    if manifest.get("schemaVersion") != 2 or manifest.get("mediaType") != MEDIA_MANIFEST:
        raise LayoutError("manifest: expected schemaVersion 2 and mediaType " + MEDIA_MANIFEST)
    cdesc = manifest.get("config") or {}
    if cdesc.get("mediaType") != MEDIA_CONFIG:
        raise LayoutError(f"manifest config.mediaType {cdesc.get('mediaType')!r}, expected {MEDIA_CONFIG}")
    config = json.loads(_read_blob(layout, cdesc, "manifest config"))
    layers = manifest.get("layers") or []
    if len(layers) != 1 or layers[0].get("mediaType") != MEDIA_LAYER:
        raise LayoutError(f"manifest: expected one layer of mediaType {MEDIA_LAYER}")
    layer = _read_blob(layout, layers[0], "manifest layers[0]")
    tar_bytes = gzip.decompress(layer)
    diff_ids = config.get("rootfs", {}).get("diff_ids")
    if diff_ids != [sha256(tar_bytes)]:
        raise LayoutError(f"config rootfs.diff_ids {diff_ids} do not match the layer's uncompressed digest")
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = tar.getnames()
        if names != [WASM_NAME]:
            raise LayoutError(f"layer holds {names}, expected exactly [{WASM_NAME!r}]")
        member = tar.extractfile(WASM_NAME)
        wasm = member.read() if member else b""
    if not wasm.startswith(WASM_MAGIC):
        raise LayoutError("layer's plugin.wasm is not a WebAssembly module")
    return wasm


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the layout")
    b.add_argument("--wasm", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--tag", default="latest-build")
    b.add_argument("--source", default="https://github.com/wasm-inference-scheduler/wasm-inference-scheduler")
    b.add_argument("--revision", default="unknown")
    v = sub.add_parser("verify", help="check a layout")
    v.add_argument("layout", type=Path)
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
            desc = build(a.wasm, a.out, a.tag, a.source, a.revision, mtime)
            verify(a.out)
            print(f"{a.out}: {desc['digest']} ({a.tag})")
        else:
            wasm = verify(a.layout)
            print(f"{a.layout}: valid, plugin.wasm {sha256(wasm)}")
    except (LayoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
