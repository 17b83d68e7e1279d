"""`scripts/bench.py --quick`: the benchmark's smoke test.

It runs the whole chain once, briefly: the signing check of (b) native, (c) relay and (d) floor
against the emulator, the stub upstream, one short wrk run per set-up, and the report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("(a) plain", "(b) native", "(c) relay", "(d) floor")


def results_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the first table whose header has a "requests/s" column, as {heading: cell}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and "| requests/s |" in line)
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def test_quick_benchmark_measures_every_setup(tmp_path):
    # No silent skip: make test installs wrk (bench-deps) before the integration tests.
    assert shutil.which("wrk"), "wrk is not installed: run `make bench-deps` (make test does)"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    # Kept beside the results, searched for secrets with every output of the suite (conftest).
    (tmp_path / "bench.stdout").write_text(done.stdout)
    (tmp_path / "bench.stderr").write_text(done.stderr)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert "signing check passed" in done.stdout
    rows = results_rows((tmp_path / "results.md").read_text())
    rates = {row["set-up"]: float(row["requests/s"].replace(",", "")) for row in rows}
    assert set(rates) == set(SETUPS), rows
    assert all(rate > 0 for rate in rates.values()), rates
    # Every signing set-up was checked against the emulator's own verifier before timing.
    checks = json.loads((tmp_path / "results.json").read_text())["signing_check"]
    assert {c["setup"]: c["verified"] for c in checks} == {
        "native": [True], "relay": [True], "floor": [True]}, checks


def test_floor_probes_make_their_host_calls_and_still_sign(tmp_path):
    """`make bench-instructions INSTRUCTIONS_ARGS=--probes` runs the floor with each `probe`: every
    one must load, still answer the PUT through to the upstream, and make its call the configured
    number of times (seen for the counter, the one probe Envoy's stats show)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench
    import instructions
    import relayctl

    env = bench.envoy_environment()
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    ctx = bench.Context(tmp_path, env, relayctl.WASM, bench.FLOOR_WASM)
    body = bench.make_bodies(["2k"], tmp_path / "bodies")["2k"]
    stub, stub_url = bench.start_stub(ctx)
    try:
        for kind in instructions.PROBES:
            target = instructions.probe_target(ctx, stub_url, kind, 3, tmp_path / "envoy")
            envoy = relayctl.start_envoy(target.config_path, target.workdir, env, concurrency=1)
            try:
                for _ in range(2):
                    status, answer = bench.put(envoy.url, target.request_path(body), body.file.read_bytes())
                    assert status == 200, (kind, status, answer[:300])
                if kind == "metric":
                    assert bench.stat_value(envoy, "wasmcustom.relay_floor_probe") == 6
            finally:
                envoy.stop()
    finally:
        stub.stop()
