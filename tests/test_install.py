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
