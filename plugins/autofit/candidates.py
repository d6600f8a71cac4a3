"""Candidates compared on the data itself (issue 27): for an image or text column where a pretrained
encoder is installed, fit measures it against what a from-scratch encoder would see -- a linear probe
on a sample of the training rows, scored on a sample of the validation rows -- and keeps the better.

A rule such as ">= 32 px means a photo" cannot tell an 8 px digit upscaled to 32 px from a photo:
frozen ImageNet features of upscaled digits scored 23.9% where a small CNN at the native size
scored over 70%. So each candidate is measured, cheaply:

* image -- *pretrained*: EfficientNet-Lite0's pooled features (frozen, at the size fit would use,
  at most ``PROBE_IMAGE_SIZE`` px);
  *from scratch*: the grey (or RGB) pixels at the images' own size (at most 32 px). A linear model
  on pixels is the floor of what the small CNN learns from them (it also learns shifts and
  strokes), so the pretrained features must beat it by ``IMAGE_MARGIN`` to be kept.
* text -- *pretrained*: MiniLM's pooled sentence embedding; *from scratch*: TF-IDF of the texts'
  character 2-4-grams within words (what the from-scratch ``text_ngram`` encoder learns from,
  fastText's subwords; it reads misspelt words). The pretrained encoder is kept when it scores at
  least as well.

The probe: scikit-learn's ``LogisticRegression`` (classification: validation accuracy) or
``Ridge`` (regression: validation R^2) on standardised features -- TF-IDF rows, already
L2-normalised, unscaled with a weaker penalty (:func:`probe_score`). Rows are taken
(seeded) until ``budget_s`` seconds are spent on features (every comparison together; one that has
not reached ``MIN_ROWS`` rows of each split goes on, up to ``OVERRUN`` times its share, never past
the phase's deadline less the probes' estimate), at most
``MAX_TRAIN`` training and ``MAX_VAL`` validation rows; with fewer than ``MIN_ROWS`` of either
(or of all a small split has, at least ``MIN_SMALL``) the rule's choice stands, said so.

The phase keeps its budget whatever the machine's load: before each candidate (its model's load,
the rows it needs, both probes on them) its cost is estimated from quiet-machine costs (``LOAD_S``,
``ROW_S``, ``PROBE_CELL_S``) times the machine's pace measured in this run (:class:`Pace`: a short
reference computation and the probes' imports at the start, then the measured / estimated time
of every step done), and a candidate that would pass the phase's deadline is skipped -- its
column keeps the from-scratch encoder, and the reason names the estimate and the time left.
Encoding stops early enough for the probes' estimated time, so the phase ends within its deadline
plus at most one batch or one probe running slower than estimated.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The pretrained image features must beat the pixel probe by this much (accuracy or R^2) to be kept.
#: Measured on issue 27's tables, from probe to trained expert (val accuracy): the small CNN gained
#: 0.07-0.12 over its pixel probe on the product photos (0.780 -> 0.851-0.898) and 0.34 on the digits;
#: the frozen EfficientNet features 0.04 over theirs (0.813 -> 0.856, products at 64 px, where a lead
#: of 0.033 had kept them: 92.0% test; the CNN at 32 px: 91.6%, 93.6% with its experts sharpened). Generated
#: shapes: 0.93-0.95 against 0.34-0.43, kept either way.
IMAGE_MARGIN = 0.08
#: The pretrained text features are kept unless the words + n-grams probe scores higher than this much over them.
TEXT_MARGIN = 0.0
MAX_TRAIN = 400
MAX_VAL = 300
MIN_ROWS = 40
#: Fewer rows than this in a split: never compared (one row moves accuracy by more than 10 points).
MIN_SMALL = 10
#: Rows encoded per call: small, so that a deadline is kept to within one small batch.
BATCH = 16
#: A comparison goes on past its share of the time, up to this many times it, until both splits
#: have MIN_ROWS rows (a busy machine must not turn every comparison into "not compared").
OVERRUN = 2.0
#: Pretrained image features are compared at no more than this size (their cost grows with the
#: pixels; what the probe compares is the kind of feature, not the last point of accuracy).
PROBE_IMAGE_SIZE = 128
#: Characters of each text the probes read: more than either text encoder reads (MiniLM: 64 tokens; fit's
#: text_ngram: 1,024 units, about 64 words), so the probes see what the encoders would, at a bounded cost.
PROBE_TEXT_CHARS = 2000

# Quiet-machine costs, measured together with REFERENCE_S on the 2-core development machine
# (load average 2.5; torch 1 thread): the pace measured in a run scales them (see Pace).
#: Seconds of the reference computation (:func:`reference_seconds`).
REFERENCE_S = 0.022
#: Seconds to load each pretrained encoder (MiniLM: its tokenizer and weights 4.5 s; EfficientNet 0.1 s).
LOAD_S = {"efficientnet_lite0": 0.3, "minilm": 4.5}
#: Seconds per row of pooled features (EfficientNet-Lite0 at PROBE_IMAGE_SIZE px; MiniLM at 64 tokens).
ROW_S = {"efficientnet_lite0": 0.016, "minilm": 0.003}
#: Seconds of the linear probe per (row x feature), train + val rows (LogisticRegression, 10 classes:
#: 3.5 s for 700 x 1280 random features, 0.9 s for 700 x 384, 1.7 s for 700 x 1024; on issue 27's
#: digits, 496 rows at a pace of about 3x: 6.5 s for EfficientNet's 1280, 8.0 s for 1024 pixels).
PROBE_CELL_S = 5e-6
#: Seconds to import what the probes use (scikit-learn's linear models, scaler, TF-IDF): 1.2-1.3 s
#: here; timed when the phase imports them, it is the pace's first measurement of real work.
IMPORT_S = 1.5
#: Features each probe reads: the pretrained encoders' pooled sizes; the words + n-grams TF-IDF counted as the
#: dense features that cost as much (3,050 TF-IDF columns of short texts probed in 3.1 s: 1,100; up to 4,000 here).
PRETRAINED_DIMS = {"efficientnet_lite0": 1280, "minilm": 384}
WORDS_DIMS = 1500
#: The from-scratch text probe's TF-IDF columns at most (character 2-4-grams within words, sklearn's ``char_wb``).
NGRAMS_MAX = 4000
#: The L2 penalty's inverse for TF-IDF rows (not standardised). Measured on issue 27's typo'd product
#: descriptions (400 train / 300 val rows): standardised (C 0.5) character n-grams 0.537, words 0.633; unscaled,
#: C 10: 0.697 and 0.663 -- standardising blows up the rare n-grams' columns (and words + n-grams: 0.55).
TFIDF_C = 10.0
#: The pace is never taken as faster than this (a reference computation lucky on a shared machine).
MIN_PACE = 0.5


@dataclass
class Comparison:
    """One column's measured candidates: ``scores`` ``{"pretrained": s, "scratch": s}`` on ``rows``
    ``(train, val)`` sample rows, ``chosen`` (``"pretrained"`` / ``"scratch"``) and why, ``seconds`` spent."""

    slot: str
    kind: str
    scores: dict[str, float]
    rows: tuple[int, int]
    chosen: str
    why: str
    seconds: float
    metric: str
    #: seconds the pretrained encoder took per row (its features only), as measured here
    feature_row_s: float = 0.0
    #: True when the candidate was not measured because its estimate passed the phase's deadline
    skipped: bool = False
    #: its estimated seconds (at the pace measured in this run) when it was started or skipped
    estimate_s: float = 0.0
    #: seconds both probes took (the from-scratch features included), as measured here
    probe_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "kind": self.kind, "scores": {k: round(v, 4) for k, v in self.scores.items()},
                "metric": self.metric, "rows": list(self.rows), "chosen": self.chosen, "why": self.why,
                "seconds": round(self.seconds, 2), "feature_row_s": round(self.feature_row_s, 5),
                "skipped": self.skipped, "estimate_s": round(self.estimate_s, 2)}


def reference_seconds() -> float:
    """Seconds of a fixed CPU computation (80 products of 256 x 256 matrices, PyTorch, the threads
    set now): the median of three, against ``REFERENCE_S`` on a quiet machine."""
    import statistics

    import torch

    times = []
    for _ in range(3):
        a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        for _ in range(80):
            a = torch.tanh(a @ a * 0.01)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Pace:
    """The machine's speed in this run: measured seconds over the quiet-machine estimate of every
    step done so far (the reference computation first). ``factor`` 3.0: steps take 3x their estimate."""

    measured: float = 0.0
    nominal: float = 0.0

    def record(self, nominal_s: float, measured_s: float) -> None:
        if nominal_s > 0:
            self.nominal += nominal_s
            self.measured += max(0.0, measured_s)

    @property
    def factor(self) -> float:
        return max(MIN_PACE, self.measured / self.nominal) if self.nominal > 0 else 1.0

    def estimate(self, nominal_s: float) -> float:
        """``nominal_s`` quiet-machine seconds as seconds on this machine now."""
        return nominal_s * self.factor


def probe_nominal(rows: int, dims: int) -> float:
    """Quiet-machine seconds of one linear probe on ``rows`` train + val rows of ``dims`` features."""
    return PROBE_CELL_S * rows * dims


def probe_score(train_x: np.ndarray, train_y: Sequence[Any], val_x: np.ndarray, val_y: Sequence[Any], task: str,
                *, standardise: bool = True) -> float:
    """Validation accuracy (classification) or R^2 (regression) of a linear model: standardised features
    (``standardise``), or features already on one scale such as L2-normalised TF-IDF rows, whose rare
    columns standardising would blow up (then a weaker L2 penalty, :data:`TFIDF_C`, as usual for them)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    first = [StandardScaler()] if standardise else []
    if task == "regression":
        model = make_pipeline(*first, Ridge(alpha=1.0 if standardise else 1.0 / TFIDF_C))
        model.fit(train_x, np.asarray(train_y, dtype=float))
        return float(model.score(val_x, np.asarray(val_y, dtype=float)))
    labels = [str(y) for y in train_y]
    if len(set(labels)) < 2:
        return float(np.mean([str(y) == labels[0] for y in val_y]))
    model = make_pipeline(*first, LogisticRegression(C=0.5 if standardise else TFIDF_C, max_iter=300)).fit(train_x, labels)
    return float(np.mean(model.predict(val_x) == np.asarray([str(y) for y in val_y])))


def _pixels(path: Path, side: int, colour: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB" if colour else "L")
        if img.size != (side, side):
            img = img.resize((side, side), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32).ravel() / 255.0


def _pretrained_image(manager, image_size: int) -> tuple[Any, Any]:
    encoder = manager.registry.get("encoder", "efficientnet_lite0").factory(dim=64, image_size=image_size, freeze=True).eval()
    return encoder, encoder.processor()


def _pretrained_text(manager) -> tuple[Any, Any]:
    encoder = manager.registry.get("encoder", "minilm").factory(freeze=True, max_length=64).eval()
    return encoder, encoder.processor()


def _pooled(encoder: Any, processor: Any, raws: Sequence[Any]) -> np.ndarray:
    import torch

    with torch.no_grad():
        batch = processor.collate([processor(raw) for raw in raws])
        return encoder.frozen_features(batch).pooled.float().numpy()


def compare(slot: str, kind: str, values: Mapping[str, Sequence[Any]], targets: Mapping[str, Sequence[Any]], *,
            task: str, pretrained: Callable[[Sequence[Any]], np.ndarray], scratch: Callable[[list[Any], list[Any]], tuple],
            deadline: float, clock: Callable[[], float] = time.perf_counter, hard_end: float | None = None,
            probe_row_s: float = 0.0) -> Comparison:
    """Measure one column's two candidates on ``values`` (``{"train": raws, "val": raws}``, already
    sampled and shuffled) with their ``targets``: ``pretrained(raws) -> [N, D]`` features computed a
    batch at a time until ``deadline`` (a ``clock()`` value; past it, up to ``OVERRUN`` times the
    share while a split has fewer than ``MIN_ROWS``, never past ``hard_end``), each deadline counting
    the probes' estimated ``probe_row_s`` seconds per row encoded (one more batch included), so that
    they end before it; ``scratch(train_raws, val_raws) -> (train_x, val_x)`` on the same rows."""
    start = clock()
    hard = start + OVERRUN * max(0.0, deadline - start)
    if hard_end is not None:
        hard = min(hard, hard_end)
        deadline = min(deadline, hard_end)
    metric = "R^2" if task == "regression" else "accuracy"
    got: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    taken = {"train": 0, "val": 0}

    # A small table's whole validation split may hold fewer than MIN_ROWS rows: all of them do.
    needed = {split: max(MIN_SMALL, min(MIN_ROWS, len(values[split]))) for split in taken}

    def more(split: str) -> bool:
        if taken[split] >= len(values[split]):
            return False
        # when this batch and the probes on every row so far would end, at their estimate
        now = clock() + probe_row_s * (taken["train"] + taken["val"] + BATCH)
        return now < deadline or (now < hard and taken[split] < needed[split])

    encoding = 0.0
    while more("train") or more("val"):
        for split in ("train", "val"):  # alternately, so a deadline leaves both with rows
            if more(split):
                chunk = values[split][taken[split]: taken[split] + BATCH]
                encode_start = clock()
                got[split].append(pretrained(chunk))
                encoding += clock() - encode_start
                taken[split] += len(chunk)
    rows = (taken["train"], taken["val"])
    feature_row = encoding / max(1, rows[0] + rows[1])
    if rows[0] < needed["train"] or rows[1] < needed["val"]:
        short = [f"{split} split has only {len(values[split])} rows" for split, got_rows in zip(("train", "val"), rows, strict=True)
                 if got_rows < needed[split] and got_rows >= len(values[split])]
        cause = (f"the {' and the '.join(short)} (a probe needs at least {needed['train']} / {needed['val']})" if short
                 else f"only {rows[0]} train / {rows[1]} val rows encoded in the time set aside "
                      f"(at least {needed['train']} / {needed['val']} needed)")
        return Comparison(slot, kind, {}, rows, "pretrained", f"not compared: {cause}; the pretrained encoder kept",
                          clock() - start, metric, feature_row)
    probes_started = clock()
    train_raws, val_raws = list(values["train"][: rows[0]]), list(values["val"][: rows[1]])
    train_y, val_y = list(targets["train"][: rows[0]]), list(targets["val"][: rows[1]])
    pre = probe_score(np.concatenate(got["train"]), train_y, np.concatenate(got["val"]), val_y, task)
    train_x, val_x = scratch(train_raws, val_raws)
    own = probe_score(train_x, train_y, val_x, val_y, task, standardise=kind != "text")
    margin = IMAGE_MARGIN if kind == "image" else TEXT_MARGIN
    keep = pre >= own + margin if kind == "image" else pre + margin >= own
    names = {"image": ("EfficientNet-Lite0 features", "pixels at native size (the small CNN's input)"),
             "text": ("MiniLM embeddings", "character n-grams (what a from-scratch encoder learns first)")}[kind]
    why = (f"linear probe on {rows[0]} train / {rows[1]} val rows: {names[0]} {pre:.3f} vs {names[1]} {own:.3f} "
           f"{metric} ({verdict(pre, own, margin, kind, keep)})")
    return Comparison(slot, kind, {"pretrained": pre, "scratch": own}, rows, "pretrained" if keep else "scratch",
                      why, clock() - start, metric, feature_row, probe_s=clock() - probes_started)


def verdict(pre: float, own: float, margin: float, kind: str, keep: bool) -> str:
    """The probe comparison's outcome in words, true to each case: the pretrained score ahead by at
    least the margin, ahead by less, equal, or behind (within the text margin or beyond it), and which
    encoder is kept. ``margin``: how far the pretrained image features must lead (:data:`IMAGE_MARGIN`),
    or how far pretrained text embeddings may trail (:data:`TEXT_MARGIN`)."""
    diff = round(pre, 3) - round(own, 3)  # as the scores are printed: 0.955 vs 1.000 is behind by 0.045
    if abs(diff) < 5e-4:
        where = "equal"
    else:
        where = f"pretrained {'ahead' if diff > 0 else 'behind'} by {abs(diff):.3f}"
    kept = "pretrained kept" if keep else "from-scratch encoder kept"
    if kind == "image" and margin:
        return f"{where}; it must lead by {margin:.2f} or more: {kept}"
    if margin and diff < 0:
        return f"{where}; it may trail by up to {margin:.2f}: {kept}"
    return f"{where}: {kept}"


def compare_candidates(config: Mapping[str, Any], table: Sequence[Mapping[str, Any]], *, plan, infos, base: Path,
                       budget_s: float, manager, clock: Callable[[], float] = time.perf_counter,
                       seed: int = 0, pace: Pace | None = None,
                       loaders: Mapping[str, Callable[..., tuple[Any, Any]]] | None = None) -> dict[str, Comparison]:
    """Every frozen pretrained image/text slot of ``config`` measured against its from-scratch
    alternative on the prepared ``table`` (with its split column), within ``budget_s`` seconds from
    the call: each candidate's cost is estimated at the ``pace`` measured in this run (measured here
    from :func:`reference_seconds` when not given) before it is started, and one that would pass the
    deadline is skipped (``chosen`` ``"scratch"``, ``skipped``, the estimate and the time left in
    ``why``). ``loaders``: ``{encoder name: load(manager, **options) -> (encoder, processor)}``
    (default: the installed pretrained packages)."""
    if plan.task not in ("classification", "regression"):
        return {}
    by_name = {i.name: i for i in infos}
    slots = [(slot, enc) for slot, enc in config["model"]["encoders"].items()
             if enc.get("freeze") is True and enc["name"] in ("efficientnet_lite0", "minilm")]
    out: dict[str, Comparison] = {}
    start = clock()
    end = start + max(0.0, budget_s)
    slots = [(slot, enc) for slot, enc in slots if not by_name[plan.slots[slot]["column"]].details.get("files")
             or enc["name"] != "minilm"]  # texts read from files: not compared (kept as the rule chose)
    if not slots:
        return out
    loaders = {"efficientnet_lite0": lambda m, **o: _pretrained_image(m, o["image_size"]),
               "minilm": lambda m, **o: _pretrained_text(m), **(loaders or {})}
    if pace is None:
        pace = Pace()
    if not pace.nominal:  # nothing measured yet in this fit: the reference computation says how busy it is
        pace.record(REFERENCE_S, reference_seconds())
    if "sklearn.linear_model" not in sys.modules:  # the probes' imports: real work of this phase, timed
        began = clock()
        import sklearn.feature_extraction.text  # noqa: F401
        import sklearn.linear_model  # noqa: F401
        import sklearn.pipeline  # noqa: F401
        import sklearn.preprocessing  # noqa: F401

        pace.record(IMPORT_S, clock() - began)
    for k, (slot, encoder) in enumerate(slots):
        column = plan.slots[slot]["column"]
        name = encoder["name"]
        rng = random.Random(seed)
        values: dict[str, list[Any]] = {}
        targets: dict[str, list[Any]] = {}
        for split, most in (("train", MAX_TRAIN), ("val", MAX_VAL)):
            rows = [r for r in table if r[plan.split_column] == split and r.get(column) is not None]
            rng.shuffle(rows)
            # image cells are file paths (relative to the table's folder); text cells are the texts themselves,
            # cut to what either text encoder reads (a 9,000-word text took the phase to 3x its plan)
            values[split] = [_raw(r[column], base) if name == "efficientnet_lite0" else str(r[column])[:PROBE_TEXT_CHARS]
                             for r in rows[:most]]
            targets[split] = [r[plan.target] for r in rows[:most]]
        if name == "efficientnet_lite0":
            details = by_name[column].details
            side = int(min(32, max(8, round(float(details.get("side", 32))))))
            colour = bool(details.get("colour"))
            scratch_dims = side * side * (3 if colour else 1)
        else:
            scratch_dims = WORDS_DIMS
        # Before anything is started: the candidate's least cost (its model, the rows a comparison
        # needs, both probes on every row it may take) at this machine's measured pace.
        needed = sum(max(MIN_SMALL, min(MIN_ROWS, len(values[s]))) for s in values)
        probe_row = probe_nominal(1, PRETRAINED_DIMS[name]) + probe_nominal(1, scratch_dims)
        least = LOAD_S[name] + (ROW_S[name] + probe_row) * needed
        estimate, left = pace.estimate(least), end - clock()
        if estimate > left:
            what = {"efficientnet_lite0": "EfficientNet-Lite0", "minilm": "MiniLM"}[name]
            out[slot] = Comparison(
                slot, "image" if name == "efficientnet_lite0" else "text", {}, (0, 0), "scratch",
                f"{what} not compared: its load, {needed} rows and the probes were estimated at {estimate:.1f} s "
                f"({pace.factor:.1f}x a quiet machine's time, as measured in this fit) with {max(0.0, left):.1f} s "
                f"left of the {budget_s:.0f} s set aside for comparing; the from-scratch encoder is used",
                0.0, "R^2" if plan.task == "regression" else "accuracy", skipped=True, estimate_s=estimate)
            continue
        began = clock()
        options = {"image_size": min(PROBE_IMAGE_SIZE, int(encoder.get("image_size", PROBE_IMAGE_SIZE)))}
        net, processor = loaders[name](manager, **options)
        pace.record(LOAD_S[name], clock() - began)
        # Encoding stops while the probes on the rows taken (at this pace) still fit before the end;
        # the time left is shared by this slot and the ones after it.
        share = max(0.0, end - clock()) / (len(slots) - k)
        deadline = clock() + share
        if name == "efficientnet_lite0":
            def scratch(train, val, side=side, colour=colour):
                return (np.stack([_pixels(Path(p), side, colour) for p in train]),
                        np.stack([_pixels(Path(p), side, colour) for p in val]))

            def features(raws, net=net, processor=processor):
                return _pooled(net, processor, raws)
        else:
            def scratch(train, val):
                from sklearn.feature_extraction.text import TfidfVectorizer

                train, val = [str(t) for t in train], [str(t) for t in val]
                vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=NGRAMS_MAX).fit(train)
                return vectorizer.transform(train).toarray(), vectorizer.transform(val).toarray()

            def features(raws, net=net, processor=processor):
                return _pooled(net, processor, [str(r) for r in raws])
        result = compare(slot, "image" if name == "efficientnet_lite0" else "text", values, targets, task=plan.task,
                         pretrained=features, scratch=scratch, deadline=deadline, clock=clock, hard_end=end,
                         probe_row_s=pace.estimate(probe_row))
        taken = result.rows[0] + result.rows[1]
        pace.record(ROW_S[name] * taken, result.feature_row_s * taken)
        if result.scores:
            pace.record(probe_nominal(taken, PRETRAINED_DIMS[name]) + probe_nominal(taken, scratch_dims), result.probe_s)
        result.estimate_s = estimate
        result.seconds = clock() - began
        out[slot] = result
        del net, processor
    return out


def _raw(value: Any, base: Path) -> Any:
    """A prepared table's image cell as the encoders read it (file paths relative to the table's folder);
    a value that cannot name a file (too long for the file system, a NUL byte) stays as it is."""
    if not isinstance(value, str) or Path(value).is_absolute():
        return value
    try:
        exists = (base / value).exists()
    except (OSError, ValueError):  # ENAMETOOLONG, an embedded NUL: not a file name
        return value
    return str(base / value) if exists else value
