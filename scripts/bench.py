#!/usr/bin/env python3
"""Side-by-side benchmark of the relay: what signing costs, next to Envoy's own SigV4 filter.

    scripts/bench.py            the full benchmark (make bench): about 15 minutes with the defaults
    scripts/bench.py --quick    one short round, 2 KB bodies, concurrency 1 (used by the test suite)
    scripts/bench.py --soak     relay memory after 100,000 and 1,000,000 requests (make bench-soak);
                                its report also goes to bench/results/soak.md and soak.json

Four Envoy set-ups, rendered from the shipped envoy.yaml (relayctl.render) and differing only in
the signing filter; the access log is off in all four:

  (a) plain   the relay's Wasm filter removed: plain forwarding, the limit;
  (b) native  Envoy's C++ filter envoy.filters.http.aws_request_signing: SigV4, service healthlake,
              payload signed (x-amz-content-sha256), host_rewrite to the HealthLake authority;
  (c) relay   the shipped configuration with the built .wasm;
  (d) floor   the same Wasm filter configuration loading bench/floor instead: the least a proxy-wasm
              filter does to sign a body (hold the headers, hash the body, sign with aws-sigv4,
              rewrite the path), with none of the relay's checks, verdicts, stats or state. What
              the relay costs beyond (d) is the price of those; what (d) costs beyond (b) is the
              price of doing it in Wasm at all.

The native filter signs the path as it arrives, so clients of (a) and (b) request HealthLake's
/datastore/{ds}/r4/{Type}/{id}, and clients of (c) and (d) request /{Type}/{id}, which they rewrite.
The upstream is a separate Envoy answering 200 from a direct_response (after buffering the body),
so that the proxy under test is what is measured.

Before timing, one PUT through each of (b), (c) and (d) goes to the HealthLake emulator, which
verifies SigV4 on its own: each must be answered 2xx and recorded as verified, or the benchmark stops.

Load is wrk (1 thread, 16 connections, bench/put.lua). Every timed run starts a fresh Envoy, warms it
up, then measures; the set-ups alternate a, b, c, d, a, b, c, d ... and medians of the rounds are reported.
Every process started here is stopped by its pid, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_report  # noqa: E402
import relayctl  # noqa: E402

ROOT = relayctl.ROOT
LUA_SCRIPT = ROOT / "bench" / "put.lua"
RESULTS_DIR = ROOT / "bench" / "results"
RUNS_DIR = ROOT / "build" / "bench"
FHIR_EXAMPLES = ROOT / "build" / "fhir" / "package"

SETUPS = ("plain", "native", "relay", "floor")
SIGNING_SETUPS = ("native", "relay", "floor")
# The floor of set-up (d): built by `make build` from bench/floor.
FLOOR_WASM = ROOT / "target" / "floor" / "wasm32-wasip1" / "release" / "relay_floor.wasm"
CONNECTIONS = 16
WRK_THREADS = 1
WRK_TIMEOUT = "10s"
STUB_CONCURRENCY = 1
STUB_BUFFER_BYTES = 16 * 1024 * 1024
NATIVE_FILTER = "envoy.filters.http.aws_request_signing"
NATIVE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning"
RELAY_FILTER = "healthlake_relay"
# Counts the relay's writes HealthLake (here the stub) accepted: the soak's request counter.
DELIVERED_STAT = "wasmcustom.healthlake_relay.outcome.delivered"

SOAK_CHECKPOINTS = (100_000, 1_000_000)
SOAK_TIME_LIMIT_S = 1200
SOAK_TARGET_PERCENT = 5.0

FULL_DEFAULTS = dict(rounds=3, duration=10, warmup=3, concurrency=[1, 2], sizes=["2k", "64k", "1m"])
QUICK_DEFAULTS = dict(rounds=1, duration=1, warmup=1, concurrency=[1], sizes=["2k"])
# Seconds a timed run spends outside wrk (Envoy start and stop), for the time estimate.
RUN_OVERHEAD_S = 2


class BenchError(RuntimeError):
    """The benchmark cannot go on, or would measure the wrong thing; the message says why."""


@dataclass(frozen=True)
class Context:
    """What every part of one benchmark shares."""

    out: Path  # the output folder
    env: dict  # the environment of every Envoy started
    wasm: Path  # the relay measured: a copy of the build, so a rebuild meanwhile changes nothing
    floor_wasm: Path  # set-up (d)'s filter, copied likewise


# ---------------------------------------------------------------------------------------------
# Request bodies


@dataclass(frozen=True)
class Body:
    key: str  # as in --sizes
    label: str  # for tables
    resource_type: str
    resource_id: str
    file: Path
    source: str  # where it comes from, for the report

    @property
    def size(self) -> int:
        return self.file.stat().st_size

    def relay_path(self) -> str:
        return f"/{self.resource_type}/{self.resource_id}"

    def healthlake_path(self, datastore_id: str) -> str:
        return f"/datastore/{datastore_id}/r4/{self.resource_type}/{self.resource_id}"


PATIENT_EXAMPLE = "Patient-infant-fetal.json"  # 2,052 bytes among the HL7 R4 examples
DOCUMENT_SIZES = {"64k": 64 * 1024, "1m": 1024 * 1024}
SIZE_LABELS = {"2k": "2 KB", "64k": "64 KB", "1m": "1 MiB"}


def patient_body(folder: Path) -> Body:
    """An official HL7 example Patient of about 2 KB, byte for byte."""
    source = FHIR_EXAMPLES / PATIENT_EXAMPLE
    resource = json.loads(source.read_bytes())
    file = folder / PATIENT_EXAMPLE
    shutil.copyfile(source, file)
    return Body("2k", SIZE_LABELS["2k"], resource["resourceType"], resource["id"], file,
                f"HL7 FHIR R4 example {PATIENT_EXAMPLE}")


def document_reference(resource_id: str, payload: bytes) -> bytes:
    """A DocumentReference carrying `payload` as a base64 attachment (with its size and SHA-1)."""
    resource = {
        "resourceType": "DocumentReference",
        "id": resource_id,
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34108-1", "display": "Outpatient Note"}]},
        "subject": {"reference": "Patient/infant-fetal"},
        "date": "2026-01-01T00:00:00Z",
        "description": "Benchmark attachment (deterministic bytes)",
        "content": [{"attachment": {
            "contentType": "application/pdf",
            "size": len(payload),
            "hash": base64.b64encode(hashlib.sha1(payload).digest()).decode(),
            "title": f"{resource_id}.pdf",
            "data": base64.b64encode(payload).decode(),
        }}],
    }
    return json.dumps(resource, indent=2).encode()


def document_body(key: str, folder: Path) -> Body:
    """A DocumentReference of about DOCUMENT_SIZES[key] bytes, the same bytes on every run."""
    target = DOCUMENT_SIZES[key]
    resource_id = f"bench-{key}"
    overhead = len(document_reference(resource_id, b""))
    payload_len = (target - overhead) * 3 // 4
    payload = hashlib.shake_256(f"healthlake-relay-bench-{key}".encode()).digest(payload_len)
    file = folder / f"DocumentReference-{resource_id}.json"
    file.write_bytes(document_reference(resource_id, payload))
    return Body(key, SIZE_LABELS[key], "DocumentReference", resource_id, file,
                f"generated DocumentReference, {payload_len:,}-byte base64 attachment")


def make_bodies(keys: list[str], folder: Path) -> dict[str, Body]:
    folder.mkdir(parents=True, exist_ok=True)
    return {key: patient_body(folder) if key == "2k" else document_body(key, folder) for key in keys}


# ---------------------------------------------------------------------------------------------
# The set-ups and the stub upstream


def envoy_environment() -> dict[str, str]:
    """The environment of every Envoy started here: ours, with the demo credentials as the only AWS ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ACCESS_KEY_ID"] = relayctl.DEMO_ACCESS_KEY_ID
    env["AWS_SECRET_ACCESS_KEY"] = relayctl.DEMO_SECRET_ACCESS_KEY
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def settings_for(upstream_url: str, wasm: Path) -> relayctl.Settings:
    """The relay's settings for HealthLake played by `upstream_url`, on free ports."""
    return relayctl.Settings.from_env({
        "AWS_ENDPOINT_URL_HEALTHLAKE": upstream_url, "RELAY_PORT": "0", "RELAY_ADMIN_PORT": "0", "RELAY_HEALTH_PORT": "0",
        "RELAY_WASM": str(wasm),
        "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY,
    })


def http_connection_manager(config: dict) -> dict:
    listener = next(l for l in config["static_resources"]["listeners"] if l["name"] == "smile_cdr")
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def native_signing_filter(settings: relayctl.Settings) -> dict:
    """Envoy's own SigV4 filter, signing what the relay signs, with the same credentials.

    Envoy 1.40 reads them from its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), as the
    relay does, so that no secret is written into the configuration; a custom chain of that one
    provider builds no default chain (whose instance-metadata providers would reach beyond
    loopback).
    """
    return {
        "name": NATIVE_FILTER,
        "typed_config": {
            "@type": NATIVE_TYPE,
            "service_name": "healthlake",
            "region": settings.region,
            # Swapped in before signing, and forwarded: the authority the relay signs too.
            "host_rewrite": settings.authority,
            # Buffer the body and sign its SHA-256 (x-amz-content-sha256), like the relay.
            "use_unsigned_payload": False,
            "credential_provider": {"custom_credential_provider_chain": True,
                                    "environment_credential_provider": {}},
        },
    }


def setup_config(setup: str, settings: relayctl.Settings, env: dict[str, str], floor_wasm: Path = FLOOR_WASM) -> dict:
    """The shipped configuration with the access log off and the signing filter of `setup`."""
    config = yaml.safe_load(relayctl.render(settings))
    manager = http_connection_manager(config)
    manager.pop("access_log", None)
    filters = manager["http_filters"]
    relay_at = next(i for i, f in enumerate(filters) if f["name"] == RELAY_FILTER)
    if setup == "plain":
        del filters[relay_at]
    elif setup == "native":
        filters[relay_at] = native_signing_filter(settings)
    elif setup == "floor":
        filters[relay_at]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(floor_wasm)
    elif setup != "relay":
        raise ValueError(f"unknown set-up {setup!r}")
    return config


@dataclass
class Target:
    """One set-up rendered for one upstream: its validated configuration and where clients send."""

    setup: str
    config_path: Path
    workdir: Path
    datastore_id: str

    def request_path(self, body: Body) -> str:
        return body.relay_path() if self.setup in ("relay", "floor") else body.healthlake_path(self.datastore_id)


def prepare_targets(ctx: Context, upstream_url: str, folder: Path, setups=SETUPS) -> dict[str, Target]:
    """Renders, writes and validates (envoy --mode validate) the configuration of each set-up."""
    settings = settings_for(upstream_url, ctx.wasm)
    targets = {}
    for setup in setups:
        workdir = folder / setup
        text = yaml.safe_dump(setup_config(setup, settings, ctx.env, ctx.floor_wasm), sort_keys=False)
        path = relayctl.write_config(text, workdir)
        checked = relayctl.validate_config(path, ctx.env)
        if checked.returncode != 0:
            raise BenchError(f"the {setup} configuration ({path}) does not validate:\n{checked.stderr[-3000:]}")
        targets[setup] = Target(setup, path, workdir, settings.datastore_id)
    return targets


def stub_config() -> dict:
    """An Envoy that reads each request's whole body and answers 200 with a small FHIR body."""
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"resourceType":"Patient","id":"stub"}'}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/fhir+json"}}],
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "stub",
        "codec_type": "AUTO",
        "route_config": {"name": "stub", "virtual_hosts": [{"name": "stub", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            # Answering before the body is read would make Envoy close the (HTTP/1.1) connection.
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": STUB_BUFFER_BYTES}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    loopback_port_0 = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "admin": {"address": loopback_port_0},
        "static_resources": {"listeners": [{
            "name": "stub",
            "address": loopback_port_0,
            "per_connection_buffer_limit_bytes": STUB_BUFFER_BYTES,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": manager}]}],
        }]},
    }


def listener_port(envoy: relayctl.Envoy, name: str) -> int:
    status, body = relayctl.http_get(envoy.admin_url + "/listeners?format=json")
    for listener in json.loads(body).get("listener_statuses", []):
        if listener.get("name") == name:
            return listener["local_address"]["socket_address"]["port_value"]
    raise BenchError(f"Envoy in {envoy.workdir} has no listener {name!r}")


def start_stub(ctx: Context) -> tuple[relayctl.Envoy, str]:
    """Starts the stub upstream; returns it and its URL."""
    workdir = ctx.out / "stub"
    path = relayctl.write_config(yaml.safe_dump(stub_config(), sort_keys=False), workdir)
    stub = relayctl.start_envoy(path, workdir, ctx.env, concurrency=STUB_CONCURRENCY)
    try:
        return stub, f"http://127.0.0.1:{listener_port(stub, 'stub')}"
    except BaseException:
        stub.stop()
        raise


# ---------------------------------------------------------------------------------------------
# Measuring a process


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat from field 3 on (the command name, which may hold spaces, cut off)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def other_processes_cpu(exclude: set[int]) -> float:
    """CPU seconds so far of every user-space process but `exclude`, their reaped children included
    (cutime, cstime), so that short-lived processes of a long-lived parent count too."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            fields = _stat_fields(entry.name)
        except OSError:  # ended meanwhile
            continue
        if entry.name != "2" and fields[1] != "2":  # not kthreadd or a kernel thread
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float:
    """Time the hypervisor gave this machine's CPUs to others, from /proc/stat."""
    return int(Path("/proc/stat").read_text().split()[8]) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(envoy_pid: int, stub_pid: int) -> dict[str, float]:
    """CPU seconds so far of the Envoy under test, the stub, our finished children (wrk), every
    other process (this one, whose children are wrk and the Envoys, left out), and steal."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"envoy": cpu_seconds(envoy_pid), "stub": cpu_seconds(stub_pid),
            "wrk": children.ru_utime + children.ru_stime,
            "others": other_processes_cpu({os.getpid(), envoy_pid, stub_pid}), "steal": steal_seconds()}


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a process, in KiB, from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(value.split()[0])
    return out


def stat_value(envoy: relayctl.Envoy, name: str) -> int:
    """One counter from Envoy's admin /stats (0 while it does not exist yet)."""
    query = urllib.parse.urlencode({"filter": f"^{re.escape(name)}$", "format": "json"})
    status, body = relayctl.http_get(f"{envoy.admin_url}/stats?{query}")
    if status != 200:
        raise BenchError(f"Envoy admin /stats answered {status}")
    return next((s.get("value", 0) for s in json.loads(body).get("stats", []) if s.get("name") == name), 0)


# ---------------------------------------------------------------------------------------------
# wrk


def start_wrk(url: str, body: Body, seconds: int) -> subprocess.Popen:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", WRK_TIMEOUT,
           "-s", str(LUA_SCRIPT), url, "--", str(body.file)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_wrk(proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    """Waits for wrk, keeps its report in `log`, and returns the numbers bench/put.lua printed."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(output)
    line = next((l for l in output.splitlines() if l.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}); its output is in {log}:\n{output[-2000:]}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    failures = {kind: n for kind, n in result["errors"].items() if n}
    if failures or result["requests"] == 0:
        raise BenchError(f"wrk saw {result['requests']} requests and errors {failures} "
                         f"(status counts answers >= 400); see {log}")
    return result


def run_wrk(url: str, body: Body, seconds: int, log: Path) -> dict:
    return finish_wrk(start_wrk(url, body, seconds), log, timeout=seconds + 60)


def stop_process(proc: subprocess.Popen) -> None:
    """Stops a process started here, by its pid."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# The signing check


def put(base_url: str, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
    try:
        conn.request("PUT", path, body=body, headers={"Content-Type": "application/fhir+json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_signing(ctx: Context, body: Body) -> list[dict]:
    """One PUT through each of (b), (c) and (d) to the emulator, which verifies SigV4 itself.

    Raises BenchError unless each got a 2xx, the emulator recorded exactly that one request as
    verified at HealthLake's path, and stored the body byte for byte.
    """
    folder = ctx.out / "signing-check"
    credential = f"{relayctl.DEMO_ACCESS_KEY_ID}:{relayctl.DEMO_SECRET_ACCESS_KEY}"
    checks = []
    with contextlib.ExitStack() as stack:
        emulator = relayctl.start_emulator(folder / "emulator", [credential])
        stack.callback(emulator.stop)
        targets = prepare_targets(ctx, emulator.url, folder, SIGNING_SETUPS)
        for setup, target in targets.items():
            emulator.reset()
            envoy = relayctl.start_envoy(target.config_path, target.workdir, ctx.env)
            try:
                status, answer = put(envoy.url, target.request_path(body), body.file.read_bytes())
            finally:
                envoy.stop()
            received = emulator.requests()
            stored = emulator.resource(body.resource_type, body.resource_id)
            check = {
                "setup": setup,
                "status": status,
                "verified": [r.get("verified") for r in received],
                "path": [r.get("path") for r in received],
                "signed_headers": [r.get("signed_headers") for r in received],
                "stored_identical": stored == body.file.read_bytes(),
            }
            expected_path = body.healthlake_path(target.datastore_id)
            if not (200 <= status < 300 and check["verified"] == [True] and check["path"] == [expected_path]
                    and check["stored_identical"]):
                raise BenchError(
                    f"signing check failed for ({setup}): answer {status} {answer[:300]!r}; the emulator "
                    f"recorded {json.dumps(received)[:1500]}; see {target.workdir / 'envoy.log'} and "
                    f"{folder / 'emulator' / 'emulator.log'}"
                )
            checks.append(check)
    return checks


# ---------------------------------------------------------------------------------------------
# The benchmark


def timed_run(ctx: Context, stub: relayctl.Envoy, target: Target, body: Body, concurrency: int,
              options: argparse.Namespace, name: str) -> dict:
    """A fresh Envoy of `target`: warm-up, one measured wrk run, then its CPU and memory.

    Also the CPU the other processes of the machine used meanwhile: they would disturb the measurement.
    """
    log_dir = ctx.out / "wrk"
    envoy = relayctl.start_envoy(target.config_path, target.workdir, ctx.env, concurrency=concurrency)
    try:
        url = envoy.url + target.request_path(body)
        if options.warmup:
            run_wrk(url, body, options.warmup, log_dir / f"{name}-warmup.txt")
        before = cpu_snapshot(envoy.proc.pid, stub.proc.pid)
        result = run_wrk(url, body, options.duration, log_dir / f"{name}.txt")
        after = cpu_snapshot(envoy.proc.pid, stub.proc.pid)
        memory = memory_kib(envoy.proc.pid)
    finally:
        envoy.stop()
    cpu = {key: after[key] - before[key] for key in before}
    seconds = result["duration_us"] / 1e6
    return {
        "requests": result["requests"],
        "duration_s": seconds,
        "requests_per_s": result["requests"] / seconds,
        "latency_us": result["latency_us"],
        "bytes_read": result["bytes"],
        "cpu_s": cpu["envoy"],
        "cpu_us_per_request": cpu["envoy"] / result["requests"] * 1e6,
        "vmhwm_kib": memory["VmHWM"],
        "vmrss_kib": memory["VmRSS"],
        "stub_cpu_s": cpu["stub"],
        "wrk_cpu_s": cpu["wrk"],
        "other_cpu_s": cpu["others"],
        "steal_s": cpu["steal"],
    }


def run_benchmark(ctx: Context, options: argparse.Namespace) -> dict:
    bodies = make_bodies(options.sizes, ctx.out / "bodies")
    total = len(options.concurrency) * len(bodies) * options.rounds * len(SETUPS)
    estimate = total * (options.warmup + options.duration + RUN_OVERHEAD_S)
    print(f"bench: {total} timed runs, about {estimate / 60:.0f} min; output in {ctx.out}", flush=True)

    print("bench: signing check through (b) native, (c) relay and (d) floor against the HealthLake emulator",
          flush=True)
    checks = check_signing(ctx, bodies[options.sizes[0]])
    print("bench: signing check passed: every request answered 2xx and verified by the emulator", flush=True)

    runs = []
    with contextlib.ExitStack() as stack:
        stub, stub_url = start_stub(ctx)
        stack.callback(stub.stop)
        targets = prepare_targets(ctx, stub_url, ctx.out / "envoy")
        for concurrency in options.concurrency:
            for body in bodies.values():
                for round_no in range(1, options.rounds + 1):
                    for setup in SETUPS:
                        name = f"c{concurrency}-{body.key}-r{round_no}-{setup}"
                        run = timed_run(ctx, stub, targets[setup], body, concurrency, options, name)
                        run.update(setup=setup, size=body.key, concurrency=concurrency, round=round_no)
                        runs.append(run)
                        print(f"bench: [{len(runs)}/{total}] {describe(run, body)}", flush=True)
    return {
        "bodies": [{"key": b.key, "label": b.label, "bytes": b.size, "resource": f"{b.resource_type}/{b.resource_id}",
                    "source": b.source} for b in bodies.values()],
        "signing_check": checks,
        "runs": runs,
    }


def describe(run: dict, body: Body) -> str:
    return (f"concurrency {run['concurrency']}, {body.label}, round {run['round']}, {run['setup']}: "
            f"{run['requests_per_s']:,.0f} req/s, p50 {run['latency_us']['p50'] / 1000:.2f} ms, "
            f"p99 {run['latency_us']['p99'] / 1000:.2f} ms, {run['cpu_us_per_request']:.0f} us CPU/req, "
            f"peak {run['vmhwm_kib'] / 1024:.1f} MiB; other processes {run['other_cpu_s'] / run['duration_s']:.0%} CPU")


# ---------------------------------------------------------------------------------------------
# The soak


def run_soak(ctx: Context) -> dict:
    """One relay Envoy (concurrency 1), 2 KB bodies: its VmRSS after each checkpoint of delivered writes."""
    body = make_bodies(["2k"], ctx.out / "bodies")["2k"]
    checkpoints = []
    with contextlib.ExitStack() as stack:
        stub, stub_url = start_stub(ctx)
        stack.callback(stub.stop)
        target = prepare_targets(ctx, stub_url, ctx.out / "envoy", ("relay",))["relay"]
        envoy = relayctl.start_envoy(target.config_path, target.workdir, ctx.env, concurrency=1)
        stack.callback(envoy.stop)
        wrk = start_wrk(envoy.url + target.request_path(body), body, SOAK_TIME_LIMIT_S)
        stack.callback(stop_process, wrk)
        started = time.monotonic()
        print(f"bench: soak: relay Envoy pid {envoy.proc.pid}; RSS at {', '.join(f'{n:,}' for n in SOAK_CHECKPOINTS)} "
              f"requests (at most {SOAK_TIME_LIMIT_S} s)", flush=True)
        for goal in SOAK_CHECKPOINTS:
            while (delivered := stat_value(envoy, DELIVERED_STAT)) < goal:
                if wrk.poll() is not None:  # its errors first, if any, else the time limit
                    finish_wrk(wrk, ctx.out / "wrk" / "soak.txt", timeout=60)
                    raise BenchError(f"the time limit ({SOAK_TIME_LIMIT_S} s) passed after {delivered:,} "
                                     f"delivered requests, before {goal:,}")
                time.sleep(0.2)
            rss = memory_kib(envoy.proc.pid)["VmRSS"]
            checkpoints.append({"goal": goal, "requests": delivered, "vmrss_kib": rss,
                                "elapsed_s": time.monotonic() - started})
            print(f"bench: soak: {delivered:,} requests delivered after {checkpoints[-1]['elapsed_s']:.0f} s, "
                  f"VmRSS {rss / 1024:.1f} MiB", flush=True)
        wrk.send_signal(signal.SIGINT)  # wrk stops, then prints its report and the JSON line
        result = finish_wrk(wrk, ctx.out / "wrk" / "soak.txt", timeout=60)
        memory = memory_kib(envoy.proc.pid)
        wrk_command = shlex.join(wrk.args)
    first, last = checkpoints[0]["vmrss_kib"], checkpoints[-1]["vmrss_kib"]
    growth = (last - first) / first * 100
    return {
        "body": {"label": body.label, "bytes": body.size, "source": body.source},
        "checkpoints": checkpoints,
        "growth_percent": growth,
        "target_percent": SOAK_TARGET_PERCENT,
        "passed": growth < SOAK_TARGET_PERCENT,
        "vmhwm_kib": memory["VmHWM"],
        "wrk": result,
        "wrk_command": wrk_command.replace(str(ROOT) + "/", "").replace(str(ctx.out), "<run folder>"),
        "wrk_report": (ctx.out / "wrk" / "soak.txt").read_text(),
    }


# ---------------------------------------------------------------------------------------------
# The machine, the command line


def first_line(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


def machine_description() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    envoy_version = first_line([str(relayctl.envoy_binary()), "--version"])
    version = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version)
    return {
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "memory_mib": int(meminfo.group(1)) // 1024 if meminfo else None,
        "kernel": f"{platform.system()} {platform.release()}",
        "envoy_version": version.group(1) if version else envoy_version,
        "envoy_build": envoy_version.split("version:", 1)[-1].strip(),
        "wrk_version": first_line(["wrk", "-v"]).split(" Copyright")[0],
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def source_version() -> str:
    """The commit the relay was built from, "-dirty" when the work tree has changes."""
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "unknown"


def source_changes() -> dict:
    """What the relay's build read beyond the commit: uncommitted changes to src/, Cargo.toml and
    Cargo.lock (tracked and new files), and the SHA-256 of their `git diff HEAD` (empty if none)."""
    paths = ["src", "Cargo.toml", "Cargo.lock"]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
        return done.stdout if done.returncode == 0 else ""

    files = git("diff", "HEAD", "--name-only", "--", *paths).split()
    files += [f"{f} (new)" for f in git("ls-files", "--others", "--exclude-standard", "--", *paths).split()]
    diff = git("diff", "HEAD", "--", *paths)
    return {"files": files, "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else ""}


def command_line() -> str:
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    return shlex.join([str(shown), *sys.argv])


def check_prerequisites() -> None:
    missing = [what for what, ok in (
        (f"the relay .wasm ({relayctl.WASM})", relayctl.WASM.exists()),
        (f"the floor .wasm of set-up (d) ({FLOOR_WASM})", FLOOR_WASM.exists()),
        (f"the HealthLake emulator ({relayctl.EMULATOR_BIN})", relayctl.EMULATOR_BIN.exists()),
        ("the HL7 FHIR R4 examples (build/fhir/package)", (FHIR_EXAMPLES / ".complete").exists()),
    ) if not ok]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run `make build fixtures` (make bench does)")
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: run `make bench-deps`")


# ---------------------------------------------------------------------------------------------
# Command line


def comma_list(kind):
    def parse(text: str) -> list:
        return [kind(item) for item in text.split(",") if item.strip()]
    return parse


def size_list(text: str) -> list[str]:
    sizes = comma_list(str)(text.lower())
    unknown = [s for s in sizes if s not in SIZE_LABELS]
    if unknown or not sizes:
        raise argparse.ArgumentTypeError(f"sizes are among {', '.join(SIZE_LABELS)}; got {text!r}")
    return sizes


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 round of 1 s runs, concurrency 1, 2 KB only")
    mode.add_argument("--soak", action="store_true", help="relay RSS growth from 100,000 to 1,000,000 requests")
    parser.add_argument("--rounds", type=int, help="rounds of a, b, c, d per (body, concurrency) (default 3)")
    parser.add_argument("--duration", type=int, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds before each run (default 3; 0: none)")
    parser.add_argument("--concurrency", type=comma_list(int), help="Envoy --concurrency values (default 1,2)")
    parser.add_argument("--sizes", type=size_list, help="bodies among 2k,64k,1m (default all)")
    parser.add_argument("--out", type=Path, help="output folder (default build/bench/<timestamp>, then also "
                                                 "bench/results/latest.* or, with --soak, bench/results/soak.*; "
                                                 "a temporary folder with --quick)")
    options = parser.parse_args(argv)
    defaults = QUICK_DEFAULTS if options.quick else FULL_DEFAULTS
    for name, value in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    if options.rounds < 1 or options.duration < 1 or options.warmup < 0 or not options.concurrency \
            or min(options.concurrency) < 1:
        parser.error("--rounds, --duration and --concurrency must be at least 1, --warmup at least 0")
    return options


def output_folder(options: argparse.Namespace, stamp: str) -> Path:
    if options.out:
        out = options.out
    elif options.quick:
        out = Path(tempfile.mkdtemp(prefix="healthlake-bench-"))
    else:
        out = RUNS_DIR / (f"{stamp}-soak" if options.soak else stamp)
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    options = parse_args(argv)
    started = time.monotonic()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        check_prerequisites()
        out = output_folder(options, stamp)
        wasm = out / relayctl.WASM.name
        shutil.copyfile(relayctl.WASM, wasm)
        floor_wasm = out / FLOOR_WASM.name
        shutil.copyfile(FLOOR_WASM, floor_wasm)
        ctx = Context(out, envoy_environment(), wasm, floor_wasm)
        meta = {
            "machine": machine_description(),
            "command": command_line(),
            "run_by_make": bool(os.environ.get("MAKELEVEL")),
            "mode": "soak" if options.soak else "quick" if options.quick else "full",
            "options": {k: getattr(options, k) for k in ("rounds", "duration", "warmup", "concurrency", "sizes")},
            "connections": CONNECTIONS,
            "wrk_threads": WRK_THREADS,
            "stub_concurrency": STUB_CONCURRENCY,
            "wasm_bytes": wasm.stat().st_size,
            "wasm_sha256": hashlib.sha256(wasm.read_bytes()).hexdigest(),
            "source": source_version(),
            "source_changes": source_changes(),
        }
        if options.soak:
            soak = run_soak(ctx)
            meta["elapsed_s"] = time.monotonic() - started
            text = bench_report.write_soak(out, meta, soak)
            # Every soak run outside the test suite's --out is the latest record, kept in the
            # repository beside the other results (the README quotes it): whatever its verdict.
            recorded = options.out is None
            if recorded:
                bench_report.write_soak(RESULTS_DIR, meta, soak)
            print("\n" + text)
            print(f"bench: soak done in {meta['elapsed_s'] / 60:.1f} min; report in {out}"
                  + (f" and {RESULTS_DIR / 'soak.md'}" if recorded else ""), flush=True)
            return 0 if soak["passed"] else 1
        data = run_benchmark(ctx, options)
        meta["elapsed_s"] = time.monotonic() - started
        text = bench_report.write_results(out, meta, data)
        latest = not options.quick and options.out is None
        if latest:
            bench_report.write_latest(RESULTS_DIR, meta, data)
        print("\n" + text)
        print(f"bench: done in {meta['elapsed_s'] / 60:.1f} min; results in {out}"
              + (f" and {RESULTS_DIR / 'latest.md'}" if latest else ""), flush=True)
        return 0
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except (relayctl.SettingsError, RuntimeError, TimeoutError) as e:
        print(f"bench: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process started here was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
