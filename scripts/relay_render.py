"""The relay's Envoy configurations rendered from the settings: envoy.yaml (the relay, with its
SDS files, the readiness probe and the access logs) and envoy-front.yaml (the front tier before
relay replicas). Shared by `make run`, `relayctl.py render`, `make deploy` and the tests."""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from relay_settings import BUILD, ROOT, Settings, SettingsError, plugin_json

TEMPLATE = ROOT / "envoy.yaml"
FRONT_TEMPLATE = ROOT / "envoy-front.yaml"
# Envoy's buffers sit this much above the relay's limit, so that the relay answers oversize bodies.
BUFFER_HEADROOM_BYTES = 1024 * 1024
# Points of each relay replica on the front's ring (envoy-front.yaml).
RING_POINTS_PER_REPLICA = 256


def sds_file(secret_name: str, filename: str) -> str:
    """A file-based SDS resource: a generic secret read from `filename` (a token file), re-read by
    Envoy when the file is replaced (a kubelet rotation, an atomic rename)."""
    return yaml.safe_dump({"resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": secret_name,
        "generic_secret": {"secret": {"filename": filename}},
    }]}, sort_keys=False)


# The SDS files a rendered configuration refers to, written beside it (they name token files,
# never hold a token).
WEB_IDENTITY_SDS = "sds-web-identity-token.yaml"
CONTAINER_SDS = "sds-container-token.yaml"


def render_files(settings: Settings, config_dir: Path, plugin_config: dict | None = None) -> dict[str, str]:
    """envoy.yaml with the settings filled in, and the SDS files it refers to, by file name (all to
    be written to `config_dir`)."""
    scheme, host, port = settings.upstream
    sts_scheme, sts_host, sts_port = settings.sts
    creds = settings.credentials
    files: dict[str, str] = {}
    if creds.web_identity_token_file:
        files[WEB_IDENTITY_SDS] = sds_file("web_identity_token", creds.web_identity_token_file)
    if creds.container_token_file:
        files[CONTAINER_SDS] = sds_file("container_authorization_token", creds.container_token_file)
    container_scheme, container_host, container_port, _ = creds.container if creds.container_url else ("http", "", 80, "")
    imds_host, imds_port = creds.imds if creds.imds_endpoint else ("", 80)
    values = {
        "RELAY_ADMIN_PORT": str(settings.admin_port),
        "RELAY_LISTEN_ADDRESS": settings.listen_address,
        "RELAY_PORT": str(settings.relay_port),
        "RELAY_HEALTH_PORT": str(settings.health_port),
        "RELAY_BUFFER_LIMIT_BYTES": str(settings.max_body_bytes + BUFFER_HEADROOM_BYTES),
        "RELAY_PLUGIN_CONFIG": plugin_json(plugin_config or settings.plugin_config()),
        "RELAY_WASM": str(settings.wasm),
        "HEALTHLAKE_ADDRESS": host,
        "HEALTHLAKE_PORT": str(port),
        "RELAY_CA_BUNDLE": settings.ca_bundle,
        "RELAY_MAX_CONNECTIONS": str(settings.max_connections),
        "STS_ADDRESS": sts_host,
        "STS_PORT": str(sts_port),
        "CREDENTIALS_SOURCE": creds.source + ("+assume-role" if settings.role_arn else ""),
        # Clusters of other sources are dropped below; their placeholders still need a value.
        "WEB_IDENTITY_TOKEN_SDS": str(config_dir / WEB_IDENTITY_SDS),
        "CONTAINER_TOKEN_SDS": str(config_dir / CONTAINER_SDS),
        "CONTAINER_ADDRESS": container_host or "unused",
        "CONTAINER_PORT": str(container_port),
        "IMDS_ADDRESS": imds_host or "unused",
        "IMDS_PORT": str(imds_port),
    }
    text = TEMPLATE.read_text()

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise SettingsError(f"envoy.yaml uses an unknown placeholder ${{{name}}}")
        return values[name]

    text = re.sub(r"\$\{([A-Z0-9_]+)\}", fill, text)
    config = yaml.safe_load(text)
    clusters = config["static_resources"]["clusters"]
    used = {
        "healthlake": True,
        "sts": bool(settings.role_arn),
        "sts_web_identity": creds.source == "web-identity",
        "container_credentials": creds.source == "container",
        "imds": creds.source == "imds",
    }
    clusters[:] = [c for c in clusters if used.get(c["name"], True)]
    for cluster in clusters:
        if cluster["name"] == "container_credentials" and not creds.container_token_file:
            del cluster["typed_extension_protocol_options"]
    wasm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    env_keys = wasm["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"]
    if creds.source != "environment":
        # The relay does not read them: they stay out of the Wasm VM.
        env_keys[:] = [k for k in env_keys
                       if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    if creds.container_token_in_env:
        env_keys.append("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    if settings.tls_cert_file:
        chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": settings.tls_cert_file},
                        "private_key": {"filename": settings.tls_key_file},
                    }],
                    "validation_context": {"trusted_ca": {"filename": settings.tls_client_ca_file}},
                },
            },
        }
    if settings.replicas == 1:
        # One Envoy: no replica to name (the field names the replica with RELAY_REPLICAS > 1).
        hcm = listener(config, "smile_cdr")["filter_chains"][0]["filters"][0]["typed_config"]
        del hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]["replica"]
    add_unanswered_log(config)
    add_readiness_probe(config, settings.admin_port)
    plain = {
        "healthlake": scheme == "http",
        "sts": sts_scheme == "http",
        "sts_web_identity": sts_scheme == "http",
        "container_credentials": container_scheme == "http",
    }
    for cluster in clusters:
        if plain.get(cluster["name"]) and "transport_socket" in cluster:
            del cluster["transport_socket"]
    header = "# Rendered from envoy.yaml by scripts/relayctl.py; edit the template, not this file.\n"
    files["envoy.yaml"] = header + yaml.safe_dump(config, sort_keys=False)
    return files


@dataclass
class Replica:
    """A relay replica as the front tier reaches it: its name (its place on the ring, and the
    access log's `replica`), address, listener port and health port."""

    name: str
    host: str
    port: int
    health_port: int


def replica_name(n: int) -> str:
    """The n-th (from 1) relay replica's name: the key of its place on the front's ring."""
    return f"relay-{n}"


def render_front(settings: Settings, replicas: list[Replica], admin_port: int = 0) -> str:
    """envoy-front.yaml with the settings filled in and one endpoint per replica (keyed by name on
    the ring). IP addresses make a STATIC cluster, names a STRICT_DNS one (each name resolving to
    its replica alone, as a Kubernetes StatefulSet's pods' names do)."""
    if not replicas:
        raise SettingsError("the front tier needs at least one relay replica")
    by_ip = all(is_ip(r.host) for r in replicas)
    values = {
        "FRONT_ADMIN_PORT": str(admin_port),
        "RELAY_LISTEN_ADDRESS": settings.listen_address,
        "RELAY_PORT": str(settings.relay_port),
        "RELAY_BUFFER_LIMIT_BYTES": str(settings.max_body_bytes + BUFFER_HEADROOM_BYTES),
        "RELAY_MAX_CONNECTIONS": str(settings.max_connections),
        "REPLICAS_CLUSTER_TYPE": "STATIC" if by_ip else "STRICT_DNS",
        "RING_SIZE": str(RING_POINTS_PER_REPLICA * len(replicas)),
    }
    text = re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: values[m.group(1)], FRONT_TEMPLATE.read_text())
    config = yaml.safe_load(text)
    (cluster,) = config["static_resources"]["clusters"]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [{
        "endpoint": {
            "hostname": r.name,
            "address": {"socket_address": {"address": r.host, "port_value": r.port}},
            "health_check_config": {"port_value": r.health_port},
        },
        "metadata": {"filter_metadata": {"envoy.lb": {"hash_key": r.name}}},
    } for r in replicas]}]
    header = "# Rendered from envoy-front.yaml by scripts/relayctl.py; edit the template, not this file.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render(settings: Settings, plugin_config: dict | None = None, config_dir: Path | None = None) -> str:
    """The rendered envoy.yaml alone (its SDS files, if any, are expected in `config_dir`)."""
    return render_files(settings, config_dir or BUILD, plugin_config)["envoy.yaml"]


def write_rendered(settings: Settings, config_dir: Path, plugin_config: dict | None = None,
                   name: str = "envoy.yaml") -> Path:
    """Renders into `config_dir`: the configuration (as `name`) and its SDS files."""
    files = render_files(settings, config_dir.resolve(), plugin_config)
    text = files.pop("envoy.yaml")
    for file_name, content in files.items():
        write_config(content, config_dir, file_name)
    return write_config(text, config_dir, name)


READINESS_ROOT_ID = "healthlake_relay_readiness"  # src/readiness.rs ROOT_ID


def listener(config: dict, name: str) -> dict:
    return next(item for item in config["static_resources"]["listeners"] if item["name"] == name)


def add_readiness_probe(config: dict, admin_port: int) -> None:
    """The health listener's /ready: the relay's own filter, copied from the writes' listener (the
    same configuration, so that the probe judges the credentials the writes use), under the root
    id whose instance answers the probe and never fetches. Without a fixed admin port (0: chosen
    by Envoy at start) there is no address for /stats/prometheus to reach: that route and its
    cluster go."""
    hcm = listener(config, "smile_cdr")["filter_chains"][0]["filters"][0]["typed_config"]
    relay = copy.deepcopy(next(f for f in hcm["http_filters"] if f["name"] == "healthlake_relay"))
    relay["typed_config"]["config"]["root_id"] = READINESS_ROOT_ID
    relay["typed_config"]["config"]["name"] = READINESS_ROOT_ID
    health = listener(config, "health")["filter_chains"][0]["filters"][0]["typed_config"]
    health["http_filters"].insert(0, relay)
    if admin_port == 0:
        routes = health["route_config"]["virtual_hosts"][0]["routes"]
        routes[:] = [r for r in routes if r.get("route", {}).get("cluster") != "envoy_admin"]
        clusters = config["static_resources"]["clusters"]
        clusters[:] = [c for c in clusters if c["name"] != "envoy_admin"]


def add_unanswered_log(config: dict) -> None:
    """Beside the access log of answered requests, one for requests that got no answer (status 0:
    the client went away first): the same fields, with outcome client-disconnected, so that every
    access-log line carries an outcome."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    answered = hcm["access_log"][0]
    unanswered = copy.deepcopy(answered)
    unanswered["filter"] = {"status_code_filter": {"comparison": {
        "op": "EQ", "value": {"default_value": 0, "runtime_key": "healthlake_relay.access_log.unanswered"}}}}
    unanswered["typed_config"]["log_format"]["json_format"]["outcome"] = "client-disconnected"
    hcm["access_log"].append(unanswered)


def write_config(text: str, workdir: Path, name: str = "envoy.yaml") -> Path:
    """Writes a rendered configuration readable by its owner only (0600): it names files, hosts
    and, with a tokens file, the tokens' digests."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
