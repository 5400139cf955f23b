#!/usr/bin/env bash
# Builds the extension with ThreadSanitizer into build/tsan-site and runs the threading tests under
# it: quantized layers of every config called from many Python threads at once, each call using
# pyquant's thread pool, with PyTorch's intra-op threads busy beside them (tests/test_threads.py),
# plus the concurrent kernel-call tests of test_hardening.py. Any TSan report fails the run
# (halt_on_error). Only pyquant's code is instrumented: Python, torch and OpenMP are not; torch's
# own OpenMP memcpys are suppressed (scripts/tsan.supp), no pyquant frame is.
# Usage: scripts/tsan.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
site=$PWD/build/tsan-site
# shellcheck source=scripts/sanitizer-install.sh
source scripts/sanitizer-install.sh
sanitizer_install build/tsan-site build/tsan PYQUANT_TSAN

echo "== pytest under ThreadSanitizer"
libtsan=$(g++ -print-file-name=libtsan.so)
default=(test_threads.py test_hardening.py::test_concurrent_calls_match_serial
         test_hardening.py::test_pyquant_and_torch_threads_in_one_process)
if [ $# -gt 0 ]; then default=("$@"); fi
cd tests
LD_PRELOAD="$libtsan" \
TSAN_OPTIONS="halt_on_error=1:exitcode=66:report_signal_unsafe=0:suppressions=$PWD/../scripts/tsan.supp" \
PYTHONPATH="$site" python -m pytest -q -p no:cacheprovider "${default[@]}"
