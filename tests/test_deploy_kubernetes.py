"""The Kubernetes deployment (deploy/kubernetes), checked offline, as rendered.

The base and the base with components/wasm-init-container are rendered by the pinned kustomize
(make deploy-deps: build/tools/kustomize-<version>/kustomize), every rendered object is validated
strictly (unknown fields are errors) against Kubernetes' own schemas (kubernetes-validate), and the
properties the deployment promises are asserted on the rendered objects: replicas and spread, the
disruption budget, the Service, the NetworkPolicy, hardened containers, probes, resources, no AWS
keys, the inbound tokens' Secret referenced and never defined, the generated Envoy configuration in
the ConfigMap byte for byte, and the contract between that configuration and the Deployment (ports,
paths, admin address, drain). The preStop hook's script runs against a real Envoy on loopback.
No cluster is involved and nothing leaves this machine.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import relayctl  # noqa: E402
from conftest import every_dict, relay_env, send, start_relay  # noqa: E402

PATIENT = json.dumps({"resourceType": "Patient", "id": "drain-1", "meta": {"versionId": "1"}}).encode()
FHIR_HEADERS = {"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'}

BASE = ROOT / "deploy" / "kubernetes"
COMPONENT = BASE / "components" / "wasm-init-container"
GENERATED = ("envoy.yaml", "sds-container-token.yaml")

# Kubernetes versions whose schemas the renderings must satisfy. The base needs the `image` volume
# source: 1.35 is the first release that has it on by default (beta; GA in 1.36), 1.37 the newest
# that kubernetes-validate ships. The component is for clusters without it, so also an older one.
SCHEMAS = {"base": ("1.35.0", "1.37.0"), "component": ("1.30.0", "1.37.0")}

CONFIG_DIR = "/etc/healthlake-relay/config"
WASM_DIR = "/etc/healthlake-relay/wasm"
WASM_FILE = f"{WASM_DIR}/plugin.wasm"
SDS_FILE = f"{CONFIG_DIR}/sds-container-token.yaml"
POD_IDENTITY_TOKEN = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
FHIR_PORT, HEALTH_PORT = 10000, 9902
ADMIN = ("127.0.0.1", 9901)
SMILE_CDR = {"app.kubernetes.io/name": "smile-cdr"}
SELECTOR = {"app.kubernetes.io/name": "healthlake-relay", "app.kubernetes.io/instance": "healthlake-relay"}
# Variables the EKS Pod Identity webhook injects into the containers (not in the manifests).
WEBHOOK_ENV = {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"}
LONG_LIVED_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
# Envoy's resident memory with the relay and 2 workers before any body is held (MiB): 108.8 after
# 1,000,000 writes (bench/results/soak.md), 106.5 at peak with 2 workers (bench/results/latest.md).
BASELINE_MIB = 110
# The plugin's defaults (README, Plugin configuration) when the configuration does not set them.
DEFAULT_MAX_BODY = 8 * 2**20
DEFAULT_BODY_BUDGET = 256 * 2**20


# ---------------------------------------------------------------------------------------------
# Rendering


def kustomize_binary() -> Path:
    """The kustomize that make deploy-deps installs (its version is read from the Makefile)."""
    version = re.search(r"^KUSTOMIZE_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert version, "the Makefile names no KUSTOMIZE_VERSION"
    return ROOT / "build" / "tools" / f"kustomize-{version.group(1)}" / "kustomize"


@pytest.fixture(scope="module")
def kustomize() -> Path:
    binary = kustomize_binary()
    if not binary.exists():
        pytest.fail(f"{binary.relative_to(ROOT)} is missing: run make deploy-deps")
    for name in GENERATED:
        if not (BASE / name).exists():
            pytest.fail(f"deploy/kubernetes/{name} is missing: run make deploy (scripts/deploy.py)")
    return binary


def render(kustomize: Path, directory: Path) -> list[dict]:
    run = subprocess.run([str(kustomize), "build", str(directory)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, f"kustomize build {directory} failed:\n{run.stderr}"
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


@pytest.fixture(scope="module")
def renderings(kustomize: Path, tmp_path_factory) -> dict[str, list[dict]]:
    # An overlay as a user writes one: the base plus the component (kustomize takes relative
    # paths only).
    overlay = tmp_path_factory.mktemp("overlay")
    base, component = (os.path.relpath(p, overlay) for p in (BASE, COMPONENT))
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {base}\ncomponents:\n- {component}\n")
    return {"base": render(kustomize, BASE), "component": render(kustomize, overlay)}


@pytest.fixture(params=["base", "component"])
def docs(request, renderings) -> list[dict]:
    return renderings[request.param]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def pod_labels(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def all_containers(docs: list[dict]) -> list[dict]:
    spec = pod_spec(docs)
    return spec.get("initContainers", []) + spec["containers"]


def envoy(docs: list[dict]) -> dict:
    (container,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "envoy"]
    return container


def selects(match_labels: dict, labels: dict) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def container_port(container: dict, port) -> int:
    """A probe's or a Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return number


def arg_value(container: dict, flag: str) -> str:
    args = container["args"]
    assert args.count(flag) == 1, f"{flag} must appear once in {args}"
    return args[args.index(flag) + 1]


def quantity(value) -> float:
    """A Kubernetes quantity (cpu or bytes) as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in units.keys() | {""}, f"unexpected quantity {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def configmap(docs: list[dict]) -> dict:
    return one(docs, "ConfigMap")


def generated_config(docs: list[dict]) -> dict:
    return yaml.safe_load(configmap(docs)["data"]["envoy.yaml"])


def listener_on(config: dict, port: int) -> dict:
    found = [listener for listener in config["static_resources"]["listeners"]
             if listener["address"]["socket_address"]["port_value"] == port]
    assert len(found) == 1, f"expected one listener on port {port} in the generated envoy.yaml"
    return found[0]


def prestop_script(docs: list[dict]) -> str:
    command = envoy(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"] and len(command) == 3, command
    return command[2]


# ---------------------------------------------------------------------------------------------
# The tools and the schemas


def test_kustomize_is_the_pinned_release(kustomize):
    out = subprocess.run([str(kustomize), "version"], capture_output=True, text=True, timeout=30).stdout
    assert f"kustomize/v{kustomize.parent.name.removeprefix('kustomize-')} " in out, out


@pytest.mark.parametrize("rendering,version",
                         [(r, v) for r, versions in SCHEMAS.items() for v in versions])
def test_every_object_is_valid_kubernetes_strictly(renderings, rendering, version):
    docs = renderings[rendering]
    assert docs
    for obj in docs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{rendering}: {obj['kind']}/{obj['metadata']['name']} is not valid for "
                        f"Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")


def test_strict_validation_rejects_misspelt_fields(renderings):
    """Strict means unknown fields are errors: otherwise a misspelt security setting would pass
    and be ignored by the API server."""
    deployment = one(renderings["base"], "Deployment")
    kubernetes_validate.validate(deployment, "1.37.0", strict=True)

    misspelt = copy.deepcopy(deployment)
    security = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    kubernetes_validate.validate(misspelt, "1.37.0", strict=False)  # only strict catches it
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(misspelt, "1.37.0", strict=True)

    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(misspelt, "1.37.0", strict=True)

    # And the base's image volume is a field older Kubernetes does not know.
    with pytest.raises(kubernetes_validate.ValidationError, match="image"):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


# ---------------------------------------------------------------------------------------------
# What is deployed


def test_objects_and_namespace(docs):
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ConfigMap", "Service", "Deployment",
                            "PodDisruptionBudget", "NetworkPolicy"])
    assert {d["metadata"].get("namespace") for d in docs} == {"healthlake-relay"}


def test_the_inbound_tokens_secret_is_referenced_never_defined(docs):
    assert not of_kind(docs, "Secret"), "the base must not carry the Secret (nor its value)"
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in envoy(docs)["env"]
              if e["name"] == "RELAY_INBOUND_TOKENS"]
    assert ref == {"name": "healthlake-relay-inbound-tokens", "key": "tokens", "optional": False}


def test_no_long_lived_aws_keys_and_never_the_node_role(docs):
    for container in all_containers(docs):
        names = {e["name"] for e in container.get("env", [])}
        assert not names & LONG_LIVED_KEYS, f"{container['name']} sets {names & LONG_LIVED_KEYS}"
        # envFrom would import whatever keys a Secret or ConfigMap holds.
        assert "envFrom" not in container, container["name"]
    env = {e["name"]: e.get("value") for e in envoy(docs)["env"]}
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_service_account_without_api_token(docs):
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    spec = pod_spec(docs)
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False
    # Pod Identity is the default: the IRSA annotation stays a comment.
    assert "eks.amazonaws.com/role-arn" not in account["metadata"].get("annotations", {})


def test_replicas_and_topology_spread(docs):
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    spread = {c["topologyKey"]: c for c in pod_spec(docs)["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels(docs))


def test_selectors_are_stable(docs):
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert selects(SELECTOR, pod_labels(docs))
    selectors = [deployment["spec"]["selector"]["matchLabels"],
                 one(docs, "Service")["spec"]["selector"],
                 one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                 one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    for selector in selectors:
        assert selector == SELECTOR, "a selector must not carry labels that change (version, ...)"


def test_disruption_budget_covers_the_pods(docs):
    budget = one(docs, "PodDisruptionBudget")["spec"]
    assert selects(budget["selector"]["matchLabels"], pod_labels(docs))
    replicas = one(docs, "Deployment")["spec"]["replicas"]
    if "maxUnavailable" in budget:
        assert budget["maxUnavailable"] == 1
    else:
        assert 1 <= budget["minAvailable"] < replicas


def test_service_targets_the_fhir_port(docs):
    service = one(docs, "Service")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["selector"], pod_labels(docs))
    (port,) = service["ports"]
    assert (port["name"], port["port"], port["appProtocol"], port.get("protocol", "TCP")) == \
        ("http-fhir", FHIR_PORT, "http", "TCP")
    assert container_port(envoy(docs), port["targetPort"]) == FHIR_PORT


def test_network_policy(docs):
    policy = one(docs, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(docs))
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    def ports(rule):
        assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
        return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}

    # Ingress: the FHIR port from Smile CDR's pods (in a namespace chosen by label) only; the
    # health port from the monitoring namespace; nothing else.
    fhir_rules = 0
    for rule in policy["ingress"]:
        allowed = ports(rule)
        assert allowed <= {(FHIR_PORT, "TCP"), (HEALTH_PORT, "TCP")}, allowed
        assert rule.get("from"), f"a rule without peers admits everyone: {rule}"
        for peer in rule["from"]:
            assert "ipBlock" not in peer, f"ingress by address: {peer}"
            assert peer.get("namespaceSelector", {}).get("matchLabels"), f"peer in any namespace: {peer}"
            assert peer.get("podSelector", {}).get("matchLabels"), f"any pod of a namespace: {peer}"
        if (FHIR_PORT, "TCP") in allowed:
            fhir_rules += 1
            assert allowed == {(FHIR_PORT, "TCP")}
            assert [peer["podSelector"]["matchLabels"] for peer in rule["from"]] == [SMILE_CDR]
    assert fhir_rules == 1

    # Egress: DNS to the cluster's DNS pods, HTTPS to public addresses, the Pod Identity agent.
    seen = set()
    for rule in policy["egress"]:
        allowed = ports(rule)
        peers = rule.get("to")
        assert peers, f"an egress rule without peers allows every address: {rule}"
        if allowed == {(53, "UDP"), (53, "TCP")}:
            seen.add("dns")
            assert all(p["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"} for p in peers)
        elif allowed == {(443, "TCP")}:
            seen.add("https")
            for peer in peers:
                block = peer["ipBlock"]
                if block["cidr"] == "0.0.0.0/0":
                    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                            "169.254.0.0/16"} <= set(block["except"])
        elif allowed == {(80, "TCP")}:
            seen.add("pod-identity-agent")
            assert sorted(p["ipBlock"]["cidr"] for p in peers) == ["169.254.170.23/32", "fd00:ec2::23/128"]
        else:
            pytest.fail(f"unexpected egress rule {rule}")
    assert seen == {"dns", "https", "pod-identity-agent"}


def test_containers_are_hardened(docs):
    pod_security = pod_spec(docs)["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == 101
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_security["fsGroup"] == 101  # reads the projected Pod Identity token
    containers = all_containers(docs)
    assert len(containers) == (1 if "initContainers" not in pod_spec(docs) else 3)
    for container in containers:
        security = container["securityContext"]
        assert security.get("runAsNonRoot", pod_security["runAsNonRoot"]) is True, container["name"]
        assert security.get("runAsUser", pod_security["runAsUser"]) == 101, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security.get("privileged", False) is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert not security["capabilities"].get("add"), container["name"]
        assert security.get("seccompProfile", pod_security["seccompProfile"])["type"] == "RuntimeDefault"


def test_resources_are_bounded(docs):
    for container in all_containers(docs):
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for resource in ("cpu", "memory"):
            assert quantity(requests[resource]) <= quantity(limits[resource]), (container["name"], resource)


def test_probes_use_the_health_listener(docs):
    container = envoy(docs)
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"]["path"] == "/ready" and live["httpGet"]["path"] == "/live"
    assert (ready["periodSeconds"], ready["failureThreshold"]) == (5, 2)
    # Liveness is more tolerant than readiness: it restarts, readiness only takes out of service.
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]
    probes = [ready, live] + ([container["startupProbe"]] if "startupProbe" in container else [])
    for probe in probes:
        assert probe["httpGet"]["path"] in ("/ready", "/live")
        assert container_port(container, probe["httpGet"]["port"]) == HEALTH_PORT


def test_prometheus_scrapes_the_health_port(docs):
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(HEALTH_PORT)
    assert annotations["prometheus.io/path"] == "/stats/prometheus"


def test_envoy_image_is_new_enough(docs):
    image = envoy(docs)["image"]
    match = re.fullmatch(r"docker\.io/envoyproxy/envoy:v(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", image)
    assert match, image
    assert (int(match.group(1)), int(match.group(2))) >= (1, 35), "Envoy 1.35+ is required"


def test_concurrency_matches_the_cpu_limit(docs):
    container = envoy(docs)
    assert int(arg_value(container, "--concurrency")) == quantity(container["resources"]["limits"]["cpu"])


# ---------------------------------------------------------------------------------------------
# The generated configuration and the pod


def test_configmap_holds_exactly_the_generated_files(docs):
    cm = configmap(docs)
    assert re.fullmatch(r"healthlake-relay-envoy-[a-z0-9]{10}", cm["metadata"]["name"]), \
        "the ConfigMap's name must carry the content hash (a new configuration rolls the pods)"
    assert "binaryData" not in cm
    assert set(cm["data"]) == set(GENERATED)
    for name in GENERATED:
        assert cm["data"][name] == (BASE / name).read_bytes().decode("utf-8"), name
    # The Deployment mounts that very ConfigMap (kustomize rewrote the reference to the hashed name).
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    mounts = {m["name"]: m for m in envoy(docs)["volumeMounts"]}
    assert mounts["config"]["mountPath"] == CONFIG_DIR and mounts["config"]["readOnly"] is True


def test_envoy_reads_the_mounted_configuration(docs):
    container = envoy(docs)
    assert container["command"] == ["/usr/local/bin/envoy"]
    config = arg_value(container, "-c")
    assert config == f"{CONFIG_DIR}/envoy.yaml"
    assert Path(config).name in configmap(docs)["data"]


def test_the_wasm_is_mounted_read_only(renderings):
    for name, docs in renderings.items():
        mounts = {m["name"]: m for m in envoy(docs)["volumeMounts"]}
        assert mounts["wasm"]["mountPath"] == WASM_DIR and mounts["wasm"]["readOnly"] is True, name

    base = {v["name"]: v for v in pod_spec(renderings["base"])["volumes"]}
    assert set(base["wasm"]) == {"name", "image"}
    reference = base["wasm"]["image"]["reference"]
    assert re.fullmatch(r"\S+/healthlake-relay:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", reference), reference
    assert base["wasm"]["image"]["pullPolicy"] == "IfNotPresent"
    assert "initContainers" not in pod_spec(renderings["base"])

    # The component: the same volume name, an emptyDir filled by the init containers from the very
    # image the base would mount.
    spec = pod_spec(renderings["component"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(volumes["wasm"]) == {"name", "emptyDir"}
    fetch, unpack = spec["initContainers"]
    assert fetch["args"][:2] == ["export", reference]
    scratch = fetch["args"][2]
    assert any(scratch.startswith(m["mountPath"] + "/") and "emptyDir" in volumes[m["name"]]
               for m in fetch["volumeMounts"])
    assert unpack["image"] == envoy(renderings["component"])["image"]
    (writes,) = [m for m in unpack["volumeMounts"] if m["name"] == "wasm"]
    assert writes["mountPath"] == WASM_DIR and not writes.get("readOnly", False)
    script = unpack["command"][2]
    assert scratch in script and f"-C {WASM_DIR}" in script and "plugin.wasm" in script
    # The Pod Identity webhook adds nothing to them.
    annotations = one(renderings["component"], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations["eks.amazonaws.com/skip-containers"].split(",")) == {fetch["name"], unpack["name"]}


def test_generated_configuration_agrees_with_the_pod(docs):
    """The contract between scripts/deploy.py's envoy.yaml and this Deployment."""
    config = generated_config(docs)
    container = envoy(docs)
    admin = config["admin"]["address"]["socket_address"]
    assert (admin["address"], admin["port_value"]) == ADMIN, "the admin interface stays on loopback"
    fhir, health = listener_on(config, FHIR_PORT), listener_on(config, HEALTH_PORT)
    for listener in (fhir, health):
        assert listener["address"]["socket_address"]["address"] == "0.0.0.0"
    assert {p["containerPort"] for p in container["ports"]} == {FHIR_PORT, HEALTH_PORT}
    # The preStop hook drains the inbound listeners only (drain_listeners?inboundonly): the FHIR
    # listener must be INBOUND, the health listener not, so that /ready answers 503 (not a refused
    # connection) and Prometheus can scrape to the end.
    assert fhir.get("traffic_direction") == "INBOUND", \
        "the FHIR listener needs traffic_direction: INBOUND for the preStop drain"
    assert health.get("traffic_direction", "UNSPECIFIED") != "INBOUND"

    # The .wasm and the SDS file at the paths the pod mounts.
    wasm_files = [d["code"]["local"]["filename"] for d in every_dict(config)
                  if "code" in d and "runtime" in d]  # every Wasm vm_config
    assert wasm_files and set(wasm_files) == {WASM_FILE}
    sds_paths = {d["path_config_source"]["path"] for d in every_dict(config) if "path_config_source" in d}
    assert sds_paths == {SDS_FILE}
    assert Path(SDS_FILE).name in configmap(docs)["data"]
    sds = yaml.safe_load(configmap(docs)["data"]["sds-container-token.yaml"])
    assert [d["filename"] for d in every_dict(sds) if "filename" in d] == [POD_IDENTITY_TOKEN]

    # Every variable the plugin reads from Envoy's environment is set in the pod (or injected by
    # the Pod Identity webhook).
    host_env = {key for d in every_dict(config) for key in d.get("host_env_keys", [])}
    provided = {e["name"] for e in container["env"]} | WEBHOOK_ENV
    assert "RELAY_INBOUND_TOKENS" in host_env
    assert host_env <= provided, f"not set in the pod: {sorted(host_env - provided)}"


def plugin_configurations(config: dict) -> list[dict]:
    found = []
    for d in every_dict(config):
        value = d.get("configuration", {})
        if isinstance(value, dict) and "StringValue" in value.get("@type", ""):
            parsed = json.loads(value["value"])
            if "region" in parsed:
                found.append(parsed)
    return found


def test_memory_limit_fits_the_configured_body_budget(docs):
    """The worst case the plugin configuration allows must fit the memory limit (the arithmetic
    in deployment.yaml): each worker holds at most body_budget_bytes of bodies in its Wasm VM,
    Envoy's buffers hold the same bytes again, and a body may be copied twice more at once."""
    container = envoy(docs)
    workers = int(arg_value(container, "--concurrency"))
    limit_mib = quantity(container["resources"]["limits"]["memory"]) / 2**20
    (plugin, *_rest) = plugin_configurations(generated_config(docs))
    budget = plugin.get("body_budget_bytes", DEFAULT_BODY_BUDGET)
    max_body = plugin.get("max_body_bytes", DEFAULT_MAX_BODY)
    worst_mib = BASELINE_MIB + workers * (2 * budget + 2 * max_body) / 2**20
    assert worst_mib <= limit_mib, (
        f"{workers} workers x (2 x {budget} + 2 x {max_body}) bytes + {BASELINE_MIB} MiB = "
        f"{worst_mib:.0f} MiB > limits.memory {limit_mib:.0f} MiB: render with a smaller "
        f"RELAY_BODY_BUDGET_BYTES (at most {int((limit_mib - BASELINE_MIB) * 2**20 / workers / 2 - max_body)})")


def test_graceful_drain_timing(docs):
    container = envoy(docs)
    drain = int(arg_value(container, "--drain-time-s"))
    assert arg_value(container, "--drain-strategy") == "immediate"
    script = prestop_script(docs)
    assert f"admin={ADMIN[0]}/{ADMIN[1]}" in script
    fail = script.index("admin_post /healthcheck/fail")
    drain_call = script.index("admin_post '/drain_listeners?graceful&inboundonly'")
    assert fail < drain_call
    (sleep,) = [int(s) for s in re.findall(r"^\s*sleep (\d+)\s*$", script, re.M)]
    assert sleep >= drain, "the hook must last the whole drain (SIGTERM ends Envoy at once)"
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    assert grace >= sleep + 10, "the grace period must cover the hook and Envoy's exit, with margin"


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def refused(port: int) -> bool:
    try:
        get(port, "/")
    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
        return True
    return False


def test_prestop_hook_drains_a_real_envoy(renderings, emulator, tmp_path):
    """The hook's own script (from the rendered Deployment) against the relay in Envoy 1.40 on
    loopback (envoy.yaml rendered for the local emulator, as make run does): /ready turns 503, the
    writes' listener still delivers but asks clients to close, then stops accepting, while /live
    and Envoy itself stay up."""
    admin = relayctl.free_port()
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    relay = start_relay(tmp_path, emulator, env, settings_env={"RELAY_ADMIN_PORT": str(admin)},
                        extra_args=("--drain-time-s", "1", "--drain-strategy", "immediate"))
    try:
        assert get(relay.health_port, "/ready")[0] == 200
        # The script as deployed, but for the admin port chosen here and no final wait.
        script = prestop_script(renderings["base"])
        script, n_admin = re.subn(r"admin=127\.0\.0\.1/9901\b", f"admin=127.0.0.1/{admin}", script)
        script, n_sleep = re.subn(r"^(\s*)sleep \d+\s*$", r"\1sleep 0", script, flags=re.M)
        assert (n_admin, n_sleep) == (1, 1)
        hook = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=30)
        assert hook.returncode == 0, hook.stderr
        assert hook.stderr == "", hook.stderr

        assert get(relay.health_port, "/ready")[0] == 503
        r = send(relay.url, "PUT", "/Patient/drain-1", PATIENT, FHIR_HEADERS)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        assert r.header("connection") == "close"
        deadline = time.monotonic() + 10
        while not refused(relay.port):
            assert time.monotonic() < deadline, "the writes' listener still accepts after the drain"
            time.sleep(0.2)
        assert get(relay.health_port, "/live")[0] == 200
        assert get(relay.health_port, "/ready")[0] == 503
        assert relay.alive(), "Envoy exited after an inbound-only drain"
    finally:
        relay.stop()


# ---------------------------------------------------------------------------------------------
# IRSA instead of EKS Pod Identity: components/irsa


def test_the_irsa_component_swaps_the_configuration_and_names_the_same_role(kustomize, tmp_path):
    irsa = BASE / "components" / "irsa"
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {os.path.relpath(BASE, overlay)}\ncomponents:\n- {os.path.relpath(irsa, overlay)}\n")
    docs = render(kustomize, overlay)
    for obj in docs:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    # The ConfigMap holds exactly the component's generated files, none of the base's.
    data = configmap(docs)["data"]
    assert set(data) == {"envoy.yaml", "sds-web-identity-token.yaml"}
    for name, text in data.items():
        assert text == (irsa / name).read_text(), name
    config = yaml.safe_load(data["envoy.yaml"])
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert "sts_web_identity" in clusters and "container_credentials" not in clusters
    # The role the relay assumes is the one the ServiceAccount's annotation names (the webhook
    # projects the token for it).
    relay = next(f for f in every_dict(config) if isinstance(f, dict) and f.get("name") == "healthlake_relay")
    plugin = json.loads(relay["typed_config"]["config"]["configuration"]["value"])
    annotations = one(docs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == plugin["credentials"]["web_identity"]["role_arn"]


def test_the_image_volume_is_scheduled_only_where_the_image_unpacks(renderings):
    # The kubelet unpacks an image volume only for its node's platform: the base runs on nodes of
    # the platform the relay's OCI image names; the init-container component runs anywhere.
    import oci_image

    _, blobs = oci_image.image_blobs(b"\0asm\x01\0\0\0", oci_image.package())
    (config,) = [json.loads(b) for b in blobs.values() if b"rootfs" in b]
    base = pod_spec(renderings["base"])
    assert base["nodeSelector"] == {"kubernetes.io/arch": config["architecture"]}
    assert "kubernetes.io/arch" not in pod_spec(renderings["component"]).get("nodeSelector", {})
