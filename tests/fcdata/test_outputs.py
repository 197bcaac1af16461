"""Output-path checks made before work starts, and the removal of dead writers' temporaries."""

import os
import subprocess
import sys

import pytest

from fcdata.errors import UserError
import contextlib

from fcdata.outputs import (
    atomic_output,
    check_output_dir,
    check_output_file,
    open_atomically,
    remove_stale_temporaries,
    write_directory_atomically,
    write_json_atomically,
    write_text_atomically,
)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_the_temporaries_of_dead_processes_are_removed(tmp_path):
    """A dead writer's temporary folder and file go; a live writer's, and other files, stay."""
    dead = dead_pid()
    stale_dir = tmp_path / f".tiny-model.tmp-{dead}-abcd1234"
    (stale_dir / "sub").mkdir(parents=True)
    stale_file = tmp_path / f"train-00000.tar.tmp{dead}"
    stale_file.write_bytes(b"x")
    live = tmp_path / f".tiny-model.tmp-{os.getpid()}-live"
    live.mkdir()
    mine = tmp_path / "notes.tmp.txt"
    mine.write_text("no pid in the name: not ours")
    removed = remove_stale_temporaries(tmp_path)
    assert set(removed) == {stale_dir, stale_file}
    assert live.exists() and mine.exists() and not stale_dir.exists() and not stale_file.exists()


def test_output_checks_name_the_problem(tmp_path, read_only_dir):
    """A file where a folder should be, a folder where a file should be, a read-only place: each
    a one-line UserError before anything is written."""
    regular = tmp_path / "file"
    regular.write_text("mine")
    with pytest.raises(UserError, match="exists and is not a directory"):
        check_output_dir(regular)
    with pytest.raises(UserError, match="is a folder; give a file name"):
        check_output_file(tmp_path)
    with pytest.raises(UserError, match="cannot write there") as caught:
        check_output_dir(read_only_dir / "out")
    assert str(read_only_dir) in str(caught.value)
    with pytest.raises(UserError, match="cannot write there"):
        check_output_dir(regular / "below-a-file")  # ENOTDIR
    assert regular.read_text() == "mine"
    assert check_output_dir(tmp_path / "new" / "deeper").is_dir()


def test_atomic_text_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    """write_text_atomically either replaces the file whole or leaves it (and no temporary)."""
    path = tmp_path / "config.toml"
    write_text_atomically(path, "old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_text_atomically(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_atomic_output_renames_on_success_and_deletes_on_an_exception(tmp_path):
    """The one temp-then-rename helper: the file appears whole (durable or not), a failed block
    leaves the old file and no temporary, and the temporary follows the dead-writer naming rule."""
    path = tmp_path / "summary.json"
    with atomic_output(path) as temporary:
        assert temporary.parent == tmp_path and temporary.name == f".summary.json.tmp{os.getpid()}"
        temporary.write_text("one")
        assert not path.exists()
    with atomic_output(path, durable=True) as temporary:
        temporary.write_text("two")
    with pytest.raises(KeyError):
        with atomic_output(path) as temporary:
            temporary.write_text("half")
            raise KeyError("interrupted")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    write_json_atomically(tmp_path / "sub" / "sizes.json", {"b": 1, "a": 2}, sort_keys=True)
    assert (tmp_path / "sub" / "sizes.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_streams_opened_atomically_appear_together_or_not_at_all(tmp_path):
    """open_atomically: closed then renamed when the stack closes; all deleted if it raises."""
    names = ("objects.json", "regions.json")
    with contextlib.ExitStack() as stack:
        for name in names:
            open_atomically(stack, tmp_path / name).write("[]")
        assert not any((tmp_path / name).exists() for name in names)
    assert [(tmp_path / name).read_text() for name in names] == ["[]", "[]"]
    with pytest.raises(RuntimeError), contextlib.ExitStack() as stack:
        open_atomically(stack, tmp_path / "new.json").write("[1, ")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_directory_written_atomically_replaces_the_old_one_whole(tmp_path):
    """write_directory_atomically (durable too): the new folder replaces the old; a failure keeps it."""
    out = tmp_path / "step-0000002"
    with write_directory_atomically(out) as tmp:
        (tmp / "a").write_text("old")
    with write_directory_atomically(out, durable=True) as tmp:
        (tmp / "b").write_text("new")
    with pytest.raises(ValueError), write_directory_atomically(out) as tmp:
        (tmp / "c").write_text("half")
        raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000002"] and [p.name for p in out.iterdir()] == ["b"]
