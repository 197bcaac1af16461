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


def test_every_third_party_import_of_the_package_is_declared():
    """Each distribution that fcdata, fctrain, the CLI or the benchmarks import is a dependency or
    an extra in pyproject.toml (braceexpand was imported for a while without being declared)."""
    import ast
    import re
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    ours = {"fc", "fcbench", "fcdata", "fctrain"}
    imported = set()
    for folder in ("fcdata", "fctrain", "cli", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    fallbacks = {"click"}  # cli/main.py: only under an older typer, which requires click itself
    third_party = sorted(imported - ours - fallbacks - set(sys.stdlib_module_names))
    distributions = importlib.metadata.packages_distributions()
    # Import names whose distribution is named otherwise, for where it is not installed (CI):
    # DALI (benchmarks/loader_peers.py) imports as nvidia.dali.
    not_installed = {"nvidia": "nvidia-dali-cuda120"}
    undeclared = {}
    for module in third_party:
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [not_installed.get(module, module)])}
        if not names & (declared | {"pillow-simd", "pillow"}):  # PIL: either extra
            undeclared[module] = sorted(names)
    assert len(third_party) > 10 and not undeclared, undeclared
