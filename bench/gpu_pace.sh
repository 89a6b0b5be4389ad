#!/usr/bin/env bash
# Issue 21 on the GPU machine, in one call (device time is scarce): where the end-to-end time goes and what each
# change gives.
#   bash bench/gpu_pace.sh all        one process decoding JPEGs on a host pool (staged to the GPU ahead of its turn,
#                                     hiredis) at 500, 900 and 1,300 streams (with and without shedding); decoding on
#                                     the GPU (nvJPEG, py-spy on the replica); the design before (2 replicas, nvJPEG,
#                                     batch 32); tiny at 1,800 streams; the seed's design on the compiled engine;
#                                     model only past batch 64
#   bash bench/gpu_pace.sh capacity   each design's capacity: one replica on a host pool, one on nvJPEG (py-spy on
#                                     each), tiny on one server and on 3 primaries
#   CAP=4000 DESIGN=host bash bench/gpu_pace.sh overload   below and at 1.5x capacity; the Redis ceiling; the seed
#   bash bench/gpu_pace.sh cluster    the Redis-bound ceiling and tiny end to end: one server vs 3 primaries
#   bash bench/gpu_pace.sh autotune   hardware video decoding; model only past batch 64 and with max-autotune
#   CAP=3600 bash bench/gpu_pace.sh arrivals   nvJPEG at 80 % and 1.5x of CAP with the turns going by arrival
#                                     (detector/arrivals.py), 1.5x again with frames encoded once (ingest's cores
#                                     free); tiny with 3 and 4 replicas, frames encoded once
#   CAP=3600 bash bench/gpu_pace.sh last       the same three loads (1.5x, 1.25x, 0.8x of CAP), frames encoded once
#   bash bench/gpu_pace.sh hw         hardware video decoding; the hardware JPEG engines
# Wheels: DIR=.whl bash ../shared/gpu/wheels.sh tenacity==9.2.1 prometheus-client==0.23.1 hiredis==3.3.0 py-spy==0.4.1;
#   DIR=.whl-av bash ../shared/gpu/wheels.sh av==16.0.1 (40 MB); DIR=.whl-nvimg bash ../shared/gpu/wheels.sh \
#   nvidia-nvimgcodec-cu13==0.9.0.20 'nvidia-nvjpeg>=13,<14' (29 MB). carry holds 64 MiB: .whl with one of the other two.
# JSON goes to $OUT (gpu_e2e<tag>.json, one per variant); the console gets one line per variant.
set -uo pipefail
mkdir -p /tmp/site /tmp/hiredis
# One pip call for all (pip --target, called once per wheel, keeps only the first wheel's bin/: py-spy's was lost).
# .whl-av (PyAV, 40 MB) is carried only for the video call: carry holds 64 MiB. nvImageCodec and its nvJPEG go to a
# folder of their own: their nvidia/ package must not shadow the one torch's CUDA libraries live in.
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl .whl-av/av-*.whl 2>/dev/null | grep -v hiredis)
python3 -m pip install -q --no-index --no-deps --target /tmp/hiredis .whl/hiredis*.whl
[ -d .whl-nvimg ] && python3 -m pip install -q --no-index --no-deps --target /tmp/nvimg .whl-nvimg/nvidia_*.whl
export LD_LIBRARY_PATH=/tmp/nvimg/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
find /tmp/site -path '*.data/scripts/*' -type f -exec chmod +x {} + -exec ln -sf {} /tmp/site/bin/ \;
export PATH=/tmp/site/bin:$PATH
command -v py-spy || echo "== py-spy not found"
base=/tmp/site:$(pwd)
e2e() {  # tag hiredis(0|1) args...
  local tag=$1 fast=$2; shift 2
  local path=$base
  [ "$fast" = 1 ] && path=/tmp/hiredis:$base
  PYTHONPATH=$path timeout "${LIMIT_EACH:-150}" python3 bench/gpu_bench.py e2e --compile --seconds "${SECONDS_EACH:-25}" \
    --out "$OUT" --tag "$tag" "$@" 2>&1 | grep -E '^==|Error' | cut -c1-900
}
hardware() {
  nvidia-smi --query-gpu=name,utilization.gpu,utilization.decoder,utilization.jpeg --format=csv | tee "$OUT/nvidia_smi.txt"
  PYTHONPATH=$base python3 - <<'PY' > "$OUT/video_hw.txt" 2>&1
import av, cv2
print("pyav", av.__version__, "ffmpeg", av.library_versions.get("libavcodec"))
print("hw decoders in PyAV:", sorted(c for c in av.codecs_available if any(k in c for k in ("cuvid", "nvdec", "vaapi", "qsv"))))
print("opencv cuda devices:", cv2.cuda.getCudaEnabledDeviceCount() if hasattr(cv2, "cuda") else "no cuda module")
print(cv2.getBuildInformation().split("Video I/O")[1][:600])
PY
  cat "$OUT/video_hw.txt"
}
host=(--replicas 1 --max-batch 64 --decode cpu --decode-threads 12)  # one process, JPEGs decoded on a host pool
gpu=(--replicas 1 --max-batch 64 --decode gpu)  # one process, JPEGs decoded on the GPU (nvJPEG)
case "${1:-all}" in
  all)  # everything in one call, the most telling first (what runs past the call's limit is lost, the rest kept)
    hardware
    e2e _host_900 1 --streams 900 "${host[@]}"
    e2e _host_500 1 --streams 500 "${host[@]}"
    e2e _host_1300 1 --streams 1300 "${host[@]}"
    e2e _host_1300_no_shedding 1 --streams 1300 --shed-behind null "${host[@]}"
    e2e _tiny_host_1800 1 --streams 1800 --arch tiny "${host[@]}"
    PYSPY_TAG=_gpu_900 PROFILE_WITH_PYSPY=1 e2e _gpu_900 1 --streams 900 "${gpu[@]}"
    PYTHONPATH=$base timeout 150 python3 bench/gpu_bench.py seed --compile --seed-processes 1,16 --seconds 10 \
      --out "$OUT" --tag _compiled 2>&1 | grep '^==' | cut -c1-600
    e2e _before_r2_gpu_b32_900 0 --streams 900 --replicas 2 --max-batch 32
    PYTHONPATH=$base timeout 60 python3 bench/gpu_bench.py buckets --out "$OUT" 2>&1 | grep '^==' | cut -c1-600
    ;;
  capacity)  # each design's capacity (in-turn reads past capacity), where a replica's time goes (py-spy), tiny on
              # one server and on a cluster of 3 primaries (issue 22); first the hardware JPEG decoder, alone
    PYTHONPATH=/tmp/nvimg:$base timeout 60 python3 -m bench.jpeg_hw --out "$OUT" 2>&1 | grep -v '^{' | cut -c1-1500
    PYSPY_TAG=_host_900 PROFILE_WITH_PYSPY=1 e2e _host_900 1 --streams 900 "${host[@]}"
    PYSPY_TAG=_gpu_900 PROFILE_WITH_PYSPY=1 e2e _gpu_900 1 --streams 900 "${gpu[@]}"
    e2e _tiny_gpu_1600 1 --streams 1600 --arch tiny "${gpu[@]}"
    e2e _tiny_gpu_1600_cluster3 1 --streams 1600 --arch tiny "${gpu[@]}" --primaries 3
    ;;
  overload)  # goal 2: DESIGN (host|gpu) below and at 1.5x its capacity CAP (frames/s); the Redis ceiling; the seed
    design=host; [ "${DESIGN:-host}" = gpu ] && design=gpu
    [ $design = host ] && args=("${host[@]}") || args=("${gpu[@]}")
    e2e "_${design}_unloaded" 1 --streams $((CAP * 8 / 50)) "${args[@]}"
    e2e "_${design}_overload_1_5x" 1 --streams $((CAP * 3 / 10)) "${args[@]}"
    PYTHONPATH=/tmp/hiredis:$base timeout 200 python3 -m bench.redis_ceiling --primaries 0,1,3 --cameras 1200 \
      --publishers 6 --consumers 6 --seconds 15 --out "$OUT/redis_ceiling.json" 2>&1 | tail -6
    PYTHONPATH=$base timeout 150 python3 bench/gpu_bench.py seed --compile --seed-processes 1,16 --seconds 10 \
      --out "$OUT" --tag _compiled 2>&1 | grep '^==' | cut -c1-600
    ;;
  arrivals)  # goal 2: below and past capacity with the turns by arrival; goal 3: tiny with the frames encoded
              # once (bench/replay_cameras.py: the host's cores for the replicas), 3 and 4 replicas on 3 primaries
    e2e _arrivals_gpu_unloaded 1 --streams $((CAP * 8 / 50)) "${gpu[@]}"
    e2e _arrivals_gpu_overload_1_5x 1 --streams $((CAP * 3 / 10)) "${gpu[@]}"
    e2e _arrivals_gpu_overload_1_5x_replay 1 --streams $((CAP * 3 / 10)) "${gpu[@]}" --ingest replay
    e2e _tiny_replay_r3_cluster3 1 --streams 1600 --arch tiny --replicas 3 --max-batch 64 --decode gpu \
      --primaries 3 --ingest replay
    e2e _tiny_replay_r4_cluster3 1 --streams 1600 --arch tiny --replicas 4 --max-batch 64 --decode gpu \
      --primaries 3 --ingest replay
    ;;
  last)  # goal 2 in the little device time left (240 s with the start): past capacity first, the frames encoded
          # once; then the capacity and the unloaded run the same way, so all three compare like with like
    e2e _arrivals_gpu_overload_1_5x_replay 1 --streams $((CAP * 3 / 10)) "${gpu[@]}" --ingest replay
    e2e _arrivals_gpu_capacity_replay 1 --streams $((CAP / 4)) "${gpu[@]}" --ingest replay
    e2e _arrivals_gpu_unloaded_replay 1 --streams $((CAP * 8 / 50)) "${gpu[@]}" --ingest replay
    ;;
  hw)  # goal 4 and the JPEG engines: NVDEC against software H.264; nvImageCodec's hardware decoder (carry .whl-nvimg)
    PYTHONPATH=/tmp/nvimg:$base timeout 60 python3 -m bench.jpeg_hw --out "$OUT" 2>&1 | grep -v '^{' | cut -c1-1500
    PYTHONPATH=$base timeout 130 python3 -m bench.video_hw --out "$OUT/video_hw.json" 2>&1 | tail -12
    ;;
  short)  # what a call with little device time left can hold: one replica past capacity, with py-spy
    PYSPY_TAG=_host_900 PROFILE_WITH_PYSPY=1 e2e _host_900 1 --streams 900 "${host[@]}"
    ;;
  autotune)  # model only with max-autotune and past batch 64; hardware video decoding
    PYTHONPATH=$base timeout 130 python3 -m bench.video_hw --out "$OUT/video_hw.json" 2>&1 | tail -12
    PYTHONPATH=$base timeout 60 python3 bench/gpu_bench.py buckets --out "$OUT" 2>&1 | grep '^==' | cut -c1-600
    PYTHONPATH=$base timeout 340 python3 bench/gpu_bench.py autotune --out "$OUT" 2>&1 | grep '^==' | cut -c1-900
    ;;
esac
