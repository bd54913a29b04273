import json, subprocess, sys, statistics, tempfile
from pathlib import Path
sys.path.insert(0, "/work/main")
from mmseg_heads.data.synthetic import write_demo_dataset
d = Path(tempfile.mkdtemp())
spec = write_demo_dataset(d / "data", train=16, val=8, size=160)
res = {"old": [], "new": []}
for rnd in range(4):
    for name, tree in (("old", "/tmp/old"), ("new", "/work/main")) if rnd % 2 == 0 else (("new", "/work/main"), ("old", "/tmp/old")):
        for precision in ("fp32",):
            out = subprocess.run([sys.executable, "/tmp/steptime/one.py", tree, str(spec), str(d / f"{name}{rnd}"), precision],
                                 capture_output=True, text=True, cwd="/tmp")
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-800:]
            print(name, rnd, line, flush=True)
            res[name].append(json.loads(line)["median"])
print({k: statistics.median(v) for k, v in res.items()}, "new/old", statistics.median(res["new"]) / statistics.median(res["old"]))
