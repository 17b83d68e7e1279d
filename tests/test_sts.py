"""Temporary credentials from STS AssumeRole, through the real Envoy.

STS is moto with IAM authentication on, so moto itself checks the relay's SigV4 signature on
every AssumeRole call. The HealthLake emulator stands in front of moto as a recording proxy and
accepts exactly the temporary credentials moto issued, until they expire.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import register_secret, register_state_file, relay_env, relayctl, send, start_relay

FHIR = {"Content-Type": "application/fhir+json"}


def body(rid: str) -> bytes:
    return json.dumps({"resourceType": "Patient", "id": rid}).encode()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = relayctl.start_moto(tmp_path_factory.mktemp("moto"))
    iam = relayctl.setup_iam(m)
    register_secret(iam.secret_access_key, iam.denied_secret_access_key)
    yield m, iam
    m.stop()


@pytest.fixture(scope="module")
def emulator(moto, tmp_path_factory):
    m, _ = moto
    workdir = tmp_path_factory.mktemp("emulator")
    # The state file, written when the emulator stops, is where the STS-issued secrets and
    # session tokens are read from for the session's search of every output (conftest).
    state = workdir / "state.jsonl"
    register_state_file(state)
    emu = relayctl.start_emulator(workdir, [], sts_upstream=m.url, extra_args=["--state-file", str(state)])
    yield emu
    emu.stop()


def role_relay(workdir, emulator, iam, key=None, sts_url=None, healthlake_url=None, **settings):
    key_id, secret = key or (iam.access_key_id, iam.secret_access_key)
    env = relay_env(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    settings_env = {
        "AWS_ROLE_ARN": iam.role_arn,
        "AWS_ENDPOINT_URL_STS": sts_url or emulator.sts_url,
        "AWS_ROLE_DURATION_SECONDS": "900",
        "RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS": "600",
        "RELAY_CREDENTIALS_WAIT_MS": "5000",
        **settings,
    }
    if healthlake_url:
        settings_env["AWS_ENDPOINT_URL_HEALTHLAKE"] = healthlake_url
    return start_relay(workdir, emulator, env, settings_env=settings_env, concurrency=2)


def assume_role_calls(emulator) -> list[dict]:
    return [c for c in emulator.get_json("/_emulator/sts")["calls"] if c["action"] == "AssumeRole"]


def stat(envoy, name: str) -> int:
    return envoy.stats().get(f"wasmcustom.healthlake_relay.credentials.{name}", 0)


def test_first_fetch_then_refreshes_once_per_envoy_not_per_worker(moto, emulator, tmp_path):
    _, iam = moto
    calls_before = len(assume_role_calls(emulator))
    # 900 s credentials refreshed from 890 s before expiry: a refresh about every 10 s.
    envoy = role_relay(tmp_path, emulator, iam, RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS="890")
    try:
        # The first write waits for the first credentials, then goes through.
        r = send(envoy.url, "PUT", "/Patient/first", body("first"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body

        deadline = time.monotonic() + 26
        n = 0
        with ThreadPoolExecutor(4) as pool:
            while time.monotonic() < deadline:
                results = list(pool.map(lambda i: send(envoy.url, "PUT", f"/Patient/r{i}", body(f"r{i}"), FHIR),
                                        range(n, n + 4)))
                n += 4
                assert all(r.status in (200, 201) for r in results), [(r.status, r.body[:200]) for r in results]
                time.sleep(0.2)

        calls = assume_role_calls(emulator)[calls_before:]
        assert len(calls) >= 3, calls  # the first fetch and at least two refreshes
        assert all(c["status"] == 200 for c in calls), calls
        # One AssumeRole per refresh for the whole Envoy, not one per worker (two workers): the
        # first fetch alone, then one call every 10 s (+ a spread of up to 1 s, a tenth of the
        # 10 s used before the margin). A call per worker would come in pairs milliseconds apart;
        # a missed refresh would leave a gap of 20 s.
        times = [datetime.fromisoformat(c["time"].replace("Z", "+00:00")).timestamp() for c in calls]
        gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
        assert all(9.5 <= g <= 16 for g in gaps), gaps
        assert stat(envoy, "refresh_succeeded") == len(calls)
        assert stat(envoy, "refresh_attempted") == len(calls)
        assert stat(envoy, "refresh_failed") == 0
        assert 0 < envoy.stats().get("wasmcustom.healthlake_relay.credentials.expiry_seconds", 0) <= 900

        # Every request HealthLake received was signed with STS credentials valid at that moment.
        reached = [q for q in emulator.requests() if q["path"].startswith("/datastore/")]
        assert len(reached) >= n
        assert all(q["verified"] and q["credential_source"] == "sts" and q["credential_valid"] for q in reached)
        assert len({q["access_key_id"] for q in reached}) >= 2

        log = (tmp_path / "envoy.log").read_text()
        assert log.count("credentials from environment+assume-role: …") == len(calls)
        for secret in (iam.secret_access_key,):
            assert secret not in log
    finally:
        envoy.stop()


def test_expired_token_forces_one_refresh_not_a_storm(moto, emulator, tmp_path):
    _, iam = moto
    envoy = role_relay(tmp_path, emulator, iam, AWS_ROLE_DURATION_SECONDS="3600",
                       RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS="900")
    try:
        assert send(envoy.url, "PUT", "/Patient/e0", body("e0"), FHIR).status == 201
        before = len(assume_role_calls(emulator))
        assert emulator.get_json("/_emulator/sts")["issued"]
        emulator.post("/_emulator/sts/expire")  # as if they expired early

        with ThreadPoolExecutor(6) as pool:
            first = list(pool.map(lambda i: send(envoy.url, "PUT", f"/Patient/e{i}", body(f"e{i}"), FHIR),
                                  range(1, 7)))
        # Writes signed with the expired token are answered 503 auth-failed (Smile CDR retries).
        assert all(r.status in (200, 201, 503) for r in first), [r.status for r in first]
        assert any(r.header("x-healthlake-outcome") == "auth-failed" for r in first)

        def delivered():
            r = send(envoy.url, "PUT", "/Patient/e-after", body("e-after"), FHIR)
            return r.status in (200, 201)

        relayctl.wait_until(delivered, 20, "a write with the refreshed credentials", interval=0.3)
        assert len(assume_role_calls(emulator)) == before + 1
        assert "refreshing them now" in (tmp_path / "envoy.log").read_text()
    finally:
        envoy.stop()


def test_access_denied_by_sts_fails_closed(moto, emulator, tmp_path):
    _, iam = moto
    emulator.reset()
    envoy = role_relay(tmp_path, emulator, iam,
                       key=(iam.denied_access_key_id, iam.denied_secret_access_key),
                       RELAY_CREDENTIALS_WAIT_MS="1500")
    try:
        r = send(envoy.url, "PUT", "/Patient/denied", body("denied"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (503, "no-credentials")
        assert not [q for q in emulator.requests() if q["path"].startswith("/datastore/")]
        log = (tmp_path / "envoy.log").read_text()
        assert "no credentials from environment+assume-role (attempt 1): assume-role: STS answered 403 AccessDenied" in log
        assert stat(envoy, "refresh_failed") >= 1
        entry = envoy.wait_for_log(lambda e: e["resource_id"] == "denied")
        assert entry["outcome"] == "no-credentials"
    finally:
        envoy.stop()


def test_sts_down_at_start_then_recovers_without_restart(moto, tmp_path):
    m, iam = moto
    port, sts_port = relayctl.free_port(), relayctl.free_port()
    # Nothing listens yet where the relay expects STS (and HealthLake).
    envoy = role_relay(tmp_path / "relay", None, iam,
                       sts_url=f"http://127.0.0.1:{sts_port}", healthlake_url=f"http://127.0.0.1:{port}",
                       RELAY_CREDENTIALS_WAIT_MS="1000")
    emu = None
    try:
        r = send(envoy.url, "PUT", "/Patient/down", body("down"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (503, "no-credentials")
        assert stat(envoy, "refresh_failed") >= 1

        state = tmp_path / "emulator" / "state.jsonl"
        register_state_file(state)
        emu = relayctl.start_emulator(tmp_path / "emulator", [], sts_upstream=m.url, port=port, sts_port=sts_port,
                                      extra_args=["--state-file", str(state)])

        def delivered():
            r = send(envoy.url, "PUT", "/Patient/up", body("up"), FHIR)
            return r.status == 201

        relayctl.wait_until(delivered, 40, "the relay to recover once STS is up", interval=0.5)
        assert stat(envoy, "refresh_succeeded") == 1
        assert envoy.alive()
    finally:
        envoy.stop()
        if emu:
            emu.stop()


# (STS proxy fault, what the relay's warn line says)
BROKEN_STS_ANSWERS = [
    ("garbled", "the answer is not UTF-8"),
    ("no-credentials", "the answer has no AccessKeyId"),
    ("bad-expiration", 'Expiration "not-a-date" is not an ISO-8601 time'),
    ("expired", "too soon to use"),
    ("huge", "answered 200 with more than 65536 bytes: not credentials"),
    ("503", "ServiceUnavailable"),
]


@pytest.mark.parametrize("fault,reason", BROKEN_STS_ANSWERS, ids=[f for f, _ in BROKEN_STS_ANSWERS])
def test_a_broken_sts_answer_is_a_failed_fetch_never_a_signature(moto, emulator, tmp_path, fault, reason):
    """The first AssumeRole gets a broken answer: the write waiting for credentials is answered
    503 no-credentials (Smile CDR retries), the relay logs why and backs off, and the next call
    (a normal answer) brings credentials; nothing is ever signed with what the broken answer held."""
    _, iam = moto
    emulator.reset()
    emulator.set_sts_faults([fault])
    calls_before = len(assume_role_calls(emulator))
    envoy = role_relay(tmp_path, emulator, iam, RELAY_CREDENTIALS_WAIT_MS="300")
    try:
        r = send(envoy.url, "PUT", f"/Patient/{fault}-first", body(f"{fault}-first"), FHIR)
        if r.status != 503:
            # Only if the broken answer came and went within the 300 ms wait (a fast retry).
            assert r.header("x-healthlake-outcome") == "delivered", (r.status, r.body)
        else:
            assert r.header("x-healthlake-outcome") == "no-credentials", r.body

        def delivered():
            r = send(envoy.url, "PUT", f"/Patient/{fault}-later", body(f"{fault}-later"), FHIR)
            return r.status == 201

        relayctl.wait_until(delivered, 30, "a write with the next credentials", interval=0.3)
        calls = assume_role_calls(emulator)[calls_before:]
        assert [c["fault"] for c in calls] == [fault, None], calls
        assert stat(envoy, "refresh_failed") == 1 and stat(envoy, "refresh_succeeded") == 1
        log = (tmp_path / "envoy.log").read_text()
        assert "no credentials from environment+assume-role (attempt 1): assume-role:" in log and reason in log, log[-3000:]
        reached = [q for q in emulator.requests() if q["path"].startswith("/datastore/")]
        assert reached and all(q["verified"] and q["credential_valid"] for q in reached), reached
        # Every request was signed with the set issued by the good call.
        assert {q["access_key_id"] for q in reached} == {calls[1]["issued_access_key_id"]}
        assert envoy.alive()
    finally:
        envoy.stop()
