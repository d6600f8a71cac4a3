"""``mmcore fit`` with ``--val``/``--test`` tables whose file cells are missing or unreadable: each is treated as
missing (not --strict) and *listed* as the training table's are -- the table, the column, the row, the file and
what is wrong, at most a few per column on the screen with "and N more" (up to 20 per column in
``autofit.json``'s ``unusable_files``) -- where they used to be only counted. No training: the fit is stopped
right after it has said so (its config step raises), which is what this checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import write_csv, write_png


class _Stop(Exception):
    """Raised where fit would build its config: everything checked and said before it has happened."""


def _rows(n: int, seed: int, gone: tuple[int, ...] = (), broken: tuple[int, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = float(rng.standard_normal())
        photo = "img/gone.png" if i in gone else "img/broken.png" if i in broken else f"img/{i % 3}.png"
        out.append({"photo": photo, "a": round(a, 3), "y": "ab"[a > 0]})
    return out


def test_unreadable_files_of_val_and_test_tables_are_listed(tmp_path: Path, capsys, monkeypatch):
    from mmcore_plugins.autofit import fitting

    for k in range(3):
        write_png(tmp_path / "img" / f"{k}.png", k)
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_csv(tmp_path / "train.csv", _rows(30, 0))
    write_csv(tmp_path / "val.csv", _rows(12, 1, gone=(1, 4, 7), broken=(2, 9)))
    write_csv(tmp_path / "test.csv", _rows(8, 2, gone=(5,)))

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(fitting, "build_config", stop)
    with pytest.raises(_Stop):
        fitting.fit(str(tmp_path / "train.csv"), target="y", val=str(tmp_path / "val.csv"), test=str(tmp_path / "test.csv"),
                    preset="fast", run_dir=tmp_path / "run", verbose=True)
    out = capsys.readouterr().out
    val = next(line for line in out.splitlines() if line.startswith("--val "))
    assert val.startswith(f"--val {str(tmp_path / 'val.csv')!r}: column 'photo': 5 missing/unreadable -> treated as missing: ")
    assert "row 2: file 'img/gone.png' does not exist" in val and "row 3: cannot read image" in val and "broken.png" in val
    assert "row 5: file 'img/gone.png'" in val and "row 8" not in val and val.endswith("; and 2 more (autofit.json lists up to 20)")
    test = next(line for line in out.splitlines() if line.startswith("--test "))
    assert test.endswith("column 'photo': 1 missing/unreadable -> treated as missing: row 6: file 'img/gone.png' does not "
                         f"exist (relative to {str(tmp_path)!r})")
