#!/usr/bin/env bash
# Builds everything the GPU machine runs (it has no Rust toolchain) into .gpu/: release test
# binaries, benchmark binaries, libvram.so and the C examples, stripped. Then run, there,
#   scripts/gpu-run.sh        (writes results to $OUT)
# .gpu/ and .gpu.tar.xz are ignored by git; pass the archive to the device runner as a carried path.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$VRAM_ROOT"
export VRAM_CUDA=on
rm -rf .gpu
mkdir -p .gpu/tests .gpu/bench .gpu/lib

executables() { # cargo's JSON messages on stdin -> executable paths of targets of kind $1
  python3 -c 'import json,sys
kind = sys.argv[1]
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and (kind == "any" or kind in m["target"]["kind"]):
        print(m["executable"])' "$1"
}
# The library's tests (the vram command's tests run the binary at its build path: CI runs them).
cargo test --release --no-run -p vram --message-format=json 2>/dev/null | executables any | while read -r exe; do
  cp "$exe" .gpu/tests/
done
cargo bench --no-run --message-format=json 2>/dev/null | executables bench | while read -r exe; do
  base=$(basename "$exe"); cp "$exe" ".gpu/bench/${base%-*}"
done
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
cp -P build/lib/libvram.so* .gpu/lib/
cp build/seal_verify build/model_demo build/ibp_certify build/header_two_tu build/stress build/load_model \
  build/seal_verify_cpp build/hpp_test build/hpp_noexcept .gpu/
# Kernel design studies (bench/*.cu: each includes the kernels it studies), for Hopper.
mkdir -p .gpu/studies
cuda_lib="$(dirname "$(dirname "$NVCC")")/lib"
for src in bench/*.cu; do
  "$NVCC" -O3 -std=c++17 -arch=sm_90 -Icuda -ftz=false -prec-div=true -prec-sqrt=true \
    -L"$cuda_lib" "$src" -o ".gpu/studies/$(basename "${src%.cu}")"
done
# The scrubber's serving-overhead benchmark (bench/serving/): links libvram.
"$NVCC" -O3 -std=c++17 -arch=sm_90 -Iinclude bench/serving/scrub_serving.cu -Lbuild/lib -lvram \
  -L"$cuda_lib" -o .gpu/scrub_serving
# A few ACAS Xu networks for the GPU tests and benchmark (the data stays outside the repository;
# .gpu/ is ignored and only travels to the GPU machine).
acas="${VRAM_ACASXU_DIR:-$VRAM_ROOT/../shared/data/acasxu}"
if [ -d "$acas/nnet" ]; then
  mkdir -p .gpu/acasxu/nnet
  cp "$acas"/nnet/ACASXU_experimental_v2a_{1_1,3_7,5_9}.nnet .gpu/acasxu/nnet/
else
  echo "ACAS Xu data not found at $acas: the GPU run will skip it"
fi
cp build/scrub .gpu/
strip .gpu/tests/* .gpu/bench/* .gpu/scrub .gpu/scrub_serving .gpu/seal_verify .gpu/model_demo .gpu/ibp_certify .gpu/header_two_tu .gpu/stress .gpu/load_model
du -sh .gpu
# The device runner carries at most 64 MiB: ship one compressed archive (unpack there with
#   tar -xJf .gpu.tar.xz).
tar -cf - .gpu | xz -T0 -6 > .gpu.tar.xz
du -sh .gpu.tar.xz
ls .gpu/tests .gpu/bench
