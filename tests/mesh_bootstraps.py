"""Standalone Envoy bootstraps of what the mesh recipes (scripts/mesh_recipes.py) carry, for
`envoy --mode validate` in the tests: the Istio EnvoyFilter's patches, and the Envoy Gateway
EnvoyPatchPolicy's JSON patches applied to a reconstruction of what Envoy Gateway generates (from
its source code: no control plane runs here), with the OCI code replaced by the local .wasm as the
Istio agent and Envoy Gateway replace it."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mesh_recipes import (  # noqa: E402
    RecipeError,
    LISTENER_TYPE,
    ROUTE_TYPE,
    CLUSTER_TYPE,
    WASM_TYPE,
    HCM_TYPE,
    ROUTER_TYPE,
    FILTER_CONFIG_TYPE,
    HCM,
    ROUTER,
    ISTIO_META_PREFIX,
    eg_names,
    eg_filter_name,
    eg_vm_id,
    WASM,
)


# ---------------------------------------------------------------------------------------------
# JSON Patch (RFC 6902) with EG's JSONPath selection, to rebuild what EG would serve


def pointer_parts(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise RecipeError(f"a JSON pointer starts with '/', got {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def json_path_pointers(document, json_path: str) -> list[str]:
    """The pointers EG's jsonPath selects, for the one form the recipes use:
    `$..<list>[?(@.name=='<name>')]` (every element named so of every list so called), optionally
    with `&& @.<dotted path>==true` (only those whose field there is true)."""
    m = re.fullmatch(r"\$\.\.([A-Za-z_][A-Za-z0-9_]*)\[\?\(@\.name\s*==\s*'([^']*)'"
                     r"(?:\s*&&\s*@\.([A-Za-z0-9_.]+)\s*==\s*true)?\)\]", json_path)
    if not m:
        raise RecipeError(f"unsupported jsonPath {json_path!r}")
    key, wanted, required = m.groups()

    def selected(item) -> bool:
        if not isinstance(item, dict) or item.get("name") != wanted:
            return False
        value = item
        for part in (required.split(".") if required else []):
            value = value.get(part) if isinstance(value, dict) else None
        return value is True if required else True

    out: list[str] = []

    def walk(node, at: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                here = f"{at}/{k.replace('~', '~0').replace('/', '~1')}"
                if k == key and isinstance(v, list):
                    out.extend(f"{here}/{i}" for i, item in enumerate(v) if selected(item))
                walk(v, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{at}/{i}")

    walk(document, "")
    return out


def apply_operation(document, operation: Mapping):
    """One EnvoyPatchPolicy operation (add, replace, remove; add creates missing parents, as EG
    sets EnsurePathExistsOnAdd). Raises RecipeError where EG would report the patch failed."""
    op = operation["op"]
    if op not in ("add", "replace", "remove"):
        raise RecipeError(f"unsupported op {op!r}")
    path = operation.get("path") or ""
    if operation.get("jsonPath"):
        pointers = [p + path for p in json_path_pointers(document, operation["jsonPath"])]
        if not pointers:
            raise RecipeError(f"jsonPath {operation['jsonPath']} selects nothing")
    else:
        pointers = [path]
    for pointer in pointers:
        parts = pointer_parts(pointer)
        if not parts:
            raise RecipeError("an operation on the whole resource")
        parent = document
        for i, part in enumerate(parts[:-1]):
            if isinstance(parent, list):
                parent = parent[int(part)]
            elif part in parent:
                parent = parent[part]
            elif op == "add":
                parent[part] = [] if parts[i + 1] in ("-", "0") else {}
                parent = parent[part]
            else:
                raise RecipeError(f"{op} {pointer}: no {part!r}")
        last = parts[-1]
        value = copy.deepcopy(operation.get("value"))
        if isinstance(parent, list):
            if last == "-":
                if op != "add":
                    raise RecipeError(f"{op} {pointer}")
                parent.append(value)
                continue
            index = int(last)
            if op == "add":
                if index > len(parent):
                    raise RecipeError(f"add {pointer}: index out of range")
                parent.insert(index, value)
            elif index >= len(parent):
                raise RecipeError(f"{op} {pointer}: index out of range")
            elif op == "replace":
                parent[index] = value
            else:
                del parent[index]
        else:
            if op in ("replace", "remove") and last not in parent:
                raise RecipeError(f"{op} {pointer}: no {last!r}")
            if op == "remove":
                del parent[last]
            else:
                parent[last] = value
    return document


# ---------------------------------------------------------------------------------------------
# Standalone bootstraps of what each recipe carries, for `envoy --mode validate`


def local_code(wasm: Mapping, wasm_file: Path) -> dict:
    """The Wasm filter config as Envoy gets it: the code a local file (as the Istio agent rewrites
    it, or as Envoy Gateway's cache serves it), the agent's ISTIO_META_* keys stripped."""
    wasm = copy.deepcopy(dict(wasm))
    vm = wasm["config"]["vm_config"]
    vm["code"] = {"local": {"filename": str(wasm_file)}}
    env = vm.get("environment_variables")
    if env is not None:
        values = {k: v for k, v in env.get("key_values", {}).items() if not k.startswith(ISTIO_META_PREFIX)}
        if values:
            env["key_values"] = values
        else:
            env.pop("key_values", None)
            if not env.get("host_env_keys"):
                del vm["environment_variables"]
    return wasm


def merge(into: dict, value: Mapping) -> None:
    """Protobuf merge, as Istio's MERGE: messages merged, lists appended, scalars replaced."""
    for k, v in value.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            merge(into[k], v)
        elif isinstance(v, list) and isinstance(into.get(k), list):
            into[k].extend(copy.deepcopy(v))
        else:
            into[k] = copy.deepcopy(v)


def bootstrap(listener: dict, clusters: list[dict]) -> dict:
    return {
        # File-based SDS (the token files) needs a node, as both proxies have.
        "node": {"id": "mesh-recipe", "cluster": "healthlake-relay"},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def istio_bootstrap(envoy_filter: Mapping, wasm_file: Path) -> dict:
    """What an Istio gateway with no VirtualService serves once the EnvoyFilter applies: its
    listener on the port, the route configuration http.<port> with Istio's blackhole virtual
    host and the relay's, the Wasm filter (from ECDS) before the router, the relay's clusters."""
    patches = envoy_filter["spec"]["configPatches"]

    def of(apply_to: str) -> list[dict]:
        return [p for p in patches if p["applyTo"] == apply_to]

    http_filter = of("HTTP_FILTER")[0]
    port = http_filter["match"]["listener"]["portNumber"]
    ecds = {p["patch"]["value"]["name"]: p["patch"]["value"] for p in of("EXTENSION_CONFIG")}
    referred = http_filter["patch"]["value"]
    extension = ecds[referred["name"]]
    if extension["typed_config"]["@type"] not in referred["config_discovery"]["type_urls"]:
        raise RecipeError("the HTTP filter's config_discovery does not accept the extension's type")
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": f"outbound_0.0.0.0_{port}",
        "route_config": {
            "name": f"http.{port}",
            "ignore_port_in_host_matching": True,
            "validate_clusters": False,
            "virtual_hosts": [{"name": f"blackhole:{port}", "domains": ["*"], "routes": []}],
        },
        "http_filters": [
            {"name": referred["name"], "typed_config": local_code(extension["typed_config"], wasm_file)},
            {"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    listener: dict = {
        "name": f"0.0.0.0_{port}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
    }
    for p in of("NETWORK_FILTER"):
        merge(hcm, {k: v for k, v in p["patch"]["value"]["typed_config"].items() if k != "@type"})
    for p in of("LISTENER"):
        merge(listener, p["patch"]["value"])
    for p in of("VIRTUAL_HOST"):
        hcm["route_config"]["virtual_hosts"].append(copy.deepcopy(p["patch"]["value"]))
    return bootstrap(listener, [copy.deepcopy(p["patch"]["value"]) for p in of("CLUSTER")])


def envoy_gateway_generated(docs: list[dict], wasm_file: Path, scheme: str = "v1") -> tuple[dict, dict]:
    """(listener, route configuration) as Envoy Gateway generates them for the recipe's Gateway,
    HTTPRoute and EnvoyExtensionPolicy, before any patch (names and the Wasm filter's shape from
    EG's translator; the code a local file)."""
    kinds = {d["kind"]: d for d in docs}
    gateway, route, eep = kinds["Gateway"], kinds["HTTPRoute"], kinds["EnvoyExtensionPolicy"]
    ns, gw = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
    gw_listener = gateway["spec"]["listeners"][0]
    port = gw_listener["port"]
    listener_name, route_name = eg_names(ns, gw, gw_listener["name"], port, scheme)
    policy = eep["metadata"]["name"]
    filters = []
    per_route = {}
    for index, spec in enumerate(eep["spec"]["wasm"]):
        vm: dict = {"vm_id": eg_vm_id(ns, policy, index), "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm_file)}}}
        if spec.get("env", {}).get("hostKeys"):
            vm["environment_variables"] = {"host_env_keys": list(spec["env"]["hostKeys"])}
        config: dict = {"name": spec.get("name", eg_vm_id(ns, policy, index)), "vm_config": vm,
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                          "value": json.dumps(spec.get("config", ""), separators=(",", ":"))}}
        if spec.get("rootID"):
            config["root_id"] = spec["rootID"]
        if spec.get("failOpen"):
            config["fail_open"] = True
        name = eg_filter_name(ns, policy, index)
        filters.append({"name": name, "disabled": True, "typed_config": {"@type": WASM_TYPE, "config": config}})
        per_route[name] = {"@type": FILTER_CONFIG_TYPE, "config": {}}
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": f"http-{port}",
        "use_remote_address": True,
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        # EG's default access log (text to stdout), which the recipe appends to.
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/stdout"}}],
        "rds": {"route_config_name": route_name, "config_source": {"ads": {}, "resource_api_version": "V3"}},
        "http_filters": filters + [{"name": ROUTER, "typed_config": {"@type": ROUTER_TYPE}}],
    }
    listener = {
        "name": listener_name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 32768,
        "default_filter_chain": {"name": route_name, "filters": [{"name": HCM, "typed_config": hcm}]},
    }
    # An HTTPRoute rule without a backend: EG answers it directly (500).
    rule_routes = [{"name": f"httproute/{ns}/{route['metadata']['name']}/rule/0/match/0/*",
                    "match": {"prefix": "/"}, "direct_response": {"status": 500},
                    "typed_per_filter_config": per_route}]
    route_config = {"name": route_name, "ignore_port_in_host_matching": True,
                    "virtual_hosts": [{"name": f"{listener_name}/*" if scheme == "v1" else "*",
                                       "domains": ["*"], "routes": rule_routes}]}
    return listener, route_config


def patch_scheme(epp: Mapping) -> str:
    """The xDS name scheme an EnvoyPatchPolicy was written for (v2 names listeners tcp-<port>)."""
    names = {p["name"] for p in epp["spec"]["jsonPatches"] if p["type"] == LISTENER_TYPE}
    return "v2" if names and all(re.fullmatch(r"tcp-[0-9]+", n) for n in names) else "v1"


def envoy_gateway_bootstrap(docs: list[dict], wasm_file: Path, scheme: str | None = None,
                            patched: bool = True, refused: frozenset[int] = frozenset()) -> dict:
    """What Envoy Gateway serves for the recipe: its generated listener and route configuration
    (xDS names of `scheme`, by default the one the EnvoyPatchPolicy was written for), the
    EnvoyPatchPolicy's operations applied as EG applies them (`patched` False: EG without
    EnvoyPatchPolicy enabled), the route configuration inlined (RDS needs a control plane).
    `refused`: the indexes of patches EG refuses (e.g. an EG whose Envoy API lacks a field); EG
    then goes on with the others, skipping those that fail in turn, as it does. Without it, any
    patch that fails is an error."""
    epp = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    listener, route_config = envoy_gateway_generated(docs, wasm_file, scheme or patch_scheme(epp))
    resources = {(LISTENER_TYPE, listener["name"]): listener, (ROUTE_TYPE, route_config["name"]): route_config}
    clusters = []
    if patched:
        for index, patch in enumerate(epp["spec"]["jsonPatches"]):
            if index in refused:
                continue
            operation = patch["operation"]
            if operation["op"] == "add" and not operation.get("path") and not operation.get("jsonPath"):
                if patch["type"] != CLUSTER_TYPE:
                    raise RecipeError(f"adding a whole {patch['type']}")
                clusters.append(copy.deepcopy(operation["value"]))
                continue
            target = resources.get((patch["type"], patch["name"]))
            if target is None:
                raise RecipeError(f"EG would report {patch['type']} {patch['name']} not found")
            try:
                apply_operation(target, operation)
            except RecipeError:
                if not refused:
                    raise
    hcm = listener["default_filter_chain"]["filters"][0]["typed_config"]
    del hcm["rds"]
    hcm["route_config"] = route_config
    return bootstrap(listener, clusters)


def embedded_bootstraps(docs: list[dict], wasm_file: Path = WASM) -> list[tuple[str, dict]]:
    """For each recipe among `docs` (an Istio EnvoyFilter, an Envoy Gateway EnvoyPatchPolicy), a
    standalone Envoy bootstrap holding exactly the Envoy configuration it carries, by name."""
    out = []
    for doc in docs:
        if doc["kind"] == "EnvoyFilter":
            out.append((f"istio/{doc['metadata']['name']}", istio_bootstrap(doc, wasm_file)))
        elif doc["kind"] == "EnvoyPatchPolicy":
            out.append((f"envoy-gateway/{doc['metadata']['name']}",
                        envoy_gateway_bootstrap(docs, wasm_file)))
    if not out:
        raise RecipeError("no EnvoyFilter or EnvoyPatchPolicy among the documents")
    return out
