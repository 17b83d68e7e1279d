"""FHIR write semantics through the real Envoy: which requests become HealthLake PUT/DELETE, which
are refused (and why), and the version guard that keeps HealthLake at the latest version."""

from __future__ import annotations

import json

import pytest

from conftest import relayctl, send

DATASTORE = relayctl.DEMO_DATASTORE_ID
FHIR = {"Content-Type": "application/fhir+json; charset=UTF-8"}


def upstream(rtype: str, rid: str) -> str:
    return f"/datastore/{DATASTORE}/r4/{rtype}/{rid}"


def resource(rtype: str, rid: str | None, version: int = 1, day: int = 1, **extra) -> bytes:
    doc = {"resourceType": rtype}
    if rid is not None:
        doc["id"] = rid
    doc["meta"] = {"versionId": str(version), "lastUpdated": f"2026-01-{day:02d}T10:00:00.000+00:00"}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_post_with_an_id_becomes_a_put_of_that_id(relay, fresh):
    body = resource("Patient", "posted")
    r = send(relay.url, "POST", "/Patient", body, FHIR)
    assert r.status == 201, r.body
    assert r.header("x-healthlake-outcome") == "delivered"
    [req] = fresh.requests()
    assert (req["method"], req["path"], req["verified"]) == ("PUT", upstream("Patient", "posted"), True)
    assert fresh.resource("Patient", "posted") == body
    entry = relay.wait_for_log(lambda e: e["resource_id"] == "posted")
    assert entry["method"] == "POST" and entry["upstream_path"] == upstream("Patient", "posted")


def test_post_without_an_id_is_422(relay, fresh):
    r = send(relay.url, "POST", "/Patient", resource("Patient", None), FHIR)
    assert r.status == 422
    assert "HealthLake would assign" in r.json()["issue"][0]["diagnostics"]
    assert fresh.requests() == []


@pytest.mark.parametrize("body,needle", [
    (b"", "no payload"),
    (json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": []}).encode(), "search criteria"),
    (resource("Patient", "x"), "not supported"),
])
def test_post_to_the_base_explains_the_subscription_setting(relay, fresh, body, needle):
    r = send(relay.url, "POST", "/", body, FHIR)
    assert r.status == 400
    assert needle in r.json()["issue"][0]["diagnostics"]
    assert r.header("x-healthlake-outcome") == "invalid-request"
    assert fresh.requests() == []


@pytest.mark.parametrize("method,path,status,needle", [
    ("PATCH", "/Patient/x", 405, "PATCH"),
    ("PUT", "/Patient?identifier=abc", 400, "conditional"),
    ("DELETE", "/Patient?identifier=abc", 400, "conditional"),
    ("PUT", "/Patient/x/_history/3", 400, "_history"),
    ("POST", "/Patient/$validate", 400, "operations"),
    ("POST", "/Patient/x", 405, "POST"),
])
def test_other_shapes_are_refused_with_a_reason(relay, fresh, method, path, status, needle):
    r = send(relay.url, method, path, resource("Patient", "x"), FHIR)
    assert r.status == status
    assert needle in r.json()["issue"][0]["diagnostics"]
    assert fresh.requests() == []


@pytest.mark.parametrize("body,headers,status,needle", [
    (resource("Patient", "x"), {"Content-Type": "application/fhir+xml"}, 415, "Content-Type"),
    (resource("Patient", "x"), {}, 415, "Content-Type"),
    (b"<Patient/>", FHIR, 400, "JSON"),
    (b"[1,2]", FHIR, 400, "JSON object"),
    (resource("Observation", "x"), FHIR, 400, "does not match the path"),
    (resource("Patient", "y"), FHIR, 400, "does not match the path's id"),
    (resource("Patient", None), FHIR, 400, "no id"),
    (b'{"resourceType":"Patient","id":"x","id":"y"}', FHIR, 400, "duplicate"),
    (b'{"resourceType":"Patient","id":"x","meta":{"lastUpdated":"soon"}}', FHIR, 400, "lastUpdated"),
    (b'{"resourceType":"Patient","id":"x","name":"\xff"}', FHIR, 400, "UTF-8"),
])
def test_bodies_are_checked_before_signing(relay, fresh, body, headers, status, needle):
    r = send(relay.url, "PUT", "/Patient/x", body, headers)
    assert r.status == status, r.body
    assert needle in r.json()["issue"][0]["diagnostics"]
    assert r.header("x-healthlake-outcome") == "invalid-request"
    assert fresh.requests() == []


def test_latest_version_wins_whatever_the_order(relay, fresh):
    v1, v2, v3 = (resource("Observation", "ver", n, day=n, status="final") for n in (1, 2, 3))
    assert send(relay.url, "PUT", "/Observation/ver", v2, FHIR).status == 201
    # An older version arriving late is answered 200 stale-version and not forwarded.
    r = send(relay.url, "PUT", "/Observation/ver", v1, FHIR)
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "stale-version")
    assert r.json()["issue"][0]["severity"] == "information"
    # The same version again (a retry) is forwarded: the earlier attempt may have failed.
    r = send(relay.url, "PUT", "/Observation/ver", v2, FHIR)
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "delivered")
    assert send(relay.url, "PUT", "/Observation/ver", v3, FHIR).status == 200
    assert fresh.resource("Observation", "ver") == v3
    assert [q["body_sha256"] for q in fresh.requests()].count(None) == 0
    assert len(fresh.requests()) == 3
    entry = relay.wait_for_log(lambda e: e["resource_id"] == "ver" and e["outcome"] == "stale-version")
    assert entry["upstream_path"] is None


def test_a_deleted_resource_is_not_resurrected_by_an_old_update(relay, fresh):
    v1, v2 = resource("Condition", "gone", 1, day=1), resource("Condition", "gone", 2, day=2)
    assert send(relay.url, "PUT", "/Condition/gone", v1, FHIR).status == 201
    assert send(relay.url, "DELETE", "/Condition/gone").status == 204
    for old in (v1,):
        r = send(relay.url, "PUT", "/Condition/gone", old, FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (200, "stale-version")
    assert fresh.resource("Condition", "gone") is None
    # A newer version (re-created in Smile CDR) is delivered.
    r = send(relay.url, "PUT", "/Condition/gone", v2, FHIR)
    assert r.header("x-healthlake-outcome") == "delivered"
    assert fresh.resource("Condition", "gone") == v2


def test_a_delete_of_a_never_seen_resource_does_not_block_its_recreation(relay, fresh):
    """A backfill re-delivers re-created resources with past lastUpdated times: a DELETE the relay
    knows no version of must not make them stale (the relay's clock is not Smile CDR's)."""
    assert send(relay.url, "DELETE", "/Encounter/never").status == 204
    recreated = resource("Encounter", "never", 3, day=1)
    r = send(relay.url, "PUT", "/Encounter/never", recreated, FHIR)
    assert r.header("x-healthlake-outcome") == "delivered"
    assert fresh.resource("Encounter", "never") == recreated


def test_conditional_headers_are_dropped_and_content_type_normalised(relay, fresh):
    headers = dict(FHIR, **{"If-Match": 'W/"7"', "If-None-Match": "*", "If-None-Exist": "identifier=x",
                            "If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert send(relay.url, "PUT", "/Patient/cond", resource("Patient", "cond"), headers).status == 201
    [req] = fresh.requests()
    for name in ("if-match", "if-none-match", "if-none-exist", "if-modified-since"):
        assert name not in req["header_names"]
    assert req["content_type"] == "application/fhir+json"
