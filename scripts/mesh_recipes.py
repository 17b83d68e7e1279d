"""The relay for Istio and Envoy Gateway users: manifests generated from the rendered envoy.yaml.

Neither Istio's WasmPlugin nor Envoy Gateway's EnvoyExtensionPolicy can set the Wasm filter's
`allow_on_headers_stop_iteration: true` (istio/istio discussion 60126, envoyproxy/gateway issue
8382), without which Envoy turns the relay's Pause into StopAll and every write hangs. So the
recipes here carry the relay's Envoy configuration themselves, taken from the configuration
`relayctl.render_files` renders from envoy.yaml (never a second, hand-kept copy):

    config = yaml.safe_load(relayctl.render_files(settings, config_dir)["envoy.yaml"])
    docs = mesh_recipes.istio(config, "registry.example.com/healthlake-relay:1.0.0", sds_files=...)
    docs = mesh_recipes.envoy_gateway(config, "registry.example.com/healthlake-relay:1.0.0", ...)
    text = mesh_recipes.to_yaml(docs, mesh_recipes.ISTIO_NOTES)

What a recipe carries: the Wasm filter (all of its configuration: allow_on_headers_stop_iteration,
failure_policy, reload_config, the plugin configuration, vm_config with its host environment
keys; only the code's source differs: the OCI image instead of a local file), every cluster the
route and the plugin configuration name, the route (timeout, retry policy, header removals), the
listener's buffer limit, and the connection manager's limits, local replies and access log.
Not carried (the gateway's own bootstrap owns them): the stats tags that turn the relay's stat
names into Prometheus labels, the overload manager's connection cap, the admin and health listeners,
the router's suppress_envoy_headers (the gateways may add x-envoy-* headers; HealthLake ignores
them and the relay signs only the headers it sets), the listener's TLS (so no mTLS inbound auth).

tests/mesh_bootstraps.py turns each recipe back into a standalone Envoy bootstrap holding exactly
the Envoy configuration the recipe carries (with the OCI code swapped for the local .wasm, as the
Istio agent or Envoy Gateway does), so that `envoy --mode validate` checks it.

Facts relied on (sources: istio/istio master 2026-08 and tags 1.27-1.31, envoyproxy/gateway
master 2026-08 and tags v1.4-v1.9, envoyproxy/go-control-plane):
- Istio: the agent (pkg/wasm/convert.go, rewriteVMConfig) rewrites an ECDS Wasm config whose
  vm_config.code is `remote.http_uri.uri: oci://...` to a local file before Envoy sees it; it
  uses `http_uri.timeout` (default 5 s), `sha256` (optional: "" or Istio's sentinel "nil"; for
  oci:// it is the image manifest's digest, hex), and the vm_config key_values
  ISTIO_META_WASM_IMAGE_PULL_POLICY (IfNotPresent|Always) and ISTIO_META_WASM_IMAGE_PULL_SECRET
  (the docker config JSON itself, filled in by istiod only for WasmPlugin; never put one in an
  EnvoyFilter: mount a dockerconfigjson Secret and set DOCKER_CONFIG instead, read by the agent's
  default keychain, pkg/wasm/imagefetcher.go), and strips every ISTIO_META_* key. If the fetch
  fails it substitutes an RBAC deny-all filter (fail closed), which is why the HTTP filter's
  config_discovery accepts the RBAC type as well, as istiod's own WasmPlugin filters do
  (pilot/pkg/networking/core/extension/extensionfilter.go). istiod itself writes `cluster: "_"`
  and a 30 s timeout for WasmPlugin images (pilot/pkg/model/extensions.go, buildDataSource).
- Istio 1.28.0 is the first whose istiod and agent know the field: 1.27.x is built with
  go-control-plane 2025-06-27, the field arrived there 2025-07-15; istiod unmarshals EnvoyFilter
  values allowing unknown fields (pkg/config/xds/xds.go), so an older istiod drops it silently
  (and its validation only warns).
- Istio gateway routes for a plain HTTP server are named `http.<port>`
  (pilot/pkg/model/gateway.go), set ignore_port_in_host_matching, and with no VirtualService hold
  one "blackhole:<port>" virtual host for "*" (pilot/pkg/networking/core/gateway.go); 1.31's EDGE
  connection profile sets a 32 KiB listener buffer limit.
- Envoy Gateway: an EnvoyExtensionPolicy's Wasm becomes an HCM filter named
  `envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<policy>/wasm/<index>`, `disabled: true`,
  enabled per route by typed_per_filter_config (internal/xds/translator/wasm.go,
  internal/gatewayapi/envoyextensionpolicy.go); its vm_id is that name without the prefix, its
  code is remote from EG's own Wasm cache (cluster wasm_cluster) with the sha256 of the module.
  EnvoyPatchPolicy JSON patches apply to protojson with proto (snake_case) field names,
  `jsonPath` selects (since v1.2), add creates missing parents, and every patched resource is
  unmarshalled strictly and validated (internal/xds/translator/jsonpatch.go): EG >= 1.6.0 (its
  go-control-plane has the field; v1.5.x's does not and would refuse the patch). xDS names:
  listener and route configuration `<ns>/<gateway>/<listener>` (the default up to v1.9), or with
  the XDSNameSchemeV2 runtime flag (announced as the default from v1.10) `tcp-<port>` and
  `http-<port>`. The listener's default buffer limit is 32 KiB.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlsplit

import yaml

import relayctl

WASM = relayctl.WASM

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FILTER_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"

# The connection manager's settings a recipe carries onto the gateway's own: the relay's limits,
# Envoy's own answers as FHIR OperationOutcomes with an outcome, and the access log with the
# relay's verdicts. (use_remote_address is the gateway's business; both set it already.)
HCM_CARRIED = ("max_request_headers_kb", "request_headers_timeout", "request_timeout", "stream_idle_timeout",
               "common_http_protocol_options", "local_reply_config", "access_log")

# The plugin configuration's clusters, and their defaults (README, Plugin configuration).
PLUGIN_CLUSTERS = (
    (("credentials", "web_identity"), "sts_cluster", "sts_web_identity"),
    (("credentials", "container"), "cluster", "container_credentials"),
    (("credentials", "imds"), "cluster", "imds"),
    (("assume_role",), "sts_cluster", "sts"),
)

ISTIO_POLICY_ENV = "ISTIO_META_WASM_IMAGE_PULL_POLICY"
ISTIO_META_PREFIX = "ISTIO_META_"
PULL_POLICIES = ("IfNotPresent", "Always")

# Envoy Gateway: the EnvoyExtensionPolicy's own plugin configuration is this deliberately invalid
# one (the relay refuses unknown fields and does not start); the EnvoyPatchPolicy replaces it with
# the real one. So a cluster where EnvoyPatchPolicy is not enabled (or the patch did not apply)
# refuses every request (fail closed, and the proxy's log names this field) instead of hanging
# every write without allow_on_headers_stop_iteration.
EG_SENTINEL_FIELD = "envoy_patch_policy_not_applied"


def eg_sentinel(namespace: str, policy: str) -> dict:
    return {EG_SENTINEL_FIELD: f"the EnvoyPatchPolicy {namespace}/{policy} must replace this configuration: "
                               "enable extensionApis.enableEnvoyPatchPolicy and check its status"}


class RecipeError(ValueError):
    """The rendered configuration cannot be carried into a recipe; the message says why."""


# ---------------------------------------------------------------------------------------------
# What a recipe carries, taken from the rendered configuration


class Relay:
    """The relay's parts of a rendered envoy.yaml: its listener (the one whose connection manager
    holds the relay's Wasm filter for writes; the health listener's copy of it, under the
    readiness root id, answers Kubernetes' probes and is not carried: the gateways have their
    own), that connection manager, the filter, the virtual host and the clusters the route and
    the plugin configuration name."""

    def __init__(self, config: Mapping):
        config = copy.deepcopy(dict(config))
        found = []
        for listener in config.get("static_resources", {}).get("listeners", []):
            for chain in listener.get("filter_chains", []):
                for f in chain.get("filters", []):
                    if f.get("name") != HCM:
                        continue
                    for hf in f["typed_config"].get("http_filters", []):
                        typed = hf.get("typed_config", {})
                        if (typed.get("@type") == WASM_TYPE
                                and typed.get("config", {}).get("root_id") != relayctl.READINESS_ROOT_ID):
                            found.append((listener, f["typed_config"], hf))
        if len(found) != 1:
            raise RecipeError(f"expected one listener with the relay's Wasm filter, found {len(found)}")
        self.listener, self.hcm, self.filter = found[0]
        filters = self.hcm["http_filters"]
        if filters.index(self.filter) != len(filters) - 2 or filters[-1].get("name") != ROUTER:
            raise RecipeError("the relay's Wasm filter must come right before the router")
        self.wasm: dict = self.filter["typed_config"]
        plugin = self.wasm["config"]
        if plugin.get("allow_on_headers_stop_iteration") is not True:
            raise RecipeError("the rendered Wasm filter lacks allow_on_headers_stop_iteration: true")
        if plugin.get("failure_policy") == "FAIL_OPEN" or plugin.get("fail_open"):
            raise RecipeError("the relay must never fail open (it would forward unsigned)")
        self.plugin_config: dict = json.loads(plugin["configuration"]["value"])
        if self.plugin_config.get("inbound_auth") == "mtls":
            # The listener's TLS (client certificates) is the gateway's, not carried: with mTLS
            # the relay would refuse every write. Bearer tokens, or the mesh's own mTLS in front.
            raise RecipeError("inbound_auth mtls is not carried into the mesh recipes: use bearer tokens "
                              "(RELAY_INBOUND_TOKENS)")
        self.port: int = int(self.listener["address"]["socket_address"]["port_value"])
        route_config = self.hcm.get("route_config")
        if not route_config or len(route_config.get("virtual_hosts", [])) != 1:
            raise RecipeError("expected the relay's inline route_config with one virtual host")
        self.virtual_host: dict = route_config["virtual_hosts"][0]
        clusters = {c["name"]: c for c in config["static_resources"].get("clusters", [])}
        wanted = route_clusters(self.virtual_host) + plugin_clusters(self.plugin_config)
        missing = [name for name in wanted if name not in clusters]
        if missing:
            raise RecipeError(f"the rendered configuration has no cluster {', '.join(missing)}")
        self.clusters: list[dict] = [clusters[name] for name in dict.fromkeys(wanted)]

    @property
    def host_env_keys(self) -> list[str]:
        return list(self.wasm["config"]["vm_config"].get("environment_variables", {}).get("host_env_keys", []))

    @property
    def healthlake_host(self) -> str:
        """The host HealthLake is signed for (and the relay rewrites :authority to), without port."""
        return urlsplit("//" + self.plugin_config["healthlake_host"]).hostname or ""

    def carried_hcm(self) -> dict:
        carried = {k: copy.deepcopy(self.hcm[k]) for k in HCM_CARRIED if k in self.hcm}
        # The gateway is one Envoy, not one of the relay's replicas: no replica to name.
        for log in carried.get("access_log", []):
            log.get("typed_config", {}).get("log_format", {}).get("json_format", {}).pop("replica", None)
        return carried

    def sds_paths(self) -> list[str]:
        """The file-based SDS paths the carried clusters read (token files, through Envoy)."""
        return sorted(set(walk_values(self.clusters, "path_config_source", lambda v: v["path"])))


def route_clusters(virtual_host: Mapping) -> list[str]:
    return [r["route"]["cluster"] for r in virtual_host.get("routes", []) if "cluster" in r.get("route", {})]


def plugin_clusters(plugin_config: Mapping) -> list[str]:
    """The Envoy clusters the plugin configuration names (explicitly or by default)."""
    out = []
    for where, key, default in PLUGIN_CLUSTERS:
        node = plugin_config
        for step in where:
            node = node.get(step) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            out.append(node.get(key, default))
    return out


def walk_values(node, key: str, pick) -> Iterable:
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == key:
                yield pick(v)
            else:
                yield from walk_values(v, key, pick)
    elif isinstance(node, list):
        for item in node:
            yield from walk_values(item, key, pick)


def oci_reference(image: str) -> str:
    """registry/repository[:tag][@sha256:digest], without a scheme."""
    image = image.removeprefix("oci://")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@-]*", image) or "/" not in image:
        raise RecipeError(f"expected an OCI image reference such as registry.example.com/healthlake-relay:1.0.0, got {image!r}")
    return image


def manifest_digest(sha256: str | None) -> str | None:
    """The image manifest's digest as both Istio and Envoy Gateway take it: 64 hex digits."""
    if sha256 is None:
        return None
    hex_digest = sha256.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", hex_digest):
        raise RecipeError(f"sha256 must be the image manifest's digest (64 lowercase hex digits), got {sha256!r}")
    return hex_digest


def check_replicas(replicas: int) -> None:
    """One gateway pod: the version guard is kept per Envoy, and these recipes have no front tier
    with resource affinity (deploy/kubernetes has); two gateway pods behind one Service could each
    get a delivery of one resource, and the one seeing a late older version would forward it."""
    if replicas != 1:
        raise RecipeError("the mesh recipes run one gateway pod (the version guard is per Envoy and they have "
                          "no front tier with resource affinity): for several relays use deploy/kubernetes")


def check_pull_policy(pull_policy: str | None) -> None:
    if pull_policy is not None and pull_policy not in PULL_POLICIES:
        raise RecipeError(f"pull_policy must be one of {', '.join(PULL_POLICIES)}, got {pull_policy!r}")


def pod_env(relay: Relay, tokens_secret: str, env_secret: str) -> list[dict]:
    """The proxy container's environment for the keys the Wasm VM copies from Envoy's own
    (host_env_keys): the inbound tokens from their Secret, the others from a Secret of the same
    names; AWS_EC2_METADATA_DISABLED is set unless instance metadata is the source."""
    source = relay.plugin_config.get("credentials", {}).get("source", "environment")
    out = []
    for key in relay.host_env_keys:
        if key == "RELAY_INBOUND_TOKENS":
            optional = bool(relay.plugin_config.get("inbound_token_sha256")) or relay.plugin_config.get("inbound_auth") != "bearer"
            out.append({"name": key, "valueFrom": {"secretKeyRef": {"name": tokens_secret, "key": "tokens", "optional": optional}}})
        elif key == "AWS_EC2_METADATA_DISABLED":
            if source != "imds":
                out.append({"name": key, "value": "true"})
        else:
            out.append({"name": key, "valueFrom": {"secretKeyRef": {"name": env_secret, "key": key}}})
    return out


def sds_config_map(relay: Relay, sds_files: Mapping[str, str], name: str, namespace: str) -> tuple[dict | None, str | None]:
    """The ConfigMap of the file-based SDS files the clusters read, and where it must be mounted
    (the directory the rendered configuration names)."""
    paths = relay.sds_paths()
    if not paths:
        return None, None
    dirs = {str(Path(p).parent) for p in paths}
    if len(dirs) != 1:
        raise RecipeError(f"the SDS files must sit in one directory, found {sorted(dirs)}")
    data = {}
    for p in paths:
        file_name = Path(p).name
        if file_name not in sds_files:
            raise RecipeError(f"sds_files lacks {file_name}, which the rendered configuration reads at {p}")
        data[file_name] = sds_files[file_name]
    return ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
             "data": data}, dirs.pop())


# ---------------------------------------------------------------------------------------------
# Istio


ISTIO_NOTES = """\
# The HealthLake relay on an Istio gateway of its own (Istio >= 1.28, its proxies Envoy >= 1.36).
#
# Why an EnvoyFilter and not a WasmPlugin: WasmPlugin cannot set allow_on_headers_stop_iteration
# (istio/istio discussion 60126), and without it every write hangs. The EnvoyFilter ADDs the whole
# Wasm filter configuration as an ECDS resource (EXTENSION_CONFIG) whose code is the OCI image; the
# Istio agent pulls it and hands Envoy a local file. The HTTP filter refers to it through
# config_discovery (ADS), right before the router. If the pull fails, the agent substitutes a
# deny-all RBAC filter: writes are refused (403), never forwarded unsigned.
#
# Routing: the relay's route is added verbatim as a virtual host of the gateway's route
# configuration (http.<port>), to the relay's clusters, also added verbatim. A VirtualService with a
# ServiceEntry and DestinationRule cannot express the relay's retry policy (retrying HealthLake's
# throttling answered as 400 with x-amzn-errortype ThrottlingException, back-off honouring
# Retry-After, the retry budget) nor the buffer limits, so none is used. The virtual host's domains
# are the gateway Service's names and the HealthLake host (the relay rewrites :authority, and Envoy
# matches the route again), never "*", which Istio's own (blackhole) virtual host holds.
#
# Targeting a sidecar instead (e.g. Smile CDR's own): use context SIDECAR_OUTBOUND in every patch,
# a workloadSelector for Smile CDR's pods, the listener/route port Smile CDR posts to (a
# ServiceEntry for a made-up host such as healthlake-relay.internal on that port gives it one), and
# that host among the virtual host's domains; the sidecar then needs the Deployment's environment
# and volumes below. A gateway of its own keeps the relay's limits off every other route.
#
# Apply: kubectl apply -f <this file>; create the Secret first:
#   kubectl -n <namespace> create secret generic healthlake-relay-inbound-tokens --from-literal=tokens=<token>
# EKS Pod Identity: associate the role with the ServiceAccount below (the webhook mounts the token).
# Check: istioctl proxy-config ecds deploy/healthlake-relay -n <namespace> -o yaml shows the
# filter with allow_on_headers_stop_iteration: true and a local file as its code;
# istioctl proxy-config cluster deploy/healthlake-relay -n <namespace> | grep healthlake.
"""


def istio(config: Mapping, image: str, *, sds_files: Mapping[str, str] | None = None,
          namespace: str = "healthlake-relay", name: str = "healthlake-relay",
          sha256: str | None = None, pull_policy: str | None = None, pull_secret: str | None = None,
          hosts: Iterable[str] = (), replicas: int = 1,
          tokens_secret: str = "healthlake-relay-inbound-tokens") -> list[dict]:
    """The relay on a dedicated Istio gateway: ServiceAccount, ConfigMap (the SDS files, if the
    clusters read any), Deployment (gateway injection), Service, Gateway, EnvoyFilter.

    image: the Wasm OCI image (registry/repository:tag or @sha256:...), pulled by the Istio agent.
    sha256: the image manifest's digest (optional; pinning by digest in `image` does the same).
    pull_policy: IfNotPresent or Always (the agent's ISTIO_META_WASM_IMAGE_PULL_POLICY).
    pull_secret: a kubernetes.io/dockerconfigjson Secret for the registry, mounted in the gateway
    pod and read by the agent through DOCKER_CONFIG.
    hosts: more names Smile CDR may post to (the Service's cluster names are always accepted)."""
    relay = Relay(config)
    check_pull_policy(pull_policy)
    check_replicas(replicas)
    digest = manifest_digest(sha256)
    ref = oci_reference(image)
    labels = {"istio": name}
    ecds_name = relay.filter["name"]
    port = relay.port

    wasm = copy.deepcopy(relay.wasm)
    vm = wasm["config"]["vm_config"]
    vm["code"] = {"remote": {
        "http_uri": {"uri": f"oci://{ref}", "cluster": "_", "timeout": "30s"},
        "sha256": digest or "nil",
    }}
    if pull_policy:
        vm.setdefault("environment_variables", {}).setdefault("key_values", {})[ISTIO_POLICY_ENV] = pull_policy

    domains = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc", f"{name}.{namespace}", name,
               *hosts, relay.healthlake_host]
    virtual_host = copy.deepcopy(relay.virtual_host)
    virtual_host["name"] = name
    virtual_host["domains"] = list(dict.fromkeys(domains))
    if "*" in virtual_host["domains"]:
        raise RecipeError('"*" is the domain of Istio\'s own virtual host on the gateway: name the hosts')

    listener_match = {"portNumber": port}
    hcm_match = {"portNumber": port, "filterChain": {"filter": {"name": HCM}}}
    patches = [
        {"applyTo": "EXTENSION_CONFIG", "match": {"context": "GATEWAY"},
         "patch": {"operation": "ADD", "value": {"name": ecds_name, "typed_config": wasm}}},
        {"applyTo": "HTTP_FILTER",
         "match": {"context": "GATEWAY", "listener": {**hcm_match, "filterChain": {"filter": {
             "name": HCM, "subFilter": {"name": ROUTER}}}}},
         "patch": {"operation": "INSERT_BEFORE", "value": {"name": ecds_name, "config_discovery": {
             # As istiod's own WasmPlugin filters: the listener waits for the filter (no timeout),
             # and the agent's deny-all RBAC stand-in is accepted when the pull fails.
             "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
             "type_urls": [WASM_TYPE, RBAC_TYPE]}}}},
        {"applyTo": "NETWORK_FILTER", "match": {"context": "GATEWAY", "listener": hcm_match},
         "patch": {"operation": "MERGE", "value": {"name": HCM, "typed_config": {
             "@type": HCM_TYPE, **relay.carried_hcm()}}}},
    ]
    if "per_connection_buffer_limit_bytes" in relay.listener:
        patches.append({"applyTo": "LISTENER", "match": {"context": "GATEWAY", "listener": listener_match},
                        "patch": {"operation": "MERGE", "value": {
                            "per_connection_buffer_limit_bytes": relay.listener["per_connection_buffer_limit_bytes"]}}})
    for cluster in relay.clusters:
        patches.append({"applyTo": "CLUSTER", "match": {"context": "GATEWAY"},
                        "patch": {"operation": "ADD", "value": copy.deepcopy(cluster)}})
    patches.append({"applyTo": "VIRTUAL_HOST",
                    "match": {"context": "GATEWAY", "routeConfiguration": {"portNumber": port}},
                    "patch": {"operation": "ADD", "value": virtual_host}})

    config_map, sds_dir = sds_config_map(relay, sds_files or {}, f"{name}-sds", namespace)
    container: dict = {"name": "istio-proxy", "image": "auto",
                       "ports": [{"name": "http-relay", "containerPort": port}],
                       "env": pod_env(relay, tokens_secret, f"{name}-env")}
    volumes, mounts = [], []
    if config_map:
        volumes.append({"name": "relay-sds", "configMap": {"name": config_map["metadata"]["name"]}})
        mounts.append({"name": "relay-sds", "mountPath": sds_dir, "readOnly": True})
    if pull_secret:
        volumes.append({"name": "wasm-pull-secret", "secret": {
            "secretName": pull_secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
        mounts.append({"name": "wasm-pull-secret", "mountPath": "/etc/healthlake-relay/docker", "readOnly": True})
        container["env"].append({"name": "DOCKER_CONFIG", "value": "/etc/healthlake-relay/docker"})
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict = {"serviceAccountName": name, "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes

    meta = {"name": name, "namespace": namespace}
    docs: list[dict] = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)}]
    if config_map:
        docs.append(config_map)
    docs += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(meta), "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                # Istio's gateway injection: the istio-proxy container becomes a gateway proxy.
                "metadata": {"annotations": {"inject.istio.io/templates": "gateway"},
                             "labels": {**labels, "sidecar.istio.io/inject": "true"}},
                "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": dict(meta), "spec": {
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "http-relay", "port": port, "targetPort": port, "appProtocol": "http"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": dict(meta), "spec": {
            "selector": labels,
            "servers": [{"port": {"number": port, "name": "http-relay", "protocol": "HTTP"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": dict(meta), "spec": {
            "workloadSelector": {"labels": labels}, "configPatches": patches}},
    ]
    return docs


# ---------------------------------------------------------------------------------------------
# Envoy Gateway


ENVOY_GATEWAY_NOTES = """\
# The HealthLake relay on an Envoy Gateway Gateway of its own (Envoy Gateway >= 1.6.0, whose
# Envoy is >= 1.36; EnvoyPatchPolicy enabled).
#
# Why an EnvoyPatchPolicy: EnvoyExtensionPolicy cannot set allow_on_headers_stop_iteration
# (envoyproxy/gateway issue 8382), and without it every write hangs. The EnvoyExtensionPolicy
# brings the module (EG pulls the OCI image into its Wasm cache, checks the digest, serves it to
# Envoy with the module's sha256); the EnvoyPatchPolicy then sets, on the filter EG generates
# (envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<policy>/wasm/0), everything else of the
# relay's configuration: allow_on_headers_stop_iteration, failure_policy FAIL_RELOAD,
# reload_config, the plugin configuration, vm_id, the host environment keys, and enables it for
# every route. The EnvoyExtensionPolicy's own plugin configuration is deliberately invalid: if the
# patch is not applied, the relay does not start and every request is refused (fail closed) with
# the field envoy_patch_policy_not_applied in Envoy's log, instead of every write hanging.
# The patch also adds the relay's clusters and its route (first in the Gateway's virtual host, which
# must be "*": no hostname on the listener or the HTTPRoute), the listener's buffer limit and the
# connection manager's limits, local replies and access log (appended to EG's own).
#
# Needs: in the EnvoyGateway configuration, extensionApis.enableEnvoyPatchPolicy: true (the
# envoy-gateway-config ConfigMap, then restart envoy-gateway). The xDS names depend on
# EG's XDSNameSchemeV2 runtime flag: generate with xds_name_scheme="v2" if it is on.
# Secrets and the SDS ConfigMap live where EG runs the Envoy pods (envoy-gateway-system by default).
#
# Apply: kubectl apply -f <this file>; then kubectl get envoypatchpolicy -n <namespace> -o yaml
# must show Accepted and Programmed; check with egctl config envoy-proxy all -n <proxy namespace>
# -l gateway.envoyproxy.io/owning-gateway-name=healthlake-relay -o yaml (the filter has
# allow_on_headers_stop_iteration: true, the clusters healthlake ... are there).
"""


def eg_names(namespace: str, gateway: str, listener: str, port: int, scheme: str) -> tuple[str, str]:
    """(listener, route configuration) names of a plain HTTP Gateway listener in EG's xDS."""
    if scheme == "v1":
        return f"{namespace}/{gateway}/{listener}", f"{namespace}/{gateway}/{listener}"
    if scheme == "v2":
        return f"tcp-{port}", f"http-{port}"
    raise RecipeError(f'xds_name_scheme must be "v1" or "v2", got {scheme!r}')


def eg_filter_name(namespace: str, policy: str, index: int = 0) -> str:
    return f"envoy.filters.http.wasm/{eg_vm_id(namespace, policy, index)}"


def eg_vm_id(namespace: str, policy: str, index: int = 0) -> str:
    return f"envoyextensionpolicy/{namespace}/{policy}/wasm/{index}"


def by_name(items: str, name: str, only_if_true: str = "") -> str:
    """A JSONPath selecting the elements of list `items`, anywhere, whose name is `name` (and, with
    `only_if_true`, a dotted path, whose field there is already true)."""
    condition = f" && @.{only_if_true}==true" if only_if_true else ""
    return f"$..{items}[?(@.name=='{name}'{condition})]"


def envoy_gateway(config: Mapping, image: str, *, sds_files: Mapping[str, str] | None = None,
                  namespace: str = "healthlake-relay", name: str = "healthlake-relay",
                  proxy_namespace: str = "envoy-gateway-system", gateway_class: str = "eg",
                  listener: str = "smile-cdr", xds_name_scheme: str = "v1",
                  sha256: str | None = None, pull_policy: str | None = None, pull_secret: str | None = None,
                  replicas: int = 1, tokens_secret: str = "healthlake-relay-inbound-tokens") -> list[dict]:
    """The relay on a dedicated Envoy Gateway Gateway: EnvoyProxy (the Envoy pods' service
    account, environment and SDS mount), ConfigMap (SDS files, in proxy_namespace), Gateway,
    HTTPRoute, EnvoyExtensionPolicy (the module, an OCI image), EnvoyPatchPolicy (the rest).

    image: the Wasm OCI image; sha256 its manifest digest (EG checks it); pull_policy
    IfNotPresent or Always; pull_secret a dockerconfigjson Secret in `namespace`.
    xds_name_scheme: "v1" (EG's default up to v1.9) or "v2" (the XDSNameSchemeV2 runtime flag)."""
    relay = Relay(config)
    check_pull_policy(pull_policy)
    check_replicas(replicas)
    digest = manifest_digest(sha256)
    ref = oci_reference(image)
    port = relay.port
    listener_name, route_name = eg_names(namespace, name, listener, port, xds_name_scheme)
    filter_name = eg_filter_name(namespace, name)
    plugin = relay.wasm["config"]

    code: dict = {"type": "Image", "image": {"url": ref}}
    if digest:
        code["image"]["sha256"] = digest
    if pull_secret:
        code["image"]["pullSecretRef"] = {"name": pull_secret}
    if pull_policy:
        code["pullPolicy"] = pull_policy
    wasm_spec: dict = {"name": plugin["name"], "code": code, "config": eg_sentinel(namespace, name),
                       "failOpen": False}
    if plugin.get("root_id"):
        wasm_spec["rootID"] = plugin["root_id"]
    if relay.host_env_keys:
        wasm_spec["env"] = {"hostKeys": relay.host_env_keys}

    def on_filter(op: str, path: str, value, only_with_the_field: bool = False) -> dict:
        selected = by_name("http_filters", filter_name,
                           "typed_config.config.allow_on_headers_stop_iteration" if only_with_the_field else "")
        return {"type": LISTENER_TYPE, "name": listener_name, "operation": {
            "op": op, "jsonPath": selected, "path": path, "value": value}}

    patches = [
        on_filter("add", "/typed_config/config/allow_on_headers_stop_iteration", True),
        on_filter("add", "/typed_config/config/failure_policy", plugin.get("failure_policy", "FAIL_CLOSED")),
    ]
    if "reload_config" in plugin:
        patches.append(on_filter("add", "/typed_config/config/reload_config", copy.deepcopy(plugin["reload_config"])))
    # EG applies each patch on its own and goes on past one that fails (an EG whose Envoy API
    # lacks allow_on_headers_stop_iteration refuses only that one): the two patches that make the
    # filter work (the relay's configuration instead of the sentinel, and enabled) select the filter
    # only once the field is there, so that without it the sentinel stays and the relay refuses to
    # start, instead of every write hanging.
    patches += [
        on_filter("replace", "/typed_config/config/configuration", copy.deepcopy(plugin["configuration"]), True),
        on_filter("replace", "/typed_config/config/vm_config/vm_id", plugin["vm_config"]["vm_id"]),
    ]
    if "environment_variables" in plugin["vm_config"]:
        patches.append(on_filter("add", "/typed_config/config/vm_config/environment_variables",
                                 copy.deepcopy(plugin["vm_config"]["environment_variables"])))
    # Enabled for every request on this listener, as in envoy.yaml (EG enables it per route).
    patches.append(on_filter("replace", "/disabled", False, True))
    for key, value in relay.carried_hcm().items():
        if key == "access_log":
            for item in value:
                patches.append({"type": LISTENER_TYPE, "name": listener_name, "operation": {
                    "op": "add", "jsonPath": by_name("filters", HCM), "path": "/typed_config/access_log/-", "value": item}})
        else:
            patches.append({"type": LISTENER_TYPE, "name": listener_name, "operation": {
                "op": "add", "jsonPath": by_name("filters", HCM), "path": f"/typed_config/{key}", "value": value}})
    if "per_connection_buffer_limit_bytes" in relay.listener:
        patches.append({"type": LISTENER_TYPE, "name": listener_name, "operation": {
            "op": "add", "path": "/per_connection_buffer_limit_bytes",
            "value": relay.listener["per_connection_buffer_limit_bytes"]}})
    for route in reversed(relay.virtual_host["routes"]):
        patches.append({"type": ROUTE_TYPE, "name": route_name, "operation": {
            "op": "add", "path": "/virtual_hosts/0/routes/0", "value": copy.deepcopy(route)}})
    for cluster in relay.clusters:
        patches.append({"type": CLUSTER_TYPE, "name": cluster["name"], "operation": {
            "op": "add", "path": "", "value": copy.deepcopy(cluster)}})

    config_map, sds_dir = sds_config_map(relay, sds_files or {}, f"{name}-sds", proxy_namespace)
    container: dict = {"env": pod_env(relay, tokens_secret, f"{name}-env")}
    pod: dict = {}
    if config_map:
        pod["volumes"] = [{"name": "relay-sds", "configMap": {"name": config_map["metadata"]["name"]}}]
        container["volumeMounts"] = [{"name": "relay-sds", "mountPath": sds_dir, "readOnly": True}]
    deployment: dict = {"replicas": replicas, "container": container}
    if pod:
        deployment["pod"] = pod

    meta = {"name": name, "namespace": namespace}
    gateway_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    docs: list[dict] = [
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy", "metadata": dict(meta), "spec": {
            "provider": {"type": "Kubernetes", "kubernetes": {
                # A fixed name, for the EKS Pod Identity association (or the IRSA annotation).
                "envoyServiceAccount": {"name": name},
                # Inside the cluster only (EG's default is a LoadBalancer, which on EKS can be an
                # internet-facing one): Smile CDR reaches it by its ClusterIP Service.
                "envoyService": {"type": "ClusterIP"},
                "envoyDeployment": deployment}}}},
    ]
    if config_map:
        docs.append(config_map)
    docs += [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": dict(meta), "spec": {
            "gatewayClassName": gateway_class,
            "infrastructure": {"parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": name}},
            "listeners": [{"name": listener, "protocol": "HTTP", "port": port,
                           "allowedRoutes": {"namespaces": {"from": "Same"}}}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": dict(meta), "spec": {
            "parentRefs": [{"name": name, "sectionName": listener}],
            # No backend: the relay's own route, patched in first, carries every request.
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy", "metadata": dict(meta),
         "spec": {"targetRefs": [gateway_ref], "wasm": [wasm_spec]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyPatchPolicy", "metadata": dict(meta),
         "spec": {"type": "JSONPatch", "targetRef": gateway_ref, "jsonPatches": patches}},
    ]
    return docs


def to_yaml(docs: list[dict], notes: str = "") -> str:
    """The documents as one multi-document YAML file, the notes (comments) first."""
    return notes + "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs)
