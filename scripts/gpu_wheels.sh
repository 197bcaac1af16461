#!/usr/bin/env bash
# Wheels, into .whl/ (ignored by git), of the packages the project needs that the GPU machine's
# image lacks. That machine (Python 3.12, manylinux x86_64) has no network: the wheels travel
# with the working tree (the device tool's carry: [".whl"]) and benchmarks/gpu_check.sh installs
# them into a temporary folder there. Its image already holds torch, transformers, peft,
# tokenizers, safetensors, pyarrow, numpy, numba, typer, rich, pillow, pyyaml, pytest and
# hypothesis (/work/.library/device/KINDS.md); what it lacks is the loader's webdataset and
# braceexpand, and ftfy (caption cleaning) with its wcwidth. Versions are those of .venv where
# installed there, so both machines run the same ones; else the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${FC_PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
packages=(webdataset braceexpand ftfy wcwidth)
specs=()
for name in "${packages[@]}"; do
    version="$("$py" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name" 2>/dev/null || true)"
    specs+=("$name${version:+==$version}")
done
# A fresh folder each time: two versions of one package would stop the install there.
staging="$(mktemp -d .whl.tmp-XXXXXX)"
trap 'rm -rf "$staging"' EXIT
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$staging" "${specs[@]}"
rm -rf .whl
mv "$staging" .whl
echo "gpu_wheels: .whl/ holds $(ls .whl | wc -l) wheels ($(du -sh .whl | cut -f1)):"
# What each wheel needs (pip download --no-deps fetched none of it): all on the image, or listed above.
"$py" - .whl/*.whl <<'PY'
import sys, zipfile
for path in sys.argv[1:]:
    with zipfile.ZipFile(path) as wheel:
        meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        lines = wheel.read(meta).decode().splitlines()
    needs = [l.split(":", 1)[1].strip() for l in lines if l.startswith("Requires-Dist:") and "extra ==" not in l]
    print(f"  {path.split('/')[-1]}" + (f"   needs: {', '.join(needs)}" if needs else ""))
PY
