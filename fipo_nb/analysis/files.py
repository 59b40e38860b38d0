"""A run's files written so that a kill or a full disk never leaves a half of one behind.

    append_row(path, row)       one JSON line added to a .jsonl log (metrics.jsonl, eval.jsonl)
    write_atomic(path, data)    a whole file replaced at once (report.html, compare.html, *.json)
    replacing(path)             the same for a writer that wants a file name (Parquet traces)

A row goes out in one os.write on an O_APPEND descriptor, then fsync: our own writes never
interleave. A kill in the middle of that write can still leave a partial last line without its
newline; runs.read_jsonl skips it with a warning, and a resumed run drops it from the file. A write
that fails (a full disk, no permission) cuts the file back to its earlier size. A whole file is
written under a temporary name in the same folder, synced, then renamed over the old one: readers
see the old file or the new one, never a mix, and a failure removes the temporary file. Either
failure raises WriteError: one line naming the file and the cause, with the free space on a full
disk. It lives here, below train/, views/ and compare.py, which all write a run's files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path

LOW_SPACE = 1 << 20  # bytes free under which a failed write without an errno is blamed on a full disk


class WriteError(OSError):
    """A run's file could not be written; str() is one line naming the file and the cause. `errno`
    and `filename` are the operating system's (errno.ENOSPC on a full disk)."""

    def __init__(self, message: str, path, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.errno = code
        self.strerror = os.strerror(code) if code else None
        self.filename = str(path)

    def __str__(self) -> str:  # OSError's own would be "[Errno 28] ...: 'path'"
        return self.message

    def __reduce__(self):  # picklable (multiprocessing, pytest-xdist) with its own arguments
        return type(self), (self.message, self.filename, self.errno)


def describe_cause(error: BaseException, folder, *, skip: tuple = ()) -> str:
    """The reason a write failed, in words, on one line: the operating system's error where there is
    one in the chain of causes (libraries wrap it in their own), with the bytes free on a full disk;
    otherwise the error itself, and a note when the disk looks full. `skip`: wrapper types whose
    own message says nothing."""
    chain, seen = error, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        if isinstance(chain, OSError) and chain.errno:
            text = f"{os.strerror(chain.errno)} [errno {chain.errno}]"
            if chain.errno in (errno.ENOSPC, errno.EDQUOT):
                free = _free(folder)
                text += f" ({free} bytes free there)" if free is not None else ""
            return text
        chain = chain.__cause__ or chain.__context__
    root = next((e for e in seen if not isinstance(e, skip)), error)
    message = " ".join(f"{type(root).__name__}: {root}".split())  # one line
    free = _free(folder)
    return f"{message} ({free} bytes free there: the disk is probably full)" if free is not None and \
        free < LOW_SPACE else message


def _free(folder) -> int | None:
    """Bytes free on the disk of `folder` (or of its nearest existing parent); None if unknown."""
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _errno(error: BaseException) -> int | None:
    chain, seen = error, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        if isinstance(chain, OSError) and chain.errno:
            return chain.errno
        chain = chain.__cause__ or chain.__context__
    return None


def _write_error(path: Path, error: BaseException, what: str) -> WriteError:
    return WriteError(f"could not write {path}: {describe_cause(error, path.parent)}; {what}", path, _errno(error))


def append_row(path, row: dict) -> None:
    """Add `row` to the JSON-lines file `path` as one line (created if missing), synced to disk.
    A failure cuts the file back to the rows before and raises WriteError naming it."""
    path = Path(path)
    line = (json.dumps(row) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        raise _write_error(path, err, "the rows before it are unchanged") from err
    size = None
    try:
        size = os.fstat(fd).st_size
        written = os.write(fd, line)  # the whole line in one call: never interleaved with another of ours
        if written != len(line):  # a disk that fills up in the middle of the line
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        os.fsync(fd)
    except BaseException as err:
        if size is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no partial row stays behind
        with contextlib.suppress(OSError):
            os.close(fd)
        if not isinstance(err, Exception):
            raise
        raise _write_error(path, err, "the row was not added, the rows before it are unchanged") from err
    os.close(fd)


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary name beside `path` to write the new file to; on success it is synced and
    renamed over `path`. Any failure removes it (the old `path` stays as it was) and an error
    becomes WriteError naming `path` and the cause."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if not isinstance(err, Exception):  # KeyboardInterrupt: nothing half-written stays behind
            raise
        kept = "the earlier file is unchanged" if path.exists() else "no file was written"
        raise _write_error(path, err, kept) from err
    _sync_folder(path.parent)


def write_atomic(path, data: str | bytes) -> Path:
    """Replace `path` with `data` (str: UTF-8) all at once (see `replacing`); returns the path."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with replacing(path) as temporary:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temporary))
                view = view[written:]
        finally:
            os.close(fd)
    return path


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: some systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
