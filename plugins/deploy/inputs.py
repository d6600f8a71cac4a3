"""Each slot of an exported model: its graph inputs, the in-graph steps that turn them into the
encoder's batch, and the front end's spec (parameters + fitted state, for ``frontend.py``).

One adapter per built-in processor (image, log-mel audio, byte / vocabulary / Hugging Face text,
tabular, video); :func:`slot_export` picks it and says why when there is none. What runs inside
the graph and what stays in the front end is documented in :mod:`mmcore_plugins.deploy.frontend`.
The in-graph steps compute what the processor computes, op for op where they can (image
normalisation is the processor's own chain of float operations; the standardised log-mel is the
processor's STFT, mel filters and statistics, computed for a padded batch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmcore_plugins.deploy import frontend

#: Most records one call of an exported graph takes: torch.export needs a bound, and Hugging Face
#: encoders trace with a guard near 2730 records; the front end splits larger batches.
MAX_BATCH = 1024
#: Least of every dynamic size (batch, tokens, frames): see :data:`mmcore_plugins.deploy.frontend.MIN_SIZE`.
MIN_SIZE = frontend.MIN_SIZE


@dataclass
class GraphInput:
    """One input tensor of the graph: ``name`` (``slot.field``), ``dtype``, ``shape`` (ints and named
    dynamic sizes), and what it holds where the record lacks the modality (``missing``)."""

    name: str
    dtype: str
    shape: list[Any]
    missing: str
    doc: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape, "missing": self.missing, "doc": self.doc}


@dataclass
class SlotExport:
    """What export needs of one slot: the front end's spec (JSON), the graph inputs and their dynamic
    sizes (``dims``: input name -> {axis: (size name, min, max)} or ``(name, min, max, a, b)`` for a size
    ``a * size + b``), and the in-graph module (graph inputs -> the
    encoder's batch). ``files``: extra files the front end needs, name -> writer(path)."""

    slot: str
    modality: str
    kind: str
    frontend: dict[str, Any]
    inputs: list[GraphInput]
    module: nn.Module
    dims: dict[str, dict[int, tuple[str, int, int]]]
    files: dict[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> list[str]:
        return [i.name.split(".", 1)[1] for i in self.inputs]


class UnsupportedSlot(Exception):
    """A slot whose processor has no export front end (the message says why)."""


# ----------------------------------------------------------------------------------- in-graph modules
def _normalise(x: torch.Tensor, how: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the processor's normalisation, as the same float operations in the same order."""
    x = (x - 0.5) / 0.5  # ImageProcessor
    if how == "lite0":  # Lite0Processor: back to [0, 1], then (v * 255 - 127) / 128
        return ((x * 0.5 + 0.5) * 255.0 - 127.0) / 128.0
    if how == "imagenet":  # _ImageNetProcessor: back to [0, 1], then the ImageNet mean and std
        return (x * 0.5 + 0.5 - mean) / std
    return x


class ImageInput(nn.Module):
    """``pixels [B, C, S, S]`` in [0, 1] and ``present [B]`` -> the image encoder's batch (normalised;
    exactly zero where absent, as the processor's collate leaves it)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[:, None, None], persistent=False)

    def forward(self, pixels: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        keep = present.to(pixels.dtype)[:, None, None, None]
        return {"pixels": _normalise(pixels, self.how, self.mean, self.std) * keep, "present": present}


class LogMelInput(nn.Module):
    """``waveform [B, N]`` (each clip reflect-padded by ``n_fft // 2``), ``length [B]`` (padded samples),
    ``present [B]`` -> ``mels [B, n_mels, T]`` standardised per clip over its real frames, ``mask [B, T]``.

    ``LogMelProcessor.logmel`` for a batch. The STFT of the already padded clips is a strided 1-D
    convolution with the Hann-windowed DFT basis as kernels (cos and -sin rows, ``n_fft // 2 + 1``
    of each, computed in float64): the frames ``torch.stft(center=True)`` takes of one clip, in a
    form every runtime runs fast (onnxruntime's own STFT operator took 33 ms for what this does in
    under 1 ms on the demo's clips). Then power, the processor's mel filters, ``log(. + 1e-6)``,
    and the mean and (unbiased) standard deviation over each clip's own ``n_mels x T_i`` values;
    padding frames are zero, as the processor's collate leaves them.
    """

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor, filters: torch.Tensor) -> None:
        super().__init__()
        self.n_fft, self.hop, self.bins = n_fft, hop, n_fft // 2 + 1
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(self.bins, dtype=torch.float64)
        angle = 2 * torch.pi * ((k[:, None] * n[None, :]) % n_fft) / n_fft
        kernels = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window.to(torch.float64)  # [2 * bins, n_fft]
        self.register_buffer("dft", kernels.float()[:, None, :], persistent=False)
        self.register_buffer("filters", filters.float().clone(), persistent=False)

    def forward(self, waveform: torch.Tensor, length: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        spectrum = nn.functional.conv1d(waveform[:, None, :], self.dft, stride=self.hop)  # [B, 2 * bins, T]
        real, imag = spectrum[:, : self.bins], spectrum[:, self.bins :]
        power = real * real + imag * imag
        logmel = torch.log(torch.matmul(power.transpose(1, 2), self.filters) + 1e-6).transpose(1, 2)  # [B, M, T]
        frames = ((length - self.n_fft) // self.hop + 1).clamp_min(0) * present.to(length.dtype)
        mask = torch.arange(logmel.shape[2], device=logmel.device)[None, :] < frames[:, None]
        weight = mask.to(logmel.dtype)[:, None, :]
        count = frames.to(logmel.dtype) * logmel.shape[1]
        mean = (logmel * weight).sum(dim=(1, 2)) / count.clamp_min(1.0)
        centred = (logmel - mean[:, None, None]) * weight
        std = torch.sqrt((centred * centred).sum(dim=(1, 2)) / (count - 1.0).clamp_min(1.0)).clamp_min(1e-5)
        return {"mels": centred / std[:, None, None], "mask": mask, "present": present}


class PassThrough(nn.Module):
    """Graph inputs that are already the encoder's batch (token ids, table columns)."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__()
        self.fields = fields

    def forward(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.fields, tensors, strict=True))


class VideoInput(nn.Module):
    """``frames [B, F, C, S, S]`` in [0, 1], ``mask [B, F]``, ``present [B]`` -> the video encoder's batch:
    every position a frame of one ``[B * F]`` frame batch (padding frames absent, so their features
    are zero, as the padding positions the processor leaves empty)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.image = ImageInput(how)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        b, f = mask.shape
        real = (mask & present[:, None]).reshape(b * f)
        image = self.image(frames.reshape(b * f, *frames.shape[2:]), real)
        index = torch.arange(b * f, device=frames.device)
        return {"mask": mask, "present": present, "frame_index": index, "frames.pixels": image["pixels"],
                "frames.present": real}


# ----------------------------------------------------------------------------------- adapters
def dim_name(slot: str, what: str) -> str:
    """A dynamic size's name: an identifier (torch.export names its dimensions)."""
    return re.sub(r"\W", "_", f"{slot}_{what}")


def _present(slot: str) -> GraphInput:
    return GraphInput(f"{slot}.present", "bool", ["batch"], "False", "True where the record has this modality")


def _image_spec(processor: Any) -> tuple[dict[str, Any], str]:
    from mmcore_plugins.encoders.image import ImageProcessor
    from mmcore_plugins.encoders.image_pretrained import Lite0Processor, _ImageNetProcessor

    if not isinstance(processor, ImageProcessor):
        raise UnsupportedSlot(f"its processor {type(processor).__name__} is not an image processor mmcore can export")
    how = "lite0" if isinstance(processor, Lite0Processor) else "imagenet" if isinstance(processor, _ImageNetProcessor) else "half"
    if type(processor) not in (ImageProcessor, Lite0Processor, _ImageNetProcessor):
        raise UnsupportedSlot(f"its processor {type(processor).__name__} subclasses ImageProcessor; its own steps have no "
                              "export front end")
    background = processor.background
    spec = {"image_size": int(processor.image_size), "channels": int(processor.channels),
            "background": list(background) if isinstance(background, tuple) else background, "normalise": how}
    return spec, how


def slot_export(slot: str, encoder: Any, processor: Any) -> SlotExport:
    """The export description of ``slot``; raises :class:`UnsupportedSlot` saying why there is none."""
    from mmcore_plugins.encoders.audio import LogMelProcessor
    from mmcore_plugins.encoders.tabular import TabularProcessor
    from mmcore_plugins.encoders.text import ByteTokenizer, HFTokenizerProcessor, VocabTokenizer
    from mmcore_plugins.encoders.video import VideoProcessor

    modality = getattr(encoder, "modality", "unknown")
    batch = ("batch", MIN_SIZE, MAX_BATCH)
    present = _present(slot)
    if isinstance(processor, VideoProcessor):
        frame, how = _image_spec(processor.frame_processor)
        s, c = frame["image_size"], frame["channels"]
        frames = ("frames", MIN_SIZE, max(MIN_SIZE, int(processor.max_frames)))
        fname = dim_name(slot, "frames")
        spec = {"kind": "video", "modality": modality, "max_frames": int(processor.max_frames), "frame": frame}
        inputs = [GraphInput(f"{slot}.frames", "float32", ["batch", fname, c, s, s], "zeros",
                             "frames resized to the model's square, values in [0, 1]"),
                  GraphInput(f"{slot}.mask", "bool", ["batch", fname], "False", "True where a frame is real"), present]
        dims = {f"{slot}.frames": {0: batch, 1: (fname, *frames[1:])}, f"{slot}.mask": {0: batch, 1: (fname, *frames[1:])}}
        return SlotExport(slot, modality, "video", spec, inputs, VideoInput(how), {**dims, f"{slot}.present": {0: batch}})
    if hasattr(processor, "image_size") and hasattr(processor, "channels"):
        spec, how = _image_spec(processor)
        s, c = spec["image_size"], spec["channels"]
        inputs = [GraphInput(f"{slot}.pixels", "float32", ["batch", c, s, s], "zeros",
                             "the image resized to the model's square (antialiased bilinear), values in [0, 1]"), present]
        return SlotExport(slot, modality, "image", {"kind": "image", "modality": modality, **spec}, inputs, ImageInput(how),
                          {f"{slot}.pixels": {0: batch}, f"{slot}.present": {0: batch}})
    if isinstance(processor, LogMelProcessor):
        if type(processor) is not LogMelProcessor:
            raise UnsupportedSlot(f"its processor {type(processor).__name__} subclasses LogMelProcessor; its own steps have "
                                  "no export front end")
        n_fft, hop = int(processor.n_fft), int(processor.hop)
        # The waveform's width is n_fft + hop * (T - 1) for T frames: the frame count is the dynamic
        # size (torch.export derives the width from it), at most what max_seconds gives.
        most = 1 + (int(processor.max_seconds * processor.sample_rate) + 2 * (n_fft // 2)) // hop
        name = dim_name(slot, "frames")
        spec = {"kind": "audio", "modality": modality, "sample_rate": int(processor.sample_rate), "n_fft": n_fft, "hop": hop,
                "n_mels": int(processor.n_mels), "max_seconds": float(processor.max_seconds), "f_min": float(processor.f_min),
                "min_frames": frontend.MIN_AUDIO_FRAMES}
        inputs = [GraphInput(f"{slot}.waveform", "float32", ["batch", f"{n_fft} + {hop} * ({name} - 1)"], "zeros",
                             f"mono waveform at {processor.sample_rate} Hz, reflect-padded by n_fft // 2 = {n_fft // 2} "
                             "samples at both ends, zeros after"),
                  GraphInput(f"{slot}.length", "int64", ["batch"], "0", "the padded clip's length in samples"), present]
        module = LogMelInput(n_fft, hop, processor.window, processor.filters)
        return SlotExport(slot, modality, "audio", spec, inputs, module,
                          {f"{slot}.waveform": {0: batch, 1: (name, frontend.MIN_AUDIO_FRAMES, max(frontend.MIN_AUDIO_FRAMES, most), hop, n_fft - hop)}, f"{slot}.length": {0: batch},
                           f"{slot}.present": {0: batch}})
    name = dim_name(slot, "tokens")
    if isinstance(processor, (ByteTokenizer, VocabTokenizer, HFTokenizerProcessor)):
        limit = int(processor.max_length)
        files: dict[str, Any] = {}
        if isinstance(processor, ByteTokenizer):
            spec = {"kind": "text_bytes", "max_length": limit, "pad_id": 256}
        elif isinstance(processor, VocabTokenizer):
            if processor.vocab is None:
                raise UnsupportedSlot("its tokenizer has no fitted vocabulary")
            spec = {"kind": "text_vocab", "max_length": limit, "pad_id": 0, "level": processor.level,
                    "lowercase": bool(processor.lowercase), "vocab": processor.state_dict()["vocab"]}
            if processor.level == "ngram":
                spec.update(min_n=int(processor.min_n), max_n=int(processor.max_n))
        else:
            backend = getattr(processor.tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise UnsupportedSlot("its Hugging Face tokenizer has no fast (tokenizers) version to save as tokenizer.json")
            file = f"tokenizer_{dim_name(slot, 'text')}.json"
            files[file] = lambda path, backend=backend: backend.save(str(path))
            spec = {"kind": "text_hf", "max_length": limit, "pad_id": int(processor.tokenizer.pad_token_id or 0),
                    "tokenizer": file}
        spec = {**spec, "modality": modality}
        inputs = [GraphInput(f"{slot}.ids", "int64", ["batch", name], f"{spec['pad_id']} (padding)",
                             f"token ids, at most {limit} per text"),
                  GraphInput(f"{slot}.mask", "bool", ["batch", name], "False", "True where a token is real"), present]
        tokens = (name, MIN_SIZE, max(MIN_SIZE, limit))
        dims = {f"{slot}.ids": {0: batch, 1: tokens}, f"{slot}.mask": {0: batch, 1: tokens},
                f"{slot}.present": {0: batch}}
        return SlotExport(slot, modality, spec["kind"], spec, inputs, PassThrough(["ids", "mask", "present"]), dims, files)
    if isinstance(processor, TabularProcessor):
        state = processor.state_dict()
        spec = {"kind": "tabular", "modality": modality, "num_features": int(processor.num_features),
                "columns": processor.columns, "categorical": list(processor.categorical), "mean": state["mean"],
                "std": state["std"], "vocabularies": {c: {v: i + 1 for i, v in enumerate(values)}
                                                      for c, values in state["vocabularies"].items()},
                "max_categories": int(processor.max_categories)}  # the front end words unseen values as predict does
        inputs = [GraphInput(f"{slot}.values", "float32", ["batch", spec["num_features"]], "zeros",
                             "numeric columns standardised with the training mean and std"),
                  GraphInput(f"{slot}.categories", "int64", ["batch", len(spec["categorical"])], "0",
                             "categorical columns as vocabulary indices (0 = unseen or empty)"), present]
        return SlotExport(slot, modality, "tabular", spec, inputs, PassThrough(["values", "categories", "present"]),
                          {f"{slot}.values": {0: batch}, f"{slot}.categories": {0: batch}, f"{slot}.present": {0: batch}})
    raise UnsupportedSlot(f"its processor {type(processor).__module__}.{type(processor).__name__} has no export front end "
                          "(exportable: image, log-mel audio, byte / char / word / n-gram / Hugging Face text, tabular and video "
                          "processors)")

