"""Benchmark `ml.drift.detect_drift` on 10k / 100k / 1M reference rows x 30 features.

Synthetic data from the real flights lake: the reference resamples rows of January-March; the drifted batch
(1,000 rows, a daily batch) resamples June-July rows, stretches `distance` by 1.5 and relabels 40% of the
carriers; the same-distribution batch resamples January-March rows like the reference. Fourteen derived
numeric columns (scaled copies of the real ones plus noise) widen the 16 flights features to 30. The champion's
scores are synthetic too, so prediction drift and the quality section run as in the pipeline.

Each size runs in a fresh subprocess, so its peak RSS is its own. The 1M run then checks that sampling the
reference (`ml.drift.MAX_REFERENCE_ROWS`) leaves the decision unchanged: detect_drift again without sampling,
and the per-column drift scores on 20 differently seeded samples against the full reference (with Evidently's
own stat tests), which bounds the error of the drift share.

    python scripts/bench_drift.py                              # print the markdown
    python scripts/bench_drift.py --write docs/benchmarks.md   # also replace its "## Drift check" section

Needs the flights partitions in the lake (`DRIFTWATCH_LAKE`, default var/lake). Takes 2-4 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTION = "## Drift check"
SIZES = (10_000, 100_000, 1_000_000)
CURRENT_ROWS = 1_000
DERIVED = 14
ERROR_SEEDS = 10
DAY = dt.date(2013, 7, 15)
NO_SAMPLING = 10**12


def synthesize(rows: int, current_rows: int = CURRENT_ROWS):
    """(settings with 30 features, reference, drifted batch, same-distribution batch, scores...)."""
    import numpy as np

    from ml.config import load_settings
    from ml.data import daterange, read_days

    settings = load_settings("flights")
    winter = read_days(settings, daterange(dt.date(2013, 1, 1), dt.date(2013, 3, 31)))
    summer = read_days(settings, daterange(dt.date(2013, 6, 1), dt.date(2013, 7, 31)))
    if winter.empty or summer.empty:
        raise SystemExit(
            f"no flights partitions under {settings.lake_dir}: run `driftwatch prepare flights` first"
        )
    rng = np.random.default_rng(0)
    reference = winter.iloc[rng.integers(0, len(winter), rows)].reset_index(drop=True)
    same = winter.iloc[rng.integers(0, len(winter), current_rows)].reset_index(drop=True)
    drifted = summer.iloc[rng.integers(0, len(summer), current_rows)].reset_index(drop=True)
    drifted["distance"] = drifted["distance"] * 1.5
    drifted["carrier"] = drifted["carrier"].where(rng.random(current_rows) > 0.4, "ZZ")
    derived = []
    for i in range(DERIVED):
        source = settings.numeric[i % len(settings.numeric)]
        name = f"x{i:02d}_{source}"
        derived.append(name)
        for frame in (reference, same, drifted):
            frame[name] = frame[source].astype("float64") * (1 + i / 10) + rng.normal(size=len(frame))
    settings = settings.with_overrides(numeric=(*settings.numeric, *derived))
    scores = {
        "reference": rng.beta(2, 6, rows),
        "same": rng.beta(2, 6, current_rows),
        "drifted": np.clip(rng.beta(2, 6, current_rows) + 0.1, 0, 1),
    }
    return settings, reference, same, drifted, scores


def _detect(settings, reference, current, ref_scores, cur_scores, tmp: str, max_rows: int | None = None):
    """One timed detect_drift call: (result, wall s, CPU s, HTML-writing s, HTML MB). The HTML is written by
    ml.report_html (Evidently's page rendered, its data escaped), which stands in for Snapshot.save_html."""
    from ml import drift, report_html

    saved = drift.MAX_REFERENCE_ROWS
    if max_rows is not None:
        drift.MAX_REFERENCE_ROWS = max_rows
    html_seconds: list[float] = []
    save_html = report_html.write_evidently_report

    def timed_save_html(snapshot, filename):
        started = time.perf_counter()
        save_html(snapshot, filename)
        html_seconds.append(time.perf_counter() - started)

    report_html.write_evidently_report = timed_save_html
    path = Path(tempfile.mkdtemp(dir=tmp)) / "drift.html"
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        result = drift.detect_drift(
            settings,
            DAY,
            current=current,
            reference=reference,
            current_scores=cur_scores,
            reference_scores=ref_scores,
            champion_holdout={"roc_auc": 0.75},
            report_path=path,
            # with the full Evidently report, as a retrain day or a first view renders it; the daily step
            # alone (numbers, no report) is in docs/benchmarks.md, "The drift step"
            render=True,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        report_html.write_evidently_report = save_html
        drift.MAX_REFERENCE_ROWS = saved
    return result, wall, cpu, html_seconds[0], path.stat().st_size / 1e6


def _summary(result: dict, wall: float, cpu: float, html_s: float, html_mb: float) -> dict:
    return {
        "rows_reference": result["rows_reference"],
        "rows_current": result["rows_current"],
        "columns": result["n_features"],
        "seconds": wall,
        "cpu_seconds": cpu,
        "html_seconds": html_s,
        "html_mb": html_mb,
        "drift_share": result["drift_share"],
        "dataset_drift": result["dataset_drift"],
        "drifted_columns": result["drifted_columns"],
    }


def _scores_by_seed(settings, result: dict, reference, current, seeds) -> dict:
    """Evidently's stat test per column on the full reference and on seeded samples of MAX_REFERENCE_ROWS."""
    import numpy as np
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    from ml import drift

    ref = drift._model_columns(settings, reference, None)
    cur = drift._model_columns(settings, current, None)
    samples = {
        seed: np.sort(np.random.default_rng(seed).choice(len(ref), drift.MAX_REFERENCE_ROWS, replace=False))
        for seed in seeds
    }
    out = {}
    for col, spec in result["columns"].items():
        if spec["score"] is None:
            continue
        kind = ColumnType.Categorical if col in settings.categorical else ColumnType.Numerical
        c = cur[col].dropna()
        r = ref[col].dropna()
        test = get_stattest(r, c, kind, spec["method"])
        full = test(r, c, kind, spec["threshold"])
        by_seed = {}
        for seed, keep in samples.items():
            s = ref[col].iloc[keep].dropna()
            by_seed[seed] = test(s, c, kind, spec["threshold"])
        out[col] = {
            "threshold": spec["threshold"],
            "full": full.drift_score,
            "full_drifted": bool(full.drifted),
            "seeds": {seed: (t.drift_score, bool(t.drifted)) for seed, t in by_seed.items()},
        }
    return out


def _error_bound(per_column: dict, drift_share_threshold: float) -> dict:
    """Which columns sampling could flip, and what that does to the drift share and the decision."""
    n = len(per_column)
    delta = {c: max(abs(s - v["full"]) for s, _ in v["seeds"].values()) for c, v in per_column.items()}
    worst = max(delta, key=delta.__getitem__)
    at_risk = sorted(c for c, v in per_column.items() if abs(v["full"] - v["threshold"]) <= 2 * delta[c])
    seeds = next(iter(per_column.values()))["seeds"].keys()
    shares = [sum(v["seeds"][seed][1] for v in per_column.values()) / n for seed in seeds]
    full_share = sum(v["full_drifted"] for v in per_column.values()) / n
    near = [delta[c] for c, v in per_column.items() if v["full"] < 2 * v["threshold"]]
    return {
        "max_score_delta": delta[worst],
        "max_score_delta_column": worst,
        "max_score_delta_near_threshold": max(near) if near else None,
        "columns_at_risk": at_risk,
        "share_bound": len(at_risk) / n,
        "full_share": full_share,
        "full_drifted": sorted(c for c, v in per_column.items() if v["full_drifted"]),
        "sample_shares": [min(shares), max(shares)],
        "sample_decisions": sorted({share >= drift_share_threshold for share in shares}),
        "full_decision": full_share >= drift_share_threshold,
    }


def child(rows: int, check: bool) -> dict:
    import resource

    settings, reference, same, drifted, scores = synthesize(rows)
    with tempfile.TemporaryDirectory() as tmp:
        timed = _detect(settings, reference, drifted, scores["reference"], scores["drifted"], tmp)
        out: dict = {"run": _summary(*timed)}
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not check:
            return out
        from ml import drift

        seeds = [drift.REFERENCE_SAMPLE_SEED, *range(1, ERROR_SEEDS)]
        # the drifted batch: detect_drift again on the full reference (the slow path sampling avoids)
        full = _detect(settings, reference, drifted, scores["reference"], scores["drifted"], tmp, NO_SAMPLING)
        per_column = _scores_by_seed(settings, timed[0], reference, drifted, seeds)
        # the stat tests replayed here must reproduce detect_drift's own full-reference scores
        replay = max(abs(v["full"] - full[0]["columns"][c]["score"]) for c, v in per_column.items())
        out["checks"] = {
            "drifted": {
                "sampled": _summary(*timed),
                "full": _summary(*full),
                "bound": _error_bound(per_column, settings.thresholds.drift_share),
            }
        }
        # the same-distribution batch: full-reference decisions from the (exact) replay, to save a slow run
        sampled = _detect(settings, reference, same, scores["reference"], scores["same"], tmp)
        per_column = _scores_by_seed(settings, sampled[0], reference, same, seeds)
        bound = _error_bound(per_column, settings.thresholds.drift_share)
        out["checks"]["same distribution"] = {
            "sampled": _summary(*sampled),
            "full": {
                "drift_share": bound["full_share"],
                "dataset_drift": bound["full_decision"],
                "drifted_columns": bound["full_drifted"],
            },
            "bound": bound,
        }
        out["replay_error"] = replay
        out["max_reference_rows"] = drift.MAX_REFERENCE_ROWS
        out["drift_share_threshold"] = settings.thresholds.drift_share
    return out


def _run_child(rows: int, check: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(rows)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark child for {rows} rows failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown(runs: list[dict], started: float, load: tuple[float, float, float]) -> str:
    check = next(r for r in runs if "checks" in r)
    cap = check["max_reference_rows"]
    lines = [
        SECTION,
        "",
        f"`scripts/bench_drift.py`, {dt.date.today().isoformat()}: `ml.drift.detect_drift` (Evidently "
        f"{_evidently_version()}, DataDriftPreset + ValueDrift on the scores + ClassificationPreset, HTML "
        f"written) on {os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}. Load average at start {load[0]:.1f} (the machine was shared, so "
        "wall seconds are noisy; CPU seconds are the steadier number). Reference: flights rows of January-March "
        "resampled to N rows; batch: 1,000 June-July rows with `distance` x1.5 and 40% of carriers relabelled; "
        "14 derived numeric columns bring the features to 30. Seconds are detect_drift end to end (without "
        f"the one-off ~5 s Evidently import); references above {cap:,} rows are sampled to {cap:,} "
        "(`MAX_REFERENCE_ROWS`).",
        "",
        "| reference rows | batch rows | columns | seconds | CPU s | of which save_html s | HTML MB "
        "| drift_share | dataset_drift | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in runs:
        s = r["run"]
        lines.append(
            f"| {s['rows_reference']:,} | {s['rows_current']:,} | {s['columns']} | {s['seconds']:.1f} "
            f"| {s['cpu_seconds']:.1f} | {s['html_seconds']:.2f} | {s['html_mb']:.1f} | {s['drift_share']:.3f} "
            f"| {_yes(s['dataset_drift'])} | {r['peak_rss_mb']:.0f} |"
        )
    full = check["checks"]["drifted"]["full"]
    lines.append(
        f"| {full['rows_reference']:,} (no sampling) | {full['rows_current']:,} | {full['columns']} "
        f"| {full['seconds']:.1f} | {full['cpu_seconds']:.1f} | {full['html_seconds']:.2f} | {full['html_mb']:.1f} "
        f"| {full['drift_share']:.3f} | {_yes(full['dataset_drift'])} | (same process) |"
    )
    lines += [
        "",
        "The HTML is rendered during `Report.run` (plotly figures per column); writing it (`save_html`) is a "
        "small part, and its size does not grow with rows (Evidently aggregates the distributions).",
        "",
        f"### Sampling the reference (1M rows -> {cap:,})",
        "",
        "| batch | drift_share sampled / full | dataset_drift sampled / full | same drifted columns "
        f"| largest score change over {ERROR_SEEDS} seeds | largest change, columns below 2x threshold "
        "| columns at risk | share range over seeds | share error bound |",
        "|---|---|---|---|---|---:|---|---|---:|",
    ]
    for name, c in check["checks"].items():
        b = c["bound"]
        near = b["max_score_delta_near_threshold"]
        lines.append(
            f"| {name} | {c['sampled']['drift_share']:.3f} / {c['full']['drift_share']:.3f} "
            f"| {_yes(c['sampled']['dataset_drift'])} / {_yes(c['full']['dataset_drift'])} "
            f"| {_yes(c['sampled']['drifted_columns'] == c['full']['drifted_columns'])} "
            f"| {b['max_score_delta']:.4f} (`{b['max_score_delta_column']}`) "
            f"| {'-' if near is None else f'{near:.4f}'} "
            f"| {', '.join(f'`{col}`' for col in b['columns_at_risk']) or 'none'} "
            f"| {b['sample_shares'][0]:.3f}-{b['sample_shares'][1]:.3f} | {b['share_bound']:.3f} |"
        )
    lines += [
        "",
        f"How to read it. The seeds are detect_drift's own sampling seed plus {ERROR_SEEDS - 1} others; each "
        "column's score is recomputed on every sample with the same Evidently stat test and the same batch (this "
        f"replay reproduces detect_drift's full-reference scores to {check['replay_error']:.1e}; the "
        "same-distribution batch's full-reference figures come from it). A column's decision can change only "
        "if its full-reference score lies within its sampling error of its threshold: columns within twice "
        "their largest observed change are counted as at risk, and the drift share can move by at most "
        "(columns at risk) / (columns), the share error bound. The dataset decision changes only if the share "
        f"lies within that bound of `thresholds.drift_share` ({check['drift_share_threshold']}). The normed "
        "Wasserstein score's change grows with the score (the sample's std is its denominator), so the largest "
        "changes are on columns far above their threshold; near the threshold the change is of order "
        f"a few / sqrt({cap:,}), against ~1/sqrt(1,000) ~ 0.03 of noise that a 1,000-row batch brings itself.",
        "",
        f"Benchmark runtime {time.perf_counter() - started:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _evidently_version() -> str:
    from importlib.metadata import version

    try:
        return version("evidently")
    except Exception:  # not installed as a distribution (e.g. vendored): ask the module
        import evidently

        return evidently.__version__


def write_section(path: Path, section: str) -> None:
    """Replace the "## Drift check" section of `path` (up to the next "## " heading), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help='replace the "## Drift check" section')
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.check)))
        return
    started, load = time.perf_counter(), os.getloadavg()
    runs = []
    for rows in SIZES:
        runs.append(_run_child(rows, check=rows == max(SIZES)))
        print(f"{rows:>9,} rows: {runs[-1]['run']['seconds']:.1f} s", file=sys.stderr)
    section = markdown(runs, started, load)
    print(section)
    if args.write:
        write_section(args.write, section)
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
