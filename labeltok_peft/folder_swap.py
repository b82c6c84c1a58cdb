"""Crash-safe and concurrency-safe replacement of a folder: write a complete new folder beside it, then switch.

`replace_folder(target, write)` is the only way the library writes an adapter folder:

1. take an exclusive lock on the parent folder (`flock`; released by the kernel when the process dies), so that
   saves into the same parent run one after another;
2. delete staging folders that earlier saves left behind when they were killed (they are never the target);
3. create a staging folder `.<name>.labeltok-save-*` beside the target and let `write` fill it; everything else the
   target holds (files the caller does not own: a trainer's checkpoints, metrics, a lock file) is hard-linked into
   it, so a save never deletes what it did not write; flush every file and the folder to disk (`fsync`);
4. switch: a missing target is created by one `rename`; an existing one is swapped with the staging folder by one
   `renameat2(RENAME_EXCHANGE)` (Linux >= 3.15), so the target path names the complete old folder until the swap
   and the complete new folder after it. Where that call does not exist (other systems, some network file systems)
   the old folder is first renamed aside (`.<name>.labeltok-old-*`) and the new one renamed into place: a crash
   between those two renames leaves no folder at the target path, and the next save (or `recover_folder`) puts the
   old one back;
5. delete the old folder.

What "atomic" means here: each step is one `rename` of a whole folder, which POSIX makes atomic for a single path.
A reader that opens the files one by one while a save swaps the folder can still read one file of the old and one
of the new folder; the integrity hashes in the adapter's config turn such a mixed read into a clear error.

All file-system calls go through the small functions below, so that tests can interrupt a save at each one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

STAGING_MARK = ".labeltok-save-"
ASIDE_MARK = ".labeltok-old-"

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


class FolderWriteError(OSError):
    """A save could not be completed (disk full, permissions, ...); the folder at the target is unchanged."""


# --------------------------------------------------------------------------------------------------- file-system calls


def _rename(source: Path, destination: Path) -> None:
    os.rename(source, destination)


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two existing paths in one atomic step; returns False where the system cannot."""
    if os.name != "posix":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _link_tree(source: Path, destination: Path) -> None:
    """Recreates `source` at `destination` with hard links (no data is copied; a copy where links are refused)."""
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        destination.mkdir()
        for child in source.iterdir():
            _link_tree(child, destination / child.name)
    else:
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _fsync_path(path: Path) -> None:
    """Flushes a file or a folder entry to disk (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Writes and flushes one file (used by the adapter writer for every file it creates)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def folder_lock(parent: Path) -> Iterator[None]:
    """Holds an exclusive lock on `parent` (blocking); a no-op where `fcntl` does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the integrity hashes still refuse a mixed folder
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --------------------------------------------------------------------------------------------------- replace


def _leftovers(target: Path, mark: str) -> list[Path]:
    prefix = f".{target.name}{mark}"
    return sorted(path for path in target.parent.iterdir() if path.name.startswith(prefix) and path.is_dir())


def recover_folder(target: Path) -> None:
    """Cleans up after a save that was killed: puts an old folder renamed aside back where the target is missing,
    and deletes staging folders. Call it with the folder lock held."""
    asides = _leftovers(target, ASIDE_MARK)
    if asides and not target.exists():
        _rename(asides[-1], target)
        asides = asides[:-1]
    for path in asides + _leftovers(target, STAGING_MARK):
        _remove_tree(path)


def replace_folder(target: str | os.PathLike, write: Callable[[Path], None], owned_names: Collection[str] = ()) -> Path:
    """Replaces the folder `target` by a folder that `write(staging)` fills, crash-safely (see the module doc).

    Args:
        target: the folder to create or replace; its parent is created if needed.
        write: fills the empty staging folder it is given.
        owned_names: top-level names in `target` that belong to the caller: those not written again are dropped
            (a stale `lora/` after a save without LoRA). Every other entry of the old folder is kept.

    Returns:
        `target` as a `Path`.

    Raises:
        NotADirectoryError: `target` is a file or a symlink.
        FolderWriteError: writing failed (for example a full disk); the old folder, if any, is left as it was.
    """
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise NotADirectoryError(
            f"{target} is a file or a symlink; save_pretrained needs a folder path (a real folder: saves switch it in with one rename)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target.parent):
        recover_folder(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_MARK}", dir=target.parent))
        try:
            try:
                write(staging)
                if target.is_dir():
                    written = {path.name for path in staging.iterdir()}
                    for entry in target.iterdir():
                        if entry.name not in written and entry.name not in owned_names:
                            _link_tree(entry, staging / entry.name)
                for path in sorted(staging.rglob("*"), reverse=True):
                    _fsync_path(path)
                _fsync_path(staging)
            except OSError as error:
                reason = "the disk is full" if error.errno == errno.ENOSPC else f"{type(error).__name__}: {error}"
                raise FolderWriteError(
                    error.errno,
                    f"Could not save to {target}: {reason}. Nothing was changed there; free space (or fix the "
                    "cause) and save again.",
                ) from error
            if not target.exists():
                _rename(staging, target)
            elif not _exchange(staging, target):
                aside = Path(tempfile.mkdtemp(prefix=f".{target.name}{ASIDE_MARK}", dir=target.parent))
                aside.rmdir()
                _rename(target, aside)
                try:
                    _rename(staging, target)
                except BaseException:
                    _rename(aside, target)  # put the old folder back at once; a kill here is undone by the next save
                    raise
                staging = aside
            _fsync_path(target.parent)
        finally:
            # After the switch `staging` names the old folder; before it, the unused new one.
            _remove_tree(staging)
    return target
