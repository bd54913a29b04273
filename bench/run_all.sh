#!/usr/bin/env bash
# Run every benchmark in full mode; JSON and the printed Markdown land in bench/results/.
#   bench/run_all.sh                 # all of them, CPU, all cores
#   bench/run_all.sh trunk heads     # some
#   THREADS=1 bench/run_all.sh       # one thread (a shared, busy machine)
#   DEVICE=cuda bench/run_all.sh roofline
#   OUT=bench/results/threads1 THREADS=1 bench/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
scripts=("$@")
[ ${#scripts[@]} -eq 0 ] && scripts=(trunk heads losses vs_seed loader roofline scaling whatif)
for name in "${scripts[@]}"; do
  echo "== $name" >&2
  python "bench/$name.py" --device "${DEVICE:-cpu}" --threads "${THREADS:-$(nproc)}" \
    --json "$out/$name.json" | tee "$out/$name.md"
done
