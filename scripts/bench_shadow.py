"""What a challenger in shadow costs the model server (`make bench-shadow`): one `driftwatch serve` with
`promotion.mode: shadow`, champion v1, on loopback; the alias `shadow` set on v2 and removed in turn, so the
same process is measured with and without the shadow, alternately (`--rounds` of each, the machine's noise
spread over both). Each phase: 1-row requests offered at `--rate` req/s (open loop, latency from when due)
and 1-row requests back to back on 4 connections (closed loop). Then every answered inference id is looked up
in the shadow capture. Prints a markdown table (and, with --doc, rewrites the `bench:shadow` section of
docs/benchmarks.md); ~4 min, --quick ~1.

    .venv/bin/python scripts/bench_shadow.py [--quick] [--rate 200] [--rounds 2] [--doc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import (  # noqa: E402 - the sibling script's helpers
    DOC,
    Client,
    Result,
    Server,
    bodies,
    closed_loop,
    configure,
    fmt,
    open_loop,
    register,
    summarize,
)

from ml import capture, registry  # noqa: E402
from ml.config import load_settings  # noqa: E402
from ml.datasets.nycflights13 import load_frame  # noqa: E402
from ml.replay_report import replace_section  # noqa: E402


def _echo(msg: str) -> None:
    print(f"[bench-shadow] {msg}", file=sys.stderr, flush=True)


def _shadow_version(port: int) -> int | None:
    status, body = Client(port, timeout=5).call("GET", "/version")
    return json.loads(body).get("shadow_version") if status == 200 else None


def _wait_shadow(port: int, want: int | None, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while _shadow_version(port) != want:
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"the server's shadow is not {want} after {timeout:.0f} s")
        time.sleep(0.1)


def _ids(results: list[Result]) -> list[str]:
    return [i for r in results if r.status == 200 for i in (r.ids or [])]


def shadowed(s: Any) -> set[str]:
    files = capture.shadow_dir(s).glob("date=*/*.parquet")
    return {i for f in files for i in pq.read_table(f, columns=[capture.INFERENCE_ID]).column(0).to_pylist()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s phases, 1 round: a smoke run")
    p.add_argument("--rate", type=float, default=200.0, help="open-loop rate, requests/s (default 200)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (without, with) the shadow (default 2)")
    p.add_argument("--doc", action="store_true", help=f"rewrite the bench:shadow section of {DOC}")
    p.add_argument("--keep", action="store_true", help="keep the temp home (server log, capture)")
    a = p.parse_args(argv)
    seconds, rounds = (3.0, 1) if a.quick else (15.0, a.rounds)
    home = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    configure(home, argparse.Namespace(poll_seconds=None, flush_seconds=None, omp_threads=None))  # the YAML's
    os.environ["DRIFTWATCH__PROMOTION__MODE"] = "shadow"
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    srv = None
    try:
        s = load_settings("flights")
        _echo(f"home {home}; training and registering v1 and v2")
        frame, _ = load_frame()
        register(s, frame)
        c = registry.client(s)
        c.set_registered_model_alias(s.registered_model, s.serving.alias, "1")
        _, one, _ = bodies(s, frame)
        srv = Server("driftwatch", home, dataset=s.name, uri="")
        _echo(f"ready after {srv.start():.1f} s on port {srv.port}")
        closed_loop(srv.port, one, 3.0, 4)  # warm-up
        phases: dict[str, dict[str, list]] = {
            "without": {"open": [], "closed": []},
            "with": {"open": [], "closed": []},
        }
        cpu: dict[str, list[float]] = {"without": [], "with": []}
        answered_with: list[str] = []
        rates: dict[str, dict[str, list[float]]] = {k: {"open": [], "closed": []} for k in phases}
        for r in range(rounds):
            for label in ("without", "with"):
                if label == "with":
                    c.set_registered_model_alias(s.registered_model, "shadow", "2")
                    _wait_shadow(srv.port, 2)
                else:
                    try:
                        c.delete_registered_model_alias(s.registered_model, "shadow")
                    except Exception:  # noqa: BLE001 - not set yet
                        pass
                    _wait_shadow(srv.port, None)
                c0 = srv.cpu()
                opened = open_loop(srv.port, one, a.rate, seconds)
                closed = closed_loop(srv.port, one, seconds, 4)
                cpu[label].append(
                    (srv.cpu() - c0) / max(1, sum(1 for x in opened + closed if x.status == 200))
                )
                rates[label]["open"].append(summarize(opened)["rps"])
                rates[label]["closed"].append(summarize(closed)["rps"])
                phases[label]["open"] += opened
                phases[label]["closed"] += closed
                if label == "with":
                    answered_with += _ids(opened + closed)
                _echo(f"round {r + 1} {label}: {summarize(opened)} / {summarize(closed)}")
        c.delete_registered_model_alias(s.registered_model, "shadow")
        srv.signal(signal.SIGTERM)  # graceful: the writers flush
        missing = len(set(answered_with) - shadowed(s))
        figs = {k: {m: summarize(v) for m, v in ph.items()} for k, ph in phases.items()}
        for k in figs:  # a rate is per phase (the pooled span would include the other phases)
            for m in ("open", "closed"):
                figs[k][m]["rps"] = sum(rates[k][m]) / len(rates[k][m])
        rows = [
            (f"1 row, offered {a.rate:.0f} req/s: answered req/s", "open", "rps", 1),
            ("1 row, offered: p50 ms", "open", "p50", 1),
            ("1 row, offered: p99 ms", "open", "p99", 1),
            ("1 row, closed loop 4 connections: req/s", "closed", "rps", 1),
            ("1 row, closed loop: p50 / p99 ms", "closed", None, 1),
        ]
        lines = [
            "| metric | without shadow | with shadow |",
            "|---|---:|---:|",
        ]
        for title, mode, key, digits in rows:
            if key is None:
                cell = {k: f"{fmt(figs[k][mode]['p50'])} / {fmt(figs[k][mode]['p99'])}" for k in figs}
            else:
                cell = {k: fmt(figs[k][mode][key], digits) for k in figs}
            lines.append(f"| {title} | {cell['without']} | {cell['with']} |")
        failed = {k: sum(1 for x in ph["open"] + ph["closed"] if x.status != 200) for k, ph in phases.items()}
        lines.append(
            f"| failed requests (open loop: never sent, overload) | {failed['without']} | {failed['with']} |"
        )
        per = {k: f"{1000 * sum(v) / len(v):.1f}" for k, v in cpu.items()}
        lines.append(f"| server CPU ms per answered request | {per['without']} | {per['with']} |")
        lines.append(
            f"| answered with the shadow on: not in the shadow capture | - | {missing} of {len(answered_with)} |"
        )
        table = "\n".join(lines)
        head = (
            f"`scripts/bench_shadow.py`, {time.strftime('%Y-%m-%d')}: one `driftwatch serve` (flights, champion v1, "
            f"shadow v2 set and removed in turn, {rounds} round(s) of {seconds:.0f} s phases each), "
            f"{os.cpu_count()} cores, Python {platform.python_version()}; load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; the load generator shares the cores."
        )
        section = f"{head}\n\n{table}\n"
    finally:
        if srv is not None:
            srv.signal(signal.SIGKILL, wait=10)
        if not a.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(section)
    if a.doc:
        DOC.write_text(replace_section(DOC.read_text(), "shadow", section))
        _echo(f"wrote {DOC}")
    _echo(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
