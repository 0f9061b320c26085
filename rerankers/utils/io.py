"""Every file the package writes goes through here: atomic replacement of regular files, direct
streaming to what cannot be replaced, and checking an output path before any work starts.

- A regular file (new or existing) is written to a temporary file beside it, fsynced and renamed
  over it by :func:`_replace`, the package's only rename over a file: readers see the old or the
  new content, never half of it. It gets the mode of the file it replaces, or ``0666 & ~umask``.
- A symlink is followed: its target is written atomically, the link stays.
- ``-`` (stdout), a character device (``/dev/null``, a terminal), a FIFO, a socket, and a path that
  names an open file descriptor (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``) are written
  to directly (streamed, not atomically): replacing them would detach the output from its reader.
- A folder (a model) is written into a temporary sibling folder and each file is then moved into
  place through the same :func:`_replace` (:func:`atomic_folder`); a folder that must appear whole
  or not at all (a training checkpoint) is renamed into place in one step (:func:`publish_folder`).

:func:`check_writable` / :func:`check_writable_dir` raise a one-line UnwritableOutputError that
names the path as the user gave it, creating nothing that lasts.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

from rerankers.errors import UnwritableOutputError

STDOUT = "-"
# paths that name an open file descriptor (whatever file it is): replacing them would detach it
_DESCRIPTOR_PATH = re.compile(r"^/(dev/(stdout|stderr|fd/\d+)|proc/(self|thread-self|\d+)(/task/\d+)?/fd/\d+)$")


def _unwritable(given: str, reason: str) -> UnwritableOutputError:
    return UnwritableOutputError(f"cannot write {given}: {reason}")


def _target(path: str) -> Path:
    """The file that writing ``path`` changes: symlinks followed (a dangling one: the file it names)."""
    return Path(os.path.realpath(path))


def _stat(given: str) -> os.stat_result | None:
    """``os.stat`` (links followed), None where nothing is there; UnwritableOutputError where it cannot tell."""
    try:
        return os.stat(given)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # e.g. a folder on the way that may not be searched
        raise _unwritable(given, e.strerror or str(e)) from None


def _access(path: str) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK, effective_ids=effective)


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _final_mode(path: Path) -> int:
    """The permissions of the file being replaced, else those of a new file (0666 minus the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _replace(tmp: Path, dest: Path) -> None:
    """The one place that puts a file into place: fsync ``tmp``, give it ``dest``'s mode, rename it
    over ``dest`` (same file system)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, _final_mode(dest))  # a temporary file's 0600 would make outputs private to their writer
    os.replace(tmp, dest)


def _streamed(path: str) -> bool:
    """True where ``path`` exists and is no plain file to replace: a device, FIFO or socket, or a
    descriptor path (``/dev/stdout`` -> ``/proc/self/fd/1`` -> a file) at any link on the way."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return not stat.S_ISDIR(st.st_mode)
    hop = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on a chain of links
        if _DESCRIPTOR_PATH.match(hop):
            return True
        if not os.path.islink(hop):
            return False
        hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
    return False


def _check_creatable(given: str, folder: Path) -> None:
    """Raise unless a file can be created in ``folder`` or, where it is missing, in the nearest folder
    above it (which then creates the rest); a probe file is created and removed at once."""
    existing = folder
    while True:
        try:
            st = os.stat(existing)
            break
        except (FileNotFoundError, NotADirectoryError):  # missing, or below a file: look further up
            if existing.parent == existing:
                raise _unwritable(given, f"{folder} cannot be created") from None
            existing = existing.parent
        except OSError as e:  # e.g. a folder above that may not be searched
            raise _unwritable(given, f"{existing}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _unwritable(given, f"{existing} is not a directory")
    probe = existing / f".rerankers-probe-{secrets.token_hex(8)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        where = f"{existing}" if existing == folder else f"{folder} is missing and {existing}"
        raise _unwritable(given, f"{where} does not accept new files ({e.strerror or e})") from None
    os.unlink(probe)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``'s target, for writers that open files themselves
    (safetensors); it replaces the target when the ``with`` block ends without an exception."""
    target = _target(os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _replace(Path(tmp), target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open ``path`` for writing so that readers never see a half-written file.

    The data goes to a temporary file beside the target (same file system), which replaces it only
    when the ``with`` block ends without an exception; on an exception the temporary file is removed
    and the target keeps its old content (or stays absent). Parent directories are created. A
    symlink's target is written; ``-``, devices, FIFOs and descriptor paths are streamed (module doc).

    Args:
        path: the final file, or ``-`` for stdout.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: text encoding (ignored in binary mode).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    text = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
    given = os.fspath(path)
    if given == STDOUT:
        out = sys.stdout.buffer if "b" in mode else sys.stdout
        yield out
        out.flush()
    elif _streamed(given):
        # no O_CREAT: the device or FIFO is there; O_APPEND: a descriptor's file keeps what it holds
        with os.fdopen(os.open(given, os.O_WRONLY | os.O_APPEND), mode, **text) as f:
            yield f
    else:
        with atomic_path(given) as tmp, open(tmp, mode, **text) as f:
            yield f


@contextlib.contextmanager
def atomic_folder(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder of ``directory`` to write into; when the ``with`` block ends without
    an exception, each of its files replaces its namesake in ``directory`` (created) atomically.
    Files of ``directory`` that were not written stay; the temporary folder is always removed."""
    out = _target(os.fspath(directory))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        for f in sorted(tmp.rglob("*")):
            if f.is_file() and not f.is_symlink():
                dest = out / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                _replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put a completely written folder ``tmp`` in place as ``final`` in one rename, so that ``final``
    exists whole or not at all (a checkpoint, a saved model). An existing ``final`` is moved aside first
    and removed after; ``tmp`` and ``final`` must be on the same file system. The folder gets the mode
    of a new folder (0777 & ~umask), not mkdtemp's 0700."""
    tmp, final = Path(tmp), _target(os.fspath(final))
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_writable(path: str | os.PathLike) -> None:
    """Raise UnwritableOutputError where a file cannot be written at ``path`` (``-``: stdout, always).

    Checked: a directory where the file should be, a file that may not be written, a folder that
    is missing and cannot be created, a folder in which the atomic replacement's temporary file
    cannot be created. Nothing is left behind.
    """
    given = os.fspath(path)
    if given == STDOUT:
        return
    st = _stat(given)
    if st is None:
        _check_creatable(given, _target(given).parent)
        return
    if stat.S_ISDIR(st.st_mode):
        raise _unwritable(given, "it is a directory, expected a file")
    if not _access(given):
        raise _unwritable(given, "permission denied")
    if not _streamed(given):
        _check_creatable(given, _target(given).parent)


def check_writable_dir(path: str | os.PathLike) -> None:
    """Raise UnwritableOutputError where a folder cannot be written at ``path`` by :func:`atomic_folder`:
    a file in its place, a folder that may not be written or cannot be created, or a parent where its
    temporary sibling cannot be created. Nothing is left behind."""
    given = os.fspath(path)
    target = _target(given)
    st = _stat(given)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise _unwritable(given, "it is a file, expected a directory")
    if st is not None:
        _check_creatable(given, target)
    _check_creatable(given, target.parent)
