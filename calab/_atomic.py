"""Crash-safe file writing: write to a temporary name, then rename into place.

Every file calab writes (``.npy`` traces, JSON sidecars, CLI outputs) goes through
:func:`atomic_write` or :func:`atomic_write_many`.  The data are written to a hidden
temporary file *in the destination directory* (so the final :func:`os.replace` is a
same-filesystem rename, which POSIX and Windows both perform atomically), flushed and
fsynced, and only then renamed over the destination.  A crash, a full disk or an
exception half-way through therefore leaves either the old file or no file, never a
truncated one, and the temporary file is removed on failure.

A process killed outright (``kill -9``, power loss) cannot remove its temporary file.  Such
a leftover is hidden, named ``.<file name>.calab-<host>-<pid>.<random>.tmp``, and removed
by the next calab write to the same destination once its writer's process is gone (see
:func:`remove_stale_temporaries`).

Overwrite policy (see ``docs/differences.md``): the library functions replace existing
files (as the published calab does), but atomically; the ``calab`` command line refuses
to replace an existing file unless ``--force`` is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_many", "check_writable", "remove_stale_temporaries"]


def _current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:  # Linux: read it, no global state touched (os.umask is not thread-safe)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(destination: Path) -> int:
    """Permissions the finished file should get.

    ``tempfile`` creates files with mode 0600; a plain ``open()`` would have produced
    ``0666 & ~umask``, and replacing an existing file should keep its permissions.
    """
    try:
        return destination.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_current_umask()


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Validate an output path before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the destination directory does not exist.
    FileExistsError
        If the file exists and ``overwrite`` is False.
    IsADirectoryError
        If the destination is a directory.
    """
    destination = Path(path)
    parent = destination.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Output directory does not exist: {parent}. Create it first (mkdir -p {parent}) "
            "or choose another output path."
        )
    if destination.is_dir():
        raise IsADirectoryError(f"Output path is a directory: {destination}. Give a file name.")
    if destination.exists() and not overwrite:
        raise FileExistsError(
            f"Refusing to overwrite existing file {destination}. Pass --force (or overwrite=True) "
            "to replace it, or choose another output name."
        )
    return destination


#: Temporary files are named ``.<destination name>.calab-<host>-<pid>.<random>.tmp``: the
#: writer's host and process id make a leftover provably ours and provably stale.
_TEMP_MARK = ".calab-"
_TEMP_SUFFIX = ".tmp"
#: Keep temporary names well under the usual 255-byte file-name limit.
_MAX_NAME_PART = 150


def _host_tag() -> str:
    """This machine's name, reduced to characters safe in a file name (at most 32)."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "localhost")
    return host[:32] or "localhost"


def _temporary_prefix(destination: Path) -> str:
    """``.<name>.calab-``: the fixed start of every temporary file for ``destination``."""
    return f".{destination.name[:_MAX_NAME_PART]}{_TEMP_MARK}"


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (POSIX; a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(destination: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that a killed calab writer left next to ``destination``.

    A leftover is removed only when it is provably ours and provably stale: its name has
    calab's pattern for this destination (``.<name>.calab-<host>-<pid>.<random>.tmp``),
    it was written on this host by a process that no longer exists, it is a regular file
    (not a link) and it belongs to the current user.  Anything else is left alone,
    including temporaries of calab versions before 0.4 (``.<name>.<random>.tmp``).
    Only POSIX systems are cleaned (checking a process id on Windows is not harmless).

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    if os.name != "posix":
        return []
    destination = Path(destination)
    directory = destination.parent if str(destination.parent) else Path(".")
    prefix = _temporary_prefix(destination)
    pattern = re.compile(re.escape(prefix) + re.escape(_host_tag()) + r"-(\d+)\.[^/]*" + re.escape(_TEMP_SUFFIX))
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove
        removed.append(Path(entry.path))
    return removed


def _open_temporary(destination: Path, mode: str) -> tuple[IO, Path]:
    remove_stale_temporaries(destination)
    fd, name = tempfile.mkstemp(
        prefix=f"{_temporary_prefix(destination)}{_host_tag()}-{os.getpid()}.",
        suffix=_TEMP_SUFFIX,
        dir=destination.parent or Path("."),
    )
    try:
        handle = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return handle, Path(name)


def _finish(handle: IO, temporary: Path, destination: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.chmod(temporary, _final_mode(destination))


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort; not possible on every platform)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` only if the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.  Its directory must exist.
    mode : {"wb", "w"}
        Binary or text (UTF-8) mode.

    Yields
    ------
    file object
        Write to it; do not close it.

    Examples
    --------
    >>> with atomic_write("out.json", "w") as handle:   # doctest: +SKIP
    ...     handle.write("{}")
    """
    destination = Path(path)
    handle, temporary = _open_temporary(destination, mode)
    try:
        yield handle
        _finish(handle, temporary, destination)
        os.replace(temporary, destination)
    except BaseException:
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(destination.parent)


def atomic_write_many(
    writers: Sequence[tuple[str | os.PathLike[str], str, Callable[[IO], object]]],
) -> None:
    """Write several files so that none is replaced unless all were written.

    Every file is first written completely to its own temporary name; only when all of
    them succeeded are they renamed into place, in order.  (Two renames cannot be one
    atomic step, but the window between them is a few microseconds and each file on its
    own is always complete.)

    Parameters
    ----------
    writers : sequence of (path, mode, write_function)
        ``write_function(handle)`` writes one file's content.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, mode, write in writers:
            destination = Path(path)
            handle, temporary = _open_temporary(destination, mode)
            staged.append((temporary, destination))
            try:
                write(handle)
                _finish(handle, temporary, destination)
            finally:
                handle.close()
        for temporary, destination in staged:
            os.replace(temporary, destination)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)  # no-op for files already renamed
    directories = {destination.parent for _, destination in staged}
    for directory in directories:
        _fsync_directory(directory)
