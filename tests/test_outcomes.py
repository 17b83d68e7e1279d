"""Outcome classification through the real Envoy: for each kind of HealthLake answer, the status
Smile CDR receives, the access-log outcome, and the stats; Envoy's retries; the memory of
unsupported types. The emulator injects HealthLake's failures on demand.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import relay_env, relayctl, send, start_relay

DATASTORE = relayctl.DEMO_DATASTORE_ID
HEADERS = {"Content-Type": "application/fhir+json; charset=UTF-8", "If-Match": 'W/"1"'}
TTL = 6  # seconds a learned unsupported type is answered locally in this module
SECRET = relayctl.DEMO_SECRET_ACCESS_KEY


def body(rtype: str, rid: str) -> bytes:
    return json.dumps({"resourceType": rtype, "id": rid, "status": "final"}).encode()


def upstream(rtype: str, rid: str) -> str:
    return f"/datastore/{DATASTORE}/r4/{rtype}/{rid}"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    # HealthLake's answer to deleting an absent resource is not documented; 404 exercises the
    # relay's already-absent mapping.
    emu = relayctl.start_emulator(
        tmp_path_factory.mktemp("emulator"),
        [f"{relayctl.DEMO_ACCESS_KEY_ID}:{SECRET}"],
        # Every R4 type, as before discovery: this module proves what the relay makes of
        # HealthLake's answers, learning unsupported types included (test_capabilities.py proves
        # discovery against the emulator's HealthLake list).
        extra_args=["--delete-absent-status", "404", "--resource-types", "all"],
    )
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def relay(emulator, tmp_path_factory):
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    # Two workers: what one learns about unsupported types, the other must know too.
    envoy = start_relay(tmp_path_factory.mktemp("relay"), emulator, env, settings_env={
        "RELAY_UNSUPPORTED_TYPE_TTL_SECONDS": str(TTL),
        "RELAY_UNSUPPORTED_TYPES": "TestScript",
        "RELAY_CAPABILITIES_REFRESH_SECONDS": "0",
    }, concurrency=2)
    yield envoy
    envoy.stop()


def counter(stats: dict, outcome: str, rtype: str | None = None) -> int:
    name = outcome.replace("-", "_")
    key = (f"wasmcustom.healthlake_relay.type.{rtype}.outcome.{name}" if rtype
           else f"wasmcustom.healthlake_relay.outcome.{name}")
    return stats.get(key, 0)


def check(relay, before: dict, r, rid: str, status: int, outcome: str, rtype: str, method: str = "PUT") -> dict:
    """Smile CDR's status, the outcome header, the access-log entry and both stats."""
    assert r.status == status, (outcome, r.status, r.body[:400])
    assert r.header("x-healthlake-outcome") == outcome
    entry = relay.wait_for_log(lambda e: e["resource_id"] == rid and e["method"] == method)
    assert entry["outcome"] == outcome
    assert entry["status"] == status
    after = relay.stats()
    assert counter(after, outcome) == counter(before, outcome) + 1, outcome
    assert counter(after, outcome, rtype) == counter(before, outcome, rtype) + 1, outcome
    return entry


def wait_for_envoy_log(relay, needle: str) -> str:
    """Envoy's own log (where the relay's log lines go), once it contains `needle`."""
    def read():
        text = (relay.workdir / "envoy.log").read_text()
        return text if needle in text else None
    return relayctl.wait_until(read, 10, f"{needle!r} in envoy.log")


# (name, faults, method, status Smile CDR gets, outcome, expected HealthLake attempts)
ROWS = [
    ("put-ok", {}, "PUT", 201, "delivered", 1),
    ("throttled-429", {"next": ["throttle-429"] * 4}, "PUT", 429, "throttled", 4),
    ("throttled-400", {"next": ["throttle-400"] * 4}, "PUT", 429, "throttled", 4),
    # HealthLake's 429 without Retry-After: the relay's own (retry_after_seconds) is sent.
    ("throttled-no-retry-after", {"next": ["throttle-429-bare"] * 4}, "PUT", 429, "throttled", 4),
    ("expired-token", {"next": ["expired-token"]}, "PUT", 503, "auth-failed", 1),
    ("bad-signature", {"next": ["invalid-signature"]}, "PUT", 503, "auth-failed", 1),
    # A front end's 401/403 with no body at all: still a 503 with an OperationOutcome.
    ("auth-empty-403", {"next": ["empty:403"]}, "PUT", 503, "auth-failed", 1),
    ("auth-empty-401", {"next": ["empty:401"]}, "PUT", 503, "auth-failed", 1),
    ("server-500", {"next": ["500"] * 4}, "PUT", 502, "upstream-error", 4),
    ("server-503", {"next": ["503"] * 4}, "PUT", 503, "upstream-error", 4),
    ("reset", {"next": ["reset"] * 4}, "PUT", 503, "upstream-error", 4),
    ("invalid-422", {"next": ["422"]}, "PUT", 422, "rejected", 1),
    # Error bodies that are not what HealthLake normally sends: larger than the 64 KiB the relay
    # reads, not JSON, not UTF-8.
    ("large-html-500", {"next": ["large:500"] * 4}, "PUT", 502, "upstream-error", 4),
    ("large-html-400", {"next": ["large:400"]}, "PUT", 400, "rejected", 1),
    ("garbled-400", {"next": ["garbled:400"]}, "PUT", 400, "rejected", 1),
    ("garbled-429", {"next": ["garbled:429"] * 4}, "PUT", 429, "throttled", 4),
    ("delete-absent", {}, "DELETE", 204, "already-absent", 1),
]


@pytest.mark.parametrize("name,faults,method,status,outcome,attempts", ROWS, ids=[r[0] for r in ROWS])
def test_each_answer_is_classified(relay, fresh, name, faults, method, status, outcome, attempts):
    if faults:
        fresh.set_faults(**faults)
    before = relay.stats()
    rid = f"row-{name}"
    r = send(relay.url, method, f"/Observation/{rid}", body("Observation", rid) if method == "PUT" else None, HEADERS)
    entry = check(relay, before, r, rid, status, outcome, "Observation", method)
    reached = [q for q in fresh.requests() if q["path"] == upstream("Observation", rid)]
    assert len(reached) == attempts, reached
    assert entry["attempts"] == attempts
    assert all(q["verified"] for q in reached)
    if outcome == "throttled":
        # HealthLake's Retry-After (the emulator sends 1), else the relay's retry_after_seconds (5).
        sent_retry_after = all(q["fault"] in ("throttle-429", "throttle-400") for q in reached)
        assert r.header("retry-after") == ("1" if sent_retry_after else "5"), r.headers
        assert entry["error_code"] == ("ThrottlingException" if name.startswith("throttled") else None)
    if outcome == "auth-failed":
        assert r.header("content-type") == "application/fhir+json"
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.json()["issue"][0]["code"] == "transient"
        assert entry["error_code"] == {"expired-token": "ExpiredTokenException",
                                       "bad-signature": "InvalidSignatureException"}.get(name)
    if name == "invalid-422":
        assert r.json()["issue"][0]["code"] == "processing"  # HealthLake's own OperationOutcome
        assert entry["error_code"] == "processing"
    if name.startswith(("large", "garbled")):
        # Passed on as HealthLake sent it, whole, though the relay read only 64 KiB of it.
        if name.startswith("large"):
            assert (r.header("content-type"), len(r.body)) == ("text/html", 100_000), r.headers
            assert r.body.rstrip().endswith(b"</html>"), r.body[-100:]
        else:
            assert r.body.startswith(b'{"__type": "Thrott\xff\xfe\x00'), r.body
    # AWS's front-end headers (the emulator sends them on every answer) never reach Smile CDR;
    # what an operator needs does.
    assert not {"via", "x-amz-apigw-id", "x-amzn-trace-id", "x-amz-cf-id", "x-amz-cf-pop"} & set(r.headers), r.headers
    if reached[-1]["status"]:  # a reset gets no answer, so no request id
        assert r.header("x-amzn-requestid") == reached[-1]["request_id"]
    if outcome == "already-absent":
        assert r.body == b""
    if status < 300 or outcome == "rejected" or outcome == "auth-failed":
        assert entry["healthlake_request_id"] == reached[-1]["request_id"]


def test_delete_of_stored_resource_is_deleted(relay, fresh):
    assert send(relay.url, "PUT", "/Observation/d1", body("Observation", "d1"), HEADERS).status == 201
    before = relay.stats()
    r = send(relay.url, "DELETE", "/Observation/d1")
    entry = check(relay, before, r, "d1", 204, "deleted", "Observation", "DELETE")
    assert entry["method"] == "DELETE"


def test_a_503_burst_is_retried_by_envoy_and_delivered(relay, fresh):
    fresh.set_faults(next=["503", "reset", "throttle-400"])
    before = relay.stats()
    r = send(relay.url, "PUT", "/Patient/burst", body("Patient", "burst"), HEADERS)
    entry = check(relay, before, r, "burst", 201, "delivered", "Patient")
    assert entry["attempts"] == 4
    reached = [q for q in fresh.requests() if q["path"] == upstream("Patient", "burst")]
    assert [q["fault"] for q in reached] == ["503", "reset", "throttle-400", None]
    assert fresh.resource("Patient", "burst") == body("Patient", "burst")


def test_unsupported_type_is_learned_shared_and_forgotten_after_the_ttl(relay, fresh):
    fresh.set_faults(unsupported_types=["Basic"])
    before = relay.stats()
    r = send(relay.url, "PUT", "/Basic/u1", body("Basic", "u1"), HEADERS)
    check(relay, before, r, "u1", 200, "unsupported-type", "Basic")
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning"
    assert outcome["issue"][0]["code"] == "not-supported"
    assert "Basic" in outcome["issue"][0]["diagnostics"]
    assert r.header("x-healthlake-type-support") == "healthlake"
    entry = relay.wait_for_log(lambda e: e["resource_id"] == "u1")
    assert entry["error_code"] == "not-supported"
    assert entry["upstream_status"] == "400"
    assert entry["type_support"] == "healthlake"

    # Later writes of the type are answered locally, by both workers (each request on its own
    # connection, which Envoy spreads over them): HealthLake is not asked again.
    for rid in [f"u-{n}" for n in range(12)] + ["u3"]:
        r = send(relay.url, "PUT", f"/Basic/{rid}", body("Basic", rid), HEADERS)
        assert (r.status, r.header("x-healthlake-outcome")) == (200, "unsupported-type")
        assert r.header("x-healthlake-type-support") == "learned"
    r = send(relay.url, "DELETE", "/Basic/u1")
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "unsupported-type")
    assert [q["path"] for q in fresh.requests()] == [upstream("Basic", "u1")]
    local = relay.wait_for_log(lambda e: e["resource_id"] == "u3")
    assert local["upstream_path"] is None and local["outcome"] == "unsupported-type"
    assert local["type_support"] == "learned"
    # Discovery is off here: no CapabilityStatement was asked for, none is in use.
    assert fresh.metadata_requests() == []
    assert relay.stats().get("wasmcustom.healthlake_relay.capabilities.discovered") == 0

    # Other types are unaffected.
    assert send(relay.url, "PUT", "/Patient/p-ok", body("Patient", "p-ok"), HEADERS).status == 201

    # The first occurrence is logged at warn, once, with HealthLake's diagnostics.
    log = (relay.workdir / "envoy.log").read_text()
    assert log.count("HealthLake does not support resource type Basic") == 1
    assert "ResourceType Basic is not supported." in log

    # After the TTL, HealthLake is asked again (and, now supporting it, stores it).
    fresh.set_faults()
    deadline = time.monotonic() + TTL + 10
    while True:
        r = send(relay.url, "PUT", "/Basic/u4", body("Basic", "u4"), HEADERS)
        if r.header("x-healthlake-outcome") == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status == 201, "the learned type did not expire"
    assert fresh.resource("Basic", "u4") == body("Basic", "u4")


def test_preset_unsupported_type_never_reaches_healthlake(relay, fresh):
    r = send(relay.url, "PUT", "/TestScript/t1", body("TestScript", "t1"), HEADERS)
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "unsupported-type")
    assert r.header("x-healthlake-type-support") == "configured"
    assert fresh.requests() == []


def test_auth_failure_logs_the_canonical_request_but_no_secret(relay, fresh):
    fresh.set_faults(next=["expired-token"])
    r = send(relay.url, "PUT", "/Patient/auth-log", body("Patient", "auth-log"), HEADERS)
    assert r.status == 503
    log = wait_for_envoy_log(relay, "auth-failed Patient/auth-log")
    assert "ExpiredTokenException" in log
    assert f"PUT\n/datastore/{DATASTORE}/r4/Patient/auth-log\n\ncontent-type:application/fhir+json\n" in log
    assert SECRET not in log


def test_rejected_logs_healthlake_diagnostics(relay, fresh):
    fresh.set_faults(next=["422"])
    r = send(relay.url, "PUT", "/Patient/rej-log", body("Patient", "rej-log"), HEADERS)
    assert r.status == 422
    wait_for_envoy_log(relay, "rejected Patient/rej-log: HealthLake answered 422 processing")


def test_prometheus_labels(relay):
    status, text = relayctl.http_get(relay.admin_url + "/stats/prometheus")
    text = text.decode()
    assert status == 200
    # Envoy prints the wasmcustom namespace without its envoy_ prefix.
    assert re.search(r'^healthlake_relay_outcome\{outcome="delivered"\} [1-9]', text, re.M), text[-3000:]
    assert re.search(
        r'^healthlake_relay_type_outcome\{resource_type="Basic",outcome="unsupported_type"\} [1-9]', text, re.M)


def test_no_secret_anywhere(relay, emulator):
    for workdir in (relay.workdir, emulator.workdir):
        for f in workdir.iterdir():
            if f.suffix == ".log":
                assert SECRET not in f.read_text(errors="replace"), f
