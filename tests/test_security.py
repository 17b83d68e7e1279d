"""Security through the real Envoy: only Smile CDR may use the relay (bearer tokens, or mutual
TLS), only known headers reach HealthLake, hostile input gets a clear 4xx and nothing upstream,
and no secret appears in any output."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import time

import pytest

from conftest import register_secret, relay_env, relayctl, send, start_relay

TOKEN_A = "smile-cdr-token-0123456789abcdef"
TOKEN_B = "smile-cdr-next-token-fedcba9876543210"
# Temporary-looking credentials, so that the session token is exercised too.
AKID, SECRET, SESSION = "ASIASECURITYTEST0001", "security-test-secret-key-value", "security-test-session-token-value"
register_secret(TOKEN_A, TOKEN_B, SECRET, SESSION)
FHIR = {"Content-Type": "application/fhir+json"}
DATASTORE = relayctl.DEMO_DATASTORE_ID


def body(rid: str, rtype: str = "Patient") -> bytes:
    return json.dumps({"resourceType": rtype, "id": rid}).encode()


def bearer(token: str) -> dict[str, str]:
    return dict(FHIR, Authorization=f"Bearer {token}")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = relayctl.start_emulator(tmp_path_factory.mktemp("emulator"), [f"{AKID}:{SECRET}:{SESSION}"])
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def env():
    return relay_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION,
                     RELAY_INBOUND_TOKENS=f"{TOKEN_A},{TOKEN_B}")


def with_short_timeouts(config: dict) -> None:
    """The slow-loris test does not wait 30 s: streams idle for 2 s are cut."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stream_idle_timeout"] = "2s"


@pytest.fixture(scope="module")
def relay(emulator, env, tmp_path_factory):
    envoy = start_relay(tmp_path_factory.mktemp("relay"), emulator, env,
                        settings_env={"RELAY_INBOUND_TOKENS": f"{TOKEN_A},{TOKEN_B}",
                                      "RELAY_MAX_BODY_BYTES": "1048576"},
                        edit=with_short_timeouts)
    yield envoy
    envoy.stop()


def upstream_requests(emulator) -> list[dict]:
    return [q for q in emulator.requests() if q["path"].startswith("/datastore/")]


# --- inbound authentication -------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    FHIR,
    dict(FHIR, Authorization="Bearer wrong-token-but-long-enough"),
    dict(FHIR, Authorization=f"Basic {TOKEN_A}"),
    dict(FHIR, Authorization=TOKEN_A),
    dict(FHIR, Authorization=f"Bearer {TOKEN_A[:-1]}"),
], ids=["missing", "wrong", "basic", "no-scheme", "truncated"])
def test_without_an_accepted_token_nothing_is_forwarded(relay, fresh, headers):
    r = send(relay.url, "PUT", "/Patient/p1", body("p1"), headers)
    assert r.status == 401
    assert r.header("www-authenticate", ) == 'Bearer realm="healthlake-relay"'
    assert r.header("x-healthlake-outcome") == "unauthorized"
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login"
    assert TOKEN_A not in r.body.decode()
    assert upstream_requests(fresh) == []
    entry = relay.wait_for_log(lambda e: e["outcome"] == "unauthorized")
    assert entry["status"] == 401


def test_reads_need_the_token_too(relay, fresh):
    assert send(relay.url, "GET", "/Patient/p1").status == 401
    assert send(relay.url, "GET", "/Patient/p1", headers=bearer(TOKEN_A)).status == 405


def test_both_tokens_work_during_a_rotation_and_are_consumed(relay, fresh):
    for n, token in enumerate((TOKEN_A, TOKEN_B)):
        r = send(relay.url, "PUT", f"/Patient/rot{n}", body(f"rot{n}"), bearer(token))
        assert r.status == 201, r.body
    reqs = upstream_requests(fresh)
    assert len(reqs) == 2 and all(q["verified"] for q in reqs)
    # The one authorization header HealthLake sees is the relay's SigV4 signature.
    assert all(q["header_names"].count("authorization") == 1 and q["has_security_token"] for q in reqs)


def test_without_tokens_a_relay_for_a_real_healthlake_refuses_to_start(tmp_path, emulator):
    with pytest.raises(relayctl.SettingsError, match="refusing to start"):
        relayctl.Settings.from_env({"HEALTHLAKE_DATASTORE_ID": "abc"})
    # A hand-written configuration asking for bearer tokens without any: the plugin refuses.
    settings = relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
                                           "RELAY_PORT": "0", "RELAY_ADMIN_PORT": "0", "RELAY_HEALTH_PORT": "0",
                                           "AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET})
    config = dict(settings.plugin_config(), inbound_auth="bearer")
    path = relayctl.write_config(relayctl.render(settings, config), tmp_path)
    result = relayctl.validate_config(path, relay_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET))
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "RELAY_INBOUND_TOKENS" in result.stderr


# --- mutual TLS -------------------------------------------------------------------------------

def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, filename):
        (directory / filename).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def write_cert(cert, filename):
        (directory / filename).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("relay test CA")).issuer_name(name("relay test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write_cert(ca, "ca.pem")

    def leaf(cn, usage, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        write_cert(builder.sign(ca_key, hashes.SHA256()), f"{cn}.pem")
        write_key(key, f"{cn}.key")

    leaf("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf("smile-cdr", ExtendedKeyUsageOID.CLIENT_AUTH)


def tls_put(port: int, certs, client_cert: bool, rid: str) -> int:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(certs / "smile-cdr.pem"), str(certs / "smile-cdr.key"))
    data = body(rid)
    request = (f"PUT /Patient/{rid} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
               f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(request)
            reply = s.recv(4096)
    return int(reply.split(b" ", 2)[1]) if reply else 0  # 0: closed without an answer


def test_mutual_tls_listener_requires_a_client_certificate(emulator, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    emulator.reset()
    env = relay_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION)
    envoy = start_relay(tmp_path / "relay", emulator, env, settings_env={
        "RELAY_INBOUND_MTLS": "true",
        "RELAY_TLS_CERT_FILE": str(certs / "server.pem"),
        "RELAY_TLS_KEY_FILE": str(certs / "server.key"),
        "RELAY_TLS_CLIENT_CA_FILE": str(certs / "ca.pem"),
    })
    try:
        assert tls_put(envoy.port, certs, client_cert=True, rid="mtls-ok") == 201
        # Without a client certificate the TLS handshake fails: no HTTP answer at all (TLS 1.3:
        # the client has finished its side and sent the request when the server's
        # certificate_required alert, or just the close, arrives). That the refusal is for the
        # missing certificate, and not a timeout or anything else, Envoy's stat says.
        before = sum(v for k, v in envoy.stats().items() if k.endswith(".ssl.fail_verify_no_cert"))
        try:
            status = tls_put(envoy.port, certs, client_cert=False, rid="mtls-no-cert")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            status = 0
        assert status == 0
        relayctl.wait_until(
            lambda: sum(v for k, v in envoy.stats().items() if k.endswith(".ssl.fail_verify_no_cert")) == before + 1,
            10, "Envoy to count a connection without a client certificate")
        assert [q["path"] for q in upstream_requests(emulator)] == [f"/datastore/{DATASTORE}/r4/Patient/mtls-ok"]
    finally:
        envoy.stop()


def test_mtls_mode_without_a_tls_listener_fails_closed(emulator, tmp_path):
    """A plugin told that mutual TLS protects it, on a listener without TLS, lets nobody in."""
    emulator.reset()
    settings = relayctl.Settings.from_env({"AWS_ENDPOINT_URL_HEALTHLAKE": emulator.url,
                                           "AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET})
    env = relay_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION)
    envoy = start_relay(tmp_path, emulator, env, plugin_config=dict(settings.plugin_config(), inbound_auth="mtls"))
    try:
        r = send(envoy.url, "PUT", "/Patient/x", body("x"), FHIR)
        assert (r.status, r.header("x-healthlake-outcome")) == (401, "unauthorized")
        assert upstream_requests(emulator) == []
    finally:
        envoy.stop()


# --- header hygiene ---------------------------------------------------------------------------

def test_only_known_headers_reach_healthlake(relay, fresh):
    hostile = {
        "X-Forwarded-For": "10.0.0.1", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "Forwarded": "for=10.0.0.1", "Cookie": "session=1", "X-Amz-Date": "20200101T000000Z",
        "X-Amz-Security-Token": "attacker", "X-Amz-Target": "x", "X-Http-Method-Override": "DELETE",
        "Accept-Encoding": "gzip", "Prefer": "return=minimal", "If-Match": 'W/"9"', "Via": "1.1 proxy",
        "X-Envoy-Original-Path": "/x", "Proxy-Authorization": "Basic x",
    }
    r = send(relay.url, "PUT", "/Patient/hyg", body("hyg"), dict(bearer(TOKEN_A), **hostile))
    assert r.status == 201, r.body
    [req] = upstream_requests(fresh)
    assert req["verified"]
    allowed = {"host", "content-type", "content-length", "accept", "user-agent", "x-request-id",
               "authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
    assert set(req["header_names"]) <= allowed, set(req["header_names"]) - allowed
    assert req["host"] == fresh.url.removeprefix("http://")
    # Envoy's own headers do not leak to Smile CDR either.
    assert not any(h.startswith("x-envoy") for h in r.headers)


# --- hostile input ----------------------------------------------------------------------------

DEEP = ('{"resourceType":"Patient","id":"deep","x":' + "[" * 10_000 + "1" + "]" * 10_000 + "}").encode()
ADVERSARIAL = [
    ("traversal-raw", "PUT", "/Patient/../Observation/x", body("x", "Observation"), {}, 400),
    ("traversal-encoded", "PUT", "/Patient/%2e%2e/x", body("x"), {}, 400),
    ("traversal-lead", "PUT", "/%2E%2E/Patient/x", body("x"), {}, 400),
    ("encoded-slash", "PUT", "/Patient/a%2Fb", body("a/b"), {}, 400),
    ("encoded-slash-type", "PUT", "/Patient%2Fx", body("x"), {}, 400),
    ("doubled-slash", "PUT", "/Patient//x", body("x"), {}, 400),
    ("overlong-id", "PUT", "/Patient/" + "a" * 65, body("a" * 65), {}, 400),
    ("unknown-type", "PUT", "/Patients/x", body("x", "Patient"), {}, 400),
    ("non-utf8-body", "PUT", "/Patient/x", b'{"resourceType":"Patient","id":"x","n":"\xc3\x28"}', {}, 400),
    ("nesting-10000", "PUT", "/Patient/deep", DEEP, {}, 400),
    ("duplicate-ids", "PUT", "/Patient/x", b'{"resourceType":"Patient","id":"x","id":"y"}', {}, 400),
    ("duplicate-ids-post", "POST", "/Patient", b'{"resourceType":"Patient","id":"y","id":"x"}', {}, 400),
    ("mismatched-type", "PUT", "/Patient/x", body("x", "Observation"), {}, 400),
    ("too-large", "PUT", "/Binary/big", json.dumps({"resourceType": "Binary", "id": "big",
                                                     "data": "A" * 1_200_000}).encode(), {}, 413),
    ("underscore-header", "PUT", "/Patient/x", body("x"), {"x_amz_date": "1"}, 400),
    ("header-flood", "PUT", "/Patient/x", body("x"), {f"X-Flood-{i}": "1" for i in range(150)}, 431),
]


@pytest.mark.parametrize("name,method,path,data,extra,status", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_hostile_input_gets_a_4xx_and_the_worker_keeps_serving(relay, fresh, name, method, path, data, extra, status):
    r = send(relay.url, method, path, data, dict(bearer(TOKEN_A), **extra))
    assert r.status == status, (name, r.status, r.body[:300])
    if r.header("x-healthlake-outcome"):  # the relay's own answers carry an OperationOutcome
        assert r.json()["resourceType"] == "OperationOutcome"
    assert upstream_requests(fresh) == []
    good = send(relay.url, "PUT", f"/Patient/after-{name}", body(f"after-{name}"), bearer(TOKEN_A))
    assert good.status == 201, (name, good.status)


def test_slow_loris_body_is_cut_off_and_nothing_is_sent(relay, fresh):
    data = body("slow")
    head = (f"PUT /Patient/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
            f"Authorization: Bearer {TOKEN_A}\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as s:
        s.sendall(head + data[:5])  # ... and then nothing
        started = time.monotonic()
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert time.monotonic() - started < 10
    assert upstream_requests(fresh) == []
    assert send(relay.url, "PUT", "/Patient/after-slow", body("after-slow"), bearer(TOKEN_A)).status == 201


def test_no_secret_token_or_credential_in_any_output(relay, emulator):
    """Runs last: everything Envoy, the relay and the emulator wrote in this module."""
    texts = []
    for workdir in (relay.workdir, emulator.workdir):
        for f in workdir.iterdir():
            if f.is_file() and f.suffix in (".log", ".yaml"):
                texts.append((f, f.read_text(errors="replace")))
    status, stats = relayctl.http_get(relay.admin_url + "/stats")
    texts.append(("stats", stats.decode()))
    assert len(texts) >= 4
    for where, text in texts:
        for secret in (SECRET, SESSION, TOKEN_A, TOKEN_B):
            assert secret not in text, (where, secret[:6])
