"""Hostile input through the real Envoy: every reproduction of the hardening review (issue 12) as a
regression test, each followed by a normal write that must be delivered. Requests are written as
raw bytes, so that anything Envoy can deliver (header values that are not UTF-8 included) is sent
as it is."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import pytest

from conftest import read_response, register_secret, relay_env, relayctl, send, send_h2, start_relay

TOKEN = "hardening-token-0123456789abcdef"
register_secret(TOKEN)
FHIR = {"Content-Type": "application/fhir+json"}
AUTH = dict(FHIR, Authorization=f"Bearer {TOKEN}")


def env() -> dict[str, str]:
    return relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                     AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY,
                     RELAY_INBOUND_TOKENS=TOKEN)


@pytest.fixture(scope="module")
def relay(emulator, tmp_path_factory):
    envoy = start_relay(tmp_path_factory.mktemp("relay"), emulator, env(),
                        settings_env={"RELAY_INBOUND_TOKENS": TOKEN}, concurrency=2)
    yield envoy
    envoy.stop()


def raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Sends `data` as it is and reads one HTTP/1.1 answer: (status, headers, body); status 0
    when the connection closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        r = read_response(s)
        return r.status, r.headers, r.body


def request(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: relay"]
    lines += [name + b": " + value for name, value in headers]
    if body or method in (b"PUT", b"POST"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def resource(rid: str, last_updated: str | None = None) -> bytes:
    r: dict = {"resourceType": "Patient", "id": rid}
    if last_updated:
        r["meta"] = {"versionId": "1", "lastUpdated": last_updated}
    return json.dumps(r).encode()


def vm_reloads(envoy) -> int:
    """How often a Wasm VM failed and was reloaded (FAIL_RELOAD): 0 while nothing crashed."""
    return envoy.stats().get("wasm.healthlake_relay.vm_reload", 0)


def received_bytes(envoy) -> int:
    """Bytes Envoy has read from clients: what the relay has been handed, as far as it got."""
    return envoy.stats().get("http.healthlake_relay.downstream_cx_rx_bytes_total", 0)


def delivered(relay, emulator, rid: str) -> None:
    """A normal write right after: it must reach HealthLake."""
    r = send(relay.url, "PUT", f"/Patient/{rid}", resource(rid), AUTH)
    assert r.status in (200, 201), (r.status, r.body)
    assert r.header("x-healthlake-outcome") == "delivered"
    assert emulator.resource("Patient", rid) is not None


def operation_outcome(body: bytes) -> dict:
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return outcome


# --- 1. header bytes that are not UTF-8 --------------------------------------------------------

BEARER = b"Bearer " + TOKEN.encode()


@pytest.mark.parametrize("name,method,headers,path,want", [
    ("unauthenticated", b"GET", [(b"X-Test", b"caf\xe9")], b"/Patient/x", (401, "unauthorized")),
    ("authenticated", b"GET", [(b"Authorization", BEARER), (b"X-Test", b"caf\xe9")], b"/Patient/x",
     (405, "read-dropped")),
    ("in the token", b"PUT", [(b"Authorization", b"Bearer caf\xe9" + TOKEN.encode())], b"/Patient/x",
     (401, "unauthorized")),
    ("in the content type", b"PUT", [(b"Authorization", BEARER),
                                     (b"Content-Type", b"application/fhir+json\xff")], b"/Patient/x",
     (415, "invalid-request")),
    # Envoy's codec refuses such bytes in the request target itself, before the relay.
    ("in the path", b"PUT", [(b"Authorization", BEARER), (b"Content-Type", b"application/fhir+json")],
     b"/Patient/caf\xe9", (400, "refused-by-proxy")),
])
def test_bytes_that_are_not_utf8_get_an_answer_and_the_worker_keeps_serving(relay, fresh, name, method, headers,
                                                                            path, want):
    reloads = vm_reloads(relay)
    status, hdrs, body = raw(relay.port, request(method, path, headers, b"" if method == b"GET" else resource("x")))
    assert (status, hdrs.get("x-healthlake-outcome")) == want, (name, status, body)
    operation_outcome(body)
    assert [q for q in fresh.requests() if q["path"].startswith("/datastore/")] == []
    # No VM failed (a crash on either worker would show as a reload), and writes go on.
    for n in range(4):
        delivered(relay, fresh, f"after-bytes-{n}")
    assert vm_reloads(relay) == reloads
    log = (relay.workdir / "envoy.log").read_text()
    assert "panicked" not in log and "Uncaught" not in log


def test_over_http2_bytes_that_are_not_utf8_reach_the_relay_and_get_its_answer(relay, fresh):
    """Envoy's HTTP/2 codec lets such bytes through in the path too: the relay's own 400."""
    reloads = vm_reloads(relay)
    auth = [(b"authorization", BEARER), (b"content-type", b"application/fhir+json")]
    r = send_h2(relay.port, b"PUT", b"/Patient/caf\xe9", auth, resource("x"))
    assert (r.status, r.header("x-healthlake-outcome")) == (400, "invalid-request"), r
    assert "not valid UTF-8" in operation_outcome(r.body)["issue"][0]["diagnostics"]
    r = send_h2(relay.port, b"PUT", b"/Patient/h2", [*auth, (b"x-test", b"caf\xe9")], resource("h2"))
    assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r
    assert fresh.resource("Patient", "h2") is not None
    assert [q["path"].rsplit("/", 2)[-2:] for q in fresh.requests()] == [["Patient", "h2"]]
    assert vm_reloads(relay) == reloads


def test_a_non_utf8_value_of_a_forwarded_header_passes_as_bytes(relay, fresh):
    status, _, body = raw(relay.port, request(b"PUT", b"/Patient/ua", [
        (b"Authorization", BEARER), (b"Content-Type", b"application/fhir+json"),
        (b"User-Agent", b"smile-caf\xe9")], resource("ua")))
    assert status == 201, body
    [req] = [q for q in fresh.requests() if q["path"].startswith("/datastore/")]
    assert req["verified"]


# --- 2. memory: declared sizes reserve nothing; the budget answers 503 -------------------------

def test_declared_sizes_without_bodies_do_not_exhaust_the_vm(relay, fresh):
    """300 connections each declaring 8 MiB and sending 100 bytes (the attack took the VM down)."""
    head = request(b"PUT", b"/Patient/big", [(b"Authorization", BEARER),
                                             (b"Content-Type", b"application/fhir+json")])
    head = head.replace(b"Content-Length: 0", b"Content-Length: 8388608")
    start = head + b'{"resourceType":"Patient","id":"big",' + b" " * 64
    reloads, before = vm_reloads(relay), received_bytes(relay)
    sockets = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            s.sendall(start)
            sockets.append(s)
        # Envoy has read them all (and handed the bodies' starts to the relay).
        relayctl.wait_until(lambda: received_bytes(relay) >= before + 300 * len(start), 20,
                            "Envoy to read the 300 requests")
        for n in range(4):
            delivered(relay, fresh, f"after-declared-{n}")
    finally:
        for s in sockets:
            s.close()
    delivered(relay, fresh, "after-declared-closed")
    assert vm_reloads(relay) == reloads
    log = (relay.workdir / "envoy.log").read_text()
    assert "memory allocation" not in log and "panicked" not in log


@pytest.fixture(scope="module")
def small_budget(emulator, tmp_path_factory):
    """One worker that may hold 2 MiB of bodies, of at most 1 MiB each. One worker on purpose: the
    budget is per worker, and the test fills one."""
    envoy = start_relay(tmp_path_factory.mktemp("budget"), emulator, env(),
                        settings_env={"RELAY_INBOUND_TOKENS": TOKEN, "RELAY_MAX_BODY_BYTES": "1048576",
                                      "RELAY_BODY_BUDGET_BYTES": "2097152"}, concurrency=1)
    yield envoy
    envoy.stop()


def test_bodies_past_the_budget_get_503_overloaded_and_nothing_is_lost(small_budget, fresh):
    relay = small_budget
    big = 900 * 1024
    head = request(b"PUT", b"/Patient/held", [(b"Authorization", BEARER),
                                              (b"Content-Type", b"application/fhir+json")])
    head = head.replace(b"Content-Length: 0", f"Content-Length: {big + 1}".encode())
    held = []
    try:
        # Two bodies held (2 x 0.9 MiB of the 2 MiB), each sent in pieces Envoy reads one by one,
        # so that no chunk copied in at once is larger than a piece (the copy counts while it is
        # made: a 0.9 MiB chunk beside the first body would itself not fit).
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            held.append(s)
            data = head + b" " * big
            for at in range(0, len(data), 64 * 1024):
                before = received_bytes(relay)
                piece = data[at:at + 64 * 1024]
                s.sendall(piece)
                relayctl.wait_until(lambda: received_bytes(relay) >= before + len(piece), 10,
                                    "Envoy to read the piece (and hand it to the relay)")
        # A third cannot be held beside them, however it arrives.
        status, hdrs, body = raw(relay.port, head + b" " * big, timeout=10)
        assert status == 503, body
        assert hdrs["x-healthlake-outcome"] == "overloaded"
        assert hdrs["retry-after"] == "5"
        assert "body_budget_bytes" in operation_outcome(body)["issue"][0]["diagnostics"]
        # A small write still fits beside the held bodies.
        delivered(relay, fresh, "beside-held")
    finally:
        for s in held:
            s.close()
    # The held bodies' room is given back when their clients go away.
    relayctl.wait_until(lambda: send(relay.url, "PUT", "/Patient/after-held", b"x" * big, AUTH).status == 400,
                        10, "the budget to be given back")
    entry = relay.wait_for_log(lambda e: e["outcome"] == "overloaded")
    assert entry["status"] == 503
    assert relay.stats().get("wasmcustom.healthlake_relay.outcome.overloaded", 0) >= 1


# --- 3. the version guard does not trust a lastUpdated from the future -------------------------

def test_a_far_future_last_updated_cannot_hold_later_writes_back(relay, fresh):
    r = send(relay.url, "PUT", "/Patient/future", resource("future", "9999-12-31T23:59:59Z"), AUTH)
    assert r.status == 201 and r.header("x-healthlake-outcome") == "delivered"
    entry = relay.wait_for_log(lambda e: e["resource_id"] == "future")
    assert entry["error_code"] == "untrusted-last-updated"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    r = send(relay.url, "PUT", "/Patient/future", resource("future", now), AUTH)
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "delivered")
    # Deleted, then re-created: delivered, not stale.
    assert send(relay.url, "DELETE", "/Patient/future", headers={"Authorization": f"Bearer {TOKEN}"}).status == 204
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    r = send(relay.url, "PUT", "/Patient/future", resource("future", later), AUTH)
    assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered")
    # Within the allowance the guard works as before: an older version is stale.
    r = send(relay.url, "PUT", "/Patient/future", resource("future", "2001-01-01T00:00:00Z"), AUTH)
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "stale-version")


# --- 4. no open signer by configuration -------------------------------------------------------

def test_no_inbound_auth_only_on_a_loopback_listener(emulator):
    base = {"AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:8080"}
    assert relayctl.Settings.from_env(base).inbound_auth == "none"
    with pytest.raises(relayctl.SettingsError, match="refusing to start: RELAY_LISTEN_ADDRESS=0.0.0.0"):
        relayctl.Settings.from_env(dict(base, RELAY_LISTEN_ADDRESS="0.0.0.0"))
    settings = relayctl.Settings.from_env(dict(base, RELAY_LISTEN_ADDRESS="0.0.0.0", RELAY_INBOUND_TOKENS=TOKEN))
    assert settings.inbound_auth == "bearer"


# --- 5. every access-log line has an outcome, Envoy's own answers included ----------------------

def test_envoys_own_answers_carry_an_outcome_and_an_operation_outcome(relay, fresh):
    for data in (b"GARBAGE\r\n\r\n", b"PUT /Patient/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
                 b"PUT /Patient/x HTTP/1.1\r\nHost: a\r\nx_amz_date: 1\r\n\r\n"):
        status, hdrs, body = raw(relay.port, data)
        assert status == 400, (data, status)
        assert hdrs["x-healthlake-outcome"] == "refused-by-proxy"
        assert hdrs["content-type"] == "application/fhir+json"
        assert operation_outcome(body)["issue"][0]["severity"] == "error"
    # A chunked body over the limit, streamed: whoever answers, the answer has an outcome.
    chunk = b"x" * 65536
    data = request(b"PUT", b"/Patient/stream", [(b"Authorization", BEARER), (b"Content-Type", b"application/fhir+json"),
                                                (b"Transfer-Encoding", b"chunked")])
    data = data.replace(b"Content-Length: 0\r\n", b"")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(data)
        try:
            for _ in range(10 * 1024 * 1024 // len(chunk)):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:
            pass
        answer = s.recv(4096)
    assert b" 413 " in answer.split(b"\r\n")[0], answer[:200]
    assert b"x-healthlake-outcome:" in answer.lower()
    delivered(relay, fresh, "after-envoy-answers")
    relay.wait_for_log(lambda e: e["resource_id"] == "after-envoy-answers")
    entries = relay.access_log()
    assert [e for e in entries if not e["outcome"]] == []
    assert sum(e["outcome"] == "refused-by-proxy" for e in entries) >= 3


# --- 6. a DELETE with a body ------------------------------------------------------------------

def test_a_delete_with_a_body_is_refused_not_forwarded(relay, fresh):
    status, hdrs, body = raw(relay.port, request(b"DELETE", b"/Patient/d1", [(b"Authorization", BEARER)], b"{}"))
    assert status == 400 and hdrs["x-healthlake-outcome"] == "invalid-request"
    assert "must not carry a body" in operation_outcome(body)["issue"][0]["diagnostics"]
    assert [q for q in fresh.requests() if q["path"].startswith("/datastore/")] == []
    r = send(relay.url, "DELETE", "/Patient/d1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 204


# --- 7. connections that never send a request -------------------------------------------------

def test_a_connection_that_sends_nothing_is_closed_within_seconds(relay, fresh):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=20) as s:
        assert s.recv(1) == b""  # closed by Envoy, not by the timeout above
    assert time.monotonic() - started < 15
    delivered(relay, fresh, "after-silent")


# --- 8. tokens in the query string, log files --------------------------------------------------

def test_a_query_string_token_never_reaches_the_logs_and_logs_are_private(relay, fresh):
    secret = "query-secret-value-0123456789"
    register_secret(secret)
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {TOKEN}"}, 400)):
        r = send(relay.url, "PUT", f"/Patient/q1?access_token={secret}", resource("q1"), dict(FHIR, **headers))
        assert r.status == status, (headers.keys(), r.status, r.body)
    relay.wait_for_log(lambda e: e["path"] == "/Patient/q1" and e["status"] == 400)
    for name in ("access.log", "envoy.log"):
        path = relay.workdir / name
        assert secret not in path.read_text(), name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name


# --- 9. a not-supported answer about one resource does not silence its type ----------------------

def test_not_supported_about_an_element_is_rejected_for_that_resource_only(relay, fresh):
    fresh.set_faults(next=["not-supported-element"])
    r = send(relay.url, "PUT", "/Patient/element", resource("element"), AUTH)
    assert (r.status, r.header("x-healthlake-outcome")) == (400, "rejected")
    # The type is not learned: the next Patient goes to HealthLake and is stored.
    delivered(relay, fresh, "element-next")
    # HealthLake's answer about the type itself still is: Flag, which the CapabilityStatement the
    # relay read lists, refused by the emulator since.
    fresh.set_faults(unsupported_types=["Flag"])
    flag = json.dumps({"resourceType": "Flag", "id": "f1", "status": "active",
                       "code": {"text": "x"}, "subject": {"reference": "Patient/p"}}).encode()
    r = send(relay.url, "PUT", "/Flag/f1", flag, AUTH)
    assert (r.status, r.header("x-healthlake-outcome")) == (200, "unsupported-type")
    assert r.header("x-healthlake-type-support") == "healthlake"
    fresh.set_faults()


# --- defence in depth: a VM that traps is reloaded (FAIL_RELOAD) --------------------------------

TRAP_WASM = relayctl.ROOT / "target" / "trap" / "wasm32-wasip1" / "release" / "healthlake_relay.wasm"


def test_a_vm_that_traps_is_reloaded_and_the_next_write_is_delivered(emulator, tmp_path):
    if not TRAP_WASM.exists():
        pytest.fail(f"{TRAP_WASM} is missing: run `make test-wasm` (make test does)")
    envoy = start_relay(tmp_path, emulator, env(),
                        settings_env={"RELAY_INBOUND_TOKENS": TOKEN, "RELAY_WASM": str(TRAP_WASM)},
                        concurrency=1)  # one worker on purpose: its VM is the one that must come back
    try:
        emulator.reset()
        r = send(envoy.url, "PUT", "/Patient/trap", resource("trap"), dict(AUTH, **{"x-relay-test-trap": "1"}))
        assert r.status == 503
        assert r.header("x-healthlake-outcome") == "refused-by-proxy"
        operation_outcome(r.body)
        assert emulator.resource("Patient", "trap") is None
        log = (tmp_path / "envoy.log").read_text()
        assert "trapping on purpose" in log
        # Within the reload back-off (0.2 s) requests get 503 too; then a reloaded VM serves them
        # (FAIL_CLOSED would answer 503 until Envoy restarts).
        def reloaded():
            r = send(envoy.url, "PUT", "/Patient/after-trap", resource("after-trap"), AUTH)
            assert r.status in (201, 200, 503), r.status
            return r.status != 503
        relayctl.wait_until(reloaded, 10, "a reloaded VM")
        for n in range(3):
            delivered(envoy, emulator, f"after-trap-{n}")
        assert envoy.stats().get("wasm.healthlake_relay.vm_reload_success", 0) >= 1
    finally:
        envoy.stop()
