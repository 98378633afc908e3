"""A tiny JSON Lines sink for the CLI tests: buffers on write, appends to the file on flush.

Records only reach the file on ``flush`` (driven by the runtime) and ``close``,
so a test that stops a run can tell whether the run flushed cleanly. ``close``
also writes ``<path>.closed``.
"""

from __future__ import annotations

import json
import os
from typing import Any


class JsonlSink:
    columnar = False

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self, context: Any) -> _Writer:
        return _Writer(self.path)


class _Writer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.buffer: list[str] = []
        open(path, "w").close()

    def write(self, batch: Any) -> None:
        self.buffer.extend(json.dumps(r, sort_keys=True) for r in batch.rows)

    def flush(self) -> None:
        if self.buffer:
            with open(self.path, "a") as fh:
                fh.write("\n".join(self.buffer) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.buffer.clear()

    def close(self) -> None:
        self.flush()
        open(self.path + ".closed", "w").close()
