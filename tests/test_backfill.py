"""Historical backfill under faults, the short version of `make backfill`: scripts/backfill.py
with about 2,000 writes through the real Envoy (two workers, STS credentials from moto) into the
emulator, with the same faults (5xx, resets, a rate limit that bites, an early credential expiry,
one emulator restart on the same ports with its state kept), must pass every check: HealthLake
ends holding exactly what Smile CDR holds, nothing lost, resurrected or dead-lettered.
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


@pytest.fixture(scope="module")
def standin():
    fhir_examples()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "smile-standin"], cwd=ROOT,
                   check=True, timeout=900)


def test_short_backfill_under_faults_loses_nothing(standin, tmp_path):
    workdir = tmp_path / "backfill"
    summary_path = tmp_path / "summary.json"
    token = secrets.token_urlsafe(24)
    register_secret(token)
    register_state_file(workdir / "emulator" / "state.jsonl")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "backfill.py"), "--writes", "2000", "--rate-limit", "100",
         "--workdir", str(workdir), "--summary-json", str(summary_path), "--no-build", "--quiet"],
        capture_output=True, text=True, timeout=240, env=dict(os.environ, BACKFILL_INBOUND_TOKEN=token),
    )
    # The outputs are kept for the session's search for secrets (conftest).
    (tmp_path / "backfill.stdout").write_text(r.stdout)
    (tmp_path / "backfill.stderr").write_text(r.stderr)
    print(r.stdout[-8000:])
    print(r.stderr[-4000:], file=sys.stderr)
    assert summary_path.exists(), r.stderr[-2000:]
    report = json.loads(summary_path.read_text())
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
