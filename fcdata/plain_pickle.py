"""Load pickles that may only hold plain data (the RefCOCO `refs(*).p` files).

A pickle can name any importable callable and have it called while loading, so `pickle.load` on a
downloaded file runs whatever the file says. These files are Python-2-era pickles of lists, dicts,
strings and numbers only; the unpickler below refuses every class and global, so a malicious file
fails with a one-line error instead of running code. Python 2 `str` values are bytes: they are
decoded as UTF-8 (latin-1 where that fails, which maps every byte).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from fcdata.errors import UserError


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: only plain lists, dicts, strings and numbers are allowed")


def _text(value):
    """Python 2 byte strings -> str, through lists, tuples and dicts."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_text(v) for v in value)
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def load_plain_pickle(path: Path):
    """The plain data in the pickle at `path`; UserError if it is missing, corrupt or holds anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with path.open("rb") as stream:
            # encoding="bytes" keeps Python 2 str as bytes (decoded above) rather than guessing ASCII.
            return _text(_PlainUnpickler(stream, encoding="bytes").load())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise UserError(f"{path}: not a plain-data pickle ({exc})") from None
