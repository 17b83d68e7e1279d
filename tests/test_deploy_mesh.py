"""The Istio and Envoy Gateway recipes (scripts/mesh_recipes.py), generated from the rendered
envoy.yaml: each carries the relay's Wasm filter exactly as rendered (only the code's source
differs), with allow_on_headers_stop_iteration, every cluster its plugin configuration names, and
its route; and the Envoy configuration each carries, rebuilt as a standalone bootstrap (the OCI
code swapped for the built .wasm, as the Istio agent or Envoy Gateway's cache does), passes
`envoy --mode validate`. No Istio or Envoy Gateway control plane runs here: what they do with the
manifests (ECDS, the agent's pull, EG's translation and patching) is rebuilt from their sources."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import yaml

from conftest import ROOT, every_dict, register_secret, relay_env, relayctl

sys.path.insert(0, str(ROOT / "scripts"))
import mesh_bootstraps  # noqa: E402
import mesh_recipes  # noqa: E402

IMAGE = "registry.example.com/healthlake-relay:1.0.0"
DIGEST = "0f" * 32
TOKEN = "inbound-token-for-the-mesh-recipe-tests-0123456789"
ROLE = "arn:aws:iam::111122223333:role/healthlake-relay"

# The credential sources the fleet uses (EKS Pod Identity, IRSA with a role on top, EC2 instance
# metadata): together they name every cluster the plugin configuration can name.
SOURCES = {
    "container": {"RELAY_CREDENTIALS_SOURCE": "container",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
                  "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "{token_file}",
                  "AWS_EC2_METADATA_DISABLED": "true"},
    "web-identity+assume-role": {"RELAY_CREDENTIALS_SOURCE": "web-identity",
                                 "AWS_WEB_IDENTITY_TOKEN_FILE": "{token_file}", "AWS_ROLE_ARN": ROLE,
                                 "RELAY_ASSUME_ROLE_ARN": ROLE.replace("healthlake-relay", "healthlake-writer"),
                                 "AWS_EC2_METADATA_DISABLED": "true"},
    # (on loopback: nothing here reaches the real instance metadata service)
    "imds": {"RELAY_CREDENTIALS_SOURCE": "imds", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9"},
}
RECIPES = {"istio": mesh_recipes.istio, "envoy-gateway": mesh_recipes.envoy_gateway}


class Rendered:
    def __init__(self, tmp_path, source: str):
        token_file = tmp_path / "platform-token"
        token_file.write_text("a-projected-service-account-token\n")
        env = {"AWS_REGION": "us-east-1", "HEALTHLAKE_DATASTORE_ID": "0123456789abcdef0123456789abcdef",
               "RELAY_INBOUND_TOKENS": TOKEN, "RELAY_LISTEN_ADDRESS": "0.0.0.0"}
        env.update({k: v.format(token_file=token_file) for k, v in SOURCES[source].items()})
        register_secret(TOKEN)
        self.dir = tmp_path / "config"
        files = relayctl.render_files(relayctl.Settings.from_env(env), self.dir)
        for name, text in files.items():
            relayctl.write_config(text, self.dir, name)
        self.config = yaml.safe_load(files.pop("envoy.yaml"))
        self.sds_files = files
        self.tmp_path = tmp_path

    def envoy_env(self, docs: list[dict]) -> dict[str, str]:
        """Envoy's environment in the recipe's pod: what its proxy container's env sets, the
        tokens from their Secret."""
        env = relay_env()
        del env["AWS_EC2_METADATA_DISABLED"]
        for item in proxy_container(docs)["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                assert item["valueFrom"]["secretKeyRef"] == {
                    "name": "healthlake-relay-inbound-tokens", "key": "tokens", "optional": False}, item
                env[item["name"]] = TOKEN
        return env

    def recipe(self, kind: str, **options) -> list[dict]:
        docs = RECIPES[kind](self.config, IMAGE, sds_files=self.sds_files, **options)
        # As deploy.py writes it, and read back: what is applied is the YAML.
        text = mesh_recipes.to_yaml(docs, mesh_recipes.ISTIO_NOTES if kind == "istio" else mesh_recipes.ENVOY_GATEWAY_NOTES)
        (self.tmp_path / f"{kind}.yaml").write_text(text)
        return [d for d in yaml.safe_load_all(text) if d]

    @property
    def relay_filter(self) -> dict:
        return mesh_recipes.Relay(self.config).wasm

    def validate(self, bootstrap: dict, name: str, docs: list[dict]):
        path = relayctl.write_config(yaml.safe_dump(bootstrap, sort_keys=False), self.tmp_path, name)
        return relayctl.validate_config(path, self.envoy_env(docs))


@pytest.fixture
def rendered(tmp_path):
    return Rendered(tmp_path, "container")


def proxy_container(docs: list[dict]) -> dict:
    """The gateway proxy's container: Istio's injected istio-proxy, or EG's envoy (EnvoyProxy)."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["name"] == "istio-proxy"
            return container
        if doc["kind"] == "EnvoyProxy":
            return doc["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]
    raise AssertionError("no proxy container")


def without_code(wasm: dict) -> dict:
    wasm = copy.deepcopy(wasm)
    del wasm["config"]["vm_config"]["code"]
    return wasm


def kind(docs: list[dict], name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == name]
    return doc


def istio_patches(docs: list[dict], apply_to: str) -> list[dict]:
    return [p for p in kind(docs, "EnvoyFilter")["spec"]["configPatches"] if p["applyTo"] == apply_to]


def eg_filter(bootstrap: dict) -> dict:
    hcm = bootstrap["static_resources"]["listeners"][0]["default_filter_chain"]["filters"][0]["typed_config"]
    (relay,) = [f for f in hcm["http_filters"] if f["name"].startswith("envoy.filters.http.wasm/")]
    return relay


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_embedded_bootstrap_passes_envoy_validate(recipe, source, tmp_path):
    r = Rendered(tmp_path, source)
    # (With the pull options: the Istio agent strips its ISTIO_META_ keys before Envoy.)
    docs = r.recipe(recipe, sha256=DIGEST, pull_policy="Always")
    ((name, bootstrap),) = mesh_bootstraps.embedded_bootstraps(docs)
    assert name == f"{recipe}/healthlake-relay"
    checked = r.validate(bootstrap, "embedded.yaml", docs)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check bites: the same bootstrap with the field misspelt is refused.
    text = yaml.safe_dump(bootstrap, sort_keys=False)
    assert text.count("allow_on_headers_stop_iteration") == 1
    broken = yaml.safe_load(text.replace("allow_on_headers_stop_iteration", "allow_on_header_stop_iteration"))
    checked = r.validate(broken, "broken.yaml", docs)
    assert checked.returncode != 0
    assert "allow_on_header_stop_iteration" in checked.stdout + checked.stderr


def test_the_istio_wasm_config_is_the_rendered_one_with_the_image_as_code(rendered):
    docs = rendered.recipe("istio", sha256=DIGEST, pull_policy="IfNotPresent")
    (ecds,) = istio_patches(docs, "EXTENSION_CONFIG")
    assert ecds["patch"]["operation"] == "ADD"
    wasm = ecds["patch"]["value"]["typed_config"]
    assert wasm["@type"] == mesh_recipes.WASM_TYPE
    rendered_wasm = rendered.relay_filter
    assert wasm["config"]["allow_on_headers_stop_iteration"] is True
    assert wasm["config"]["failure_policy"] == rendered_wasm["config"]["failure_policy"] == "FAIL_RELOAD"
    assert wasm["config"]["configuration"]["value"] == rendered_wasm["config"]["configuration"]["value"]
    # The code: the OCI image, as the Istio agent fetches it (pkg/wasm: http_uri.uri, timeout, sha256).
    assert wasm["config"]["vm_config"]["code"] == {"remote": {
        "http_uri": {"uri": f"oci://{IMAGE}", "cluster": "_", "timeout": "30s"}, "sha256": DIGEST}}
    # The pull policy travels as the agent's ISTIO_META_ key, which the agent strips before Envoy.
    env = wasm["config"]["vm_config"]["environment_variables"]
    assert env["key_values"] == {"ISTIO_META_WASM_IMAGE_PULL_POLICY": "IfNotPresent"}
    as_envoy_gets_it = mesh_bootstraps.local_code(wasm, relayctl.WASM)
    assert without_code(as_envoy_gets_it) == without_code(rendered_wasm)
    # Without a digest, Istio's own "unset" sentinel.
    (ecds,) = istio_patches(rendered.recipe("istio"), "EXTENSION_CONFIG")
    assert ecds["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"]["sha256"] == "nil"
    assert without_code(ecds["patch"]["value"]["typed_config"]) == without_code(rendered_wasm)


def test_the_istio_http_filter_refers_to_the_extension_before_the_router(rendered):
    docs = rendered.recipe("istio")
    (ecds,) = istio_patches(docs, "EXTENSION_CONFIG")
    (http_filter,) = istio_patches(docs, "HTTP_FILTER")
    assert http_filter["patch"]["operation"] == "INSERT_BEFORE"
    listener = http_filter["match"]["listener"]
    assert listener["portNumber"] == 10000
    assert listener["filterChain"]["filter"] == {"name": mesh_recipes.HCM, "subFilter": {"name": "envoy.filters.http.router"}}
    value = http_filter["patch"]["value"]
    assert value["name"] == ecds["patch"]["value"]["name"]
    assert "typed_config" not in value
    discovery = value["config_discovery"]
    assert discovery["config_source"] == {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    # The Wasm filter, or the agent's deny-all stand-in when the pull fails.
    assert discovery["type_urls"] == [mesh_recipes.WASM_TYPE, mesh_recipes.RBAC_TYPE]
    gateway = kind(docs, "Gateway")
    assert gateway["spec"]["servers"][0]["port"]["number"] == 10000
    assert gateway["spec"]["selector"] == kind(docs, "EnvoyFilter")["spec"]["workloadSelector"]["labels"]
    assert kind(docs, "Service")["spec"]["selector"] == gateway["spec"]["selector"]


def test_every_istio_patch_is_well_formed(rendered):
    allowed = {"EXTENSION_CONFIG": {"ADD"}, "HTTP_FILTER": {"INSERT_BEFORE"}, "NETWORK_FILTER": {"MERGE"},
               "LISTENER": {"MERGE"}, "CLUSTER": {"ADD"}, "VIRTUAL_HOST": {"ADD"}}
    docs = rendered.recipe("istio")
    envoy_filter = kind(docs, "EnvoyFilter")
    assert envoy_filter["apiVersion"] == "networking.istio.io/v1alpha3"
    for patch in envoy_filter["spec"]["configPatches"]:
        assert patch["patch"]["operation"] in allowed[patch["applyTo"]], patch
        assert patch["match"]["context"] == "GATEWAY"
        assert isinstance(patch["patch"]["value"], dict) and patch["patch"]["value"]
    (listener,) = istio_patches(docs, "LISTENER")
    assert listener["patch"]["value"] == {"per_connection_buffer_limit_bytes": 9 * 1024 * 1024}
    (hcm,) = istio_patches(docs, "NETWORK_FILTER")
    carried = hcm["patch"]["value"]["typed_config"]
    assert carried["@type"] == mesh_recipes.HCM_TYPE
    assert {"local_reply_config", "access_log", "request_timeout", "stream_idle_timeout"} <= set(carried)
    assert not {"route_config", "http_filters", "stat_prefix"} & set(carried)


def test_the_istio_route_is_the_rendered_one_for_the_relays_hosts(rendered):
    docs = rendered.recipe("istio", hosts=["relay.example.internal"])
    (vhost,) = istio_patches(docs, "VIRTUAL_HOST")
    assert vhost["match"]["routeConfiguration"] == {"portNumber": 10000}
    value = vhost["patch"]["value"]
    rendered_vhost = mesh_recipes.Relay(rendered.config).virtual_host
    assert value["routes"] == rendered_vhost["routes"]
    route = value["routes"][0]
    assert route["route"]["cluster"] == "healthlake" and route["route"]["timeout"] == "60s"
    assert route["route"]["retry_policy"]["retriable_headers"][0]["name"] == "x-amzn-errortype"
    assert route["request_headers_to_remove"] == ["x-forwarded-proto"]
    # Istio's own virtual host has "*"; the relay's names its Service and, since Envoy matches the
    # route again after the relay rewrites :authority, HealthLake's host.
    assert "*" not in value["domains"]
    assert {"healthlake-relay.healthlake-relay.svc.cluster.local", "relay.example.internal",
            "healthlake.us-east-1.amazonaws.com"} <= set(value["domains"])
    with pytest.raises(mesh_recipes.RecipeError):
        rendered.recipe("istio", hosts=["*"])


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_cluster_the_plugin_names_is_added(recipe, source, tmp_path):
    r = Rendered(tmp_path, source)
    plugin = json.loads(r.relay_filter["config"]["configuration"]["value"])
    named = set()
    credentials = plugin["credentials"]
    for key, field in (("web_identity", "sts_cluster"), ("container", "cluster"), ("imds", "cluster")):
        if key in credentials:
            named.add(credentials[key][field])
    if "assume_role" in plugin:
        named.add(plugin["assume_role"]["sts_cluster"])
    assert named, plugin
    expected = {"container": {"container_credentials"}, "imds": {"imds"},
                "web-identity+assume-role": {"sts_web_identity", "sts"}}[source]
    assert named == expected
    docs = r.recipe(recipe)
    if recipe == "istio":
        added = [p["patch"]["value"] for p in istio_patches(docs, "CLUSTER")]
    else:
        added = [p["operation"]["value"] for p in kind(docs, "EnvoyPatchPolicy")["spec"]["jsonPatches"]
                 if p["type"] == mesh_recipes.CLUSTER_TYPE]
    assert {c["name"] for c in added} == named | {"healthlake"}
    # Each as rendered.
    rendered_clusters = {c["name"]: c for c in r.config["static_resources"]["clusters"]}
    for cluster in added:
        assert cluster == rendered_clusters[cluster["name"]]


def test_the_file_based_sds_files_travel_in_a_config_map_mounted_where_the_clusters_read_them(rendered):
    for recipe in sorted(RECIPES):
        docs = rendered.recipe(recipe)
        config_map = kind(docs, "ConfigMap")
        assert config_map["data"] == rendered.sds_files
        text = yaml.safe_dump(docs)
        assert str(rendered.dir / "sds-container-token.yaml") in text
        assert {"name": "relay-sds", "mountPath": str(rendered.dir), "readOnly": True} in proxy_container(docs)["volumeMounts"]
    # The tokens themselves are in no manifest: Envoy reads them from the Secret, in its environment.
    for recipe in sorted(RECIPES):
        assert TOKEN not in (rendered.tmp_path / f"{recipe}.yaml").read_text()
        env = {e["name"]: e for e in proxy_container(rendered.recipe(recipe))["env"]}
        assert env["RELAY_INBOUND_TOKENS"]["valueFrom"]["secretKeyRef"] == {
            "name": "healthlake-relay-inbound-tokens", "key": "tokens", "optional": False}


def test_the_envoy_gateway_patch_makes_the_generated_filter_the_rendered_one(rendered):
    docs = rendered.recipe("envoy-gateway", sha256=DIGEST, pull_policy="IfNotPresent")
    eep = kind(docs, "EnvoyExtensionPolicy")
    (wasm,) = eep["spec"]["wasm"]
    assert wasm["code"] == {"type": "Image", "image": {"url": IMAGE, "sha256": DIGEST}, "pullPolicy": "IfNotPresent"}
    assert wasm["failOpen"] is False
    # What EG generates from the EnvoyExtensionPolicy alone lacks the field ...
    unpatched = eg_filter(mesh_bootstraps.envoy_gateway_bootstrap(docs, relayctl.WASM, patched=False))
    assert unpatched["disabled"] is True
    assert "allow_on_headers_stop_iteration" not in unpatched["typed_config"]["config"]
    # ... and with the EnvoyPatchPolicy applied it is the rendered filter, but for the code.
    ((_, bootstrap),) = mesh_bootstraps.embedded_bootstraps(docs)
    patched = eg_filter(bootstrap)
    assert patched["name"] == "envoy.filters.http.wasm/envoyextensionpolicy/healthlake-relay/healthlake-relay/wasm/0"
    assert patched["disabled"] is False
    rendered_wasm = rendered.relay_filter
    assert patched["typed_config"]["config"]["allow_on_headers_stop_iteration"] is True
    assert patched["typed_config"]["config"]["configuration"]["value"] == rendered_wasm["config"]["configuration"]["value"]
    assert patched["typed_config"]["config"]["failure_policy"] == "FAIL_RELOAD"
    assert without_code(patched["typed_config"]) == without_code(rendered_wasm)
    # The route: the rendered one, first in the Gateway's virtual host.
    hcm = bootstrap["static_resources"]["listeners"][0]["default_filter_chain"]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0] == mesh_recipes.Relay(rendered.config).virtual_host["routes"][0]
    assert routes[1]["name"].startswith("httproute/healthlake-relay/healthlake-relay/rule/0")
    # The listener's buffer above the relay's limit (EG's default is 32 KiB); EG's access log kept.
    assert bootstrap["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] == 9 * 1024 * 1024
    assert [a["name"] for a in hcm["access_log"]][0] == "envoy.access_loggers.file"
    assert hcm["local_reply_config"] == mesh_recipes.Relay(rendered.config).hcm["local_reply_config"]


def test_every_envoy_gateway_patch_is_a_valid_json_patch_on_the_right_resource(rendered):
    for scheme, (listener_name, route_name) in {
            "v1": ("healthlake-relay/healthlake-relay/smile-cdr",) * 2, "v2": ("tcp-10000", "http-10000")}.items():
        docs = rendered.recipe("envoy-gateway", xds_name_scheme=scheme)
        epp = kind(docs, "EnvoyPatchPolicy")
        assert epp["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
        assert epp["spec"]["type"] == "JSONPatch"
        assert epp["spec"]["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": kind(docs, "Gateway")["metadata"]["name"]}
        names = {mesh_recipes.LISTENER_TYPE: {listener_name}, mesh_recipes.ROUTE_TYPE: {route_name},
                 mesh_recipes.CLUSTER_TYPE: {"healthlake", "container_credentials"}}
        for patch in epp["spec"]["jsonPatches"]:
            assert set(patch) == {"type", "name", "operation"}
            assert patch["name"] in names[patch["type"]], patch
            operation = patch["operation"]
            assert operation["op"] in ("add", "remove", "replace", "move", "copy", "test")
            assert set(operation) <= {"op", "path", "jsonPath", "from", "value"}
            assert "path" in operation or "jsonPath" in operation
            assert operation.get("path", "") == "" or operation["path"].startswith("/")
            assert operation.get("jsonPath", "$").startswith("$")
            if operation["op"] in ("add", "replace", "test"):
                assert "value" in operation
            if operation.get("path") == "" and "jsonPath" not in operation:
                # A whole resource: only clusters are added so.
                assert patch["type"] == mesh_recipes.CLUSTER_TYPE and operation["value"]["name"] == patch["name"]
        # Each resource named is one EG generates under that scheme: the patches apply.
        ((_, bootstrap),) = mesh_bootstraps.embedded_bootstraps(docs)
        assert bootstrap["static_resources"]["listeners"][0]["name"] == listener_name
        # ... and not under the other.
        other = "v2" if scheme == "v1" else "v1"
        with pytest.raises(mesh_recipes.RecipeError, match="not found"):
            mesh_bootstraps.envoy_gateway_bootstrap(docs, relayctl.WASM, scheme=other)


def test_envoy_gateway_without_the_patch_refuses_every_request_instead_of_hanging(rendered):
    # EnvoyPatchPolicy not enabled: the filter EG generates carries the placeholder configuration,
    # which the relay refuses, so Envoy does not start it (fail closed) and says why.
    docs = rendered.recipe("envoy-gateway")
    bootstrap = mesh_bootstraps.envoy_gateway_bootstrap(docs, relayctl.WASM, patched=False)
    checked = rendered.validate(bootstrap, "unpatched.yaml", docs)
    assert checked.returncode != 0
    assert mesh_recipes.EG_SENTINEL_FIELD in checked.stdout + checked.stderr


def test_envoy_gateway_never_runs_the_relay_without_the_field_whichever_patch_is_refused(rendered, tmp_path):
    # EG applies each patch on its own and goes on past a refused one (an EG whose Envoy API lacks
    # allow_on_headers_stop_iteration refuses exactly that one). Whichever single patch it refuses,
    # the relay either runs with the field or does not start at all (the sentinel stays): never
    # without it, which would hang every write.
    docs = rendered.recipe("envoy-gateway")
    epp = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    assert any(p["operation"].get("path", "").endswith("/allow_on_headers_stop_iteration")
               for p in epp["spec"]["jsonPatches"])
    for index, patch in enumerate(epp["spec"]["jsonPatches"]):
        if patch["type"] != mesh_recipes.LISTENER_TYPE:
            continue
        bootstrap = mesh_bootstraps.envoy_gateway_bootstrap(docs, relayctl.WASM, refused=frozenset({index}))
        (wasm,) = [f["typed_config"]["config"] for f in every_dict(bootstrap)
                   if f.get("name", "").startswith("envoy.filters.http.wasm/")]
        runs = mesh_recipes.EG_SENTINEL_FIELD not in wasm["configuration"]["value"]
        if runs:
            assert wasm.get("allow_on_headers_stop_iteration") is True, (index, patch)
        elif patch["operation"].get("path", "").endswith("/allow_on_headers_stop_iteration"):
            # The case that matters, through Envoy: it refuses to start the relay, naming why.
            checked = rendered.validate(bootstrap, f"refused-{index}.yaml", docs)
            assert checked.returncode != 0 and mesh_recipes.EG_SENTINEL_FIELD in checked.stdout + checked.stderr


def test_the_json_patch_engine_follows_rfc_6902_and_egs_json_path():
    doc = {"a": {"filters": [{"name": "x", "v": 1}, {"name": "y"}, {"name": "x"}]}, "l": [1, 2]}
    assert mesh_bootstraps.json_path_pointers(doc, "$..filters[?(@.name=='x')]") == ["/a/filters/0", "/a/filters/2"]
    mesh_bootstraps.apply_operation(doc, {"op": "add", "jsonPath": "$..filters[?(@.name=='x')]", "path": "/w/z", "value": 3})
    assert doc["a"]["filters"][0]["w"] == {"z": 3} and doc["a"]["filters"][2]["w"] == {"z": 3}
    mesh_bootstraps.apply_operation(doc, {"op": "add", "path": "/l/0", "value": 0})
    mesh_bootstraps.apply_operation(doc, {"op": "add", "path": "/l/-", "value": 3})
    assert doc["l"] == [0, 1, 2, 3]
    mesh_bootstraps.apply_operation(doc, {"op": "replace", "path": "/a/filters/0/v", "value": 2})
    assert doc["a"]["filters"][0]["v"] == 2
    for bad in ({"op": "replace", "path": "/a/nothing", "value": 1},
                {"op": "remove", "path": "/l/9"},
                {"op": "add", "jsonPath": "$..filters[?(@.name=='none')]", "path": "/v", "value": 1}):
        with pytest.raises(mesh_recipes.RecipeError):
            mesh_bootstraps.apply_operation(copy.deepcopy(doc), bad)


def test_bad_options_are_refused(rendered):
    for recipe in sorted(RECIPES):
        with pytest.raises(mesh_recipes.RecipeError, match="sha256"):
            rendered.recipe(recipe, sha256="latest")
        with pytest.raises(mesh_recipes.RecipeError, match="pull_policy"):
            rendered.recipe(recipe, pull_policy="Never")
    with pytest.raises(mesh_recipes.RecipeError, match="xds_name_scheme"):
        rendered.recipe("envoy-gateway", xds_name_scheme="v3")
    # A configuration whose filter would fail open is not carried anywhere.
    config = copy.deepcopy(rendered.config)
    mesh_recipes.Relay(config)  # as rendered: fine
    for listener in config["static_resources"]["listeners"]:
        for f in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]:
            if f["name"] == "healthlake_relay":
                f["typed_config"]["config"]["failure_policy"] = "FAIL_OPEN"
    with pytest.raises(mesh_recipes.RecipeError, match="fail open"):
        mesh_recipes.istio(config, IMAGE, sds_files=rendered.sds_files)


def test_a_registry_pull_secret_reaches_the_puller(rendered):
    # Istio: the agent's default keychain reads DOCKER_CONFIG (istiod fills the pull secret in only
    # for WasmPlugin); Envoy Gateway: the EnvoyExtensionPolicy's pullSecretRef.
    docs = rendered.recipe("istio", pull_secret="registry-credentials")
    container = proxy_container(docs)
    assert {"name": "DOCKER_CONFIG", "value": "/etc/healthlake-relay/docker"} in container["env"]
    assert {"name": "wasm-pull-secret", "mountPath": "/etc/healthlake-relay/docker", "readOnly": True} in container["volumeMounts"]
    volumes = kind(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "wasm-pull-secret", "secret": {"secretName": "registry-credentials", "items": [
        {"key": ".dockerconfigjson", "path": "config.json"}]}} in volumes
    (ecds,) = istio_patches(docs, "EXTENSION_CONFIG")
    assert "ISTIO_META_WASM_IMAGE_PULL_SECRET" not in json.dumps(ecds)
    docs = rendered.recipe("envoy-gateway", pull_secret="registry-credentials")
    (wasm,) = kind(docs, "EnvoyExtensionPolicy")["spec"]["wasm"]
    assert wasm["code"]["image"]["pullSecretRef"] == {"name": "registry-credentials"}


def test_the_envoy_gateway_service_stays_inside_the_cluster(rendered):
    # EG's default Service is a LoadBalancer (on EKS possibly internet-facing): plain HTTP with
    # bearer tokens must not leave the cluster.
    (proxy,) = [d for d in rendered.recipe("envoy-gateway") if d["kind"] == "EnvoyProxy"]
    assert proxy["spec"]["provider"]["kubernetes"]["envoyService"]["type"] == "ClusterIP"
    (service,) = [d for d in rendered.recipe("istio") if d["kind"] == "Service"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_a_configuration_with_mtls_inbound_auth_is_not_carried(rendered):
    # The listener's TLS stays with the gateway: with mtls the relay would refuse every write.
    config = copy.deepcopy(rendered.config)
    changed = 0
    for f in every_dict(config):
        if isinstance(f.get("config"), dict) and f["config"].get("root_id") == "healthlake_relay":
            changed += 1
            plugin = json.loads(f["config"]["configuration"]["value"])
            plugin["inbound_auth"] = "mtls"
            f["config"]["configuration"]["value"] = json.dumps(plugin)
    assert changed == 1
    with pytest.raises(mesh_recipes.RecipeError, match="mtls"):
        mesh_recipes.Relay(config)


def test_the_mesh_recipes_run_one_gateway_pod(rendered):
    # The version guard is per Envoy and the recipes have no front tier with resource affinity:
    # a second gateway pod could forward a late older version the first one would hold back.
    for recipe in sorted(RECIPES):
        docs = rendered.recipe(recipe)
        replicas = [d["spec"]["replicas"] for d in docs if d["kind"] == "Deployment"] + \
            [d["spec"]["provider"]["kubernetes"]["envoyDeployment"]["replicas"] for d in docs if d["kind"] == "EnvoyProxy"]
        assert replicas == [1], (recipe, replicas)
        with pytest.raises(mesh_recipes.RecipeError, match="one gateway pod"):
            rendered.recipe(recipe, replicas=2)
