#!/usr/bin/env bash
# Extra CI checks run by .ci/run after the main test suite: NEON kernels under qemu-aarch64,
# the kernel tests (and GPTQ's native sweeps) under ASan+UBSan (the other front-end/search tests are left to the main run), the
# threading tests under ThreadSanitizer, and a soak of the quantized layers (resident memory flat over 100,000 calls).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== NEON under qemu"
scripts/neon-qemu.sh
echo "== sanitizers"
kernel_tests=()
for f in test_packing.py test_int8_gemm.py test_lut_gemm.py test_lowbit_gemm.py test_sparq.py test_hardening.py \
         test_untrusted.py test_fuzz_packed.py test_gru_native.py test_sparq24.py test_conv_native.py \
         test_grouped_forward.py test_recurrent.py test_grouped_conv.py test_gptq.py test_conv_transpose.py \
         test_pair_route.py; do
  [ -f "tests/$f" ] && kernel_tests+=("$f")
done
scripts/sanitize.sh "${kernel_tests[@]}"
echo "== ThreadSanitizer: layers from many Python threads, pyquant's pool and torch's threads busy"
scripts/tsan.sh
echo "== soak: 100,000 forward calls per config, resident memory flat"
python scripts/soak.py --calls 100000
