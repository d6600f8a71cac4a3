"""``check_media``: what a manifest's validation runs on every file cell, before any model is trained."""

from __future__ import annotations

import os

from mmcore_plugins.io import image
from mmcore_plugins.io.audio import probe_audio, verify_audio
from mmcore_plugins.io.errors import ImageReadError, MediaError, describe
from mmcore_plugins.io.image import probe_image, verify_image
from mmcore_plugins.io.text import read_text

MODALITIES = ("image", "audio", "text", "video")


def video_frames(folder: str | os.PathLike) -> list[str]:
    """The frame images of a video folder, in natural order (frame_2 before frame_10), as paths.

    Raises :class:`ImageReadError` naming the folder when it is not a folder or holds no images.
    """
    from pathlib import Path

    path = Path(folder)
    if not path.is_dir():
        raise ImageReadError(f"a video given as a path must be a folder of frame images, got {describe(folder)}",
                             path=folder)
    frames = sorted((str(p) for p in path.iterdir() if p.suffix.lower() in image.IMAGE_SUFFIXES and p.is_file()),
                    key=_natural_key)
    if not frames:
        raise ImageReadError(f"video folder {describe(folder)} holds no frame images", path=folder)
    return frames


def _natural_key(path: str) -> list:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", os.path.basename(path))]


def check_media(path: str | os.PathLike, modality: str, *, decode: bool = True) -> None:
    """Check that ``path`` can be read as ``modality`` ("image", "audio", "text" or "video").

    ``decode=False`` stops after the header (images: :func:`probe_image`, audio: :func:`probe_audio`;
    the file is opened once and no pixel or sample is decoded): what a manifest's ``validate: header``
    runs on every file, about a third of the cost of the decoding check.

    Nothing is read unbounded: images have their header checked (size, mode, Pillow's
    decompression-bomb limit) before their first frame is decoded (:func:`verify_image`); audio has
    its header checked (rate, channels, frames against the file size, :func:`probe_audio`) before
    its first second is decoded (:func:`verify_audio`); text is decoded whole, up to
    ``MAX_TEXT_BYTES`` (:func:`read_text`); a video is a folder of frame images, each one's header
    checked (decoding every frame of every clip up front would be slow).

    Raises a :class:`MediaError` subclass naming the file and what is wrong; ``ValueError`` for an
    unknown ``modality``.
    """
    if modality == "image":
        (verify_image if decode else probe_image)(path)
    elif modality == "audio":
        (verify_audio if decode else probe_audio)(path)
    elif modality == "text":
        read_text(path)
    elif modality == "video":
        for frame in video_frames(path):
            probe_image(frame)
    else:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")


__all__ = ["MODALITIES", "MediaError", "check_media", "video_frames"]
