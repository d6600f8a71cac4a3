"""The thread policy (issue 26): the mmcore command makes OpenMP's idle threads sleep unless the user
chose otherwise, and ``trainer.threads: auto`` never runs more threads than the machine has idle
cores."""

import os
import subprocess
import sys

import pytest

from mmcore.threads import auto_threads, prefer_passive_waits

PROBE = "import os, sys\n{prelude}\nimport mmcore\nprint(os.environ.get('OMP_WAIT_POLICY'))"


def probe(prelude: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(prelude=prelude)], capture_output=True, text=True,
                         env={**clean, **env}, check=True)
    return out.stdout.strip()


def test_the_command_sets_passive_waits_before_torch_loads():
    """End to end, in a fresh interpreter: ``import mmcore`` in the ``mmcore`` command sets the policy
    before PyTorch loads (the one subprocess here; the rules behind it are checked in-process below)."""
    assert probe("sys.argv[0] = '/venv/bin/mmcore'") == "PASSIVE"


def test_which_process_is_the_command(monkeypatch):
    from mmcore.threads import invoked_as_command

    monkeypatch.setattr(sys, "argv", ["/venv/bin/mmcore", "train"])
    assert invoked_as_command()
    monkeypatch.setattr(sys, "argv", ["-m", "train"])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "mmcore", "train"], raising=False)
    assert invoked_as_command(), "python -m mmcore is the command too"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pytest"])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "/venv/bin/pytest"], raising=False)
    assert not invoked_as_command(), "import mmcore from a user's program changes nothing"


def test_a_users_choice_and_a_loaded_torch_are_left_alone(monkeypatch):
    import torch  # noqa: F401 - loaded: too late for the policy to matter

    env = {}
    assert not prefer_passive_waits(env) and env == {}, "too late once torch is loaded"


def test_prefer_passive_waits_on_a_given_environment(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as if torch were not loaded yet
    env = {}
    assert prefer_passive_waits(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "active"}
    assert not prefer_passive_waits(env) and env == {"OMP_WAIT_POLICY": "active"}


@pytest.mark.parametrize(("cpus", "default", "load", "processes", "expected"), [
    (2, 2, 3.5, 1, 1),    # the machine is busy: one
    (2, 2, 0.9, 1, 2),    # only this process runs: both cores
    (16, 16, 9.0, 1, 8),  # eight cores busy with other work: the other eight
    (16, 16, 2.0, 2, 8),  # two processes of this run share the cores
    (16, 16, 40.0, 1, 1),  # never fewer than one
    (8, 4, 0.0, 1, 4),    # never more than PyTorch would use
])
def test_auto_threads(cpus, default, load, processes, expected):
    assert auto_threads(cpus=cpus, default=default, load=load, processes=processes) == expected


@pytest.mark.parametrize(("cpus", "default", "idle", "processes", "expected"), [
    (2, 2, 2.0, 1, 2),    # an idle machine: PyTorch's default, whatever the load average remembers
    (2, 2, 1.5, 1, 2),    # half a core busy elsewhere: a second (passive) thread still pays
    (2, 2, 1.4, 1, 1),
    (2, 2, 0.0, 1, 1),    # never fewer than one
    (16, 16, 8.2, 1, 8),  # eight cores busy with other work: the other eight
    (16, 16, 16.0, 4, 4),  # four processes of this run share the idle cores
    (8, 4, 8.0, 1, 4),    # never more than PyTorch would use
])
def test_auto_threads_follows_the_cpus_idle_now(cpus, default, idle, processes, expected):
    assert auto_threads(cpus=cpus, default=default, idle=idle, processes=processes) == expected


HOG_PROBE = r"""
import importlib.util, os, subprocess, sys
# mmcore/threads.py alone (it imports no PyTorch), so the probe starts in a blink even on a busy CPU
spec = importlib.util.spec_from_file_location("threads_under_test", sys.argv[1])
t = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t)
os.sched_setaffinity(0, {0})
hog = subprocess.Popen([sys.executable, "-S", "-c", "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"])
try:
    import time; time.sleep(0.3)
    print(t.idle_cpus(window=0.5))
finally:
    hog.kill()
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_idle_cpus_sees_a_busy_cpu_now():
    """A process spinning on this process's only CPU leaves it no idle CPU, measured now -- not the
    1-minute load average, which lags by a minute and counts this process's own earlier runs."""
    import mmcore.threads

    out = subprocess.run([sys.executable, "-c", HOG_PROBE, mmcore.threads.__file__], capture_output=True, text=True,
                         check=True, timeout=60)
    assert float(out.stdout.strip()) < 0.3, out.stdout


def test_idle_cpus_is_within_the_usable_cpus_and_reused_for_a_while(monkeypatch):
    import mmcore.threads as threads

    monkeypatch.setattr(threads, "_IDLE_CACHE", None)
    first = threads.idle_cpus()
    assert first is not None and 0.0 <= first <= threads.usable_cpus()
    assert threads.idle_cpus() == first, "a measurement younger than IDLE_REUSE_S is reused"
    monkeypatch.setattr(threads, "_IDLE_CACHE", (0.0, 123.0))  # an old measurement is not reused
    assert threads.idle_cpus() != 123.0


def test_the_trainer_option_is_checked():
    from mmcore.engine.config import validate_config
    from mmcore.errors import ConfigError
    from mmcore.plugin_manager import get_registry

    config = {"data": {"name": "sklearn_tabular", "dataset": "wine"},
              "model": {"encoders": {"t": {"name": "tabular_mlp", "num_features": 13}}, "fusion": {"name": "concat"},
                        "head": {"name": "classification", "num_classes": 3}}}
    assert validate_config({**config, "trainer": {}}, get_registry()).threads == "auto"
    assert validate_config({**config, "trainer": {"threads": 3}}, get_registry()).threads == 3
    for bad in (0, "many", 1.5):
        with pytest.raises(ConfigError, match="trainer.threads"):
            validate_config({**config, "trainer": {"threads": bad}}, get_registry())


def test_apply_threads_sets_pytorchs_count_and_auto_stays_within_the_cores():
    import torch

    from mmcore.threads import apply_threads, usable_cpus

    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        chosen = apply_threads("auto")
        assert 1 <= chosen <= usable_cpus() and torch.get_num_threads() == chosen
    finally:
        torch.set_num_threads(before)
