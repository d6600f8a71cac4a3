"""Option checks shared by the built-in layers, fusions and heads; each message names the component and option."""

from __future__ import annotations


def check_positive(component: str, **options: int) -> None:
    """Raise ``ValueError`` when an integer size option is not a positive int (the message names the option)."""
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{component}: {name} must be a positive int, got {value!r}")


def check_dropout(component: str, dropout: float) -> None:
    """Raise ``ValueError`` when ``dropout`` is not a probability in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{component}: dropout must be in [0, 1), got {dropout!r}")


def check_heads(component: str, dim: int, heads: int) -> None:
    """Raise ``ValueError`` unless ``heads`` is a positive int dividing ``dim``."""
    check_positive(component, heads=heads)
    if dim % heads:
        raise ValueError(f"{component}: dim ({dim}) must be divisible by heads ({heads}); e.g. dim={heads * max(1, dim // heads)}")
