"""Credentials from the platform, through the real Envoy: EC2 instance metadata (IMDSv2), container
credentials (ECS task role, EKS Pod Identity) and web identity (EKS IRSA), each with only its
standard variables, all pointed at loopback stand-ins (the emulator plays IMDS and the container
agent; moto, behind the emulator's STS proxy, plays AssumeRoleWithWebIdentity).

Token files are rotated as the kubelet does it: a new timestamped directory, and the `..data`
symlink renamed over. The emulator reads the same file on every request, so a relay (Envoy) that
kept the old token would be refused at its next refresh.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import ROOT, register_secret, register_secret_file, register_state_file, relay_env, relayctl, send, start_relay

FHIR = {"Content-Type": "application/fhir+json"}
ROLE = "arn:aws:iam::123456789012:role/healthlake-relay-irsa"


def body(rid: str) -> bytes:
    return json.dumps({"resourceType": "Patient", "id": rid}).encode()


class TokenFile:
    """A projected service-account token as the kubelet writes it: `<dir>/token` is a symlink to
    `..data/token`, `..data` a symlink to a timestamped directory, replaced atomically."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        self.path = root / "token"
        self.n = 0
        self.rotate()
        (root / "token").symlink_to("..data/token")

    def rotate(self, content: str | None = None) -> str:
        """Writes a new token (by default a JWT-shaped one with characters a form must encode,
        `+/=`, and a trailing new line, which the relay's side must not send)."""
        self.n += 1
        if content is None:
            content = f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)}+/==\n"
        register_secret(content.strip())
        version = self.root / f"..2026_11_30_{self.n:04d}"
        version.mkdir()
        (version / "token").write_text(content)
        register_secret_file(version / "token")
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        tmp.rename(self.root / "..data")
        self.content = content.strip()
        return content


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    # AssumeRoleWithWebIdentity is unsigned: the token is the proof. moto with IAM authentication
    # on refuses any call without an Authorization header, so this moto checks none; the token is
    # checked by the emulator's STS proxy in front of it, against the token file.
    m = relayctl.start_moto(tmp_path_factory.mktemp("moto"), setup_actions=1_000_000_000)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    return {"pod": TokenFile(root / "eks-pod-identity"), "irsa": TokenFile(root / "eks-irsa")}


@pytest.fixture(scope="module")
def emulator(moto, tokens, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("emulator")
    state = workdir / "state.jsonl"
    register_state_file(state)  # the issued secrets, searched for in every output (conftest)
    emu = relayctl.start_emulator(workdir, [], sts_upstream=moto.url, extra_args=[
        "--state-file", str(state),
        "--container-token-file", str(tokens["pod"].path),
        "--web-identity-token-file", str(tokens["irsa"].path),
    ])
    yield emu
    emu.stop()


@pytest.fixture
def fresh(emulator):
    """Reset (the credentials endpoints' settings and faults too; their call log is kept, so
    `credential_calls` lists the calls since)."""
    emulator.reset()
    emulator.calls_before = len(emulator.credentials()["calls"])
    return emulator


def credential_calls(emulator) -> list[dict]:
    """The instance metadata and container calls since `fresh`."""
    return emulator.credentials()["calls"][emulator.calls_before:]


def source_relay(workdir: Path, emulator, **variables: str):
    """The relay with only a source's standard variables in Envoy's environment (no AWS keys);
    the relay's own RELAY_ settings among `variables` are its settings."""
    env = relay_env(**{k: v for k, v in variables.items() if k.startswith("AWS_")})
    settings = {"RELAY_CREDENTIALS_WAIT_MS": "5000",
                **{k: v for k, v in variables.items() if k.startswith("RELAY_")}}
    return start_relay(workdir, emulator, env, settings_env=settings)


def imds_variables(emulator) -> dict[str, str]:
    return {"AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": emulator.url}


def pod_identity_variables(emulator, tokens) -> dict[str, str]:
    return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{emulator.url}/v1/credentials",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tokens["pod"].path)}


def irsa_variables(emulator, tokens) -> dict[str, str]:
    return {"AWS_WEB_IDENTITY_TOKEN_FILE": str(tokens["irsa"].path), "AWS_ROLE_ARN": ROLE,
            "AWS_ENDPOINT_URL_STS": emulator.sts_url}


def source_stat(envoy, source: str, what: str) -> int:
    return envoy.stats().get(f"wasmcustom.healthlake_relay.credentials.source.{source}.refresh_{what}", 0)


def data_plane(emulator) -> list[dict]:
    return [q for q in emulator.requests() if q["path"].startswith("/datastore/")]


def write(envoy, rid: str):
    return send(envoy.url, "PUT", f"/Patient/{rid}", body(rid), FHIR)


def keep_writing(envoy, seconds: float, prefix: str) -> int:
    """Writes for `seconds`; every one must be delivered. Returns how many."""
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = write(envoy, f"{prefix}{n}")
        assert (r.status, r.header("x-healthlake-outcome")) in ((201, "delivered"), (200, "delivered")), \
            (r.status, r.body[:300])
        n += 1
        time.sleep(0.1)
    return n


def seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# --- each source signs, refreshes ahead of expiry, and says so ---------------------------------

@pytest.mark.parametrize("source", ["imds", "container"])
def test_platform_credentials_sign_and_are_refreshed_before_they_expire(source, fresh, tokens, tmp_path):
    # 125 s sets: the derived margin is 120 s (2 minutes at least), so each set is replaced about
    # 5 s after it came, and would be unusable 35 s after (90 s before expiry).
    fresh.set_credentials(lifetime_seconds=125)
    variables = imds_variables(fresh) if source == "imds" else pod_identity_variables(fresh, tokens)
    envoy = source_relay(tmp_path, fresh, **variables)
    try:
        n = keep_writing(envoy, 14, f"{source}-")
        calls = credential_calls(fresh)
        issued = [c for c in calls if c["source"] == source and c["issued_access_key_id"]]
        assert len(issued) >= 2, issued  # the first set and at least one refresh
        assert all(c["status"] == 200 and c["fault"] is None for c in calls), calls
        if source == "imds":
            # IMDSv2: every fetch took a session token first; nothing was refused for lack of one.
            assert [c["method"] for c in calls][:6] == ["PUT", "GET", "GET"] * 2, calls
        reached = data_plane(fresh)
        assert len(reached) == n
        # Every write was signed with a set the source issued, still valid when it arrived, and
        # more than one set was used: the refresh happened while writes flowed.
        assert all(q["verified"] and q["credential_source"] == source and q["credential_valid"] for q in reached)
        assert len({q["access_key_id"] for q in reached}) >= 2
        assert {q["access_key_id"] for q in reached} <= {c["issued_access_key_id"] for c in issued}
        # Which source signed: the access log, the per-source stats (a Prometheus label), the log.
        entries = [e for e in envoy.access_log() if e["outcome"] == "delivered"]
        assert entries and all(e["credentials_source"] == source for e in entries)
        assert source_stat(envoy, source, "succeeded") >= 2 and source_stat(envoy, source, "failed") == 0
        status, prom = relayctl.http_get(envoy.admin_url + "/stats/prometheus")
        assert f'healthlake_relay_credentials_source_refresh_succeeded{{credentials_source="{source}"}}' \
            in prom.decode()
        log = (tmp_path / "envoy.log").read_text()
        assert f"credentials from {source}: …" in log
    finally:
        envoy.stop()


def test_a_rotated_pod_identity_token_is_used_at_the_next_refresh(fresh, tokens, tmp_path):
    fresh.set_credentials(lifetime_seconds=125)
    envoy = source_relay(tmp_path, fresh, **pod_identity_variables(fresh, tokens))
    try:
        assert write(envoy, "before-rotation").status == 201
        rotated_at = time.time()
        tokens["pod"].rotate()
        # The next refresh (about 5 s on) carries the new token: the emulator, reading the same
        # file, would answer 401 to the old one.
        relayctl.wait_until(lambda: any(seconds(c["time"]) > rotated_at + 0.2 and c["issued_access_key_id"]
                                        for c in credential_calls(fresh)), 20, "a refresh after the rotation")
        keep_writing(envoy, 1, "after-rotation-")
        calls = credential_calls(fresh)
        assert all(c["status"] == 200 for c in calls), calls
        assert source_stat(envoy, "container", "failed") == 0
        assert all(q["verified"] and q["credential_valid"] for q in data_plane(fresh))
    finally:
        envoy.stop()


def test_a_container_token_from_the_environment(fresh, tokens, tmp_path):
    """AWS_CONTAINER_AUTHORIZATION_TOKEN (no file): the relay sends it itself."""
    envoy = source_relay(tmp_path, fresh, AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{fresh.url}/v1/credentials",
                         AWS_CONTAINER_AUTHORIZATION_TOKEN=tokens["pod"].content)
    try:
        r = write(envoy, "env-token")
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        assert [q["credential_source"] for q in data_plane(fresh)] == ["container"]
    finally:
        envoy.stop()


def test_irsa_web_identity_signs_and_a_rotated_token_is_used_at_the_next_refresh(fresh, tokens, tmp_path):
    # 900 s sessions refreshed from 890 s before expiry: a refresh about every 10 s.
    before = len(fresh.get_json("/_emulator/sts")["calls"])
    envoy = source_relay(tmp_path, fresh, **irsa_variables(fresh, tokens), AWS_ROLE_DURATION_SECONDS="900",
                         RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS="890")
    try:
        r = write(envoy, "irsa-first")
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        first = fresh.get_json("/_emulator/sts")["calls"][before:]
        assert [(c["action"], c["status"]) for c in first] == [("AssumeRoleWithWebIdentity", 200)], first
        old_prefix = first[0]["web_identity_token_sha256_prefix"]
        tokens["irsa"].rotate()

        def refreshed_with_the_new_token():
            calls = fresh.get_json("/_emulator/sts")["calls"][before:]
            return [c for c in calls if c["web_identity_token_sha256_prefix"] not in (None, old_prefix)]

        new = relayctl.wait_until(refreshed_with_the_new_token, 25, "a refresh with the rotated token", interval=0.5)
        assert new[0]["status"] == 200 and new[0]["issued_access_key_id"], new
        keep_writing(envoy, 1, "irsa-after-")
        calls = fresh.get_json("/_emulator/sts")["calls"][before:]
        assert all(c["status"] == 200 and c["action"] == "AssumeRoleWithWebIdentity" for c in calls), calls
        reached = data_plane(fresh)
        assert all(q["verified"] and q["credential_source"] == "sts" and q["credential_valid"] for q in reached)
        assert {e["credentials_source"] for e in envoy.access_log()} == {"web-identity"}
        assert source_stat(envoy, "web-identity", "failed") == 0
    finally:
        envoy.stop()


def test_a_role_assumed_on_top_of_web_identity(fresh, tokens, tmp_path):
    """RELAY_ASSUME_ROLE_ARN beside IRSA's variables: the web identity's credentials assume the
    second role (role chaining, one hour at most), and HealthLake gets writes signed with that
    role's credentials. (This moto checks no signature: the HealthLake emulator checks the last.)"""
    top = "arn:aws:iam::123456789012:role/healthlake-writer"
    before = len(fresh.get_json("/_emulator/sts")["calls"])
    envoy = source_relay(tmp_path, fresh, **irsa_variables(fresh, tokens), RELAY_ASSUME_ROLE_ARN=top)
    try:
        r = write(envoy, "chained")
        assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        calls = fresh.get_json("/_emulator/sts")["calls"][before:]
        assert [(c["action"], c["status"]) for c in calls] == [
            ("AssumeRoleWithWebIdentity", 200), ("AssumeRole", 200)], calls
        assert [q["access_key_id"] for q in data_plane(fresh)] == [calls[1]["issued_access_key_id"]]
        assert all(q["verified"] and q["credential_valid"] for q in data_plane(fresh))
        assert {e["credentials_source"] for e in envoy.access_log()} == {"web-identity+assume-role"}
        assert source_stat(envoy, "web-identity", "succeeded") == 1
        assert source_stat(envoy, "assume-role", "succeeded") == 1
    finally:
        envoy.stop()


def test_a_web_identity_token_emptied_while_running_is_never_sent_and_a_new_one_is(fresh, tokens, tmp_path):
    """The token file rotated to an empty file: Envoy refuses the STS call itself (the relay logs
    it, naming web-identity, and keeps signing with the current set), STS sees no call without a
    token; the next rotation to a real token brings credentials again, without a restart."""
    envoy = source_relay(tmp_path, fresh, **irsa_variables(fresh, tokens), AWS_ROLE_DURATION_SECONDS="900",
                         RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS="890")
    try:
        assert write(envoy, "before-empty").status == 201
        before = len(fresh.get_json("/_emulator/sts")["calls"])
        tokens["irsa"].rotate("")
        log = tmp_path / "envoy.log"
        relayctl.wait_until(lambda: "no credentials from web-identity (attempt 1)" in log.read_text(), 25,
                            "the refresh with an empty token file to fail", interval=0.5)
        # Envoy 1.40 takes the empty secret and then refuses calls to the cluster (the Lua
        # filter's own refusal of an empty token is a second line of defence).
        assert 'web-identity: cannot call cluster "sts_web_identity"' in log.read_text(), log.read_text()[-2000:]
        assert fresh.get_json("/_emulator/sts")["calls"][before:] == [], "STS got a call without a token"
        tokens["irsa"].rotate()
        relayctl.wait_until(lambda: any(c["status"] == 200 for c in fresh.get_json("/_emulator/sts")["calls"][before:]),
                            70, "credentials with the new token", interval=0.5)
        assert write(envoy, "after-new-token").status == 201
    finally:
        envoy.stop()


def test_an_unusable_web_identity_token_is_a_failed_fetch_never_an_unsigned_call(fresh, tokens, tmp_path):
    """The token file is empty when Envoy starts (make run refuses that; a hand-run Envoy may not):
    Envoy cannot add the token, the relay answers 503 naming web-identity and the cluster, and STS
    never sees a call without a token."""
    token = TokenFile(tmp_path / "token")
    env = relay_env(**dict(irsa_variables(fresh, tokens), AWS_WEB_IDENTITY_TOKEN_FILE=str(token.path)))
    before = len(fresh.get_json("/_emulator/sts")["calls"])

    def empty_the_token_file(config):
        token.path.resolve().write_text("")

    envoy = start_relay(tmp_path / "relay", fresh, env, settings_env={"RELAY_CREDENTIALS_WAIT_MS": "1000"},
                        edit=empty_the_token_file)
    try:
        r = write(envoy, "no-token")
        assert (r.status, r.header("x-healthlake-outcome")) == (503, "no-credentials"), r.body
        assert fresh.get_json("/_emulator/sts")["calls"][before:] == []
        assert data_plane(fresh) == []
        log = (tmp_path / "relay" / "envoy.log").read_text()
        assert 'no credentials from web-identity (attempt 1): web-identity: cannot call cluster "sts_web_identity"' \
            in log, log[-2000:]
    finally:
        envoy.stop()
    with pytest.raises(relayctl.SettingsError, match="AWS_WEB_IDENTITY_TOKEN_FILE is empty"):
        settings(**dict(irsa_variables(fresh, tokens), AWS_WEB_IDENTITY_TOKEN_FILE=str(token.path)))


# --- a source that is down or hands out garbage: 503, nothing forwarded, then back -------------

def test_a_source_that_is_down_gives_503_and_writes_flow_once_it_is_back(fresh, tmp_path):
    fresh.set_credentials(down=True)
    envoy = source_relay(tmp_path, fresh, **imds_variables(fresh), RELAY_CREDENTIALS_WAIT_MS="1000")
    try:
        r = write(envoy, "while-down")
        assert (r.status, r.header("x-healthlake-outcome")) == (503, "no-credentials"), r.body
        assert "imds" in json.loads(r.body)["issue"][0]["diagnostics"]
        assert data_plane(fresh) == []
        log = (tmp_path / "envoy.log").read_text()
        assert "no credentials from imds (attempt 1): imds: the session token (PUT /latest/api/token): " \
               "answered 503" in log, log[-2000:]
        fresh.set_credentials(down=False)
        relayctl.wait_until(lambda: write(envoy, "back").status == 201, 30, "writes once IMDS is back", interval=0.3)
        assert all(q["verified"] and q["credential_valid"] for q in data_plane(fresh))
        assert source_stat(envoy, "imds", "failed") >= 1 and source_stat(envoy, "imds", "succeeded") == 1
    finally:
        envoy.stop()


def test_sts_down_for_web_identity_gives_503_and_writes_flow_once_it_is_back(tokens, tmp_path):
    """STS (its own moto here) stops: the emulator's STS proxy answers 502, the relay answers 503
    naming web-identity and forwards nothing; moto back on the same port, writes flow again."""
    sts = relayctl.start_moto(tmp_path / "moto", setup_actions=1_000_000_000)
    workdir = tmp_path / "emulator"
    state = workdir / "state.jsonl"
    register_state_file(state)
    emu = relayctl.start_emulator(workdir, [], sts_upstream=sts.url, extra_args=[
        "--state-file", str(state), "--web-identity-token-file", str(tokens["irsa"].path)])
    envoy = None
    try:
        sts.stop()
        envoy = source_relay(tmp_path / "relay", emu, **irsa_variables(emu, tokens), RELAY_CREDENTIALS_WAIT_MS="1000")
        r = write(envoy, "sts-down")
        assert (r.status, r.header("x-healthlake-outcome")) == (503, "no-credentials"), r.body
        assert data_plane(emu) == []
        log = (tmp_path / "relay" / "envoy.log").read_text()
        assert "no credentials from web-identity (attempt 1): web-identity: STS answered 502" in log, log[-2000:]
        sts = relayctl.start_moto(tmp_path / "moto-again", port=sts.port, setup_actions=1_000_000_000)
        relayctl.wait_until(lambda: write(envoy, "sts-back").status == 201, 40, "writes once STS is back", interval=0.3)
        assert all(q["verified"] and q["credential_valid"] for q in data_plane(emu))
    finally:
        if envoy:
            envoy.stop()
        emu.stop()
        sts.stop()


BROKEN_ANSWERS = [
    ("garbled", "not JSON credentials"),
    ("no-credentials", "the answer has no AccessKeyId"),
    ("bad-expiration", "is not an ISO-8601 time"),
    ("expired", "too soon to use"),
    ("huge", "more than 65536 bytes: not credentials"),
    ("500", "answered 500"),
]


@pytest.mark.parametrize("fault,reason", BROKEN_ANSWERS, ids=[f for f, _ in BROKEN_ANSWERS])
def test_a_broken_container_answer_is_never_signed_with(fault, reason, fresh, tokens, tmp_path):
    fresh.set_credentials_faults([fault])
    envoy = source_relay(tmp_path, fresh, **pod_identity_variables(fresh, tokens), RELAY_CREDENTIALS_WAIT_MS="300")
    try:
        r = write(envoy, f"{fault}-first")
        assert r.status in (201, 503), r.body  # 201 only if the retry came within the 300 ms
        relayctl.wait_until(lambda: write(envoy, f"{fault}-later").status == 201, 30, "the next set", interval=0.3)
        calls = [c for c in credential_calls(fresh) if c["source"] == "container"]
        assert [c["fault"] for c in calls][:2] == [fault, None], calls
        good = calls[1]["issued_access_key_id"]
        assert {q["access_key_id"] for q in data_plane(fresh)} == {good}
        log = (tmp_path / "envoy.log").read_text()
        assert "no credentials from container (attempt 1): container:" in log and reason in log, log[-2000:]
    finally:
        envoy.stop()


# --- make run with only the platform's variables ----------------------------------------------

def run_relay(tmp_path: Path, **variables: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """`relayctl.py run` (what `make run` starts) as a user on the platform would: the data store
    and endpoint given, only the source's own variables, no AWS keys."""
    env = relay_env(RELAY_PORT=str(relayctl.free_port()), RELAY_ADMIN_PORT=str(relayctl.free_port()),
                    RELAY_HEALTH_PORT=str(relayctl.free_port()),
                    RELAY_RUN_DIR=str(tmp_path / "run"), RELAY_CONCURRENCY="1", **variables)
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "relayctl.py"), "run"], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "run.stdout", "wb"), stderr=subprocess.STDOUT), env


def test_make_run_accepts_each_source_with_only_its_variables(fresh, tokens, tmp_path):
    common = {"AWS_ENDPOINT_URL_HEALTHLAKE": fresh.url, "HEALTHLAKE_DATASTORE_ID": relayctl.DEMO_DATASTORE_ID}
    for name, variables, printed in [
        ("imds", imds_variables(fresh), f"Credentials: imds (EC2 instance metadata (IMDSv2) at {fresh.url}; "
                                        "no other source's variables are set)"),
        ("container", pod_identity_variables(fresh, tokens),
         f"Credentials: container ({fresh.url}/v1/credentials, token file {tokens['pod'].path}; "
         "AWS_CONTAINER_CREDENTIALS_FULL_URI is set)"),
        ("web-identity", irsa_variables(fresh, tokens),
         f"Credentials: web-identity (STS AssumeRoleWithWebIdentity for {ROLE}, token file "
         f"{tokens['irsa'].path}; AWS_WEB_IDENTITY_TOKEN_FILE is set)"),
    ]:
        out = tmp_path / name
        out.mkdir()
        proc, env = run_relay(out, **common, **variables)
        try:
            relayctl.wait_until(lambda: proc.poll() is not None or "Access log (JSON" in (out / "run.stdout").read_text(),
                                90, "make run to start")
            text = (out / "run.stdout").read_text()
            assert proc.poll() is None, text
            assert printed in text, text
            r = send(f"http://127.0.0.1:{env['RELAY_PORT']}", "PUT", f"/Patient/run-{name}", body(f"run-{name}"), FHIR)
            assert (r.status, r.header("x-healthlake-outcome")) == (201, "delivered"), r.body
        finally:
            proc.send_signal(2)
            assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("variables,line", [
    ({"RELAY_CREDENTIALS_SOURCE": "container"},
     "relay: RELAY_CREDENTIALS_SOURCE=container needs AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or "
     "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ({"RELAY_CREDENTIALS_SOURCE": "web-identity"},
     "relay: RELAY_CREDENTIALS_SOURCE=web-identity needs AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN"),
    ({"RELAY_CREDENTIALS_SOURCE": "imds", "AWS_EC2_METADATA_DISABLED": "true"},
     "relay: RELAY_CREDENTIALS_SOURCE=imds needs AWS_EC2_METADATA_DISABLED unset or false "
     "(AWS_EC2_METADATA_DISABLED is true)"),
    ({"RELAY_CREDENTIALS_SOURCE": "environment"},
     "relay: RELAY_CREDENTIALS_SOURCE=environment needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
])
def test_make_run_refuses_a_pinned_source_without_its_variables(variables, line, tmp_path):
    proc, _ = run_relay(tmp_path, AWS_ENDPOINT_URL_HEALTHLAKE="http://127.0.0.1:9",
                        HEALTHLAKE_DATASTORE_ID=relayctl.DEMO_DATASTORE_ID, **variables)
    assert proc.wait(timeout=60) == 2
    assert (tmp_path / "run.stdout").read_text().strip() == line


# --- what the settings make of the platform's variables (rendered, validated; no packets) -----

def settings(**variables: str) -> relayctl.Settings:
    return relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": "http://127.0.0.1:8080", **variables})


def test_the_sdk_order_and_the_ecs_relative_uri(tmp_path):
    token = tmp_path / "token"
    token.write_text("x")
    everything = {"AWS_ACCESS_KEY_ID": "AKIDX", "AWS_SECRET_ACCESS_KEY": "s", "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
                  "AWS_ROLE_ARN": ROLE, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"}
    s = settings(**everything)
    # Keys first; AWS_ROLE_ARN stays the web identity's role (the EKS webhook injects it), never a
    # role assumed on top of the keys.
    assert (s.credentials.source, s.role_arn) == ("environment", "")
    s = settings(**dict(everything, RELAY_CREDENTIALS_SOURCE="container"))
    assert (s.credentials.source, s.role_arn, s.credentials.reason) == ("container", "", "RELAY_CREDENTIALS_SOURCE")
    del everything["AWS_ACCESS_KEY_ID"], everything["AWS_SECRET_ACCESS_KEY"]
    s = settings(**everything)
    assert s.credentials.source == "web-identity" and s.role_arn == ""  # AWS_ROLE_ARN is the web identity's
    # Both container URIs: the relative one (ECS) wins, as in the SDKs, and the reason says so.
    both = settings(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="/v2/credentials/abc",
                    AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:9/v1/credentials")
    assert both.credentials.container_url == "http://169.254.170.2/v2/credentials/abc"
    assert both.credentials.reason == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set"
    # A full URI without a path asks for "/" (the plugin refuses an empty path).
    bare = settings(AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:9")
    assert bare.plugin_config()["credentials"]["container"]["path"] == "/"
    del everything["AWS_WEB_IDENTITY_TOKEN_FILE"]
    s = settings(**everything)
    # Without web identity, AWS_ROLE_ARN keeps its meaning: a role assumed on top (of the ECS role).
    assert (s.credentials.source, s.role_arn) == ("container", ROLE)
    config = s.plugin_config()
    assert config["credentials"]["container"] == {
        "cluster": "container_credentials", "host": "169.254.170.2", "path": "/v2/credentials/abc",
        "authorization": "none"}
    assert config["assume_role"]["role_arn"] == ROLE
    path = relayctl.write_rendered(s, tmp_path / "ecs")
    rendered = path.read_text()
    assert "169.254.170.2" in rendered and "credentials_source: container+assume-role" in rendered
    check = relayctl.validate_config(path, relay_env())
    assert check.returncode == 0, check.stderr
    # Nothing set: EC2 instance metadata, unless turned off.
    assert settings().credentials.source == "imds"
    with pytest.raises(relayctl.SettingsError, match="no AWS credentials source"):
        settings(AWS_EC2_METADATA_DISABLED="true")


@pytest.mark.parametrize("variables,message", [
    ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://credentials.example.com/v1"}, "only on loopback or the ECS"),
    ({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "v2/creds"}, "must be a path"),
    ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://10.0.0.1"}, "AWS_EC2_METADATA_SERVICE_ENDPOINT must be"),
    ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "https://169.254.169.254"}, "AWS_EC2_METADATA_SERVICE_ENDPOINT must be"),
    ({"AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent/token", "AWS_ROLE_ARN": ROLE}, "cannot be read"),
    ({"AWS_WEB_IDENTITY_TOKEN_FILE": "relative/token", "AWS_ROLE_ARN": ROLE}, "must be an absolute path"),
    ({"AWS_ACCESS_KEY_ID": "AKIDX"}, "AWS_SECRET_ACCESS_KEY is not set"),
    ({"RELAY_CREDENTIALS_SOURCE": "sso"}, "RELAY_CREDENTIALS_SOURCE must be"),
    ({"RELAY_ASSUME_ROLE_ARN": ROLE, "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/other"}, "name different roles"),
    # The plugin's own rules (its Config::from_json), in its words after the variable's name.
    ({"RELAY_ASSUME_ROLE_ARN": ROLE, "AWS_ROLE_DURATION_SECONDS": "7200"},
     'AWS_ROLE_DURATION_SECONDS: invalid plugin configuration: field "assume_role.duration_seconds": expected at '
     'most 3600 seconds: the role is assumed with temporary credentials of another role (imds), and STS limits '
     'such chained sessions to one hour'),
    ({"AWS_ROLE_ARN": "arn:aws:iam::1:role/r", "AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "s"},
     'AWS_ROLE_ARN: invalid plugin configuration: field "assume_role.role_arn": expected an IAM role ARN such as '
     'arn:aws:iam::123456789012:role/name, got "arn:aws:iam::1:role/r"'),
    ({"RELAY_ASSUME_ROLE_ARN": "arn:aws:iam::\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662:role/r"},
     'RELAY_ASSUME_ROLE_ARN: invalid plugin configuration: field "assume_role.role_arn": expected an IAM role ARN'),
    ({"AWS_WEB_IDENTITY_TOKEN_FILE": str(Path(__file__).resolve()),
      "AWS_ROLE_ARN": "arn:aws:iam::123456789012:user/u"},
     'AWS_ROLE_ARN: invalid plugin configuration: field "credentials.web_identity.role_arn": expected an IAM role ARN'),
    ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:99999/v1"}, "must be a URL"),
    ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/v1 credentials"}, "must be a URL"),
    ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:99999"}, "AWS_EC2_METADATA_SERVICE_ENDPOINT must be"),
    ({"AWS_ENDPOINT_URL_STS": "http://127.0.0.1:99999"}, "AWS_ENDPOINT_URL_STS must be"),
    ({"RELAY_ASSUME_ROLE_ARN": ROLE, "AWS_ROLE_EXTERNAL_ID": "a b"},
     'AWS_ROLE_EXTERNAL_ID: invalid plugin configuration: field "assume_role.external_id": expected 2 to 1224 '
     'characters from letters, digits and +=,.@:/_-'),
    ({"RELAY_ASSUME_ROLE_ARN": ROLE, "AWS_ROLE_SESSION_NAME": "a b"},
     'AWS_ROLE_SESSION_NAME: invalid plugin configuration: field "assume_role.session_name": expected 2 to 64 '
     'characters from letters, digits and +=,.@_-'),
    ({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x", "RELAY_CREDENTIALS_WAIT_MS": "5s"},
     'RELAY_CREDENTIALS_WAIT_MS: invalid plugin configuration: field "configuration": is not valid: invalid type: '
     'string "5s", expected u64'),
])
def test_bad_platform_variables_are_named(variables, message):
    with pytest.raises(relayctl.SettingsError) as refused:
        settings(**variables)
    assert message in str(refused.value)


def test_a_valid_duration_never_conflicts_with_the_default_margin():
    """AWS_ROLE_DURATION_SECONDS=900 (STS's minimum) alone: the margin is derived from the
    lifetime (225 s for 900 s sessions), not a fixed 900 s that would refuse it."""
    s = settings(AWS_ACCESS_KEY_ID="AKIDX", AWS_SECRET_ACCESS_KEY="s", AWS_ROLE_ARN=ROLE, AWS_ROLE_DURATION_SECONDS="900")
    assert "refresh_margin_seconds" not in s.plugin_config()["credentials"]
    assert s.plugin_config()["assume_role"]["duration_seconds"] == 900
    with pytest.raises(relayctl.SettingsError) as refused:
        settings(AWS_ACCESS_KEY_ID="AKIDX", AWS_SECRET_ACCESS_KEY="s", AWS_ROLE_ARN=ROLE,
                 AWS_ROLE_DURATION_SECONDS="900", RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS="900")
    assert str(refused.value) == (
        'RELAY_CREDENTIALS_REFRESH_MARGIN_SECONDS: invalid plugin configuration: field '
        '"credentials.refresh_margin_seconds": expected less than the duration_seconds of the roles assumed (900), '
        'got 900')
