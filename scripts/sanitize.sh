#!/usr/bin/env bash
# Builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer
# (-fno-sanitize-recover=all) into build/asan-site and runs the test suite under them with the
# ASan runtime preloaded; also runs the native C++ driver built the same way. Exits non-zero on
# any report. Usage: scripts/sanitize.sh [pytest args...]   (default: the whole suite)
set -euo pipefail
cd "$(dirname "$0")/.."
site=$PWD/build/asan-site
# shellcheck source=scripts/sanitizer-install.sh
source scripts/sanitizer-install.sh
sanitizer_install build/asan-site build/asan PYQUANT_SANITIZE

echo "== native driver under ASan+UBSan"
scripts/build-native-tests.sh build/asan-native/native_tests x86 \
  -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 build/asan-native/native_tests

echo "== pytest under ASan+UBSan"
libasan=$(g++ -print-file-name=libasan.so)
libubsan=$(g++ -print-file-name=libubsan.so)
# Leak detection is off for the Python process (the interpreter and torch keep allocations
# alive at exit by design); the native driver above runs with it on. An allocation too large to
# make returns NULL as without ASan (numpy's MemoryError, which tests expect), not an abort.
cd tests
LD_PRELOAD="$libasan:$libubsan" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
PYTHONPATH="$site" python -m pytest -q -p no:cacheprovider "${@:-.}"
