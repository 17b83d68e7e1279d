"""`scripts/oci_image.py` (`make image`): the built filter as a "compat" Wasm OCI image.

Proven with the real built .wasm and independent tools from Debian (`make oci-deps` installs
them; missing tools fail the tests, they are not skipped): the layout is reproducible; skopeo and
umoci read it; and it goes through a real registry (Debian's docker-registry on loopback) and
back, by tag and by digest, with plugin.wasm byte-identical to the build every time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import relayctl  # noqa: E402

SCRIPT = ROOT / "scripts" / "oci_image.py"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "healthlake_relay.wasm"
VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
REPOSITORY = "healthlake-relay"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# skopeo copy refuses to run without a signature policy; this one, not the system's, is used.
POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing: run `make oci-deps` (make test does)")
    return path


def run(*cmd: str | Path) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def build(out: Path) -> str:
    """Runs the script into `out` and returns the manifest digest it printed."""
    if not WASM.is_file():
        pytest.fail(f"{WASM} is missing: run `make build` (make test does)")
    printed = run(sys.executable, SCRIPT, "--wasm", WASM, "--out", out)
    return next(line.split()[1] for line in printed.splitlines() if line.startswith("manifest:"))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert sha256(data) == digest
    return data


def tagged_manifest(layout: Path, ref: str = VERSION) -> tuple[str, dict]:
    """The digest and content of the manifest tagged `ref` in the layout's index.json."""
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"]
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
    assert entry["mediaType"] == MANIFEST_TYPE
    return entry["digest"], json.loads(blob(layout, entry["digest"]))


def plugin_of(layer: bytes) -> bytes:
    """plugin.wasm from a compat layer, which must hold exactly that one regular file."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        members = tar.getmembers()
        assert [(m.name, m.isreg()) for m in members] == [("plugin.wasm", True)]
        return tar.extractfile(members[0]).read()


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("oci") / "layout"
    return out, build(out)


def test_two_builds_are_byte_identical(layout, tmp_path):
    out, digest = layout
    again = tmp_path / "again"
    assert build(again) == digest
    assert files(again) == files(out)
    # oci-layout, index.json and three blobs (manifest, config, layer), each named by its digest.
    assert len(files(out)) == 5
    for path in (out / "blobs" / "sha256").iterdir():
        blob(out, "sha256:" + path.name)


def test_the_layout_is_the_compat_variant(layout):
    out, digest = layout
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    tagged, manifest = tagged_manifest(out)
    assert tagged == digest
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MANIFEST_TYPE
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["annotations"]["org.opencontainers.image.version"] == VERSION
    [layer] = manifest["layers"]
    assert layer["mediaType"] == LAYER_TYPE
    compressed = blob(out, layer["digest"])
    assert len(compressed) == layer["size"]
    # The gzip header carries no time (bytes 4-7) and no file name (flag 0x08).
    assert compressed[4:8] == b"\0\0\0\0" and not compressed[3] & 0x08
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(compressed))) as tar:
        [member] = tar.getmembers()
        assert (member.mode, member.uid, member.gid, member.uname, member.gname, member.mtime) == (
            0o444, 0, 0, "", "", 0)
    assert plugin_of(compressed) == WASM.read_bytes()
    config = json.loads(blob(out, manifest["config"]["digest"]))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(gzip.decompress(compressed))]}
    assert "created" not in config


def test_replaces_a_layout_and_nothing_else(tmp_path):
    out = tmp_path / "layout"
    build(out)
    stale = out / "blobs" / "sha256" / ("0" * 64)
    stale.write_bytes(b"from an older build")
    build(out)
    assert not stale.exists()
    # Not an OCI layout: refused, left as it was.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    done = subprocess.run([sys.executable, SCRIPT, "--wasm", WASM, "--out", other], capture_output=True, text=True)
    assert done.returncode != 0 and "not an OCI image layout" in done.stderr
    assert files(other) == {"notes.txt": b"keep me"}


def test_skopeo_and_umoci_read_it(layout, tmp_path):
    out, digest = layout
    skopeo = tool("skopeo")
    raw = run(skopeo, "inspect", "--raw", f"oci:{out}:{VERSION}").encode()
    assert sha256(raw) == digest
    manifest = json.loads(raw)
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_TYPE]
    # The pinning command the README gives.
    assert run(skopeo, "inspect", "--format", "{{.Digest}}", f"oci:{out}:{VERSION}").strip() == digest

    bundle = tmp_path / "bundle"
    run(tool("umoci"), "unpack", "--rootless", "--image", f"{out}:{VERSION}", bundle)
    rootfs = bundle / "rootfs"
    assert [str(p.relative_to(rootfs)) for p in rootfs.rglob("*")] == ["plugin.wasm"]
    assert (rootfs / "plugin.wasm").read_bytes() == WASM.read_bytes()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry (distribution 2.8) on a free loopback port, storage in tmp, no auth."""
    binary = tool("docker-registry")
    workdir = tmp_path_factory.mktemp("registry")
    port = relayctl.free_port()
    config = workdir / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))
    log = relayctl.private_log(workdir / "registry.log")
    # REGISTRY_* variables would override the configuration file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    service = relayctl.Service("docker-registry", proc, workdir, [log])
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not service.alive():
            raise RuntimeError(f"docker-registry exited with {proc.returncode}; see {workdir / 'registry.log'}")
        try:
            return relayctl.http_get(url + "/v2/")[0] == 200
        except OSError:  # not listening yet
            return False

    try:
        relayctl.wait_until(ready, 30, "docker-registry")
        yield f"127.0.0.1:{port}"
    finally:
        service.stop()


def get(url: str, accept: str = "*/*") -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read(), {k.lower(): v for k, v in response.headers.items()}


def test_round_trip_through_a_registry(layout, registry, tmp_path):
    out, digest = layout
    skopeo = tool("skopeo")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    remote = f"docker://{registry}/{REPOSITORY}"
    run(skopeo, "--policy", policy, "copy", "--dest-tls-verify=false", f"oci:{out}:{VERSION}", f"{remote}:{VERSION}")

    # What a fetcher (Istio's, Envoy Gateway's) gets over HTTP: the same manifest, the same digest.
    api = f"http://{registry}/v2/{REPOSITORY}"
    raw, headers = get(f"{api}/manifests/{VERSION}", accept=MANIFEST_TYPE)
    assert headers["docker-content-digest"] == digest and sha256(raw) == digest
    assert headers["content-type"] == MANIFEST_TYPE
    [layer] = json.loads(raw)["layers"]
    compressed, _ = get(f"{api}/blobs/{layer['digest']}")
    assert sha256(compressed) == layer["digest"]
    assert plugin_of(compressed) == WASM.read_bytes()

    # Pulled back by digest (how a deployment pins it) into a fresh layout.
    back = tmp_path / "back"
    run(skopeo, "--policy", policy, "copy", "--src-tls-verify=false", f"{remote}@{digest}", f"oci:{back}:{VERSION}")
    tagged, manifest = tagged_manifest(back)
    assert tagged == digest
    assert plugin_of(blob(back, manifest["layers"][0]["digest"])) == WASM.read_bytes()
