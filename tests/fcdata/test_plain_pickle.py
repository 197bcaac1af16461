import os
import pickle

import pytest

from fcdata.errors import UserError
from fcdata.plain_pickle import load_plain_pickle


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_plain_pickle_refuses_any_class_and_runs_nothing(tmp_path):
    """A refs file that names a callable (here os.mkdir) fails with one line; the callable never runs."""
    target = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Exploit(str(target))}], protocol=2))
    with pytest.raises(UserError, match="refuses to load posix.mkdir|refuses to load os.mkdir"):
        load_plain_pickle(path)
    assert not target.exists()


def test_plain_pickle_reads_python2_byte_strings_and_protocol_2(tmp_path):
    """Python 2 str (SHORT_BINSTRING) decode to str; a protocol-2 pickle of plain data round-trips."""
    path = tmp_path / "py2.p"
    path.write_bytes(b"\x80\x02]q\x00(U\x03abcq\x01}q\x02U\x01kK\x07se.")  # Python 2: ['abc', {'k': 7}]
    assert load_plain_pickle(path) == ["abc", {"k": 7}]
    data = [{"sentences": [{"raw": "left man", "sent_id": 3}], "split": "val", "box": (1.5, 2)}]
    path.write_bytes(pickle.dumps(data, protocol=2))
    assert load_plain_pickle(path) == data
    path.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a plain-data pickle"):
        load_plain_pickle(path)
