"""The ``freeze: true | false | n`` option of the pretrained encoders, in one place.

``true`` (or ``0``): every backbone weight frozen — the encoder is *frozen* (runs in eval mode,
its features are cacheable). ``false``: everything trains. An int ``n``: only the last ``n``
blocks (transformer layers, CNN stages) train, plus any ``always`` modules (e.g. a final norm);
the rest of the backbone is frozen. (ULMFiT-style gradual unfreezing, Howard & Ruder 2018, starts
from such a setting.)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def check_freeze(freeze: bool | int, count: int | None, unit: str = "blocks") -> None:
    """Raise ``ValueError`` unless ``freeze`` is true, false or an int in ``0..count``.

    ``count`` is the number of trainable blocks (None when the model exposes none: then only
    true/false are accepted); ``unit`` names them in the message (``blocks``, ``layers``).
    """
    if freeze is True or freeze is False:
        return
    if isinstance(freeze, bool) or not isinstance(freeze, int) or count is None or not 0 <= freeze <= count:
        raise ValueError(f"freeze={freeze!r}: expected true, false or 0..{count or 0} trailing {unit} to train")


def is_frozen(freeze: bool | int) -> bool:
    """True when ``freeze`` leaves no backbone weight trainable (``true`` or ``0``; ``false`` is not ``0``)."""
    return freeze is True or (freeze is not False and freeze == 0)


def apply_freeze(
    backbone: nn.Module,
    freeze: bool | int,
    blocks: Sequence[nn.Module] | None,
    *,
    always: Sequence[nn.Module] = (),
    unit: str = "blocks",
) -> tuple[bool, list[nn.Module]]:
    """Check ``freeze`` and set ``requires_grad`` on ``backbone``'s parameters accordingly.

    ``blocks``: the backbone's blocks in order (the last ``n`` train for ``freeze: n``);
    ``always``: modules trained whenever any block is. Returns ``(frozen, trained)``: whether the
    whole backbone is frozen, and the modules trained under a partial freeze (``[]`` for true/false).
    Raises ``ValueError`` (see :func:`check_freeze`) before changing anything.
    """
    check_freeze(freeze, None if blocks is None else len(blocks), unit)
    frozen = is_frozen(freeze)
    backbone.requires_grad_(freeze is False)
    trained: list[nn.Module] = []
    if freeze is not False and not frozen:
        chosen = list(blocks or [])  # check_freeze refused an int without blocks
        trained = [*chosen[len(chosen) - int(freeze):], *always]
        for module in trained:
            module.requires_grad_(True)
    return frozen, trained
