#!/usr/bin/env bash
# Builds the stand-alone C++ test driver (csrc/tools/*.cc + every kernel source, no Python).
# Usage: scripts/build-native-tests.sh OUT [x86|aarch64] [extra compiler flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; arch=${2:-x86}; shift 2 || shift $#
sources=()
while IFS= read -r f; do sources+=("$f"); done < <(find csrc -name '*.cc' ! -path 'csrc/bindings/*' | sort)
objs=()
mkdir -p "$out.obj"
if [ "$arch" = aarch64 ]; then
  cxx=${CXX:-aarch64-linux-gnu-g++}; defs=(-DPQ_HAVE_NEON=1); link=(-static)
else
  cxx=${CXX:-g++}; defs=(-DPQ_HAVE_X86=1); link=()
fi
for f in "${sources[@]}"; do
  flags=(-O2 -std=c++17 -Icsrc -Wall -Wno-unused-parameter -Wno-maybe-uninitialized "${defs[@]}" "$@")
  case "$f" in
    *_avx2.cc) [ "$arch" = x86 ] || continue; flags+=(-mavx2 -mfma -mbmi2 -mf16c) ;;
    *_avx512.cc) [ "$arch" = x86 ] || continue
      flags+=(-mavx2 -mfma -mbmi2 -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
              -mavx512vbmi -mavx512vpopcntdq -mavx512bitalg) ;;
    *_neon.cc) [ "$arch" = aarch64 ] || continue; flags+=(-march=armv8.2-a+dotprod) ;;
    *) if [ "$arch" = aarch64 ]; then flags+=(-march=armv8-a); fi ;;
  esac
  obj="$out.obj/$(echo "$f" | tr '/' '_').o"
  "$cxx" "${flags[@]}" -c "$f" -o "$obj" &
  objs+=("$obj")
  # at most 2 compiles at a time (2 cores)
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
done
wait
"$cxx" "$@" -o "$out" "${objs[@]}" -pthread "${link[@]}"
echo "built $out"
