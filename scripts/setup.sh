#!/usr/bin/env bash
# Creates .venv (if missing) and installs Focus-CLIP into it. Safe to run again: pip skips what is
# already satisfied. Environment knobs:
#   FC_VENV   where the virtual environment goes   (default: .venv in the repository)
#   FC_TORCH  the torch requirement                (default: torch==2.13.0; CPU build on CI machines)
#   FC_PIL    pillow-simd | pillow                  (default: pillow-simd, ~2x faster sharding)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FC_VENV:-.venv}"
torch_spec="${FC_TORCH:-torch==2.13.0}"
pil="${FC_PIL:-pillow-simd}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch pulled in by another package may be a multi-GB CUDA build.
"$py" -m pip install --quiet "$torch_spec"
"$py" -m pip install --quiet -e ".[dev]"
# The `reference` extra (pyproject.toml; keep the pin in step): only for its BPE vocabulary file, so
# without its dependencies (torchvision, timm, an unpinned torch).
"$py" -m pip install --quiet --no-deps "open-clip-torch==3.3.0"
# PIL last, so nothing installed after it can replace pillow-simd with plain pillow.
if [ "$pil" = "pillow-simd" ]; then
    if ! "$py" -m pip install --quiet "pillow-simd>=9.5"; then
        echo "setup: pillow-simd did not build (needs libjpeg and zlib headers: apt install libjpeg-dev zlib1g-dev);" \
             "installing plain pillow instead (sharding ~2x slower)" >&2
        "$py" -m pip install --quiet "pillow>=10"
    fi
else
    "$py" -m pip install --quiet "pillow>=10"
fi
"$py" -c "import PIL, torch, fcdata, fctrain, fc; print(f'setup: ok (torch {torch.__version__}, PIL {PIL.__version__})')"
