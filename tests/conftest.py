"""Shared fixtures: the real Envoy with the built .wasm, and the HealthLake emulator, on loopback.

Every process is started on free ports (port 0 where the program supports it), waited for by
polling, and stopped by its pid at the end of the module that started it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
from urllib.parse import quote
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import relayctl  # noqa: E402

CREDENTIAL = f"{relayctl.DEMO_ACCESS_KEY_ID}:{relayctl.DEMO_SECRET_ACCESS_KEY}"
FHIR_EXAMPLES = ROOT / "build" / "fhir" / "package"


# Every secret the suite hands to a process (AWS secret keys, session tokens, inbound bearer
# tokens) is registered here; at the end of the session every file the suite wrote is searched
# for all of them (no_secret_in_any_output). Emulator state files hold STS-issued secrets by
# design (mode 0600): they are where those secrets are read from, and the only files allowed to
# hold them, with the token files the tests write on purpose.
SECRETS: set[str] = {relayctl.DEMO_SECRET_ACCESS_KEY}
SECRET_HOLDERS: set[Path] = set()
STATE_FILES: set[Path] = set()


def register_secret(*values: str) -> None:
    SECRETS.update(v for v in values if v)


def register_secret_file(path: Path) -> None:
    """A file a test wrote on purpose to hold a secret (a token file)."""
    SECRET_HOLDERS.add(path.resolve())


def register_state_file(path: Path) -> None:
    """An emulator --state-file: at the end of the session its STS-issued secret keys and session
    tokens are added to the secrets searched for (it is written when the emulator stops)."""
    STATE_FILES.add(path.resolve())
    SECRET_HOLDERS.add(path.resolve())


def sts_secrets_in(state_file: Path) -> list[str]:
    out = []
    for line in state_file.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "sts_credential":
            out += [entry["secret_access_key"], entry["session_token"]]
    return out


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_output(tmp_path_factory):
    """After every test: no registered secret, and no STS-issued secret or session token, in any
    file the suite wrote (logs, access logs, rendered configurations, reports, corpus and
    backfill outputs), except the files that hold them on purpose."""
    yield
    base = tmp_path_factory.getbasetemp()
    issued = []
    for state in STATE_FILES:
        assert state.exists(), f"the emulator state file {state} was not written"
        found = sts_secrets_in(state)
        assert found, f"no STS-issued credentials in {state}: nothing to search for"
        issued += found
    secrets = sorted(SECRETS | set(issued))
    # As written, and as a URL or a JSON string would carry them.
    forms = {form for s in secrets for form in (s, quote(s, safe=""), json.dumps(s)[1:-1])}
    pattern = re.compile(b"|".join(re.escape(f.encode()) for f in sorted(forms)))
    scanned = 0
    leaks = []
    for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.resolve() in SECRET_HOLDERS:
            continue
        scanned += 1
        match = pattern.search(path.read_bytes())
        if match:
            leaks.append(f"{path.relative_to(base)}: a secret of {len(match.group())} characters")
    assert scanned, f"no output files found under {base}"
    assert not leaks, "secrets written to outputs:\n" + "\n".join(leaks)
    print(f"\nno_secret_in_any_output: {len(secrets)} secrets ({len(issued)} issued by STS) "
          f"searched in {scanned} files")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def send(base_url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
    """One HTTP/1.1 request with exactly the given method, path, headers and body."""
    host_port = base_url.removeprefix("http://")
    conn = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def every_dict(node):
    """Every dict inside a parsed configuration (YAML or JSON), outermost first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from every_dict(value)
    elif isinstance(node, list):
        for value in node:
            yield from every_dict(value)


def relay_env(**overrides: str | None) -> dict[str, str]:
    """Envoy's environment: this process's, without any AWS or RELAY_ variables (a developer's
    shell settings must not change what a test runs), plus the overrides. The secrets among the
    overrides are registered for the session's search of every output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RELAY_"))}
    # No test reaches the EC2 instance metadata service (169.254.169.254); a test of that source
    # passes "false" and a loopback AWS_EC2_METADATA_SERVICE_ENDPOINT.
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    for k, v in overrides.items():
        if v is not None:
            env[k] = v
    register_secrets_of(env)
    return env


def register_secrets_of(settings: dict[str, str]) -> None:
    """Registers the secrets among settings: AWS secret keys and session tokens, inbound tokens."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        register_secret(settings.get(name, ""))
    register_secret(*(t.strip() for t in re.split(r"[,\n]", settings.get("RELAY_INBOUND_TOKENS", ""))))


def start_relay(workdir: Path, emulator: relayctl.Emulator | None, env: dict[str, str],
                settings_env: dict[str, str] | None = None,
                edit: Callable[[dict], None] | None = None,
                plugin_config: dict | None = None,
                concurrency: int = 2, extra_args: tuple[str, ...] = ()) -> relayctl.Envoy:
    """Renders envoy.yaml for the emulator (ports 0), optionally edits it, validates it, starts Envoy.
    The settings see Envoy's AWS_ variables (its credentials' source), then `settings_env`."""
    register_secrets_of(settings_env or {})
    settings = relayctl.Settings.from_env({
        **{k: v for k, v in env.items() if k.startswith("AWS_")},
        "AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url if emulator else "",
        "RELAY_PORT": "0",
        "RELAY_ADMIN_PORT": "0", "RELAY_HEALTH_PORT": "0",
        **(settings_env or {}),
    })
    files = relayctl.render_files(settings, workdir.resolve(), plugin_config)
    text = files.pop("envoy.yaml")
    for name, content in files.items():
        relayctl.write_config(content, workdir, name)
    if edit:
        config = yaml.safe_load(text)
        edit(config)
        text = yaml.safe_dump(config, sort_keys=False)
    path = relayctl.write_config(text, workdir)
    checked = relayctl.validate_config(path, env)
    (workdir / "validate.log").write_text(checked.stdout + checked.stderr)  # searched for secrets too
    assert checked.returncode == 0, checked.stderr
    return relayctl.start_envoy(path, workdir, env, concurrency=concurrency, extra_args=extra_args)


def wait_for_discovery(envoy: relayctl.Envoy, timeout: float = 30) -> dict:
    """Waits until the relay uses HealthLake's CapabilityStatement (its stats say so); returns the
    stats."""
    def discovered():
        stats = envoy.stats()
        return stats if stats.get("wasmcustom.healthlake_relay.capabilities.discovered") == 1 else None

    return relayctl.wait_until(discovered, timeout, "the relay to read HealthLake's CapabilityStatement")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = relayctl.start_emulator(tmp_path_factory.mktemp("emulator"), [CREDENTIAL])
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def relay(emulator, tmp_path_factory):
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    envoy = start_relay(tmp_path_factory.mktemp("relay"), emulator, env)
    yield envoy
    envoy.stop()


@pytest.fixture
def fresh(emulator):
    """An emulator with nothing stored and no requests recorded (in a module that defines its own
    `emulator` fixture, that one)."""
    emulator.reset()
    return emulator


def fhir_examples() -> Path:
    if not (FHIR_EXAMPLES / ".complete").exists():
        pytest.fail("the HL7 FHIR R4 examples are missing: run `make fixtures` (make test does)")
    return FHIR_EXAMPLES


def send_streaming(base_url: str, method: str, path: str, body: bytes, headers: dict[str, str],
                   chunk: int = 64 * 1024, timeout: float = 60) -> Response:
    """Sends `body` in chunks and stops as soon as the server answers (e.g. an early 413), which
    http.client cannot do: it would fail writing the rest of a body the server no longer reads."""
    import select
    import socket

    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        while sent < len(body):
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            try:
                s.sendall(body[sent:sent + chunk])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
        return read_response(s)


def read_response(s) -> Response:
    """One HTTP/1.1 answer read from socket `s` (status 0 if it closed before a whole head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        if not part:
            return Response(0, {}, data)
        data += part
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    length = int(hdrs.get("content-length", "0"))
    while len(rest) < length:
        part = s.recv(65536)
        if not part:
            break
        rest += part
    return Response(int(lines[0].split()[1]), hdrs, rest[:length])


def send_h2(port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
            timeout: float = 10) -> Response:
    """One HTTP/2 request (prior knowledge, cleartext) with exactly these bytes: the h2 library's
    own header checks are off (fuzz_envoy.H2Wire), so that what Envoy's HTTP/2 codec lets through
    can be sent. Status 0 if no answer came."""
    import socket
    import time

    from fuzz_envoy import H2Wire

    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        wire = H2Wire(s)
        request = [(b":method", method), (b":scheme", b"http"), (b":authority", b"relay"), (b":path", path),
                   *headers]
        stream = wire.open(request, end_stream=not body)
        if body:
            wire.send_data(stream, body, True, deadline)
        wire.receive(deadline, lambda: wire.streams[stream].closed)
    answer = wire.streams[stream]
    return Response(answer.status, answer.headers, answer.body)
