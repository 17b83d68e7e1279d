"""Knowing HealthLake's capabilities before the first write, through the real Envoy and the
emulator true to HealthLake's documented resource types: the relay reads the data store's
CapabilityStatement (signed, once per Envoy, periodically) and answers writes of the types it does
not list locally; a failed read leaves writes flowing and learning active; the relay's own
GET /metadata is a valid CapabilityStatement that a generic FHIR client reads before writing.
"""

from __future__ import annotations

import json

import pytest

from conftest import relay_env, relayctl, send, start_relay, wait_for_discovery

DATASTORE = relayctl.DEMO_DATASTORE_ID
FHIR = {"Content-Type": "application/fhir+json; charset=UTF-8"}
STAT = "wasmcustom.healthlake_relay.capabilities."


def resource(rtype: str, rid: str) -> bytes:
    return json.dumps({"resourceType": rtype, "id": rid}).encode()


def upstream(rtype: str, rid: str) -> str:
    return f"/datastore/{DATASTORE}/r4/{rtype}/{rid}"


def start(tmp_path, emulator, **settings: str) -> relayctl.Envoy:
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    return start_relay(tmp_path, emulator, env, settings_env=settings, concurrency=2)


def put(relay, rtype: str, rid: str):
    return send(relay.url, "PUT", f"/{rtype}/{rid}", resource(rtype, rid), FHIR)


def verdict(r) -> tuple:
    return r.status, r.header("x-healthlake-outcome"), r.header("x-healthlake-type-support")


def wait_for_stat(relay, name: str, wanted, what: str) -> dict:
    def reached():
        stats = relay.stats()
        return stats if wanted(stats.get(STAT + name, 0)) else None

    return relayctl.wait_until(reached, 30, what)


def envoy_log(relay) -> str:
    return (relay.workdir / "envoy.log").read_text()


def test_a_type_healthlake_does_not_list_is_answered_locally_on_its_first_write(emulator, tmp_path):
    emulator.reset()
    relay = start(tmp_path, emulator)
    try:
        stats = wait_for_discovery(relay)
        assert stats[STAT + "update_types"] == 105  # HealthLake's 106 but AuditEvent
        assert stats[STAT + "fetch_succeeded"] == 1

        # Not listed at all; listed without the interaction (AuditEvent: create and read only).
        for method, rtype, rid in [("PUT", "Basic", "b1"), ("PUT", "AuditEvent", "a1"),
                                   ("DELETE", "AuditEvent", "a2"), ("DELETE", "Subscription", "s1")]:
            body = resource(rtype, rid) if method == "PUT" else None
            r = send(relay.url, method, f"/{rtype}/{rid}", body, FHIR if body else {})
            assert verdict(r) == (200, "unsupported-type", "capability-statement"), (method, rtype)
            [issue] = r.json()["issue"]
            assert issue["code"] == "not-supported" and "CapabilityStatement" in issue["diagnostics"]
        assert verdict(put(relay, "Patient", "p1"))[:2] == (201, "delivered")
        # None of them cost a HealthLake call.
        assert [q["path"] for q in emulator.requests()] == [upstream("Patient", "p1")]

        entry = relay.wait_for_log(lambda e: e["resource_id"] == "b1")
        assert (entry["outcome"], entry["type_support"], entry["upstream_path"]) == (
            "unsupported-type", "capability-statement", None)
        assert relay.wait_for_log(lambda e: e["resource_id"] == "p1")["type_support"] is None
        stats = relay.stats()
        assert stats["wasmcustom.healthlake_relay.type.Basic.outcome.unsupported_type"] == 1

        # One read for the Envoy and its two workers, signed like any call and verified.
        [read] = emulator.metadata_requests()
        assert (read["method"], read["path"], read["status"], read["verified"]) == (
            "GET", f"/datastore/{DATASTORE}/r4/metadata", 200, True)
        assert "HealthLake's CapabilityStatement lists 105 resource types with update and 105 " \
               "with delete" in envoy_log(relay)
    finally:
        relay.stop()


def put_until(relay, rtype: str, wanted: tuple, meanwhile: set[tuple]) -> list[tuple]:
    """PUTs new resources of `rtype` until one gets `wanted` (status, outcome, type support);
    the answers before it must be among `meanwhile`. Each worker reads the set at its own tick
    (every 250 ms): for that long after the stats change, a write may meet a worker that has not
    read it yet. Returns every verdict, the last one `wanted`."""
    seen = []

    def attempt():
        r = put(relay, rtype, f"{rtype.lower()}-{len(seen)}")
        seen.append(verdict(r))
        assert seen[-1] == wanted or seen[-1] in meanwhile, seen
        return seen[-1] == wanted

    relayctl.wait_until(attempt, 10, f"{rtype} answered {wanted}")
    return seen


REASONS = {
    "500": "HealthLake answered 500",
    "garbage": "not a CapabilityStatement in JSON",
    "empty": "declares no interaction for any resource type",
    "no-interactions": "declares no interaction for any resource type",
}


@pytest.mark.parametrize("fault", sorted(REASONS))
def test_a_failed_read_leaves_writes_flowing_and_learning_active(emulator, tmp_path, fault):
    emulator.reset()
    emulator.set_faults(metadata=fault)
    relay = start(tmp_path, emulator)
    try:
        stats = wait_for_stat(relay, "fetch_failed", lambda n: n >= 1, "a failed read")
        assert stats.get(STAT + "discovered") == 0
        assert REASONS[fault] in envoy_log(relay)

        assert verdict(put(relay, "Patient", "p1"))[:2] == (201, "delivered")
        # Basic goes to HealthLake, whose 400 not-supported is learned as before discovery.
        assert verdict(put(relay, "Basic", "b1")) == (200, "unsupported-type", "healthlake")
        assert verdict(put(relay, "Basic", "b2")) == (200, "unsupported-type", "learned")
        assert [q["path"] for q in emulator.requests()] == [upstream("Patient", "p1"),
                                                            upstream("Basic", "b1")]
        # The relay's own statement says so: every R4 type but the learned one.
        r = send(relay.url, "GET", "/metadata")
        assert (r.status, r.header("x-healthlake-type-support")) == (200, "learning")
        listed = {res["type"] for res in r.json()["rest"][0]["resource"]}
        assert "Basic" not in listed and {"Patient", "AuditEvent", "Subscription"} <= listed

        # Retried with back-off; once HealthLake answers, its statement decides.
        emulator.set_faults()
        stats = wait_for_discovery(relay)
        assert stats[STAT + "fetch_attempted"] >= 2
        put_until(relay, "Subscription", (200, "unsupported-type", "capability-statement"),
                  {(200, "unsupported-type", "healthlake")})
    finally:
        relay.stop()


def test_the_supported_set_follows_healthlakes_list(emulator, tmp_path):
    emulator.reset()
    relay = start(tmp_path, emulator, RELAY_CAPABILITIES_REFRESH_SECONDS="1")
    try:
        wait_for_discovery(relay)
        delivered, listed_not = (201, "delivered", None), (200, "unsupported-type", "capability-statement")
        assert verdict(put(relay, "Observation", "o1")) == delivered

        # HealthLake stops listing Observation: from the next read the relay stops sending it (a
        # write meanwhile goes to HealthLake, which refuses it).
        emulator.set_faults(unsupported_types=["Observation"])
        wait_for_stat(relay, "update_types", lambda n: n == 104, "the read without Observation")
        put_until(relay, "Observation", listed_not, {(200, "unsupported-type", "healthlake")})
        assert "changed: update: +[] -[Observation]; delete: +[] -[Observation]" in envoy_log(relay)

        # And lists it again: a read later than HealthLake's refusal, so delivered again.
        emulator.set_faults()
        wait_for_stat(relay, "update_types", lambda n: n == 105, "the read with Observation")
        put_until(relay, "Observation", delivered, {listed_not})
        assert "changed: update: +[Observation] -[]" in envoy_log(relay)
        stored = {r["id"] for r in emulator.get_json("/_emulator/resources")}
        assert stored == {q["path"].rsplit("/", 1)[1] for q in emulator.requests() if q["status"] < 300}
        reads = emulator.metadata_requests()
        assert len(reads) >= 3 and all(q["verified"] and q["status"] == 200 for q in reads)
    finally:
        relay.stop()


def test_discovery_can_be_turned_off(emulator, tmp_path):
    emulator.reset()
    relay = start(tmp_path, emulator, RELAY_CAPABILITIES_REFRESH_SECONDS="0")
    try:
        assert verdict(put(relay, "Basic", "b1")) == (200, "unsupported-type", "healthlake")
        assert verdict(put(relay, "Patient", "p1"))[:2] == (201, "delivered")
        assert emulator.metadata_requests() == []
        assert relay.stats().get(STAT + "fetch_attempted", 0) == 0
    finally:
        relay.stop()


def test_metadata_is_a_valid_capability_statement_of_what_the_relay_accepts(emulator, tmp_path):
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    emulator.reset()
    relay = start(tmp_path, emulator, RELAY_UNSUPPORTED_TYPES="Flag")
    try:
        wait_for_discovery(relay)
        r = send(relay.url, "GET", "/metadata", headers={"Accept": "application/fhir+json"})
        assert (r.status, r.header("content-type")) == (200, "application/fhir+json")
        assert verdict(r)[1:] == ("capabilities", "capability-statement")
        doc = r.json()
        CapabilityStatement.model_validate(doc)  # FHIR's structure: unknown or mistyped elements fail
        assert (doc["kind"], doc["fhirVersion"], doc["status"]) == ("instance", "4.0.1", "active")
        assert "implementation" in doc and "software" in doc  # cpb-14: kind instance
        [rest] = doc["rest"]
        assert rest["mode"] == "server"
        by_type = {res["type"]: {i["code"] for i in res["interaction"]} for res in rest["resource"]}
        assert set().union(*by_type.values()) == {"update", "delete"}  # no read, search, create

        # Exactly what HealthLake's statement allows, less the configured Flag.
        healthlake = emulator.capabilities()
        for code in ("update", "delete"):
            assert {t for t, codes in by_type.items() if code in codes} == {
                t for t, codes in healthlake.items() if code in codes} - {"Flag"}, code
        assert verdict(put(relay, "Flag", "f1")) == (200, "unsupported-type", "configured")

        # Queries are ignored, HEAD has no body, every other read is still dropped.
        assert send(relay.url, "GET", "/metadata?_format=json").json()["rest"] == doc["rest"]
        head = raw_head(relay, "/metadata")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head
        assert verdict(send(relay.url, "GET", "/Patient/p1"))[:2] == (405, "read-dropped")
        entry = relay.wait_for_log(lambda e: e["path"] == "/metadata")
        assert (entry["outcome"], entry["status"], entry["type_support"], entry["upstream_path"]) == (
            "capabilities", 200, "capability-statement", None)
        # Answered by the relay itself: HealthLake saw only the relay's one read of its own.
        assert emulator.requests(metadata=True) == emulator.metadata_requests()
        assert len(emulator.metadata_requests()) == 1
    finally:
        relay.stop()


def raw_head(relay, path: str) -> bytes:
    """Every byte of the answer to a HEAD (http.client never reads a body after HEAD)."""
    import socket

    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_statement_without_patient_is_not_trusted(emulator, tmp_path):
    """A partial list (here: HealthLake's without Patient) would drop writes with a 2xx: the relay
    refuses it and learns instead."""
    emulator.reset()
    emulator.set_faults(unsupported_types=["Patient"])
    relay = start(tmp_path, emulator)
    try:
        stats = wait_for_stat(relay, "fetch_failed", lambda n: n >= 1, "the statement refused")
        assert stats.get(STAT + "discovered") == 0
        assert "does not list Patient with the update interaction" in envoy_log(relay)
        # Basic is forwarded (and refused by HealthLake), not answered from the statement.
        assert verdict(put(relay, "Basic", "b1")) == (200, "unsupported-type", "healthlake")
        assert verdict(put(relay, "Observation", "o1"))[:2] == (201, "delivered")
    finally:
        relay.stop()


def test_a_generic_fhir_client_reads_the_relays_statement_then_writes(emulator, tmp_path):
    """SMART's client-py (fhirclient) fetches GET [base]/metadata and parses it with its FHIR R4
    models before any call, as HAPI's generic client does in its default mode."""
    from fhirclient import client
    from fhirclient.models.patient import Patient

    emulator.reset()
    relay = start(tmp_path, emulator, RELAY_INBOUND_BASE_PATH="/fhir")
    try:
        wait_for_discovery(relay)
        smart = client.FHIRClient(settings={"app_id": "relay-test", "api_base": relay.url + "/fhir/"})
        assert smart.prepare()
        statement = smart.server.capabilityStatement
        listed = {res.type for res in statement.rest[0].resource}
        assert "Patient" in listed and "Basic" not in listed

        patient = Patient({"id": "fc1", "active": True})
        patient.update(smart.server)
        stored = json.loads(emulator.resource("Patient", "fc1"))
        assert (stored["resourceType"], stored["id"], stored["active"]) == ("Patient", "fc1", True)
        relay.wait_for_log(lambda e: e["path"] == "/fhir/Patient/fc1")
        assert [(e["path"], e["outcome"]) for e in relay.access_log()] == [
            ("/fhir/metadata", "capabilities"), ("/fhir/Patient/fc1", "delivered")]
    finally:
        relay.stop()
