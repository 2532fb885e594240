#!/bin/sh
# Installs the build tree into a scratch prefix, then builds and runs a separate consumer
# project against it: once with find_package(vram CONFIG), once with pkg-config.
# usage: consumer_test.sh CMAKE BUILD_DIR CONSUMER_SRC CC
set -eu
cmake=$1
build=$2
src=$3
cc=$4
prefix="$build/consumer-prefix"
work="$build/consumer-build"
rm -rf "$prefix" "$work"
"$cmake" --install "$build" --prefix "$prefix" >/dev/null
for f in "$prefix"/lib*/libvram.so*; do if [ -L "$f" ]; then echo "installed: $(basename "$f") -> $(readlink "$f")"; else echo "installed: $(basename "$f")"; fi; done
"$cmake" -S "$src" -B "$work" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
"$cmake" --build "$work" >/dev/null
"$work/consumer"
"$work/consumer_cpp"
echo "find_package(vram CONFIG), C and C++ (vram.hpp): OK"

if command -v pkg-config >/dev/null 2>&1; then
  pcdir=$(dirname "$(find "$prefix" -name vram.pc | head -n 1)")
  flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs vram)
  libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir vram)
  "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror "$src/main.c" $flags -Wl,-rpath,"$libdir" -o "$work/consumer_pc"
  "$work/consumer_pc"
  echo "pkg-config vram ($flags): OK"
else
  echo "pkg-config not installed: the pkg-config half of this test was not run"
fi
