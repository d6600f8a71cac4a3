"""Training, evaluation, checkpointing, robustness and cost reports of mmcore models from a config."""

from __future__ import annotations

from mmcore.errors import MmcoreError


class NonFiniteLossError(MmcoreError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step
