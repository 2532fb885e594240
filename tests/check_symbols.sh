#!/bin/sh
# libvram.so exports only vram_/ibp_ symbols, carries its soname, and does not need the CUDA
# driver or runtime libraries (the runtime is linked statically; the driver is found at run time).
# usage: check_symbols.sh LIBVRAM_SO EXPECTED_SONAME
set -eu
lib=$1
soname=$2
strangers=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -Ev '^(vram_|ibp_)' || true)
if [ -n "$strangers" ]; then
  echo "FAIL: symbols outside vram_/ibp_ exported by $lib:"; echo "$strangers"; exit 1
fi
count=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -Ec '^(vram_|ibp_)')
echo "exported: $count symbols, all vram_/ibp_"
readelf -d "$lib" | grep -q "Library soname: \[$soname\]" || { echo "FAIL: soname is not $soname"; readelf -d "$lib" | grep SONAME; exit 1; }
echo "soname: $soname"
if readelf -d "$lib" | grep NEEDED | grep -Eq 'libcuda|libcudart'; then
  echo "FAIL: libvram.so needs a CUDA library:"; readelf -d "$lib" | grep NEEDED; exit 1
fi
echo "NEEDED: $(readelf -d "$lib" | awk '/NEEDED/ {print $NF}' | tr '\n' ' ')"
