import importlib.metadata
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.environ.get("FC_REQUIRE_PILLOW_SIMD") != "1", reason="set FC_REQUIRE_PILLOW_SIMD=1 (CI does)")
def test_pil_is_pillow_simd_and_nothing_reinstalled_plain_pillow():
    """PIL comes from pillow-simd alone: a dependency pulling plain pillow would silently halve shard speed."""
    assert importlib.metadata.version("pillow-simd")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("pillow")


def test_cli_import_stays_light():
    """`fc --help` must not import numpy, torch, pyarrow or numba (heavy imports live inside commands)."""
    code = "import sys, fc.main; print(sorted(m for m in ('numpy', 'torch', 'pyarrow', 'numba', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_setup_installs_the_reference_extra_as_pinned_and_without_dependencies():
    """setup.sh installs the pyproject `reference` pin (OpenAI's BPE file) with --no-deps, so it cannot pull a CUDA torch."""
    import re
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parents[1]
    pins = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["reference"]
    setup = (root / "scripts" / "setup.sh").read_text()
    for pin in pins:
        assert re.search(rf'pip install --quiet --no-deps "{re.escape(pin)}"', setup), pin
