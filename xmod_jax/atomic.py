"""Atomic writes: a file or a folder changes from its complete old state to its complete new one.

Files (`atomic_path`, `atomic_write_bytes`): written to a temporary sibling, fsynced, renamed over
the target. Folders (`updated_folder` for `save_pretrained`, `atomic_folder` for the converters):

1. stale leftovers of an earlier, killed writer of the same folder are cleaned up (`recover`);
2. the new folder is built in a temporary sibling `.NAME.tmp-<pid>-<host>-<random>`;
   `updated_folder` then hard-links (or, where links fail, copies) every entry of the existing
   folder that the save neither wrote nor owns, so tokenizer files, model cards and a user's own
   files survive; the tree is fsynced;
3. the two folders are swapped. On Linux this is one `renameat2(RENAME_EXCHANGE)` call: at every
   instant NAME is either the complete old folder or the complete new one. Where the call is
   missing (other systems, some network file systems) it takes two renames, NAME to
   `.NAME.old-<pid>-<host>-<random>` and the new folder to NAME; between them NAME is absent
   and the complete old folder sits in the `.old-` sibling;
4. the parent is fsynced and the old folder removed (an `.old-` one renamed to `.NAME.del-...`
   first, so a half-removed folder never looks like a previous version).

Why not the other designs: writing files in place can leave new weights beside an old
`config.json` (a folder that does not load). A directory symlink swapped by `os.replace` is atomic
too, but it turns the user's folder into a link to a hidden sibling: `rm -r`, `cp` and uploads
then see a link, and the first save into an ordinary folder would need the two-rename window
anyway. The exchange keeps NAME an ordinary folder and needs no lock file.

The two-rename window is closed on the reading side: loaders call `readable_folder`, which, when
NAME is absent but an `.old-` sibling exists, waits briefly for a live writer to finish and
otherwise reads that sibling (logging a warning). The next writer rolls it back into place.

Leftovers are stale when their writer is dead: the pid in the name is not running on this host
(the host is a hash of its name, so writers on another machine sharing the folder are never
mistaken for dead), or the sibling is older than `STALE_AFTER` seconds (pids get reused; writers
on other hosts). Live writers' siblings are left alone; loaders never look at `.tmp-` or `.del-`
siblings.

Concurrent writers need no lock: each builds its own temporary folder and swaps it in, so the
last swap wins and the folder is always one writer's complete result, with the untouched files
it found; a writer whose carry-over or swap is undone by another starts that part over, and
raises after `SWAP_ATTEMPTS`. Files added to the folder by someone else while a save runs are
not carried over. A loader reading while a swap happens may still open one file of each version
(it opens files by name, one after another); only the folder left behind is guaranteed.

A folder that is a mount point cannot be renamed; saving into one raises, naming the fix.

`STEP_HOOK` is for tests only: called with a step name between file operations, so a test can
kill the process at each step (`tests/test_crash_safety.py`); `USE_RENAME_EXCHANGE = False` tests
the two-rename protocol.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

logger = logging.getLogger("xmod_jax")

STEP_HOOK: Callable[[str], None] | None = None  # tests: called between file operations
USE_RENAME_EXCHANGE = True  # tests set False to exercise the two-rename protocol
STALE_AFTER = 24 * 3600.0  # seconds after which any leftover counts as stale
SWAP_ATTEMPTS = 20
READ_WAIT = 2.0  # seconds a loader waits for a live writer to put NAME back

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TEMP_NAME = re.compile(r"\.(tmp|old|del)-(\d+)-([0-9a-f]{8})-[a-z0-9_]+$")


def _step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


def _prefix(name: str, kind: str) -> str:
    return f".{name}.{kind}-{os.getpid()}-{_HOST}-"


def _sibling(path: str, kind: str) -> str:
    parent, name = os.path.split(path)
    return os.path.join(parent, _prefix(name, kind) + secrets.token_hex(4))


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary sibling made by this module (a file or a folder)."""
    return name.startswith(".") and _TEMP_NAME.search(name) is not None


# ----------------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary sibling of `path`; on success fsync it and rename it to `path`."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_prefix(name, "tmp"), dir=folder)
    os.close(fd)
    _step("file created")
    try:
        yield tmp
        _step("file written")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _step("file synced")
        os.replace(tmp, path)
        _step("file renamed")
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: str) -> None:
    """fsync every regular file and folder under `folder` (links and special files skipped)."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(root)


# ------------------------------------------------------------------------------------- folders
@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield an empty temporary sibling of folder `path`; on success swap it in as `path`.

    An existing `path` is refused unless `overwrite`, and then replaced whole: nothing of it is
    kept. A crash at any instant leaves the old folder or the new one (see the module docstring).
    """
    path = _target(path)
    recover(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    with _new_folder(path) as tmp:
        yield tmp
        _step("folder written")
        _commit(tmp, path, overwrite)


@contextlib.contextmanager
def updated_folder(path: str | os.PathLike, replaces: Sequence[str] = ()) -> Iterator[str]:
    """Yield an empty temporary sibling of folder `path` to write the new files into; on success
    carry over the rest of the existing folder and swap the result in as `path`.

    Entries of the existing folder that the caller wrote, or whose names match a glob in
    `replaces` (files the write supersedes, such as weights of another layout), are dropped;
    every other entry is kept (hard links, else copies). `path` is created when missing.
    """
    path = _target(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path} exists and is not a folder; pass a folder path")
    recover(path)
    with _new_folder(path) as tmp:
        yield tmp
        _step("folder written")
        _carry_over(path, tmp, replaces)
        _commit(tmp, path, True)


def readable_folder(path: str | os.PathLike) -> str:
    """`path`, or, when a save was killed between its two renames, the previous folder it left.

    When `path` is missing and an `.old-` sibling exists, waits up to `READ_WAIT` seconds for a
    live writer to finish, then returns the newest such sibling. Anything else returns `path`
    unchanged (hub names included), for the caller's usual error.
    """
    path = os.fspath(path)
    deadline = time.monotonic() + READ_WAIT
    while True:
        if os.path.exists(path):
            return path
        olds = [s for s in _leftovers(os.path.realpath(path)) if s[0] == "old"]
        if not olds:
            return path
        if all(_stale(s) for s in olds) or time.monotonic() > deadline:
            newest = max(olds, key=lambda s: _ctime(s[1]))[1]
            logger.warning(
                "%s is missing: a save was interrupted; reading the previous folder %s "
                "(the next save puts it back)",
                path,
                newest,
            )
            return newest
        time.sleep(0.01)


def recover(path: str | os.PathLike) -> None:
    """Undo what killed writers of folder `path` left: put the previous folder back when `path`
    is missing, and delete stale temporary siblings. Live writers' siblings are left alone."""
    path = _target(path)
    leftovers = [s for s in _leftovers(path) if _stale(s)]
    if not os.path.lexists(path):
        olds = [s for s in leftovers if s[0] == "old"]
        if olds:
            newest = max(olds, key=lambda s: _ctime(s[1]))
            with contextlib.suppress(OSError):  # another writer may be recovering too
                os.rename(newest[1], path)
                leftovers.remove(newest)
                logger.warning("%s: put back the previous folder after an interrupted save", path)
                _step("recover rolled back")
    for kind, sibling, _, _ in leftovers:
        if kind != "old" or os.path.lexists(path):
            _discard(sibling, kind)


def _target(path: str | os.PathLike) -> str:
    path = os.path.realpath(os.fspath(path))  # a symlinked folder is replaced where it lives
    if os.path.ismount(path):
        raise OSError(
            errno.EBUSY,
            f"{path} is a mount point, which cannot be swapped atomically; save into a folder "
            "inside it",
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


@contextlib.contextmanager
def _new_folder(path: str) -> Iterator[str]:
    parent, name = os.path.split(path)
    tmp = tempfile.mkdtemp(prefix=_prefix(name, "tmp"), dir=parent)
    _step("folder created")
    try:
        yield tmp
    finally:
        if os.path.lexists(tmp):  # the build failed, or the swap left the old folder here
            _remove_tree(tmp)


def _carry_over(path: str, tmp: str, replaces: Sequence[str]) -> None:
    """Hard-link (or copy) the entries of folder `path` that `tmp` lacks and the writer does not
    own. Another writer may swap `path` meanwhile (entries then vanish): start over, up to
    `SWAP_ATTEMPTS` times, from the folder then in place."""
    written = set(os.listdir(tmp))
    for attempt in range(SWAP_ATTEMPTS):
        current = readable_folder(path)  # waits out another writer's two-rename window
        if not os.path.isdir(current):
            return
        try:
            _link_entries(current, tmp, written, replaces)
            return
        except (FileNotFoundError, shutil.Error):
            if attempt == SWAP_ATTEMPTS - 1:
                raise
            for entry in set(os.listdir(tmp)) - written:
                _remove_tree(os.path.join(tmp, entry))


def _link_entries(path: str, tmp: str, written: set[str], replaces: Sequence[str]) -> None:
    for entry in sorted(os.listdir(path)):
        if entry in written or is_temporary(entry):
            continue
        if any(fnmatch.fnmatchcase(entry, pattern) for pattern in replaces):
            continue
        source, target = os.path.join(path, entry), os.path.join(tmp, entry)
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)
        _step(f"folder kept {entry}")


def _link_or_copy(source: str, target: str) -> None:
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # file systems without hard links
        shutil.copy2(source, target)


def _commit(tmp: str, path: str, replace: bool) -> None:
    """Swap the complete folder `tmp` in as `path`; remove what it replaced."""
    parent = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode if os.path.isdir(path) else 0o777 & ~_umask()
    except OSError:  # replaced by another writer meanwhile
        mode = 0o777 & ~_umask()
    os.chmod(tmp, stat.S_IMODE(mode))  # mkdtemp makes 0700; keep the folder's own mode
    _fsync_tree(tmp)
    _step("folder synced")
    old = None
    for _ in range(SWAP_ATTEMPTS):
        try:
            os.rename(tmp, path)  # `path` absent (or an empty folder): one atomic rename
            _step("folder renamed")
            break
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
        if not replace:
            raise FileExistsError(
                f"{path} was created by someone else during this write; pass overwrite=True "
                "(--overwrite) to replace it"
            )
        try:
            if _exchange(tmp, path):  # now `tmp` holds the old folder, removed on exit
                _step("folder exchanged")
                break
        except FileNotFoundError:  # another writer has `path` aside right now
            continue
        old = _sibling(path, "old")
        try:
            os.rename(path, old)
        except FileNotFoundError:
            old = None
            continue
        _step("folder moved aside")
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another writer got in between
                _discard(old, "old")
                old = None
                continue
            with contextlib.suppress(OSError):
                os.rename(old, path)  # put the previous folder back
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.rename(old, path)
            raise
        _step("folder moved in")
        break
    else:
        raise OSError(
            errno.EBUSY,
            f"{path}: other processes kept replacing this folder; gave up after "
            f"{SWAP_ATTEMPTS} attempts to swap the new one in (its files are in {tmp})",
        )
    _fsync_dir(parent)
    _step("parent synced")
    if old is not None:
        _discard(old, "old")


def _discard(folder: str, kind: str) -> None:
    """Remove a temporary sibling; an `.old-` one is renamed to `.del-` first, so a half-removed
    folder never passes for a previous version."""
    if kind == "old":
        doomed = _sibling(_owner(folder), "del")
        try:
            os.rename(folder, doomed)
        except OSError:  # gone already (another writer cleaned it up)
            return
        _step("folder renamed for removal")
        folder = doomed
    _remove_tree(folder)


def _owner(sibling: str) -> str:
    """The folder a temporary sibling belongs to: `.NAME.old-...` -> NAME."""
    parent, name = os.path.split(sibling)
    return os.path.join(parent, name[1 : _TEMP_NAME.search(name).start()])


def _remove_tree(folder: str) -> None:
    """Delete `folder` entry by entry (a step each); errors are logged, not raised."""
    failed: list[str] = []

    def remove(fn: Callable[[str], None], path: str) -> None:
        try:
            fn(path)
        except FileNotFoundError:
            pass
        except OSError:
            failed.append(path)
        _step("removed entry")

    if os.path.isdir(folder) and not os.path.islink(folder):
        for root, dirs, files in os.walk(folder, topdown=False):
            for name in files:
                remove(os.unlink, os.path.join(root, name))
            for name in dirs:
                sub = os.path.join(root, name)
                remove(os.unlink if os.path.islink(sub) else os.rmdir, sub)
        remove(os.rmdir, folder)
    else:
        remove(os.unlink, folder)
    if failed:
        logger.warning("could not remove %s (%d entries); delete it by hand", folder, len(failed))


def _leftovers(path: str) -> list[tuple[str, str, int, str]]:
    """(kind, path, pid, host) of every temporary sibling of `path` made by this module."""
    parent, name = os.path.split(path)
    prefix = f".{name}."
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return []
    found = []
    for entry in names:
        match = _TEMP_NAME.match(entry, len(prefix) - 1) if entry.startswith(prefix) else None
        if match and match.end() == len(entry):
            kind, pid, host = match.group(1), int(match.group(2)), match.group(3)
            found.append((kind, os.path.join(parent, entry), pid, host))
    return found


def _stale(leftover: tuple[str, str, int, str]) -> bool:
    _, path, pid, host = leftover
    if host == _HOST and pid != os.getpid() and not _alive(pid):
        return True
    try:
        return time.time() - os.lstat(path).st_mtime > STALE_AFTER
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would send CTRL_C_EVENT; rely on age there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _ctime(path: str) -> int:
    try:
        return os.lstat(path).st_ctime_ns
    except OSError:
        return 0


# ---------------------------------------------------------------- renameat2(RENAME_EXCHANGE)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None
if sys.platform.startswith("linux"):
    try:
        import ctypes

        _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        _renameat2.argtypes += [ctypes.c_uint]
        _renameat2.restype = ctypes.c_int
    except (ImportError, OSError, AttributeError):  # no ctypes, or a libc without renameat2
        _renameat2 = None


def _exchange(a: str, b: str) -> bool:
    """Swap paths `a` and `b` in one step; False where the system cannot."""
    if not USE_RENAME_EXCHANGE or _renameat2 is None:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), a, None, b)
