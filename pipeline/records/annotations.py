"""Annotation tables users bring (Raven Pro, Audacity, CSV) -> one event table.

Every reader returns ANNOTATION_COLUMNS: `file` (the audio file the event belongs to, "" when
the table does not say), `start_s`/`end_s` in seconds from the start of that file,
`low_hz`/`high_hz` (NaN when absent) and `label`.

Readers raise AnnotationError for what makes a table unreadable (no header, a missing
required column, text where a number belongs), as `<table>:<line>: <problem>`. Rows that parse
but make no sense (end before start, empty label, ...) are kept and left to
validate_annotations, so that one bad row does not hide the rest of a table.
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.atomic import write_text

ANNOTATION_COLUMNS = ["file", "start_s", "end_s", "low_hz", "high_hz", "label"]

RAVEN_SELECTION = "Selection"
RAVEN_BEGIN = "Begin Time (s)"
RAVEN_END = "End Time (s)"
RAVEN_LOW = "Low Freq (Hz)"
RAVEN_HIGH = "High Freq (Hz)"
_RAVEN_TABLE_SUFFIX = re.compile(r"(\.Table\.\d+)?\.selections?\.txt$", re.IGNORECASE)


class AnnotationError(ValueError):
    """A table that cannot be read; the message names the table, the line and the problem."""


def _read_lines(path: Path) -> list[str]:
    """Decoded lines without line endings: BOMs, CRLF and lone CR tolerated.

    Excel's "Unicode text" export is UTF-16 with a BOM; tables from Windows without a BOM that
    are not UTF-8 are read as cp1252, then latin-1, which never fails.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
    else:
        for encoding in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _normalize(name: str) -> str:
    """'Call.type', 'call_type' and 'Call type' all become 'call type' (R mangles column names)."""
    return re.sub(r"[^0-9a-z]+", " ", name.lower()).strip()


def _find_column(header: list[str], name: str, where: str) -> int | None:
    if name in header:
        return header.index(name)
    hits = [i for i, h in enumerate(header) if _normalize(h) == _normalize(name)]
    if len(hits) > 1:
        raise AnnotationError(f"{where}: columns {[header[i] for i in hits]} all match {name!r}")
    return hits[0] if hits else None


def _number(text: str, what: str, where: str) -> float:
    """Empty -> NaN; a lone decimal comma ('0,25', European locales) is accepted."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        if re.fullmatch(r"[-+]?\d*,\d+", text):
            return float(text.replace(",", "."))
        raise AnnotationError(f"{where}: {what} {text!r} is not a number") from None


def _frame(rows: list[tuple]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)
    for column in ("start_s", "end_s", "low_hz", "high_hz"):
        table[column] = table[column].astype(np.float64)
    for column in ("file", "label"):
        table[column] = table[column].astype(object)
    return table


def _file_name(path_text: str) -> str:
    """The last component of a path written on Windows or POSIX."""
    if "\\" in path_text:
        return PureWindowsPath(path_text).name
    return PurePosixPath(path_text).name


def _is_absolute(path_text: str) -> bool:
    return PurePosixPath(path_text).is_absolute() or PureWindowsPath(path_text).is_absolute()


def _fields(line: str, width: int, where: str) -> list[str]:
    """Tab-separated cells padded to the header width; trailing empty cells (tabs) dropped."""
    fields = [f.strip() for f in line.split("\t")]
    if len(fields) > width:
        if any(fields[width:]):
            raise AnnotationError(f"{where}: {len(fields)} fields but the header has {width} columns")
        fields = fields[:width]
    return fields + [""] * (width - len(fields))


def raven_audio_name(table_path: str | Path, audio_ext: str = ".wav") -> str:
    """`X.Table.1.selections.txt` (or `X.selection.txt`) -> `X.wav`: Raven's default naming."""
    name = Path(table_path).name
    stem = _RAVEN_TABLE_SUFFIX.sub("", name)
    if stem == name:
        stem = Path(name).stem
    if audio_ext and not audio_ext.startswith("."):
        audio_ext = "." + audio_ext
    return stem + audio_ext


def read_raven(path, label_column: str | Sequence[str] = "Call type", audio_dir=None, audio_ext: str = ".wav",
               default_label: str | None = None) -> pd.DataFrame:
    """A Raven Pro selection table -> one row per selection.

    `label_column` may list candidates: the first one the table has is the label column.

    Column names match exactly or after normalization ('Call.type' matches 'Call type').
    Raven writes one row per view of a selection; the spectrogram row is kept. The audio file is
    `Begin Path`/`Begin File` when present (its name under `audio_dir` when that is given),
    otherwise inferred from the table name (see raven_audio_name), under `audio_dir` when given.
    With `File Offset (s)` and a file column, times are taken within the file: `Begin Time (s)`
    counts from the start of the whole file sequence that was open in Raven.
    Without the label column, `default_label` labels every row; empty label cells get it too.
    """
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(_read_lines(path), 1) if line.strip()]
    if not lines:
        raise AnnotationError(f"{path}: empty file, expected a Raven header line")
    header_no, header_line = lines[0]
    header = [h.strip() for h in header_line.split("\t")]
    while header and not header[-1]:
        header.pop()
    where = f"{path}:{header_no}"
    col = {name: _find_column(header, name, where) for name in (
        RAVEN_SELECTION, "View", RAVEN_BEGIN, RAVEN_END, RAVEN_LOW, RAVEN_HIGH,
        "Begin Path", "Begin File", "File Offset (s)")}
    for required in (RAVEN_BEGIN, RAVEN_END):
        if col[required] is None:
            raise AnnotationError(f"{where}: no {required!r} column (columns: {header})")
    candidates = [label_column] if isinstance(label_column, str) else list(label_column)
    label_at = next((at for at in (_find_column(header, c, where) for c in candidates) if at is not None), None)
    if label_at is None and default_label is None:
        raise AnnotationError(f"{where}: no label column {label_column!r} (columns: {header}); "
                              "pass label_column= or default_label=")
    inferred = raven_audio_name(path, audio_ext)
    if audio_dir is not None:
        inferred = str(Path(audio_dir) / inferred)

    def cell(fields: list[str], name: str) -> str:
        return fields[col[name]] if col[name] is not None else ""

    chosen: dict[int, tuple[int, str, tuple]] = {}
    for count, (line_no, line) in enumerate(lines[1:], 1):
        where = f"{path}:{line_no}"
        fields = _fields(line, len(header), where)
        selection = count
        if col[RAVEN_SELECTION] is not None:
            try:
                selection = int(cell(fields, RAVEN_SELECTION))
            except ValueError:
                raise AnnotationError(f"{where}: Selection {cell(fields, RAVEN_SELECTION)!r} "
                                      "is not a whole number") from None
        start = _number(cell(fields, RAVEN_BEGIN), RAVEN_BEGIN, where)
        end = _number(cell(fields, RAVEN_END), RAVEN_END, where)
        low = _number(cell(fields, RAVEN_LOW), RAVEN_LOW, where)
        high = _number(cell(fields, RAVEN_HIGH), RAVEN_HIGH, where)
        named = cell(fields, "Begin Path") or cell(fields, "Begin File")
        if named:
            offset = _number(cell(fields, "File Offset (s)"), "File Offset (s)", where)
            if not math.isnan(offset):
                start, end = offset, offset + (end - start)
            audio = str(Path(audio_dir) / _file_name(named)) if audio_dir is not None else named
        else:
            audio = inferred
        label = fields[label_at] if label_at is not None else ""
        if not label and default_label is not None:
            label = default_label
        view = cell(fields, "View")
        row = (audio, start, end, low, high, label)
        previous = chosen.get(selection)
        if previous is None:
            chosen[selection] = (line_no, view, row)
        elif previous[1] == view:
            raise AnnotationError(f"{where}: selection {selection} repeats view {view!r} "
                                  f"of line {previous[0]}")
        elif view.lower().startswith("spectrogram") and not previous[1].lower().startswith("spectrogram"):
            chosen[selection] = (line_no, view, row)
    return _frame([row for _, _, row in chosen.values()])


def read_audacity(path, audio_file: str, default_label: str | None = None) -> pd.DataFrame:
    """An Audacity label track: `start<TAB>end<TAB>label` lines, each optionally followed by a
    frequency line `\\<TAB>low_hz<TAB>high_hz`. Audacity writes -1 for an undefined frequency,
    read as NaN. Lines without tabs are split on whitespace (hand-edited files)."""
    path = Path(path)
    rows: list[list] = []
    label_lines: list[int] = []
    has_band: list[bool] = []
    for line_no, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        fields = line.split("\t", 2) if "\t" in line else line.split(None, 2)
        if fields[0].strip() == "\\":
            if not rows:
                raise AnnotationError(f"{where}: frequency line before any label line")
            if has_band[-1]:
                raise AnnotationError(f"{where}: second frequency line for the label on line "
                                      f"{label_lines[-1]}")
            parts = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
            if len(parts) < 3:
                raise AnnotationError(f"{where}: expected '\\<TAB>low_hz<TAB>high_hz'")
            band = [_number(parts[1], "low frequency", where), _number(parts[2], "high frequency", where)]
            rows[-1][3:5] = [math.nan if f < 0 else f for f in band]
            has_band[-1] = True
            continue
        if len(fields) < 2:
            raise AnnotationError(f"{where}: expected 'start<TAB>end<TAB>label', got {line!r}")
        label = fields[2].strip() if len(fields) > 2 else ""
        if not label and default_label is not None:
            label = default_label
        rows.append([str(audio_file), _number(fields[0], "start time", where),
                     _number(fields[1], "end time", where), math.nan, math.nan, label])
        label_lines.append(line_no)
        has_band.append(False)
    return _frame([tuple(r) for r in rows])


def read_csv_annotations(path, columns: dict[str, str] | None = None, audio_dir=None) -> pd.DataFrame:
    """A CSV with `file,start_s,end_s[,low_hz,high_hz],label`.

    `columns` maps our names to the table's (`{"start_s": "Begin", "label": "species"}`); names
    also match case- and punctuation-insensitively. `start_s`, `end_s` and `label` are required,
    and so is any column named in `columns`; without a file column `file` is "". Relative file
    names resolve against `audio_dir` when given. The delimiter is the header's most frequent of
    `,`, `;` and tab (`;` with decimal commas is what spreadsheets in many locales write).
    """
    path = Path(path)
    columns = dict(columns or {})
    unknown = set(columns) - set(ANNOTATION_COLUMNS)
    if unknown:
        raise AnnotationError(f"columns: unknown key(s) {sorted(unknown)}; keys are {ANNOTATION_COLUMNS}")
    text = "\n".join(_read_lines(path))
    first = next((line for line in text.split("\n") if line.strip()), "")
    delimiter = max([",", ";", "\t"], key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = None
    for fields in reader:
        if any(f.strip() for f in fields):
            header = [f.strip() for f in fields]
            break
    if header is None:
        raise AnnotationError(f"{path}: empty file, expected a header line")
    where = f"{path}:{reader.line_num}"
    while header and not header[-1]:
        header.pop()
    at = {}
    for ours in ANNOTATION_COLUMNS:
        at[ours] = _find_column(header, columns.get(ours, ours), where)
        if at[ours] is None and (ours in columns or ours in ("start_s", "end_s", "label")):
            raise AnnotationError(f"{where}: no column {columns.get(ours, ours)!r} for {ours} "
                                  f"(columns: {header}); map it with columns={{{ours!r}: ...}}")
    rows = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        where = f"{path}:{reader.line_num}"
        fields = [f.strip() for f in fields]
        if len(fields) > len(header):
            if any(fields[len(header):]):
                raise AnnotationError(f"{where}: {len(fields)} fields but the header has "
                                      f"{len(header)} columns")
        fields += [""] * (len(header) - len(fields))

        def cell(ours: str) -> str:
            return fields[at[ours]] if at[ours] is not None else ""

        audio = cell("file")
        if audio and audio_dir is not None and not _is_absolute(audio):
            audio = str(Path(audio_dir) / audio)
        numbers = (_number(cell(c), c, where) for c in ("start_s", "end_s", "low_hz", "high_hz"))
        rows.append((audio, *numbers, cell("label")))
    return _frame(rows)


def detect_format(path) -> str:
    """'raven', 'audacity' or 'csv', from the name and the first line; AnnotationError if unclear."""
    path = Path(path)
    if _RAVEN_TABLE_SUFFIX.search(path.name):
        return "raven"
    first = next((line for line in _read_lines(path) if line.strip()), "")
    if any(_normalize(f) == _normalize(RAVEN_BEGIN) for f in first.split("\t")):
        return "raven"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".txt" and not first:
        return "audacity"
    fields = first.split("\t") if "\t" in first else first.split()
    if len(fields) >= 2 and all(re.fullmatch(r"\s*[-+]?(\d+([.,]\d*)?|[.,]\d+)\s*", f) for f in fields[:2]):
        return "audacity"
    raise AnnotationError(f"{path}: cannot tell the annotation format (not a Raven selection table, "
                          "an Audacity label track or a .csv); pass fmt='raven', 'audacity' or 'csv'")


def read_annotations(path, fmt: str = "auto", **kwargs) -> pd.DataFrame:
    """Read any supported table; `kwargs` go to the reader. An Audacity track without
    `audio_file=` gets file "" (the track does not say which recording it labels)."""
    readers = {"raven": read_raven, "audacity": read_audacity, "csv": read_csv_annotations}
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in readers:
        raise AnnotationError(f"fmt: {fmt!r} is not one of 'auto', {', '.join(map(repr, readers))}")
    if fmt == "audacity":
        kwargs.setdefault("audio_file", "")
    return readers[fmt](path, **kwargs)


# Label columns of Raven tables, in order of preference, when a table's labels are read without
# a configured column (truth tables for detect.py; its own tables use `Label`).
RAVEN_LABEL_COLUMNS = ("Call type", "Label", "Annotation", "Species", "Class")


def read_truth_table(path) -> pd.DataFrame:
    """A table of true calls in any format read_annotations takes; a Raven table's label column is
    the first of RAVEN_LABEL_COLUMNS it has."""
    if detect_format(path) == "raven":
        return read_raven(path, label_column=RAVEN_LABEL_COLUMNS)
    return read_annotations(path)


def write_raven(events: pd.DataFrame, path, label_column: str = "Label") -> None:
    """Events of one recording -> a Raven Pro selection table, written atomically.

    Selections are numbered from 1 (Raven refuses a table starting at 0), one `Spectrogram 1`
    row each, in the order given. Times get 9 decimals, frequencies 6; NaN frequencies are left
    empty. A non-empty `file` is written as `Begin File` (its name only). A Raven table belongs
    to one recording, so events of several files are refused: write one table per file.
    """
    path = Path(path)
    missing = {"start_s", "end_s", "label"} - set(events.columns)
    if missing:
        raise AnnotationError(f"write_raven: events lack column(s) {sorted(missing)}")
    standard = [RAVEN_SELECTION, "View", "Channel", RAVEN_BEGIN, RAVEN_END, RAVEN_LOW, RAVEN_HIGH]
    if _normalize(label_column) in {_normalize(c) for c in standard + ["Begin File"]}:
        raise AnnotationError(f"write_raven: label column {label_column!r} clashes with a Raven column")
    files = sorted({f for f in events.get("file", pd.Series(dtype=object)) if isinstance(f, str) and f})
    if len(files) > 1:
        raise AnnotationError(f"write_raven: events span {len(files)} audio files; a Raven table "
                              "belongs to one recording: write one table per file")
    start = events["start_s"].to_numpy(np.float64)
    end = events["end_s"].to_numpy(np.float64)
    bad = ~(np.isfinite(start) & np.isfinite(end))
    if bad.any():
        raise AnnotationError(f"write_raven: event {events.index[bad][0]!r} has no finite start/end time")
    labels = events["label"].fillna("").astype(str)
    bad = labels.str.contains(r"[\t\r\n]").to_numpy()
    if bad.any():
        raise AnnotationError(f"write_raven: label of event {events.index[bad][0]!r} "
                              "contains a tab or line break")
    band = [events[c].to_numpy(np.float64) if c in events else np.full(len(events), np.nan)
            for c in ("low_hz", "high_hz")]
    cells = [[str(i) for i in range(1, len(events) + 1)], ["Spectrogram 1"] * len(events),
             ["1"] * len(events), [f"{t:.9f}" for t in start], [f"{t:.9f}" for t in end],
             *[["" if math.isnan(f) else f"{f:.6f}" for f in b] for b in band], list(labels)]
    header = standard + [label_column]
    if files:
        header.append("Begin File")
        cells.append([_file_name(files[0])] * len(events))
    text = "".join("\t".join(row) + "\n" for row in [header, *zip(*cells)])
    write_text(path, text)


def validate_annotations(table: pd.DataFrame, durations: dict[str, float] | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(good rows, problems): problems has `file` and `reason` (all reasons of a row joined by
    '; ') and keeps the index of the row in `table`.

    Checked: missing or non-finite times, negative times, end before start (end == start is
    allowed: Audacity point labels), low frequency above high, empty label and, when
    `durations` ({file: seconds}) is given, files it lacks and events starting at or after the
    end of their file. An event that only runs past the end is kept: pipeline.datasets.clips.load_clip
    clips it.
    """
    missing = set(ANNOTATION_COLUMNS) - set(table.columns)
    if missing:
        raise AnnotationError(f"validate_annotations: table lacks column(s) {sorted(missing)}")
    start = table["start_s"].to_numpy(np.float64)
    end = table["end_s"].to_numpy(np.float64)
    low = table["low_hz"].to_numpy(np.float64)
    high = table["high_hz"].to_numpy(np.float64)
    files = [f if isinstance(f, str) else "" for f in table["file"]]
    reasons: list[list[str]] = [[] for _ in range(len(table))]

    def check(mask: np.ndarray, reason) -> None:
        for i in np.flatnonzero(mask):
            reasons[i].append(reason(i))

    with np.errstate(invalid="ignore"):
        for name, t in (("start", start), ("end", end)):
            check(np.isnan(t), lambda i, name=name: f"missing {name} time")
            check(np.isinf(t), lambda i, name=name, t=t: f"{name} time is {t[i]}")
            check(np.isfinite(t) & (t < 0), lambda i, name=name, t=t: f"negative {name} time ({t[i]} s)")
        finite = np.isfinite(start) & np.isfinite(end)
        check(finite & (end < start), lambda i: f"end ({end[i]} s) before start ({start[i]} s)")
        check(low > high, lambda i: f"low frequency ({low[i]} Hz) above high frequency ({high[i]} Hz)")
        check(table["label"].fillna("").astype(str).str.strip().eq("").to_numpy(), lambda i: "empty label")
        if durations is not None:
            duration = np.array([durations.get(f, np.nan) for f in files], dtype=np.float64)
            check(np.array([not f for f in files]), lambda i: "no audio file given")
            check(np.array([bool(f) and f not in durations for f in files]),
                  lambda i: "file not in durations")
            check(start >= duration, lambda i: f"starts at {start[i]} s, at or after the end of "
                                               f"the file ({duration[i]} s)")
    bad = np.array([bool(r) for r in reasons], dtype=bool)
    problems = pd.DataFrame({"file": [files[i] for i in np.flatnonzero(bad)],
                             "reason": ["; ".join(reasons[i]) for i in np.flatnonzero(bad)]},
                            index=table.index[bad])
    return table[~bad], problems
