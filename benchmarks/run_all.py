"""Run every benchmark in one go (`make bench`) and print one JSON document with all ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "bench_sequences.py",
    "bench_scoring.py",
    "bench_ranks.py",
    "bench_polars.py",
    "bench_object_storage.py",
    "bench_quality.py",
]

if __name__ == "__main__":
    results = {}
    for b in BENCHES:  # one process each: every benchmark gets a fresh JVM and TF
        out = subprocess.run([sys.executable, str(HERE / b), *sys.argv[1:]], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-4000:], file=sys.stderr)
            sys.exit(out.returncode)
        results[b[:-3]] = json.loads(out.stdout[out.stdout.index("{") :])
        print(b, json.dumps(results[b[:-3]]), flush=True)
    (HERE.parent / "work" / "bench").mkdir(parents=True, exist_ok=True)
    (HERE.parent / "work" / "bench" / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
