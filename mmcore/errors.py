"""Exceptions raised by mmcore. Input errors are ValueError/TypeError subclasses on purpose."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass


class MmcoreError(Exception):
    """Base class of mmcore's own errors."""


class UserInputError(MmcoreError, ValueError):
    """An error the user can fix: bad config, data, checkpoint, media or path.

    The CLI turns every ``UserInputError`` into exit status 2 and one line on stderr
    (``mmcore <command>: <message>``), without a traceback (``--debug`` shows it). The message
    must name the file, row, column or option, what was expected and what came. Subclass it
    (alone or together with a more specific builtin such as ``OSError``) for every error whose
    cause lies in the user's input rather than in mmcore.
    """


class InputReadError(UserInputError):
    """A raw input -- a file a table cell names, an in-memory waveform or image -- that a processor
    cannot read as what it was given as (a truncated file, NaN samples deep in a WAV, ...).

    Readers raise it (``mmcore_plugins.io``'s ``MediaError`` is one) naming the file. What happens
    to it while training, evaluating or predicting follows the model's ``unreadable_inputs``
    (:class:`mmcore.MultimodalModel`): ``"missing"`` makes it a missing modality of that sample,
    counted and reported with its file, row and column; ``"error"`` raises it, naming them.
    """


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while a run trained: ``run_dir`` keeps the checkpoint of its last completed epoch and a
    ``report.json`` with ``status: "interrupted"``; ``mmcore train RUN/config.yaml --resume RUN``
    continues it. A KeyboardInterrupt, so that whatever stops on Ctrl-C still stops."""

    def __init__(self, run_dir: str, epochs_done: int) -> None:
        super().__init__(f"interrupted; {run_dir} holds {epochs_done} completed epoch(s)")
        self.run_dir, self.epochs_done = str(run_dir), epochs_done

    def resume_hint(self) -> str:
        """The command that continues the run."""
        return f"mmcore train {self.run_dir}/config.yaml --resume {self.run_dir}"


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


class ConfigError(UserInputError):
    """A config or model spec is invalid; ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class PluginHookError(PluginError):
    """A plugin's lifecycle hook raised: the run stops (report.json says so), naming plugin and hook.

    Attributes: ``plugin`` (its name), ``distribution`` (``"name version"`` or None for a plugin
    registered at run time), ``hook`` (e.g. ``mmcore_epoch_end``); the original exception is
    ``__cause__``.
    """

    def __init__(self, plugin: str, distribution: str | None, hook: str, exc: BaseException) -> None:
        self.plugin, self.distribution, self.hook = plugin, distribution, hook
        origin = f"distribution {distribution}" if distribution else "registered at run time"
        detail = str(exc)
        super().__init__(f"plugin {plugin!r} ({origin}) failed in {hook}: {type(exc).__name__}" + (f": {detail}" if detail else ""))


#: Attribute set on a ValueError/TypeError raised while mmcore builds a run from the user's input.
USER_INPUT_MARK = "__mmcore_user_input__"


@contextlib.contextmanager
def user_input_phase(what: str) -> Iterator[None]:
    """Mark ``ValueError``/``TypeError`` raised inside as caused by the user's input.

    Wraps the code that turns a config, data set or checkpoint into objects (validation, data
    loading, model building): an error there lies in what the user gave, even when a library
    rather than mmcore raised it. The exception is re-raised unchanged (same type, same
    traceback) with the attribute :data:`USER_INPUT_MARK` set to ``what``; the CLI reports such
    errors like :class:`UserInputError` (exit 2, one line).
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        if not isinstance(exc, UserInputError) and getattr(exc, USER_INPUT_MARK, None) is None:
            try:
                setattr(exc, USER_INPUT_MARK, what)
            except (AttributeError, TypeError):  # an exception type without a __dict__
                pass
        raise


def is_user_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` lies in the user's input: a :class:`UserInputError` or
    :class:`UnknownComponentError`, any mmcore error that is
    also a ``ValueError``/``TypeError`` (the project's convention for bad input), or an error
    marked by :func:`user_input_phase`."""
    return (isinstance(exc, (UserInputError, UnknownComponentError))  # e.g. a run needing an uninstalled plugin
            or (isinstance(exc, MmcoreError) and isinstance(exc, (ValueError, TypeError)))
            or getattr(exc, USER_INPUT_MARK, None) is not None)
