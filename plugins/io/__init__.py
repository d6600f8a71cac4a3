"""The one place mmcore reads users' data: images (Pillow), audio (python-soundfile), text (UTF-8),
tables (:mod:`mmcore_plugins.io.tables`: CSV, JSON Lines, Parquet, DataFrames).

Every encoder's Processor, the manifest's validation, the perturbations and ``mmcore predict``
call these functions; see each module's docstring for what the model sees per format.
"""

from mmcore_plugins.io.audio import (
    AudioInfo,
    load_audio,
    looks_like_audio,
    probe_audio,
    read_audio,
    resample,
    verify_audio,
)
from mmcore_plugins.io.check import check_media, video_frames
from mmcore_plugins.io.errors import AudioReadError, ImageReadError, MediaError, TextReadError
from mmcore_plugins.io.image import (
    ImageInfo,
    check_background,
    looks_like_image,
    probe_image,
    read_image,
    verify_image,
)
from mmcore_plugins.io.tables import TABLE_SUFFIXES, TableError, read_table
from mmcore_plugins.io.text import TEXT_SUFFIXES, read_text


def __getattr__(name: str):
    # The suffix sets ask Pillow / libsndfile what they read, which imports them: computed on
    # first use so that discovering plugins stays light (PEP 562).
    if name == "IMAGE_SUFFIXES":
        from mmcore_plugins.io import image

        return image.IMAGE_SUFFIXES
    if name == "AUDIO_SUFFIXES":
        from mmcore_plugins.io import audio

        return audio.AUDIO_SUFFIXES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUDIO_SUFFIXES", "IMAGE_SUFFIXES", "TEXT_SUFFIXES",
    "AudioInfo", "ImageInfo",
    "MediaError", "ImageReadError", "AudioReadError", "TextReadError",
    "check_media", "video_frames",
    "looks_like_audio", "looks_like_image",
    "probe_audio", "probe_image",
    "read_audio", "read_image", "read_text", "resample",
    "check_background", "load_audio", "verify_audio", "verify_image",
    "TABLE_SUFFIXES", "TableError", "read_table",
]
