#!/usr/bin/env bash
# Create (or update) the project's virtual environment at .venv and install the pinned stack plus
# mmvitreg (editable). Idempotent: when nothing changed since the last successful run it only checks
# and returns in seconds. It never touches the caller's own Python environment.
#
# Environment knobs:
#   MMVITREG_VENV       venv location (default: <repo>/.venv)
#   MMVITREG_PYTHON     interpreter used to create the venv (default: python3)
#   MMVITREG_WHEELHOUSE extra --find-links folder holding prebuilt wheels (default: ../shared/wheelhouse
#                       when it exists). Only a cache: without it mmcv is built from source (~20 min).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMVITREG_VENV:-$ROOT/.venv}"
PY="${MMVITREG_PYTHON:-python3}"
WHEELHOUSE="${MMVITREG_WHEELHOUSE:-$ROOT/../shared/wheelhouse}"
STAMP="$VENV/.mmvitreg-stack"
log() { printf '[setup_env] %s\n' "$*"; }

# What the environment is built from: a change to any of these triggers a re-install.
fingerprint() {
  cat "$ROOT/requirements/stack.txt" "$ROOT/requirements/tests.txt" \
      "$ROOT/requirements/constraints.txt" "$ROOT/pyproject.toml" \
      "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1
}

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment at $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
want="$(fingerprint)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VPY" -c "import mmvitreg" 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

PIP=("$VPY" -m pip install --disable-pip-version-check --progress-bar off)
FIND_LINKS=()
if [[ -d "$WHEELHOUSE" ]]; then
  log "using wheel cache $WHEELHOUSE"
  FIND_LINKS=(--find-links "$WHEELHOUSE")
fi

log "step 1/4: build tools (pip, setuptools<82 for mmcv's pkg_resources, wheel, ninja)"
"${PIP[@]}" -q --upgrade "pip>=24" "setuptools<82" wheel ninja packaging

log "step 2/4: torch + torchvision (PyPI pair; several GB on first run)"
"${PIP[@]}" -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"

log "step 3/4: mmcv 2.1.0 with CPU ops (from the wheel cache, else a ~20 min source build)"
if "$VPY" -c "import mmcv, sys; from mmcv.ops import nms; sys.exit(mmcv.__version__ != '2.1.0')" 2>/dev/null; then
  log "mmcv 2.1.0 already installed"
else
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" "${FIND_LINKS[@]}" --no-build-isolation "mmcv==2.1.0"
fi

log "step 4/4: OpenMMLab stack, test tools and mmvitreg (editable)"
# constraints.txt: the exact versions the README's measurements ran with (reproducible runs)
"${PIP[@]}" -q "${FIND_LINKS[@]}" -r "$ROOT/requirements/stack.txt" -r "$ROOT/requirements/tests.txt" \
  -c "$ROOT/requirements/constraints.txt"
"${PIP[@]}" -q --no-build-isolation --no-deps -e "$ROOT"
# openmim for the `mim train/test mmvitreg` test: without its dependency chain, which pins an old
# setuptools (mim itself needs only click, requests and tabulate)
"${PIP[@]}" -q --no-deps "openmim==0.3.9"
"${PIP[@]}" -q "requests>=2.28" "tabulate>=0.9" -c "$ROOT/requirements/constraints.txt"
"$VPY" - <<'PY'
import torch, torchvision, mmcv, mmengine, mmdet, mmpretrain, timm, numpy, mmvitreg
print('[setup_env] versions: ' + ', '.join(f'{m.__name__} {m.__version__}' for m in
      (torch, torchvision, mmcv, mmengine, mmdet, mmpretrain, timm, numpy, mmvitreg)))
PY
echo "$want" > "$STAMP"
log "done: activate with 'source $VENV/bin/activate'"
