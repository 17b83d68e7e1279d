"""The health listener through the real Envoy and the built .wasm: GET /ready is 200 only while the
relay can sign and Envoy is not draining (what Kubernetes' readiness probe and the fleet's
graceful drain rely on), /live while Envoy serves, /stats/prometheus Envoy's stats."""

from __future__ import annotations

import json
import time
import urllib.request

from conftest import relay_env, relayctl, send, start_relay

FHIR = {"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'}


def body(rid: str) -> bytes:
    return json.dumps({"resourceType": "Patient", "id": rid, "meta": {"versionId": "1"}}).encode()


def admin_post(envoy, path: str) -> int:
    request = urllib.request.Request(envoy.admin_url + path, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as r:
        return r.status


def diagnostics(r) -> str:
    outcome = json.loads(r.body)
    assert outcome["resourceType"] == "OperationOutcome", r.body
    return outcome["issue"][0]["diagnostics"]


def test_not_ready_while_the_relay_cannot_sign_and_ready_once_it_can(fresh, tmp_path):
    fresh.set_credentials(down=True)
    env = relay_env(AWS_EC2_METADATA_DISABLED="false", AWS_EC2_METADATA_SERVICE_ENDPOINT=fresh.url)
    envoy = start_relay(tmp_path, fresh, env, settings_env={"RELAY_CREDENTIALS_WAIT_MS": "1000"})
    try:
        r = send(envoy.health_url, "GET", "/ready")
        assert r.status == 503, r.body
        assert r.header("content-type") == "application/fhir+json"
        assert "no usable credentials from imds yet" in diagnostics(r)
        # Envoy itself serves: the liveness probe must not restart a replica that only waits.
        assert send(envoy.health_url, "GET", "/live").status == 200
        fresh.set_credentials(down=False)
        relayctl.wait_until(lambda: send(envoy.health_url, "GET", "/ready").status == 200, 30,
                            "/ready once instance metadata answers", interval=0.3)
        r = send(envoy.url, "PUT", "/Patient/ready-1", body("ready-1"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
    finally:
        envoy.stop()


def test_missing_keys_are_never_ready(fresh, tmp_path):
    # The environment source without its secret key: the plugin starts (every write is answered
    # 503 no-credentials), and the probe says why.
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID)
    envoy = start_relay(tmp_path, fresh, env, settings_env={
        "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY})
    try:
        r = send(envoy.health_url, "GET", "/ready")
        assert r.status == 503 and "AWS_SECRET_ACCESS_KEY" in diagnostics(r), r.body
    finally:
        envoy.stop()


def test_draining_makes_ready_fail_while_writes_are_still_served(fresh, tmp_path):
    admin_port = relayctl.free_port()
    env = relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    envoy = start_relay(tmp_path, fresh, env, settings_env={"RELAY_ADMIN_PORT": str(admin_port)})
    try:
        assert send(envoy.health_url, "GET", "/ready").status == 200
        assert send(envoy.health_url, "GET", "/ready?verbose").status == 200
        # The preStop hook's first step: Envoy's health checks fail, and so does /ready ...
        assert admin_post(envoy, "/healthcheck/fail") == 200
        assert send(envoy.health_url, "GET", "/ready").status == 503
        # ... while the writes already on their way still go through.
        r = send(envoy.url, "PUT", "/Patient/draining-1", body("draining-1"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        assert admin_post(envoy, "/healthcheck/ok") == 200
        assert send(envoy.health_url, "GET", "/ready").status == 200
        # Prometheus scrapes the health port; the admin interface stays on loopback.
        r = send(envoy.health_url, "GET", "/stats/prometheus")
        assert r.status == 200
        assert 'healthlake_relay_outcome{outcome="delivered"} 1' in r.body.decode(), r.body[:2000]
        for path in ("/", "/stats", "/config_dump", "/healthcheck/fail", "/readyz", "/ready/",
                     "/stats/prometheus/../config_dump", "//stats/prometheus", "/stats%2Fprometheus",
                     "http://127.0.0.1/config_dump"):
            assert send(envoy.health_url, "GET", path).status == 404, path
        # Reads only, whatever the path: never a write, never a POST to the admin interface.
        for method, path in (("PUT", "/Patient/h-1"), ("DELETE", "/Patient/h-1"), ("POST", "/stats/prometheus"),
                             ("POST", "/ready")):
            r = send(envoy.health_url, method, path, body("h-1") if method == "PUT" else b"", FHIR)
            assert r.status == 405 and "health listener" in diagnostics(r), (method, path, r.body)
        assert not [q for q in fresh.requests() if "h-1" in q["path"]]
        # The probes are the health listener's, never the writes' (a GET there is a read).
        r = send(envoy.url, "GET", "/ready")
        assert (r.status, r.header("x-healthlake-outcome")) == (405, "read-dropped")
    finally:
        envoy.stop()


def test_the_probe_never_fetches_credentials_itself(fresh, tmp_path):
    # The health listener's copy of the filter alone (the writes' one removed): with instance
    # metadata up and nothing else fetching, /ready stays 503 and IMDS is never called.
    def probe_only(config):
        for listener in config["static_resources"]["listeners"]:
            if listener["name"] == "smile_cdr":
                hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
                hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "healthlake_relay"]

    env = relay_env(AWS_EC2_METADATA_DISABLED="false", AWS_EC2_METADATA_SERVICE_ENDPOINT=fresh.url)
    envoy = start_relay(tmp_path, fresh, env, edit=probe_only)
    try:
        deadline = time.monotonic() + 3  # twelve of the writes' filter's 250 ms ticks
        while time.monotonic() < deadline:
            assert send(envoy.health_url, "GET", "/ready").status == 503
            time.sleep(0.25)
        stats = envoy.stats()
        assert "cluster.imds.upstream_rq_total" in stats, "the imds cluster is in the configuration"
        assert stats["cluster.imds.upstream_rq_total"] == 0
    finally:
        envoy.stop()
