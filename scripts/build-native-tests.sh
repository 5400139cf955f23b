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
  cxx=${CXX:-aarch64-linux-gnu-g++}; defs=(-DPQ_HAVE_NEON=1 -DPQ_NO_HOST_OPENMP=1); link=(-static)
else
  cxx=${CXX:-g++}; defs=(-DPQ_HAVE_X86=1); link=()
fi
# suffix -> arch and flags, as CMakeLists.txt reads them
declare -A suffix_arch suffix_flags
while read -r suffix sarch sflags; do
  case "$suffix" in ''|'#'*) continue ;; esac
  suffix_arch[$suffix]=$sarch; suffix_flags[$suffix]=$sflags
done < csrc/core/isa_flags.txt
for f in "${sources[@]}"; do
  flags=(-O2 -std=c++17 -ffp-contract=off -Icsrc -Wall -Wno-unused-parameter -Wno-maybe-uninitialized "${defs[@]}" "$@")
  kernel_suffix=""
  for suffix in "${!suffix_arch[@]}"; do
    if [[ "$f" == *_"$suffix".cc ]]; then kernel_suffix=$suffix; fi
  done
  if [ -n "$kernel_suffix" ]; then
    [ "${suffix_arch[$kernel_suffix]}" = "$arch" ] || continue
    # shellcheck disable=SC2206
    flags+=(${suffix_flags[$kernel_suffix]})
  elif [ "$arch" = aarch64 ]; then
    flags+=(-march=armv8-a)
  fi
  obj="$out.obj/$(echo "$f" | tr '/' '_').o"
  "$cxx" "${flags[@]}" -c "$f" -o "$obj" &
  objs+=("$obj")
  # at most 2 compiles at a time (2 cores)
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
done
wait
"$cxx" "$@" -o "$out" "${objs[@]}" -pthread "${link[@]}"
echo "built $out"
