"""The built-in modalities and the file extensions each reads (``registry.add_modality``).

``mmcore predict`` sends a bare file path to the slot whose modality declares its extension, and
``mmcore fit`` infers file columns from the same declarations. A text file given to ``mmcore
predict`` is read here (hook ``mmcore_file_input``): the text slot gets its UTF-8 contents. The lists are those of the reader
libraries (:mod:`mmcore_plugins.io`: every format the installed Pillow opens, every format the
installed libsndfile reads), named lazily so that discovering plugins imports neither library.
"""

from __future__ import annotations

import mmcore


def _image() -> frozenset[str]:
    from mmcore_plugins.io import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _audio() -> frozenset[str]:
    from mmcore_plugins.io import AUDIO_SUFFIXES

    return AUDIO_SUFFIXES


def _text() -> frozenset[str]:
    from mmcore_plugins.io import TEXT_SUFFIXES

    return TEXT_SUFFIXES


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_modality("image", extensions=_image, doc="a path to an image file, a PIL image or an [H, W(, C)] array")
    registry.add_modality("audio", extensions=_audio, doc="a path to an audio file, or a (waveform, sample_rate) pair")
    registry.add_modality("text", extensions=_text, doc="a string (a text file's content, read as UTF-8)")
    registry.add_modality("video", extensions=(), doc="a folder of frame images (sorted by name)")
    registry.add_modality("tabular", extensions=(), doc="a row: a sequence of numbers or a mapping column -> value")


@mmcore.hookimpl
def mmcore_file_input(path, modality):
    """A text file's contents for a text slot (UTF-8, checked: :func:`mmcore_plugins.io.read_text`);
    other modalities' files are opened by their processors (None: the path is the input)."""
    if modality != "text":
        return None
    from mmcore_plugins.io import read_text

    return read_text(path)
