"""Model quality against logistic regression on RFM, on the sparse profile and the demo lake, in one run.

    .venv/bin/python benchmarks/bench_quality.py [--sparse-users 20000] [--demo-users 6000] [--before REV]

For each lake: ``churn-spark generate-lake`` (once, cached under work/bench), then one ``churn-spark weekly`` process
with the local profile (plus ``conf/sparse.yaml`` for the sparse lake; each code version with its own profiles).
The test-snapshot metrics of the shipped model, of the network alone and of ``lr_rfm`` come from that run's
``metrics.json`` (all on the same test rows, never used for fitting or choosing). On both lakes it also reports
the *ceiling*: the ROC-AUC and log loss of each test user's true no-purchase probability given the generator's
hidden parameters (:mod:`churn_spark.generator_truth`), the best any model can reach on those rows. ``--before REV``
also runs the same commands with the code of git revision REV (a temporary worktree) on the same lakes, for the
wall-time ratio and the before/after metrics; ``--now REV`` measures a revision instead of the working tree.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import REPO, RUN, config, session

CONF = REPO / "conf"
METRICS = ("roc_auc", "log_loss", "pr_auc")


def _cli(code: Path, job: str, configs: list, sets: list, extra: list = ()) -> float:
    cmd = [sys.executable, "-m", "churn_spark.cli", job, *[x for c in configs for x in ("--config", str(c))]]
    cmd += [x for s in ["spark.log_level=ERROR", *sets] for x in ("--set", s)] + list(extra)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env)
    if done.returncode != 0:
        sys.exit(f"{job} failed (rc {done.returncode}) with code {code}:\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def lake(name: str, profile: str, users: int) -> Path:
    """The generated lake (cached): work/bench/quality-<name>/lake."""
    root = REPO / "work" / "bench" / f"quality-{name}-u{users}"
    if not (root / "lake" / "orders" / "_delta_log").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        _cli(REPO, "generate-lake", [CONF / "local.yaml"], [f"work_dir={root}"],
             ["--profile", profile, "--users", str(users), "--end-date", RUN.isoformat()])  # fmt: skip
    return root / "lake"


def weekly(code: Path, lake_dir: Path, profiles: list) -> tuple:
    """One weekly run on a copy of the lake with the code's own ``conf/<profile>.yaml`` files: (its wall time and
    the test metrics of metrics.json, (the test snapshot, its users' labels))."""
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    try:
        shutil.copytree(lake_dir, work / "lake")
        configs = [code / "conf" / f"{p}.yaml" for p in profiles]
        seconds = _cli(code, "weekly", configs, [f"work_dir={work}"], ["--run-date", RUN.isoformat()])
        m = json.loads((work / "runs" / RUN.isoformat() / "metrics.json").read_text())
        labels = pd.read_csv(work / "runs" / RUN.isoformat() / "test_scores.csv", usecols=["user_id", "label"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    models = m["models"]
    shipped = m.get("shipped_model", "deep")
    out = {"wall_s": round(seconds, 1), "shipped_model": shipped}
    for name in dict.fromkeys([shipped, "deep", "lr_rfm", "gbt"]):
        out[name] = {k: round(models[name][k], 4) for k in METRICS if k in models[name]}
    gain = models[shipped]
    out["shipped_minus_lr_rfm"] = {
        "roc_auc": round(gain["roc_auc"] - models["lr_rfm"]["roc_auc"], 4),
        "roc_auc_95ci": [gain.get("roc_auc_gain_vs_lr_rfm_lo"), gain.get("roc_auc_gain_vs_lr_rfm_hi")],
        "log_loss": round(gain["log_loss"] - models["lr_rfm"]["log_loss"], 4),
    }
    out["model_selection"] = m.get("model_selection")
    return out, (dt.date.fromisoformat(m["snapshots"]["test"][0]), labels)


def ceiling(profile: str, users: int, test: tuple) -> dict:
    """ROC-AUC and log loss of the lake's ground truth on a run's test rows: the test snapshot is R - H, so its
    label window is [snapshot, R)."""
    from sklearn.metrics import log_loss, roc_auc_score

    from churn_spark.generator import LakeSpec
    from churn_spark.generator_sparse import SparseSpec
    from churn_spark.generator_truth import sparse_true_no_purchase, true_no_purchase

    snapshot, labels = test
    days = (RUN - snapshot).days
    if profile == "sparse":
        truth = sparse_true_no_purchase(SparseSpec(users=users, end_date=RUN, seed=42), snapshot, days)
    else:
        spark = session(config(users))
        try:
            truth = true_no_purchase(spark, LakeSpec(users=users, end_date=RUN, seed=42), snapshot, days)
        finally:
            spark.stop()
    rows = labels.merge(truth, on="user_id", validate="one_to_one")
    p = rows["p_no_purchase"].clip(1e-6, 1 - 1e-6)
    return {"roc_auc": round(roc_auc_score(rows["label"], p), 4), "log_loss": round(log_loss(rows["label"], p), 4)}


def _worktree(rev: str) -> Path:
    """A temporary checkout of ``rev``: the measured code cannot change while the runs go on."""
    tree = Path(tempfile.mkdtemp(prefix="bench-code-")) / "code"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, stdout=sys.stderr)
    return tree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparse-users", type=int, default=20000)
    ap.add_argument("--demo-users", type=int, default=6000)
    ap.add_argument("--before", help="git revision to compare with (run from a temporary worktree)")
    ap.add_argument("--now", help="git revision to measure instead of the working tree (a temporary worktree)")
    ap.add_argument("--only", choices=("sparse", "demo"), help="run one of the two lakes")
    a = ap.parse_args()
    cases = {
        "sparse": (lake("sparse", "sparse", a.sparse_users), ["local", "sparse"]),
        "demo": (lake("demo", "demo", a.demo_users), ["local"]),
    }
    cases = {k: v for k, v in cases.items() if a.only in (None, k)}
    result = {"run_date": RUN.isoformat(), "users": {"sparse": a.sparse_users, "demo": a.demo_users}}
    trees = {label: _worktree(rev) for label, rev in (("now", a.now), ("before", a.before)) if rev}
    now, before = trees.get("now", REPO), trees.get("before")
    result["code"] = {"now": a.now or "working tree", "before": a.before}
    try:
        for name, (lake_dir, configs) in cases.items():
            now_metrics, test = weekly(now, lake_dir, configs)  # the same test rows for both code versions
            result[name] = {"now": now_metrics}
            if before is not None:
                result[name]["before"] = weekly(before, lake_dir, configs)[0]
                result[name]["wall_ratio"] = round(result[name]["now"]["wall_s"] / result[name]["before"]["wall_s"], 2)
            result[name]["ceiling"] = ceiling(name, a.sparse_users if name == "sparse" else a.demo_users, test)
            print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, stdout=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
