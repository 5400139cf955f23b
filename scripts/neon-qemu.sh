#!/usr/bin/env bash
# Cross-compiles the kernels and the native test driver for aarch64 and runs them under
# qemu-aarch64 (NEON + dot product), checking every NEON kernel against the scalar path and an
# int64 oracle. Installs the cross compiler and qemu-user from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "installing g++-aarch64-linux-gnu and qemu-user"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
fi
out=build/neon/native_tests
mkdir -p build/neon
scripts/build-native-tests.sh "$out" aarch64
# -cpu max: an Armv8.x+ CPU model with the dot-product and int8 matrix-multiply (i8mm) extensions
qemu-aarch64 -cpu max "$out" "$@"
