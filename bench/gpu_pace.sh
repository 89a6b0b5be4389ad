#!/usr/bin/env bash
# Issue 21 on the GPU machine, one call: where the end-to-end time goes and what each change gives.
#   bash bench/gpu_pace.sh profile     the design as it was, and single-process variants (decode on the GPU or on a
#                                      CPU pool, with and without hiredis), 900 streams offered; py-spy on one
#   bash bench/gpu_pace.sh final N M ARGS   the chosen design (ARGS: gpu_bench e2e flags) at N streams (under
#                                      capacity) and M (1.5x, with and without shedding); the seed like for like
#                                      (compiled); model only past batch 64 and with max-autotune
# Wheels: DIR=.whl bash ../shared/gpu/wheels.sh tenacity==9.2.1 prometheus-client==0.23.1 hiredis==3.3.0 py-spy==0.4.1 av==16.0.1
# JSON goes to $OUT (gpu_e2e<tag>.json, one per variant); the console gets one line per variant.
set -uo pipefail
mkdir -p /tmp/site /tmp/hiredis
for w in .whl/*.whl; do
  case "$w" in
    *hiredis*) python3 -m pip install -q --no-index --no-deps --target /tmp/hiredis "$w" ;;
    *) python3 -m pip install -q --no-index --no-deps --target /tmp/site "$w" ;;
  esac
done
export PATH=/tmp/site/bin:$PATH
base=/tmp/site:$(pwd)
e2e() {  # tag hiredis(0|1) args...
  local tag=$1 fast=$2; shift 2
  local path=$base
  [ "$fast" = 1 ] && path=/tmp/hiredis:$base
  PYTHONPATH=$path timeout 300 python3 bench/gpu_bench.py e2e --compile --seconds "${SECONDS_EACH:-25}" --out "$OUT" \
    --tag "$tag" "$@" 2>&1 | grep '^==' | cut -c1-900
}
case "${1:-profile}" in
  profile)
    nvidia-smi --query-gpu=name,utilization.gpu,utilization.decoder,utilization.jpeg --format=csv | tee "$OUT/nvidia_smi.txt"
    PYTHONPATH=$base python3 - <<'PY' > "$OUT/video_hw.txt" 2>&1
import av, cv2
print("pyav", av.__version__, "ffmpeg", av.library_versions.get("libavcodec"))
print("hw decoders in PyAV:", sorted(c for c in av.codecs_available if any(k in c for k in ("cuvid", "nvdec", "vaapi", "qsv"))))
print("opencv cuda devices:", cv2.cuda.getCudaEnabledDeviceCount() if hasattr(cv2, "cuda") else "no cuda module")
print(cv2.getBuildInformation().split("Video I/O")[1][:600])
PY
    cat "$OUT/video_hw.txt"
    ls /dev/nvidia* 2>/dev/null | tr '\n' ' '; echo
    e2e _r2_gpu_b32 0 --streams 900 --replicas 2 --max-batch 32
    e2e _r1_gpu_b64 0 --streams 900 --replicas 1 --max-batch 64
    PYSPY_TAG=_r1_gpu_b64_hiredis PROFILE_WITH_PYSPY=1 e2e _r1_gpu_b64_hiredis 1 --streams 900 --replicas 1 --max-batch 64
    e2e _r1_cpu12_b64_hiredis 1 --streams 900 --replicas 1 --max-batch 64 --decode cpu --decode-threads 12
    e2e _tiny_r1_gpu_b64_hiredis 1 --streams 2000 --replicas 1 --max-batch 64 --arch tiny
    ;;
  final)  # $2: streams at about 0.7x capacity, $3: at 1.5x; the rest: the chosen design's e2e flags
    fast=${HIREDIS:-1}
    e2e _final_unloaded "$fast" --streams "$2" "${@:4}"
    e2e _final_overload "$fast" --streams "$3" "${@:4}"
    e2e _final_overload_no_shedding "$fast" --streams "$3" --shed-behind null "${@:4}"
    PYTHONPATH=$base timeout 200 python3 bench/gpu_bench.py seed --compile --seed-processes 1,16 --seconds 15 \
      --out "$OUT" --tag _compiled 2>&1 | grep '^==' | cut -c1-600
    PYTHONPATH=$base timeout 90 python3 bench/gpu_bench.py buckets --out "$OUT" 2>&1 | grep '^==' | cut -c1-600
    PYTHONPATH=$base timeout 180 python3 bench/gpu_bench.py autotune --out "$OUT" 2>&1 | grep '^==' | cut -c1-900
    ;;
esac
