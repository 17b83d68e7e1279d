"""The Kubernetes deployment (deploy/kubernetes), checked offline, as rendered.

The base and the base with components/wasm-init-container are rendered by the pinned kustomize
(make deploy-deps: build/tools/kustomize-<version>/kustomize), every rendered object is validated
strictly (unknown fields are errors) against Kubernetes' own schemas (kubernetes-validate), and the
properties the deployment promises are asserted on the rendered objects. Two tiers: the relay
replicas (a StatefulSet, whose pods' names are the keys of the front's ring, under a headless
Service that publishes not-ready pods) and the front (a Deployment, Smile CDR's endpoint through the
Service healthlake-relay). For each: replicas and spread, the disruption budget, the Services, the
NetworkPolicies (Smile CDR -> front -> relays), hardened containers, probes, resources, no AWS keys,
the inbound tokens' Secret referenced and never defined, the generated Envoy configurations in the
ConfigMaps byte for byte, and the contract between those configurations and the pods (ports, paths,
admin address, drain, environment, the front's endpoints = the StatefulSet's pods). The preStop
hooks' scripts run against real Envoys on loopback. No cluster is involved and nothing leaves this
machine.
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

import deploy  # noqa: E402
import relayctl  # noqa: E402
from conftest import every_dict, relay_env, send, start_relay  # noqa: E402

PATIENT = json.dumps({"resourceType": "Patient", "id": "drain-1", "meta": {"versionId": "1"}}).encode()
FHIR_HEADERS = {"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'}

BASE = ROOT / "deploy" / "kubernetes"
COMPONENT = BASE / "components" / "wasm-init-container"
GENERATED = ("envoy.yaml", "sds-container-token.yaml")
FRONT_GENERATED = ("envoy-front.yaml",)

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
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
SELECTOR = {"app.kubernetes.io/name": "healthlake-relay", "app.kubernetes.io/instance": "healthlake-relay"}
RELAY_SELECTOR = {**SELECTOR, "app.kubernetes.io/component": "relay"}
FRONT_SELECTOR = {**SELECTOR, "app.kubernetes.io/component": "front"}
STATEFULSET, FRONT = "healthlake-relay", "healthlake-relay-front"
SERVICE, HEADLESS = "healthlake-relay", "healthlake-relay-replicas"
# Variables the EKS Pod Identity webhook injects into the containers (not in the manifests).
WEBHOOK_ENV = {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"}
LONG_LIVED_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
# Envoy's resident memory with the relay and 2 workers before any body is held (MiB): 108.8 after
# 1,000,000 writes (bench/results/soak.md), 106.5 at peak with 2 workers (bench/results/latest.md).
BASELINE_MIB = 110
# The front (envoy-front.yaml, one worker), measured (front.yaml): 65 MiB idle, ~1.7 MiB per MiB of
# body in flight (the retry policy keeps each body until it is answered).
FRONT_BASELINE_MIB, FRONT_MIB_PER_BODY_MIB = 65, 1.7
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
    for name in GENERATED + FRONT_GENERATED:
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


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def statefulset(docs: list[dict]) -> dict:
    """The relay replicas."""
    return named(docs, "StatefulSet", STATEFULSET)


def front(docs: list[dict]) -> dict:
    """The front tier."""
    return named(docs, "Deployment", FRONT)


def workloads(docs: list[dict]) -> list[dict]:
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")) \
        == [("Deployment", FRONT), ("StatefulSet", STATEFULSET)]
    return [statefulset(docs), front(docs)]


def pod_spec(docs: list[dict]) -> dict:
    return statefulset(docs)["spec"]["template"]["spec"]


def pod_labels(docs: list[dict]) -> dict:
    return statefulset(docs)["spec"]["template"]["metadata"]["labels"]


def front_spec(docs: list[dict]) -> dict:
    return front(docs)["spec"]["template"]["spec"]


def front_labels(docs: list[dict]) -> dict:
    return front(docs)["spec"]["template"]["metadata"]["labels"]


def containers_of(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def all_containers(docs: list[dict]) -> list[dict]:
    return containers_of(pod_spec(docs)) + containers_of(front_spec(docs))


def envoy(docs: list[dict]) -> dict:
    """The relay replicas' Envoy container."""
    (container,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "envoy"]
    return container


def front_envoy(docs: list[dict]) -> dict:
    (container,) = front_spec(docs)["containers"]
    assert container["name"] == "envoy"
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
    """The relay replicas' ConfigMap (kustomize adds a hash to the name)."""
    (found,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("healthlake-relay-envoy-")]
    return found


def front_configmap(docs: list[dict]) -> dict:
    (found,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("healthlake-relay-front-")]
    return found


def generated_config(docs: list[dict]) -> dict:
    return yaml.safe_load(configmap(docs)["data"]["envoy.yaml"])


def front_config(docs: list[dict]) -> dict:
    return yaml.safe_load(front_configmap(docs)["data"]["envoy-front.yaml"])


def listener_on(config: dict, port: int) -> dict:
    found = [listener for listener in config["static_resources"]["listeners"]
             if listener["address"]["socket_address"]["port_value"] == port]
    assert len(found) == 1, f"expected one listener on port {port} in the generated envoy.yaml"
    return found[0]


def prestop_script(container: dict) -> str:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"] and len(command) == 3, command
    return command[2]


def replicas(docs: list[dict]) -> int:
    return statefulset(docs)["spec"]["replicas"]


def pod_names(docs: list[dict]) -> list[str]:
    """The StatefulSet's pods: <name>-0 ... <name>-(replicas - 1)."""
    return [f"{statefulset(docs)['metadata']['name']}-{i}" for i in range(replicas(docs))]


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
    relays = statefulset(renderings["base"])
    kubernetes_validate.validate(relays, "1.37.0", strict=True)

    misspelt = copy.deepcopy(relays)
    security = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    kubernetes_validate.validate(misspelt, "1.37.0", strict=False)  # only strict catches it
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(misspelt, "1.37.0", strict=True)

    misspelt = copy.deepcopy(relays)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(misspelt, "1.37.0", strict=True)

    # A Service field misspelt: the headless Service's publishNotReadyAddresses is what keeps a
    # replica on the front's ring; a typo there must not pass silently.
    misspelt = copy.deepcopy(named(renderings["base"], "Service", HEADLESS))
    misspelt["spec"]["publishNotReadyAddress"] = misspelt["spec"].pop("publishNotReadyAddresses")
    with pytest.raises(kubernetes_validate.ValidationError, match="publishNotReadyAddress"):
        kubernetes_validate.validate(misspelt, "1.37.0", strict=True)

    # And the base's image volume is a field older Kubernetes does not know.
    with pytest.raises(kubernetes_validate.ValidationError, match="image"):
        kubernetes_validate.validate(relays, "1.30.0", strict=True)


# ---------------------------------------------------------------------------------------------
# What is deployed


def test_objects_and_namespace(docs):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "ConfigMap")
    assert kinds == sorted([
        ("ServiceAccount", "healthlake-relay"), ("ServiceAccount", FRONT),
        ("StatefulSet", STATEFULSET), ("Deployment", FRONT),
        ("Service", SERVICE), ("Service", HEADLESS),
        *[("Service", name) for name in pod_names(docs)],
        ("PodDisruptionBudget", "healthlake-relay"), ("PodDisruptionBudget", FRONT),
        ("NetworkPolicy", "healthlake-relay"), ("NetworkPolicy", FRONT),
    ])
    assert configmap(docs) and front_configmap(docs) and len(of_kind(docs, "ConfigMap")) == 2
    assert {d["metadata"].get("namespace") for d in docs} == {"healthlake-relay"}


def test_the_inbound_tokens_secret_is_referenced_never_defined(docs):
    assert not of_kind(docs, "Secret"), "the base must not carry the Secret (nor its value)"
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in envoy(docs)["env"]
              if e["name"] == "RELAY_INBOUND_TOKENS"]
    assert ref == {"name": "healthlake-relay-inbound-tokens", "key": "tokens", "optional": False}
    # The front checks no token (the relay does): it gets no Secret at all.
    assert "secretKeyRef" not in json.dumps(front(docs))


def test_no_long_lived_aws_keys_and_never_the_node_role(docs):
    for container in all_containers(docs):
        names = {e["name"] for e in container.get("env", [])}
        assert not names & LONG_LIVED_KEYS, f"{container['name']} sets {names & LONG_LIVED_KEYS}"
        # envFrom would import whatever keys a Secret or ConfigMap holds.
        assert "envFrom" not in container, container["name"]
    env = {e["name"]: e.get("value") for e in envoy(docs)["env"]}
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_service_accounts_without_api_token_and_the_role_for_the_relays_only(docs):
    relay_account = named(docs, "ServiceAccount", "healthlake-relay")
    front_account = named(docs, "ServiceAccount", FRONT)
    for account, spec in ((relay_account, pod_spec(docs)), (front_account, front_spec(docs))):
        assert account["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        # Pod Identity is the default: the IRSA annotation stays a comment.
        assert "eks.amazonaws.com/role-arn" not in account["metadata"].get("annotations", {})
    # The front never signs: not the ServiceAccount the role is associated with.
    assert front_spec(docs)["serviceAccountName"] != pod_spec(docs)["serviceAccountName"]


def spread(spec: dict, labels: dict) -> dict:
    constraints = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    for constraint in constraints.values():
        assert constraint["maxSkew"] == 1
        assert selects(constraint["labelSelector"]["matchLabels"], labels)
    return constraints


def test_the_relay_replicas_are_a_statefulset_of_stable_names(docs):
    relays = statefulset(docs)["spec"]
    # As many replicas as the shipped front's ring has endpoints (deploy.py's fleet default).
    assert relays["replicas"] == int(deploy.FLEET["RELAY_REPLICAS"]) >= 2
    assert relays["serviceName"] == HEADLESS
    assert relays["podManagementPolicy"] == "Parallel"
    assert relays["updateStrategy"]["type"] == "RollingUpdate"
    assert relays["updateStrategy"].get("rollingUpdate", {}).get("partition", 0) == 0
    assert relays["minReadySeconds"] >= 5
    assert "volumeClaimTemplates" not in relays, "the relay keeps no state on disk"
    # Spread over all the relay pods whatever their revision: a StatefulSet's pods have no
    # pod-template-hash label (a matchLabelKeys on it would match nothing).
    for constraint in spread(pod_spec(docs), pod_labels(docs)).values():
        assert "pod-template-hash" not in constraint.get("matchLabelKeys", [])


def test_the_front_is_a_deployment_of_two_spread_pods(docs):
    spec = front(docs)["spec"]
    assert spec["replicas"] >= 2
    strategy = spec["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    spread(front_spec(docs), front_labels(docs))
    # No node selector: the front mounts no image volume (the envoy image is multi-platform).
    assert "nodeSelector" not in front_spec(docs)


def test_selectors_are_stable_and_tell_the_tiers_apart(docs):
    relays, fronts = statefulset(docs), front(docs)
    assert relays["spec"]["selector"] == {"matchLabels": RELAY_SELECTOR}
    assert fronts["spec"]["selector"] == {"matchLabels": FRONT_SELECTOR}
    assert selects(RELAY_SELECTOR, pod_labels(docs)) and not selects(RELAY_SELECTOR, front_labels(docs))
    assert selects(FRONT_SELECTOR, front_labels(docs)) and not selects(FRONT_SELECTOR, pod_labels(docs))
    selectors = {
        "relay PDB": (named(docs, "PodDisruptionBudget", "healthlake-relay")["spec"]["selector"]["matchLabels"], RELAY_SELECTOR),
        "front PDB": (named(docs, "PodDisruptionBudget", FRONT)["spec"]["selector"]["matchLabels"], FRONT_SELECTOR),
        "Service": (named(docs, "Service", SERVICE)["spec"]["selector"], FRONT_SELECTOR),
        "headless Service": (named(docs, "Service", HEADLESS)["spec"]["selector"], RELAY_SELECTOR),
        "relay NetworkPolicy": (named(docs, "NetworkPolicy", "healthlake-relay")["spec"]["podSelector"]["matchLabels"], RELAY_SELECTOR),
        "front NetworkPolicy": (named(docs, "NetworkPolicy", FRONT)["spec"]["podSelector"]["matchLabels"], FRONT_SELECTOR),
    }
    for what, (selector, expected) in selectors.items():
        assert selector == expected, f"{what}: a selector must not carry labels that change (version, ...)"


def test_disruption_budgets_cover_each_tier(docs):
    for name, labels, other in (("healthlake-relay", pod_labels(docs), front_labels(docs)),
                                (FRONT, front_labels(docs), pod_labels(docs))):
        budget = named(docs, "PodDisruptionBudget", name)["spec"]
        assert selects(budget["selector"]["matchLabels"], labels), name
        assert not selects(budget["selector"]["matchLabels"], other), name
        # One pod away at a time: for the relays, one replica's resources unavailable (503
        # replica-unavailable, Smile CDR retries) until it is back; for the front, the other serves.
        assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget, name


def test_smile_cdr_reaches_the_front_through_the_service(docs):
    service = named(docs, "Service", SERVICE)["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert "clusterIP" not in service or service["clusterIP"] != "None"
    assert selects(service["selector"], front_labels(docs))
    assert not selects(service["selector"], pod_labels(docs)), "Smile CDR must never reach a relay directly"
    (port,) = service["ports"]
    assert (port["name"], port["port"], port["appProtocol"], port.get("protocol", "TCP")) == \
        ("http-fhir", FHIR_PORT, "http", "TCP")
    assert container_port(front_envoy(docs), port["targetPort"]) == FHIR_PORT


def test_the_headless_service_publishes_every_replica(docs):
    """The replicas' DNS names for the front: one record per pod, ready or not. Without
    publishNotReadyAddresses a pod that cannot sign leaves DNS, the front's STRICT_DNS cluster drops
    it and its resources move to a replica whose version guard lacks their history
    (tests/test_deploy.py shows Envoy doing so)."""
    service = named(docs, "Service", HEADLESS)["spec"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is True
    assert selects(service["selector"], pod_labels(docs))
    assert not selects(service["selector"], front_labels(docs))
    assert statefulset(docs)["spec"]["serviceName"] == named(docs, "Service", HEADLESS)["metadata"]["name"]
    ports = {p["name"]: p for p in service["ports"]}
    assert set(ports) == {"http-fhir", "health"}
    assert container_port(envoy(docs), ports["http-fhir"]["targetPort"]) == FHIR_PORT == ports["http-fhir"]["port"]
    assert container_port(envoy(docs), ports["health"]["targetPort"]) == HEALTH_PORT == ports["health"]["port"]


def ports_of(rule: dict) -> set[tuple[int, str]]:
    assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
    return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}


def check_dns_rule(peers: list[dict]) -> None:
    assert all(p["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"} for p in peers)
    assert all(p["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"} for p in peers)


def test_network_policy_of_the_front(docs):
    """Smile CDR's pods -> the front's FHIR port only; the front -> DNS and the relay pods' FHIR and
    health ports only."""
    policy = named(docs, "NetworkPolicy", FRONT)["spec"]
    assert selects(policy["podSelector"]["matchLabels"], front_labels(docs))
    assert not selects(policy["podSelector"]["matchLabels"], pod_labels(docs))
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    (rule,) = policy["ingress"]
    assert ports_of(rule) == {(FHIR_PORT, "TCP")}
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector", "podSelector"}, "Smile CDR's pods in Smile CDR's namespace"
    assert peer["namespaceSelector"]["matchLabels"], f"peer in any namespace: {peer}"
    assert peer["podSelector"]["matchLabels"] == SMILE_CDR

    seen = set()
    for rule in policy["egress"]:
        peers = rule.get("to")
        assert peers, f"an egress rule without peers allows every address: {rule}"
        allowed = ports_of(rule)
        if allowed == {(53, "UDP"), (53, "TCP")}:
            seen.add("dns")
            check_dns_rule(peers)
        elif allowed == {(FHIR_PORT, "TCP"), (HEALTH_PORT, "TCP")}:
            seen.add("relays")
            (peer,) = peers
            # This namespace's relay pods, by their labels, nothing else (no ipBlock).
            assert set(peer) == {"podSelector"}
            assert selects(peer["podSelector"]["matchLabels"], pod_labels(docs))
            assert not selects(peer["podSelector"]["matchLabels"], front_labels(docs))
        else:
            pytest.fail(f"unexpected egress rule of the front {rule}")
    assert seen == {"dns", "relays"}


def test_network_policy_of_the_relays(docs):
    """The front's pods -> the relays' FHIR port (never Smile CDR directly); the front and
    Prometheus -> the health port; the relays -> DNS, HTTPS to public addresses, the Pod Identity
    agent."""
    policy = named(docs, "NetworkPolicy", "healthlake-relay")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(docs))
    assert not selects(policy["podSelector"]["matchLabels"], front_labels(docs))
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    admitted: dict[tuple[int, str], list[dict]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), f"a rule without peers admits everyone: {rule}"
        for peer in rule["from"]:
            assert "ipBlock" not in peer, f"ingress by address: {peer}"
            assert peer.get("podSelector", {}).get("matchLabels"), f"any pod of a namespace: {peer}"
            for port in ports_of(rule):
                admitted.setdefault(port, []).append(peer)
    assert set(admitted) == {(FHIR_PORT, "TCP"), (HEALTH_PORT, "TCP")}

    def is_front(peer):
        # No namespaceSelector: pods of this namespace only.
        return set(peer) == {"podSelector"} and selects(peer["podSelector"]["matchLabels"], front_labels(docs)) \
            and not selects(peer["podSelector"]["matchLabels"], pod_labels(docs))

    (fhir_peer,) = admitted[(FHIR_PORT, "TCP")]
    assert is_front(fhir_peer), f"the FHIR port admits the front only: {fhir_peer}"
    assert all(peer["podSelector"]["matchLabels"] != SMILE_CDR for peer in admitted[(FHIR_PORT, "TCP")])
    health = admitted[(HEALTH_PORT, "TCP")]
    assert len(health) == 2 and sum(is_front(p) for p in health) == 1
    (prometheus,) = [p for p in health if not is_front(p)]
    assert prometheus["podSelector"]["matchLabels"] == PROMETHEUS
    assert prometheus["namespaceSelector"]["matchLabels"], "Prometheus's namespace, named"

    # Egress: DNS to the cluster's DNS pods, HTTPS to public addresses, the Pod Identity agent.
    seen = set()
    for rule in policy["egress"]:
        allowed = ports_of(rule)
        peers = rule.get("to")
        assert peers, f"an egress rule without peers allows every address: {rule}"
        if allowed == {(53, "UDP"), (53, "TCP")}:
            seen.add("dns")
            check_dns_rule(peers)
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
    for spec in (pod_spec(docs), front_spec(docs)):
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == 101
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        for container in containers_of(spec):
            security = container["securityContext"]
            assert security.get("runAsNonRoot", pod_security["runAsNonRoot"]) is True, container["name"]
            assert security.get("runAsUser", pod_security["runAsUser"]) == 101, container["name"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security.get("privileged", False) is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
            assert not security["capabilities"].get("add"), container["name"]
            assert security.get("seccompProfile", pod_security["seccompProfile"])["type"] == "RuntimeDefault"
    assert pod_spec(docs)["securityContext"]["fsGroup"] == 101  # reads the projected Pod Identity token
    assert len(containers_of(pod_spec(docs))) == (1 if "initContainers" not in pod_spec(docs) else 3)
    assert len(containers_of(front_spec(docs))) == 1


def test_resources_are_bounded(docs):
    for container in all_containers(docs):
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for resource in ("cpu", "memory", "ephemeral-storage"):
            assert quantity(requests[resource]) <= quantity(limits[resource]), (container["name"], resource)


def test_the_front_is_smaller_than_a_relay(docs):
    """It only proxies: less CPU than a relay replica (no Wasm, no signing)."""
    relay, fronts = envoy(docs)["resources"], front_envoy(docs)["resources"]
    assert quantity(fronts["requests"]["cpu"]) < quantity(relay["requests"]["cpu"])
    assert quantity(fronts["requests"]["memory"]) < quantity(relay["requests"]["memory"])
    assert quantity(fronts["limits"]["cpu"]) <= quantity(relay["limits"]["cpu"])


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


def test_the_front_probes_its_fhir_port(docs):
    """The front has no health listener (its admin interface is on loopback): liveness is a TCP
    probe of the port Smile CDR connects to; readiness a script in the container that wants every
    replica on the ring (tested against Envoy below), independent of the replicas' health."""
    container = front_envoy(docs)
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert set(live) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"tcpSocket"}
    assert container_port(container, live["tcpSocket"]["port"]) == FHIR_PORT
    assert set(ready) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"exec"}
    assert "membership_total" in ready["exec"]["command"][2]
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]
    # Liveness must not kill a pod that drains (its port stops accepting after --drain-time-s).
    assert live["periodSeconds"] * live["failureThreshold"] > front_spec(docs)["terminationGracePeriodSeconds"]


def test_prometheus_scrapes_the_health_port(docs):
    annotations = statefulset(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(HEALTH_PORT)
    assert annotations["prometheus.io/path"] == "/stats/prometheus"
    # The front has no port to scrape (nothing would answer).
    assert "prometheus.io/scrape" not in front(docs)["spec"]["template"]["metadata"].get("annotations", {})


def test_envoy_image_is_new_enough(docs):
    for container in (envoy(docs), front_envoy(docs)):
        image = container["image"]
        match = re.fullmatch(r"docker\.io/envoyproxy/envoy:v(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", image)
        assert match, image
        assert (int(match.group(1)), int(match.group(2))) >= (1, 35), "Envoy 1.35+ is required"
    assert front_envoy(docs)["image"] == envoy(docs)["image"], "the same Envoy in both tiers"


def test_concurrency_matches_the_cpu_limit(docs):
    for container in (envoy(docs), front_envoy(docs)):
        assert int(arg_value(container, "--concurrency")) == quantity(container["resources"]["limits"]["cpu"])


# ---------------------------------------------------------------------------------------------
# The generated configurations and the pods


def test_configmap_holds_exactly_the_generated_files(docs):
    for cm, files, spec, container in ((configmap(docs), GENERATED, pod_spec(docs), envoy(docs)),
                                       (front_configmap(docs), FRONT_GENERATED, front_spec(docs), front_envoy(docs))):
        name = cm["metadata"]["name"]
        assert re.fullmatch(r"healthlake-relay-(envoy|front)-[a-z0-9]{10}", name), \
            "the ConfigMap's name must carry the content hash (a new configuration rolls the pods)"
        assert "binaryData" not in cm
        assert set(cm["data"]) == set(files)
        for file in files:
            assert cm["data"][file] == (BASE / file).read_bytes().decode("utf-8"), file
        # The pod mounts that very ConfigMap (kustomize rewrote the reference to the hashed name).
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["config"]["configMap"]["name"] == name
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["config"]["mountPath"] == CONFIG_DIR and mounts["config"]["readOnly"] is True


def test_envoy_reads_the_mounted_configuration(docs):
    for container, cm, file in ((envoy(docs), configmap(docs), "envoy.yaml"),
                                (front_envoy(docs), front_configmap(docs), "envoy-front.yaml")):
        assert container["command"] == ["/usr/local/bin/envoy"]
        config = arg_value(container, "-c")
        assert config == f"{CONFIG_DIR}/{file}"
        assert Path(config).name in cm["data"]


def test_the_wasm_is_mounted_read_only(renderings):
    for name, docs in renderings.items():
        mounts = {m["name"]: m for m in envoy(docs)["volumeMounts"]}
        assert mounts["wasm"]["mountPath"] == WASM_DIR and mounts["wasm"]["readOnly"] is True, name
        # The front runs no Wasm: no image volume, no init containers, in either rendering.
        assert "wasm" not in {v["name"] for v in front_spec(docs)["volumes"]}, name
        assert "initContainers" not in front_spec(docs), name

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
    annotations = statefulset(renderings["component"])["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations["eks.amazonaws.com/skip-containers"].split(",")) == {fetch["name"], unpack["name"]}
    # Only the StatefulSet is patched: the front is the same with or without the component.
    assert front(renderings["component"]) == front(renderings["base"])


def test_generated_configuration_agrees_with_the_pod(docs):
    """The contract between scripts/deploy.py's envoy.yaml and the relay replicas' pods."""
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

    # Every variable the plugin reads from Envoy's environment, and every one Envoy's formatters
    # read (%ENVIRONMENT(...)%, the access log's replica), is set in the pod (or injected by the Pod
    # Identity webhook).
    host_env = {key for d in every_dict(config) for key in d.get("host_env_keys", [])}
    formatter_env = set(re.findall(r"%ENVIRONMENT\(([A-Za-z0-9_]+)\)", configmap(docs)["data"]["envoy.yaml"]))
    provided = {e["name"] for e in container["env"]} | WEBHOOK_ENV
    assert "RELAY_INBOUND_TOKENS" in host_env and "RELAY_REPLICA" in formatter_env
    assert host_env | formatter_env <= provided, f"not set in the pod: {sorted((host_env | formatter_env) - provided)}"


def test_each_access_log_line_names_its_pod(docs):
    """RELAY_REPLICA (the access log's replica) is the pod's own name, from the downward API: the
    same name the front's ring knows the replica by."""
    (replica,) = [e for e in envoy(docs)["env"] if e["name"] == "RELAY_REPLICA"]
    assert replica == {"name": "RELAY_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def test_the_front_configuration_names_the_statefulsets_pods(docs):
    """The contract between the front's envoy-front.yaml and the relay replicas: one endpoint per
    pod of the StatefulSet, keyed on the ring by the pod's name (its hash_key), reached through a
    ClusterIP Service of that name selecting that pod alone (its virtual address stays while the pod
    is replaced or not ready: the ring never changes), on the relay container's FHIR port,
    health-checked on its health port; and the front's own listener, admin interface and drain."""
    config = front_config(docs)
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["lb_policy"] == "RING_HASH"
    assert cluster["type"] == "STRICT_DNS", "pod names resolve through the cluster's DNS"
    assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 100, "routing ignores health"
    endpoints = [e for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    names = pod_names(docs)
    assert [e["metadata"]["filter_metadata"]["envoy.lb"]["hash_key"] for e in endpoints] == names
    relay = envoy(docs)
    for name, endpoint in zip(names, endpoints):
        address = endpoint["endpoint"]["address"]["socket_address"]
        # The pod's own Service, by its short name: resolved through the pod's search domains
        # (<namespace>.svc...), so the namespace is not written anywhere.
        assert address["address"] == name
        service = named(docs, "Service", name)["spec"]
        assert service["selector"] == {"statefulset.kubernetes.io/pod-name": name}
        assert service.get("clusterIP") != "None" and service["publishNotReadyAddresses"] is True
        ports = {p["port"]: p["targetPort"] for p in service["ports"]}
        assert ports[address["port_value"]] == "http-fhir"
        assert container_port(relay, "http-fhir") == FHIR_PORT == address["port_value"]
        health = endpoint["endpoint"]["health_check_config"]["port_value"]
        assert ports[health] == "health" and container_port(relay, "health") == health
    (check,) = cluster["health_checks"]
    assert check["http_health_check"]["path"] == "/ready"

    container = front_envoy(docs)
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": FHIR_PORT}
    assert {p["containerPort"] for p in container["ports"]} == {FHIR_PORT}
    assert listener.get("traffic_direction") == "INBOUND", "the preStop drain is inbound-only"
    admin = config["admin"]["address"]["socket_address"]
    assert (admin["address"], admin["port_value"]) == ADMIN, "the admin interface stays on loopback"
    # Everything the front reads from its environment is set (nothing, today).
    wanted = set(re.findall(r"%ENVIRONMENT\(([A-Za-z0-9_]+)\)", front_configmap(docs)["data"]["envoy-front.yaml"]))
    assert wanted <= {e["name"] for e in container.get("env", [])}


def plugin_configurations(config: dict) -> list[dict]:
    found = []
    for d in every_dict(config):
        value = d.get("configuration", {})
        if isinstance(value, dict) and "StringValue" in value.get("@type", ""):
            parsed = json.loads(value["value"])
            if "region" in parsed:
                found.append(parsed)
    return found


def body_limits(docs: list[dict]) -> tuple[int, int]:
    (plugin, *_rest) = plugin_configurations(generated_config(docs))
    return plugin.get("body_budget_bytes", DEFAULT_BODY_BUDGET), plugin.get("max_body_bytes", DEFAULT_MAX_BODY)


def test_memory_limit_fits_the_configured_body_budget(docs):
    """The worst case the plugin configuration allows must fit the memory limit (the arithmetic
    in statefulset.yaml): each worker holds at most body_budget_bytes of bodies in its Wasm VM,
    Envoy's buffers hold the same bytes again, and a body may be copied twice more at once."""
    container = envoy(docs)
    workers = int(arg_value(container, "--concurrency"))
    limit_mib = quantity(container["resources"]["limits"]["memory"]) / 2**20
    budget, max_body = body_limits(docs)
    worst_mib = BASELINE_MIB + workers * (2 * budget + 2 * max_body) / 2**20
    assert worst_mib <= limit_mib, (
        f"{workers} workers x (2 x {budget} + 2 x {max_body}) bytes + {BASELINE_MIB} MiB = "
        f"{worst_mib:.0f} MiB > limits.memory {limit_mib:.0f} MiB: render with a smaller "
        f"RELAY_BODY_BUDGET_BYTES (at most {int((limit_mib - BASELINE_MIB) * 2**20 / workers / 2 - max_body)})")


def test_the_fronts_memory_limit_holds_what_the_relays_can_hold(docs):
    """One front pod (the other away) holds a copy of every body in flight to the relays, which hold
    at most workers x body budget each (the arithmetic in front.yaml)."""
    workers = int(arg_value(envoy(docs), "--concurrency"))
    budget, _ = body_limits(docs)
    in_flight_mib = replicas(docs) * workers * budget / 2**20
    worst_mib = FRONT_BASELINE_MIB + FRONT_MIB_PER_BODY_MIB * in_flight_mib
    limit_mib = quantity(front_envoy(docs)["resources"]["limits"]["memory"]) / 2**20
    assert worst_mib <= limit_mib, f"{worst_mib:.0f} MiB > the front's limits.memory {limit_mib:.0f} MiB"


def test_graceful_drain_timing(docs):
    for container, spec, health in ((envoy(docs), pod_spec(docs), True), (front_envoy(docs), front_spec(docs), False)):
        drain = int(arg_value(container, "--drain-time-s"))
        assert arg_value(container, "--drain-strategy") == "immediate"
        script = prestop_script(container)
        assert f"admin={ADMIN[0]}/{ADMIN[1]}" in script
        drain_call = script.index("admin_post '/drain_listeners?graceful&inboundonly'")
        if health:
            # The relay's /ready turns 503 first.
            assert script.index("admin_post /healthcheck/fail") < drain_call
        (sleep,) = [int(s) for s in re.findall(r"^\s*sleep (\d+)\s*$", script, re.M)]
        assert sleep >= drain, "the hook must last the whole drain (SIGTERM ends Envoy at once)"
        grace = spec["terminationGracePeriodSeconds"]
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


def deployed_hook(container: dict, admin: int) -> str:
    """The hook's script as deployed, but for the admin port chosen here and no final wait."""
    script = prestop_script(container)
    script, n_admin = re.subn(r"admin=127\.0\.0\.1/9901\b", f"admin=127.0.0.1/{admin}", script)
    script, n_sleep = re.subn(r"^(\s*)sleep \d+\s*$", r"\1sleep 0", script, flags=re.M)
    assert (n_admin, n_sleep) == (1, 1)
    return script


def run_hook(script: str) -> None:
    hook = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert hook.returncode == 0, hook.stderr
    assert hook.stderr == "", hook.stderr


def wait_refused(port: int) -> None:
    deadline = time.monotonic() + 10
    while not refused(port):
        assert time.monotonic() < deadline, "the writes' listener still accepts after the drain"
        time.sleep(0.2)


def test_prestop_hook_drains_a_real_envoy(renderings, emulator, tmp_path):
    """The relay's hook's own script (from the rendered StatefulSet) against the relay in Envoy 1.40
    on loopback (envoy.yaml rendered for the local emulator, as make run does): /ready turns 503,
    the writes' listener still delivers but asks clients to close, then stops accepting, while /live
    and Envoy itself stay up."""
    admin = relayctl.free_port()
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    relay = start_relay(tmp_path, emulator, env, settings_env={"RELAY_ADMIN_PORT": str(admin)},
                        extra_args=("--drain-time-s", "1", "--drain-strategy", "immediate"))
    try:
        assert get(relay.health_port, "/ready")[0] == 200
        run_hook(deployed_hook(envoy(renderings["base"]), admin))

        assert get(relay.health_port, "/ready")[0] == 503
        r = send(relay.url, "PUT", "/Patient/drain-1", PATIENT, FHIR_HEADERS)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        assert r.header("connection") == "close"
        wait_refused(relay.port)
        assert get(relay.health_port, "/live")[0] == 200
        assert get(relay.health_port, "/ready")[0] == 503
        assert relay.alive(), "Envoy exited after an inbound-only drain"
    finally:
        relay.stop()


def test_the_fronts_prestop_hook_drains_a_real_envoy(renderings, tmp_path):
    """The front's hook's own script (from the rendered Deployment) against the front in Envoy 1.40
    on loopback (envoy-front.yaml rendered for one replica that is not running): answers carry
    Connection: close (Smile CDR reconnects, through the Service, to the other front pod), then the
    listener stops accepting while Envoy stays up."""
    admin = relayctl.free_port()
    settings = relayctl.Settings(listen_address="127.0.0.1", relay_port=relayctl.free_port(), admin_port=admin)
    absent = relayctl.Replica("healthlake-relay-0", "127.0.0.1", relayctl.free_port(), relayctl.free_port())
    path = relayctl.write_config(relayctl.render_front(settings, [absent], admin), tmp_path, "envoy-front.yaml")
    fronts = relayctl.start_envoy(path, tmp_path, relay_env(), concurrency=1, admin_port=admin,
                                  extra_args=("--drain-time-s", "1", "--drain-strategy", "immediate"))
    try:
        fronts.port = settings.relay_port
        status, headers = get(fronts.port, "/Patient/drain-1")
        assert (status, headers.get("x-healthlake-outcome")) == (503, "replica-unavailable")
        assert headers.get("connection") != "close"
        run_hook(deployed_hook(front_envoy(renderings["base"]), admin))

        status, headers = get(fronts.port, "/Patient/drain-1")
        assert (status, headers.get("x-healthlake-outcome")) == (503, "replica-unavailable")
        assert headers.get("connection") == "close"
        wait_refused(fronts.port)
        assert get(admin, "/ready")[0] == 200, "the admin interface stays up"
        assert fronts.alive(), "Envoy exited after an inbound-only drain"
    finally:
        fronts.stop()


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
    # The relays' ConfigMap holds exactly the component's generated files, none of the base's.
    data = configmap(docs)["data"]
    assert set(data) == {"envoy.yaml", "sds-web-identity-token.yaml"}
    for name, text in data.items():
        assert text == (irsa / name).read_text(), name
    # The StatefulSet mounts it; the front keeps its own.
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap(docs)["metadata"]["name"]
    assert front_configmap(docs)["data"]["envoy-front.yaml"] == (BASE / "envoy-front.yaml").read_text()
    config = yaml.safe_load(data["envoy.yaml"])
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert "sts_web_identity" in clusters and "container_credentials" not in clusters
    # The role the relay assumes is the one the relay's ServiceAccount's annotation names (the
    # webhook projects the token for it); the front's ServiceAccount gets none.
    relay = next(f for f in every_dict(config) if isinstance(f, dict) and f.get("name") == "healthlake_relay")
    plugin = json.loads(relay["typed_config"]["config"]["configuration"]["value"])
    annotations = named(docs, "ServiceAccount", "healthlake-relay")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == plugin["credentials"]["web_identity"]["role_arn"]
    assert not named(docs, "ServiceAccount", FRONT)["metadata"].get("annotations")


def test_the_image_volume_is_scheduled_only_where_the_image_unpacks(renderings):
    # The kubelet unpacks an image volume only for its node's platform: the base runs on nodes of
    # the platform the relay's OCI image names; the init-container component runs anywhere.
    import oci_image

    _, blobs = oci_image.image_blobs(b"\0asm\x01\0\0\0", oci_image.package())
    (config,) = [json.loads(b) for b in blobs.values() if b"rootfs" in b]
    base = pod_spec(renderings["base"])
    assert base["nodeSelector"] == {"kubernetes.io/arch": config["architecture"]}
    assert "kubernetes.io/arch" not in pod_spec(renderings["component"]).get("nodeSelector", {})


def test_the_front_is_ready_only_with_every_replica_on_its_ring(renderings, tmp_path):
    """The front's readiness script, as deployed, against a front Envoy 1.40 rendered for three
    replicas: ready while the ring has them all; not ready for a configuration naming a fourth
    that the ring lacks (as while one replica's name has not resolved yet)."""
    script = front_envoy(renderings["base"])["readinessProbe"]["exec"]["command"][2]
    admin = relayctl.free_port()
    settings = relayctl.Settings.from_env({
        "AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:9", "RELAY_PORT": "0", "RELAY_REPLICAS": "3",
        "AWS_ACCESS_KEY_ID": "AKIDFRONTPROBE", "AWS_SECRET_ACCESS_KEY": "front-probe-secret"})
    replicas = [relayctl.Replica(f"healthlake-relay-{i}", "127.0.0.1", relayctl.free_port(), relayctl.free_port())
                for i in range(3)]
    config = relayctl.write_config(relayctl.render_front(settings, replicas, admin), tmp_path, "envoy-front.yaml")
    front = relayctl.start_envoy(config, tmp_path, relay_env(), concurrency=1, admin_port=admin)
    try:
        def probe(config_file: Path) -> int:
            local = script.replace("/etc/healthlake-relay/config/envoy-front.yaml", str(config_file))
            local = local.replace("/dev/tcp/127.0.0.1/9901", f"/dev/tcp/127.0.0.1/{admin}")
            return subprocess.run(["/bin/bash", "-c", local], capture_output=True, timeout=10).returncode

        assert probe(config) == 0
        four = tmp_path / "four.yaml"
        four.write_text(config.read_text() + "# hash_key: healthlake-relay-3\n")
        assert probe(four) != 0
    finally:
        front.stop()
