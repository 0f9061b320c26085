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
