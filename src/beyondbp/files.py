"""Writing files safely: all or nothing, with the user's umask, checked before work starts.

Every file beyondbp writes (checkpoints, ``results.json``, ``table.md``, ``curves.png``, the
MNIST-1D cache) goes through :func:`atomic_write_bytes`; output directories go through
:func:`publish_directory`. Both write to a temporary sibling first — named
``.<name>.<pid>.<random>.tmp`` — and move it into place with ``os.replace`` at the end, so a
crash never leaves a half-written result under the real name. A process killed mid-write
(SIGKILL) cannot clean up after itself; its temporaries carry its process id, and the next
write to the same place removes those whose process is gone (:func:`remove_stale_temporaries`).

Temporary files and directories are created private (``0600`` / ``0700``) by :mod:`tempfile`;
before they are moved into place they get the permissions an ordinary ``open``/``mkdir`` would
have given them under the user's umask (``0644`` / ``0755`` for the usual ``022``), so results
can be shared.

:func:`check_writable` finds out before a run starts whether a path can be written, by actually
creating (and removing) a temporary file where the output will go — ``os.access`` answers
"yes" for root even on a read-only file system.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "check_output_directory",
    "check_writable",
    "is_previous_output",
    "publish_directory",
    "remove_stale_temporaries",
    "temporary_directory",
    "umask",
]


def umask() -> int:
    """The process's umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _share(path: Path, directory: bool) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would have given it under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def _prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a zombie and another user's live
    process count as alive; ids ≤ 0 do not)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def remove_stale_temporaries(directory: str | os.PathLike, name: str) -> list[Path]:
    """Remove ``.<name>.<pid>.*.tmp`` entries in ``directory`` left by processes that no longer
    run (a write killed half-way); return what was removed."""
    directory = Path(directory)
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\..+\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except FileNotFoundError:
                pass
        removed.append(entry)
    return removed


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[Any], Any]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it into place
    (with the umask's permissions). On any error the temporary is removed and ``path`` is
    untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        _share(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def temporary_directory(target: str | os.PathLike) -> Path:
    """A new empty directory beside ``target`` (parents created), to be published with
    :func:`publish_directory`. Stale temporaries of ``target`` are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target.name), suffix=".tmp", dir=target.parent))
    _share(tmp, directory=True)
    return tmp


def publish_directory(tmp: Path, target: str | os.PathLike, replace: bool = False) -> Path:
    """Move the finished directory ``tmp`` to ``target``. An existing ``target`` is replaced
    only with ``replace=True`` (an empty one always): it is first renamed aside, then removed
    once ``tmp`` is in place, so ``target`` never holds a mix of old and new files."""
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not replace:
        raise ConfigError(f"output directory {str(target)!r} exists and is not empty; pass --overwrite to replace it")
    if not target.exists():
        os.replace(tmp, target)
        return target
    aside = Path(tempfile.mkdtemp(prefix=_prefix(target.name), suffix=".tmp", dir=target.parent))
    os.rmdir(aside)
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return target


def check_writable(path: str | os.PathLike, what: str, directory: bool = False) -> None:
    """Raise :class:`ConfigError` (one sentence) unless ``path`` could be written: a file (not an
    existing device, FIFO or symbolic link) or, with ``directory=True``, a directory, whose
    nearest existing ancestor is a directory where a file can be created. Creates and removes one empty temporary file; changes nothing else."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise ConfigError(f"{what} {str(path)!r} exists and is not a directory")
        if not directory and path.is_dir():
            raise ConfigError(f"{what} {str(path)!r} is a directory; give a file path")
    if not directory and (path.is_symlink() or (path.exists() and not path.is_file())):
        # a device, FIFO or link would be replaced by the regular file the write renames into place
        raise ConfigError(f"{what} {str(path)!r} exists and is not a regular file; give a file path")
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} {str(path)!r} cannot be written: {str(ancestor)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=_prefix(path.name), suffix=".tmp", dir=ancestor)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what} {str(path)!r} cannot be written: {reason} in {str(ancestor)!r}") from None
    os.close(fd)
    os.unlink(probe)


def is_previous_output(directory: str | os.PathLike, record: str, marker: str, names: Iterable[str],
                       suffixes: Iterable[str] = (".png",)) -> bool:
    """Whether ``directory`` holds an output beyondbp wrote and nothing else: its JSON file
    ``record`` is an object whose ``marker`` key is 1, and every entry is a regular file named in
    ``names`` or ending in one of ``suffixes``."""
    directory = Path(directory)
    names, suffixes = set(names), tuple(suffixes)
    try:
        entries = list(directory.iterdir())
        with open(directory / record, encoding="utf-8") as fh:
            marked = json.load(fh).get(marker) == 1
    except (OSError, ValueError, AttributeError):
        return False
    return marked and all(
        e.is_file() and not e.is_symlink() and (e.name in names or e.name.endswith(suffixes)) for e in entries
    )


def check_output_directory(out: str | os.PathLike, overwrite: bool, what: str, holds: str,
                           previous: Callable[[Path], bool] | None = None) -> bool:
    """Refuse (``ConfigError``, one sentence naming ``what``, e.g. "report directory") an output
    directory that is empty text or '.', a symbolic link, the current directory or one containing
    it, a file, or a non-empty directory that is not a previous output (``previous(out)``) unless
    ``overwrite``; return whether an existing directory is to be replaced. ``holds`` names what
    the directory is for ("report")."""
    out = Path(out)
    if str(out).strip() in ("", "."):
        raise ConfigError(f"the {what} is empty (or '.'); give a directory for the {holds}")
    if out.is_symlink():
        raise ConfigError(f"{what} {str(out)!r} is a symbolic link; give the directory itself")
    cwd = Path.cwd().resolve()
    if out.exists() and (out.resolve() == cwd or out.resolve() in cwd.parents):
        raise ConfigError(f"{what} {str(out)!r} is the current directory or contains it; give a directory for the {holds}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {str(out)!r} exists and is not a directory; give a directory for the {holds}")
    if out.is_dir() and any(out.iterdir()):
        if overwrite or (previous is not None and previous(out)):
            return True
        raise ConfigError(
            f"{what} {str(out)!r} exists, is not empty and does not hold a previous {holds}; "
            "pass --overwrite to replace it"
        )
    return False
