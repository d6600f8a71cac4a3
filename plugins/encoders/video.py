"""Video: a clip (folder of frame images in any format Pillow reads, tensor ``[T, C, H, W]``, array
``[T, H, W, C]`` or list of frames) ->
any registered image encoder applied per frame -> a temporal transformer (or mean pooling) over
time. Tokens are frames; clips of different lengths are padded, with masks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore.components import fitter_for
from mmcore_plugins.io import video_frames


class _FramesFit(mmcore.PartialFit):
    """:meth:`VideoProcessor.fit` in chunks: each chunk's clips' frames go to the frame processor's fitter."""

    def __init__(self, processor: VideoProcessor, inner: mmcore.PartialFit) -> None:
        self.processor, self.inner = processor, inner

    def update(self, raws: Sequence[Any]) -> None:
        self.inner.update([f for raw in raws if raw is not None for f in self.processor.frames(raw)])

    def finish(self) -> None:
        self.inner.finish()


class VideoProcessor(mmcore.Processor):
    """A clip -> its frames through the frame encoder's processor, at most ``max_frames`` (evenly spaced)."""

    def __init__(self, frame_processor: mmcore.Processor, max_frames: int) -> None:
        self.frame_processor, self.max_frames = frame_processor, max_frames

    @property
    def training(self) -> bool:
        return bool(self.frame_processor.training)

    @training.setter
    def training(self, value: bool) -> None:
        self.frame_processor.training = value

    @property
    def augment(self) -> bool:  # a clip is as random as its frames (never memoized or cached then)
        return bool(self.frame_processor.augment)

    def frames(self, raw: Any) -> list[Any]:
        """The raw frames of a clip, in order."""
        if isinstance(raw, (str, os.PathLike)):
            # Natural order: frame_2 before frame_10, whether or not the numbers are zero-padded;
            # each frame is then read by the frame processor (mmcore_plugins.io.read_image).
            return video_frames(raw)
        if isinstance(raw, torch.Tensor) or type(raw).__module__ == "numpy":
            if raw.ndim != 4:
                raise ValueError(f"a video tensor must be [T, C, H, W] (or an array [T, H, W, C]), got shape {list(raw.shape)}")
            return list(raw)
        if isinstance(raw, (list, tuple)):
            return list(raw)
        raise TypeError(f"a video must be a folder of frames, a [T, C, H, W] tensor or a list of frames, got {type(raw).__name__}")

    def __call__(self, raw: Any) -> list[Any]:
        frames = self.frames(raw)
        if not frames:
            raise ValueError("a video must have at least one frame, got none")
        if len(frames) > self.max_frames:
            picks = torch.linspace(0, len(frames) - 1, self.max_frames).round().long().tolist()
            frames = [frames[i] for i in picks]
        return [self.frame_processor(f) for f in frames]

    def collate(self, items: Sequence[list[Any] | None]) -> dict[str, torch.Tensor]:
        length = max((len(i) for i in items if i is not None), default=1)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        flat, index = [], []
        for row, item in enumerate(items):
            if item is not None:
                mask[row, : len(item)] = True
                flat += item
                index += [row * length + t for t in range(len(item))]
        batch = {"mask": mask, "present": torch.tensor([i is not None for i in items], dtype=torch.bool),
                 "frame_index": torch.tensor(index, dtype=torch.long)}
        # Every real frame of the batch in one frame batch (padding frames never reach the image encoder).
        frame_batch = self.frame_processor.collate(flat if flat else [None])
        batch.update({f"frames.{k}": v for k, v in frame_batch.items()})
        return batch

    def fit(self, raws: Sequence[Any]) -> None:
        fitter = self.partial_fitter()
        if fitter is not None:
            fitter.update(raws)
            fitter.finish()

    def partial_fitter(self) -> mmcore.PartialFit | None:
        """The frame processor's fit (:func:`mmcore.components.fitter_for`) fed every clip's frames; None
        when the frame processor fits nothing (the clips need not be listed then)."""
        inner = fitter_for(self.frame_processor)
        return None if inner is None else _FramesFit(self, inner)

    def state_dict(self) -> dict[str, Any]:
        return self.frame_processor.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.frame_processor.load_state_dict(state)

    def example(self, generator: torch.Generator) -> list[Any]:
        frames = int(torch.randint(1, 4, (1,), generator=generator))
        return [self.frame_processor.example(generator) for _ in range(frames)]


class VideoEncoder(mmcore.Encoder):
    """Any image encoder per frame + a temporal transformer (or mean) over time; tokens = frames, masked.

    ``frame_encoder`` names a registered image encoder and ``frame_options`` its options (e.g.
    ``{arch: resnet18, freeze: true}``); each frame's pooled vector is projected to ``dim``, given
    a learned time position, and the frames attend to each other (``temporal: transformer``) or
    are only projected (``temporal: mean``, pooled = mean over real frames).
    """

    modality = "video"

    def __init__(self, frame_encoder: str = "image_cnn", frame_options: dict[str, Any] | None = None, dim: int = 128,
                 temporal: Literal["transformer", "mean"] = "transformer", heads: int = 4, layers: int = 1,
                 max_frames: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        from mmcore.plugin_manager import get_registry

        if temporal not in ("transformer", "mean"):
            raise ValueError(f"temporal must be 'transformer' or 'mean', got {temporal!r}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        info = get_registry().get("encoder", frame_encoder)
        if info.modality not in ("image", None):
            raise ValueError(f"frame_encoder must be an image encoder, got {frame_encoder!r} (modality {info.modality!r})")
        self.frame_encoder = info.factory(**dict(frame_options or {}))
        self.dim, self.temporal, self.max_frames = dim, temporal, max_frames
        self.project = nn.Linear(self.frame_encoder.dim, dim)
        self.time_position = nn.Parameter(torch.randn(max_frames, dim) * 0.02)
        if temporal == "transformer":
            layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True, activation="gelu")
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)

    def processor(self) -> VideoProcessor:
        return VideoProcessor(self.frame_encoder.processor(), self.max_frames)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        mask, present, index = batch["mask"].to(torch.bool), batch["present"].to(torch.bool), batch["frame_index"]
        b, length = mask.shape
        if length > self.max_frames:
            raise ValueError(f"clips of at most max_frames={self.max_frames} frames expected, got {length}")
        mask = mask & present[:, None]
        per_frame = torch.zeros(b * length, self.frame_encoder.dim, device=mask.device)
        if index.numel():
            frames = self.frame_encoder({k[len("frames."):]: v for k, v in batch.items() if k.startswith("frames.")})
            per_frame = per_frame.to(frames.pooled.dtype).index_copy(0, index, frames.pooled)
        x = self.project(per_frame.view(b, length, -1)) + self.time_position[:length]
        if self.temporal == "transformer":
            # Absent samples get one attended key so attention stays finite (zeroed afterwards).
            keys = mask | (~mask.any(1, keepdim=True) & (torch.arange(length, device=mask.device) == 0))
            x = self.norm(self.encoder(x, src_key_padding_mask=~keys))
        return Features.from_tokens(x, mask, present)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("video", VideoEncoder, modality="video",
                         example_options={"frame_encoder": "image_cnn", "frame_options": {"dim": 8, "image_size": 8, "width": 8},
                                          "dim": 16, "heads": 2, "max_frames": 4})
