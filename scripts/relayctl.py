#!/usr/bin/env python3
"""Render the relay's Envoy configuration and start the relay: shared by `make run` and the tests.

    relayctl.py render [--out FILE]   render envoy.yaml from the settings (environment variables)
    relayctl.py run                   start the relay (and, by default, the local emulator) and wait

Settings are environment variables, named after the AWS SDK conventions where one exists; the
README's settings table documents each. Processes started here are stopped by their pid.

This is the command line; the work is in the modules beside it, whose public names it re-exports
(tests and scripts use `relayctl.X`): relay_settings (the settings, and the plugin configuration
checked by the plugin's own code), relay_render (the Envoy configurations), relay_processes (the
emulator, moto, Envoy, the topology of make run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from relay_processes import (EMULATOR_BIN, MOTO_ACCOUNT, MOTO_SETUP_ACTIONS, Emulator, Envoy, IamSetup, Moto,
                             Service, Topology, envoy_binary, free_port, http_get, is_metadata_request,
                             private_log, read_port, setup_iam, start_emulator, start_envoy, start_moto,
                             start_topology, validate_config, wait_until)
from relay_render import (BUFFER_HEADROOM_BYTES, CONTAINER_SDS, FRONT_TEMPLATE, READINESS_ROOT_ID,
                          RING_POINTS_PER_REPLICA, TEMPLATE, WEB_IDENTITY_SDS, Replica, add_readiness_probe,
                          add_unanswered_log, is_ip, listener, render, render_files, render_front, replica_name,
                          sds_file, write_config, write_rendered)
from relay_settings import (BUILD, CA_BUNDLE_CANDIDATES, CONFIG_CHECKER, CONTAINER_AGENT_HOSTS,
                            CREDENTIAL_SOURCES, DEFAULT_IMDS_ENDPOINT, DEFAULT_MAX_BODY_BYTES, DEFAULT_REGION,
                            DEMO_ACCESS_KEY_ID, DEMO_DATASTORE_ID, DEMO_SECRET_ACCESS_KEY, ECS_CREDENTIALS_HOST,
                            FIELD_VARIABLES, FILE_TOKEN_MIN_LEN, IMDS_HOSTS, MAX_REPLICAS, PLUGIN_FIELDS, ROOT,
                            TOKEN_MIN_LEN, WASM, Credentials, Settings, SettingsError, authority,
                            check_plugin_config, check_tokens, container_url, credentials_plugin_config,
                            endpoint_parts, imds_endpoint, is_decimal, is_loopback, plugin_json, plugin_value,
                            readable_file, refused_field, token_sha256, url_port_ok)

__all__ = [
    # relay_settings
    "BUILD", "CA_BUNDLE_CANDIDATES", "CONFIG_CHECKER", "CONTAINER_AGENT_HOSTS", "CREDENTIAL_SOURCES",
    "DEFAULT_IMDS_ENDPOINT", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_REGION", "DEMO_ACCESS_KEY_ID", "DEMO_DATASTORE_ID",
    "DEMO_SECRET_ACCESS_KEY", "ECS_CREDENTIALS_HOST", "FIELD_VARIABLES", "FILE_TOKEN_MIN_LEN", "IMDS_HOSTS",
    "MAX_REPLICAS", "PLUGIN_FIELDS", "ROOT", "TOKEN_MIN_LEN", "WASM", "Credentials", "Settings", "SettingsError",
    "authority", "check_plugin_config", "check_tokens", "container_url", "credentials_plugin_config",
    "endpoint_parts", "imds_endpoint", "is_decimal", "is_loopback", "plugin_json", "plugin_value", "readable_file",
    "refused_field", "token_sha256", "url_port_ok",
    # relay_render
    "BUFFER_HEADROOM_BYTES", "CONTAINER_SDS", "FRONT_TEMPLATE", "READINESS_ROOT_ID", "RING_POINTS_PER_REPLICA",
    "TEMPLATE", "WEB_IDENTITY_SDS", "Replica", "add_readiness_probe", "add_unanswered_log", "is_ip", "listener",
    "render", "render_files", "render_front", "replica_name", "sds_file", "write_config", "write_rendered",
    # relay_processes
    "EMULATOR_BIN", "MOTO_ACCOUNT", "MOTO_SETUP_ACTIONS", "Emulator", "Envoy", "IamSetup", "Moto", "Service",
    "Topology", "envoy_binary", "free_port", "http_get", "is_metadata_request", "private_log", "read_port",
    "setup_iam", "start_emulator", "start_envoy", "start_moto", "start_topology", "validate_config", "wait_until",
    # the command line
    "describe_credentials", "shown", "envoy_workers", "follow", "run", "main",
]


def describe_credentials(settings: Settings) -> str:
    """The credentials source as make run prints it: which, from where, and why (no secret)."""
    c = settings.credentials
    where = {
        "environment": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "web-identity": f"STS AssumeRoleWithWebIdentity for {c.web_identity_role_arn}, token file {c.web_identity_token_file}",
        "container": f"{c.container_url}" + (f", token file {c.container_token_file}" if c.container_token_file
                                            else ", token from AWS_CONTAINER_AUTHORIZATION_TOKEN" if c.container_token_in_env else ""),
        "imds": f"EC2 instance metadata (IMDSv2) at {c.imds_endpoint}",
    }[c.source]
    text = f"{c.source} ({where}; {c.reason})"
    if settings.role_arn:
        text += f", then AssumeRole {settings.role_arn}"
    return text


def shown(path: Path) -> Path:
    """A path as the user would type it: relative to the current directory when under it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def envoy_workers(envoy: Envoy) -> str:
    """Envoy's worker threads, as it reports them (its --concurrency)."""
    try:
        status, body = http_get(envoy.admin_url + "/server_info")
        return str(json.loads(body)["command_line_options"]["concurrency"]) if status == 200 else "?"
    except (OSError, ValueError, KeyError):
        return "?"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def follow(logs: list) -> bool:
    """Prints what the followed log files gained since the last call; whether they gained anything."""
    lines = [line for log in logs for line in iter(log.readline, "")]
    for line in lines:
        print(line, end="", flush=True)
    return bool(lines)


def run() -> int:
    # Ctrl-C, or SIGTERM from a supervisor, stops Envoy and the emulator before exiting (SIGINT is
    # re-armed: a shell starting this in the background would have it ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    demo = not env.get("AWS_ENDPOINT_URL_HEALTHLAKE") and not env.get("HEALTHLAKE_DATASTORE_ID")
    # The rendered configuration and the logs (access log, Envoy's, the emulator's): build/run,
    # emptied first, or RELAY_RUN_DIR, which must be new or empty (nothing of the user's is removed).
    chosen = env.get("RELAY_RUN_DIR", "").strip()
    workdir = Path(chosen or BUILD / "run").resolve()
    if not chosen and workdir.exists():
        shutil.rmtree(workdir)
    services: list[Service] = []
    logs: list = []
    try:
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise SettingsError(f"RELAY_RUN_DIR must be a new or empty directory: {workdir} is not")
        if demo:
            emu = start_emulator(workdir, [f"{DEMO_ACCESS_KEY_ID}:{DEMO_SECRET_ACCESS_KEY}"])
            services.append(emu)
            env["AWS_ENDPOINT_URL_HEALTHLAKE"] = emu.url
            # The emulator also plays EC2 instance metadata and the container credentials
            # endpoint: a source pinned to one of them gets the emulator's, unless set.
            pinned = env.get("RELAY_CREDENTIALS_SOURCE", "").strip().lower()
            if pinned == "imds":
                env.setdefault("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url)
            elif pinned == "container" and not (env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                                                or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
                env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"{emu.url}/v1/credentials"
            elif pinned in ("", "auto", "environment"):
                env["AWS_ACCESS_KEY_ID"] = DEMO_ACCESS_KEY_ID
                env["AWS_SECRET_ACCESS_KEY"] = DEMO_SECRET_ACCESS_KEY
                env.pop("AWS_SESSION_TOKEN", None)
        # RELAY_INBOUND_TOKENS reaches the Wasm VM through Envoy's environment (never the file);
        # the tokens of RELAY_INBOUND_TOKENS_FILE as digests in the plugin configuration.
        settings = Settings.from_env(env)
        topology = start_topology(settings, workdir, env, concurrency=settings.concurrency)
        services.extend(topology.envoys)
        envoy = topology.entry
        relay = f"http://127.0.0.1:{settings.relay_port}{settings.base_path}"
        example = ROOT / "examples" / "Patient-relay-demo.json"
        if topology.front:
            homes = ", ".join(f"{e.workdir.name} http://127.0.0.1:{e.health_port}/ready" for e in topology.replicas)
            print(f"\nHealthLake relay listening on {relay}: a front Envoy with resource affinity (admin "
                  f"http://127.0.0.1:{settings.admin_port}) in front of {len(topology.replicas)} relay replicas "
                  f"of {envoy_workers(topology.replicas[0])} workers each ({homes})")
        else:
            print(f"\nHealthLake relay listening on {relay}  (Envoy admin: http://127.0.0.1:{settings.admin_port}, "
                  f"{envoy_workers(envoy)} workers; readiness: http://127.0.0.1:{envoy.health_port}/ready)")
        if demo:
            print(f"Demo mode: HealthLake played by the local emulator at {env['AWS_ENDPOINT_URL_HEALTHLAKE']}")
        print(f"Credentials: {describe_credentials(settings)}")
        if settings.inbound_auth == "none":
            print("Inbound authentication is off (local demo): anyone who reaches the listener can write.")
        else:
            print(f"Forwarding to {settings.endpoint}, data store {settings.datastore_id}")
        print("\nWrite a resource as Smile CDR would, then read the access-log line:\n")
        print(
            f"  curl -sS -X PUT '{relay}/Patient/relay-demo' \\\n"
            "    -H 'Content-Type: application/fhir+json; charset=UTF-8' -H 'If-Match: W/\"1\"' \\\n"
            + ("    -H \"Authorization: Bearer <one of your inbound tokens>\" \\\n"
               if settings.inbound_auth == "bearer" else "")
            + f"    --data-binary @{shown(example)} -i; echo; "
            + (f"sleep 1; tail -n 1 {shown(envoy.access_log_path)}\n" if not topology.front else
               f"sleep 1; tail -qn 1 {' '.join(str(shown(p)) for p in topology.access_log_paths)}\n")
        )
        if demo:
            print(f"  curl -sS {env['AWS_ENDPOINT_URL_HEALTHLAKE']}/_emulator/resources/Patient/relay-demo\n")
        print("Access log (JSON, one line per request" + (", each naming its replica" if topology.front else "")
              + ") follows; Ctrl-C stops the relay.\n", flush=True)
        logs = [open(path, "r") for path in topology.access_log_paths]
        while all(s.alive() for s in services):
            if not follow(logs):
                time.sleep(0.2)
        follow(logs)  # what the one that exited wrote last
        dead = [s.name for s in services if not s.alive()]
        print(f"stopped: {', '.join(dead)} exited; see {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (SettingsError, RuntimeError, TimeoutError) as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    finally:
        # Shutting down: another Ctrl-C must not cut the stop, or the last lines, short (each stop
        # is bounded: SIGTERM, then SIGKILL after 10 s). The process exits right after.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for s in reversed(services):
            s.stop()
        # Envoy writes what its access log still buffers (up to 200 ms of requests, the last ones
        # before Ctrl-C) as it exits: those lines reach the screen too.
        follow(logs)
        for log in logs:
            log.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render envoy.yaml from the settings")
    r.add_argument("--out", type=Path, help="write here instead of standard output")
    sub.add_parser("run", help="start the relay and wait")
    args = parser.parse_args(argv)
    if args.command == "render":
        try:
            settings = Settings.from_env(os.environ)
            if args.out:
                write_rendered(settings, args.out.parent, name=args.out.name)
                return 0
            files = render_files(settings, BUILD)
            if len(files) > 1:
                raise SettingsError("this configuration needs SDS files beside it (token files): "
                                    "render it with --out FILE")
            sys.stdout.write(files["envoy.yaml"])
        except SettingsError as e:
            print(f"relay: {e}", file=sys.stderr)
            return 2
        return 0
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
