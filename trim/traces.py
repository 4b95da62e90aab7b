"""Traces: one JSON line per finished problem, appended as the run goes; resumable; pandas-friendly.

A trace holds every step (text, model, tokens, PRM score, decision, discarded weak tokens), the final
answer and its grade, and the run's settings (models, sampling, seed, policy), so a result never
travels without what produced it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pandas as pd


class TraceWriter:
    """Append-only JSONL. On open, finished problems are read back so a crashed run resumes.

    A file written with other settings is refused: mixing runs would silently corrupt a result."""

    def __init__(self, path: str | Path, settings: dict):
        self.path, self.settings = Path(path), settings
        self.done: dict[str, dict] = {}
        if self.path.exists():
            text = self.path.read_text()
            lines = text.splitlines()
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # A crash can leave a half-written last line; anything earlier is corruption.
                    if number == len(lines):
                        break
                    raise ValueError(f"{self.path}:{number} is not valid JSON; delete or repair the file") from None
                if record["settings"] != settings:
                    raise ValueError(
                        f"{self.path} holds traces written with other settings ({record['settings']}); "
                        "write to a new path or delete the file to start over")
                self.done[record["problem_id"]] = record
            if text and not text.endswith("\n"):  # drop the partial last line before appending
                self.path.write_text(text[: text.rfind("\n") + 1])
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        record = {**record, "settings": self.settings}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[record["problem_id"]] = record


def read_traces(path: str | Path) -> list[dict]:
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON ({error.msg}); is this a trace file?") from None
    return records


def traces_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per problem; `steps` stays a list column, settings are flattened."""
    frame = pd.json_normalize(list(records), sep=".")
    return frame


def steps_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per accepted step, with its problem's id, policy and correctness."""
    rows = []
    for r in records:
        for i, step in enumerate(r["steps"], 1):
            rows.append({"problem_id": r["problem_id"], "policy": r["policy"], "step": i,
                         "answer_correct": r["correct"], **step})
    return pd.DataFrame(rows)


def save_parquet(records: Iterable[dict], path: str | Path) -> None:
    frame = pd.DataFrame(list(records))
    for column in ("steps", "settings"):
        if column in frame:
            frame[column] = frame[column].map(json.dumps)  # nested lists/dicts as JSON text: portable
    frame.to_parquet(path, index=False)
