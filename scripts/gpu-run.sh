#!/usr/bin/env bash
# Runs, on a GPU machine, everything scripts/gpu-stage.sh staged in .gpu/ (unpacked from
# .gpu.tar.xz when that is what was carried): every Rust test on
# the CUDA backend (VRAM_TEST_BACKEND=cuda), the GPU-only tests, the C examples, and the
# benchmarks. Results go to $OUT (default ./gpu-out): gpu.txt, tests.log, demo.txt, bench-*.md.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
if [ ! -d .gpu ] && [ -f .gpu.tar.xz ]; then tar -xJf .gpu.tar.xz; fi
mkdir -p "$OUT"
export VRAM_SOURCE_DIR=$PWD
export VRAM_ACASXU_DIR=$PWD/.gpu/acasxu
export VRAM_ACASXU_NNET=$PWD/.gpu/acasxu/nnet/ACASXU_experimental_v2a_1_1.nnet
export LD_LIBRARY_PATH="$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpu: $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) logical CPUs"
  lscpu 2>/dev/null | grep -E "^(Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)):" || true
} > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"

failed=0
# VRAM_GPU_RUN=scrub-clean: only the scrubber's long clean run with the serving workload
# (a separate call: it takes most of a device call's 10 minutes).
if [ "${VRAM_GPU_RUN:-all}" = scrub-clean ]; then
  .gpu/scrub_serving --gib 64 --seconds 6 --sms "" --flips 0 --clean-seconds "${VRAM_SCRUB_CLEAN_SECONDS:-520}" \
    --clean-sms "${VRAM_SCRUB_SMS:-4:0:50}" > "$OUT/bench-scrub_clean.md" 2>&1 || failed=1
  cat "$OUT/bench-scrub_clean.md"
  echo "gpu-run: $failed failure(s)"
  exit "$failed"
fi
# VRAM_GPU_RUN=acasxu: only the 186 ACAS Xu instances through vram certify, VRAM_BENCH_JOBS at
# a time, the competition's 116 s each; the search on the GPU (VRAM_ACASXU_BACKEND=cuda, the
# default) or on this machine's cores (host: each instance gets its share of them).
if [ "${VRAM_GPU_RUN:-all}" = acasxu ]; then
  jobs="${VRAM_BENCH_JOBS:-4}"
  if [ "${VRAM_ACASXU_BACKEND:-cuda}" = cuda ]; then
    # The host's share of each search (cuts, choosing splits, unpacking) on its share of cores.
    args="--backend cuda --threads $(( $(nproc) / jobs ))"
  else
    args="--backend host --threads $(( $(nproc) / jobs ))"
  fi
  VRAM_BIN="$PWD/.gpu/vram" VRAM_BENCH_JOBS="$jobs" VRAM_CERTIFY_ARGS="$args" \
    bench/acasxu/run.sh "$OUT/acasxu" "${VRAM_ACASXU_LIMIT:-116}" > "$OUT/bench-acasxu.md" 2>&1 || failed=1
  tail -n 8 "$OUT/bench-acasxu.md"
  grep -c REFUTED "$OUT/acasxu/results.csv" && failed=1
  echo "gpu-run: $failed failure(s)"
  exit "$failed"
fi
# The seeded builder fuzz runs its full 10^5 cases on the CPU in CI; on the GPU a fifth of
# them (each accepted network is propagated there too) keeps the run short.
export VRAM_FUZZ_BUILDER=${VRAM_FUZZ_BUILDER:-20000}
log="$OUT/tests.log"
: > "$log"
for t in .gpu/tests/*; do
  name=$(basename "$t")
  echo "== $name (CUDA backend)" | tee -a "$log"
  if VRAM_TEST_BACKEND=cuda "$t" --nocapture --test-threads=4 >> "$log" 2>&1; then
    grep -E "^test result" "$log" | tail -n 1
  else
    echo "FAILED: $name" | tee -a "$log"; failed=$((failed + 1))
  fi
done
# The directed-rounding SIMT kernels, which GPUs before Hopper use, with tensor cores off.
for t in .gpu/tests/ibp_*; do
  name=$(basename "$t")
  echo "== $name (CUDA backend, SIMT kernels only)" | tee -a "$log"
  if VRAM_IBP_TENSOR_CORES=0 VRAM_TEST_BACKEND=cuda "$t" --nocapture --test-threads=4 >> "$log" 2>&1; then
    grep -E "^test result" "$log" | tail -n 1
  else
    echo "FAILED: $name (SIMT only)" | tee -a "$log"; failed=$((failed + 1))
  fi
done
for ex in seal_verify ibp_certify certify_vnnlib header_two_tu stress scrub load_model seal_verify_cpp hpp_test hpp_noexcept; do
  echo "== $ex" | tee -a "$log"
  if ".gpu/$ex" >> "$log" 2>&1; then echo "ok"; else echo "FAILED: $ex" | tee -a "$log"; failed=$((failed + 1)); fi
done
echo "== model_demo" | tee -a "$log"
if .gpu/model_demo > "$OUT/demo.txt" 2>&1; then cat "$OUT/demo.txt"; else cat "$OUT/demo.txt"; echo "FAILED: model_demo" | tee -a "$log"; failed=$((failed + 1)); fi

for study in .gpu/studies/*; do
  [ -e "$study" ] || continue
  name=$(basename "$study")
  echo "== kernel design study $name (bench/$name.cu)"
  "$study" > "$OUT/bench-$name.md" 2>&1 || { echo "FAILED: $name"; failed=$((failed + 1)); }
  cat "$OUT/bench-$name.md"
done

export VRAM_PYTHON=python3
for b in .gpu/bench/*; do
  name=$(basename "$b")
  echo "== bench $name"
  "$b" 1024 > "$OUT/bench-$name.md" 2>&1 || { echo "FAILED: bench $name"; failed=$((failed + 1)); }
  cat "$OUT/bench-$name.md"
  if [ "$name" = ibp_gpu ]; then
    echo "== PyTorch baseline on the same networks and boxes (bench/ibp_pytorch.py)"
    python3 bench/ibp_pytorch.py /tmp/ibpbench > "$OUT/bench-ibp_pytorch.md" 2>&1 || { echo "FAILED: ibp_pytorch"; failed=$((failed + 1)); }
    cat "$OUT/bench-ibp_pytorch.md"
  fi
done
echo "== bench linear_vs_autolirpa (libvram linear bounds against auto_LiRPA CROWN)"
if [ -d .gpu/baselines/auto_LiRPA ]; then
  pip install -q --no-index --no-deps --target /tmp/site .gpu/baselines/wheels/*.whl > /dev/null 2>&1
  PYTHONPATH="/tmp/site:$PWD/.gpu/baselines/auto_LiRPA:$PWD/python" VRAM_LIBRARY="$PWD/.gpu/lib/libvram.so" \
    python3 bench/linear_vs_autolirpa.py .gpu/acasxu 16384 > "$OUT/bench-linear_vs_autolirpa.md" 2>&1 || { echo "FAILED: linear_vs_autolirpa"; failed=$((failed + 1)); }
  cat "$OUT/bench-linear_vs_autolirpa.md"
else
  echo "SKIPPED: auto_LiRPA not staged"
fi
if [ -n "${VRAM_SKIP_SCRUB_SERVING:-}" ]; then
  echo "== bench scrub_serving: skipped (VRAM_SKIP_SCRUB_SERVING; the scrubber is unchanged since its recorded run)"
else
echo "== bench scrub_serving (bench/serving/scrub_serving.cu)"
# Budgets are SMs[:target period ms[:byte rate cap GB/s]]; the flips and the clean tail use one.
.gpu/scrub_serving --gib 64 --seconds 5 --sms "${VRAM_SCRUB_BUDGETS:-1,2,4,8,16,32,4:0:50,32:250}" \
  --flip-sms "${VRAM_SCRUB_SMS:-4:0:50}" --flips 100 --clean-sms "${VRAM_SCRUB_SMS:-4:0:50}" \
  --clean-seconds "${VRAM_SCRUB_CLEAN_IN_RUN:-60}" > "$OUT/bench-scrub_serving.md" 2>&1 || { echo "FAILED: scrub_serving"; failed=$((failed + 1)); }
cat "$OUT/bench-scrub_serving.md"
fi
# The Python package over the staged libvram.so: its tests (the torch cases run here), then a
# CUDA torch model of 1 GiB sealed in place.
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" VRAM_LIBRARY="$PWD/.gpu/lib/libvram.so"
echo "== python package tests (pytest)" | tee -a "$log"
# pytest travels as wheels in .whl/ (the GPU machine has no network): pip download -d .whl pytest
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q --no-index --find-links .whl pytest >> "$log" 2>&1
if python3 -m pytest -q -rs python/tests >> "$log" 2>&1; then tail -n 1 "$log"; else tail -n 30 "$log"; echo "FAILED: python tests" | tee -a "$log"; failed=$((failed + 1)); fi
echo "== bench python_seal_module"
python3 bench/python_seal_module.py > "$OUT/bench-python_seal_module.md" 2>&1 || { echo "FAILED: python_seal_module"; failed=$((failed + 1)); }
cat "$OUT/bench-python_seal_module.md"
echo "gpu-run: $failed failure(s)"
exit "$failed"
