"""`example_jsonl`: a logger (``trainer.loggers: [csv, {name: example_jsonl}]``) writing each epoch's
metrics as one JSON line to ``<run_dir>/<filename>``."""

from __future__ import annotations

import json

import mmcore


class JsonlLogger:
    """Append each epoch's metrics as one JSON object per line to ``filename`` in the run directory."""

    def __init__(self, filename: str = "metrics.jsonl") -> None:
        if not filename or "/" in filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.filename = filename

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch, metrics) -> None:
        with open(trainer.run_dir / self.filename, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
