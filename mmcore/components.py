"""The component contracts: Processor, Encoder, Fusion, Head (and HeadOutput), Perturbation.

Every component a plugin registers is built by a factory (usually the class itself) and is one
of these. The framework fills a few *reserved* constructor arguments itself; everything else is
an option the user sets in the config:

=========  =================================  ===============================================
kind       built as                           reserved arguments (filled by the framework)
=========  =================================  ===============================================
encoder    ``factory(**options)``             none
fusion     ``factory(input_dims, **options)`` ``input_dims``: ``{slot: encoder.dim}``
head       ``factory(input_dim, **options)``  ``input_dim``: the fusion's output ``dim``;
                                              ``input_dims`` too, if the head asks for it
dataset    ``factory(split, **options)``      ``split``: "train", "val" or "test"
perturb.   ``factory(level, **options)``      none (``level`` is an option: 0 = unchanged)
=========  =================================  ===============================================

docs/plugins.md is the plugin author's reference for every kind (with an example each).

Optional protocols are declared here with their defaults, never discovered by ``getattr``: a
Processor's ``training`` / ``augment`` flags, ``check_state`` and, for row readers, ``columns`` /
``categorical``; an Encoder's frozen stage (``frozen_features``, ``from_frozen``, ``cacheable``,
``frozen_dim``, ``pooled_cache_exact``); a Fusion's and a Head's ``reads_tokens``; a Head's ``classes`` / ``num_classes`` and its factory's ``dataset_options`` /
``options_from_data``. A component overrides what it needs; :mod:`mmcore.testing` checks them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmcore.features import Features

#: Constructor arguments the framework supplies itself, per component kind.
RESERVED_ARGUMENTS: dict[str, frozenset[str]] = {
    "encoder": frozenset(),
    "fusion": frozenset({"input_dims"}),
    "head": frozenset({"input_dim", "input_dims"}),
    "dataset": frozenset({"split"}),
}

#: The reserved argument a factory taking only ``**kwargs`` still receives.
PRIMARY_ARGUMENT: dict[str, str] = {"fusion": "input_dims", "head": "input_dim", "dataset": "split"}

Batch = dict[str, torch.Tensor]


class Processor(abc.ABC):
    """Turns one raw sample of a modality into tensors, and a list of them into a padded batch.

    ``None`` stands for a sample that lacks the modality: ``collate`` must carry it as
    ``present=False`` in the batch, never as data.
    """

    #: Train-time augmentation switch: the trainer sets it True while it collates training batches
    #: and False for evaluation (:func:`mmcore.data.processors_training`). A processor without
    #: train-time behaviour ignores it.
    training: bool = False
    #: Whether ``__call__`` may give different outputs for one raw input while ``training`` (random
    #: augmentation). Such a processor's outputs are never memoized (``trainer.cache_inputs``) nor
    #: its slot's features cached (``trainer.cache_features``). False: the same input, the same output.
    augment: bool = False
    #: For processors that read a row ``{column: value}`` (tabular): the numeric columns read, in
    #: order, and the categorical ones (kept as strings by ``mmcore predict``). None: not a row reader.
    columns: Sequence[str] | None = None
    categorical: Sequence[str] | None = None

    @abc.abstractmethod
    def __call__(self, raw: Any) -> Any:
        """Raw sample (path, PIL image, string, waveform, row, ...) -> tensors for ``collate``."""

    @abc.abstractmethod
    def collate(self, items: Sequence[Any]) -> Batch:
        """Processed samples (``None`` = missing) -> a batch dict holding at least ``present [B]`` bool."""

    def fit(self, raws: Sequence[Any]) -> None:  # noqa: B027 - optional hook, no-op by default
        """Fit statistics on the training split's raw samples (``None`` = missing). Optional."""

    def partial_fitter(self) -> PartialFit | None:
        """A streaming fit of this processor (:class:`PartialFit`), or None (the default) when it has
        none. The trainer fits a processor that has one chunk by chunk, in one pass over the training
        split, without holding the split; one that has none but overrides :meth:`fit` gets its slot's
        raw values as one list (see :func:`fitter_for`). Its result must equal :meth:`fit`'s on the same
        raw values in the same order, however they are chunked (checked by :mod:`mmcore.testing`):
        a processor usually implements :meth:`fit` through it."""
        return None

    def unseen(self, raw: Any) -> dict[str, str]:
        """The values of one raw sample that this processor has no fitted encoding for and reads as unknown,
        ``{column: value}`` (a category not in the vocabulary fitted on the training split). Nothing fails on
        them -- real data has new categories -- but ``mmcore predict``/``eval`` count them in a warning line and
        ``mmcore serve`` notes them in the record's answer (:mod:`mmcore.engine.unseen`). Default: none."""
        return {}

    def unseen_reason(self, column: str) -> str:
        """How :meth:`unseen`'s values of ``column`` came to be unknown, for the warning line (default: "not
        seen in training")."""
        return "not seen in training"

    def state_dict(self) -> dict[str, Any]:
        """Fitted state to save with the model, in ``model.json``: JSON values only (numbers,
        strings, bools, None, lists, string-keyed dicts; convert tensors with ``.tolist()``).
        ``load_state_dict(json.loads(json.dumps(state)))`` on a fresh processor must give the
        same outputs (checked by :func:`mmcore.testing.check_encoder`)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027
        """Restore what ``state_dict`` returned."""

    def check_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook, no check by default
        """Check a saved state before :meth:`load_state_dict` (a ``model.json`` may be damaged or edited):
        raise ValueError whose message starts with the offending key and says what was expected and
        what came (``"vocab has 5000 tokens; vocab_size 1000 holds at most 998"``), e.g. a vocabulary
        larger than the embedding table it indexes. Default: no check (numbers are checked finite,
        ``std``/``scale`` positive, by :func:`mmcore.engine.artefacts.check_processor_state`)."""

    def example(self, generator: torch.Generator) -> Any:
        """A valid raw sample, for conformance checks. Override it to get processor coverage."""
        raise NotImplementedError(f"{type(self).__name__} does not provide example raw samples")


class PartialFit(abc.ABC):
    """A processor's fit fed in chunks (the ``partial_fit`` of scikit-learn's streaming estimators,
    with the statistics settled once at the end): :meth:`update` with each chunk of raw values
    (``None`` = missing) in the split's order, then :meth:`finish` once, which sets the processor's
    fitted state. It holds its statistics' own inputs (counts, sums, a column of numbers), never the
    raw samples."""

    @abc.abstractmethod
    def update(self, raws: Sequence[Any]) -> None:
        """Take one chunk of raw values."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Set the processor's fitted state from everything taken (as ``fit`` of all of it would)."""


class _ListFit(PartialFit):
    """For a processor with a ``fit`` but no ``partial_fitter``: its raw values, kept, then ``fit``."""

    def __init__(self, processor: Processor) -> None:
        self.processor, self.raws = processor, []

    def update(self, raws: Sequence[Any]) -> None:
        self.raws.extend(raws)

    def finish(self) -> None:
        raws, self.raws = self.raws, []
        self.processor.fit(raws)


def fitter_for(processor: Processor) -> PartialFit | None:
    """How to fit ``processor`` in one pass: its own :meth:`~Processor.partial_fitter`; else, when it
    overrides :meth:`~Processor.fit`, one that keeps the raw values and calls ``fit`` on them; None
    when it fits nothing (``fit`` not overridden: nothing needs to be read for it)."""
    fitter = processor.partial_fitter()
    if fitter is not None:
        return fitter
    if type(processor).fit is Processor.fit:
        return None
    return _ListFit(processor)


class Encoder(nn.Module, abc.ABC):
    """Encodes one modality's batch into :class:`Features`.

    Subclasses set ``modality`` (the kind of data handled: "image", "text", "audio", "tabular",
    "video", ...) and ``dim`` (the feature width), build their :class:`Processor` in
    ``processor()``, and respect ``batch["present"]``: absent samples get zero features and
    ``present=False``.
    """

    modality: str = "unknown"
    dim: int
    #: Width of :meth:`frozen_features`' output, when it differs from ``dim`` (None: ``dim``).
    frozen_dim: int | None = None
    #: Why a model holding this component cannot be exported (``mmcore export``: ONNX, torch.export),
    #: or None (the default) when it can. The exporter refuses such a model before any work, naming
    #: the component and this reason; :func:`mmcore.testing.check_export` skips the component.
    export_refusal: str | None = None

    @abc.abstractmethod
    def processor(self) -> Processor:
        """The processor that prepares this encoder's inputs (one instance per encoder)."""

    @abc.abstractmethod
    def forward(self, batch: Batch) -> Features:
        """A collated batch from this encoder's processor -> Features ``[B, L, dim]``."""

    # A frozen stage and a trainable tail: ``forward(batch) == from_frozen(frozen_features(batch))``.
    # ``trainer.cache_features`` computes the frozen stage once per sample and keeps it
    # (:mod:`mmcore.feature_cache`) when ``cacheable``. The defaults make the whole encoder the frozen
    # stage, cacheable when none of its parameters trains.
    def frozen_features(self, batch: Batch) -> Features:
        """The frozen stage: a collated batch -> Features ``[B, L, frozen_dim or dim]``. Default: the
        whole encoder (``self(batch)``)."""
        return self(batch)

    def from_frozen(self, features: Features) -> Features:
        """The trainable tail: :meth:`frozen_features`' output -> Features ``[B, L, dim]``. Default: unchanged."""
        return features

    @property
    def cacheable(self) -> bool:
        """Whether :meth:`frozen_features` may be computed once per sample and reused: its weights do
        not train and its output does not depend on training mode or chance. Default: True when no
        parameter of the encoder trains. An encoder that splits overrides it (e.g. ``freeze: true``)."""
        return not any(p.requires_grad for p in self.parameters())

    @property
    def pooled_cache_exact(self) -> bool:
        """Whether :meth:`from_frozen` applied to one token equal to the frozen ``pooled`` vector gives
        the ``pooled`` it gives for all the tokens (it is the identity, or an affine map per token such
        as a Linear projection): then a feature cache may keep only the pooled vector when the fusion
        and head read no tokens. Default: True when :meth:`from_frozen` is not overridden."""
        return type(self).from_frozen is Encoder.from_frozen


class Fusion(nn.Module, abc.ABC):
    """Combines ``{slot: Features}`` into one fused :class:`Features` of width ``dim``.

    Must respect every input's ``mask`` (padding never leaks into the result) and ``present``
    (an absent modality never influences a sample's output). ``input_dims`` maps each slot to
    its encoder's width.
    """

    #: Whether ``forward`` reads its inputs' ``tokens`` / ``mask`` (False: only ``pooled`` /
    #: ``unmasked_pooled`` and ``present``). A frozen-feature cache keeps less for a fusion that
    #: does not (:func:`mmcore.feature_cache.reads_pooled_only`); :mod:`mmcore.testing` checks the claim.
    reads_tokens: bool = True
    #: Why a model holding this component cannot be exported (``mmcore export``: ONNX, torch.export),
    #: or None (the default) when it can. The exporter refuses such a model before any work, naming
    #: the component and this reason; :func:`mmcore.testing.check_export` skips the component.
    export_refusal: str | None = None

    def __init__(self, input_dims: Mapping[str, int], dim: int) -> None:
        super().__init__()
        if not isinstance(input_dims, Mapping) or not input_dims:
            raise ValueError(f"input_dims must be a non-empty mapping {{slot: dim}}, got {input_dims!r}")
        for slot, width in input_dims.items():
            if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                raise ValueError(f"input_dims[{slot!r}] must be a positive int, got {width!r}")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.input_dims: dict[str, int] = dict(input_dims)
        self.dim = dim

    @abc.abstractmethod
    def forward(self, features: Mapping[str, Features]) -> Features:
        """``{slot: Features}`` -> fused Features of width ``self.dim``."""


@dataclass
class HeadOutput:
    """What a head returns.

    Attributes:
        logits: the raw output (e.g. class scores ``[B, C]``).
        predictions: the task's predictions (e.g. class indices ``[B]``).
        loss: scalar training loss, when targets were given.
        extras: anything else a head wants to report (probabilities, attention maps, ...).
        features: ``{slot: Features}`` the encoders produced for this batch, and
        fused: the fusion's output -- both set by :class:`~mmcore.MultimodalModel` (not by heads),
            so that training plugins (``mmcore_train_loss``: balancers, distillation) can build
            their terms from them without a second forward pass. None when a head is called alone.
    """

    logits: torch.Tensor
    predictions: torch.Tensor
    loss: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    features: Mapping[str, Features] | None = None
    fused: Features | None = None


class Head(nn.Module, abc.ABC):
    """Task head: fused features (+ targets) -> :class:`HeadOutput`, with its metrics."""

    #: Class names (index = class) when the head predicts named classes; ``mmcore predict`` reports
    #: probabilities by these names. None: no names (indices, or not a classifier).
    classes: list[str] | None = None
    #: Number of classes of a classifier (robustness reports show chance level); None otherwise.
    num_classes: int | None = None
    #: Whether ``forward`` reads ``tokens`` / ``mask`` of the fused features or of the per-slot
    #: ``features`` (False: only their ``pooled`` vectors and ``present``); see ``Fusion.reads_tokens``.
    reads_tokens: bool = True

    # The two static methods below are read from the head's *factory* by the trainer, before the
    # head is built; a factory that is a function may carry them as attributes.
    @staticmethod
    def dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
        """Data-set options this head implies, from its own options (``{name: value}`` of the config's
        head section): e.g. ``{"target_type": "class", "classes": [...]}``. They go to a dataset
        factory that takes them, unless the data config sets them. Default: none."""
        return {}

    @staticmethod
    def options_from_data(options: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The head's options completed from the training split's ``metadata`` (e.g. ``classes`` and
        ``num_classes`` from the labels), so that ``config.yaml`` and ``model.json`` carry them. Given
        options win; one that disagrees with the data raises :class:`~mmcore.errors.ConfigError`
        (issue paths relative to the head). Default: the options unchanged."""
        return dict(options)
    #: Why a model holding this component cannot be exported (``mmcore export``: ONNX, torch.export),
    #: or None (the default) when it can. The exporter refuses such a model before any work, naming
    #: the component and this reason; :func:`mmcore.testing.check_export` skips the component.
    export_refusal: str | None = None

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        if not isinstance(input_dim, int) or isinstance(input_dim, bool) or input_dim <= 0:
            raise ValueError(f"input_dim must be a positive int, got {input_dim!r}")
        self.input_dim = input_dim

    @abc.abstractmethod
    def forward(
        self,
        fused: Features,
        targets: torch.Tensor | None = None,
        features: Mapping[str, Features] | None = None,
    ) -> HeadOutput:
        """Predict from ``fused``; compute the loss when ``targets`` is given.

        ``features`` holds the per-modality features, for heads that need them (contrastive).
        """

    @abc.abstractmethod
    def metrics(self) -> dict[str, Any]:
        """Fresh torchmetrics metrics, by name, updated with ``(output.predictions, targets)``."""

    @abc.abstractmethod
    def collate_targets(self, targets: Sequence[Any]) -> torch.Tensor:
        """Raw per-sample targets -> the tensor ``forward`` expects."""

    def fit_targets(self, targets: Sequence[Any]) -> None:  # noqa: B027 - optional hook, no-op by default
        """Fit target statistics (e.g. standardisation) on the training split's raw targets. Optional."""

    def format_predictions(self, output: HeadOutput) -> list[Any]:
        """Per-sample JSON-serialisable predictions."""
        return output.predictions.detach().cpu().tolist()

    def distillation_loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """The soft-target loss of knowledge distillation (``trainer.distill``): how far this head's
        ``logits`` are from a teacher's ``teacher_logits`` (the same shape, e.g. ``[B, C]``), as a
        scalar mean over the batch, already scaled so that its gradients keep their size whatever
        ``temperature`` (> 0) is -- Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a
        neural network": ``T^2 * KL(softmax(t / T) || softmax(s / T))`` for a softmax classifier.

        The default raises ``NotImplementedError``: a head whose outputs have no such loss
        (retrieval scores, generated tokens) cannot be a distillation student.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no distillation loss")

    def example_targets(self, batch_size: int, generator: torch.Generator) -> list[Any]:
        """Valid raw targets, for conformance checks."""
        raise NotImplementedError(f"{type(self).__name__} does not provide example targets")


class Perturbation:
    """A change to raw inputs of one modality, for robustness evaluation (``mmcore eval --robustness``)
    and train-time augmentation (``trainer.augment``): ``Perturbation(level)(raw, generator) -> raw``.

    ``level`` is a number >= 0: 0 leaves the input unchanged (as its processor sees it), larger is
    stronger. ``__call__`` takes a raw value the modality's processors read (a path, PIL image,
    array, waveform, string, row) and returns one they accept, drawing all randomness from
    ``generator`` (same generator state -> same output) and never modifying ``raw`` in place.

    Class attributes: ``levels`` (the default sweep of ``mmcore eval --robustness``), ``unit``
    (how a level reads in reports) and, optionally, ``modality`` (else give it to
    ``registry.add_perturbation(..., modality=...)``; one source only). Override
    :meth:`describe` to print a level differently (e.g. as an SNR in dB).

    Raises:
        ValueError: ``level`` is not a number >= 0.
    """

    levels: tuple[float, ...] = ()
    #: how to print a level in reports (e.g. as an SNR)
    unit: str = ""
    #: the modality of the raw inputs it takes (None: given at registration, or any)
    modality: str | None = None

    def __init__(self, level: float) -> None:
        if isinstance(level, bool) or not isinstance(level, (int, float)) or level < 0:
            raise ValueError(f"{type(self).__name__}: level must be a number >= 0, got {level!r}")
        self.level = float(level)

    def __call__(self, raw: Any, generator: torch.Generator) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(raw, generator) -> raw")

    @classmethod
    def describe(cls, level: float) -> str:
        """``level`` as reports print it."""
        return f"{level:g}"
