"""The manifest's errors: one bad row (:class:`BadSampleError`) and every problem of a data set at once
(:class:`ManifestError`), each naming the manifest, row and column."""

from __future__ import annotations

from collections.abc import Sequence

from mmcore.errors import UserInputError

#: Problems listed in one error message (the rest are counted).
MAX_LISTED = 20


class BadSampleError(UserInputError):
    """A manifest row that cannot be used; the message names manifest, row and column."""


class ManifestError(BadSampleError):
    """Every problem found in a manifest when the data set was built; ``problems`` lists them all.

    The message lists the first ``MAX_LISTED`` (``"<manifest>: row N, column 'c': expected X, got Y"``)
    and counts the rest.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        head = f"{len(self.problems)} problems in the data set:\n" if len(self.problems) > 1 else ""
        tail = f"\n... and {more} more" if more else ""
        super().__init__(head + "\n".join(shown) + tail)


def bad(table_name: str, number: int, column: str | None, why: str) -> BadSampleError:
    """``"<manifest>: row N, column 'c': why"`` as a :class:`BadSampleError`."""
    where = f", column {column!r}" if column is not None else ""
    return BadSampleError(f"{table_name}: row {number}{where}: {why}")
