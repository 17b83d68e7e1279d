"""The relay's settings: environment variables (README, Settings) made into the plugin's JSON
configuration and what the renderer needs besides (ports, endpoints, credentials' sources, files).

The plugin's own fields (ranges, defaults, ARNs, resource types ...) are judged by the plugin's own
code, `Config::from_json` (src/config.rs), through target/release/healthlake-relay-config (`make
build`): this module converts each variable into its JSON value and nothing more, and names the
variable in the plugin's refusal. It checks what is not the plugin's JSON: files, endpoints and
their schemes, loopback rules, tokens, ports, replicas, TLS files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "healthlake_relay.wasm"
# The plugin configuration's checker: the filter's own Config::from_json on the host
# (src/bin/healthlake-relay-config.rs, built by make build).
CONFIG_CHECKER = ROOT / "target" / "release" / "healthlake-relay-config"

# The local demo: an emulator that accepts only these made-up credentials. Not AWS keys.
DEMO_ACCESS_KEY_ID = "AKIDRELAYDEMO0000001"
DEMO_SECRET_ACCESS_KEY = "relay-demo-secret-not-an-aws-key"
DEMO_DATASTORE_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_REGION = "us-east-1"
# Shortest inbound token (src/inbound_auth.rs), and shortest one from a tokens file, whose digest
# goes into the configuration.
TOKEN_MIN_LEN = 16
FILE_TOKEN_MIN_LEN = 32
# The plugin's default max_body_bytes (src/config.rs DEFAULT_MAX_BODY_BYTES, README: 8 MiB). The one
# plugin default kept here: Envoy's buffer limits are derived from the limit, so the renderer needs
# its value, and writes it into the plugin configuration so that both always agree.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_REPLICAS = 16
CA_BUNDLE_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

# The credential sources, in the AWS SDKs' default-chain order.
CREDENTIAL_SOURCES = ("environment", "web-identity", "container", "imds")
# Plain http is accepted for container credentials only on these hosts (and loopback), as the SDKs
# do: the ECS agent, the EKS Pod Identity agent (IPv4 and IPv6).
CONTAINER_AGENT_HOSTS = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")
ECS_CREDENTIALS_HOST = "169.254.170.2"
IMDS_HOSTS = ("169.254.169.254", "fd00:ec2::254")
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"

# The plugin configuration's top-level fields that one variable sets, as given: unset, the field is
# left out and the plugin's default applies (README, Settings; src/config.rs).
PLUGIN_FIELDS = {
    "inbound_base_path": "RELAY_INBOUND_BASE_PATH",
    "body_budget_bytes": "RELAY_BODY_BUDGET_BYTES",
    "unsupported_types": "RELAY_UNSUPPORTED_TYPES",
    "unsupported_type_ttl_seconds": "RELAY_UNSUPPORTED_TYPE_TTL_SECONDS",
    "capabilities_refresh_seconds": "RELAY_CAPABILITIES_REFRESH_SECONDS",
    "version_guard_max_entries": "RELAY_VERSION_GUARD_MAX_ENTRIES",
    "version_guard_max_age_seconds": "RELAY_VERSION_GUARD_MAX_AGE_SECONDS",
    "version_guard_clock_skew_seconds": "RELAY_VERSION_GUARD_CLOCK_SKEW_SECONDS",
}

# Which variable feeds each field the plugin may name in a refusal (`field "..."`), so that the
# refusal names it too. Where two variables can feed a field, Settings.from_env names the one set.
FIELD_VARIABLES = {
    "region": "AWS_REGION",
    "datastore_id": "HEALTHLAKE_DATASTORE_ID",
    "healthlake_host": "AWS_ENDPOINT_URL_HEALTHLAKE",
    "max_body_bytes": "RELAY_MAX_BODY_BYTES",
    **PLUGIN_FIELDS,
    "inbound_token_sha256": "RELAY_INBOUND_TOKENS_FILE",
    "credentials.source": "RELAY_CREDENTIALS_SOURCE",
    "credentials.refresh_margin_seconds": "RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS",
    "credentials.first_fetch_wait_ms": "RELAY_CREDENTIALS_WAIT_MS",
    "credentials.web_identity.role_arn": "AWS_ROLE_ARN",
    "credentials.web_identity.session_name": "AWS_ROLE_SESSION_NAME",
    "credentials.web_identity.duration_seconds": "AWS_ROLE_DURATION_SECONDS",
    "credentials.web_identity.sts_host": "AWS_ENDPOINT_URL_STS",
    "credentials.container.host": "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "credentials.container.path": "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "credentials.imds.host": "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "assume_role.role_arn": "RELAY_ASSUME_ROLE_ARN",
    "assume_role.session_name": "AWS_ROLE_SESSION_NAME",
    "assume_role.external_id": "AWS_ROLE_EXTERNAL_ID",
    "assume_role.duration_seconds": "AWS_ROLE_DURATION_SECONDS",
    "assume_role.sts_host": "AWS_ENDPOINT_URL_STS",
}


class SettingsError(ValueError):
    """A setting has a value the relay cannot use; the message names the variable."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_decimal(text: str) -> bool:
    """ASCII digits only (str.isdigit also takes "²", which int() refuses)."""
    return text.isascii() and text.isdecimal()


def plugin_value(raw: str) -> int | str:
    """A variable's value as the plugin's JSON carries it: a decimal number as a number, anything
    else as the string it is, which the plugin refuses with its own words."""
    return int(raw) if is_decimal(raw) else raw


# ---------------------------------------------------------------------------------------------
# The plugin's own check


def plugin_json(config: dict) -> str:
    """The plugin configuration as the rendered envoy.yaml carries it (and as it is checked)."""
    return json.dumps(config, sort_keys=True)


def leaf_spans(config: dict) -> list[tuple[int, int, str]]:
    """Where each value of plugin_json(config) is in its text: (start, end, dotted field name); a
    list is one value."""
    spans: list[tuple[int, int, str]] = []
    at = 0

    def walk(value, name: str) -> None:
        nonlocal at
        if isinstance(value, dict):
            at += 1  # {
            for n, key in enumerate(sorted(value)):
                at += (2 if n else 0) + len(json.dumps(key)) + 2  # ", " "key": "
                walk(value[key], f"{name}.{key}" if name else key)
            at += 1  # }
        else:
            text = json.dumps(value)
            spans.append((at, at + len(text), name))
            at += len(text)

    walk(config, "")
    return spans


def refused_field(config: dict, refusal: str) -> str:
    """The field a refusal is about: the one it names, or, when the plugin could not read the JSON
    into its fields (`field "configuration"`: a string where a number goes, a number out of its
    type's range), the value at the line and column serde names."""
    named = re.match(r'invalid plugin configuration: field "([^"]+)"', refusal)
    name = named.group(1) if named else ""
    where = re.search(r" at line 1 column (\d+)$", refusal)
    if name == "configuration" and where:
        index = int(where.group(1)) - 1  # serde's column: the value's last character, from 1
        for start, end, leaf in leaf_spans(config):
            if start <= index < end:
                return leaf
    return name


def check_plugin_config(config: dict, variables: Mapping[str, str] = FIELD_VARIABLES) -> None:
    """Has the plugin's own code judge `config` (Config::from_json, the same code and words as
    when Envoy starts the plugin). A refusal raises SettingsError with the variable that feeds the
    field (from `variables`), then the plugin's line."""
    checker = CONFIG_CHECKER.relative_to(ROOT) if CONFIG_CHECKER.is_relative_to(ROOT) else CONFIG_CHECKER
    if not CONFIG_CHECKER.exists():
        raise SettingsError(f"{checker} is missing: run make build (it checks the plugin configuration "
                            "with the plugin's own code)")
    text = plugin_json(config)
    done = subprocess.run([str(CONFIG_CHECKER)], input=text, capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return
    refusal = done.stderr.strip()
    if done.returncode != 1 or not refusal.startswith("invalid plugin configuration: "):
        raise SettingsError(f"{checker} failed (exit status {done.returncode}): {refusal}")
    variable = variables.get(refused_field(config, refusal))
    raise SettingsError(f"{variable}: {refusal}" if variable else refusal)


# ---------------------------------------------------------------------------------------------
# Credentials


def readable_file(path: str, name: str, check_here: bool = True) -> str:
    """An absolute path to a file that can be read now and is not empty (its content is never kept);
    with `check_here` False only the path is checked (a configuration rendered for another machine,
    such as a Kubernetes pod, whose token file is mounted there)."""
    p = Path(path)
    if not p.is_absolute():
        raise SettingsError(f"{name} must be an absolute path, got {path!r}")
    if not check_here:
        return str(p)
    try:
        with open(p, "rb") as f:
            if not f.read(1):
                raise SettingsError(f"{name} is empty: {path}")
    except OSError as e:
        raise SettingsError(f"{name} cannot be read: {path}: {e.strerror}") from None
    return str(p)


@dataclass
class Credentials:
    """Where the base credentials come from: the AWS SDKs' default chain (environment keys, web
    identity, container credentials, EC2 instance metadata), the first whose variables are set,
    or the one RELAY_CREDENTIALS_SOURCE names. Holds no secret: token files are named, never read."""

    source: str
    # Why this source: the variables it was chosen by (printed by make run).
    reason: str
    web_identity_token_file: str = ""
    web_identity_role_arn: str = ""
    # Container credentials: the endpoint URL, and where its Authorization comes from.
    container_url: str = ""
    container_token_file: str = ""
    container_token_in_env: bool = False
    imds_endpoint: str = ""

    @staticmethod
    def from_env(env: Mapping[str, str], files_here: bool = True) -> "Credentials":
        """`files_here` False: the token files are on the machine the configuration is rendered
        for, not this one (their paths are still checked)."""
        def get(name: str) -> str:
            return env.get(name, "").strip()

        pinned = get("RELAY_CREDENTIALS_SOURCE").lower() or "auto"
        if pinned not in ("auto", *CREDENTIAL_SOURCES):
            raise SettingsError(
                f"RELAY_CREDENTIALS_SOURCE must be auto, {', '.join(CREDENTIAL_SOURCES)}, got {pinned!r}")
        key, secret = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
        if bool(key) != bool(secret):
            missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
            raise SettingsError(f"{missing} is not set, but {'AWS_ACCESS_KEY_ID' if key else 'AWS_SECRET_ACCESS_KEY'} is: set both, or neither")
        relative, full = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        imds_disabled = get("AWS_EC2_METADATA_DISABLED").lower() == "true"
        present = {
            "environment": bool(key),
            "web-identity": bool(get("AWS_WEB_IDENTITY_TOKEN_FILE")),
            "container": bool(relative or full),
            "imds": not imds_disabled,
        }
        needs = {
            "environment": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "web-identity": "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN",
            "container": "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "imds": "AWS_EC2_METADATA_DISABLED unset or false",
        }
        if pinned == "auto":
            source = next((s for s in CREDENTIAL_SOURCES if present[s]), None)
            if source is None:
                raise SettingsError(
                    "no AWS credentials source: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (local use "
                    "only), AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (EKS IRSA), "
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI (EKS Pod Identity, ECS), or "
                    "unset AWS_EC2_METADATA_DISABLED (EC2 instance metadata)")
            reason = {
                "environment": "AWS_ACCESS_KEY_ID is set",
                "web-identity": "AWS_WEB_IDENTITY_TOKEN_FILE is set",
                # The relative URI wins when both are set, as in the SDKs.
                "container": f"AWS_CONTAINER_CREDENTIALS_{'RELATIVE' if relative else 'FULL'}_URI is set",
                "imds": "no other source's variables are set",
            }[source]
        else:
            source = pinned
            if not present[source]:
                raise SettingsError(
                    f"RELAY_CREDENTIALS_SOURCE={source} needs {needs[source]}"
                    + (" (AWS_EC2_METADATA_DISABLED is true)" if source == "imds" else ""))
            reason = "RELAY_CREDENTIALS_SOURCE"
        out = Credentials(source=source, reason=reason)
        if source == "web-identity":
            out.web_identity_token_file = readable_file(get("AWS_WEB_IDENTITY_TOKEN_FILE"), "AWS_WEB_IDENTITY_TOKEN_FILE",
                                                       files_here)
            # Its form is the plugin's to judge (credentials.web_identity.role_arn).
            out.web_identity_role_arn = get("AWS_ROLE_ARN")
            if not out.web_identity_role_arn:
                raise SettingsError("AWS_WEB_IDENTITY_TOKEN_FILE is set, but AWS_ROLE_ARN (the role to assume "
                                    "with the web identity token) is not")
        elif source == "container":
            out.container_url = container_url(relative, full)
            token_file = get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            if token_file:
                out.container_token_file = readable_file(token_file, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", files_here)
            else:
                out.container_token_in_env = bool(get("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
                if out.container_token_in_env and not all(32 <= ord(c) <= 126 for c in get("AWS_CONTAINER_AUTHORIZATION_TOKEN")):
                    raise SettingsError("AWS_CONTAINER_AUTHORIZATION_TOKEN has characters a header value cannot carry")
        elif source == "imds":
            out.imds_endpoint = imds_endpoint(get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_IMDS_ENDPOINT)
        return out

    @property
    def container(self) -> tuple[str, str, int, str]:
        """(scheme, host, port, path and query) of the container credentials endpoint."""
        parts = urlsplit(self.container_url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), path

    @property
    def imds(self) -> tuple[str, int]:
        parts = urlsplit(self.imds_endpoint)
        return parts.hostname or "", parts.port or 80


def container_url(relative: str, full: str) -> str:
    """The container credentials URL, checked as the SDKs check it: RELATIVE_URI is on the ECS
    agent; a FULL_URI over plain http must be on loopback or an agent's link-local address."""
    if relative:
        if not relative.startswith("/") or not all(33 <= ord(c) <= 126 for c in relative):
            raise SettingsError(f"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must be a path such as /v2/credentials/ID, got {relative!r}")
        return f"http://{ECS_CREDENTIALS_HOST}{relative}"
    parts = urlsplit(full)
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.fragment
            or not url_port_ok(parts) or not all(33 <= ord(c) <= 126 for c in full)):
        raise SettingsError(f"AWS_CONTAINER_CREDENTIALS_FULL_URI must be a URL such as http://169.254.170.23/v1/credentials, got {full!r}")
    if parts.scheme == "http" and not (is_loopback(parts.hostname) or parts.hostname in CONTAINER_AGENT_HOSTS):
        raise SettingsError(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI may use plain http:// only on loopback or the ECS and EKS Pod "
            f"Identity agents' addresses ({', '.join(CONTAINER_AGENT_HOSTS)}), got {full!r}")
    return full


def url_port_ok(parts) -> bool:
    """Whether a URL's port, if any, is a port number (urlsplit raises on reading a bad one)."""
    try:
        parts.port
    except ValueError:
        return False
    return True


def imds_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if (parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query
            or not url_port_ok(parts)):
        raise SettingsError(f"AWS_EC2_METADATA_SERVICE_ENDPOINT must be a URL such as http://169.254.169.254, got {url!r}")
    if not (is_loopback(parts.hostname) or parts.hostname in IMDS_HOSTS):
        raise SettingsError(
            f"AWS_EC2_METADATA_SERVICE_ENDPOINT must be the instance metadata service ({', '.join(IMDS_HOSTS)}) "
            f"or a loopback stand-in, got {url!r}")
    return url.rstrip("/")


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    region: str = DEFAULT_REGION
    datastore_id: str = DEMO_DATASTORE_ID
    endpoint: str = ""
    relay_port: int = 10000
    admin_port: int = 9901
    health_port: int = 9902
    # Relay replicas behind a front tier with resource affinity (envoy-front.yaml); 1: one Envoy.
    replicas: int = 1
    listen_address: str = "127.0.0.1"
    # The subscription endpoint's path prefix as make run prints it (the plugin gets
    # RELAY_INBOUND_BASE_PATH as set, in plugin_fields, and normalises it itself).
    base_path: str = ""
    # Always in the plugin configuration: Envoy's buffer limits are derived from it.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The top-level plugin fields their variables set (PLUGIN_FIELDS), as the JSON carries them;
    # a field not here is left out (the plugin's default).
    plugin_fields: dict = field(default_factory=dict)
    wasm: Path = WASM
    ca_bundle: str = ""
    # Where the credentials come from (see Credentials above), and a role assumed on top.
    credentials: "Credentials" = None  # type: ignore[assignment]
    role_arn: str = ""
    # These four and the wait: "" or None when unset (the plugin's default applies), otherwise as
    # the JSON carries them.
    role_session_name: str = ""
    role_external_id: str = ""
    role_duration_seconds: int | str | None = None
    # None: derived by the relay from each set's lifetime.
    refresh_margin_seconds: int | str | None = None
    credentials_wait_ms: int | str | None = None
    sts_endpoint: str = ""
    inbound_auth: str = "none"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    max_connections: int = 1024
    # Envoy's worker threads; None leaves Envoy's own default (one per core).
    concurrency: int | None = None
    # SHA-256 digests (hex) of the tokens in RELAY_INBOUND_TOKENS_FILE.
    inbound_token_sha256: tuple[str, ...] = ()

    @staticmethod
    def from_env(env: Mapping[str, str], files_here: bool = True) -> "Settings":
        """`files_here` False: rendering for another machine, whose token files are not here."""
        return Settings.with_tokens(env, files_here)[0]

    @staticmethod
    def with_tokens(env: Mapping[str, str], files_here: bool = True) -> tuple["Settings", str]:
        """The settings, and the tokens of RELAY_INBOUND_TOKENS (for Envoy's environment, never the
        file; those of RELAY_INBOUND_TOKENS_FILE go into the plugin configuration as digests).
        The plugin configuration they make is checked by the plugin's own code
        (check_plugin_config) before they are returned."""
        def get(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        def port(name: str, default: int) -> int:
            raw = get(name, str(default))
            if not is_decimal(raw) or int(raw) > 65535:
                raise SettingsError(f"{name} must be a TCP port number (0-65535), got {raw!r}")
            return int(raw)

        variables = dict(FIELD_VARIABLES)
        relay_port, admin_port = port("RELAY_PORT", 10000), port("RELAY_ADMIN_PORT", 9901)
        health_port = port("RELAY_HEALTH_PORT", 9902)
        replicas = get("RELAY_REPLICAS", "1")
        if not is_decimal(replicas) or not 1 <= int(replicas) <= MAX_REPLICAS:
            raise SettingsError(f"RELAY_REPLICAS must be 1 to {MAX_REPLICAS} relay replicas, got {replicas!r}")
        if not get("AWS_REGION") and get("AWS_DEFAULT_REGION"):
            variables["region"] = "AWS_DEFAULT_REGION"
        region = get("AWS_REGION", get("AWS_DEFAULT_REGION", DEFAULT_REGION))
        # The default HealthLake and STS host names are made of the region: the plugin judges it
        # first, alone (the other fields are valid stand-ins).
        check_plugin_config({"region": region, "datastore_id": DEMO_DATASTORE_ID, "healthlake_host": "relay"},
                            {"region": variables["region"]})
        datastore_id = get("HEALTHLAKE_DATASTORE_ID", DEMO_DATASTORE_ID)
        endpoint = get("AWS_ENDPOINT_URL_HEALTHLAKE", f"https://healthlake.{region}.amazonaws.com")
        parts = urlsplit(endpoint)
        if (parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/")
                or not url_port_ok(parts)):
            raise SettingsError(
                "AWS_ENDPOINT_URL_HEALTHLAKE must be a URL such as https://healthlake.us-east-1.amazonaws.com"
                f" or http://127.0.0.1:8080 (no path), got {endpoint!r}"
            )
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise SettingsError(
                "AWS_ENDPOINT_URL_HEALTHLAKE may use plain http:// only on loopback (a local emulator); "
                f"got {endpoint!r}"
            )
        listen = get("RELAY_LISTEN_ADDRESS", "127.0.0.1")
        try:
            ipaddress.ip_address(listen)
        except ValueError:
            raise SettingsError(f"RELAY_LISTEN_ADDRESS must be an IP address, got {listen!r}") from None
        # The plugin's own fields: each variable's value as the JSON carries it, judged by the plugin.
        plugin_fields: dict = {}
        for name, variable in PLUGIN_FIELDS.items():
            raw = get(variable)
            if not raw:
                continue
            if name == "inbound_base_path":
                plugin_fields[name] = raw
            elif name == "unsupported_types":
                plugin_fields[name] = [t.strip() for t in raw.split(",") if t.strip()]
            else:
                plugin_fields[name] = plugin_value(raw)
        max_body = plugin_value(get("RELAY_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES)))
        sts_endpoint = get("AWS_ENDPOINT_URL_STS", f"https://sts.{region}.amazonaws.com")
        sts_parts = urlsplit(sts_endpoint)
        if (sts_parts.scheme not in ("https", "http") or not sts_parts.hostname
                or sts_parts.path not in ("", "/") or not url_port_ok(sts_parts)):
            raise SettingsError(f"AWS_ENDPOINT_URL_STS must be a URL such as https://sts.us-east-1.amazonaws.com, got {sts_endpoint!r}")
        if sts_parts.scheme == "http" and not is_loopback(sts_parts.hostname):
            raise SettingsError(f"AWS_ENDPOINT_URL_STS may use plain http:// only on loopback, got {sts_endpoint!r}")
        credentials = Credentials.from_env(env, files_here)
        if get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
            for name in ("credentials.container.host", "credentials.container.path"):
                variables[name] = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
        # The role assumed on top of the base credentials: RELAY_ASSUME_ROLE_ARN, or AWS_ROLE_ARN
        # when there is no web identity token file (its meaning before web identity existed).
        # With a token file AWS_ROLE_ARN is the web identity's role, as in the SDKs, even when
        # another source is chosen (the EKS webhook injects both: it never becomes a role on top).
        role_arn = get("RELAY_ASSUME_ROLE_ARN")
        legacy_role = get("AWS_ROLE_ARN") if not get("AWS_WEB_IDENTITY_TOKEN_FILE") else ""
        if role_arn and legacy_role and role_arn != legacy_role:
            raise SettingsError(
                "AWS_ROLE_ARN and RELAY_ASSUME_ROLE_ARN name different roles; without a web identity "
                "token file both mean the role assumed on top of the base credentials: set one")
        if not role_arn and legacy_role:
            variables["assume_role.role_arn"] = "AWS_ROLE_ARN"
        role_arn = role_arn or legacy_role
        duration, margin, wait = (get(name) for name in (
            "AWS_ROLE_DURATION_SECONDS", "RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS", "RELAY_CREDENTIALS_WAIT_MS"))
        tokens = get("RELAY_INBOUND_TOKENS")
        tokens_file = get("RELAY_INBOUND_TOKENS_FILE")
        token_digests: tuple[str, ...] = ()
        if tokens_file:
            # The plugin gets the SHA-256 digests of the file's tokens in its configuration, never
            # the tokens: a rendered configuration works in any Envoy, and holds no secret.
            try:
                listed = Path(tokens_file).read_text()
            except OSError as e:
                raise SettingsError(f"RELAY_INBOUND_TOKENS_FILE cannot be read: {e.strerror}") from None
            except UnicodeDecodeError:
                raise SettingsError("RELAY_INBOUND_TOKENS_FILE is not text (UTF-8)") from None
            token_digests = token_sha256(listed, "RELAY_INBOUND_TOKENS_FILE")
        if tokens:
            check_tokens(tokens, "RELAY_INBOUND_TOKENS", TOKEN_MIN_LEN)
        mtls = get("RELAY_INBOUND_MTLS").lower() in ("1", "true", "yes")
        tls = {name: get(name) for name in ("RELAY_TLS_CERT_FILE", "RELAY_TLS_KEY_FILE", "RELAY_TLS_CLIENT_CA_FILE")}
        if (mtls or any(tls.values())) and not all(tls.values()):
            # The listener's TLS always verifies client certificates: the three files go together.
            missing = ", ".join(k for k, v in tls.items() if not v)
            raise SettingsError(f"{'RELAY_INBOUND_MTLS' if mtls else 'TLS on the listener'} needs {missing}")
        if tokens or token_digests:
            inbound_auth = "bearer"
        elif mtls:
            inbound_auth = "mtls"
        elif parts.scheme == "http" and is_loopback(listen):
            inbound_auth = "none"  # the local demo: a loopback emulator, a loopback listener
        elif parts.scheme == "http":
            raise SettingsError(
                f"refusing to start: RELAY_LISTEN_ADDRESS={listen} is not loopback, and without "
                "inbound authentication anyone who reaches it could write with the relay's "
                "credentials. Set RELAY_INBOUND_TOKENS (or RELAY_INBOUND_TOKENS_FILE) or "
                "RELAY_INBOUND_MTLS=true, or listen on 127.0.0.1.")
        else:
            raise SettingsError(
                "refusing to start: the relay would sign writes to a real HealthLake for anyone who "
                "reaches it. Set RELAY_INBOUND_TOKENS (or RELAY_INBOUND_TOKENS_FILE) to the bearer "
                "token(s) Smile CDR sends, or RELAY_INBOUND_MTLS=true with the listener's certificates.")
        max_connections = get("RELAY_MAX_CONNECTIONS", "1024")
        if not is_decimal(max_connections) or int(max_connections) == 0:
            raise SettingsError(f"RELAY_MAX_CONNECTIONS must be a positive number, got {max_connections!r}")
        concurrency = get("RELAY_CONCURRENCY")
        if concurrency and (not is_decimal(concurrency) or not 1 <= int(concurrency) <= 1024):
            raise SettingsError(
                f"RELAY_CONCURRENCY must be 1 to 1024 Envoy worker threads (unset: one per core), got {concurrency!r}")
        ca_bundle = get("RELAY_CA_BUNDLE") or next(
            (c for c in CA_BUNDLE_CANDIDATES if Path(c).exists()), CA_BUNDLE_CANDIDATES[0]
        )
        settings = Settings(
            region=region,
            datastore_id=datastore_id,
            endpoint=endpoint,
            relay_port=relay_port,
            admin_port=admin_port,
            health_port=health_port,
            replicas=int(replicas),
            listen_address=listen,
            base_path=get("RELAY_INBOUND_BASE_PATH").rstrip("/"),
            max_body_bytes=max_body,  # type: ignore[arg-type]  # a number once checked
            plugin_fields=plugin_fields,
            wasm=Path(get("RELAY_WASM", str(WASM))).resolve(),
            ca_bundle=ca_bundle,
            credentials=credentials,
            role_arn=role_arn,
            role_session_name=get("AWS_ROLE_SESSION_NAME"),
            role_external_id=get("AWS_ROLE_EXTERNAL_ID"),
            role_duration_seconds=plugin_value(duration) if duration else None,
            refresh_margin_seconds=plugin_value(margin) if margin else None,
            credentials_wait_ms=plugin_value(wait) if wait else None,
            sts_endpoint=sts_endpoint,
            inbound_auth=inbound_auth,
            tls_cert_file=tls["RELAY_TLS_CERT_FILE"],
            tls_key_file=tls["RELAY_TLS_KEY_FILE"],
            tls_client_ca_file=tls["RELAY_TLS_CLIENT_CA_FILE"],
            max_connections=int(max_connections),
            concurrency=int(concurrency) if concurrency else None,
            inbound_token_sha256=token_digests,
        )
        check_plugin_config(settings.plugin_config(), variables)
        return settings, tokens

    @property
    def upstream(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the HealthLake endpoint."""
        return endpoint_parts(self.endpoint)

    @property
    def sts(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the STS endpoint."""
        return endpoint_parts(self.sts_endpoint)

    @property
    def authority(self) -> str:
        """The :authority sent to and signed for HealthLake (host, with the port if not default)."""
        parts = urlsplit(self.endpoint)
        return parts.netloc

    def credentials_config(self) -> dict:
        return credentials_plugin_config(self)

    def role_fields(self) -> dict:
        """The fields of the roles the relay assumes that their variables set."""
        out: dict = {}
        if self.role_session_name:
            out["session_name"] = self.role_session_name
        if self.role_duration_seconds is not None:
            out["duration_seconds"] = self.role_duration_seconds
        return out

    def plugin_config(self) -> dict:
        config = {
            "inbound_auth": self.inbound_auth,
            "region": self.region,
            "datastore_id": self.datastore_id,
            "healthlake_host": self.authority,
            "max_body_bytes": self.max_body_bytes,
            **self.plugin_fields,
        }
        config["credentials"] = self.credentials_config()
        if self.role_arn:
            role = {
                "role_arn": self.role_arn,
                **self.role_fields(),
                "sts_cluster": "sts",
                "sts_host": urlsplit(self.sts_endpoint).netloc,
            }
            if self.role_external_id:
                role["external_id"] = self.role_external_id
            config["assume_role"] = role
        if self.inbound_token_sha256:
            config["inbound_token_sha256"] = list(self.inbound_token_sha256)
        return config


def credentials_plugin_config(settings: Settings) -> dict:
    c = settings.credentials
    out: dict = {"source": c.source}
    if settings.credentials_wait_ms is not None:
        out["first_fetch_wait_ms"] = settings.credentials_wait_ms
    if settings.refresh_margin_seconds is not None:
        out["refresh_margin_seconds"] = settings.refresh_margin_seconds
    if c.source == "web-identity":
        out["web_identity"] = {
            "role_arn": c.web_identity_role_arn,
            **settings.role_fields(),
            "sts_cluster": "sts_web_identity",
            "sts_host": urlsplit(settings.sts_endpoint).netloc,
        }
    elif c.source == "container":
        scheme, host, port, path = c.container
        default = 443 if scheme == "https" else 80
        out["container"] = {
            "cluster": "container_credentials",
            "host": authority(host, port, default),
            "path": path,
            "authorization": "envoy" if c.container_token_file else "environment" if c.container_token_in_env else "none",
        }
    elif c.source == "imds":
        host, port = c.imds
        out["imds"] = {"cluster": "imds", "host": authority(host, port, 80)}
    return out


def authority(host: str, port: int, default: int) -> str:
    """host[:port] as an :authority (IPv6 in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


def check_tokens(listed: str, where: str, shortest: int) -> list[str]:
    """Tokens separated by commas or new lines, checked as the plugin checks them (errors never
    include a token)."""
    tokens = [t.strip(" \t\r") for t in re.split(r"[,\n]", listed)]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise SettingsError(f"{where} holds no token")
    for n, token in enumerate(tokens, 1):
        if len(token) < shortest:
            raise SettingsError(f"{where}: token #{n} is shorter than {shortest} characters")
        if not all(33 <= ord(c) <= 126 for c in token):
            raise SettingsError(f"{where}: token #{n} has characters a header value cannot carry")
    return tokens


def token_sha256(listed: str, where: str) -> tuple[str, ...]:
    """The SHA-256 digests (hex) of the tokens of a tokens file. They end up in the configuration,
    where a digest of a short token could be guessed back: 32 characters at least (random ones,
    e.g. `openssl rand -hex 32`), where RELAY_INBOUND_TOKENS takes 16."""
    tokens = check_tokens(listed, where, FILE_TOKEN_MIN_LEN)
    return tuple(hashlib.sha256(t.encode()).hexdigest() for t in tokens)


def endpoint_parts(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname or "", parts.port or default_port
