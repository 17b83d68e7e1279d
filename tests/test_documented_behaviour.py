"""README promises, each through the real Envoy with the built .wasm: what the README says a
setting or an answer does, it does. Several workers (conftest's default), loopback only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import (CREDENTIAL, ROOT, read_response, register_secret, register_secret_file, relay_env, relayctl,
                      send, start_relay)

DATASTORE = relayctl.DEMO_DATASTORE_ID
FHIR = {"Content-Type": "application/fhir+json"}


def demo_env() -> dict[str, str]:
    return relay_env(AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                     AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)


def body(rid: str, rtype: str = "Patient", day: int | None = None) -> bytes:
    doc: dict = {"resourceType": rtype, "id": rid}
    if day is not None:
        doc["meta"] = {"versionId": str(day), "lastUpdated": f"2026-01-{day:02d}T10:00:00.000+00:00"}
    return json.dumps(doc).encode()


def upstream(rtype: str, rid: str) -> str:
    return f"/datastore/{DATASTORE}/r4/{rtype}/{rid}"


def upstream_requests(emulator) -> list[dict]:
    return [q for q in emulator.requests() if q["path"].startswith("/datastore/")]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = relayctl.start_emulator(tmp_path_factory.mktemp("emulator"), [CREDENTIAL])
    yield emu
    emu.stop()


# --- RELAY_INBOUND_BASE_PATH ------------------------------------------------------------------

def test_base_path_writes_inside_it_are_relayed_and_a_path_outside_it_gets_404(emulator, tmp_path):
    emulator.reset()
    envoy = start_relay(tmp_path, emulator, demo_env(), settings_env={"RELAY_INBOUND_BASE_PATH": "/fhir"})
    try:
        r = send(envoy.url, "PUT", "/fhir/Patient/based", body("based"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        for path in ("/Patient/outside", "/fhirx/Patient/outside", "/other/Patient/outside"):
            r = send(envoy.url, "PUT", path, body("outside"), FHIR)
            assert (r.status, r.header("x-healthlake-outcome")) == (404, "invalid-request"), (path, r.body)
            outcome = r.json()
            assert outcome["resourceType"] == "OperationOutcome", path
            assert "/fhir" in outcome["issue"][0]["diagnostics"], outcome
        assert [q["path"] for q in upstream_requests(emulator)] == [upstream("Patient", "based")]
        entry = envoy.wait_for_log(lambda e: e["path"] == "/other/Patient/outside")
        assert (entry["status"], entry["outcome"]) == (404, "invalid-request")
    finally:
        envoy.stop()


# --- RELAY_MAX_BODY_BYTES, a body streamed without Content-Length ------------------------------

def test_a_chunked_body_over_the_limit_gets_the_relays_413(emulator, tmp_path):
    """Over RELAY_MAX_BODY_BYTES but within Envoy's buffer limit (1 MiB above it): the relay
    itself answers, 413 invalid-request with an OperationOutcome, and nothing is forwarded."""
    emulator.reset()
    limit = 256 * 1024
    envoy = start_relay(tmp_path, emulator, demo_env(), settings_env={"RELAY_MAX_BODY_BYTES": str(limit)})
    try:
        data = json.dumps({"resourceType": "Binary", "id": "chunky", "data": "A" * (limit + 100_000)}).encode()
        head = (b"PUT /Binary/chunky HTTP/1.1\r\nHost: relay\r\nContent-Type: application/fhir+json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        with socket.create_connection(("127.0.0.1", envoy.port), timeout=20) as s:
            s.sendall(head)
            try:
                for at in range(0, len(data), 16 * 1024):
                    part = data[at:at + 16 * 1024]
                    s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # answered before the end: the rest is not read
            r = read_response(s)
        assert (r.status, r.headers.get("x-healthlake-outcome")) == (413, "invalid-request"), r.headers
        diagnostics = json.loads(r.body)["issue"][0]["diagnostics"]
        assert str(limit) in diagnostics.replace(",", ""), diagnostics
        assert upstream_requests(emulator) == []
        assert send(envoy.url, "PUT", "/Patient/after-chunky", body("after-chunky"), FHIR).status == 201
    finally:
        envoy.stop()


# --- the version guard's size settings ----------------------------------------------------------

def test_version_guard_max_entries_forgets_the_least_recently_written(emulator, tmp_path):
    """RELAY_VERSION_GUARD_MAX_ENTRIES=4: the guard remembers the 4 resources written last. A late
    older version of one of them is answered stale-version, of an earlier one forwarded."""
    emulator.reset()
    envoy = start_relay(tmp_path, emulator, demo_env(), settings_env={"RELAY_VERSION_GUARD_MAX_ENTRIES": "4"})
    try:
        for n in range(6):
            assert send(envoy.url, "PUT", f"/Patient/g{n}", body(f"g{n}", day=2), FHIR).status == 201
        late = {n: send(envoy.url, "PUT", f"/Patient/g{n}", body(f"g{n}", day=1), FHIR) for n in (5, 4, 2, 1, 0)}
        outcomes = {n: (r.status, r.header("x-healthlake-outcome")) for n, r in late.items()}
        assert outcomes == {5: (200, "stale-version"), 4: (200, "stale-version"), 2: (200, "stale-version"),
                            1: (200, "delivered"), 0: (200, "delivered")}, outcomes
    finally:
        envoy.stop()


def test_version_guard_off_with_zero_entries(emulator, tmp_path):
    emulator.reset()
    envoy = start_relay(tmp_path, emulator, demo_env(), settings_env={"RELAY_VERSION_GUARD_MAX_ENTRIES": "0"})
    try:
        assert send(envoy.url, "PUT", "/Patient/off", body("off", day=2), FHIR).status == 201
        r = send(envoy.url, "PUT", "/Patient/off", body("off", day=1), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (200, "delivered")
        assert emulator.resource("Patient", "off") == body("off", day=1)
    finally:
        envoy.stop()


def test_version_guard_max_age_forgets_old_entries(emulator, tmp_path):
    """RELAY_VERSION_GUARD_MAX_AGE_SECONDS=3: an older version is stale while the entry is young,
    forwarded once it is older than 3 s (polled: each early try is answered stale, not sent)."""
    emulator.reset()
    envoy = start_relay(tmp_path, emulator, demo_env(), settings_env={"RELAY_VERSION_GUARD_MAX_AGE_SECONDS": "3"})
    try:
        assert send(envoy.url, "PUT", "/Patient/aged", body("aged", day=2), FHIR).status == 201
        recorded = time.monotonic()
        first = send(envoy.url, "PUT", "/Patient/aged", body("aged", day=1), FHIR)
        assert first.header("x-healthlake-outcome") == "stale-version"

        def forwarded():
            r = send(envoy.url, "PUT", "/Patient/aged", body("aged", day=1), FHIR)
            return r.header("x-healthlake-outcome") == "delivered"

        relayctl.wait_until(forwarded, 30, "the entry to age out", interval=0.25)
        assert time.monotonic() - recorded >= 3 - 0.5  # the relay's clock vs ours: a little slack
        assert emulator.resource("Patient", "aged") == body("aged", day=1)
    finally:
        envoy.stop()


# --- RELAY_INBOUND_TOKENS_FILE, through `relayctl.py render` and one's own Envoy -------------------

def test_tokens_file_works_in_a_rendered_configuration_without_the_tokens_in_it(emulator, tmp_path):
    old, new = "file-token-old-0123456789abcdef-0123", "file-token-new-fedcba9876543210-3210"
    register_secret(old, new)
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"{old}\n{new}\n")
    register_secret_file(tokens_file)
    rendered = tmp_path / "envoy.yaml"
    # Rendered where Envoy will run: its credentials' source is read there (the keys themselves
    # never go into the file).
    render_env = relay_env(AWS_ENDPOINT_URL_HEALTHLAKE=emulator.url, RELAY_PORT="0", RELAY_ADMIN_PORT="0", RELAY_HEALTH_PORT="0",
                           RELAY_INBOUND_TOKENS_FILE=str(tokens_file),
                           AWS_ACCESS_KEY_ID=relayctl.DEMO_ACCESS_KEY_ID,
                           AWS_SECRET_ACCESS_KEY=relayctl.DEMO_SECRET_ACCESS_KEY)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "relayctl.py"), "render", "--out", str(rendered)],
                          env=render_env, capture_output=True, text=True, timeout=60)
    (tmp_path / "render.stderr").write_text(done.stderr)
    assert done.returncode == 0, done.stderr
    text = rendered.read_text()
    assert old not in text and new not in text
    assert os.stat(rendered).st_mode & 0o777 == 0o600  # it holds the tokens' digests
    # Envoy started as a user would start their own: the AWS credentials in its environment, no
    # RELAY_INBOUND_TOKENS anywhere.
    envoy = relayctl.start_envoy(rendered, tmp_path / "relay", demo_env())
    try:
        emulator.reset()
        for n, token in enumerate((old, new)):
            r = send(envoy.url, "PUT", f"/Patient/file{n}", body(f"file{n}"), dict(FHIR, Authorization=f"Bearer {token}"))
            assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        for headers in (FHIR, dict(FHIR, Authorization=f"Bearer {old[:-1]}x")):
            r = send(envoy.url, "PUT", "/Patient/nope", body("nope"), headers)
            assert (r.status, r.header("x-healthlake-outcome")) == (401, "unauthorized")
        assert [q["path"] for q in upstream_requests(emulator)] == [upstream("Patient", "file0"),
                                                                    upstream("Patient", "file1")]
    finally:
        envoy.stop()


def test_tokens_file_with_a_short_token_is_refused_without_echoing_it(tmp_path):
    tokens_file = tmp_path / "tokens"
    # Its digest goes into the configuration: 32 characters at least, where RELAY_INBOUND_TOKENS
    # takes 16.
    tokens_file.write_text("a-long-enough-token-for-a-file-0001,only-twenty-chars-00\n")
    register_secret_file(tokens_file)
    with pytest.raises(relayctl.SettingsError) as refused:
        relayctl.Settings.from_env({"RELAY_INBOUND_TOKENS_FILE": str(tokens_file)})
    assert "token #2 is shorter than 32" in str(refused.value)
    assert "only-twenty" not in str(refused.value)


def test_the_default_role_session_name_is_the_plugins(emulator):
    """make run and a configuration of one's own name the role session alike: relayctl leaves the
    field out, so that the plugin's default applies (src/config/credentials.rs pins it), when
    AWS_ROLE_SESSION_NAME is not set; the same for each plugin setting left unset."""
    settings = relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
                                           "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/r"})
    config = settings.plugin_config()
    assert "session_name" not in config["assume_role"] and "duration_seconds" not in config["assume_role"]
    # Envoy's buffer limits are derived from max_body_bytes: the one default the renderer writes.
    assert set(config) == {"inbound_auth", "region", "datastore_id", "healthlake_host", "max_body_bytes",
                           "credentials", "assume_role"}
    assert config["credentials"] == {"source": "imds", "imds": {"cluster": "imds", "host": "169.254.169.254"}}
    named = relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
                                        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
                                        "AWS_ROLE_SESSION_NAME": "relay-pod-0"})
    assert named.plugin_config()["assume_role"]["session_name"] == "relay-pod-0"


# --- a bad plugin setting: the plugin's own words, from make run, render and Envoy alike ---------

def checker_line(config: dict) -> str:
    """What the plugin's own check (healthlake-relay-config) prints for a configuration."""
    done = subprocess.run([str(relayctl.CONFIG_CHECKER)], input=relayctl.plugin_json(config), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    return done.stderr.strip()


@pytest.mark.parametrize("variable,field,value,json_value", [
    ("RELAY_UNSUPPORTED_TYPE_TTL_SECONDS", "unsupported_type_ttl_seconds", "0", 0),
    # Not a number: passed as the string it is, refused by the plugin's JSON reader.
    ("RELAY_CAPABILITIES_REFRESH_SECONDS", "capabilities_refresh_seconds", "1h", "1h"),
])
def test_a_bad_plugin_setting_is_refused_in_the_plugins_words_everywhere(emulator, tmp_path, variable, field, value,
                                                                         json_value):
    """relayctl converts the variable and lets the plugin's own code judge it: the line Envoy logs
    when it starts the plugin with that configuration is the line make run, relayctl.py render
    and Settings give, after the variable's name."""
    env = {"AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url, "HEALTHLAKE_DATASTORE_ID": DATASTORE,
           "AWS_ACCESS_KEY_ID": relayctl.DEMO_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": relayctl.DEMO_SECRET_ACCESS_KEY}
    good = relayctl.Settings.from_env(env)
    bad_config = dict(good.plugin_config(), **{field: json_value})
    line = checker_line(bad_config)
    assert line.startswith("invalid plugin configuration: field ")
    expected = f"{variable}: {line}"
    # Settings (what start_relay, deploy.py and the scripts build).
    with pytest.raises(relayctl.SettingsError) as refused:
        relayctl.Settings.from_env({**env, variable: value})
    assert str(refused.value) == expected
    # make run and relayctl.py render, as a user runs them.
    user_env = relay_env(RELAY_RUN_DIR=str(tmp_path / "run"), **env, **{variable: value})
    for command in ("run", "render"):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "relayctl.py"), command], cwd=ROOT,
                              env=user_env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", f"relay: {expected}\n"), command
    # Envoy, starting the plugin with the same configuration (rendered as make run renders it).
    path = relayctl.write_config(relayctl.render(good, bad_config), tmp_path / "envoy")
    envoy = relayctl.start_envoy(path, tmp_path / "envoy", relay_env(**env), wait=False)
    try:
        relayctl.wait_until(lambda: not envoy.alive(), 60, "envoy to refuse the configuration")
    finally:
        envoy.stop()
    logged = [entry for entry in (tmp_path / "envoy" / "envoy.log").read_text().splitlines()
              if "invalid plugin configuration" in entry]
    assert logged and all(entry.endswith(f": {line}") for entry in logged), logged


# --- make run, as a user starts it: RELAY_CONCURRENCY, the printed curl, Ctrl-C ------------------

def start_make_run(tmp_path, **settings: str) -> tuple[subprocess.Popen, int, int]:
    """`relayctl.py run` (what `make run` starts once built) in demo mode on free ports; returns
    the process and its listener and admin ports once it printed that it listens."""
    port, admin = relayctl.free_port(), relayctl.free_port()
    env = relay_env(RELAY_PORT=str(port), RELAY_ADMIN_PORT=str(admin), RELAY_HEALTH_PORT=str(relayctl.free_port()),
                    RELAY_RUN_DIR=str(tmp_path / "run"),
                    **settings)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "relayctl.py"), "run"], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "run.stdout", "wb"), stderr=subprocess.STDOUT)

    def listening():
        if proc.poll() is not None:
            raise RuntimeError(f"make run exited {proc.returncode}: {(tmp_path / 'run.stdout').read_text()}")
        return "Access log (JSON" in (tmp_path / "run.stdout").read_text()

    relayctl.wait_until(listening, 90, "make run to start")
    return proc, port, admin


def stop_make_run(proc: subprocess.Popen) -> int:
    proc.send_signal(2)  # Ctrl-C
    return proc.wait(timeout=30)


def server_concurrency(admin: int) -> int:
    status, info = relayctl.http_get(f"http://127.0.0.1:{admin}/server_info")
    assert status == 200
    return json.loads(info)["command_line_options"]["concurrency"]


def test_make_run_uses_a_worker_per_core_by_default_and_answers_the_printed_curl(tmp_path):
    proc, port, admin = start_make_run(tmp_path)
    try:
        cores = len(os.sched_getaffinity(0))  # Envoy's --cpuset-threads: the cores it may run on
        assert server_concurrency(admin) == cores
        out = (tmp_path / "run.stdout").read_text()
        assert f"HealthLake relay listening on http://127.0.0.1:{port}" in out
        assert f"{cores} workers" in out
        # The curl it prints, sent as printed (same headers, the example file).
        example = (ROOT / "examples" / "Patient-relay-demo.json").read_bytes()
        assert "--data-binary @examples/Patient-relay-demo.json" in out
        r = send(f"http://127.0.0.1:{port}", "PUT", "/Patient/relay-demo", example,
                 {"Content-Type": "application/fhir+json; charset=UTF-8", "If-Match": 'W/"1"'})
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        # ... and the access-log line it follows.
        relayctl.wait_until(lambda: '"outcome":"delivered"' in (tmp_path / "run.stdout").read_text()
                            .replace(" ", ""), 10, "the access-log line on make run's output")
    finally:
        assert stop_make_run(proc) == 0
    # Ctrl-C stopped Envoy and the emulator too: nothing listens any more.
    for p in (port, admin):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=2).close()


def test_make_run_relay_concurrency_sets_the_workers(tmp_path):
    proc, _, admin = start_make_run(tmp_path, RELAY_CONCURRENCY="3")
    try:
        assert server_concurrency(admin) == 3
    finally:
        assert stop_make_run(proc) == 0
    with pytest.raises(relayctl.SettingsError, match="RELAY_CONCURRENCY must be 1 to 1024"):
        relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:8080", "RELAY_CONCURRENCY": "0"})


def test_make_run_with_replicas_puts_a_front_before_them_and_follows_every_log(tmp_path):
    proc, port, admin = start_make_run(tmp_path, RELAY_REPLICAS="3", RELAY_CONCURRENCY="1")
    try:
        out = (tmp_path / "run.stdout").read_text()
        assert f"HealthLake relay listening on http://127.0.0.1:{port}: a front Envoy with resource affinity" in out
        assert all(f"relay-{n} http://127.0.0.1:" in out for n in (1, 2, 3))
        example = (ROOT / "examples" / "Patient-relay-demo.json").read_bytes()
        r = send(f"http://127.0.0.1:{port}", "PUT", "/Patient/relay-demo", example,
                 {"Content-Type": "application/fhir+json; charset=UTF-8", "If-Match": 'W/"1"'})
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body

        def logged():
            lines = [json.loads(line) for line in (tmp_path / "run.stdout").read_text().splitlines()
                     if line.startswith("{")]
            return [e for e in lines if e.get("outcome") == "delivered"]

        (entry,) = relayctl.wait_until(logged, 10, "the relay's line on make run's output")
        assert entry["replica"] in ("relay-1", "relay-2", "relay-3")
    finally:
        assert stop_make_run(proc) == 0


def test_make_run_shows_the_last_write_before_ctrl_c(tmp_path):
    """Envoy writes its access log every 200 ms, and what it still holds as it exits: make run
    prints those last lines too, after Envoy stopped, before it returns."""
    proc, port, _ = start_make_run(tmp_path)
    try:
        r = send(f"http://127.0.0.1:{port}", "PUT", "/Patient/last-before-ctrl-c", body("last-before-ctrl-c"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
    finally:
        assert stop_make_run(proc) == 0  # at once: the line is still in Envoy's buffer
    lines = [json.loads(line) for line in (tmp_path / "run.stdout").read_text().splitlines() if line.startswith("{")]
    assert [(e["path"], e["outcome"]) for e in lines] == [("/Patient/last-before-ctrl-c", "delivered")]


def test_without_the_plugins_check_settings_say_to_run_make_build(monkeypatch, tmp_path):
    import relay_settings

    monkeypatch.setattr(relay_settings, "CONFIG_CHECKER", tmp_path / "healthlake-relay-config")
    with pytest.raises(relayctl.SettingsError, match=r"healthlake-relay-config is missing: run make build"):
        relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:8080"})
