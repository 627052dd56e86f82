"""The figures: their goals, results.json, the Markdown table and the chart."""

import json
import os
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

__all__ = ["FIGURES", "figure", "met", "machine", "write_json", "table", "write_markdown", "draw"]

HERE = Path(__file__).resolve().parent

# name: (unit, goal, what) — in the order of the README's table; goals from issues 12 and 24.
FIGURES = {
    "signed_in_vs_floor": ("ratio", "≥ 0.80",
                           "req/s of the signed-in page ÷ CherryPy alone (every tool off), same server and pool"),
    "bare_vs_floor": ("ratio", "≥ 0.90", "req/s of the bare page (the app's tools, no session) ÷ the same floor"),
    "signed_in_vs_bare": ("ratio", "≥ 0.90",
                          "req/s of a signed-in page ÷ a bare page, same server and thread pool"),
    "signed_in_vs_cherrypy_ram": ("ratio", "≥ 1.00",
                                  "the signed-in page ÷ the same page behind CherryPy's RAM sessions"),
    "db_reads_per_request": ("reads/request", "≤ 0.01",
                             "database reads per signed-in request, steady state, cache on, replica set"),
    "db_reads_per_request_stream_off": ("reads/request", "= 1.00",
                                        "the same with SESSION_CACHE_SIZE=0 (the fallback, measured)"),
    "db_writes_per_request": ("writes/request", "≤ 0.02", "database writes per signed-in request (steady state)"),
    "signout_visible_p99_ms": ("ms", "≤ 50", "sign out on instance A until instance B refuses the cookie, p99"),
    "stream_events_per_touch": ("events/touch", "≤ 0.01",
                                "change events one instance receives per touch written by another"),
    "upstream_page_vs_unsigned": ("ratio", "≥ 0.85",
                                  "req/s of a page making one pooled upstream call, signed in ÷ without a session"),
    "admin_stats_100k_p50_ms": ("ms", "≤ 150",
                                "what /admin waits for its statistics with 100,000 live sessions, p50"),
    "admin_stats_count_100k_ms": ("ms", "report", "the count behind them: one aggregation over 100,000 sessions"),
    "growth_100k_vs_1k": ("ratio", "≥ 0.95", "signed-in req/s with 100,000 sessions stored ÷ with 1,000"),
    "cache_bytes_per_session": ("bytes", "report", "memory the session cache keeps per session"),
    "pooled_vs_fresh_api": ("ratio", "report", "Social OS client calls/s over HTTPS: pooled ÷ fresh connection"),
    "pooled_vs_fresh_pusher": ("ratio", "report", "Pusher client calls/s over HTTPS: pooled ÷ fresh connection"),
    "credentials_open_16_threads_vs_1": ("ratio", "report",
                                         "µs per credentials open with 16 threads opening at once ÷ alone"),
    "latency_p99_over_p50_c16": ("ratio", "≤ 2.5", "p99 ÷ p50 latency of the signed-in page at concurrency 16"),
}


def figure(name, value):
    unit, goal, _what = FIGURES[name]
    return {"value": round(float(value), 3), "unit": unit, "goal": goal}


def met(entry):
    """True/False against the goal; None for figures that are only reported."""
    m = re.fullmatch(r"([≥≤=])\s*([0-9.]+)", entry["goal"])
    if not m:
        return None
    op, bound = m.group(1), float(m.group(2))
    value = entry["value"]
    if op == "≥":
        return value >= bound
    if op == "≤":
        return value <= bound
    return abs(value - bound) < 0.005


def machine(load_generator):
    """Where the numbers were measured: cores, CPU, Python, database, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    wrk = ""
    if load_generator == "wrk":
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk = (out.stdout or out.stderr).split(" [")[0].strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "database": f"SecantusDB {version('SecantusDB')} (own process), pymongo {version('pymongo')}",
        "server": f"CherryPy {version('CherryPy')}",
        "load": wrk or load_generator,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def write_json(results, path=HERE / "results.json"):
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def _fmt(entry):
    value = entry["value"]
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(results):
    """The README's table: figure, value, goal, met."""
    rows = ["| figure | value | goal | met |", "| --- | ---: | --- | --- |"]
    for name in FIGURES:
        if name not in results:
            continue
        entry = results[name]
        ok = met(entry)
        mark = "—" if ok is None else ("yes" if ok else "**no**")
        rows.append(f"| `{name}` | {_fmt(entry)} | {entry['goal']} | {mark} |")
    return "\n".join(rows)


def write_markdown(results, info, notes=(), path=HERE / "results.md"):
    head = (f"Measured {info['date']} on {info['cores']} cores ({info['cpu']}), Python {info['python']}, "
            f"{info['server']}, {info['database']}; load from {info['load']}.")
    text = head + "\n\n" + table(results) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    path.write_text(text)
    return text


def draw(results, info, path=HERE / "results.png"):
    """A small chart of the ratios against their goals; None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = [
        ("req/s ratios (higher is better)",
         ["signed_in_vs_floor", "bare_vs_floor", "signed_in_vs_bare", "signed_in_vs_cherrypy_ram",
          "upstream_page_vs_unsigned", "growth_100k_vs_1k"]),
        ("database commands per request (lower is better)",
         ["db_reads_per_request", "db_writes_per_request", "db_reads_per_request_stream_off"]),
        ("ms, p99 ÷ p50 (log scale, lower is better)",
         ["latency_p99_over_p50_c16", "signout_visible_p99_ms", "admin_stats_100k_p50_ms"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [4, 4, 3]})
    for ax, (title, names) in zip(axes, groups):
        names = [n for n in names if n in results]
        values = [results[n]["value"] for n in names]
        colours = ["#2e7d32" if met(results[n]) else "#c62828" for n in names]
        bounds = [float(re.sub(r"[^0-9.]", "", results[n]["goal"])) for n in names]
        y = range(len(names))
        ax.barh(list(y), values, color=colours, height=0.55)
        for i, _n in enumerate(names):
            ax.plot([bounds[i], bounds[i]], [i - 0.38, i + 0.38], color="black", linewidth=2)
            label = f" {values[i]:.0f}" if values[i] >= 100 else f" {values[i]:.2f}"
            ax.text(values[i], i, label, va="center", fontsize=8)
        ax.set_yticks(list(y), [n.replace("_", " ") for n in names], fontsize=8)
        ax.invert_yaxis()
        if "log scale" in title:  # 3, 10 ms and 5,000 ms on one axis
            ax.set_xscale("log")
            ax.set_xlim(1, max(values + bounds) * 4)
        else:
            ax.set_xlim(0, max(values + bounds) * 1.3)
        ax.set_title(title, fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"make bench, {info['date']}: {info['cores']} cores, Python {info['python']} "
                 f"(black tick = goal)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
