"""Row 4: requests/s of GET /jobs/{id} and POST /jobs against a trivial FastAPI app.

Both apps run in one uvicorn process each, started the same way, on this
machine, in the same run. The load generator is wrk when it is on PATH (one
thread, keep-alive connections), else a pure-Python asyncio client with as
many concurrent keep-alive connections. No worker runs: submitted jobs just queue, and the
run's Redis is flushed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.common import Result, Settings, verdict
from bench.jobs import job_bodies
from bench.stack import BenchError, Stack

GET_TARGET = 0.8
POST_TARGET = 0.3
WARMUP_S = 2


@dataclass
class Load:
    requests_per_s: float
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests_per_s": round(self.requests_per_s, 1),
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def measure_api(stack: Stack, cfg: Settings) -> Result:
    body = job_bodies(1)[0]
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        response = http.post("/jobs", json=body)
        if response.status_code != 202:
            raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
        job_url = f"/jobs/{response.json()['id']}"
    trivial_url, trivial = stack.start_uvicorn("trivial", "bench.trivial_app:app")
    tool = "wrk" if shutil.which("wrk") else "python (asyncio streams)"
    duration, conns = cfg.api_duration_s, cfg.api_connections
    try:
        runs = {
            "trivial GET /ok": hammer(trivial_url + "/ok", "GET", None, conns, duration),
            "GET /jobs/{id}": hammer(stack.api_url + job_url, "GET", None, conns, duration),
            "trivial POST /ok": hammer(trivial_url + "/ok", "POST", body, conns, duration),
            "POST /jobs": hammer(stack.api_url + "/jobs", "POST", body, conns, duration),
        }
        if not cfg.quick:
            # Diagnostic: darkroom's own app floor (sync handler, middleware, no Redis).
            runs["darkroom GET /healthz"] = hammer(
                stack.api_url + "/healthz", "GET", None, conns, duration
            )
    finally:
        stack.stop_child(trivial)
        stack.flush()
    for name, load in runs.items():
        if load.errors:
            raise BenchError(f"{name}: {load.errors} failed requests of {load.requests}")
    get_ratio = runs["GET /jobs/{id}"].requests_per_s / runs["trivial GET /ok"].requests_per_s
    post_ratio = runs["POST /jobs"].requests_per_s / runs["trivial POST /ok"].requests_per_s
    rate = {name: load.requests_per_s for name, load in runs.items()}
    notes = [
        f"load: {tool}, {conns} connections, {duration:g} s per endpoint after "
        f"{WARMUP_S:g} s warm-up; one uvicorn process per app"
    ]
    if tool != "wrk":
        notes.append(
            "the pure-Python client may saturate its core before the trivial app does: "
            "ratios are then optimistic (install wrk for a harder load)"
        )
    if "darkroom GET /healthz" in rate:
        notes.append(
            f"darkroom GET /healthz (async handler, no Redis): {rate['darkroom GET /healthz']:.0f} "
            "req/s - the app's floor before any Redis work"
        )
    return Result(
        name="api",
        measured=(
            f"GET {rate['GET /jobs/{id}']:.0f} vs {rate['trivial GET /ok']:.0f} req/s = "
            f"{get_ratio:.2f}; POST {rate['POST /jobs']:.0f} vs "
            f"{rate['trivial POST /ok']:.0f} req/s = {post_ratio:.2f}"
        ),
        target=f"GET >= {GET_TARGET}, POST >= {POST_TARGET}",
        status=verdict(get_ratio >= GET_TARGET and post_ratio >= POST_TARGET),
        details={
            "tool": tool,
            "connections": conns,
            "duration_s": duration,
            "get_ratio": round(get_ratio, 4),
            "post_ratio": round(post_ratio, 4),
            "get_pass": get_ratio >= GET_TARGET,
            "post_pass": post_ratio >= POST_TARGET,
            "runs": {name: load.to_json() for name, load in runs.items()},
        },
        notes=notes,
    )


def hammer(
    url: str, method: str, body: dict[str, Any] | None, connections: int, duration_s: float
) -> Load:
    """Warm up, then load `url` for `duration_s` with `connections` concurrent connections."""
    run = _wrk if shutil.which("wrk") else _python
    run(url, method, body, connections, min(WARMUP_S, duration_s))
    return run(url, method, body, connections, duration_s)


def _wrk(
    url: str, method: str, body: dict[str, Any] | None, connections: int, duration_s: float
) -> Load:
    with tempfile.TemporaryDirectory() as tmp:
        seconds = max(1, math.ceil(duration_s))  # wrk takes whole seconds only
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if method != "GET":
            script = Path(tmp) / "request.lua"
            script.write_text(
                f'wrk.method = "{method}"\n'
                f"wrk.body = {_lua_string(json.dumps(body or {}))}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            argv += ["-s", str(script)]
        done = subprocess.run(
            [*argv, url], capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        raise BenchError(f"wrk failed ({done.returncode}): {out}\n{done.stderr}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(found.group(1))
    if found := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(x) for x in found.groups())
    return Load(
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        requests=requests,
        errors=errors,
        p50_ms=_wrk_latency(out, "50%"),
        p99_ms=_wrk_latency(out, "99%"),
    )


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk_latency(out: str, label: str) -> float | None:
    found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not found:
        return None
    value, unit = float(found.group(1)), found.group(2)
    return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def _python(
    url: str, method: str, body: dict[str, Any] | None, connections: int, duration_s: float
) -> Load:
    try:
        import uvloop  # uvicorn[standard] brings it; twice the requests per core

        return uvloop.run(_python_load(url, method, body, connections, duration_s))
    except ImportError:
        return asyncio.run(_python_load(url, method, body, connections, duration_s))


async def _python_load(
    url: str, method: str, body: dict[str, Any] | None, connections: int, duration_s: float
) -> Load:
    """Keep-alive HTTP/1.1 over raw asyncio streams, `connections` at once.

    Not httpx: its AsyncClient tops out near 400 requests/s on one core here,
    far below what the trivial app serves, so every ratio would read ~1.0.
    """
    parsed = urlsplit(url)
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {parsed.path or '/'} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    request = (head + "\r\n").encode() + payload
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    stop = start + duration_s

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        try:
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                if status >= 400:
                    errors += 1
                latencies.append(time.perf_counter() - sent)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    if not latencies:
        raise BenchError(f"no request to {url} completed")
    return Load(
        requests_per_s=len(latencies) / elapsed,
        requests=len(latencies),
        errors=errors,
        p50_ms=round(latencies[len(latencies) // 2] * 1000, 3),
        p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked body); return its status code."""
    header = await reader.readuntil(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
    }
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip() or b"0", 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status
