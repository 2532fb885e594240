# Sourced by prepare_instance.sh and run_instance.sh: the vram binary, and ONNX / VNN-LIB
# paths with gzip-compressed ones (as VNN-COMP's repository ships them) unpacked to a
# temporary folder removed on exit.
vram="${VRAM_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../../target/release/vram}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
case "$onnx" in *.gz) gunzip -c "$onnx" > "$tmp/net.onnx"; onnx="$tmp/net.onnx" ;; esac
case "$vnnlib" in *.gz) gunzip -c "$vnnlib" > "$tmp/prop.vnnlib"; vnnlib="$tmp/prop.vnnlib" ;; esac
