"""Knowledge distillation (``trainer.distill``): a trained teacher run's outputs as soft targets.

The teacher is a run directory (its ``best/`` checkpoint). When a run starts, the teacher reads
every training row's raw inputs through its *own* processors and its outputs are kept, one per
row, on the training device: computed once, not every epoch. A training batch carries its rows'
indices (``batch["index"]``), so each student step looks its rows up. The teacher sees the rows
as they are in the data -- no modality dropout, no augmentation -- while the student sees its
training view of them, so a student with fewer modalities (no image encoder) learns from a
teacher that saw all of them: *modality distillation*.

Loss per micro-batch (added to the head's loss through the ``mmcore_train_loss`` hook, reported
as ``train/distill`` and ``train/distill_features``)::

    head loss + alpha * head.distillation_loss(student logits, teacher logits, T)
              + alpha * gamma * SP(student fused, teacher fused)          (features: true / gamma)

``distillation_loss`` is the head's own (:meth:`mmcore.Head.distillation_loss`): for a softmax
classifier ``T^2 * KL(softmax(t / T) || softmax(s / T))`` (Hinton, Vinyals & Dean 2015). ``alpha``
weighs the soft targets against the labels, whose weight is 1: the same optimum as Hinton's
``(1 - a) * CE + a * soft`` with ``a = alpha / (1 + alpha)`` (AdamW is invariant to the loss's
scale). ``SP`` is the similarity-preserving loss of Tung & Mori 2019 ("Similarity-preserving
knowledge distillation"): the batch's row-normalised Gram matrices of the fused vectors, student
against teacher, mean squared difference -- it compares which samples the two models find
alike, so student and teacher widths may differ and no projection has to be learned;
``features: true`` takes the paper's ``gamma = 3000``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.data

import mmcore
from mmcore.errors import ConfigError, ConfigIssue

#: ``features: true``: the weight of the similarity-preserving term (Tung & Mori 2019, their CIFAR setting).
SP_GAMMA = 3000.0


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Tung & Mori 2019: ``mean((norm(S S^T) - norm(T T^T))^2)`` over the ``B x B`` entries, where
    ``norm`` L2-normalises each row of the Gram matrix. ``student [B, Ds]``, ``teacher [B, Dt]``
    (widths may differ); a scalar."""
    gs = F.normalize(student.float() @ student.float().T, dim=1)
    gt = F.normalize(teacher.float() @ teacher.float().T, dim=1)
    return (gs - gt).pow(2).mean()


class Distiller:
    """The ``trainer.distill`` plugin of one run: the teacher's cached outputs and the loss terms.

    Built by :meth:`for_run` during the trainer's setup (so a teacher that cannot be used is an
    error in the user's input, exit 2, before any training) and registered for the run like a
    logger, on every process.
    """

    def __init__(self, options: Mapping[str, Any], logits: torch.Tensor, fused: torch.Tensor | None) -> None:
        self.temperature = float(options["temperature"])
        self.alpha = float(options["alpha"])
        features = options.get("features", False)
        self.gamma = (SP_GAMMA if features else 0.0) if isinstance(features, bool) else float(features)
        #: the teacher's outputs, one row per training row: ``[N, ...]`` logits and ``[N, D]`` fused vectors
        self.logits, self.fused = logits, fused

    @classmethod
    def for_run(cls, trainer) -> Distiller:
        """Load ``trainer.options.distill["teacher"]``, check it against the student, and compute its
        outputs for every row of ``trainer.datasets["train"]``.

        :raises ConfigError: the teacher is not a run, reads a modality slot the data does not
            have, predicts other classes than the student, or the student's head defines no
            distillation loss. :raises CheckpointError: the teacher's files are damaged.
        """
        from mmcore.engine.checkpoint import checkpoint_folder, load_model

        options = trainer.options.distill
        where = "trainer.distill.teacher"
        try:
            folder = checkpoint_folder(options["teacher"])
        except FileNotFoundError as exc:
            raise ConfigError([ConfigIssue(where, str(exc))]) from exc
        teacher, _ = load_model(folder, trainer.manager.registry, device=trainer.device)
        student = trainer.model
        if type(student.head).distillation_loss is mmcore.Head.distillation_loss:
            raise ConfigError([ConfigIssue("trainer.distill", f"the student's head {type(student.head).__name__} defines no "
                                           "distillation loss (Head.distillation_loss); classification, multilabel and "
                                           "regression heads do")])
        train = trainer.datasets["train"]
        slots = set()
        for i in range(len(train)):
            slots |= set(train[i]["inputs"])
        missing = [slot for slot in teacher.slots if slot not in slots]
        if missing:
            raise ConfigError([ConfigIssue(where, f"the teacher reads modality slot(s) {missing} that the training data does "
                                                  f"not have (it has {sorted(slots)})")])
        t_classes, s_classes = getattr(teacher.head, "classes", None), getattr(student.head, "classes", None)
        if t_classes is not None and s_classes is not None and list(t_classes) != list(s_classes):
            raise ConfigError([ConfigIssue(where, f"the teacher predicts the classes {list(t_classes)}, the student "
                                                  f"{list(s_classes)}: soft targets need the same classes in the same order")])
        batch_size = trainer.options.eval_batch_size or trainer.options.batch_size
        logits, fused = teacher_outputs(teacher, train, batch_size=batch_size, device=trainer.device,
                                        features=bool(options.get("features")))
        with torch.no_grad():  # the student's logits must have the teacher's shape
            was = student.training
            student.eval()
            probe = student(_inputs(student, [train[0]], trainer.device))
            student.train(was)
        if tuple(probe.logits.shape[1:]) != tuple(logits.shape[1:]):
            raise ConfigError([ConfigIssue(where, f"the teacher's outputs have shape {list(logits.shape[1:])} per sample, "
                                                  f"the student's {list(probe.logits.shape[1:])}")])
        del teacher
        return cls(options, logits, fused)

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output) -> dict[str, torch.Tensor]:
        index = batch.get("index")
        if index is None:
            raise ValueError("trainer.distill needs the batch's row indices (batch['index']): train through Trainer.fit")
        index = index.to(self.logits.device)
        soft = trainer.model.head.distillation_loss(output.logits, self.logits[index].to(output.logits.dtype), self.temperature)
        terms = {"distill": self.alpha * soft}
        if self.gamma and self.fused is not None and output.fused is not None:
            terms["distill_features"] = self.alpha * self.gamma * similarity_preserving_loss(output.fused.pooled, self.fused[index])
        return terms


class _InputsOnly(torch.utils.data.Dataset):
    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"inputs": self.dataset[index]["inputs"]}


def _inputs(model, samples, device) -> dict[str, Any]:
    from mmcore.engine.evaluation import to_device

    inputs, _ = to_device(model.collate([{"inputs": s["inputs"]} for s in samples]), device)
    return inputs


@torch.no_grad()
def teacher_outputs(teacher, dataset, *, batch_size: int, device: torch.device | str,
                    features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's logits for every row of ``dataset``, in order (``[N, ...]``, float32 on
    ``device``), and its fused vectors ``[N, D]`` when ``features``. Evaluation mode: no dropout,
    no augmentation; each row's raw inputs go through the teacher's own processors."""
    from mmcore.data import make_dataloader
    from mmcore.engine.evaluation import to_device

    teacher.eval()
    logits, fused = [], []
    # Inputs only: the teacher's head need not read the student's targets (e.g. class names).
    for batch in make_dataloader(_InputsOnly(dataset), teacher, batch_size, pin_memory=False):
        inputs, _ = to_device(batch, device)
        out = teacher(inputs)
        logits.append(out.logits.float())
        if features:
            fused.append(out.fused.pooled.float())
    return torch.cat(logits), (torch.cat(fused) if features else None)
