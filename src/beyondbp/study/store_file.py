"""A run store's file: its layout, creating and opening it, and the checks that refuse one that
is damaged or not a run store. :class:`StoreFile` is the part of
:class:`beyondbp.study.store.Store` that does this; what the tables hold is described in
:mod:`beyondbp.study.store`.

Damage. Every opening runs SQLite's ``PRAGMA quick_check`` and checks that the tables and
columns of the layout (:data:`COLUMNS`) are all there; a store that fails is refused with one
sentence naming the file and how to recover (:class:`ConfigError`), before anything reads or
writes it. ``Store(path, verify=False)`` opens it anyway, for :meth:`StoreFile.damage` (what
``study check`` reports).

Read-only opening leaves no files beside the store: a writer switches the file back from WAL
to rollback-journal mode when it closes as the last connection, so a reader opens it with
``mode=ro`` (creating nothing); a file still in WAL mode that no process has open (no ``-wal``
file) — which a read-only SQLite connection could only read by creating ``-wal`` and ``-shm``
and leaving them — is read from a consistent in-memory copy instead; while a writer has it open
its ``-wal`` and ``-shm`` exist and the reader shares them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ..errors import ConfigError

__all__ = ["APPLICATION_ID", "COLUMNS", "FORMAT", "VERSION", "StoreFile"]

FORMAT = "beyondbp-study-store"
VERSION = 1
#: SQLite ``PRAGMA application_id`` of a run store ("bbps").
APPLICATION_ID = 0x62627073
SQLITE_HEADER = b"SQLite format 3\x00"
#: Seconds a creating opener waits for an empty store file to become a database: SQLite creates
#: the file empty on connect, and a second driver started at the same moment can see it so.
EMPTY_STORE_GRACE = 5.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    axes TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_host TEXT, lease_pid INTEGER, lease_token TEXT, lease_expires REAL, heartbeat REAL,
    started_at REAL, finished_at REAL,
    result TEXT, final TEXT,
    n_params INTEGER, flops_per_step INTEGER, flops_total INTEGER, eval_flops INTEGER,
    wall_time REAL, seed INTEGER, versions TEXT, host TEXT, error TEXT, diverged_at_step INTEGER
);
CREATE INDEX runs_status ON runs (status, position);
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, token TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, outcome TEXT,
    PRIMARY KEY (run_id, attempt)
);
"""


def _schema_columns() -> dict[str, tuple[str, ...]]:
    conn = sqlite3.connect(":memory:")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        return {t: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        conn.close()


#: The tables of a store and their columns (a store lacking any of them is damaged).
COLUMNS = _schema_columns()
#: Columns of ``runs`` holding JSON (``result`` and ``final`` may be NULL).
JSON_COLUMNS = ("axes", "config", "result", "final", "versions")


class StoreFile:
    """Opening, creating, checking and closing a store's file; :class:`beyondbp.study.store.Store`
    (a dataclass that declares these attributes) is one."""

    path: Path
    create: bool
    study: str | None
    busy_timeout: float
    verify: bool
    meta: dict[str, str]
    _conn: sqlite3.Connection
    _meta_problem: str | None

    # -- opening --------------------------------------------------------------------------------
    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(f"{str(self.path)!r} is not a beyondbp run store ({why}); give the store of this study with --store, or a new path")

    def _damaged(self, why: str) -> ConfigError:
        return ConfigError(
            f"run store {str(self.path)!r} is damaged ({why}); `beyondbp study check` lists its problems: restore "
            "the store from a backup, or move it aside and run the study again into a new store"
        )

    def _read_head(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                return fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise ConfigError(f"run store {str(self.path)!r} cannot be read: {exc.strerror or exc}") from None

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise self._refuse("it is not a regular file")
        exists = path.exists()
        if not exists and not self.create:
            raise ConfigError(f"run store {str(path)!r} does not exist; `beyondbp study run` creates it")
        if exists:
            head = self._read_head()
            if not head and self.create:
                # another driver of the study may have just created the file (SQLite makes it
                # empty on connect and writes the header when it creates the tables): give it
                # a moment before calling the file someone else's empty file
                deadline = time.monotonic() + EMPTY_STORE_GRACE
                while not head and time.monotonic() < deadline:
                    time.sleep(0.05)
                    head = self._read_head()
            if head != SQLITE_HEADER:
                raise self._refuse("it is not an SQLite database" if head else "it is empty")
        else:
            from .. import files

            files.check_writable(path, "run store")
            if not path.parent.is_dir():  # a mistyped --store must not start a new study elsewhere
                raise ConfigError(
                    f"the folder of run store {str(path)!r} does not exist; give a store in an existing folder "
                    "(or create the folder first)"
                )
        try:
            if self.create:
                conn = sqlite3.connect(str(path), timeout=self.busy_timeout, isolation_level=None)
            else:
                conn = self._connect_readonly(path)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.row_factory = sqlite3.Row
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"run store {str(path)!r} cannot be opened: {exc}") from None
        if app_id == 0 and self.create:
            self._initialise(conn)
        return conn

    def _connect_readonly(self, path: Path) -> sqlite3.Connection:
        """A read-only connection that creates no file beside the store (see the module docstring)."""
        wal_file = path.with_name(path.name + "-wal")

        def in_wal_mode() -> bool:
            with open(path, "rb") as fh:
                head = fh.read(20)
            return len(head) == 20 and head[18] == 2  # the file format write version: 2 is WAL

        def signature() -> tuple[int, int, int]:
            st = path.stat()
            return st.st_ino, st.st_size, st.st_mtime_ns

        if in_wal_mode() and not wal_file.exists() and hasattr(sqlite3.Connection, "deserialize"):
            # no process has it open; a mode=ro connection would create -wal and -shm and leave them
            for _ in range(5):
                before = signature()
                data = bytearray(path.read_bytes())
                if signature() == before and not wal_file.exists():  # nobody wrote it meanwhile
                    data[18:20] = b"\x01\x01"  # read the copy in rollback mode: no WAL files needed
                    conn = sqlite3.connect(":memory:", isolation_level=None)
                    conn.deserialize(bytes(data))
                    return conn
                if wal_file.exists():
                    break  # a writer has it open now: share its files
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               timeout=self.busy_timeout, isolation_level=None)

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """Create the tables of an empty database (once, even with concurrent creators)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fresh = conn.execute("PRAGMA application_id").fetchone()[0] == 0
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if fresh and tables == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    meta = {"format": FORMAT, "version": str(VERSION), "study": self.study or "",
                            "created_at": str(time.time())}
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"run store {str(self.path)!r} cannot be created: {exc}") from None

    def _check_meta(self) -> None:
        try:
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._refuse(str(exc)) from None
        if app_id != APPLICATION_ID:
            raise self._refuse("it is another SQLite database")
        if self.verify:
            problems = self.damage(full=False, limit=1)
            if problems:
                raise self._damaged(problems[0])
        try:
            meta = {r["key"]: r["value"] for r in self._conn.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            if self.verify:
                raise self._damaged(f"its meta table cannot be read: {exc}") from None
            self.meta: dict[str, str] = {}
            self._meta_problem = f"its meta table cannot be read ({exc})"
            return
        if meta.get("format") != FORMAT:
            raise self._refuse("its format mark is missing")
        if meta.get("version") != str(VERSION):
            raise ConfigError(
                f"run store {str(self.path)!r} has layout version {meta.get('version')}, and this beyondbp reads version {VERSION}"
            )
        self.meta = meta
        if self.study is not None and meta.get("study") != self.study:
            raise ConfigError(
                f"run store {str(self.path)!r} belongs to study {meta.get('study')!r}, not {self.study!r}; "
                "give this study its own store with --store"
            )

    def damage(self, full: bool = True, limit: int = 20) -> list[str]:
        """What is wrong with the file, one sentence each (empty when sound): SQLite's
        ``PRAGMA integrity_check`` (``quick_check`` with ``full=False``: it skips verifying that
        indexes match their tables) and the tables and columns of this layout (:data:`COLUMNS`).
        SQLite's report is cut after ``limit`` findings. The rows themselves are checked by
        ``study check`` (:func:`beyondbp.study.inspection.check_study`)."""
        problems: list[str] = []
        found: tuple[str, list[str]] | None = None
        # the integrity check can stop at "database disk image is malformed" where the quick
        # check names the page: then the quick check's findings are reported
        for pragma in ("integrity_check", "quick_check") if full else ("quick_check",):
            try:
                rows = [str(r[0]) for r in self._conn.execute(f"PRAGMA {pragma}({int(limit)})")]
            except sqlite3.DatabaseError as exc:
                found = found or (pragma, [str(exc)])
                continue
            lines = [" ".join(line.split()) for row in rows for line in row.splitlines()
                     if line.strip() and line.strip() != "*** in database main ***"]
            if lines != ["ok"]:
                found = (pragma, lines)
            break
        if found is not None:
            problems.append(f"SQLite's {found[0].replace('_', ' ')} failed: {'; '.join(found[1])}")
        try:
            for table, columns in COLUMNS.items():
                have = [r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")]
                if not have:
                    problems.append(f"its table {table!r} is missing")
                    continue
                missing = [c for c in columns if c not in have]
                if missing:
                    problems.append(f"its table {table!r} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        except sqlite3.DatabaseError as exc:
            problems.append(f"its tables cannot be listed ({exc})")
        if self._meta_problem:
            problems.append(self._meta_problem)
        return problems

    def close(self) -> None:
        if self.create:
            # the last connection switches the file back to rollback-journal mode, so readers can
            # open it read-only without creating -wal and -shm files; with another connection open
            # (another driver, a reader) the switch fails at once and the file stays in WAL mode
            try:
                self._conn.execute("PRAGMA busy_timeout = 0")
                self._conn.execute("PRAGMA journal_mode = DELETE")
            except sqlite3.DatabaseError:
                pass
        self._conn.close()
