"""Historical backfill under faults, the short version of `make backfill`: scripts/backfill.py
with about 2,000 writes through the real Envoy (two workers, STS credentials from moto) into the
emulator, with the same faults (5xx, resets, a rate limit that bites, an early credential expiry,
one emulator restart on the same ports with its state kept), must pass every check: HealthLake
ends holding exactly what Smile CDR holds, nothing lost, resurrected or dead-lettered.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, fhir_examples


@pytest.fixture(scope="module")
def standin():
    fhir_examples()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "smile-standin"], cwd=ROOT,
                   check=True, timeout=900)


def test_short_backfill_under_faults_loses_nothing(standin, tmp_path):
    workdir = tmp_path / "backfill"
    summary_path = tmp_path / "summary.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "backfill.py"), "--writes", "2000", "--rate-limit", "100",
         "--workdir", str(workdir), "--summary-json", str(summary_path), "--no-build", "--quiet"],
        capture_output=True, text=True, timeout=240,
    )
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
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, "\n".join(f"{c['name']}: {c['detail']}" for c in failed)
    assert r.returncode == 0
