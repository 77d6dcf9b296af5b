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

Outputs that a rerun replaces without ``--overwrite`` (``study report``, ``analyze``) carry a
manifest, :data:`MANIFEST`, listing every file their writer put there; a rerun replaces the
folder only when it holds nothing but those files — checked before the work and again when the
result is moved into place — and otherwise refuses, naming the files it would have deleted.
The other output folders (``train``/``compare``/``continual``/``adapt run --out``) are never
replaced without ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from . import interrupts
from .errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "check_output_directory",
    "check_writable",
    "file_path",
    "MANIFEST",
    "foreign_entries",
    "names_folder",
    "is_previous_output",
    "manifest_names",
    "publish_directory",
    "remove_stale_temporaries",
    "temporary_directory",
    "umask",
    "write_manifest",
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
        with interrupts.deferred():  # Ctrl-C / SIGTERM wait for the file to be in place
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


def publish_directory(tmp: Path, target: str | os.PathLike, replace: bool = False, kind: str | None = None,
                      what: str = "output directory", holds: str = "output") -> Path:
    """Move the finished directory ``tmp`` to ``target``. With ``kind``, a manifest of the files
    in ``tmp`` is written into it first (:data:`MANIFEST`). An existing non-empty ``target`` is
    replaced only with ``replace=True`` (the user's ``--overwrite``) or, with ``kind``, when it
    holds a previous output of that kind and nothing else — checked again here, so a file put
    there while the output was computed is not deleted. An existing ``target`` is first renamed
    aside, then removed once ``tmp`` is in place, so ``target`` never holds a mix of old and new
    files."""
    target = Path(target)
    if kind is not None:
        write_manifest(tmp, kind)
    if target.exists() and any(target.iterdir()) and not replace:
        if kind is None:
            raise ConfigError(f"output directory {str(target)!r} exists and is not empty; pass --overwrite to replace it")
        if not is_previous_output(target, kind):
            raise _not_previous(target, what, holds, kind)
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


def write_directory(out: str | os.PathLike, contents: Mapping[str, bytes | str | Callable[[Path], Any]],
                    overwrite: bool = False, kind: str | None = None, what: str = "output directory",
                    holds: str = "output") -> list[Path]:
    """Write the output directory ``out``, all or nothing — the one writer of every command's
    output folder. ``contents`` maps each file name to its bytes (or text, written as UTF-8) or
    to a function that writes the file at the path it is given. Everything is written into a
    temporary sibling (:func:`temporary_directory`), which then replaces ``out``
    (:func:`publish_directory`: with ``kind``, a manifest is kept and a previous output of that
    kind is replaced without ``overwrite``; the user's own files never are); on any error or
    interruption the temporary directory is removed and ``out`` is as it was. Returns the paths
    written, in ``contents``' order.

    Args:
        out: the directory to write.
        contents: file name -> bytes, text, or ``write(path)``.
        overwrite: replace a non-empty ``out`` (the user's ``--overwrite``).
        kind: the kind of output, for the manifest; None keeps none (then any non-empty ``out``
            needs ``overwrite``).
        what, holds: words for the refusal ("report directory", "report").
    """
    out = Path(out)
    try:
        tmp = temporary_directory(out)
    except OSError as exc:
        raise ConfigError(f"{what} {str(out)!r} cannot be written: {exc.strerror or type(exc).__name__}") from None
    try:
        for name, data in contents.items():
            if isinstance(data, str):
                data = data.encode("utf-8")
            if isinstance(data, (bytes, bytearray)):
                atomic_write_bytes(tmp / name, lambda fh, data=data: fh.write(data))
            else:
                data(tmp / name)
        publish_directory(tmp, out, replace=overwrite, kind=kind, what=what, holds=holds)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / name for name in contents]


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


def names_folder(text: str | os.PathLike) -> bool:
    """Whether the path text ``text`` ends with a path separator (``/``, or the system's own),
    i.e. names a folder: ``Path`` drops the separator, so ``/tmp/out/`` would become a file
    ``/tmp/out``."""
    text = os.fspath(text)
    return any(sep and text.endswith(sep) for sep in ("/", os.sep, os.altsep))


def file_path(text: str) -> Path:
    """The path of an output file from its text as given (a command-line flag's parser):
    :class:`ConfigError` (one sentence) when it ends with a path separator, which names a folder,
    instead of writing a file of the folder's name."""
    if names_folder(text):
        raise ConfigError(f"{text!r} ends with a path separator, so it names a folder; give the path of a file "
                          "(without the trailing separator, or a file inside that folder)")
    return Path(text)


def check_folder_exists(path: str | os.PathLike, what: str) -> None:
    """Raise :class:`ConfigError` (one sentence) when the folder of the output file ``path`` does
    not exist: output files (``--checkpoint``, ``--state``, a study's ``--store``) are written
    into existing folders only, so a mistyped path never writes into a new folder."""
    if not Path(path).parent.is_dir():
        raise ConfigError(f"the folder of {what} {str(path)!r} does not exist; give a file in an existing folder "
                          "(or create the folder first)")


MANIFEST = ".beyondbp-manifest.json"
"""The file an output directory's writer leaves in it: which kind of output it is and every file
it wrote. A rerun replaces the directory without ``--overwrite`` only when the directory holds
nothing but those files (:func:`foreign_entries`), so a file the user put there is never
deleted unasked."""


def write_manifest(directory: str | os.PathLike, kind: str) -> Path:
    """Record in ``directory`` (a finished output, before it is published) that it is an output of
    ``kind`` holding exactly its present entries."""
    directory = Path(directory)
    names = sorted(e.name for e in directory.iterdir() if e.name != MANIFEST)
    text = json.dumps({"beyondbp_output": kind, "files": names}, indent=2) + "\n"
    return atomic_write_bytes(directory / MANIFEST, lambda fh: fh.write(text.encode("utf-8")))


def manifest_names(directory: str | os.PathLike, kind: str) -> set[str] | None:
    """The names the manifest in ``directory`` says an output of ``kind`` wrote there (the
    manifest itself included), or None when there is no readable manifest of that kind."""
    try:
        with open(Path(directory) / MANIFEST, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("beyondbp_output") != kind:
        return None
    names = data.get("files")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return {n for n in names if n and "/" not in n and n not in (".", "..")} | {MANIFEST}


def foreign_entries(directory: str | os.PathLike, kind: str) -> list[str] | None:
    """The entries of ``directory`` that the previous output of ``kind`` did not write (a file
    not in its manifest, or a listed name that is now a directory or a symbolic link), sorted;
    None when the directory holds no manifest of that kind."""
    names = manifest_names(directory, kind)
    if names is None:
        return None
    foreign = []
    for e in Path(directory).iterdir():
        if e.name not in names or e.is_symlink() or not e.is_file():
            foreign.append(e.name)
    return sorted(foreign)


def is_previous_output(directory: str | os.PathLike, kind: str) -> bool:
    """Whether ``directory`` holds an output of ``kind`` that beyondbp wrote (its manifest says
    so) and nothing else."""
    return foreign_entries(directory, kind) == []


def _not_previous(out: Path, what: str, holds: str, kind: str | None) -> ConfigError:
    foreign = foreign_entries(out, kind) if kind else None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return ConfigError(
            f"{what} {str(out)!r} holds files the previous {holds} did not write ({shown}); "
            "move them elsewhere, or pass --overwrite to delete everything in it"
        )
    return ConfigError(
        f"{what} {str(out)!r} exists, is not empty and does not hold a previous {holds}; "
        "pass --overwrite to replace it"
    )


def check_output_directory(out: str | os.PathLike, overwrite: bool, what: str, holds: str,
                           kind: str | None = None) -> bool:
    """Refuse (``ConfigError``, one sentence naming ``what``, e.g. "report directory") an output
    directory that is empty text or '.', a symbolic link, the current directory or one containing
    it, a file, or a non-empty directory that is not a previous output of ``kind`` and nothing
    else (:func:`is_previous_output`) unless ``overwrite``; return whether an existing directory
    is to be replaced. ``holds`` names what the directory is for ("report")."""
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
        if overwrite or (kind is not None and is_previous_output(out, kind)):
            return True
        raise _not_previous(out, what, holds, kind)
    return False
