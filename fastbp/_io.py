"""Writing files so that nothing is ever left half-written.

:func:`atomic_write` writes ``path`` through a temporary file in the same folder, named
``.NAME.TAG-PID.HEX.tmp`` (``TAG``: 8 hex digits naming this machine and PID namespace, ``PID``:
the writing process, ``HEX``: random), and renames it to ``path`` only when the block succeeds.

Rules it keeps:

- **Errors name the user's path**, never the temporary name: an ``OSError`` while creating,
  writing, syncing or renaming the temporary file is raised again as the same kind of ``OSError``
  (same errno) with ``filename`` set to ``path``, as ``open(path, "w")`` would report it.
- **Existing files**: ``path`` that is a folder is an ``IsADirectoryError``. A file that may not
  be written is not replaced (``PermissionError`` naming it): one ``os.access`` says you may not
  write, or one with no write bit at all (``chmod 444``; this holds for root too, for whom
  ``os.access`` allows everything). Otherwise the new file keeps the old one's permission bits
  (``rwx`` for user, group, others); a new file gets those the umask allows, as with ``open``.
- **Stale temporary files** (left by a writer killed with ``kill -9`` or a power cut) are removed
  by the next write of the same path, before it writes, and only that path's (its exact name
  pattern). A temporary file is stale when its TAG is this machine's and PID namespace's and its
  PID is not a running process, or, for any other (another machine on a shared folder, another
  container, the older ``.NAME.HEX.tmp`` form, and every one on Windows), when it has not been
  modified for ``STALE_SECONDS`` (one hour). So a live writer's file is never removed from this
  machine, and one elsewhere only if it wrote nothing for an hour. (A dead writer's PID taken by
  a new process keeps its file until that process ends.) Files that cannot be removed are left.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import time
from contextlib import contextmanager
from pathlib import Path

STALE_SECONDS = 3600.0  # a foreign temporary file not modified for this long is taken to be dead

# errnos that mean writing to the file failed (the disk, not the data's source): an OSError from
# inside the block with one of these, or naming the temporary file, is reported with the user's path
_STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS", "EBADF", "ESTALE") if hasattr(errno, name))

_tag = None


def _host_tag():
    """8 hex digits for this machine and PID namespace: a PID is only checked where it means the
    same process."""
    global _tag
    if _tag is None:
        try:
            namespace = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            namespace = 0
        _tag = hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:8]
    return _tag


def _temp_path(path):
    return path.with_name(f".{path.name}.{_host_tag()}-{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid):
    if pid == os.getpid():
        return True  # another writer in this process (a thread): alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _remove_stale_temps(path):
    """Remove the stale temporary files of ``path`` (see the module's docstring)."""
    name = re.escape(path.name)
    ours = re.compile(rf"\.{name}\.([0-9a-f]{{8}})-(\d+)\.[0-9a-f]{{8}}\.tmp")
    older = re.compile(rf"\.{name}\.[0-9a-f]{{8}}\.tmp")  # fastbp before PIDs were in the name
    try:
        entries = os.scandir(path.parent)
    except OSError:
        return
    now = time.time()
    with entries:
        for entry in entries:
            m = ours.fullmatch(entry.name)
            if m is None and not older.fullmatch(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                # (not on Windows, where os.kill(pid, 0) would end the process: age decides there)
                if m is not None and m.group(1) == _host_tag() and os.name != "nt":
                    stale = not _pid_alive(int(m.group(2)))
                else:
                    stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
                if stale:
                    os.unlink(entry.path)
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours to remove: leave it


def _naming(e, path):
    """``e`` again, as the same kind of OSError, naming ``path``."""
    if e.errno:
        return OSError(e.errno, e.strerror or str(e), os.fspath(path))
    return OSError(f"{os.fspath(path)}: {e}")


def _check_target(path):
    """The permission bits to give the new file (those of the file it replaces), or None for a new
    file; an OSError naming ``path`` when it must not be written."""
    text = os.fsdecode(path)
    if text == "":
        raise FileNotFoundError(errno.ENOENT, "No such file or directory (empty path)", text)
    if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, "Is a directory (the path ends with a separator)", text)
    try:
        st = os.stat(text)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _naming(e, text) from e
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", text)
    if not os.access(text, os.W_OK) or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(errno.EACCES, f"Permission denied (the file is read-only, mode "
                                            f"{stat.S_IMODE(st.st_mode):04o}; it is not replaced)", text)
    return stat.S_IMODE(st.st_mode) & 0o777


def check_writable(path):
    """Check, without writing ``path``, that :func:`atomic_write` can write it: ``path`` is not a
    folder nor a read-only file, and its folder exists and takes new files (a probe file is
    created and removed there). Raises an OSError with ``filename`` = ``path`` and a ``strerror``
    that says what is wrong."""
    text = os.fsdecode(path)
    path, parent = Path(text), Path(text).parent
    if text and not text.endswith((os.sep, os.altsep or os.sep)):
        if not parent.exists():
            raise FileNotFoundError(errno.ENOENT, f"folder {parent} does not exist", text)
        if not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a folder", text)
    _check_target(text)
    probe = _temp_path(path)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise type(e)(e.errno, f"cannot create files in folder {parent} ({e.strerror})", text) from None
    os.unlink(probe)


def check_output(path, option):
    """An output file named by a command-line ``option`` (None: not asked for), checked before any
    work as :func:`check_writable` does; a ValueError naming the option and the path otherwise."""
    if path is None:
        return
    if not path:
        raise ValueError(f"{option}: expected a file path, got ''")
    try:
        check_writable(path)
    except OSError as e:
        raise ValueError(f"{option}: {path}: {e.strerror}") from None


@contextmanager
def atomic_write(path, mode="wb"):
    """A file to write ``path`` through: it is written under a temporary name in the same folder
    and renamed to ``path`` only when the block succeeds; on an error it is removed. See the
    module's docstring for the errors, permissions and stale temporary files."""
    keep_mode = _check_target(path)  # before Path(), which drops a trailing separator and reads "" as "."
    path = Path(os.fsdecode(path))
    _remove_stale_temps(path)
    tmp = _temp_path(path)
    try:
        # os.open with mode 0o666 gives the file the permissions the umask allows, as open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _naming(e, path) from e
    try:
        f = os.fdopen(fd, mode)
        try:
            try:
                yield f
            except OSError as e:  # the block's writes; not, e.g., a download's network errors
                if e.errno in _STORAGE_ERRNOS or e.filename in (os.fspath(tmp), tmp):
                    raise _naming(e, path) from e
                raise
            try:
                f.flush()
                os.fsync(f.fileno())
                f.close()
            except OSError as e:
                raise _naming(e, path) from e
        finally:
            f.close()
        try:
            if keep_mode is not None:
                os.chmod(tmp, keep_mode)
            os.replace(tmp, path)
        except OSError as e:
            raise _naming(e, path) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
