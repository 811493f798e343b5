"""The private folders of loads with files: written inside, removed only when made here."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from modelyard.errors import InvalidArgument
from modelyard.manager._loading import OVERRIDE_PREFIX, remove_override, write_override


def _private_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(OVERRIDE_PREFIX + "*")}


def test_paths_are_relative_to_the_model_folder() -> None:
    root = write_override("m", {"/1/model.py": b"a", "2/x": b"b"})
    try:
        assert (root / "1" / "model.py").read_bytes() == b"a"
        assert (root / "2" / "x").read_bytes() == b"b"
        assert root.name == "m" and root.parent.name.startswith(OVERRIDE_PREFIX)
    finally:
        remove_override(root)
    assert not root.parent.exists()


@pytest.mark.parametrize(
    "files",
    [
        {"../x": b""},
        {"/../x": b""},
        {"1/../../x": b""},
        {"": b""},
        {"/": b""},
        {".": b""},
        {"a\0b": b""},
        {"a": b"", "a/b": b""},  # a folder where a file was written
        {"a/b": b"", "a": b""},  # a file where a folder is
    ],
)
def test_refused_paths_leave_nothing(files: dict[str, bytes]) -> None:
    before = _private_folders()
    with pytest.raises(InvalidArgument):
        write_override("m", files)
    assert _private_folders() == before


@pytest.mark.parametrize("name", [".", "..", "a/b", ""])
def test_names_that_walk_are_refused_before_anything_is_made(name: str) -> None:
    before = _private_folders()
    with pytest.raises(InvalidArgument):
        write_override(name, {"1/model.py": b""})
    assert _private_folders() == before


def test_only_folders_made_here_are_removed(tmp_path: Path) -> None:
    mine = tmp_path / "not-an-override" / "m"
    mine.mkdir(parents=True)
    remove_override(mine)  # its parent was not made by write_override: left alone
    assert mine.exists()
    lookalike = tmp_path / (OVERRIDE_PREFIX + "x") / "m"  # right prefix, wrong place
    lookalike.mkdir(parents=True)
    remove_override(lookalike)
    assert lookalike.exists()
    remove_override(Path(tempfile.gettempdir()) / ".")  # "." once meant $TMPDIR's parent
    assert Path(tempfile.gettempdir()).is_dir()
