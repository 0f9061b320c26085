"""atomic_write: all-or-nothing replacement of a file."""
import pytest

from rerankers.utils.io import atomic_write


def test_replaces_on_success_and_keeps_old_on_error(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as f:
        f.write("first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary left behind


def test_binary_mode(tmp_path):
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_permissions_as_open_would_give(tmp_path):
    """Not mkstemp's private 0600: a new file follows the umask, a replaced file keeps its mode."""
    import os

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.txt") as f:
            f.write("x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "new.txt", 0o664)
        with atomic_write(tmp_path / "new.txt") as f:
            f.write("y")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(umask)
