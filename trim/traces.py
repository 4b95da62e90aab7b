"""Traces: one JSON line per finished problem, appended as the run goes; resumable; pandas-friendly.

A trace holds every step (text, model, tokens, PRM score, decision, discarded weak tokens), the final
answer and its grade, and the run's settings (models, sampling, seed, policy, problem set), so a result
never travels without what produced it.

What a writer guarantees, whatever the moment it is killed:

- a record is one `write` of one line ending in a newline, synced before `write` returns; a record
  that `write` returned for is never lost, by this writer or by a later resume;
- a resume never rewrites the file. It only *truncates* it at the end of the last complete record (a
  half-written or corrupt last line is a crash artefact and is dropped) or appends the missing newline
  of a complete last record; both are single system calls, so a kill during the repair leaves the file
  before or after it, never in between. The rule is the same on every resume: a corrupt last line is
  dropped, a corrupt line with records after it is refused, naming the file and line;
- one writer at a time: the file is locked (`flock`) for the writer's life, and a second writer is
  refused, naming the file;
- a file written with other settings is refused, naming the fields that differ: mixing runs would
  silently corrupt a result."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per file is then the user's to ensure
    fcntl = None

if TYPE_CHECKING:
    import pandas as pd


def runs_dir(*parts: str) -> Path:
    """Where runs keep their traces: `$TRIM_RUNS_DIR` (on Colab, a mounted Drive: `trim.colab`) or ./runs."""
    return Path(os.environ.get("TRIM_RUNS_DIR") or "runs", *parts)


class TraceError(ValueError):
    """A trace file that cannot be read, resumed or written; the message names the file and line."""


_MISSING = object()


def _show(value, width: int = 60) -> str:
    if value is _MISSING:
        return "absent"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def settings_difference(there: dict, here: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """The fields (dotted paths) where two settings differ, with both values (`_MISSING` when absent)."""
    out = []
    for key in sorted(set(there) | set(here), key=str):
        a, b = there.get(key, _MISSING), here.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def describe_difference(there: dict, here: dict, there_name: str, here_name: str, limit: int = 4) -> str:
    """'seed is 0 in A, 1 in B; ...': the differing fields, each with both values."""
    diffs = settings_difference(there, here)
    parts = [f"{field} is {_show(a)} in {there_name}, {_show(b)} in {here_name}" for field, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more field(s)")
    return "; ".join(parts)


# The counts every record carries, each a number >= 0.
COUNTS = ("strong_tokens", "weak_tokens", "discarded_tokens", "num_steps", "regenerated_steps")


def _short(value) -> str:
    text = json.dumps(value, default=str) if value is not None else "nothing"
    return text if len(text) <= 40 else text[:37] + "..."


NOT_A_RECORD = "is not a trace record (it needs problem_id and settings)"
TOO_DEEP = "nested too deeply to be a trace record"


def record_fault(record) -> str | None:
    """What is wrong with a trace record (a hand edit, another program's file), or None: the checks a
    resume and `trim metrics` apply before they trust a record. `NOT_A_RECORD` when it is no record at all."""
    if not isinstance(record, dict) or "problem_id" not in record or not isinstance(record.get("settings"), dict):
        return NOT_A_RECORD
    if not isinstance(record["problem_id"], str) or not record["problem_id"]:
        return f"has problem_id = {_short(record['problem_id'])}, not a problem's id (a string)"
    settings = record["settings"]
    for key in ("policy", "policy_class"):
        if not isinstance(settings.get(key), str):
            return f"has no settings.{key} (a string)"
    if not isinstance(record.get("correct"), bool):
        return f"has correct = {_short(record.get('correct'))}, not true or false"
    for key in COUNTS:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"has {key} = {_short(value)}, not a number >= 0"
    if not isinstance(record.get("steps"), list):
        return f"has steps = {_short(record.get('steps'))}, not a list of steps"
    return None


def _loads(text: str):
    try:
        return json.loads(text)
    except RecursionError:   # JSON nested deeper than Python's stack: no trace record is
        raise json.JSONDecodeError(TOO_DEEP, text, 0) from None


def _parse_line(raw: bytes) -> tuple[dict | None, str | None, bool]:
    """(record, None, True), or (None, what is wrong with the line, whether it could be a cut-off record)."""
    cut_off = raw.lstrip().startswith(b"{")  # a record's line starts with '{'; a prefix of it never parses
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"is not valid UTF-8 (byte {error.start + 1} of the line)", cut_off
    try:
        record = _loads(text)
    except json.JSONDecodeError as error:
        return None, f"is not valid JSON ({error.msg})", cut_off
    fault = record_fault(record)
    if fault is not None:
        return None, fault, False
    return record, None, True


def scan(path: str | Path, data: bytes) -> list[tuple[int, int, bool, dict]]:
    """The records a resume keeps, as (line number, end offset after its newline, has newline, record).

    A cut-off last line (a kill mid-write) is dropped; any other bad line is a `TraceError` naming the
    file and line, as is a problem recorded twice."""
    parsed = []
    for number, _, end, has_newline, raw in _lines(data):
        if raw.strip():
            parsed.append((number, end, has_newline, *_parse_line(raw)))
    if parsed and parsed[-1][4] is not None and parsed[-1][5]:
        parsed.pop()
    seen: dict[str, int] = {}
    for k, (number, _, _, record, error, _) in enumerate(parsed):
        if error is not None:
            where = "and complete records follow it" if k < len(parsed) - 1 else "and it is the last line"
            raise TraceError(f"{path}:{number} {error}, {where}; the file was damaged or is not a trace: "
                             "delete or repair that line (or the file) to resume")
        pid = record["problem_id"]
        if pid in seen:
            raise TraceError(f"{path}:{number} repeats problem {pid!r} of line {seen[pid]} (two runs wrote "
                             "this file at once?); keep one record per problem, or delete the file")
        seen[pid] = number
    return [(number, end, has_newline, record) for number, end, has_newline, record, _, _ in parsed]


def check_problem_ids(path: str | Path, records, problem_ids) -> None:
    """Refuse a record of a problem this run does not solve (a hand edit, or a file of another problem set
    with the same settings), naming its line."""
    for number, _, _, record in records:
        if record["problem_id"] not in problem_ids:
            raise TraceError(f"{path}:{number} is a record of problem {record['problem_id']!r}, which is not among "
                             "this run's problems; delete that line (or the file) to resume")


def _lines(data: bytes):
    """(line number, start offset, end offset after its newline, has newline, bytes) of every line."""
    start = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        end = start + len(raw)
        has_newline = end < len(data)
        yield number, start, end + has_newline, has_newline, raw
        start = end + 1


class TraceWriter:
    """Append-only JSONL. On open, finished problems are read back so a crashed run resumes.

    `done` maps each finished problem id to its record. Use it as a context manager, or call `close()`,
    to release the file's lock."""

    def __init__(self, path: str | Path, settings: dict, problem_ids=None):
        self.path, self.settings = Path(path), settings
        self.problem_ids = None if problem_ids is None else set(problem_ids)   # records of others are refused
        self.done: dict[str, dict] = {}
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TraceError(f"{self.path.parent}: cannot create the trace folder ({error.strerror or error}); "
                             "pass a writable directory") from None
        self._fd = self._open_locked()
        try:
            self._resume()
        except BaseException:
            self.close()
            raise

    def _open_locked(self) -> int:
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
            except OSError as error:
                raise TraceError(f"{self.path}: cannot open the trace ({error.strerror or error}); "
                                 "pass a writable file path") from None
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise TraceError(f"{self.path} is being written by another process (it holds the file's lock); "
                                 "wait for that run to finish, or write to another path") from None
            try:  # the lock holds only if the path still names the file we locked
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)
        raise TraceError(f"{self.path}: could not lock the trace file (it keeps being replaced)")

    def _resume(self) -> None:
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        parsed = scan(self.path, data)
        for number, _, _, record in parsed:
            if record["settings"] != self.settings:
                raise TraceError(f"{self.path}:{number} was written with other settings: "
                                 f"{describe_difference(record['settings'], self.settings, 'the file', 'this run')}"
                                 "; write to a new path, or delete the file to start over")
        if self.problem_ids is not None:
            check_problem_ids(self.path, parsed, self.problem_ids)
        self.done = {record["problem_id"]: record for _, _, _, record in parsed}
        # Repair only once the file is known to be resumable (a refused file is left as it was), and only
        # by truncation or by appending one newline: each is one system call, atomic under a kill.
        good_end = parsed[-1][1] if parsed else 0
        if good_end < len(data):  # a dropped partial record, or blank lines after the last record
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        if parsed and not parsed[-1][2]:  # a complete last record that lacks only its newline
            self._append(b"\n")

    def _append(self, data: bytes) -> None:
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def write(self, record: dict) -> None:
        if self._fd is None:
            raise TraceError(f"{self.path}: the trace writer is closed")
        record = {**record, "settings": self.settings}
        pid = record.get("problem_id")
        try:
            line = json.dumps(record, allow_nan=False) + "\n"
        except (TypeError, ValueError) as error:
            raise TraceError(f"the record of problem {pid!r} cannot be written to {self.path} as JSON ({error}); "
                             "traces hold plain, finite numbers") from None
        size = os.fstat(self._fd).st_size
        try:
            self._append(line.encode("utf-8"))
        except OSError as error:
            try:  # leave no partial line behind
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise TraceError(f"{self.path}: cannot append the record of problem {pid!r} "
                             f"({error.strerror or error}); free disk space or write elsewhere, then rerun: "
                             "finished problems are kept") from None
        self.done[pid] = record

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is None:
            return
        try:
            if os.fstat(fd).st_size == 0:  # nothing was written: leave no empty trace behind
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(fd)  # releases the lock

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the modules close() needs may be gone; the OS drops the lock
            pass


def read_lines(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) of every record of a trace file; any bad line is an error naming file:line."""
    path = Path(path)
    data = path.read_bytes()
    lines = [(number, raw) for number, _, _, _, raw in _lines(data) if raw.strip()]
    out = []
    for k, (number, raw) in enumerate(lines):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TraceError(f"{path}:{number} is not valid UTF-8 (byte {error.start + 1} of the line); "
                             "is this a trace file?") from None
        try:
            out.append((number, _loads(text)))
        except json.JSONDecodeError as error:
            cut_off = k == len(lines) - 1 and raw.lstrip().startswith(b"{") and error.msg != TOO_DEEP
            hint = ("; an interrupted run leaves a partial last line: rerun it to repair and finish the trace"
                    if cut_off else "; is this a trace file?")
            raise TraceError(f"{path}:{number} is not valid JSON ({error.msg}){hint}") from None
    return out


def read_traces(path: str | Path) -> list[dict]:
    return [record for _, record in read_lines(path)]


def traces_frame(records: Iterable[dict]) -> "pd.DataFrame":
    """One row per problem; `steps` stays a list column, settings are flattened."""
    import pandas as pd

    frame = pd.json_normalize(list(records), sep=".")
    return frame


def steps_frame(records: Iterable[dict]) -> "pd.DataFrame":
    """One row per accepted step, with its problem's id, policy and correctness."""
    import pandas as pd

    rows = []
    for r in records:
        for i, step in enumerate(r["steps"], 1):
            rows.append({"problem_id": r["problem_id"], "policy": r["policy"], "step": i,
                         "answer_correct": r["correct"], **step})
    return pd.DataFrame(rows)


def save_parquet(records: Iterable[dict], path: str | Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(list(records))
    for column in ("steps", "settings"):
        if column in frame:
            frame[column] = frame[column].map(json.dumps)  # nested lists/dicts as JSON text: portable
    frame.to_parquet(path, index=False)
