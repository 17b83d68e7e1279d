"""The fleet deployment's Envoy configurations (deploy/, written by scripts/deploy.py from envoy.yaml):
what is committed is what the generator renders, and each passes `envoy --mode validate` with the
built .wasm, as it will be mounted in the pod."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, relay_env, relayctl

sys.path.insert(0, str(ROOT / "scripts"))
import deploy  # noqa: E402

CONFIGS = {
    "pod-identity": "kubernetes",
    "irsa": "kubernetes/components/irsa",
}


def test_the_committed_deployment_is_what_the_generator_renders(tmp_path):
    # The shipped example ignores the caller's settings (here a region).
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--check"],
                           capture_output=True, text=True, env=relay_env(AWS_REGION="eu-west-1"))
    assert check.returncode == 0, check.stderr
    # ... and the check bites: a generated file edited by hand (in a copy) is reported.
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    target = copy / "kubernetes" / "envoy.yaml"
    target.write_text(target.read_text().replace("healthlake.us-east-1.amazonaws.com", "healthlake.example.com"))
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--check", "--dir", str(copy)],
                           capture_output=True, text=True)
    assert check.returncode == 1 and "kubernetes/envoy.yaml is not what" in check.stderr, check.stderr


def pod_paths_here(text: str, tmp_path) -> str:
    """The pod's mount points replaced by local stand-ins: the config directory, the .wasm, the
    platform's token files (each a real, non-empty file)."""
    for token_file in (deploy.POD_IDENTITY_TOKEN_FILE, deploy.IRSA_TOKEN_FILE):
        local = tmp_path / token_file.rsplit("/", 1)[1]
        local.write_text("a-projected-service-account-token\n")
        text = text.replace(token_file, str(local))
    text = text.replace(str(deploy.POD_CONFIG_DIR), str(tmp_path))
    return text.replace(deploy.POD_WASM, str(relayctl.WASM))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_generated_configuration_passes_envoy_validate(name, tmp_path):
    where = ROOT / "deploy" / CONFIGS[name]
    for path in where.glob("*.yaml"):
        if path.name.startswith("sds-") or path.name == "envoy.yaml":
            (tmp_path / path.name).write_text(pod_paths_here(path.read_text(), tmp_path))
    config = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
    names = {c["name"] for c in config["static_resources"]["clusters"]}
    expected = {"pod-identity": "container_credentials", "irsa": "sts_web_identity"}[name]
    assert expected in names and "healthlake" in names and "imds" not in names, names
    listeners = {item["name"]: item for item in config["static_resources"]["listeners"]}
    assert set(listeners) == {"smile_cdr", "health"}
    assert listeners["smile_cdr"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 10000}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    env = relay_env(RELAY_INBOUND_TOKENS="a-token-from-the-kubernetes-secret")
    checked = relayctl.validate_config(tmp_path / "envoy.yaml", env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check bites: the same configuration with a misspelt field is refused.
    broken = (tmp_path / "envoy.yaml").read_text().replace("allow_on_headers_stop_iteration",
                                                           "allow_on_header_stop_iteration", 1)
    (tmp_path / "broken.yaml").write_text(broken)
    assert relayctl.validate_config(tmp_path / "broken.yaml", env).returncode != 0


def test_the_fleet_configuration_refuses_to_run_without_inbound_tokens(tmp_path):
    # The Secret's tokens reach the plugin through Envoy's environment: without them it must not
    # start (nobody could write, and it must never run open on a pod address).
    where = ROOT / "deploy" / "kubernetes"
    for path in where.glob("*.yaml"):
        (tmp_path / path.name).write_text(pod_paths_here(path.read_text(), tmp_path))
    checked = relayctl.validate_config(tmp_path / "envoy.yaml", relay_env())
    assert checked.returncode != 0
    assert "no inbound token" in checked.stdout + checked.stderr


def test_a_deployment_for_your_values_is_written_elsewhere_complete(tmp_path):
    out = tmp_path / "mine"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(out)],
                         capture_output=True, text=True,
                         env=relay_env(AWS_REGION="eu-west-1", HEALTHLAKE_DATASTORE_ID="f" * 32))
    assert run.returncode == 0, run.stderr
    text = (out / "kubernetes" / "envoy.yaml").read_text()
    assert "healthlake.eu-west-1.amazonaws.com" in text and "f" * 32 in text
    # The hand-written manifests come along, so that the directory deploys as it is.
    shipped = {p.relative_to(ROOT / "deploy") for p in (ROOT / "deploy").rglob("*") if p.is_file()}
    written = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert shipped <= written
    # A bad value is named, as make run names it.
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=relay_env(AWS_REGION="eu west"))
    assert bad.returncode == 2 and "AWS_REGION" in bad.stderr


@pytest.mark.parametrize("recipe", ["istio/healthlake-relay.yaml", "envoy-gateway/healthlake-relay.yaml"])
def test_the_shipped_mesh_recipes_carry_envoy_configurations_envoy_accepts(recipe, tmp_path):
    import mesh_bootstraps

    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / recipe).read_text()) if d]
    # The SDS files the recipe mounts (a ConfigMap), where the rendered configuration expects them.
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for name, text in doc["data"].items():
                (tmp_path / name).write_text(pod_paths_here(text, tmp_path))
    bootstraps = mesh_bootstraps.embedded_bootstraps(docs)
    assert len(bootstraps) == 1
    for name, bootstrap in bootstraps:
        path = tmp_path / "bootstrap.yaml"
        path.write_text(pod_paths_here(yaml.safe_dump(bootstrap, sort_keys=False), tmp_path))
        text = path.read_text()
        assert "allow_on_headers_stop_iteration: true" in text, name
        checked = relayctl.validate_config(path, relay_env(RELAY_INBOUND_TOKENS="a-token-from-the-kubernetes-secret"))
        assert checked.returncode == 0, (name, checked.stdout + checked.stderr)


def test_the_mesh_recipes_follow_the_namespace_and_envoy_gateways_name_scheme(tmp_path):
    out = tmp_path / "mine"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(out)],
                         capture_output=True, text=True,
                         env=relay_env(RELAY_NAMESPACE="fhir-relay", RELAY_ENVOY_GATEWAY_XDS_NAME_SCHEME="v2"))
    assert run.returncode == 0, run.stderr
    docs = [d for d in yaml.safe_load_all((out / "envoy-gateway" / "healthlake-relay.yaml").read_text()) if d]
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "ConfigMap"} == {"fhir-relay"}
    (epp,) = [d for d in docs if d["kind"] == "EnvoyPatchPolicy"]
    listeners = {p["name"] for p in epp["spec"]["jsonPatches"] if p["type"].endswith("Listener")}
    assert listeners == {"tcp-10000"}, listeners
    istio = [d for d in yaml.safe_load_all((out / "istio" / "healthlake-relay.yaml").read_text()) if d]
    assert {d["metadata"]["namespace"] for d in istio} == {"fhir-relay"}
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=relay_env(RELAY_ENVOY_GATEWAY_XDS_NAME_SCHEME="v3"))
    assert bad.returncode == 2 and "xds_name_scheme" in bad.stderr


def test_your_image_reaches_every_manifest_pinned_by_its_digest(tmp_path):
    digest = "ab" * 32
    out = tmp_path / "mine"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(out)],
                         capture_output=True, text=True,
                         env=relay_env(RELAY_IMAGE="registry.internal/relay/healthlake-relay:0.1.0",
                                       RELAY_IMAGE_DIGEST=f"sha256:{digest}"))
    assert run.returncode == 0, run.stderr
    pinned = f"registry.internal/relay/healthlake-relay:0.1.0@sha256:{digest}"
    deployment = yaml.safe_load((out / "kubernetes" / "deployment.yaml").read_text())
    (wasm,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "wasm"]
    assert wasm["image"]["reference"] == pinned
    patch = yaml.safe_load((out / "kubernetes" / "components" / "wasm-init-container" / "deployment-patch.yaml").read_text())
    (fetch,) = [c for c in patch["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch-wasm"]
    assert pinned in fetch["args"]
    for recipe in ("istio", "envoy-gateway"):
        text = (out / recipe / "healthlake-relay.yaml").read_text()
        assert "registry.internal/relay/healthlake-relay:0.1.0" in text and digest in text, recipe
        assert "registry.example.com" not in text, recipe
