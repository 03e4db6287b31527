"""A capacity model for platform teams, fitted to what ``bench_scale.py`` measured on this machine.

For each weekly step it fits ``seconds = fixed + per_user * users`` by least squares over the measured sizes (the
fixed part is session start, Horovod start-up, MLflow; the per-user part is the work that grows with the data) and
the growth exponent ``seconds ~ users^k`` between the smallest and the largest size. From the per-user part it
projects core-hours and the wall time on a cluster of C cores for 10 M and 100 M users, assuming the per-core rate
measured here holds (Spark steps scale out; training is bounded by the number of ranks, so its projection assumes
``num_proc`` ranks of one core and the same epochs). These are **projections from measured rates**, not
measurements: they ignore network shuffles, stragglers and cluster overheads, which only make things slower.

    python benchmarks/capacity.py [--cores 2] [--cluster-cores 64 512] [--ranks 8]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGETS = (10_000_000, 100_000_000)
SPARK_STEPS = ("build_sequences", "validate", "score", "monitor", "report")


def fit(users, seconds):
    """(fixed seconds, seconds per user, growth exponent) of one step over the measured sizes."""
    u, s = np.asarray(users, float), np.asarray(seconds, float)
    per_user, fixed = np.polyfit(u, s, 1) if len(u) > 1 else (s[0] / u[0], 0.0)
    k = math.log(s[-1] / s[0]) / math.log(u[-1] / u[0]) if len(u) > 1 and s[0] > 0 else float("nan")
    return max(float(fixed), 0.0), max(float(per_user), 0.0), k


def model(runs, cores: int, cluster_cores, ranks: int) -> str:
    runs = [r for r in runs if r.get("steps_seconds") and r["weekly"]["rc"] == 0]
    if len(runs) < 2:
        return "capacity: need bench_scale.py results at two or more sizes (work/bench/scale.json)"
    users = [r["users"] for r in runs]
    steps = [s for s in runs[-1]["steps_seconds"] if all(r["steps_seconds"].get(s) for r in runs)]
    lines = [
        f"measured on {cores} cores at {', '.join(f'{u:,}' for u in users)} users",
        "",
        "| step | fixed s | core-s per 1k users | growth k (s ~ users^k) |"
        + "".join(f" projected wall at {t / 1e6:.0f} M users, {c} cores |" for t in TARGETS for c in cluster_cores),
        "|---|---|---|---|" + "---|" * (len(TARGETS) * len(cluster_cores)),
    ]
    total = {(t, c): 0.0 for t in TARGETS for c in cluster_cores}
    for s in steps:
        fixed, per_user, k = fit(users, [r["steps_seconds"][s] for r in runs])
        core_s = per_user * cores  # the local run used every core
        cells = []
        for t in TARGETS:
            for c in cluster_cores:
                parallel = c if s in SPARK_STEPS else min(c, ranks)
                wall = fixed + core_s * t / parallel
                total[(t, c)] += wall
                cells.append(f" {wall / 3600:.2f} h |")
        lines.append(f"| {s} | {fixed:.0f} | {core_s * 1000:.2f} | {k:.2f} |" + "".join(cells))
    lines.append(
        "| **total** | | | |" + "".join(f" **{total[(t, c)] / 3600:.2f} h** |" for t in TARGETS for c in cluster_cores)
    )
    peak = [r["weekly"]["peak_rss_gb"] for r in runs]
    lines += ["", "peak process-tree RSS (GB): " + ", ".join(f"{u:,} users {p}" for u, p in zip(users, peak))]
    lines += ["", "| table | users | rows | bytes | bytes per row | bytes per user | projected at 100 M users |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for r in runs:
        for table in ("features", "churn_risk"):
            size, rows = table_footprint(REPO / "work" / "bench" / f"scale-u{r['users']}" / "tables" / table)
            if rows:
                per_user = size / r["users"]
                lines.append(
                    f"| {table} | {r['users']:,} | {rows:,} | {size:,} | {size / rows:.0f} | {per_user:.0f} |"
                    f" {per_user * TARGETS[-1] / 1e9:.0f} GB |"
                )
    return "\n".join(lines)


def table_footprint(path: Path) -> tuple[int, int]:
    """(bytes, rows) of the live files of a Delta table (the project's Spark-free log replay, checkpoints
    included; the row counts are the writer's per-file statistics). (0, 0) when there is no table."""
    from churn_spark.delta_reader import replay

    if not (path / "_delta_log").is_dir():
        return 0, 0
    live = replay(str(path / "_delta_log")).live.values()
    stats = [s if isinstance(s, dict) else json.loads(s or "{}") for s in (a.get("stats") for a in live)]
    return sum(int(a["size"]) for a in live), sum(int(s.get("numRecords", 0)) for s in stats)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--cores", type=int, default=2, help="cores of the machine bench_scale ran on")
    p.add_argument("--cluster-cores", type=int, nargs="+", default=[64, 512])
    p.add_argument("--ranks", type=int, default=8, help="Horovod ranks (training.num_proc) on the cluster")
    a = p.parse_args()
    runs = json.loads((REPO / "work" / "bench" / "scale.json").read_text())
    print(model(runs, a.cores, a.cluster_cores, a.ranks))
