"""Alternate the two trees (before: /tmp/old, a worktree of efe5759; after: /work/main) in four
rounds of one.py each and print the medians."""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, "/work/main")

from mmseg_heads.data.synthetic import write_demo_dataset  # noqa: E402

TREES = {"old": "/tmp/old", "new": "/work/main"}
ONE = Path(__file__).with_name("one.py")
folder = Path(tempfile.mkdtemp())
spec = write_demo_dataset(folder / "data", train=16, val=8, size=160)
results: dict[str, list[float]] = {"old": [], "new": []}
for round_ in range(4):
    order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
    for name in order:
        out = folder / f"{name}{round_}"
        done = subprocess.run(
            [sys.executable, str(ONE), TREES[name], str(spec), str(out), "fp32"],
            capture_output=True, text=True, cwd="/tmp",
        )  # fmt: skip
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-800:]
        print(name, round_, line, flush=True)
        results[name].append(json.loads(line)["median"])
medians = {k: statistics.median(v) for k, v in results.items()}
print(medians, "new/old", medians["new"] / medians["old"])
