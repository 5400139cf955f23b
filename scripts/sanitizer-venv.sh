# Sourced by scripts/sanitize.sh and scripts/tsan.sh: builds pyquant with one sanitizer option
# into its own venv (torch's pinned CPU build first, then the build and test tools).
# Usage: sanitizer_venv VENV BUILD_DIR CMAKE_OPTION   (e.g. build/tsan-venv build/tsan PYQUANT_TSAN)
sanitizer_venv() {
  local venv=$1 build_dir=$2 option=$3
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
  fi
  "$venv/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING" || true
  "$venv/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" numpy pytest \
    hypothesis safetensors 2>&1 | grep -v "^WARNING" || true
  "$venv/bin/python" -m pip install -q --no-build-isolation -Cbuild-dir="$build_dir" \
    -Ccmake.define."$option"=ON -Ccmake.build-type=RelWithDebInfo . 2>&1 | grep -v "^WARNING" || true
}
