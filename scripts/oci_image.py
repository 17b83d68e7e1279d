#!/usr/bin/env python3
"""The built filter as a Wasm OCI image, written as an OCI image layout without Docker (`make image`).

    oci_image.py [--wasm FILE] [--out DIR]

The image is the "compat" variant of the Wasm image specification (solo-io/wasm, spec-compat.md),
the one Istio's WasmPlugin and Envoy Gateway fetch: a plain OCI image of exactly one
`application/vnd.oci.image.layer.v1.tar+gzip` layer, a tar holding only `plugin.wasm`, and the
manifest annotation `module.wasm.image/variant=compat`. Kubernetes image volumes can mount it too
(containerd unpacks it on linux/amd64 nodes: it unpacks only images whose config names the node's
platform).

The layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md) is tagged
with the relay's version from Cargo.toml and is reproducible: the same .wasm gives the same bytes
in every blob, so the same manifest digest (no timestamps, owners or file names anywhere; JSON
with sorted keys and no spaces). Push it with skopeo: the command is printed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "healthlake_relay.wasm"
DEFAULT_OUT = ROOT / "build" / "oci"
IMAGE_NAME = "healthlake-relay"

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT_ANNOTATION = "module.wasm.image/variant"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
PLUGIN_FILE = "plugin.wasm"
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}


def canonical_json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def package() -> dict:
    """[package] of the relay's Cargo.toml: its name, version and (if set) repository."""
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]


def layer_tar(wasm: bytes) -> bytes:
    """A tar of one regular file, plugin.wasm: read-only, owned by root, dated 1970; no directory
    entry, no user or group names. USTAR, so that no PAX header (which could carry times) is written."""
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(wasm)
    info.mode = 0o444
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(wasm))
    return out.getvalue()


def image_blobs(wasm: bytes, pkg: dict) -> tuple[bytes, dict[str, bytes]]:
    """The manifest and every blob of the image, by digest (the manifest is one of them)."""
    tar = layer_tar(wasm)
    # mtime=0 and no file name in the gzip header: the same tar always gives the same bytes (with
    # the same zlib; another zlib may compress differently, which changes the digests, not the image).
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    # The smallest valid image config. Platform linux/amd64 rather than "wasm": containerd (and so
    # Kubernetes image volumes) unpacks only layers of an image whose config names a platform the
    # node runs; Istio and Envoy Gateway read the layer and ignore the config. No "created": a
    # timestamp would change the digest at every build.
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
    })
    annotations = {
        VARIANT_ANNOTATION: "compat",
        "org.opencontainers.image.title": pkg["name"],
        "org.opencontainers.image.version": pkg["version"],
    }
    if pkg.get("repository"):
        annotations["org.opencontainers.image.source"] = pkg["repository"]
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest(layer), "size": len(layer)}],
        "annotations": annotations,
    })
    return manifest, {digest(blob): blob for blob in (layer, config, manifest)}


def clear_output(out: Path) -> None:
    """Removes a previous layout at `out`; refuses to touch anything that is not one."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SystemExit(f"{out} exists and is not a directory: not removing it")
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        layout = json.loads((out / "oci-layout").read_text())
    except (OSError, ValueError):
        layout = None
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise SystemExit(f"{out} is not empty and not an OCI image layout: not removing it")
    shutil.rmtree(out)


def write_layout(wasm: bytes, out: Path, pkg: dict) -> str:
    """Writes the image layout at `out` (replacing a previous one) and returns the manifest digest."""
    manifest, blobs = image_blobs(wasm, pkg)
    clear_output(out)
    (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    # oci-layout first and index.json last: an interrupted run leaves a directory that the next
    # run recognises as a layout (and replaces) but that no tool reads as a complete image.
    (out / "oci-layout").write_bytes(canonical_json(OCI_LAYOUT))
    for name, blob in blobs.items():
        (out / "blobs" / "sha256" / name.removeprefix("sha256:")).write_bytes(blob)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": digest(manifest),
            "size": len(manifest),
            "annotations": {REF_NAME_ANNOTATION: pkg["version"]},
        }],
    }
    (out / "index.json").write_bytes(canonical_json(index))
    return digest(manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM, help="the filter (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the layout's directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.wasm.is_file():
        raise SystemExit(f"{args.wasm} not found: run `make build` first")
    pkg = package()
    version = pkg["version"]
    manifest_digest = write_layout(args.wasm.read_bytes(), args.out, pkg)
    try:  # build/oci rather than /work/main/build/oci when run from the project's root
        shown = args.out.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = args.out
    print(f"image:    {shown} (OCI image layout), reference {version}")
    print(f"manifest: {manifest_digest}")
    print(f"push:     skopeo copy oci:{shown}:{version} docker://REGISTRY/{IMAGE_NAME}:{version}")
    print(f"pin:      REGISTRY/{IMAGE_NAME}@{manifest_digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
