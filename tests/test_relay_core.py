"""The relay core through the real Envoy and the built .wasm, against the HealthLake emulator.

The emulator verifies every request's SigV4 signature with its own implementation and records
what it received; these tests read that record, the stored bytes, and Envoy's access log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from conftest import (CREDENTIAL, fhir_examples, relay_env, relayctl, send, start_relay)

DATASTORE = relayctl.DEMO_DATASTORE_ID
SMILE_HEADERS = {  # what HAPI FHIR's REST-hook delivery sends
    "Content-Type": "application/fhir+json; charset=UTF-8",
    "Accept": "application/fhir+json;q=1.0, application/json+fhir;q=0.9",
    "If-Match": 'W/"3"',
    "User-Agent": "HAPI-FHIR/7.0.0 (FHIR Client; FHIR 4.0.1/R4; apache)",
}
TYPES = [
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Encounter", "Observation",
    "Condition", "Procedure", "MedicationRequest", "MedicationStatement", "Medication",
    "AllergyIntolerance", "Immunization", "DiagnosticReport", "DocumentReference", "CarePlan",
    "CareTeam", "Goal", "Location", "Device", "Specimen", "ServiceRequest", "Coverage", "Claim",
    "ExplanationOfBenefit", "QuestionnaireResponse", "Provenance", "RelatedPerson",
]


def upstream(rtype: str, rid: str) -> str:
    return f"/datastore/{DATASTORE}/r4/{rtype}/{rid}"


def requests_to(emulator, path: str) -> list[dict]:
    return [r for r in emulator.requests() if r["path"] == path]


def one_example_per_type() -> list[tuple[str, str, bytes]]:
    """The first example of each type in TYPES (under 256 KiB, id valid), as (type, id, bytes)."""
    chosen = {}
    for f in sorted(fhir_examples().glob("*.json")):
        rtype, _, rid = f.stem.partition("-")
        if rtype not in TYPES or rtype in chosen or f.stat().st_size > 256 * 1024:
            continue
        data = f.read_bytes()
        doc = json.loads(data)
        if doc.get("resourceType") == rtype and doc.get("id") == rid and len(rid) <= 64:
            chosen[rtype] = (rtype, rid, data)
    return [chosen[t] for t in TYPES if t in chosen]


def test_rendered_configurations_validate(tmp_path):
    """The shipped template renders and passes `envoy --mode validate` for AWS and for loopback."""
    for name, env in {
        "aws": {"AWS_REGION": "eu-west-1", "HEALTHLAKE_DATASTORE_ID": "abc123",
                "RELAY_INBOUND_TOKENS": "a-token-for-smile-cdr-0001"},
        "loopback": {"AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:8080", "RELAY_INBOUND_BASE_PATH": "/fhir"},
    }.items():
        env = dict(env, AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
        settings = relayctl.Settings.from_env(env)
        text = relayctl.render(settings)
        path = relayctl.write_config(text, tmp_path, f"{name}.yaml")
        result = relayctl.validate_config(path, relay_env(**{k: v for k, v in env.items() if k.startswith("RELAY_INBOUND")}))
        assert result.returncode == 0, result.stderr
        assert ("transport_socket" in text) == (name == "aws")
    assert "healthlake.eu-west-1.amazonaws.com" in (tmp_path / "aws.yaml").read_text()


@pytest.mark.parametrize("env,message", [
    ({"AWS_ENDPOINT_URL_HEALTHLAKE": "http://healthlake.example.com"}, "only on loopback"),
    ({"AWS_ENDPOINT_URL_HEALTHLAKE": "ftp://x"}, "AWS_ENDPOINT_URL_HEALTHLAKE"),
    # The plugin's own fields: the variable, then the plugin's words (its Config::from_json).
    ({"AWS_REGION": "US East"},
     'AWS_REGION: invalid plugin configuration: field "region": expected an AWS region name such as us-east-1, got "US East"'),
    ({"RELAY_PORT": "70000"}, "RELAY_PORT"),
    ({"AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:8080", "RELAY_INBOUND_BASE_PATH": "fhir"},
     'RELAY_INBOUND_BASE_PATH: invalid plugin configuration: field "inbound_base_path": expected a path such as '
     '/fhir'),
    ({"HEALTHLAKE_DATASTORE_ID": "abc"}, "refusing to start"),
    ({"RELAY_INBOUND_MTLS": "true"}, "RELAY_TLS_CERT_FILE"),
])
def test_bad_settings_are_named(env, message):
    with pytest.raises(relayctl.SettingsError) as refused:
        relayctl.Settings.from_env(env)
    assert message in str(refused.value)


def test_hl7_examples_arrive_byte_identical_and_verified(relay, fresh):
    examples = one_example_per_type()
    assert len(examples) >= 20, [t for t, _, _ in examples]
    for rtype, rid, data in examples:
        r = send(relay.url, "PUT", f"/{rtype}/{rid}", data, SMILE_HEADERS)
        assert r.status in (200, 201), (rtype, rid, r.status, r.body[:300])
        assert r.header("x-healthlake-outcome") == "delivered"
        assert fresh.resource(rtype, rid) == data, f"{rtype}/{rid} not stored byte-identical"

    seen = {}
    for req in fresh.requests():
        seen[req["path"]] = req
    for rtype, rid, data in examples:
        req = seen[upstream(rtype, rid)]
        assert req["method"] == "PUT"
        assert req["verified"] is True, req
        assert req["body_sha256"] == hashlib.sha256(data).hexdigest()
        assert req["content_type"] == "application/fhir+json"
        assert "if-match" not in req["header_names"]
        assert "x-amz-content-sha256" in req["signed_headers"]

    for rtype, rid, _ in examples:
        entry = relay.wait_for_log(lambda e, t=rtype, i=rid: e["resource_id"] == i and e["resource_type"] == t)
        assert entry["outcome"] == "delivered"
        assert entry["method"] == "PUT"
        assert entry["path"] == f"/{rtype}/{rid}"
        assert entry["upstream_path"] == upstream(rtype, rid)
        assert entry["status"] in (200, 201)
        assert entry["upstream_status"] == str(entry["status"])
        assert entry["request_id"]
        assert isinstance(entry["duration_ms"], int)


def test_update_then_delete_arrive_signed(relay, fresh):
    body = b'{"resourceType":"Patient","id":"del-me","active":true}'
    assert send(relay.url, "PUT", "/Patient/del-me", body, SMILE_HEADERS).status == 201
    assert send(relay.url, "PUT", "/Patient/del-me", body, SMILE_HEADERS).status == 200
    r = send(relay.url, "DELETE", "/Patient/del-me", headers={"User-Agent": "HAPI-FHIR"})
    assert r.status == 204
    assert r.header("x-healthlake-outcome") == "deleted"
    assert fresh.resource("Patient", "del-me") is None
    reqs = requests_to(fresh, upstream("Patient", "del-me"))
    assert [q["method"] for q in reqs] == ["PUT", "PUT", "DELETE"]
    assert all(q["verified"] for q in reqs), reqs
    assert reqs[-1]["body_size"] == 0
    entry = relay.wait_for_log(lambda e: e["resource_id"] == "del-me" and e["method"] == "DELETE")
    assert entry["outcome"] == "deleted"
    assert entry["status"] == 204


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_are_answered_locally_and_never_forwarded(relay, fresh, method):
    r = send(relay.url, method, f"/Patient/read-{method.lower()}?_format=json")
    assert r.status == 405
    assert r.header("allow") == "PUT, DELETE"
    assert r.header("x-healthlake-outcome") == "read-dropped"
    if method == "GET":
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "served by Smile CDR" in outcome["issue"][0]["diagnostics"]
    # The access log's path has no query string (a client may put a token there).
    entry = relay.wait_for_log(lambda e: e["path"] == f"/Patient/read-{method.lower()}")
    assert entry["outcome"] == "read-dropped"
    assert entry["upstream_path"] is None
    assert fresh.requests() == []


def test_body_of_5_mib_passes(relay, fresh):
    blob = base64.b64encode(os.urandom(4 * 1024 * 1024)).decode()
    body = json.dumps({
        "resourceType": "DocumentReference", "id": "five-mib", "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf", "data": blob}}],
    }).encode()
    assert len(body) >= 5 * 1024 * 1024
    r = send(relay.url, "PUT", "/DocumentReference/five-mib", body, SMILE_HEADERS)
    assert r.status == 201, r.body[:300]
    assert r.header("x-healthlake-outcome") == "delivered"
    assert fresh.resource("DocumentReference", "five-mib") == body
    [req] = requests_to(fresh, upstream("DocumentReference", "five-mib"))
    assert req["verified"] and req["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_client_credentials_and_conditionals_never_reach_healthlake(relay, fresh):
    body = b'{"resourceType":"Observation","id":"hygiene","status":"final"}'
    headers = dict(SMILE_HEADERS, **{
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDATTACKER/20200101/us-east-1/healthlake/aws4_request, "
                         "SignedHeaders=host, Signature=00",
        "X-Amz-Security-Token": "attacker-token",
        "X-Amz-Date": "20200101T000000Z",
        "Cookie": "session=1",
        "If-None-Exist": "identifier=x",
    })
    r = send(relay.url, "PUT", "/Observation/hygiene", body, headers)
    assert r.status == 201, r.body
    [req] = requests_to(fresh, upstream("Observation", "hygiene"))
    assert req["verified"] is True
    assert req["access_key_id"] == relayctl.DEMO_ACCESS_KEY_ID
    assert req["has_security_token"] is False
    for name in ("cookie", "if-match", "if-none-exist"):
        assert name not in req["header_names"]
    assert req["header_names"].count("authorization") == 1


@pytest.mark.parametrize("method,path,status", [
    ("PUT", "/Patient/../Patient/x", 400),
    ("PUT", "/Patient/a%2Fb", 400),
    ("PUT", "/NotAType/x", 400),
    ("PUT", "/Patient/" + "x" * 65, 400),
    ("PUT", "/Patient/x?_history=1", 400),
    ("PATCH", "/Patient/x", 405),
    ("PUT", "/Patient", 400),
])
def test_invalid_requests_get_operation_outcome_and_nothing_is_forwarded(relay, fresh, method, path, status):
    r = send(relay.url, method, path, b'{"resourceType":"Patient","id":"x"}', SMILE_HEADERS)
    assert r.status == status, r.body
    assert r.header("x-healthlake-outcome") == "invalid-request"
    assert r.json()["resourceType"] == "OperationOutcome"
    assert fresh.requests() == []


def test_put_without_body_is_refused(relay, fresh):
    r = send(relay.url, "PUT", "/Patient/nobody", b"", SMILE_HEADERS)
    assert r.status == 400
    assert "payload" in r.json()["issue"][0]["diagnostics"]
    assert fresh.requests() == []


def test_stats_count_outcomes(relay):
    stats = relay.stats()
    assert stats.get("wasmcustom.healthlake_relay.outcome.delivered", 0) >= 20
    assert stats.get("wasmcustom.healthlake_relay.outcome.read_dropped", 0) >= 2


def test_no_credentials_gets_503_and_nothing_is_forwarded(emulator, tmp_path):
    """Rendered for the environment's keys (make run refuses to start without any source), but
    Envoy started without them: the plugin names the missing variable and forwards nothing."""
    emulator.reset()
    envoy = start_relay(tmp_path, emulator, relay_env(), settings_env={
        "RELAY_CREDENTIALS_SOURCE": "environment",
        "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY})
    try:
        r = send(envoy.url, "PUT", "/Patient/x", b'{"resourceType":"Patient","id":"x"}', SMILE_HEADERS)
        assert r.status == 503
        assert r.header("x-healthlake-outcome") == "no-credentials"
        assert "AWS_ACCESS_KEY_ID" in r.json()["issue"][0]["diagnostics"]
        r = send(envoy.url, "DELETE", "/Patient/x")
        assert r.status == 503
        assert emulator.requests() == []
        entry = envoy.wait_for_log(lambda e: e["method"] == "DELETE")
        assert entry["outcome"] == "no-credentials"
        assert envoy.alive()
    finally:
        envoy.stop()


def test_oversize_body_gets_413(emulator, tmp_path):
    emulator.reset()
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    envoy = start_relay(tmp_path, emulator, env, settings_env={"RELAY_MAX_BODY_BYTES": "65536"})
    try:
        body = json.dumps({"resourceType": "Binary", "id": "big", "data": "A" * 100_000}).encode()
        r = send(envoy.url, "PUT", "/Binary/big", body, SMILE_HEADERS)
        assert r.status == 413
        assert r.header("x-healthlake-outcome") == "invalid-request"
        assert "65536" in r.json()["issue"][0]["diagnostics"]
        small = b'{"resourceType":"Binary","id":"small","contentType":"text/plain"}'
        assert send(envoy.url, "PUT", "/Binary/small", small, SMILE_HEADERS).status == 201
        assert [q["path"] for q in emulator.requests()] == [upstream("Binary", "small")]
    finally:
        envoy.stop()


TAMPER_LUA = """
function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  if string.find(path, "tamper%-path") then
    handle:headers():replace(":path", (string.gsub(path, "tamper%-path", "tamper-pxth")))
  end
  if string.find(path, "tamper%-body") then
    local body = handle:body()
    local text = body:getBytes(0, body:length())
    body:setBytes((string.gsub(text, "ORIGINAL", "TAMPERED")))
  end
end
"""


def add_tamper_filter(config: dict) -> None:
    """Puts a Lua filter after the relay (so after signing) that changes the path or the body."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(1, {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": TAMPER_LUA},
        },
    })


def test_changes_after_signing_are_rejected_by_the_verifier(emulator, tmp_path):
    emulator.reset()
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    envoy = start_relay(tmp_path, emulator, env, edit=add_tamper_filter)
    try:
        def put(rid):
            body = json.dumps({"resourceType": "Patient", "id": rid, "text": {"div": "ORIGINAL"}}).encode()
            return send(envoy.url, "PUT", f"/Patient/{rid}", body, SMILE_HEADERS)

        assert put("untouched").status == 201
        for rid in ("tamper-body", "tamper-path"):
            r = put(rid)
            # HealthLake's 403 becomes a 503: Smile CDR retries, nothing is lost.
            assert r.status == 503, (rid, r.status, r.body)
            assert r.header("x-healthlake-outcome") == "auth-failed"
        by_path = {q["path"]: q for q in emulator.requests()}
        assert by_path[upstream("Patient", "untouched")]["verified"] is True
        body_req = by_path[upstream("Patient", "tamper-body")]
        assert body_req["verified"] is False and body_req["status"] == 403
        path_req = by_path[upstream("Patient", "tamper-pxth")]
        assert path_req["verified"] is False and path_req["status"] == 403
        assert emulator.resource("Patient", "tamper-body") is None
    finally:
        envoy.stop()


def test_bad_plugin_configuration_stops_envoy_with_a_clear_line(emulator, tmp_path):
    settings = relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
                                           "RELAY_PORT": "0", "RELAY_ADMIN_PORT": "0", "RELAY_HEALTH_PORT": "0",
                                           "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID,
                                           "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY})
    bad = dict(settings.plugin_config(), region="Not A Region")
    path = relayctl.write_config(relayctl.render(settings, bad), tmp_path)
    envoy = relayctl.start_envoy(path, tmp_path, relay_env(), wait=False)
    try:
        relayctl.wait_until(lambda: not envoy.alive(), 60, "envoy to refuse the configuration")
        log = (tmp_path / "envoy.log").read_text()
        assert 'invalid plugin configuration: field "region"' in log, log[-2000:]
    finally:
        envoy.stop()


def test_no_secret_in_any_log(relay, emulator):
    """Runs last in this module: every log written so far, by Envoy, the relay and the emulator."""
    secret = relayctl.DEMO_SECRET_ACCESS_KEY
    texts = []
    for workdir in (relay.workdir, emulator.workdir):
        for f in workdir.iterdir():
            if f.suffix == ".log":
                texts.append((f, f.read_text(errors="replace")))
    assert texts
    for f, text in texts:
        assert secret not in text, f
    assert CREDENTIAL.split(":")[0] not in (relay.workdir / "access.log").read_text()
