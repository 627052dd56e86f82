"""HTTP load: ``wrk`` with a Lua script, or a small threaded Python generator without it.

``run(url, seconds, connections, cookies=...)`` returns a ``Load``: requests
per second, latency percentiles, and how many answers were not 200 (a
signed-in page that redirected to /login would be fast and wrong: it is
counted and the run refused). Each wrk thread takes its own slice of the
cookies, one per request in turn, so no two requests in flight share a
session (CherryPy's RAM sessions lock per session).
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Load", "run", "have_wrk", "ensure_wrk", "generator_name"]

LUA = r"""
-- args: cookie file, cookie name, number of wrk threads
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  i = 0
  reqs = {}
  local all = {}
  if args[1] and args[1] ~= "" then
    for line in io.lines(args[1]) do
      if line ~= "" then table.insert(all, line) end
    end
  end
  local nthreads = tonumber(args[3]) or 1
  local per = math.floor(#all / nthreads)
  if per < 1 then per = #all end
  local first = ((id - 1) * per) % math.max(#all, 1)
  for k = 1, per do
    local cookie = all[((first + k - 1) % #all) + 1]
    table.insert(reqs, wrk.format(nil, nil, {["Cookie"] = args[2] .. "=" .. cookie}))
  end
end

function request()
  if #reqs == 0 then return wrk.request() end
  i = i + 1
  return reqs[(i % #reqs) + 1]
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local non200 = 0
  for _, t in ipairs(threads) do non200 = non200 + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non200": %d, "socket_errors": %d, ' ..
    '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, non200,
    e.connect + e.read + e.write + e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    non200: int
    socket_errors: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self):
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk():
    return shutil.which("wrk") is not None


def ensure_wrk():
    """wrk from Debian's packages when missing (as root); False when it can't be had."""
    if have_wrk():
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk)...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False, timeout=600)
    return have_wrk()


def generator_name():
    return "wrk" if have_wrk() else "python threads (wrk not installed)"


def run(url, seconds=6, connections=16, cookies=(), cookie_name="session", threads=2):
    """Load ``url`` for ``seconds`` with ``connections`` keep-alive connections."""
    if have_wrk():
        return _wrk(url, seconds, connections, list(cookies), cookie_name, threads)
    return _python(url, seconds, connections, list(cookies), cookie_name)


def _wrk(url, seconds, connections, cookies, cookie_name, threads):
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(LUA)
        cookie_file = Path(tmp) / "cookies"
        cookie_file.write_text("\n".join(cookies) + "\n")  # a file, not argv: cookies are secrets
        args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                "--timeout", "10s", "-s", str(script), url, "--",
                str(cookie_file) if cookies else "", cookie_name, str(threads)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            d = json.loads(line[len("BENCH_JSON "):])
            return Load(requests=d["requests"], seconds=d["duration_us"] / 1e6, non200=d["non200"],
                        socket_errors=d["socket_errors"], mean_ms=d["mean_us"] / 1000,
                        p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000)
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr.strip()[-500:]}")


def _python(url, seconds, connections, cookies, cookie_name):
    """Fallback: one thread per connection, keep-alive http.client. Slower than wrk
    (it shares the machine's cores and the GIL), so absolute rates are lower; ratios hold."""
    parts = urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    latencies, lock = [], threading.Lock()
    counts = {"non200": 0, "errors": 0}
    deadline = time.monotonic() + seconds
    per = max(1, len(cookies) // connections) if cookies else 0

    def worker(n):
        mine = cookies[n * per:(n + 1) * per] or cookies[:1]
        conn = HTTPConnection(parts.hostname, parts.port, timeout=10)
        local, bad, errors, i = [], 0, 0, 0
        while time.monotonic() < deadline:
            headers = {"Cookie": f"{cookie_name}={mine[i % len(mine)]}"} if mine else {}
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
            except OSError:
                errors += 1
                conn.close()
                conn = HTTPConnection(parts.hostname, parts.port, timeout=10)
                continue
            local.append(time.perf_counter() - t0)
            bad += response.status != 200
        conn.close()
        with lock:
            latencies.extend(local)
            counts["non200"] += bad
            counts["errors"] += errors

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000 if latencies else 0.0

    return Load(requests=len(latencies), seconds=elapsed, non200=counts["non200"],
                socket_errors=counts["errors"],
                mean_ms=sum(latencies) / len(latencies) * 1000 if latencies else 0.0,
                p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99))
