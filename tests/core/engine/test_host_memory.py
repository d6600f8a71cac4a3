"""Keeping freed host memory for reuse (glibc mallopt) during training."""

import platform

import pytest

from mmcore.engine import host_memory
from mmcore.engine.trainer import Trainer


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_settings_take_effect_on_glibc():
    assert host_memory.retain_freed_memory() is True


def test_other_c_libraries_are_left_alone(monkeypatch):
    host_memory.retain_freed_memory.cache_clear()
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    try:
        assert host_memory.retain_freed_memory() is False
    finally:
        host_memory.retain_freed_memory.cache_clear()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_trainer_applies_them_unless_told_not_to(wine_config, monkeypatch, enabled):
    from mmcore.engine import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "retain_freed_memory", lambda: calls.append(1) or True)
    wine_config["trainer"]["retain_freed_memory"] = enabled
    trainer = Trainer(wine_config)
    trainer.setup()
    trainer.dist.close()
    assert calls == ([1] if enabled else [])
