"""``mmcore serve --workers auto`` (the default): a server process per CPU core, within memory; bad values refused."""

from __future__ import annotations

from mmcore_plugins.deploy.commands import AUTO_MAX_WORKERS, PROCESS_BYTES, auto_workers, model_bytes

GIB = 2**30


def test_a_process_per_core_at_most_the_cap():
    assert auto_workers(1, 10**6, 64 * GIB) == 1
    assert auto_workers(2, 10**6, 64 * GIB) == 2
    assert auto_workers(64, 10**6, 512 * GIB) == AUTO_MAX_WORKERS


def test_memory_limits_the_processes_to_half_of_what_is_available():
    model = 2 * GIB  # 3x its file + a runtime a process: 6.5 GiB each
    per_process = PROCESS_BYTES + 3 * model
    assert auto_workers(8, model, 4 * per_process) == 2
    assert auto_workers(8, model, per_process) == 1  # never fewer than one
    assert auto_workers(8, model, None) == 4  # memory unknown: the cores decide


def test_what_a_process_loads_is_measured_from_the_run_or_the_export(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"x" * 1000)
    (run / "features.bin").write_bytes(b"y" * 10**5)  # not loaded by a server
    assert model_bytes(run) == 1000
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"x" * 300)
    (export / "model.int8.onnx").write_bytes(b"x" * 100)
    assert model_bytes(export) == 400 and model_bytes(export, "model.int8.onnx") == 100


def test_a_bad_workers_value_is_refused_before_anything_is_loaded(tmp_path, capsys):
    from mmcore.cli import main

    for bad in ("0", "-2", "many"):
        assert main(["serve", str(tmp_path / "no-run"), "--workers", bad]) == 2
        err = capsys.readouterr().err
        assert "--workers: must be a positive int or auto" in err and err.count("\n") == 1, err
