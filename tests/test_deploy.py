"""The fleet deployment's Envoy configurations (deploy/, written by scripts/deploy.py from envoy.yaml
and envoy-front.yaml): what is committed is what the generator renders, and each passes `envoy
--mode validate` with the built .wasm, as it will be mounted in the pod; the front's finds the relay
replicas by their pod names as a pod in any namespace would."""

from __future__ import annotations

import http.client
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    # ... the front's too.
    shutil.copy(ROOT / "deploy" / "kubernetes" / "envoy.yaml", target)
    target = copy / "kubernetes" / "envoy-front.yaml"
    target.write_text(target.read_text().replace("healthlake-relay-2", "healthlake-relay-9"))
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--check", "--dir", str(copy)],
                           capture_output=True, text=True)
    assert check.returncode == 1 and "kubernetes/envoy-front.yaml is not what" in check.stderr, check.stderr
    assert "kubernetes/envoy.yaml" not in check.stderr


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


def test_the_generated_front_configuration_passes_envoy_validate(tmp_path):
    """envoy-front.yaml as shipped: a STRICT_DNS cluster of the replicas' own Services' names, which
    do not resolve here; validate mode builds the clusters without resolving any name."""
    path = ROOT / "deploy" / "kubernetes" / "envoy-front.yaml"
    config = yaml.safe_load(path.read_text())
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    hosts = [e["endpoint"]["address"]["socket_address"]["address"]
             for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert hosts == [f"healthlake-relay-{i}" for i in range(3)]
    checked = relayctl.validate_config(path, relay_env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check bites: a misspelt field is refused.
    (tmp_path / "broken.yaml").write_text(path.read_text().replace("healthy_panic_threshold", "healthy_panic_treshold", 1))
    assert relayctl.validate_config(tmp_path / "broken.yaml", relay_env()).returncode != 0


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
    # A bad value is named, as make run names it, in the plugin's own words (its Config::from_json).
    for variable, value, refusal in [
        ("AWS_REGION", "eu west",
         'field "region": expected an AWS region name such as us-east-1, got "eu west"'),
        ("RELAY_UNSUPPORTED_TYPE_TTL_SECONDS", "0",
         'field "unsupported_type_ttl_seconds": expected a number of seconds from 1 to 604800 (7 days)'),
    ]:
        bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(tmp_path / "bad")],
                             capture_output=True, text=True, env=relay_env(**{variable: value}))
        assert (bad.returncode, bad.stderr) == (2, f"deploy: {variable}: invalid plugin configuration: {refusal}\n")
        assert not (tmp_path / "bad").exists()


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
    relays = yaml.safe_load((out / "kubernetes" / "statefulset.yaml").read_text())
    (wasm,) = [v for v in relays["spec"]["template"]["spec"]["volumes"] if v["name"] == "wasm"]
    assert wasm["image"]["reference"] == pinned
    patch = yaml.safe_load((out / "kubernetes" / "components" / "wasm-init-container" / "statefulset-patch.yaml").read_text())
    (fetch,) = [c for c in patch["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch-wasm"]
    assert pinned in fetch["args"]
    for recipe in ("istio", "envoy-gateway"):
        text = (out / recipe / "healthlake-relay.yaml").read_text()
        assert "registry.internal/relay/healthlake-relay:0.1.0" in text and digest in text, recipe
        assert "registry.example.com" not in text, recipe


def front_endpoints(config: dict) -> list[dict]:
    (cluster,) = config["static_resources"]["clusters"]
    return [e for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]


def test_your_number_of_replicas_reaches_the_front_and_the_statefulset(tmp_path):
    out = tmp_path / "mine"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(out)],
                         capture_output=True, text=True, env=relay_env(RELAY_REPLICAS="5"))
    assert run.returncode == 0, run.stderr
    names = [f"healthlake-relay-{i}" for i in range(5)]
    endpoints = front_endpoints(yaml.safe_load((out / "kubernetes" / "envoy-front.yaml").read_text()))
    assert [e["metadata"]["filter_metadata"]["envoy.lb"]["hash_key"] for e in endpoints] == names
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == names
    services = [d for d in yaml.safe_load_all((out / "kubernetes" / "replica-services.yaml").read_text()) if d]
    assert [(d["metadata"]["name"], d["spec"]["selector"]["statefulset.kubernetes.io/pod-name"])
            for d in services] == [(name, name) for name in names]
    relays = yaml.safe_load((out / "kubernetes" / "statefulset.yaml").read_text())
    assert (relays["kind"], relays["metadata"]["name"], relays["spec"]["replicas"]) == ("StatefulSet", "healthlake-relay", 5)
    # Nothing else in the manifest changed.
    shipped = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "statefulset.yaml").read_text())
    shipped["spec"]["replicas"] = 5
    assert relays == shipped
    checked = relayctl.validate_config(out / "kubernetes" / "envoy-front.yaml", relay_env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The shipped example keeps the fleet's 3, whatever the caller's shell says.
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--check"],
                           capture_output=True, text=True, env=relay_env(RELAY_REPLICAS="5"))
    assert check.returncode == 0, check.stderr
    assert len(front_endpoints(yaml.safe_load((ROOT / "deploy" / "kubernetes" / "envoy-front.yaml").read_text()))) == 3
    # A number the relay refuses is named, nothing written.
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy.py"), "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=relay_env(RELAY_REPLICAS="0"))
    assert bad.returncode == 2 and "RELAY_REPLICAS" in bad.stderr
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------
# The front finding the replicas, as in a pod: a stub of the cluster's DNS, the pod's search
# domains, the shipped envoy-front.yaml.

NAMESPACE = "fhir-relay"  # not the example's: the file names no namespace


class StubDns:
    """The cluster's DNS for the test: A records of <name> for the FQDNs in `records` (changed by
    the test as Kubernetes would change them), NXDOMAIN for every other name; every question
    asked is kept."""

    def __init__(self, records: dict[str, str]):
        self.records = dict(records)
        self.asked: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            tid, flags = struct.unpack("!HH", data[:4])
            labels, at = [], 12
            while data[at]:
                labels.append(data[at + 1:at + 1 + data[at]].decode())
                at += data[at] + 1
            qtype = struct.unpack("!H", data[at + 1:at + 3])[0]
            question = data[12:at + 5]
            name = ".".join(labels).lower()
            self.asked.append(name)
            address = self.records.get(name)
            answer = b""
            if address and qtype == 1:
                answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
            rcode = 0 if address else 3
            header = struct.pack("!HHHHHH", tid, 0x8480 | (flags & 0x0100) | rcode, 1, 1 if answer else 0, 0, 0)
            self.sock.sendto(header + question + answer, peer)

    def close(self) -> None:
        self.sock.close()


class Replica:
    """A relay replica's stand-in: every request answered 200 with its name; /ready 503 while
    `ready` is false (a relay that cannot sign)."""

    def __init__(self, name: str):
        self.name, self.ready = name, True
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                status = 503 if self.path.startswith("/ready") and not replica.ready else 200
                body = replica.name.encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        self.port, self.health_port = (srv.server_address[1] for srv in self.servers)
        for srv in self.servers:
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()


def front_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_front_finds_the_replicas_by_their_services_and_why_their_names_must_stay(tmp_path):
    """The shipped envoy-front.yaml in Envoy, resolving through a stub of the cluster's DNS with a
    pod's search domains (LOCALDOMAIN and RES_OPTIONS, which c-ares reads as it reads the search
    and options lines of the pod's resolv.conf): the short names <pod> (each replica's own
    Service) resolve in whatever namespace, every resource has one home among the pods. A replica
    that cannot sign keeps its resources while its name resolves (routing ignores health); were its
    name withdrawn (as a pod's record under a headless Service goes while the pod has no address,
    which is why each replica has a Service of its own, whose address stays), Envoy would drop it
    and its resources would go to other replicas."""
    names = [f"healthlake-relay-{i}" for i in range(3)]
    fqdn = {name: f"{name}.{NAMESPACE}.svc.cluster.local" for name in names}
    replicas = {name: Replica(name) for name in names}
    dns = StubDns({fqdn[name]: "127.0.0.1" for name in names})
    config = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "envoy-front.yaml").read_text())
    # Changed here, and only this: the ports (all the stand-ins are on 127.0.0.1), the stub as the
    # resolver (the search domains still apply), and faster timers (health checks and DNS
    # refreshes every second, not every 5 s).
    port, admin = relayctl.free_port(), relayctl.free_port()
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    (cluster,) = config["static_resources"]["clusters"]
    for endpoint in front_endpoints(config):
        replica = replicas[endpoint["metadata"]["filter_metadata"]["envoy.lb"]["hash_key"]]
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = replica.port
        endpoint["endpoint"]["health_check_config"]["port_value"] = replica.health_port
    cluster["typed_dns_resolver_config"] = {
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns.port}}],
        },
    }
    cluster["dns_refresh_rate"] = "1s"
    cluster["health_checks"][0].update(interval="1s", no_traffic_interval="1s")
    path = relayctl.write_config(yaml.safe_dump(config, sort_keys=False), tmp_path, "envoy-front.yaml")
    env = relay_env(LOCALDOMAIN=f"{NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local",
                    RES_OPTIONS="ndots:5")
    envoy = relayctl.start_envoy(path, tmp_path, env, concurrency=1, admin_port=admin)

    def hosts() -> dict[str, str]:
        """The cluster's hosts: name -> health flags."""
        status, body = front_get(admin, "/clusters")
        found: dict[str, dict[str, str]] = {}
        for line in body.splitlines():
            parts = line.split("::")
            if parts[0] == "relay_replicas" and len(parts) == 4 and parts[2] in ("hostname", "health_flags"):
                found.setdefault(parts[1], {})[parts[2]] = parts[3]
        return {h["hostname"]: h.get("health_flags", "") for h in found.values()}

    resources = [f"/Patient/p{n}" for n in range(60)]

    def homes() -> dict[str, str]:
        answers = {}
        for resource in resources:
            status, body = front_get(port, resource + "?_format=json")
            answers[resource] = body if status == 200 else str(status)
        return answers

    try:
        wait_for(lambda: set(hosts()) == set(names), "the three replicas resolved")
        # The names were asked as the pod's resolver asks them: first with the pod's namespace.
        assert {fqdn[name] for name in names} <= set(dns.asked)
        before = homes()
        assert set(before.values()) == set(names), before
        assert homes() == before

        # healthlake-relay-1 cannot sign: /ready 503. Its name still resolves: it keeps its
        # resources (routing ignores health; its own 503 tells Smile CDR to retry).
        replicas["healthlake-relay-1"].ready = False
        wait_for(lambda: "failed_active_hc" in hosts()["healthlake-relay-1"], "the health check to fail")
        assert homes() == before

        # Were its name withdrawn (a pod's record under a headless Service while the pod has no
        # address): Envoy takes a name without records as a name without hosts, and its resources
        # would go elsewhere. The replica's own Service keeps its name and address.
        del dns.records[fqdn["healthlake-relay-1"]]
        wait_for(lambda: "healthlake-relay-1" not in hosts(), "the replica to leave the ring")
        after = homes()
        moved = {r for r in resources if before[r] == "healthlake-relay-1"}
        assert moved and all(after[r] in ("healthlake-relay-0", "healthlake-relay-2") for r in moved), after

        # Back in DNS: every resource at its home again (the ring is keyed by name).
        dns.records[fqdn["healthlake-relay-1"]] = "127.0.0.1"
        wait_for(lambda: "healthlake-relay-1" in hosts(), "the replica to return")
        assert homes() == before
    finally:
        envoy.stop()
        dns.close()
        for replica in replicas.values():
            replica.close()
