"""Historical backfill under faults, the short version of `make backfill`: scripts/backfill.py
with about 2,000 writes through the real Envoy (two workers, STS credentials from moto) into the
emulator, with the same faults (5xx, resets, a rate limit that bites, an early credential expiry,
one emulator restart on the same ports with its state kept), must pass every check: HealthLake
ends holding exactly what Smile CDR holds, nothing lost, resurrected or dead-lettered. The same
through the front Envoy and three relay replicas (--replicas 3), one of them killed (SIGKILL) and
restarted mid-run, with late replays of older versions for the version guards to hold back.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from conftest import ROOT, fhir_examples, register_secret, register_state_file

# Every check scripts/backfill.py makes, in its order: all of them must run, every time.
BACKFILL_CHECKS = [
    "every supported resource at its latest version, byte-identical",
    "no deleted resource present, nothing extra",
    "no resource of an unsupported type stored",
    "zero dead letters, nothing abandoned",
    "each delivery of an unsupported type counted as unsupported-type",
    "no request rejected for a bad signature (or unknown, wrong or missing credentials)",
    "ExpiredTokenException only for the credentials expired on purpose",
    "every write HealthLake kept was signed with valid STS credentials",
    "access log = stand-in: the 2xx outcomes, and one failed line per retry",
    "Envoy stats count the same outcomes as the access log",
    "relay refreshed its credentials after the early expiry",
]

# With --late-replays, then with --replicas, these follow.
LATE_REPLAY_CHECK = "each late replay held back by the guard, or forwarded and counted as a guard miss"
REPLICA_CHECKS = [
    "every relay access-log line names its replica",
    "each resource handled by one replica, its home; the writes spread over every replica",
    "one replica killed (SIGKILL) mid-run, restarted in its place, serving its resources again",
    "the front answered replica-unavailable only for the killed replica's resources, only while it was down",
]


@pytest.fixture(scope="module")
def standin():
    fhir_examples()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "smile-standin"], cwd=ROOT,
                   check=True, timeout=900)


def run_backfill(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """A 2,000-write backfill.py run (with `args`), its outputs kept for the session's search for
    secrets (conftest); returns the process and its summary."""
    workdir = tmp_path / "backfill"
    summary_path = tmp_path / "summary.json"
    token = secrets.token_urlsafe(24)
    register_secret(token)
    register_state_file(workdir / "emulator" / "state.jsonl")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "backfill.py"), "--writes", "2000", "--rate-limit", "100", *args,
         "--workdir", str(workdir), "--summary-json", str(summary_path), "--no-build", "--quiet"],
        capture_output=True, text=True, timeout=240, env=dict(os.environ, BACKFILL_INBOUND_TOKEN=token),
    )
    (tmp_path / "backfill.stdout").write_text(r.stdout)
    (tmp_path / "backfill.stderr").write_text(r.stderr)
    print(r.stdout[-8000:])
    print(r.stderr[-4000:], file=sys.stderr)
    assert summary_path.exists(), r.stderr[-2000:]
    return r, json.loads(summary_path.read_text())


def test_short_backfill_under_faults_loses_nothing(standin, tmp_path):
    r, report = run_backfill(tmp_path)
    # The faults happened: throttling, errors, resets, the early expiry and the restart.
    faults = report["emulator"]["faults"]
    assert faults.get("throttle-429", 0) + faults.get("throttle-400", 0) > 0, faults
    assert faults.get("reset", 0) > 0 and sum(faults.get(s, 0) for s in ("500", "502", "503", "504")) > 0, faults
    assert report["events"]["expire"]["expired_sets"] >= 1
    assert report["events"]["restart"]["down_seconds"] >= 2.5
    # Every check ran: none is skipped whatever happened during the run.
    assert [c["name"] for c in report["checks"]] == BACKFILL_CHECKS
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, "\n".join(f"{c['name']}: {c['detail']}" for c in failed)
    assert r.returncode == 0


def test_short_backfill_through_replicas_one_killed_loses_nothing(standin, tmp_path):
    r, report = run_backfill(tmp_path, "--replicas", "3", "--late-replays", "0.5")
    # The faults happened, and the kill: relay-1 died of SIGKILL and came back on its ports.
    faults = report["emulator"]["faults"]
    assert faults.get("throttle-429", 0) + faults.get("throttle-400", 0) > 0, faults
    assert report["events"]["restart"]["down_seconds"] >= 2.5
    kill = report["events"]["replica_kill"]
    assert kill["replica"] == "relay-1" and kill["exit_status"] == -9 and kill["down_seconds"] >= 2.5, kill
    replicas = report["replicas"]
    assert set(replicas["lines"]) == {"relay-1", "relay-2", "relay-3"}, replicas
    assert replicas["replica_unavailable"] > 0, replicas
    # The guards held back late replays (those of the other replicas' resources at least); any
    # they forwarded is a guard miss, and no miss was left in the store.
    assert report["late_replays"]["held_back"] > 0, report["late_replays"]
    assert report["guard_misses"]["deliveries"] == report["late_replays"]["forwarded"], report["guard_misses"]
    assert set(report["guard_misses"]["by_home"]) <= {"relay-1"}, report["guard_misses"]
    assert report["store"]["stale_left"] == 0
    # Every check ran and passed.
    assert [c["name"] for c in report["checks"]] == BACKFILL_CHECKS + [LATE_REPLAY_CHECK] + REPLICA_CHECKS
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, "\n".join(f"{c['name']}: {c['detail']}" for c in failed)
    assert r.returncode == 0
