"""Exceptions raised by mmcore. Input errors are ValueError/TypeError subclasses on purpose."""

from __future__ import annotations

from dataclasses import dataclass


class MmcoreError(Exception):
    """Base class of mmcore's own errors."""


class PluginError(MmcoreError):
    """A plugin could not be imported or registered (raised only in strict mode)."""


class DuplicateComponentError(MmcoreError, ValueError):
    """Two plugins registered the same component name of the same kind."""


class UnknownComponentError(MmcoreError, KeyError):
    """No component of that kind is registered under that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config, with its dotted path (``model.fusion.dim``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(MmcoreError, ValueError):
    """A config or model spec is invalid; ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
