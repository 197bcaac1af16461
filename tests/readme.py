"""The README's ```python blocks, found and run the way tests/test_readme.py documents."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    line: int  # README line of the block's first code line
    code: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def python_blocks(path: Path = README) -> list[Block]:
    text = path.read_text()
    return [Block(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in _BLOCK.finditer(text)]


def block_containing(snippet: str) -> Block:
    """The one README block whose code contains `snippet`."""
    found = [block for block in python_blocks() if snippet in block.code]
    assert len(found) == 1, f"{len(found)} README python blocks contain {snippet!r}"
    return found[0]


@contextmanager
def _working_directory(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_block(block: Block, working_dir: Path) -> dict:
    """Execute a block in a fresh namespace with `working_dir` as the working directory; its
    variables afterwards. Tracebacks give README.md's own line numbers."""
    namespace = {"__name__": "__readme__"}
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    with _working_directory(working_dir):
        exec(code, namespace)  # noqa: S102 - our own README, the point of the test
    return namespace
