"""A `mmcore fit` run shared by the plugin tests that need one trained from a newcomer's messy table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: The cp1252 run's columns: two ids fit ignores ('Kundennr' a code per row, 'row' a dense integer
#: index -- a name predict's own output uses), two categories with non-ASCII values, a number, the target.
CP1252_HEADER = ("Kundennr", "row", "Kunde", "Stadt", "Betrag", "y")


def write_cp1252(path: Path, rows: list[tuple]) -> Path:
    """``rows`` as a ``;``-separated cp1252 CSV with decimal commas (what Excel saves on a German Windows)."""
    lines = [";".join(CP1252_HEADER)]
    lines += [";".join(str(v).replace(".", ",") if isinstance(v, float) else str(v) for v in row) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    return path


def cp1252_rows(n: int, seed: int, start: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = round(float(rng.standard_normal()), 3)
        kunde = ["Müller", "café", "Zoë"][i % 3]
        rows.append((f"K{start + i:04d}", 100 + start + i, kunde, ["Zürich", "Köln"][i % 2], a,
                     "hoch" if a + (0.8 if kunde == "Müller" else -0.4) > 0 else "tief"))
    return rows


@pytest.fixture(scope="session")
def cp1252_fit_run(tmp_path_factory) -> Path:
    """A `mmcore fit` run (one epoch, 40 rows, ~8 s) of a ``;``-separated cp1252 CSV with decimal commas,
    read with ``--encoding cp1252`` (the delimiter and decimal commas found); its folder holds ``run/``."""
    from mmcore.cli import main

    folder = tmp_path_factory.mktemp("cp1252_fit")
    table = write_cp1252(folder / "train.csv", cp1252_rows(40, 0))
    assert main(["fit", str(table), "--target", "y", "--encoding", "cp1252", "--preset", "fast", "--max-epochs", "1",
                 "--time-limit", "10m", "--run-dir", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture(scope="session")
def cp1252_table():
    """``write(path, n, seed, start=0, **changes)``: a new table of the cp1252 run's kind (``changes``:
    column -> a value for every row, e.g. ``Kunde="Acme"``)."""
    def write(path: Path, n: int, seed: int, start: int = 1000, **changes) -> Path:
        index = {c: i for i, c in enumerate(CP1252_HEADER)}
        rows = [tuple(changes.get(c, row[index[c]]) for c in CP1252_HEADER) for row in cp1252_rows(n, seed, start)]
        return write_cp1252(path, rows)

    return write
