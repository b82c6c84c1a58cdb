"""One training run per output folder: an advisory lock that a second `labeltok train` into the same folder meets.

The lock is `fcntl.flock` on a small file inside the folder. The operating system releases it when the holding
process exits, however it exits (even SIGKILL), so a stale lock file left by a dead run never blocks the next one.
The file itself stays (deleting a lock file races with other runs opening it); the output-folder guard ignores it.
Where `fcntl` does not exist (Windows), no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE_NAME = ".labeltok-train.lock"


class OutputDirLockedError(ValueError):
    """Another run is writing into the same output folder."""


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike, flag: str = "--output_dir", enabled: bool = True) -> Iterator[None]:
    """Holds an exclusive lock on `output_dir` for the duration of the block.

    Creates the folder if needed; if the block fails and the folder was created here and holds nothing but the lock
    file, the folder is removed again (a run refused for bad input leaves nothing behind).

    Args:
        output_dir: the folder.
        flag: the flag that named it, for messages.
        enabled: take the lock (pass `False` on the non-main processes of a distributed run, which share it).

    Raises:
        OutputDirLockedError: another live process holds the lock; names the folder and that process.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks through this module
        fcntl = None
    if not enabled or fcntl is None:
        yield
        return
    folder = Path(output_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE_NAME
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputDirLockedError(
                f"{flag} {str(folder)!r} is in use by another `labeltok train` run ({holder}); wait for it to "
                "finish or choose another folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            if not succeeded and created and [entry.name for entry in folder.iterdir()] == [LOCK_FILE_NAME]:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()
