"""Scale: the whole weekly job at several lake sizes on the local profile, with wall time, the peak memory of the
whole process tree and where the time went.

Each size runs ``churn-spark weekly`` exactly as a user would (a fresh process: its JVM, Python workers and Horovod
ranks), on a lake generated like the demo's (``generate-lake --dirty``, 78 weeks). Memory is the peak
over time of the summed RSS of the job's process and all its descendants (JVM, Python workers, ranks), sampled
from /proc every ``--interval`` seconds with psutil, not the launcher's ``time -v`` (which misses the children).
Per-step seconds come from the run log's ``timings``. Lakes are cached under ``work/bench/scale-u<users>``.

    python benchmarks/bench_scale.py --users 6000 30000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "churn-spark")
RUN_DATE = "2026-11-02"


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and every descendant right now (processes that vanish meanwhile count 0)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_sampled(cmd, log: Path, interval: float) -> dict:
    """Run ``cmd``; returns its exit code, wall seconds and the peak process-tree RSS."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        peak = [0]

        def sample():
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss(proc.pid))
                time.sleep(interval)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = proc.wait()
        t.join()
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_gb": round(peak[0] / 2**30, 2)}


def one_size(users: int, interval: float) -> dict:
    work = REPO / "work" / "bench" / f"scale-u{users}"
    base = [CLI, "--config", str(REPO / "conf" / "local.yaml"), "--set", f"work_dir={work}"]
    out: dict = {"users": users}
    work.parent.mkdir(parents=True, exist_ok=True)  # the logs go next to the lakes, from the first run of a clone
    if not (work / "lake" / "orders" / "_delta_log").is_dir():
        gen = [CLI, "generate-lake", *base[1:], "--users", str(users), "--end-date", RUN_DATE, "--dirty"]
        out["generate"] = run_sampled(gen, work.parent / f"scale-u{users}-generate.log", interval)
    runlog = work / "runs" / RUN_DATE / "runlog.json"
    runlog.unlink(missing_ok=True)  # every step runs again (tables are replaced, not appended)
    weekly = [CLI, "weekly", *base[1:], "--run-date", RUN_DATE, "--force"]
    out["weekly"] = run_sampled(weekly, work.parent / f"scale-u{users}-weekly.log", interval)
    if runlog.is_file():
        steps = json.loads(runlog.read_text())["steps"]
        out["steps_seconds"] = {k: v.get("timings", {}).get("seconds") for k, v in steps.items()}
        out["parts_seconds"] = {k: v.get("timings", {}).get("parts") for k, v in steps.items()}
        ingest = steps.get("build_sequences", {}).get("ingest", {})
        out["rows_in"] = {k: v.get("rows_in") for k, v in ingest.items()}
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, nargs="+", default=[6000])
    p.add_argument("--interval", type=float, default=1.0, help="RSS sampling period in seconds")
    a = p.parse_args()
    out = REPO / "work" / "bench" / "scale.json"  # benchmarks/capacity.py fits its model to these
    results = []
    for u in a.users:  # saved after every size: a run killed at the largest size keeps the smaller ones
        results.append(one_size(u, a.interval))
        previous = {r["users"]: r for r in json.loads(out.read_text())} if out.is_file() else {}
        previous.update({r["users"]: r for r in results})
        out.write_text(json.dumps(sorted(previous.values(), key=lambda r: r["users"]), indent=1))
    print(json.dumps(results, indent=1))
    sys.exit(max(r["weekly"]["rc"] for r in results))
