"""The whole official HL7 FHIR R4 example corpus (hl7.fhir.r4.examples 4.0.1: 5,306 resources of
140 types) through the real Envoy, as Smile CDR would send it: PUTs with If-Match and a charset,
some resources updated again, some deleted, some sent twice, some older versions replayed late.
HealthLake is the emulator true to HealthLake's documented resource types, and the relay has read
its CapabilityStatement first. Afterwards HealthLake must hold exactly the latest version of every
resource of a supported type, byte-identical, nothing of deleted ones and nothing of unsupported
types; no write of an unsupported type reached it. The per-type table printed is the README's
"The HL7 corpus against HealthLake's types".
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (fhir_examples, relay_env, relayctl, send, send_streaming, start_relay,
                      wait_for_discovery)

MAX_BODY = relayctl.DEFAULT_MAX_BODY_BYTES
ID_RULE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORKERS = 8


def stamp(doc: dict, version: int, index: int) -> bytes:
    """The resource as Smile CDR would deliver version `version`: meta.versionId and lastUpdated."""
    doc = dict(doc)
    meta = dict(doc.get("meta") or {})
    when = BASE_TIME + timedelta(seconds=index, hours=version)
    meta["versionId"] = str(version)
    meta["lastUpdated"] = when.isoformat(timespec="milliseconds")
    doc["meta"] = meta
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Plan:
    rtype: str
    rid: str
    steps: list  # ("PUT", bytes, expected outcome) / ("DELETE", None, expected outcome)
    final: bytes | None  # what HealthLake must hold afterwards
    kind: str
    outcomes: list = field(default_factory=list)


def build_plans(writable: set[str]) -> list[Plan]:
    """`writable`: the types HealthLake (the emulator) allows update on; the others are answered
    unsupported-type, one PUT each."""
    rng = random.Random(4_0_1)
    plans = []
    for index, path in enumerate(sorted(fhir_examples().glob("*.json"))):
        if path.name == "package.json":
            continue
        raw = path.read_bytes()
        doc = json.loads(raw)
        rtype, rid = doc["resourceType"], doc.get("id", "")
        if len(raw) > MAX_BODY:
            # Sent as the file is; refused by the size check before anything else.
            plans.append(Plan(rtype, rid or "x", [("PUT", raw, "invalid-request")], None, "oversize"))
            continue
        if not ID_RULE.fullmatch(rid):
            plans.append(Plan(rtype, rid, [("PUT", stamp(doc, 1, index), "invalid-request")], None, "bad-id"))
            continue
        v1, v2 = stamp(doc, 1, index), stamp(doc, 2, index)
        if rtype not in writable:
            plans.append(Plan(rtype, rid, [("PUT", v1, "unsupported-type")], None, "unsupported"))
            continue
        roll = rng.random()
        if roll < 0.15:
            steps, final, kind = [("PUT", v1, "delivered"), ("PUT", v2, "delivered")], v2, "updated"
        elif roll < 0.25:
            steps, final, kind = [("PUT", v1, "delivered"), ("DELETE", None, "deleted")], None, "deleted"
        elif roll < 0.35:
            steps, final, kind = [("PUT", v1, "delivered"), ("PUT", v1, "delivered")], v1, "sent-twice"
        elif roll < 0.45:
            steps = [("PUT", v1, "delivered"), ("PUT", v2, "delivered"), ("PUT", v1, "stale-version")]
            final, kind = v2, "late-replay"
        elif roll < 0.50:
            steps = [("PUT", v1, "delivered"), ("DELETE", None, "deleted"), ("PUT", v1, "stale-version")]
            final, kind = None, "deleted-then-replayed"
        else:
            steps, final, kind = [("PUT", v1, "delivered")], v1, "created"
        plans.append(Plan(rtype, rid, steps, final, kind))
    return plans


HEADERS = {
    "Content-Type": "application/fhir+json; charset=UTF-8",
    "Accept": "application/fhir+json;q=1.0, application/json+fhir;q=0.9",
}


def run(plan: Plan, url: str) -> Plan:
    for n, (method, body, _) in enumerate(plan.steps, start=1):
        path = f"/{plan.rtype}/{plan.rid}"
        headers = dict(HEADERS, **{"If-Match": f'W/"{n}"'}) if method == "PUT" else {}
        if body is not None and len(body) > MAX_BODY:
            r = send_streaming(url, method, path, body, headers)
        else:
            r = send(url, method, path, body, headers, timeout=120)
        plan.outcomes.append((r.status, r.header("x-healthlake-outcome")))
    return plan


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = relayctl.start_emulator(
        tmp_path_factory.mktemp("emulator"),
        [f"{relayctl.DEMO_ACCESS_KEY_ID}:{relayctl.DEMO_SECRET_ACCESS_KEY}"],
        extra_args=["--quiet"],
    )
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def relay(emulator, tmp_path_factory):
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    envoy = start_relay(tmp_path_factory.mktemp("relay"), emulator, env, concurrency=2)
    wait_for_discovery(envoy)
    yield envoy
    envoy.stop()


def test_whole_corpus_ends_at_the_latest_versions(relay, emulator):
    supported = emulator.capabilities()
    writable = {t for t, codes in supported.items() if "update" in codes}
    assert len(writable) == 105 and "Patient" in writable and "AuditEvent" not in writable
    plans = build_plans(writable)
    assert len(plans) == 5306
    assert len({p.rtype for p in plans}) == 140

    # One resource's steps in order; resources in parallel, as Smile CDR's delivery threads.
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(lambda p: run(p, relay.url), plans))

    counts = Counter()
    for plan in done:
        for (status, outcome), (_, _, expected) in zip(plan.outcomes, plan.steps):
            counts[outcome] += 1
            assert outcome == expected, (plan.rtype, plan.rid, plan.kind, plan.outcomes)
            if expected == "invalid-request":
                assert 400 <= status < 500
                assert status == (413 if plan.kind == "oversize" else 400)
            else:
                assert status < 300, (plan.rtype, plan.rid, status, outcome)
    sent = sum(len(p.steps) for p in done)
    print(f"\ncorpus: {len(done)} resources, {sent} requests sent: " + ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items())))
    print("scenarios: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(p.kind for p in done).items())))
    assert sum(counts.values()) == sent
    assert counts["invalid-request"] == sum(p.kind in ("oversize", "bad-id") for p in done) >= 5

    # HealthLake holds exactly the latest version of every supported, not-deleted resource.
    stored = {(r["resourceType"], r["id"]) for r in emulator.get_json("/_emulator/resources")}
    expected = {(p.rtype, p.rid): p.final for p in done if p.final is not None}
    assert stored == set(expected), (len(stored), len(expected))
    for (rtype, rid), body in expected.items():
        assert emulator.resource(rtype, rid) == body, f"{rtype}/{rid} is not the latest version"
    assert not any(t not in writable for t, _ in stored)

    # Every request that reached HealthLake was signed correctly; nothing stale, invalid or of an
    # unsupported type did: the CapabilityStatement answered those without a call.
    reached = emulator.requests()
    assert all(q["verified"] for q in reached)
    assert len(reached) == counts["delivered"] + counts["deleted"]
    assert not [q for q in reached if q["path"].split("/")[4] not in writable]

    # The per-type table (README): resources, and what became of them.
    by_type: dict[str, Counter] = {}
    for plan in done:
        by_type.setdefault(plan.rtype, Counter())[plan.outcomes[0][1]] += 1
    print("\n| type | resources | first write |")
    print("|---|---:|---|")
    for rtype in sorted(by_type):
        outcome = ", ".join(f"{o} {n}" for o, n in sorted(by_type[rtype].items()))
        print(f"| {rtype} | {sum(by_type[rtype].values())} | {outcome} |")

    # The access log tells the same story.
    def complete_log():
        entries = relay.access_log()
        return entries if len(entries) >= sent else None

    log = relayctl.wait_until(complete_log, 30, "every access-log line")
    assert Counter(e["outcome"] for e in log) == counts
    assert {e["type_support"] for e in log if e["outcome"] == "unsupported-type"} == {
        "capability-statement"}
