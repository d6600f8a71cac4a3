"""A copied or moved run reads and writes only itself (issue 20.5): ``cp -r RUN COPY`` then
``mmcore train COPY/config.yaml`` replaced RUN's weights. A run's config.yaml stores the paths inside
the run relative to it; read back, they mean the folder it is in now (runs written before, with
absolute paths, are taken inside the copy too); training a run's own config again needs to be told
where (``trainer.run_dir=``) or to continue it (``--resume``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mmcore.cli import main
from mmcore.engine.rundir import RunDir
from mmcore.yamlio import dump_yaml, load_yaml_file


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".mmcore-lock"}


@pytest.fixture
def trained(wine_config, tmp_path) -> Path:
    wine_config["trainer"]["epochs"] = 1
    config = tmp_path / "wine.yaml"
    config.write_text(dump_yaml(wine_config))
    assert main(["train", str(config)]) == 0
    return Path(wine_config["trainer"]["run_dir"])


def test_the_stored_config_names_the_run_relative_to_itself(trained):
    stored = load_yaml_file(trained / "config.yaml")
    assert stored["trainer"]["run_dir"] == "."
    assert RunDir(trained).read_config()["trainer"]["run_dir"] == str(trained)


def test_training_a_copy_never_writes_the_original(trained, tmp_path, capsys):
    original = _digest(trained)
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    assert main(["train", str(copy / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"the config of the run in {copy}" in err and "trainer.run_dir=" in err and f"--resume {copy}" in err
    assert _digest(trained) == original and (copy / "best").is_dir()
    # told where: a new run; the original and the copy are left as they were
    copied = _digest(copy)
    assert main(["train", str(copy / "config.yaml"), f"trainer.run_dir={tmp_path / 'new'}"]) == 0
    assert (tmp_path / "new" / "best").is_dir()
    assert _digest(trained) == original and _digest(copy) == copied
    # continued: the copy itself, never the original
    assert main(["train", str(copy / "config.yaml"), "--resume", str(copy)]) == 0
    assert _digest(trained) == original


def test_a_moved_run_and_an_old_style_copy_mean_themselves(trained, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.move(trained, moved)
    assert main(["eval", str(moved)]) == 0
    capsys.readouterr()
    # a run written before paths were stored relative: absolute paths inside it, run_dir naming it
    stored = load_yaml_file(moved / "config.yaml")
    stored["trainer"]["run_dir"] = str(trained)
    stored["trainer"]["cache_features"] = str(trained / "features")
    (moved / "config.yaml").write_text(dump_yaml(stored))
    located = RunDir(moved).read_config()
    assert located["trainer"]["run_dir"] == str(moved) and located["trainer"]["cache_features"] == str(moved / "features")
    assert main(["train", str(moved / "config.yaml")]) == 2
    assert not trained.exists()
