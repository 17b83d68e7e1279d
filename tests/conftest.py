"""Shared fixtures: the real Envoy with the built .wasm, and the HealthLake emulator, on loopback.

Every process is started on free ports (port 0 where the program supports it), waited for by
polling, and stopped by its pid at the end of the module that started it.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
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


def relay_env(**overrides: str | None) -> dict[str, str]:
    """Envoy's environment: this process's, without any AWS variables, plus the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for k, v in overrides.items():
        if v is not None:
            env[k] = v
    return env


def start_relay(workdir: Path, emulator: relayctl.Emulator | None, env: dict[str, str],
                settings_env: dict[str, str] | None = None,
                edit: Callable[[dict], None] | None = None,
                plugin_config: dict | None = None,
                concurrency: int = 1) -> relayctl.Envoy:
    """Renders envoy.yaml for the emulator (ports 0), optionally edits it, validates it, starts Envoy."""
    settings = relayctl.Settings.from_env({
        "AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url if emulator else "",
        "RELAY_PORT": "0",
        "RELAY_ADMIN_PORT": "0",
        **(settings_env or {}),
    })
    text = relayctl.render(settings, plugin_config)
    if edit:
        config = yaml.safe_load(text)
        edit(config)
        text = yaml.safe_dump(config, sort_keys=False)
    path = relayctl.write_config(text, workdir)
    checked = relayctl.validate_config(path, env)
    assert checked.returncode == 0, checked.stderr
    return relayctl.start_envoy(path, workdir, env, concurrency=concurrency)


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
