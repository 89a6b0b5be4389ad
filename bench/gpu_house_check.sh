#!/usr/bin/env bash
# Issue 19 (the house) changed the hot path's plumbing (the Redis door's error translation, the frame codec, the
# feeder's and publisher's worker threads, the engine interface). On the GPU machine, in one call: end to end at
# 500 streams (2 replicas, max_batch 32, compiled fp16 YOLOv3-416, GPU decoding: the README's headline row), the
# code before (BASELINE, a tree of the commit before the change) and after, alternated twice so drift shows.
#   bash bench/gpu_house_check.sh            (BASELINE=.baseline, OUT=$OUT; wheels in .whl, see ../shared/gpu)
#   STREAMS=700 ROUNDS=1 bash bench/gpu_house_check.sh   (past capacity: where the host's per-frame cost shows)
set -euo pipefail
here=$(pwd)
baseline=$(cd "${BASELINE:-.baseline}" && pwd)
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
streams=${STREAMS:-500}
for round in $(seq "${ROUNDS:-2}"); do
  for tree in after before; do
    root=$here
    [ "$tree" = before ] && root=$baseline
    (cd "$root" && PYTHONPATH=/tmp/site:$root python3 bench/gpu_bench.py e2e --compile --replicas 2 --max-batch 32 \
      --streams "$streams" --seconds 30 --out "$OUT" --tag "_house_${streams}_${tree}_${round}" 2>&1 | grep '^==' | cut -c1-600)
  done
done
