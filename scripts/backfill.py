#!/usr/bin/env python3
"""Historical backfill under faults, proven end to end (`make backfill`).

A Smile CDR stand-in (`smile-standin`, standin/) replays a $trigger-subscription burst of REST-hook
deliveries through the real Envoy with the relay (two workers, temporary credentials from STS
AssumeRole, STS being moto) into the HealthLake emulator, while the emulator misbehaves:

- 5xx (error_rate), TCP resets (reset_rate) and a rate limit that bites (429 and 400
  ThrottlingException alternately), for the whole run;
- the relay's credentials expire early (POST /_emulator/sts/expire): it must refresh at once;
- the emulator is stopped (SIGTERM, state saved by --state-file), kept down a few seconds and
  started again on the same ports; Envoy and the relay keep running.

Then the check: the emulator's store equals what Smile CDR holds (the stand-in's truth) for every
supported type, byte for byte; nothing deleted is present, nothing of an unsupported type; no
dead letter; no request rejected for a bad signature, and none of the writes HealthLake kept was
signed with expired credentials (the writes signed with the credentials expired on purpose are
rejected with ExpiredTokenException by design, counted and shown); the access log tells the same
story as the stand-in. Exit status 0 only if every check passes.

With --replicas N (`make backfill BACKFILL_ARGS="--replicas 3"`) the relay is N relay Envoys behind
the front Envoy with resource affinity (relayctl.start_topology, RELAY_REPLICAS; one worker each
by default: see --concurrency), under the same faults, plus one relay replica killed (SIGKILL)
at a third of the run and started again in its place a few seconds later, its version guard empty,
while the stand-in goes on. Its own checks on top: every relay's access-log line names its replica,
each resource stays on one replica and the writes spread over all of them, the killed replica
serves its resources again, and the front answered replica-unavailable only for the killed
replica's resources, only while it was down.

In both modes the summary counts the guard misses: writes that reached HealthLake (the emulator's
request logs) older than a version it already held for the resource, or after a stored delete
without being the re-creation, that is, stale writes the version guard let through. The stand-in
delivers each resource's versions in order, so the plan alone brings none; --late-replays SHARE
adds late deliveries of an older version for the guard to hold back (and a check that each one
was held back, or forwarded and counted as a miss).

    scripts/backfill.py [--writes 20000] [--seed 401] [--replicas 1] [--workdir build/backfill] ...

Every process is started on loopback and stopped by its pid; the run is bounded in time. The
bearer token between the stand-in and the relay is random, or BACKFILL_INBOUND_TOKEN if set (the
test suite sets it, to prove it appears in no output).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import relayctl  # noqa: E402

STANDIN_BIN = ROOT / "target" / "release" / "smile-standin"
FHIR_EXAMPLES = ROOT / "build" / "fhir" / "package"
# The types the emulator refuses here: it runs with every R4 type but these (--resource-types all
# plus --unsupported-types), a share of the corpus the stand-in's plan can size; the relay reads
# them from its CapabilityStatement. (tests/test_corpus.py runs the corpus against HealthLake's
# documented list.)
UNSUPPORTED = ["Basic", "CodeSystem", "SearchParameter", "Subscription", "TestScript"]
DONE_OUTCOMES = ["delivered", "deleted", "already-absent", "unsupported-type", "stale-version"]
NO_OUTCOME = "(none)"
LATE_REPLAY = "late-replay"

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def thousands(n: int) -> str:
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class StandIn:
    """The stand-in's `send`, a process of ours."""

    proc: subprocess.Popen
    stdout_path: Path
    files: list = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in self.files:
            f.close()


def build_standin() -> None:
    log("building the stand-in (cargo build --release -p smile-standin)")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "smile-standin"], cwd=ROOT,
                   check=True, timeout=900)


def make_plan(args, workdir: Path) -> dict:
    plan = workdir / "plan.jsonl"
    stats_path = workdir / "plan-stats.json"
    cmd = [str(STANDIN_BIN), "plan", "--examples", str(FHIR_EXAMPLES), "--writes", str(args.writes),
           "--seed", str(args.seed), "--unsupported-types", ",".join(UNSUPPORTED),
           "--out", str(plan), "--stats-json", str(stats_path)]
    if args.weights:
        cmd += ["--weights", args.weights]
    subprocess.run(cmd, check=True, timeout=300)
    return json.loads(stats_path.read_text())


def add_late_replays(plan: Path, share: float, seed: int) -> int:
    """Out-of-order deliveries (--late-replays), as a replayed trigger or a late retry brings them
    to a relay: for `share` of the resources whose first version is followed by a newer event (an
    update or the delete) and then one more delivery, that first version delivered again just
    before the resource's last delivery, which stays last (Smile CDR's truth does not change). The
    version guard must answer each stale-version; one it forwards is a guard miss. Returns how
    many were added."""
    raw = plan.read_bytes().splitlines()
    lines = []
    history: dict[str, list[int]] = {}
    for i, line in enumerate(raw):
        d = json.loads(line) if line.strip() else None
        lines.append(d and (d["resource"], d["method"], d.get("version_id")))
        if d:
            history.setdefault(d["resource"], []).append(i)
    eligible = sorted(r for r, at in history.items()
                      if r.split("/", 1)[0] not in UNSUPPORTED and len(at) >= 3 and lines[at[0]][1] == "PUT"
                      and lines[at[1]][1:] != lines[at[0]][1:])
    chosen = random.Random(seed).sample(eligible, round(len(eligible) * share))
    before_last = {history[r][-1]: history[r][0] for r in chosen}
    out = []
    for i, line in enumerate(raw):
        if i in before_last:
            late = json.loads(raw[before_last[i]])
            late["scenario"] = LATE_REPLAY
            out.append(json.dumps(late, ensure_ascii=False, separators=(",", ":")).encode())
        out.append(line)
    plan.write_bytes(b"\n".join(out) + b"\n")
    return len(chosen)


def emulator_args(state_file: Path) -> list[str]:
    # DELETE of an absent resource answered 404, so the relay's already-absent is exercised.
    return ["--resource-types", "all", "--unsupported-types", ",".join(UNSUPPORTED), "--state-file", str(state_file),
            "--delete-absent-status", "404"]


def relay_env(iam: relayctl.IamSetup, token: str) -> dict[str, str]:
    """Envoy's environment: this process's without AWS or RELAY_ variables, plus the relay's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("RELAY_")}
    env.update(AWS_ACCESS_KEY_ID=iam.access_key_id, AWS_SECRET_ACCESS_KEY=iam.secret_access_key,
               RELAY_INBOUND_TOKENS=token, AWS_EC2_METADATA_DISABLED="true")
    return env


def relay_settings(emulator: relayctl.Emulator, iam: relayctl.IamSetup, token: str,
                   replicas: int) -> relayctl.Settings:
    """The relay for the emulator and STS (ports 0), as the tests render it."""
    return relayctl.Settings.from_env({
        "AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
        "RELAY_PORT": "0",
        "RELAY_ADMIN_PORT": "0", "RELAY_HEALTH_PORT": "0",
        "RELAY_REPLICAS": str(replicas),
        "AWS_ACCESS_KEY_ID": iam.access_key_id,
        "AWS_SECRET_ACCESS_KEY": iam.secret_access_key,
        "AWS_ROLE_ARN": iam.role_arn,
        "AWS_ENDPOINT_URL_STS": emulator.sts_url,
        "AWS_ROLE_DURATION_SECONDS": "900",
        "RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS": "600",
        "RELAY_CREDENTIALS_WAIT_MS": "5000",
        "RELAY_INBOUND_TOKENS": token,
    })


def start_relay(workdir: Path, emulator: relayctl.Emulator, iam: relayctl.IamSetup, token: str,
                concurrency: int) -> relayctl.Topology:
    """One Envoy: renders envoy.yaml, validates it, starts Envoy."""
    env = relay_env(iam, token)
    path = relayctl.write_config(relayctl.render(relay_settings(emulator, iam, token, 1)), workdir)
    checked = relayctl.validate_config(path, env)
    if checked.returncode != 0:
        raise RuntimeError(f"envoy --mode validate failed:\n{checked.stderr}")
    envoy = relayctl.start_envoy(path, workdir, env, concurrency=concurrency)
    return relayctl.Topology(None, [envoy], [path], [env], concurrency)


def start_replicas(workdir: Path, emulator: relayctl.Emulator, iam: relayctl.IamSetup, token: str,
                   replicas: int, concurrency: int) -> relayctl.Topology:
    """The replicas mode: relayctl.start_topology with RELAY_REPLICAS, the same settings as
    start_relay (each relay replica gets its own STS credentials), a front Envoy on port 0. The
    relays write each access-log line at once (--file-flush-min-size-kb 0, not every 200 ms): a
    replica killed with SIGKILL loses what Envoy had not written yet, and the checks count lines."""
    return relayctl.start_topology(relay_settings(emulator, iam, token, replicas), workdir,
                                   relay_env(iam, token), concurrency=concurrency,
                                   extra_args=("--file-flush-min-size-kb", "0"))


def replica_name(envoy: relayctl.Envoy) -> str:
    """relay-1 ... (start_topology runs each replica in a directory of its name)."""
    return envoy.workdir.name


def envoy_rss(topo: relayctl.Topology) -> int | dict[str, int]:
    """The Envoy's resident memory in KiB; with replicas, each Envoy's (the front's and each relay's)."""
    if topo.front is None:
        return vm_rss_kib(topo.replicas[0].proc.pid)
    return {e.workdir.name: vm_rss_kib(e.proc.pid) for e in topo.envoys}


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LineCounter:
    """Counts the lines of a growing file, reading only what is new."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            last = chunk.rfind(b"\n")
            if last >= 0:
                self.lines += chunk.count(b"\n", 0, last + 1)
                self.offset += last + 1
        return self.lines


# ---------------------------------------------------------------------------------------------
# The emulator's view


RESOURCE_PATH = re.compile(r"^/datastore/[^/]+/r4/([A-Za-z]+)/([A-Za-z0-9.\-]+)$")
EMU_LINE = re.compile(r"^healthlake-emulator: (PUT|DELETE|GET|POST|HEAD|PATCH) (/datastore/\S*) -> (\S+(?: answer\))?) (.*)$")


def emulator_log_tally(path: Path) -> dict:
    """From the emulator's stderr (every lifetime, nothing lost in a restart): data-plane
    requests, and rejections by reason code. The only complete source of these counts: the
    request log (/_emulator/requests) goes with each emulator process, and the first lifetime's
    requests answered after the last read of it (just before the stop) and until it exits
    (503 while it saves its state) are nowhere else."""
    total = 0
    rejected = Counter()
    statuses = Counter()
    for line in path.read_text(errors="replace").splitlines():
        m = EMU_LINE.match(line)
        if not m:
            continue
        total += 1
        statuses[m.group(3)] += 1
        r = re.match(r"rejected \(([a-z_]+)\)", m.group(4))
        if r:
            rejected[r.group(1)] += 1
    return {"requests": total, "rejected": dict(rejected), "statuses": dict(statuses)}


def fetch_store(emulator: relayctl.Emulator) -> tuple[list[dict], dict[str, bytes]]:
    """The emulator's listing, and every stored resource's exact bytes."""
    listing = emulator.get_json("/_emulator/resources")
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=30)
    bodies = {}
    try:
        for r in listing:
            key = f"{r['resourceType']}/{r['id']}"
            conn.request("GET", f"/_emulator/resources/{key}")
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET /_emulator/resources/{key}: {resp.status}")
            bodies[key] = data
    finally:
        conn.close()
    return listing, bodies


def read_truth(path: Path) -> dict[str, bytes | None]:
    truth = {}
    with open(path, "rb") as f:
        for line in f:
            t = json.loads(line)
            if t["state"] == "present":
                body = t["body"].encode() if "body" in t else bytes.fromhex(t["body_hex"])
                truth[t["resource"]] = body
            else:
                truth[t["resource"]] = None
    return truth


def saved_state(state_file: Path) -> dict[str, str | None]:
    """What a stopped emulator saved (--state-file): each resource's body digest, None if deleted.
    Only the resource lines are read (the file's credential lines hold secrets: never copied)."""
    out: dict[str, str | None] = {}
    for line in state_file.read_text().splitlines():
        entry = json.loads(line)
        key = f"{entry.get('resource_type')}/{entry.get('id')}"
        if entry.get("kind") == "resource":
            out[key] = hashlib.sha256(base64.b64decode(entry["body_base64"])).hexdigest()
        elif entry.get("kind") == "deleted":
            out[key] = None
    return out


@dataclass
class History:
    """One resource's deliveries in Smile CDR's order (the plan's): the rank of each PUT version
    (by its body's digest; a version delivered again keeps its first rank) and of its delete."""

    puts: dict = field(default_factory=dict)
    delete: int | None = None
    # Deleted, re-created (a new version) and deleted again: a DELETE (no version) cannot be
    # told which.
    ambiguous_delete: bool = False
    put_since_delete: bool = False
    count: int = 0


def plan_histories(plan_path: Path) -> dict[str, History]:
    histories: dict[str, History] = {}
    with open(plan_path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            h = histories.setdefault(d["resource"], History())
            rank = h.count
            h.count += 1
            if d["method"] == "PUT":
                body = d["body"].encode() if "body" in d else (plan_path.parent / d["body_file"]).read_bytes()
                digest = hashlib.sha256(body).hexdigest()
                if digest not in h.puts:
                    h.puts[digest] = rank
                    # A new version (not a version delivered again): a later DELETE is another one.
                    h.put_since_delete = True
            elif h.delete is None:
                h.delete = rank
                h.put_since_delete = False
            elif h.put_since_delete:
                h.ambiguous_delete = True
    return histories


def guard_misses(histories: dict[str, History], segments: list[tuple[dict | None, list[dict]]]) -> dict:
    """The writes that reached HealthLake (the emulator's request log, in its order) older than a
    version HealthLake already held for that resource: an older version after a newer one was
    stored, a DELETE after a re-creation was stored, or a write older than a stored delete (a
    write after the delete that is not the re-creation). That is, the stale writes the version
    guard let through. "Held": the newest write of the resource the emulator accepted (2xx) so far,
    by its rank in Smile CDR's history. `segments`: each emulator lifetime's request log, after
    the state it started from (its state file; None for the first), which also covers the
    requests answered between the last read of a lifetime's log and its stop."""
    held: dict[str, int] = {}
    misses = []
    checked = unknown = 0
    for lifetime, (state, records) in enumerate(segments):
        for key, digest in (state or {}).items():
            h = histories.get(key)
            if h is None:
                continue
            rank = (h.delete if not h.ambiguous_delete else None) if digest is None else h.puts.get(digest)
            if rank is not None:
                held[key] = max(held.get(key, rank), rank)
        for r in records:
            if r["method"] not in ("PUT", "DELETE"):
                continue
            m = RESOURCE_PATH.match(r["path"])
            if not m or m.group(1) in UNSUPPORTED:
                continue
            key = f"{m.group(1)}/{m.group(2)}"
            h = histories.get(key)
            rank = None
            if h is not None:
                rank = h.puts.get((r.get("body_sha256") or "").lower()) if r["method"] == "PUT" else (
                    None if h.ambiguous_delete else h.delete)
            if rank is None:
                unknown += 1
                continue
            checked += 1
            before = held.get(key)
            if before is not None and rank < before:
                misses.append({"resource": key, "method": r["method"], "rank": rank, "held_rank": before,
                               "status": r["status"], "stored": 200 <= r["status"] < 300,
                               "signed_at": r.get("x_amz_date"), "lifetime": lifetime + 1, "seq": r.get("seq")})
            if 200 <= r["status"] < 300:
                held[key] = rank if before is None else max(before, rank)
    return {"checked": checked, "misses": len(misses), "stored": sum(m["stored"] for m in misses),
            "deliveries": len({(m["resource"], m["method"], m["rank"]) for m in misses}),
            "unknown": unknown, "list": misses}


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Observed:
    """What a run left for `evaluate` to check, gathered once the stand-in has finished."""

    # The stand-in: its summary (--summary-json), its exit status, what Smile CDR holds at the
    # end (--truth: each resource's bytes, None if deleted) and how each delivery ended
    # (--outcomes, plan order).
    summary: dict
    standin_rc: int
    truth: dict[str, bytes | None]
    outcomes: list[dict]
    # The emulator: its listing (/_emulator/resources), each stored resource's exact bytes,
    # the data-plane requests of both lifetimes (/_emulator/requests, the first read just before
    # the restart) and the tally of its stderr (emulator_log_tally: every lifetime, complete).
    listing: list[dict]
    stored: dict[str, bytes]
    records: list[dict]
    emu_log: dict
    # The relays: every access-log line (the front's too), and each relay Envoy's
    # (name, stats, its own lines) for the lifetime alive at the end.
    access: list[dict]
    lifetimes: list[tuple[str, dict, list[dict]]]
    # The run: the access key ids expired on purpose, and the plan's statistics.
    expired_keys: set[str]
    plan_stats: dict


def run(args) -> int:
    workdir = args.workdir.resolve()
    if workdir.exists():
        import shutil
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for needed, hint in ((relayctl.WASM, "make build"), (relayctl.EMULATOR_BIN, "make build"),
                         (FHIR_EXAMPLES / ".complete", "make fixtures")):
        if not Path(needed).exists():
            print(f"backfill: {needed} is missing: run `{hint}` (make backfill does)", file=sys.stderr)
            return 2
    if not args.no_build:
        build_standin()

    log(f"plan: {thousands(args.writes)} writes from the HL7 R4 examples, seed {args.seed}")
    plan_stats = make_plan(args, workdir)
    if args.late_replays:
        late = add_late_replays(workdir / "plan.jsonl", args.late_replays, args.seed)
        plan_stats["writes"] += late
        plan_stats["puts"] += late
        plan_stats["scenarios"][LATE_REPLAY] = late
        plan_stats["late_replays"] = late
        log(f"plan: {late} late replays of an older version added (--late-replays {args.late_replays})")

    services: list = []
    report: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "plan": {k: v for k, v in plan_stats.items() if not k.startswith("skipped_")}}
    checks: list[Check] = []
    token = os.environ.get("BACKFILL_INBOUND_TOKEN") or secrets.token_urlsafe(24)
    try:
        log("starting moto (STS, IAM authentication on)")
        moto = relayctl.start_moto(workdir / "moto")
        services.append(moto)
        iam = relayctl.setup_iam(moto)

        emu_dir = workdir / "emulator"
        state_file = emu_dir / "state.jsonl"
        log("starting the HealthLake emulator (STS proxy to moto, --state-file, unsupported types)")
        emu = relayctl.start_emulator(emu_dir, [], sts_upstream=moto.url, extra_args=emulator_args(state_file))
        services.append(emu)

        replicas_mode = args.replicas > 1
        # With replicas, one worker per Envoy: on the 2 cores this runs on, N relays already run N
        # workers beside the front, the emulator, moto and the stand-in; a second worker each would
        # only add threads (and a Wasm VM each) competing for the same cores, for a load capped by
        # the emulator's rate limit that a fraction of one worker carries (make bench). Sharing the
        # guard between an Envoy's workers is what the single-Envoy mode (2 workers) exercises.
        concurrency = args.concurrency or (1 if replicas_mode else 2)
        if replicas_mode:
            log(f"starting {args.replicas} relay replicas and the front Envoy (relayctl.start_topology, "
                f"--concurrency {concurrency} each, AWS_ROLE_ARN, 900 s credentials, refresh margin 600 s)")
            topo = start_replicas(workdir / "relay", emu, iam, token, args.replicas, concurrency)
        else:
            log(f"starting Envoy with the relay (--concurrency {concurrency}, AWS_ROLE_ARN, 900 s credentials, refresh margin 600 s)")
            topo = start_relay(workdir / "relay", emu, iam, token, concurrency)
        services.append(topo)
        rss_start = envoy_rss(topo)
        report["topology"] = {"replicas": args.replicas, "concurrency": concurrency,
                              "names": [replica_name(e) for e in topo.replicas] if replicas_mode else []}

        faults = {"unsupported_types": UNSUPPORTED, "error_rate": args.error_rate, "reset_rate": args.reset_rate,
                  "throttle_above_rps": args.rate_limit, "seed": args.seed}
        emu.set_faults(**faults)
        log(f"faults on: {json.dumps(faults)}")

        total = plan_stats["writes"]
        deadline = args.deadline_seconds or int(300 + total * 0.1)
        summary_json = workdir / "standin-summary.json"
        outcomes_path = workdir / "standin-outcomes.jsonl"
        truth_path = workdir / "truth.jsonl"
        stdout_path = workdir / "standin.out"
        out = open(stdout_path, "wb")
        cmd = [str(STANDIN_BIN), "send", "--endpoint", topo.url, "--plan", str(workdir / "plan.jsonl"),
               "--truth", str(truth_path), "--threads", str(args.threads),
               "--retry-delay-ms", str(args.retry_delay_ms), "--max-attempts", str(args.max_attempts),
               "--deadline-seconds", str(deadline), "--summary-json", str(summary_json),
               "--outcomes", str(outcomes_path), "--bearer-token-env", "SMILE_SUBSCRIPTION_TOKEN"]
        if args.quiet:
            cmd.append("--quiet")
        log(f"stand-in: {thousands(total)} deliveries, {args.threads} threads, retry after {args.retry_delay_ms} ms, "
            f"{args.max_attempts} attempts, bearer token")
        standin = StandIn(subprocess.Popen(cmd, stdout=out, env=dict(os.environ, SMILE_SUBSCRIPTION_TOKEN=token)),
                          stdout_path, [out])
        services.append(standin)
        send_started = time.monotonic()

        # Progress: the lines of every access log (the front's and the relays'; a restarted
        # replica goes on appending to its file).
        counters = [LineCounter(path) for path in topo.access_log_paths]
        expire_at = int(total * args.expire_at)
        restart_at = int(total * args.restart_at)
        kill_at = int(total * args.kill_at)
        expired_keys: set[str] = set()
        sts_before_expire = 0
        events: dict = {}
        sts_calls_first: list = []
        requests_first: list = []
        state_at_restart: dict = {}
        restarted = False
        killed = not replicas_mode
        # The killed replica's lines before its restart (its first lifetime), to compare each
        # lifetime's stats with its own lines.
        killed_lines_before = 0
        hard_deadline = send_started + deadline + 60
        while standin.alive():
            if time.monotonic() > hard_deadline:
                raise TimeoutError("the stand-in did not finish in time")
            n = sum(c.count() for c in counters)
            if not expired_keys and n >= expire_at and not events.get("expire"):
                status = emu.get_json("/_emulator/sts")
                expired_keys = {i["access_key_id"] for i in status["issued"] if not i["expired"]}
                sts_before_expire = sum(c["action"] == "AssumeRole" for c in status["calls"])
                answer = json.loads(emu.post("/_emulator/sts/expire"))
                events["expire"] = {"at_access_log_line": n, "seconds": round(time.monotonic() - send_started, 1),
                                    "wall": time.time(), "expired_sets": answer["expired"],
                                    "keys": sorted(k[-4:] for k in expired_keys)}
                log(f"credentials expired early (POST /_emulator/sts/expire): {answer['expired']} set(s), "
                    f"after {thousands(n)} access-log lines")
            if not killed and n >= kill_at:
                # A relay replica dies (SIGKILL: no drain, nothing flushed, its in-flight requests
                # cut) and is started again in its place a few seconds later, its guard empty.
                index = args.kill_replica - 1
                victim = topo.replicas[index]
                name = replica_name(victim)
                t0 = time.monotonic()
                victim.proc.kill()
                kill_wall = time.time()
                exit_status = victim.proc.wait(timeout=10)
                victim.stop()  # closes its log files; the process is gone
                killed_lines_before = len(victim.access_log())
                log(f"replica {name} killed (SIGKILL, pid {victim.proc.pid}, exit {exit_status}) after "
                    f"{thousands(n)} access-log lines; down for {args.replica_down_seconds:.0f} s")
                time.sleep(args.replica_down_seconds)
                started = time.monotonic()
                fresh = topo.start_replica(index)
                up_wall = time.time()
                up = time.monotonic()
                events["replica_kill"] = {
                    "replica": name, "index": index, "at_access_log_line": n, "seconds": round(t0 - send_started, 1),
                    "exit_status": exit_status, "kill_wall": kill_wall, "up_wall": up_wall,
                    "down_seconds": round(up - t0, 2), "start_seconds": round(up - started, 2),
                    "lines_before": killed_lines_before, "port": fresh.port}
                log(f"replica {name} started again on its ports ({up - t0:.1f} s down, {up - started:.1f} s to start), "
                    f"its version guard empty")
                killed = True
            if not restarted and n >= restart_at:
                # What the first lifetime recorded, just before it goes (the request log is not
                # kept). Frozen first, as its shutdown would: writes from now on get 503 and come
                # back after the restart, so the log read holds every write it stored.
                emu.post("/_emulator/freeze")
                sts_calls_first = emu.get_json("/_emulator/sts")["calls"]
                requests_first = emu.requests()
                t0 = time.monotonic()
                emu.stop()
                stopped = time.monotonic()
                # The resources it saved (the state the next lifetime starts from), for the
                # count of stale writes: it also holds what the requests answered between the
                # read above and the stop did.
                state_at_restart = saved_state(state_file)
                log(f"emulator stopped (SIGTERM, state saved in {stopped - t0:.1f} s) after {thousands(n)} "
                    f"access-log lines; down for {args.down_seconds:.0f} s")
                time.sleep(args.down_seconds)
                services.remove(emu)
                emu = relayctl.start_emulator(emu_dir, [], sts_upstream=moto.url, port=emu.port,
                                              sts_port=emu.sts_port, extra_args=emulator_args(state_file))
                services.append(emu)
                emu.set_faults(**faults)
                up = time.monotonic()
                events["restart"] = {"at_access_log_line": n, "seconds": round(t0 - send_started, 1),
                                     "save_seconds": round(stopped - t0, 2), "down_seconds": round(up - stopped, 2)}
                log(f"emulator started again on the same ports ({up - stopped:.1f} s down), state loaded, faults re-applied")
                restarted = True
            time.sleep(0.1)
        send_seconds = time.monotonic() - send_started
        standin_rc = standin.proc.wait()
        out.close()
        standin_text = stdout_path.read_text()
        log(f"stand-in finished (exit {standin_rc}) in {send_seconds:.1f} s")
        summary = json.loads(summary_json.read_text()) if summary_json.exists() else {}
        report["standin"] = summary
        report["events"] = events

        # The access logs are written every 200 ms: wait for a line per answered request.
        answered = sum(summary.get("responses_by_outcome", {}).values())
        try:
            relayctl.wait_until(lambda: sum(c.count() for c in counters) >= answered, 15, "every access-log line",
                                interval=0.2)
        except TimeoutError:
            pass
        rss_end = envoy_rss(topo)
        access = topo.access_log()
        # Each relay Envoy's stats, with the lines of its own lifetime (a killed replica's
        # counters died with it: its restarted process counts from its start).
        lifetimes = []
        for e in topo.replicas:
            lines = e.access_log()
            name = replica_name(e) if replicas_mode else "envoy"
            if events.get("replica_kill", {}).get("replica") == name:
                lines = lines[killed_lines_before:]
            lifetimes.append((name, e.stats(), lines))
        stats = sum_stats([s for _, s, _ in lifetimes])

        sts_second = emu.get_json("/_emulator/sts")
        requests_second = emu.requests()
        records = requests_first + requests_second
        listing, stored = fetch_store(emu)
        truth = read_truth(truth_path)
        emu_log = emulator_log_tally(emu_dir / "emulator.log")
        outcomes = [json.loads(line) for line in outcomes_path.read_text().splitlines()] if outcomes_path.exists() else []

        observed = Observed(summary=summary, standin_rc=standin_rc, truth=truth, outcomes=outcomes,
                            listing=listing, stored=stored, records=records, emu_log=emu_log,
                            access=access, lifetimes=lifetimes, expired_keys=expired_keys, plan_stats=plan_stats)
        checks = evaluate(observed, report)
        calls = sts_calls_first + sts_second["calls"]
        assume = [c for c in calls if c["action"] == "AssumeRole"]
        report["credentials"] = {
            "assume_role_calls": len(assume),
            "assume_role_ok": sum(c["status"] == 200 for c in assume),
            "assume_role_after_expire": len(assume) - sts_before_expire if events.get("expire") else None,
            "refresh_attempted": stats.get("wasmcustom.healthlake_relay.credentials.refresh_attempted"),
            "refresh_succeeded": stats.get("wasmcustom.healthlake_relay.credentials.refresh_succeeded"),
            "refresh_failed": stats.get("wasmcustom.healthlake_relay.credentials.refresh_failed"),
            "expiry_seconds": stats.get("wasmcustom.healthlake_relay.credentials.expiry_seconds"),
        }
        forced = report["credentials"]["assume_role_after_expire"]
        if not replicas_mode:
            checks.append(Check("relay refreshed its credentials after the early expiry",
                                bool(forced) and forced >= 1,
                                f"{forced} AssumeRole call(s) after the expiry, {len(assume)} in all"))
        else:
            # Every relay process that lived through the expiry refreshed (its first fetch and at
            # least one more); a process started after it fetched fresh credentials at its start.
            kill = events.get("replica_kill", {})
            through = [(name, s) for name, s, _ in lifetimes
                       if not (name == kill.get("replica") and kill.get("kill_wall", 0) > events.get("expire", {}).get("wall", 0))]
            refreshed = {name: s.get("wasmcustom.healthlake_relay.credentials.refresh_succeeded", 0) for name, s in through}
            checks.append(Check("relay refreshed its credentials after the early expiry",
                                bool(forced) and forced >= len(through) and all(v >= 2 for v in refreshed.values()),
                                f"{forced} AssumeRole call(s) after the expiry, {len(assume)} in all; credential fetches "
                                "by each replica that lived through the expiry (its first and the refreshes): "
                                + ", ".join(f"{k} {v}" for k, v in refreshed.items())))
        report["envoy_retries"] = {k.removeprefix("cluster.healthlake."): v for k, v in stats.items()
                                   if k.startswith("cluster.healthlake.") and (
                                       "retry" in k or k.endswith(("upstream_cx_connect_fail", "upstream_rq_pending_overflow",
                                                                   "upstream_rq_total", "upstream_rq_per_try_timeout")))}
        report["envoy_rss_kib"] = {"start": rss_start, "end": rss_end}

        # Stale writes the version guard let through, from the emulator's request logs.
        misses = guard_misses(plan_histories(workdir / "plan.jsonl"),
                              [(None, requests_first), (state_at_restart or None, requests_second)])
        report["guard_misses"] = {k: v for k, v in misses.items() if k != "list"}
        report["guard_misses"]["examples"] = misses["list"][:20]
        report["guard_misses"]["not_in_request_logs"] = max(0, emu_log["requests"] - len(records))
        if args.late_replays:
            checks.append(late_replays_check(outcomes, misses, plan_stats, report))
        if replicas_mode:
            checks += evaluate_replicas(topo, events, misses, summary, report)
        report["elapsed_seconds"] = {"send": round(send_seconds, 1), "total": round(time.monotonic() - STARTED, 1)}
    finally:
        for s in reversed(services):
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - stopping the rest matters more
                print(f"backfill: stopping {getattr(s, 'name', s)}: {e}", file=sys.stderr)

    print()
    print(standin_text.rstrip())
    print_summary(report, checks)
    report["checks"] = [c.__dict__ for c in checks]
    out_path = args.summary_json or (workdir / "backfill-summary.json")
    Path(out_path).write_text(json.dumps(report, indent=2, sort_keys=False))
    print(f"\nsummary JSON: {out_path}")
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"\nBACKFILL FAILED: {len(failed)} of {len(checks)} checks failed: " + "; ".join(c.name for c in failed))
        return 1
    print(f"\nBACKFILL PASSED: {len(checks)} checks")
    return 0


def evaluate(observed: Observed, report: dict) -> list[Check]:
    """The checks every run makes, from what it observed; fills `report` in on the way."""
    summary, standin_rc, truth, outcomes = observed.summary, observed.standin_rc, observed.truth, observed.outcomes
    listing, stored, records, emu_log = observed.listing, observed.stored, observed.records, observed.emu_log
    access, lifetimes, expired_keys = observed.access, observed.lifetimes, observed.expired_keys
    plan_stats = observed.plan_stats
    checks: list[Check] = []
    unsupported = set(UNSUPPORTED)

    def rtype(key: str) -> str:
        return key.split("/", 1)[0]

    # 1. The store equals Smile CDR's holdings.
    expected = {k: v for k, v in truth.items() if v is not None and rtype(k) not in unsupported}
    deleted = {k for k, v in truth.items() if v is None}
    present = set(stored)
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    resurrected = sorted(present & deleted)
    unsupported_present = sorted(k for k in present if rtype(k) in unsupported)
    different = sorted(k for k in set(expected) & present if stored[k] != expected[k])
    by_sha = {f"{r['resourceType']}/{r['id']}": r["sha256"] for r in listing}
    sha_mismatch = sorted(k for k in present if hashlib.sha256(stored[k]).hexdigest() != by_sha.get(k))
    report["store"] = {"expected_present": len(expected), "stored": len(present), "missing": len(missing),
                       "extra": len(extra), "resurrected": len(resurrected), "different_bytes": len(different),
                       "unsupported_present": len(unsupported_present),
                       # A stale version left in HealthLake is either other bytes than Smile CDR's
                       # latest (an older version) or a resource Smile CDR deleted (resurrected).
                       "stale_left": len(different) + len(resurrected),
                       "examples": {"missing": missing[:10], "resurrected": resurrected[:10],
                                    "different_bytes": different[:10], "extra": extra[:10]}}
    checks.append(Check("every supported resource at its latest version, byte-identical",
                        not missing and not different and not sha_mismatch,
                        f"{thousands(len(expected) - len(missing) - len(different))} of {thousands(len(expected))} "
                        f"identical; {len(missing)} missing, {len(different)} with other bytes"
                        + (f" (missing e.g. {', '.join(missing[:5])})" if missing else "")
                        + (f" (different e.g. {', '.join(different[:5])})" if different else "")))
    checks.append(Check("no deleted resource present, nothing extra",
                        not resurrected and not extra,
                        f"{len(resurrected)} deleted in Smile CDR but present, {len(extra)} not in Smile CDR at all"
                        + (f" (e.g. {', '.join(resurrected[:5])})" if resurrected else "")))
    checks.append(Check("no resource of an unsupported type stored", not unsupported_present,
                        f"{len(unsupported_present)} stored"))

    # 2. The stand-in: every delivery done, none dead-lettered; unsupported ones answered as such.
    dead = summary.get("dead_lettered", -1)
    abandoned = summary.get("abandoned", -1)
    checks.append(Check("zero dead letters, nothing abandoned", dead == 0 and abandoned == 0 and standin_rc == 0,
                        f"dead-lettered {dead}, abandoned {abandoned}, stand-in exit {standin_rc}"))
    unsup_deliveries = [o for o in outcomes if rtype(o["resource"]) in unsupported]
    unsup_wrong = [o for o in unsup_deliveries if o["outcome"] != "unsupported-type"]
    sup_unsup = [o for o in outcomes if rtype(o["resource"]) not in unsupported and o["outcome"] == "unsupported-type"]
    checks.append(Check("each delivery of an unsupported type counted as unsupported-type",
                        len(unsup_deliveries) == plan_stats["unsupported_writes"] and not unsup_wrong and not sup_unsup
                        and summary.get("unsupported") == len(unsup_deliveries),
                        f"{thousands(len(unsup_deliveries))} deliveries of unsupported types, "
                        f"{len(unsup_wrong)} answered otherwise; {len(sup_unsup)} of supported types called unsupported"))
    stale = [o for o in outcomes if o["outcome"] == "stale-version"]
    report["stale_version"] = {"count": len(stale), "by_scenario": dict(Counter(o.get("scenario") for o in stale)),
                               "examples": [f"{o['method']} {o['resource']} (line {o['line']})" for o in stale[:10]]}

    # 3. Credentials and signatures, from the emulator's records (both lifetimes) and its stderr
    #    (complete: it also has requests answered between the last snapshot and the stop).
    codes = Counter(r["error_code"] for r in records if r["error_code"])
    signature_errors = {k: v for k, v in codes.items() if k != "expired_token"}
    log_signature_errors = {k: v for k, v in emu_log["rejected"].items() if k != "expired_token"}
    expired = [r for r in records if r["error_code"] == "expired_token"]
    expired_other_keys = [r for r in expired if r["access_key_id"] not in expired_keys]
    report["emulator"] = {
        "requests_recorded": len(records), "requests_in_stderr": emu_log["requests"],
        "rejections_in_stderr": emu_log["rejected"], "error_codes": dict(codes),
        "faults": dict(Counter(r["fault"] for r in records if r["fault"])),
        "statuses": dict(Counter(str(r["status"]) for r in records)),
    }
    checks.append(Check("no request rejected for a bad signature (or unknown, wrong or missing credentials)",
                        not signature_errors and not log_signature_errors,
                        f"records: {signature_errors or 'none'}; stderr: {log_signature_errors or 'none'}"))
    checks.append(Check("ExpiredTokenException only for the credentials expired on purpose",
                        not expired_other_keys and emu_log["rejected"].get("expired_token", 0) >= len(expired),
                        f"{len(expired)} requests signed with the force-expired set(s) got ExpiredTokenException "
                        f"(stderr: {emu_log['rejected'].get('expired_token', 0)}); "
                        f"{len(expired_other_keys)} with another set"))
    ok_records = [r for r in records if 200 <= r["status"] < 300]
    bad_ok = [r for r in ok_records if not (r["verified"] and r["credential_valid"] and r["credential_source"] == "sts")]
    # The record that stored each final version: the last 2xx PUT of its path with its bytes.
    last_put: dict[tuple[str, str], dict] = {}
    for r in ok_records:
        if r["method"] == "PUT":
            m = re.match(r"^/datastore/[^/]+/r4/([A-Za-z]+)/([A-Za-z0-9.\-]+)$", r["path"])
            if m:
                last_put[(f"{m.group(1)}/{m.group(2)}", r["body_sha256"])] = r
    final_found = 0
    final_bad = []
    for k in present:
        r = last_put.get((k, by_sha.get(k)))
        if r is None:
            continue
        final_found += 1
        if not (r["verified"] and r["credential_valid"] and r["credential_source"] == "sts"):
            final_bad.append(k)
    checks.append(Check("every write HealthLake kept was signed with valid STS credentials",
                        not bad_ok and not final_bad,
                        f"{thousands(len(ok_records))} accepted requests all verified with unexpired STS credentials "
                        f"({len(bad_ok)} not); the write of {thousands(final_found)} of {thousands(len(present))} stored "
                        f"versions found in the request log, {len(final_bad)} of them bad"
                        + ("" if final_found == len(present) else
                           "; the others were answered between the last read of the first emulator's request log "
                           "and its stop, seen only in its stderr, which shows no rejection but the expired ones")))

    # 4. The access log against the stand-in: one line per answered request, same outcomes.
    log_outcomes = Counter(e.get("outcome") or NO_OUTCOME for e in access)
    standin_answers = Counter(summary.get("responses_by_outcome", {}))
    final = Counter(summary.get("final_outcomes", {}))
    transport = summary.get("transport_errors", 0)
    non2xx_log = sum(1 for e in access if not 200 <= int(e.get("status") or 0) < 300)
    failed_answers = summary.get("retried", 0) + summary.get("dead_lettered", 0) - transport
    done_match = all(log_outcomes.get(o, 0) == final.get(o, 0) for o in DONE_OUTCOMES)
    report["access_log"] = {"lines": len(access), "outcomes": dict(log_outcomes), "non_2xx": non2xx_log,
                            "attempts": sum(int(e.get("attempts") or 0) for e in access),
                            "response_flags": dict(Counter(e.get("response_flags") for e in access))}
    # A request the stand-in got no answer for (transport error) may still have its line (Envoy
    # answered, the answer was lost) or not: every answer the stand-in saw is in the log, and the
    # log has at most one extra line per transport error.
    extra = {o: log_outcomes.get(o, 0) - standin_answers.get(o, 0) for o in log_outcomes | standin_answers}
    answers_match = all(n >= 0 for n in extra.values()) and sum(extra.values()) <= transport
    checks.append(Check("access log = stand-in: the 2xx outcomes, and one failed line per retry",
                        done_match and non2xx_log == failed_answers and answers_match,
                        "2xx outcomes " + ", ".join(f"{o} {log_outcomes.get(o, 0)}/{final.get(o, 0)}" for o in DONE_OUTCOMES)
                        + f" (log/stand-in); non-2xx lines {non2xx_log} = retried {summary.get('retried', 0)}"
                        f" + dead-lettered {summary.get('dead_lettered', 0)} - no-answer {transport}; "
                        f"log lines beyond the stand-in's answers {sum(extra.values())} (at most {transport}); "
                        f"{len(access)} lines for {summary.get('sent', 0)} requests sent"))
    # Each relay Envoy's outcome counters against its own lines (with replicas: each process alive
    # at the end; the restarted replica's since its restart).
    differences = {}
    counted = True
    for name, stats, lines in lifetimes:
        stat_outcomes = {k.rsplit(".", 1)[1].replace("_", "-"): v for k, v in stats.items()
                         if k.startswith("wasmcustom.healthlake_relay.outcome.")}
        own = Counter(e.get("outcome") or NO_OUTCOME for e in lines)
        counted = counted and bool(stat_outcomes)
        mismatch = {o: (stat_outcomes.get(o, 0), own.get(o, 0)) for o in set(own) | set(stat_outcomes)
                    if o != NO_OUTCOME and stat_outcomes.get(o, 0) != own.get(o, 0)}
        if mismatch:
            differences[name] = mismatch
    where = "" if len(lifetimes) == 1 else f" ({len(lifetimes)} relay processes; the killed one's counters died with it)"
    checks.append(Check("Envoy stats count the same outcomes as the access log", counted and not differences,
                        (f"differences (stats, log): {differences or 'none'}" if counted
                         else "Envoy reported no outcome stats") + where))
    return checks


def late_replays_check(outcomes: list[dict], misses: dict, plan_stats: dict, report: dict) -> Check:
    """With --late-replays: each late replay was held back (stale-version) or forwarded (a
    delivered outcome), and the forwarded ones are exactly the guard misses found in the
    emulator's request logs (no other miss): the count of misses is checked against the relay."""
    late = [o for o in outcomes if o.get("scenario") == LATE_REPLAY]
    held = sum(o["outcome"] == "stale-version" for o in late)
    forwarded = {o["resource"] for o in late if o["outcome"] == "delivered"}
    missed = {m["resource"] for m in misses["list"] if m["method"] == "PUT" and m["rank"] == 0}
    others = [m for m in misses["list"] if m["resource"] not in forwarded]
    report["late_replays"] = {"added": plan_stats.get("late_replays", 0), "held_back": held,
                              "forwarded": len(forwarded)}
    return Check("each late replay held back by the guard, or forwarded and counted as a guard miss",
                 len(late) == plan_stats.get("late_replays", 0) and held + len(forwarded) == len(late)
                 and forwarded == missed and not others,
                 f"{len(late)} late replays: {held} answered stale-version, {len(forwarded)} forwarded "
                 f"(delivered); guard misses in the request logs for {len(missed)} of them, {len(others)} other")


def sum_stats(all_stats: list[dict]) -> dict:
    """Counters added up over the relay Envoys (a gauge such as the credentials' expiry: the least)."""
    out: dict = {}
    for stats in all_stats:
        for k, v in stats.items():
            if k.endswith("expiry_seconds"):
                out[k] = min(out.get(k, v), v)
            else:
                out[k] = out.get(k, 0) + v
    return out


def wall(text: str) -> float:
    """An access log's %START_TIME% (UTC, milliseconds) as a Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def resource_of(path: str) -> str:
    """Type/id from a relay's or the front's logged path ([base path]/{Type}/{id}, no query)."""
    return "/".join(path.split("?", 1)[0].rstrip("/").split("/")[-2:])


# Clock slack between this script's wall clock and Envoy's millisecond times.
SLACK_SECONDS = 0.05


def evaluate_replicas(topo: relayctl.Topology, events: dict, misses: dict, summary: dict, report: dict) -> list[Check]:
    """The replicas mode's own checks: every line names its replica, each resource stays on its
    home, the writes spread over every replica, and the kill: only the killed replica's resources
    answered replica-unavailable, only while it was down, then served by it again."""
    checks: list[Check] = []
    kill = events.get("replica_kill") or {}
    victim = kill.get("replica")
    names = [replica_name(e) for e in topo.replicas]
    per_file = {name: e.access_log() for name, e in zip(names, topo.replicas)}
    front_lines = topo.front.access_log()

    unnamed = {name: sum(line.get("replica") != name for line in lines) for name, lines in per_file.items()}
    front_unnamed = sum(line.get("replica") != "front" for line in front_lines)
    checks.append(Check("every relay access-log line names its replica",
                        not any(unnamed.values()) and not front_unnamed,
                        ", ".join(f"{name} {thousands(len(lines))} lines, {unnamed[name]} not naming it"
                                  for name, lines in per_file.items())
                        + f"; front {len(front_lines)} lines, {front_unnamed} not naming it"))

    # Affinity: each resource's lines in one relay's log; the spread over the relays.
    homes: dict[str, set] = {}
    for name, lines in per_file.items():
        for line in lines:
            homes.setdefault(resource_of(line.get("path") or ""), set()).add(name)
    split = sorted(k for k, v in homes.items() if len(v) != 1)
    home = {k: next(iter(v)) for k, v in homes.items()}
    spread = {name: len(lines) for name, lines in per_file.items()}
    resources = Counter(home.values())
    total_lines = sum(spread.values())
    even_half = total_lines / (2 * len(names)) if names else 0
    report["replicas"] = {"lines": spread, "resources": dict(resources), "split_resources": len(split)}
    checks.append(Check("each resource handled by one replica, its home; the writes spread over every replica",
                        not split and all(spread.get(n, 0) >= even_half for n in names) and total_lines > 0,
                        f"{thousands(len(home))} resources, {len(split)} handled by more than one replica"
                        + (f" (e.g. {', '.join(split[:5])})" if split else "")
                        + "; lines (resources) per replica: "
                        + ", ".join(f"{n} {thousands(spread.get(n, 0))} ({thousands(resources.get(n, 0))})" for n in names)
                        + f"; each at least half an even share ({even_half:.0f})"))

    # The kill and the restart.
    after = per_file.get(victim, [])[kill.get("lines_before", 0):] if victim else []
    checks.append(Check("one replica killed (SIGKILL) mid-run, restarted in its place, serving its resources again",
                        bool(kill) and kill.get("exit_status") == -9 and len(after) > 0
                        and all(home.get(resource_of(line.get("path") or "")) == victim for line in after),
                        (f"{victim} killed at {kill['seconds']} s (exit status {kill['exit_status']}), down "
                         f"{kill['down_seconds']} s; {thousands(kill['lines_before'])} lines before, "
                         f"{thousands(len(after))} after its restart, all for its own resources") if kill
                        else "no replica was killed"))

    # The front's answers: replica-unavailable, for the killed replica's resources, while it was down.
    unavailable = [line for line in front_lines if line.get("outcome") == "replica-unavailable"]
    wrong = []
    for line in front_lines:
        start = wall(line["time"])
        end = start + int(line.get("duration_ms") or 0) / 1000
        ok = (line.get("outcome") == "replica-unavailable" and line.get("home") == victim
              and home.get(resource_of(line.get("path") or "")) == victim
              and end >= kill.get("kill_wall", 0) - SLACK_SECONDS and start <= kill.get("up_wall", 0) + SLACK_SECONDS)
        if not ok:
            wrong.append(line)
    others = [line for name, lines in per_file.items() if name != victim for line in lines
              if kill and kill["kill_wall"] <= wall(line["time"]) <= kill["up_wall"]]
    flags = Counter(line.get("response_flags") for line in unavailable)
    report["replicas"].update({
        "replica_unavailable": len(unavailable), "front_lines": len(front_lines),
        "replica_unavailable_resources": len({resource_of(line["path"]) for line in unavailable}),
        "response_flags": dict(flags), "other_replicas_lines_while_down": len(others),
        "standin_retried": summary.get("retried", 0)})
    checks.append(Check("the front answered replica-unavailable only for the killed replica's resources, only while it was down",
                        bool(unavailable) and not wrong,
                        f"{len(unavailable)} replica-unavailable (503) for "
                        f"{report['replicas']['replica_unavailable_resources']} resources, all homed on {victim}, "
                        f"between its kill and its restart (flags: " + ", ".join(f"{k} {v}" for k, v in flags.items())
                        + f"); {len(wrong)} other front lines"
                        + (f" (e.g. {json.dumps(wrong[0])})" if wrong else "")
                        + f"; meanwhile the other replicas logged {thousands(len(others))} lines"))

    by_home = Counter(home.get(m["resource"], "?") for m in misses["list"])
    report["guard_misses"]["by_home"] = dict(by_home)
    report["guard_misses"]["homed_on_killed"] = by_home.get(victim, 0)
    return checks


def print_summary(report: dict, checks: list[Check]) -> None:
    s = report.get("standin", {})
    plan = report.get("plan", {})
    store = report.get("store", {})
    emu = report.get("emulator", {})
    cred = report.get("credentials", {})
    rss = report.get("envoy_rss_kib", {})
    access = report.get("access_log", {})
    ev = report.get("events", {})
    print("\n=== Historical backfill under faults ===")
    print(f"plan        {thousands(plan.get('writes', 0))} writes ({thousands(plan.get('puts', 0))} PUT, "
          f"{thousands(plan.get('deletes', 0))} DELETE) of {thousands(plan.get('resources', 0))} resources, "
          f"{plan.get('types', 0)} types; {thousands(plan.get('unsupported_writes', 0))} writes of unsupported types")
    print("            scenarios: " + ", ".join(f"{k} {v}" for k, v in plan.get("scenarios", {}).items()))
    print(f"faults      error_rate {report['settings']['error_rate']}, reset_rate {report['settings']['reset_rate']}, "
          f"throttle_above_rps {report['settings']['rate_limit']}; "
          f"early expiry at {ev.get('expire', {}).get('seconds', '-')} s, "
          f"restart at {ev.get('restart', {}).get('seconds', '-')} s "
          f"(down {ev.get('restart', {}).get('down_seconds', '-')} s)")
    print(f"stand-in    {thousands(s.get('deliveries', 0))} deliveries, {thousands(s.get('sent', 0))} requests "
          f"({thousands(s.get('retried', 0))} retries) in {s.get('elapsed_seconds', 0):.1f} s, "
          f"{s.get('throughput_per_second', 0):.1f} deliveries/s; dead-lettered {s.get('dead_lettered', '-')}")
    print(f"            final: delivered {s.get('delivered', 0)}, deleted {s.get('deleted', 0)}, already-absent "
          f"{s.get('already_absent', 0)}, unsupported-type {s.get('unsupported', 0)}, stale-version {s.get('stale', 0)}, "
          f"other {s.get('other_2xx', 0)}")
    print(f"access log  {thousands(access.get('lines', 0))} lines: " +
          ", ".join(f"{k} {v}" for k, v in sorted(access.get("outcomes", {}).items())) +
          f"; {thousands(access.get('attempts', 0))} upstream attempts")
    print(f"emulator    {thousands(emu.get('requests_in_stderr', 0))} requests reached it "
          f"({thousands(emu.get('requests_recorded', 0))} in the request logs); faults injected: " +
          ", ".join(f"{k} {v}" for k, v in sorted(emu.get("faults", {}).items())))
    print(f"            rejections: {emu.get('rejections_in_stderr') or 'none'}")
    print(f"store       {thousands(store.get('stored', 0))} stored, {thousands(store.get('expected_present', 0))} "
          f"expected; missing {store.get('missing', '-')}, other bytes {store.get('different_bytes', '-')}, "
          f"resurrected {store.get('resurrected', '-')}, unsupported {store.get('unsupported_present', '-')}; "
          f"stale versions left {store.get('stale_left', '-')} (other bytes + resurrected)")
    print(f"credentials {cred.get('assume_role_calls', '-')} AssumeRole calls ({cred.get('assume_role_after_expire', '-')} "
          f"after the early expiry); relay refreshes attempted {cred.get('refresh_attempted', '-')}, succeeded "
          f"{cred.get('refresh_succeeded', '-')}, failed {cred.get('refresh_failed', '-')}")
    retries = report.get("envoy_retries", {})
    if retries:
        print(f"envoy       {thousands(retries.get('upstream_rq_total', 0))} upstream requests, "
              f"{thousands(retries.get('upstream_rq_retry', 0))} retried by Envoy "
              f"({thousands(retries.get('upstream_rq_retry_success', 0))} of them succeeded), "
              f"{thousands(retries.get('upstream_rq_retry_overflow', 0))} retries skipped by the circuit breaker (UO), "
              f"{thousands(retries.get('upstream_rq_retry_limit_exceeded', 0))} out of retries; "
              f"{thousands(access.get('response_flags', {}).get('UO', 0) + sum(v for k, v in access.get('response_flags', {}).items() if k and k.startswith('UO,')))} "
              f"access-log lines flagged UO")
    if rss and isinstance(rss["start"], int):
        print(f"envoy RSS   {rss['start'] / 1024:.1f} MiB at start, {rss['end'] / 1024:.1f} MiB at the end")
    elif rss:
        print("envoy RSS   " + ", ".join(f"{k} {v / 1024:.1f}" for k, v in rss["start"].items()) + " MiB at start; "
              + ", ".join(f"{k} {v / 1024:.1f}" for k, v in rss["end"].items()) + " MiB at the end")
    reps = report.get("replicas")
    if reps:
        kill = ev.get("replica_kill", {})
        topo = report.get("topology", {})
        print(f"replicas    {topo.get('replicas')} relay Envoys ({topo.get('concurrency')} worker each) behind the front; "
              "lines (resources) per replica: "
              + ", ".join(f"{k} {thousands(v)} ({thousands(reps['resources'].get(k, 0))})" for k, v in reps["lines"].items()))
        print(f"            {kill.get('replica', '-')} killed (SIGKILL) at {kill.get('seconds', '-')} s after "
              f"{thousands(kill.get('at_access_log_line', 0))} lines, down {kill.get('down_seconds', '-')} s "
              f"(restart {kill.get('start_seconds', '-')} s); the front answered {reps['replica_unavailable']} "
              f"replica-unavailable (503) for {reps['replica_unavailable_resources']} resources, the other replicas "
              f"logged {thousands(reps['other_replicas_lines_while_down'])} lines meanwhile; "
              f"stand-in retries {thousands(reps['standin_retried'])} in all")
    gm = report.get("guard_misses")
    if gm:
        homed = f", {gm['homed_on_killed']} of them for the killed replica's resources" if "homed_on_killed" in gm else ""
        print(f"guard       {gm['misses']} stale writes reached HealthLake (older than a version it held, or a write "
              f"after a stored delete that was no re-creation), {gm['deliveries']} deliveries{homed}; "
              f"{gm['stored']} of them stored; "
              f"{thousands(gm['checked'])} writes checked in the request logs"
              + (f", {gm['unknown']} not in the plan" if gm["unknown"] else "")
              + f", {gm['not_in_request_logs']} seen only in the emulator's stderr (its state file covers them)")
    lr = report.get("late_replays")
    if lr:
        print(f"            late replays {lr['added']}: {lr['held_back']} held back (stale-version), "
              f"{lr['forwarded']} forwarded")
    stale = report.get("stale_version", {})
    if stale.get("count"):
        print(f"stale       {stale['count']} deliveries answered stale-version (by scenario: "
              + ", ".join(f"{k} {v}" for k, v in stale["by_scenario"].items()) + "), e.g. "
              + "; ".join(stale["examples"][:5]))
    el = report.get("elapsed_seconds", {})
    print(f"elapsed     {el.get('send', 0):.1f} s sending, {el.get('total', 0):.1f} s in all")
    print("checks")
    for c in checks:
        print(f"  [{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=int, default=20_000, help="deliveries in the plan (default 20000)")
    p.add_argument("--seed", type=int, default=401)
    p.add_argument("--weights", default="", help="scenario weights for the plan (smile-standin plan --help)")
    p.add_argument("--threads", type=int, default=8, help="the stand-in's delivery threads")
    p.add_argument("--retry-delay-ms", type=int, default=500)
    p.add_argument("--max-attempts", type=int, default=20)
    p.add_argument("--late-replays", type=float, default=0.0,
                   help="share of the eligible resources given a late delivery of their first version "
                        "just before their last delivery, for the version guard to hold back (default 0: none)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="workers of each Envoy (default 2 with one Envoy, 1 with replicas)")
    p.add_argument("--replicas", type=int, default=1,
                   help="relay replicas behind a front Envoy (RELAY_REPLICAS); 1: one Envoy, no front (default)")
    p.add_argument("--kill-at", type=float, default=0.33,
                   help="with replicas: kill one relay replica (SIGKILL) at this share of the run")
    p.add_argument("--kill-replica", type=int, default=1, help="with replicas: which one (1: relay-1)")
    p.add_argument("--replica-down-seconds", type=float, default=3.0,
                   help="with replicas: how long the killed replica stays down before it is started again")
    p.add_argument("--error-rate", type=float, default=0.05)
    p.add_argument("--reset-rate", type=float, default=0.02)
    p.add_argument("--rate-limit", type=int, default=150, help="the emulator's throttle_above_rps")
    p.add_argument("--expire-at", type=float, default=0.3, help="expire the credentials at this share of the run")
    p.add_argument("--restart-at", type=float, default=0.6, help="restart the emulator at this share of the run")
    p.add_argument("--down-seconds", type=float, default=3.0)
    p.add_argument("--deadline-seconds", type=int, default=0, help="the stand-in's deadline (default from --writes)")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "backfill")
    p.add_argument("--summary-json", type=Path)
    p.add_argument("--no-build", action="store_true", help="do not build the stand-in first")
    p.add_argument("--quiet", action="store_true", help="no progress from the stand-in")
    args = p.parse_args(argv)
    if not 1 <= args.replicas <= relayctl.MAX_REPLICAS:
        p.error(f"--replicas must be 1 to {relayctl.MAX_REPLICAS}")
    if args.replicas > 1 and not 1 <= args.kill_replica <= args.replicas:
        p.error("--kill-replica must name one of the replicas (1 to --replicas)")
    try:
        return run(args)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError, relayctl.SettingsError) as e:
        print(f"backfill: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("backfill: interrupted; every process started here was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
