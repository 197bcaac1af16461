#!/usr/bin/env bash
# The prepared GPU check (fcbench.gpu_check): bash benchmarks/gpu_check.sh OUT_DIR [--cpu] [--stages a,b]
# Runs from a checkout without installing it, with the interpreter that has torch: .venv's if
# there is one, else python3 (the GPU machine's). Wheels carried in .whl/ (scripts/gpu_wheels.sh)
# are installed to a temporary folder first where a needed package is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${FC_PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
if compgen -G "$root/.whl/*.whl" >/dev/null && ! "$py" -c "import webdataset, braceexpand, ftfy" 2>/dev/null; then
    site="$(mktemp -d)"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$root"/.whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# fc and fcbench are the folders cli/ and benchmarks/ (pyproject's package-dir): link them under
# those names so a checkout that was never pip-installed imports as an installed one does.
if ! (cd / && "$py" -c "import fc, fcbench, fcdata, fctrain") 2>/dev/null; then
    links="$(mktemp -d)"
    ln -s "$root/cli" "$links/fc"
    ln -s "$root/benchmarks" "$links/fcbench"
    export PYTHONPATH="$root:$links${PYTHONPATH:+:$PYTHONPATH}"
fi
cd "$root"
exec "$py" -m fcbench.gpu_check "$@"
