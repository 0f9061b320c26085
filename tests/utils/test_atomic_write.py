"""The package's one writer: all-or-nothing replacement of files and folders, symlinks followed,
devices / FIFOs / descriptor paths / ``-`` streamed, umask modes, and checking a path before work."""
import contextlib
import os
import stat
import threading

import pytest

from rerankers.errors import UnwritableOutputError
from rerankers.utils.io import atomic_folder, atomic_path, atomic_write, check_writable, check_writable_dir


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


# ---- what is not a plain file: followed or streamed ----------------------------------------------
def test_a_symlink_is_followed_and_its_target_replaced(tmp_path):
    target = tmp_path / "real" / "run.trec"
    target.parent.mkdir()
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.trec"
    link.symlink_to(target)
    with atomic_write(link) as f:
        f.write("new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.trec", "real"]  # no temporary beside the link
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "real" / "created.txt")
    with atomic_write(dangling) as f:
        f.write("x")
    assert dangling.is_symlink() and (tmp_path / "real" / "created.txt").read_text() == "x"


def test_a_fifo_is_streamed_to_its_reader(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with atomic_write(fifo, "wb") as f:
        f.write(b"streamed\n")
    reader.join(timeout=10)
    assert got == [b"streamed\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_terminal_is_streamed_not_replaced():
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        with atomic_write(name) as f:
            f.write("to the terminal\n")
        assert os.read(master, 1024).replace(b"\r", b"") == b"to the terminal\n"
        assert stat.S_ISCHR(os.stat(name).st_mode)
    finally:
        os.close(master)
        os.close(slave)


def test_descriptor_paths_write_through_the_open_descriptor(tmp_path):
    """/dev/stdout redirected to a file: the file behind the descriptor gets the output appended, it is
    never replaced by another file (the descriptor would then write into a deleted one)."""
    log = tmp_path / "log.txt"
    with open(log, "a") as held:
        held.write("before\n")
        held.flush()
        inode = os.fstat(held.fileno()).st_ino
        with atomic_write(f"/dev/fd/{held.fileno()}") as f:
            f.write("ours\n")
        with atomic_write(f"/proc/self/fd/{held.fileno()}") as f:
            f.write("again\n")
        assert os.stat(log).st_ino == inode
    assert log.read_text() == "before\nours\nagain\n"
    read_end, write_end = os.pipe()
    try:
        with atomic_write(f"/proc/self/fd/{write_end}", "wb") as f:
            f.write(b"through the pipe")
        assert os.read(read_end, 100) == b"through the pipe"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_dash_is_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with atomic_write("-") as f:
        f.write("to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"
    with atomic_write("-", "wb") as f:
        f.write(b"bytes\n")
    assert capsys.readouterr().out == "bytes\n"
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_dev_stdout_is_a_descriptor_path_whatever_it_points_to():
    """Checked without writing: a regression would replace /dev/stdout itself (as root it may)."""
    from rerankers.utils import io
    assert io._streamed("/dev/stdout") and io._streamed("/dev/stderr")  # pytest's stdout: a pipe or a file


# ---- modes and folders ---------------------------------------------------------------------------
@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_path_and_folder_give_umask_modes_and_replace_file_by_file(tmp_path):
    with _umask(0o022):
        with atomic_path(tmp_path / "w" / "model.safetensors") as tmp:
            tmp.write_bytes(b"weights")
        assert (tmp_path / "w" / "model.safetensors").stat().st_mode & 0o777 == 0o644
        out = tmp_path / "model"
        out.mkdir()
        (out / "kept.txt").write_text("kept")
        with atomic_folder(out) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "a.bin").write_bytes(b"a")
            (tmp / "b.json").write_text("{}")
        assert (out / "sub" / "a.bin").read_bytes() == b"a" and (out / "kept.txt").read_text() == "kept"
        assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o644}
        assert (out / "sub").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "w"]  # no temporary sibling left
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "b.json").write_text("half")
            raise RuntimeError("boom")
    assert (out / "b.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["model", "w"]


# ---- checking before any work --------------------------------------------------------------------
def test_check_writable_names_the_path_and_creates_nothing(tmp_path):
    check_writable("-")
    check_writable(tmp_path / "new" / "deeper" / "out.tsv")  # missing folders that can be created
    (tmp_path / "file").write_text("x")
    check_writable(tmp_path / "file")
    check_writable_dir(tmp_path / "new-model")
    check_writable_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    cases = [
        (check_writable, tmp_path, "is a directory, expected a file"),
        (check_writable, tmp_path / "file" / "out.tsv", "file is not a directory"),
        (check_writable_dir, tmp_path / "file", "is a file, expected a directory"),
        (check_writable, "/proc/rerankers-absent/out.tsv", "does not accept new files"),
        (check_writable_dir, "/proc/rerankers-absent/model", "does not accept new files"),
    ]
    for check, path, reason in cases:
        with pytest.raises(UnwritableOutputError, match=rf"^cannot write {path}: .*{reason}") as e:
            check(path)
        assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _unprivileged(unprivileged, calls) -> list[str]:
    """Each ``(check, path)`` run as a user without root's rights (the ``unprivileged`` fixture): 'ok' or the
    error's message."""
    def run() -> str:
        lines = []
        for check, path in calls:
            try:
                check(path)
                lines.append("ok")
            except UnwritableOutputError as e:
                lines.append(str(e))
        return "\n".join(lines)
    return unprivileged(run).splitlines()


def test_check_writable_refuses_a_directory_without_permission(shared_tmp, unprivileged):
    """A folder that may not be written and a read-only file, as a user without root's rights."""
    locked = shared_tmp / "locked"
    locked.mkdir()
    (locked / "run.trec").write_text("")
    (locked / "run.trec").chmod(0o444)
    locked.chmod(0o555)
    try:
        lines = _unprivileged(unprivileged, [(check_writable, locked / "out.tsv"),
                                             (check_writable, locked / "run.trec"),
                                             (check_writable_dir, locked / "model")])
    finally:
        locked.chmod(0o755)
    assert lines == [f"cannot write {locked}/out.tsv: {locked} does not accept new files (Permission denied)",
                     f"cannot write {locked}/run.trec: permission denied",
                     f"cannot write {locked}/model: {locked} does not accept new files (Permission denied)"]
