"""A short hostile-input soak through the real Envoy with the built .wasm (scripts/fuzz_envoy.py,
`make fuzz-envoy` for the long run): 20 s of hostile requests over raw sockets, a share of them over
HTTP/2, with a normal write every 100 that must arrive, and no Wasm VM crash."""

from __future__ import annotations

import fuzz_envoy  # scripts/, on sys.path through conftest
from conftest import register_secret

register_secret(fuzz_envoy.TOKEN)

SECONDS = 20
SEED = 20240601


def test_hostile_requests_through_envoy_lose_no_normal_write_and_crash_no_vm(tmp_path):
    report = fuzz_envoy.run(seconds=SECONDS, seed=SEED, workdir=tmp_path, concurrency=2)
    summary = fuzz_envoy.summary(report)
    (tmp_path / "summary.txt").write_text(summary)  # searched for secrets with every output
    print(summary)
    assert report.hostile_sent >= 500, summary
    assert report.normal_sent >= 2, summary
    assert report.normal_lost == 0, summary
    assert report.crash_line_count == 0, summary
    assert report.envoy_alive, summary
    # HTTP/2 went out, and some of it got through Envoy's codec to the relay.
    assert report.by_protocol.get("h2", 0) >= 100, summary
    assert any(label.startswith("h2:relay:") for label in report.answers), summary
