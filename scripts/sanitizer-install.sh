# Sourced by scripts/sanitize.sh and scripts/tsan.sh: builds pyquant with one sanitizer option and
# installs it into a directory of its own. Not a venv: the tests run on the `python` on PATH (which
# has torch and the test tools: `pip install '.[test]'`, as .ci/run does), with that directory first
# on PYTHONPATH. A venv per sanitizer installed torch twice more (~1 GB each) and once filled CI's disk.
# Usage: sanitizer_install SITE_DIR BUILD_DIR CMAKE_OPTION   (e.g. build/tsan-site build/tsan PYQUANT_TSAN)
sanitizer_install() {
  local site=$1 build_dir=$2 option=$3
  if ! python -c "import torch, pytest, hypothesis" 2>/dev/null; then
    echo "error: the python on PATH lacks torch/pytest/hypothesis; activate a venv with pyquant's test extra (pip install '.[test]')" >&2
    return 1
  fi
  # The build tools for a --no-build-isolation build (small; pip's Location warnings dropped, its errors kept).
  python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja 2>&1 | { grep -v "^WARNING" || true; }
  python -m pip install -q --no-build-isolation --no-deps --upgrade --target "$site" -Cbuild-dir="$build_dir" \
    -Ccmake.define."$option"=ON -Ccmake.build-type=RelWithDebInfo . 2>&1 | { grep -v "^WARNING" || true; }
  local want=$PWD/$site/pyquant found
  found=$(cd / && PYTHONPATH="${want%/pyquant}" python -c "import importlib.util as u; print(u.find_spec('pyquant').submodule_search_locations[0])")
  if [ "$found" != "$want" ]; then
    echo "error: the sanitized pyquant in $site is not the one imported ($found)" >&2
    return 1
  fi
}
