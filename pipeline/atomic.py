"""Atomic file writes: write to a temporary file in the target's folder, then rename it over the
target, so a killed process leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable

import pandas as pd


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp_path), then rename onto `path` (same folder, so the rename is atomic). The
    temporary name keeps the target's extension, for writers that go by it (Keras' .keras)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """UTF-8 text written as given (no newline translation)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write(path, write)


def write_json(data, path: Path) -> None:
    """Indented JSON, written atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(frame: pd.DataFrame, path: Path, float_format: str | None = None) -> None:
    """A table without its index, written atomically."""
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format=float_format))
