"""Atomic writes: whole or absent, and errors that name the path asked for, not the temp file."""

import numpy as np
import pytest

from bsviz.files import atomic_path, check_writable
from bsviz.rig.render import save_png


def test_atomic_path_replaces_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_errors_name_the_target_not_the_temp_file(tmp_path):
    (tmp_path / "face.png").mkdir()  # renaming the temp file onto a folder fails
    with pytest.raises(OSError) as caught:
        save_png(tmp_path / "face.png", np.zeros((4, 4, 3), np.uint8))
    message = str(caught.value)
    assert message.startswith(f"cannot write {tmp_path / 'face.png'}: ") and ".tmp" not in message
    assert caught.value.errno is not None and list(tmp_path.iterdir()) == [tmp_path / "face.png"]


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "x.npz", make_folder=True).parent.is_dir()
    with pytest.raises(FileNotFoundError, match="output folder .*missing does not exist"):
        check_writable(tmp_path / "missing" / "x.npz")
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="output folder .*file is a file, not a folder"):
        check_writable(tmp_path / "file" / "x.npz", make_folder=True)
    with pytest.raises(IsADirectoryError, match="new is a folder"):
        check_writable(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "new"]
    assert not list((tmp_path / "new").iterdir())  # the probe file is gone
