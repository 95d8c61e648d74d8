"""Append-only JSON-lines metrics: one object per epoch, flushed as soon as it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_after(self, key: str, last: float) -> None:
        """Drop records whose ``key`` exceeds ``last`` (written after the checkpoint a run resumes from)."""
        if not self.path.exists():
            return
        keep = [line for line in read_jsonl(self.path) if line.get(key, 0) <= last]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: what follows it cannot be trusted either
    return out


def write_json(path: str | Path, obj: dict[str, Any]) -> None:
    """Write a JSON file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
