"""Several relay replicas behind the front tier (RELAY_REPLICAS, envoy-front.yaml), through the real
Envoys: every delivery of a resource reaches the same replica, so the version guard holds as with
one Envoy; a replica that is down makes only its own resources wait (503 replica-unavailable, never
another replica); restarted, it keeps them; a replica added takes resources only for itself."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from conftest import relay_env, relayctl, send

DATASTORE = relayctl.DEMO_DATASTORE_ID
FHIR = {"Content-Type": "application/fhir+json; charset=UTF-8"}
RESOURCES = 300


def observation(rid: str, version: int) -> bytes:
    return json.dumps({"resourceType": "Observation", "id": rid, "status": "final",
                       "meta": {"versionId": str(version), "lastUpdated": f"2026-01-{version:02d}T10:00:00.000+00:00"},
                       }).encode()


def start(emulator, workdir, replicas: int) -> relayctl.Topology:
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    settings = relayctl.Settings.from_env({
        "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY,
        "AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url, "RELAY_PORT": "0", "RELAY_ADMIN_PORT": "0",
        "RELAY_HEALTH_PORT": "0", "RELAY_REPLICAS": str(replicas)})
    return relayctl.start_topology(settings, workdir, env, concurrency=1)


def homes(topology: relayctl.Topology) -> dict[str, set[str]]:
    """The replicas each resource's access-log lines name (the relays' lines only, by the path's
    last segment: the path is logged without its query, refused requests included)."""
    out: dict[str, set[str]] = defaultdict(set)
    for line in topology.access_log():
        if line.get("replica") != "front" and line.get("path"):
            out[line["path"].rsplit("/", 1)[1]].add(line["replica"])
    return out


@pytest.fixture(scope="module")
def three(emulator, tmp_path_factory):
    topology = start(emulator, tmp_path_factory.mktemp("replicas"), 3)
    yield topology
    topology.stop()


def test_late_versions_and_writes_after_deletes_never_reach_healthlake(three, fresh):
    for n in range(RESOURCES):
        rid = f"obs-{n}"
        # The newer version first, then the older one on a fresh connection (send opens one each
        # time): the older is held back wherever the front sent it.
        r = send(three.url, "PUT", f"/Observation/{rid}", observation(rid, 2), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        r = send(three.url, "PUT", f"/Observation/{rid}", observation(rid, 1), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (200, "stale-version"), (rid, r.body)
        if n % 2:
            # A delete, then a write older than the delete: no resurrection.
            assert send(three.url, "DELETE", f"/Observation/{rid}").status == 204
            r = send(three.url, "PUT", f"/Observation/{rid}", observation(rid, 1), FHIR)
            assert (r.status, r.header("x-healthlake-outcome")) == (200, "stale-version"), (rid, r.body)
        # The query string is not part of the resource: the same home (which refuses it, 400).
        r = send(three.url, "PUT", f"/Observation/{rid}?_format=json", observation(rid, 3), FHIR)
        assert r.header("x-healthlake-outcome") == "invalid-request", (rid, r.body)
    # HealthLake got exactly the newer versions and the deletes, and holds exactly the final state.
    sent = Counter((q["method"], q["path"].rsplit("/", 1)[1]) for q in fresh.requests())
    for n in range(RESOURCES):
        rid = f"obs-{n}"
        assert sent[("PUT", rid)] == 1 and sent[("DELETE", rid)] == (n % 2), rid
        assert fresh.resource("Observation", rid) == (None if n % 2 else observation(rid, 2)), rid
    assert all(q["verified"] for q in fresh.requests())
    # Every delivery of a resource reached one replica, and the resources spread over all three.
    relayctl.wait_until(lambda: sum(len(v) > 0 for v in homes(three).values()) == RESOURCES, 10,
                        "every resource in the access logs")
    seen = homes(three)
    assert all(len(replicas) == 1 for replicas in seen.values()), \
        {rid: r for rid, r in seen.items() if len(r) != 1}
    spread = Counter(next(iter(r)) for r in seen.values())
    assert set(spread) == {"relay-1", "relay-2", "relay-3"}, spread
    assert min(spread.values()) >= RESOURCES // 10, spread
    assert all(line.get("replica") for line in three.access_log())


def test_a_replica_down_holds_only_its_own_resources_and_keeps_them_when_back(three, fresh):
    seen = {rid: next(iter(r)) for rid, r in homes(three).items()}
    assert seen, "runs after the test above, which gives every resource its home"
    down = [rid for rid, home in seen.items() if home == "relay-1"][:20]
    up = [rid for rid, home in seen.items() if home != "relay-1"][:20]
    three.stop_replica(0)
    try:
        for rid in down:
            r = send(three.url, "PUT", f"/Observation/{rid}", observation(rid, 3), FHIR)
            assert (r.status, r.header("x-healthlake-outcome")) == (503, "replica-unavailable"), (rid, r.body)
            assert r.header("retry-after") and json.loads(r.body)["resourceType"] == "OperationOutcome"
        for rid in up:
            r = send(three.url, "PUT", f"/Observation/{rid}", observation(rid, 3), FHIR)
            assert r.header("x-healthlake-outcome") == "delivered", (rid, r.body)
        assert not [q for q in fresh.requests() if q["path"].rsplit("/", 1)[1] in down]
        def front_lines():
            return [line for line in three.access_log() if line.get("replica") == "front"]

        relayctl.wait_until(lambda: len(front_lines()) == len(down), 10, "the front's lines")
        assert {(line["outcome"], line["home"]) for line in front_lines()} == {("replica-unavailable", "relay-1")}
        assert {line["path"].rsplit("/", 1)[1] for line in front_lines()} == set(down)
    finally:
        three.start_replica(0)
    # Back in its place (the ring is keyed by its name, not its address): the same resources.
    for rid in down:
        r = send(three.url, "PUT", f"/Observation/{rid}", observation(rid, 3), FHIR)
        assert r.header("x-healthlake-outcome") == "delivered", (rid, r.body)
    relayctl.wait_until(lambda: all(homes(three)[rid] == {"relay-1"} for rid in down), 10,
                        "the restarted replica's lines")


def test_a_replica_added_takes_resources_only_for_itself(emulator, fresh, tmp_path):
    def assignment(replicas: int) -> dict[str, str]:
        topology = start(emulator, tmp_path / f"r{replicas}", replicas)
        try:
            for n in range(RESOURCES):
                send(topology.url, "DELETE", f"/Observation/move-{n}")
            relayctl.wait_until(lambda: len(homes(topology)) == RESOURCES, 10, "every resource logged")
            return {rid: next(iter(r)) for rid, r in homes(topology).items()}
        finally:
            topology.stop()

    before, after = assignment(3), assignment(4)
    moved = {rid for rid in before if before[rid] != after[rid]}
    # Consistent hashing: what moves, moves to the new replica; nothing moves between the others.
    assert moved and {after[rid] for rid in moved} == {"relay-4"}
    # About a quarter of the resources (the new replica's share of the ring).
    assert 0.10 * RESOURCES <= len(moved) <= 0.45 * RESOURCES, len(moved)


def test_a_post_create_is_refused_at_the_front_with_replicas(three, fresh):
    # Its path names no resource, so it could not reach the resource's home (whose guard holds its
    # history): with replicas the relay takes PUT /{type}/{id} only, as Smile CDR sends.
    body = observation("posted-1", 2)
    r = send(three.url, "POST", "/Observation", body, FHIR)
    assert (r.status, r.header("x-healthlake-outcome")) == (405, "invalid-request"), r.body
    assert r.header("content-type") == "application/fhir+json"
    assert "PUT /{type}/{id}" in json.loads(r.body)["issue"][0]["diagnostics"]
    assert fresh.requests() == []
