#!/usr/bin/env bash
# Create (or reuse) ./.venv and install rlhfv into it. Safe to run twice.
#   bash scripts/install.sh        # the package
#   bash scripts/install.sh dev    # plus test tools (pytest, hypothesis, ruff, TRL, playwright)
# torch: a torch already in .venv is kept (a GPU user's CUDA build stays as it is).
# Otherwise RLHFV_TORCH (default "torch==2.14.1 torchvision==0.29.1", a CUDA build that
# also runs on the CPU; torchvision is needed by Qwen2-VL processors) is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${RLHFV_PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "installing ${RLHFV_TORCH:-torch==2.14.1 torchvision==0.29.1} (about 1.5 minutes the first time)"
  # shellcheck disable=SC2086
  "${pip[@]}" install -q ${RLHFV_TORCH:-torch==2.14.1 torchvision==0.29.1}
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
if ! .venv/bin/python -c "import torchvision" >/dev/null 2>&1; then
  echo "note: torchvision is missing beside this torch; Qwen2-VL processors (and their tests) need the matching build" >&2
fi
log=$(mktemp)
if ! "${pip[@]}" install -q -e "$spec" >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "error: pip could not install rlhfv ($spec); see above" >&2
  exit 1
fi
grep -v -e "^WARNING: Location" -e "^$" "$log" || true
rm -f "$log"
.venv/bin/python -c "import rlhfv, torch; print(f'rlhfv {rlhfv.__version__} ready (torch {torch.__version__})')"
