"""Offline file mutations for T2 (Jepsen's ``file`` nemesis): applied while no worker runs.

Each mutation returns a one-line description of what it did (or ``None`` when the
file it targets does not exist, e.g. no WAL left after the kill).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = ["MUTATIONS", "Files", "backup", "checkpoint_wal"]

PAGE = 16384  # the log's page size (eventspine.log.sqlite_file._PAGE_SIZE)


class Files:
    """The files of one run: the log and its WAL/SHM, an older copy, the stats output."""

    def __init__(self, state_dir: Path, out_dir: Path) -> None:
        self.db = state_dir / "log.db"
        self.wal = state_dir / "log.db-wal"
        self.shm = state_dir / "log.db-shm"
        self.old = state_dir.parent / "log.db.older"
        self.output = out_dir / "stats.jsonl"
        self.staging = out_dir / "stats.jsonl.staging"


def backup(db: Path, dest: Path) -> None:
    """A consistent copy of a live log (SQLite's online backup, from a read-only reader)."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _truncate_random(path: Path, rng: random.Random) -> str | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    size = path.stat().st_size
    at = rng.randrange(size)
    os.truncate(path, at)
    return f"{path.name}: {size} -> {at} bytes"


def wal_truncate(f: Files, rng: random.Random) -> str | None:
    """Truncate the WAL at a random byte."""
    return _truncate_random(f.wal, rng)


def db_truncate_page(f: Files, rng: random.Random) -> str | None:
    """Truncate the database to a page boundary minus k (1 <= k <= 100) bytes."""
    size = f.db.stat().st_size
    pages = size // PAGE
    if pages < 2:
        return None
    k = rng.randint(1, 100)
    at = rng.randint(1, pages - 1) * PAGE - k
    os.truncate(f.db, at)
    return f"log.db: {size} -> {at} bytes (page boundary - {k})"


def _flip(path: Path, rng: random.Random, p: float = 1e-3) -> str | None:
    if not path.exists() or path.stat().st_size < PAGE:
        return None
    data = bytearray(path.read_bytes())
    page = rng.randrange(len(data) // PAGE)
    flips = 0
    for bit in range(PAGE * 8):
        if rng.random() < p:
            data[page * PAGE + bit // 8] ^= 1 << (bit % 8)
            flips += 1
    path.write_bytes(bytes(data))
    return f"{path.name}: {flips} bits flipped in page {page}"


def db_bitflip(f: Files, rng: random.Random) -> str | None:
    """Flip bits (p = 1e-3) inside a random page of the database file."""
    return _flip(f.db, rng)


def wal_bitflip(f: Files, rng: random.Random) -> str | None:
    """Flip bits (p = 1e-3) inside a random page-sized region of the WAL."""
    return _flip(f.wal, rng)


def delete_wal_shm(f: Files, rng: random.Random) -> str | None:
    """Delete the WAL and the shared-memory file (loses the commits not yet checkpointed)."""
    gone = [p.name for p in (f.wal, f.shm) if p.exists()]
    for p in (f.wal, f.shm):
        p.unlink(missing_ok=True)
    return f"deleted {', '.join(gone) or 'nothing'}"


def older_copy(f: Files, rng: random.Random) -> str | None:
    """Replace the database with an older consistent copy (and drop the newer WAL)."""
    if not f.old.exists():
        return None
    delete_wal_shm(f, rng)
    shutil.copyfile(f.old, f.db)
    return "log.db replaced by the copy taken at checkpoint 1; WAL/SHM deleted"


def older_copy_keep_wal(f: Files, rng: random.Random) -> str | None:
    """Replace the database with an older copy but leave the newer WAL (misdirected write)."""
    if not f.old.exists():
        return None
    shutil.copyfile(f.old, f.db)
    return "log.db replaced by the copy taken at checkpoint 1; newer WAL kept"


def zero_header(f: Files, rng: random.Random) -> str | None:
    """Zero the first 100 bytes (the SQLite header) of the database."""
    with f.db.open("r+b") as fh:
        fh.write(b"\0" * 100)
    return "log.db: header zeroed"


def staging_truncate(f: Files, rng: random.Random) -> str | None:
    """Truncate the stats sink's staging file at a random byte."""
    return _truncate_random(f.staging, rng)


def output_truncate(f: Files, rng: random.Random) -> str | None:
    """Truncate the stats sink's published output file at a random byte."""
    return _truncate_random(f.output, rng)


def output_append_garbage(f: Files, rng: random.Random) -> str | None:
    """Append bytes to the published output (written by something else)."""
    with f.output.open("ab") as fh:
        fh.write(b'{"id": "garbage"}\n')
    return "stats.jsonl: 18 bytes appended"


def checkpoint_wal(db: Path) -> str:
    """Copy the WAL into the database file and empty it (so mutations of ``log.db`` hit
    live pages, not pages the WAL overrides); return SQLite's ``(busy, log, copied)``."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    return f"busy={row[0]} wal_frames={row[1]} copied={row[2]}"


Mutation = Callable[[Files, random.Random], str | None]

#: name -> (how the worker is stopped, mutation), in the order of the T2 table. Stops:
#: ``"kill"`` SIGKILL at a random time after checkpoint 3; ``"kill-after-wal-checkpoint"``
#: the same after the WAL was copied into ``log.db``; ``"fp:<spec>"`` a crash failpoint.
MUTATIONS: dict[str, tuple[str, Mutation]] = {
    "wal-truncate": ("kill", wal_truncate),
    "wal-bitflip": ("kill", wal_bitflip),
    "db-truncate-page-k": ("kill-after-wal-checkpoint", db_truncate_page),
    "db-bitflip": ("kill-after-wal-checkpoint", db_bitflip),
    "delete-wal-shm": ("kill", delete_wal_shm),
    "older-copy": ("kill", older_copy),
    "older-copy-keep-wal": ("kill", older_copy_keep_wal),
    "zero-header": ("kill", zero_header),
    "staging-truncate-committed": ("fp:ckpt.after_commit_before_ack=crash@4", staging_truncate),
    "staging-truncate-uncommitted": ("fp:ckpt.before_commit=crash@4", staging_truncate),
    "output-truncate": ("kill", output_truncate),
    "output-append-garbage": ("kill", output_append_garbage),
}
