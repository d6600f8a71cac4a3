"""The front end of an exported mmcore model: raw values -> the graph's input arrays, and the graph's
outputs -> predictions. numpy, Pillow and python-soundfile only (onnxruntime or torch to run the graph).

``mmcore export`` copies this file into every export folder, so an artefact runs without mmcore::

    import frontend                                   # the copy inside the export folder
    model = frontend.load("exports/demo")             # model.onnx through onnxruntime (model.pt2: torch)
    model.predict([{"image": "digit.png", "audio": "seven.wav", "text": "seven"},
                   {"text": "drei"}])                 # a missing slot is a missing modality
    # -> [{"prediction": "7", "probabilities": {"0": 0.001, ...}, "modalities": ["image", "audio", "text"]}, ...]

What runs where. The graph (``model.onnx`` / ``model.pt2``) holds every step that exports: image
normalisation, the log-mel spectrogram (an STFT as a convolution with the DFT basis, mel
filters, log, per-utterance standardisation over the real frames), the encoders, the fusion and the head. This
file holds what cannot be a graph: decoding files, resizing images of any size to the model's
square, tokenising text, looking categories up in the fitted vocabularies, standardising table
columns, padding a batch. Each step is the one ``mmcore``'s processors take, written again in
numpy (their fitted state -- vocabularies, means, class names -- is in ``manifest.json``):

* **image** (slot kind ``image``): a file (Pillow: first frame, EXIF orientation applied, 8/16-bit,
  alpha composited onto the slot's ``background``, grey = BT.601 luma) or an array ``[C, H, W]``
  in [0, 1] -> resized to ``image_size`` squared by Pillow's antialiased bilinear filter (what
  ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` computes; they agree to
  about 1e-7, 1e-5 when one side grows and the other shrinks) -> ``pixels [B, C, S, S]`` in [0, 1].
* **audio** (``audio``): a file (soundfile: channels averaged, at most ``max_seconds``) or a
  waveform ``[T]`` at the slot's rate, or ``(waveform, rate)``; resampled by FFT as mmcore does
  -> zero-padded to ``n_fft`` if shorter, reflect-padded by ``n_fft // 2`` at both ends (what
  ``torch.stft(center=True)`` does per clip) -> ``waveform [B, N]`` (zeros after each clip, ``N =
  n_fft + hop * (T - 1)`` for the batch's most frames ``T``) and ``length [B]`` (each padded length).
* **text** (``text_bytes`` / ``text_vocab`` / ``text_hf``): UTF-8 bytes, or the fitted character /
  word vocabulary (ids 0 = padding, 1 = unknown), or the fitted vocabulary of words and
  character n-grams (``text_ngram``: :func:`subword_ngrams`, units outside it left out), or the
  model's own Hugging Face tokenizer (``tokenizer.json`` in the folder, through the ``tokenizers``
  library) -> ``ids [B, L]``, ``mask [B, L]``; truncated to ``max_length`` tokens.
* **tabular** (``tabular``): a mapping column -> value (or a list of the numbers) -> ``values
  [B, F]`` standardised with the training mean and std, ``categories [B, K]`` (0 = unseen or empty).
* **video** (``video``): a list of frames (each as an image above), at most ``max_frames`` evenly
  spaced -> ``frames [B, F, C, S, S]``, ``mask [B, F]``.

Every slot also has ``present [B]`` (bool): False where the record lacks that modality; the
other inputs of that slot then hold the "missing" filler the manifest names (zeros, or the
padding id). The graph takes any subset of modalities per record, as the trained model does.

An export of a ``mmcore fit`` run holds fit's column plan too (manifest ``"columns"``, read by
:class:`Columns`): ``predict`` then takes the user's own rows, as ``mmcore.Predictor`` does, and
derives what fit derived from them -- an empty number's training median and ``"<column> missing"``
indicator, a date's parts, a text-file cell's text, a file cell's path (relative to ``base``)::

    model.predict([{"photo": "a.png", "note": "notes/a.txt", "weight": "", "created": "2021-03-04"}])
    # -> [{"prediction": "high", "probabilities": {"high": 0.8, "low": 0.2}, "modalities": [...]}]

A column the model reads must be in the rows or declared in ``missing_columns`` (:class:`ColumnsError`
names it and the closest column given); an empty, placeholder, missing or unreadable cell is a
missing one, reported in one :class:`MissingInputsWarning` (``strict=True`` refuses it). A category
the training split never held is read as unknown and the record predicted all the same, told in one
:class:`UnseenCategoriesWarning` per column, in ``mmcore predict``'s words.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

#: A number written with a decimal comma (mmcore_plugins.io.tables.DECIMAL_COMMA): ``0,314``, ``1.234,5``.
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+")
#: A whole number grouped by points (``1.234``): in a decimal-comma column, a thousand (mmcore_plugins.io.tables._WHOLE).
_POINT_GROUPED = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+")

FORMAT = "mmcore-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

#: Every dynamic size of a graph input is at least this: a batch of one record gets a second record
#: with every modality missing, a text of one token a padding token, a clip of one frame a padding
#: frame (all masked: they change no real record's output). The exported graphs are traced for
#: sizes >= 2 -- PyTorch's attention layers branch on a size being 1, which torch.export turns into
#: a guard -- and this keeps one graph for every size.
MIN_SIZE = 2
#: Least frames of an audio batch (masked padding frames after shorter clips): an audio encoder pools
#: time by up to 16, and each size inside the graph is >= 2 with this many.
MIN_AUDIO_FRAMES = 32

#: Samples kept per audio clip and frames per video are bounded by the manifest (max_seconds,
#: max_frames); images by Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS).
MAX_TEXT_CHARS = 1_000_000
#: How a fitted vocabulary's texts are split: characters, words (and punctuation), fastText's subword units.
TEXT_LEVELS = ("char", "word", "ngram")


_WORD = re.compile(r"\w+")


def subword_ngrams(text: str, min_n: int, max_n: int) -> Iterator[str]:
    """fastText's subword units of ``text`` (Bojanowski et al. 2017, "Enriching Word Vectors with Subword
    Information"), yielded in order: for every word (``\\w+``) the word between boundary marks,
    ``<word>``, then its character n-grams of ``min_n``..``max_n`` characters, shorter than the marked
    word (``"cat"`` -> ``<cat>``, ``<c``, ``ca``, ``at``, ``t>``, ``<ca``, ``cat``, ``at>`` for 2..3; a
    word of k >= 3 letters gives 3k + 1 units for 2..4).

    The ``text_ngram`` encoder's tokenizer (:class:`mmcore_plugins.encoders.text.NgramTokenizer`)
    splits texts with this very function, so training and an export cannot split them differently.
    """
    for match in _WORD.finditer(text):
        marked = f"<{match.group()}>"
        yield marked
        for n in range(min_n, min(max_n, len(marked) - 1) + 1):
            for i in range(len(marked) - n + 1):
                yield marked[i: i + n]


#: The vocabulary texts' "unknown" id (0 is padding).
UNKNOWN_ID = 1


def ngram_ids(text: str, vocab: Mapping[str, int], min_n: int, max_n: int, limit: int) -> list[int]:
    """The ids (``vocab[unit]``) of the first ``limit`` :func:`subword_ngrams` of ``text`` that are in
    ``vocab``; units outside it are left out (an unseen n-gram carries no signal), and a text with
    none gets ``[1]`` (unknown: the encoder reads it as absent). Splitting stops once ``limit`` ids
    are found, so a long text costs what its first ``limit`` units cost."""
    ids: list[int] = []
    if limit < 1:
        return [UNKNOWN_ID]
    for unit in subword_ngrams(text, min_n, max_n):
        found = vocab.get(unit)
        if found is not None:
            ids.append(found)
            if len(ids) == limit:
                break
    return ids or [UNKNOWN_ID]


class FrontEndError(ValueError):
    """A record's value cannot become a graph input: ``slot`` names the field, the message says why."""

    def __init__(self, slot: str, message: str) -> None:
        super().__init__(f"{slot}: {message}")
        self.slot, self.reason = slot, message


# ----------------------------------------------------------------------------------- decoding
def _is_file_like(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike, io.IOBase)) or hasattr(value, "read")


def load_image(source: Any, channels: int, background: Sequence[float] | float = 255, max_side: int | None = None) -> np.ndarray:
    """An image file (path or binary file object) -> float32 ``[channels, H, W]`` in [0, 1], through Pillow.

    First frame; EXIF orientation applied; 16-bit grey divided by 65535, 8-bit by 255; alpha
    composited onto ``background`` (grey level or (R, G, B), 0..255); grey from colour by BT.601
    luma. A JPEG with ``max_side`` is decoded by libjpeg at 1/2, 1/4 or 1/8 scale, never below
    ``2 * max_side`` per axis (``PIL.Image.draft``, as mmcore's reader does). (mmcore itself reads with :func:`mmcore_plugins.io.read_image`, which also applies ICC
    profiles and reads 32-bit TIFFs; ``mmcore serve`` uses that.) Raises ``ValueError``.
    """
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            img.seek(0)
            if max_side is not None and img.format == "JPEG" and img.mode in ("RGB", "L"):
                img.draft(img.mode, (2 * max_side, 2 * max_side))
            img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad files
        raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the pixels are still the picture
        pass
    if img.mode.startswith("I;16"):
        data, alpha = np.asarray(img, dtype=np.float32)[..., None] / 65535.0, None
    else:
        has_alpha = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or img.has_transparency_data
        grey = img.mode in ("1", "L", "LA", "La", "I", "F") or (img.mode == "P" and img.palette is not None
                                                                   and img.palette.mode == "L")
        target = ("LA" if grey else "RGBA") if has_alpha else ("L" if grey else "RGB")
        data = np.asarray(img.convert(target), dtype=np.float32) / 255.0
        data = data[..., None] if data.ndim == 2 else data
        data, alpha = (data[..., :-1], data[..., -1]) if has_alpha else (data, None)
    return _to_channels(data, alpha, channels, background)


def _to_channels(rgb: np.ndarray, alpha: np.ndarray | None, channels: int, background: Any) -> np.ndarray:
    bg = np.asarray([background] * 3 if isinstance(background, (int, float)) else list(background), dtype=np.float32) / 255.0
    if alpha is not None:
        if rgb.shape[-1] == 1 and not (bg == bg[0]).all():
            rgb = np.repeat(rgb, 3, axis=-1)
        colour = bg[:1] if rgb.shape[-1] == 1 else bg
        rgb = rgb * alpha[..., None] + colour * (1.0 - alpha[..., None])
    if channels == 1 and rgb.shape[-1] == 3:
        rgb = rgb @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
    elif channels == 3 and rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.clip(np.ascontiguousarray(np.moveaxis(rgb, -1, 0), dtype=np.float32), 0.0, 1.0)


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited FFT resampling of ``wave [N]`` (mmcore_plugins.io.resample, in numpy): the spectrum
    cut or zero-extended to the new Nyquist frequency on a length fast at both rates."""
    if source_rate == target_rate:
        return wave
    n = wave.shape[-1]
    m = max(1, round(n * target_rate / source_rate))
    g = math.gcd(source_rate, target_rate)
    a, b = source_rate // g, target_rate // g
    k = _smooth(-(-n // a))
    padded_n, padded_m = a * k, b * k
    spectrum = np.fft.rfft(wave.astype(np.float32), n=padded_n)
    out = np.zeros(padded_m // 2 + 1, dtype=spectrum.dtype)
    keep = min(spectrum.shape[-1], padded_m // 2 + 1)
    out[:keep] = spectrum[:keep]
    return (np.fft.irfft(out, n=padded_m)[:m] * (padded_m / padded_n)).astype(np.float32)


def _smooth(n: int) -> int:
    best = 1 << max(0, (n - 1).bit_length())
    f7 = 1
    while f7 < best:
        f5 = f7
        while f5 < best:
            f3 = f5
            while f3 < best:
                f2 = f3
                while f2 < n:
                    f2 *= 2
                best = min(best, f2)
                f3 *= 3
            f5 *= 5
        f7 *= 7
    return best


def load_audio(source: Any, sample_rate: int, max_seconds: float) -> np.ndarray:
    """An audio file (path or binary file object) -> mono float32 waveform at ``sample_rate``, at most
    ``max_seconds`` long (only that much is decoded), through python-soundfile. Raises ``ValueError``."""
    import soundfile

    try:
        with soundfile.SoundFile(source) as f:
            if not (1 <= f.samplerate <= 1_000_000 and 1 <= f.channels <= 64):
                raise ValueError(f"{f.samplerate} Hz, {f.channels} channels is not audio this reads")
            # libsndfile decodes a truncated WAV/AIFF up to where it ends and notes the header's claim in
            # its log ("data : 127686 (should be 42532)"): refused here as mmcore's reader refuses it.
            claim = re.search(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", f.extra_info or "", re.MULTILINE)
            if claim is not None and int(claim.group(1)) > int(claim.group(2)):
                raise ValueError(f"header claims {claim.group(1)} bytes of audio but the file holds {claim.group(2)} "
                                 "(truncated); re-save it with an audio tool")
            rate = int(f.samplerate)
            data = f.read(frames=min(f.frames, int(max_seconds * rate) + 1), dtype="float32", always_2d=True)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile errors
        raise ValueError(f"not readable audio ({exc})") from exc
    if data.shape[0] == 0 or not np.isfinite(data).all():
        raise ValueError("the audio holds no frames, or NaN / infinite samples")
    return _cut(resample(data.mean(axis=1, dtype=np.float32), rate, sample_rate), sample_rate, max_seconds)


def _cut(wave: np.ndarray, rate: int, max_seconds: float) -> np.ndarray:
    return wave[: int(max_seconds * rate)]


# ----------------------------------------------------------------------------------- slots
class Slot:
    """One modality slot's front end: ``prepare(raw) -> item`` and ``collate(items) -> {input: array}``."""

    def __init__(self, name: str, spec: Mapping[str, Any], folder: str | None = None) -> None:
        self.name, self.spec = name, dict(spec)
        self.kind, self.modality = self.spec["kind"], self.spec["modality"]

    def decode(self, raw: Any) -> Any:
        """A file (path / file object) -> the decoded value ``prepare`` takes; anything else unchanged."""
        return raw

    def prepare(self, raw: Any) -> Any:
        raise NotImplementedError

    def collate(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def reads(self, item: Any) -> bool:
        """Whether the model reads a prepared ``item`` as present (a result's "modalities" lists the slot)."""
        return item is not None

    def inputs(self, field: str) -> str:
        return f"{self.name}.{field}"

    def _present(self, items: Sequence[Any]) -> np.ndarray:
        return np.array([i is not None for i in items], dtype=bool)


class ImageSlot(Slot):
    """``pixels [B, C, S, S]`` float32 in [0, 1] (normalised inside the graph), ``present [B]``."""

    def decode(self, raw: Any) -> Any:
        if _is_file_like(raw):
            return load_image(raw, self.spec["channels"], self.spec["background"], max_side=self.spec["image_size"])
        return raw

    def prepare(self, raw: Any) -> np.ndarray:
        from PIL import Image

        image = self.decode(raw)
        if type(image).__module__.startswith("PIL."):
            image = _to_channels(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, None, self.spec["channels"], 255)
        image = np.asarray(image, dtype=np.float32)
        channels, size = self.spec["channels"], self.spec["image_size"]
        if image.ndim != 3 or image.shape[0] != channels or 0 in image.shape:
            raise FrontEndError(self.name, f"expected an image file or a [{channels}, H, W] array in [0, 1], got shape "
                                           f"{list(image.shape)}")
        if not np.isfinite(image).all():
            raise FrontEndError(self.name, "the image holds NaN or infinite values")
        # Pillow's antialiased bilinear resampling of float ("F") images, channel by channel: the
        # filter torch.nn.functional.interpolate(antialias=True) reproduces.
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(p), mode="F").resize((size, size), Image.BILINEAR))
                  for p in image]
        return np.stack(planes).astype(np.float32)

    def collate(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        c, s = self.spec["channels"], self.spec["image_size"]
        blank = np.zeros((c, s, s), dtype=np.float32)
        return {self.inputs("pixels"): np.stack([blank if i is None else i for i in items]),
                self.inputs("present"): self._present(items)}


class AudioSlot(Slot):
    """``waveform [B, N]`` float32 (each clip reflect-padded by ``n_fft // 2``, zeros after; ``N = n_fft + hop *
    (T - 1)`` for the batch's most frames ``T``, at least ``min_frames``), ``length [B]`` int64 (each padded clip's length; 0 where
    missing), ``present [B]``; the log-mel spectrogram is computed in the graph."""

    def decode(self, raw: Any) -> Any:
        s = self.spec
        if _is_file_like(raw):
            return load_audio(raw, s["sample_rate"], s["max_seconds"])
        if isinstance(raw, tuple) and len(raw) == 2:
            wave, rate = np.asarray(raw[0], dtype=np.float32), int(raw[1])
            if wave.ndim == 2:
                wave = wave.mean(axis=0 if wave.shape[0] < wave.shape[1] else 1)
            return _cut(resample(wave[: int(s["max_seconds"] * rate) + 1], rate, s["sample_rate"]), s["sample_rate"],
                        s["max_seconds"])
        return raw

    def prepare(self, raw: Any) -> np.ndarray:
        s = self.spec
        wave = np.asarray(self.decode(raw), dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0 or not np.isfinite(wave).all():
            raise FrontEndError(self.name, f"expected an audio file or a finite mono waveform at {s['sample_rate']} Hz, got "
                                           f"shape {list(wave.shape)}")
        wave = _cut(wave, s["sample_rate"], s["max_seconds"])
        if wave.size < s["n_fft"]:
            wave = np.pad(wave, (0, s["n_fft"] - wave.size))
        return np.pad(wave, (s["n_fft"] // 2, s["n_fft"] // 2), mode="reflect")

    def collate(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        # The batch is as wide as its longest clip's frames reach: n_fft + hop * (frames - 1) samples
        # (a clip's last samples that start no whole frame are not needed).
        n_fft, hop = self.spec["n_fft"], self.spec["hop"]
        frames = max(self.spec["min_frames"], max((1 + (len(i) - n_fft) // hop for i in items if i is not None), default=1))
        width = n_fft + hop * (frames - 1)
        wave = np.zeros((len(items), width), dtype=np.float32)
        length = np.zeros(len(items), dtype=np.int64)
        for row, item in enumerate(items):
            if item is not None:
                wave[row, : len(item)] = item[:width]
                length[row] = len(item)
        return {self.inputs("waveform"): wave, self.inputs("length"): length, self.inputs("present"): self._present(items)}


class TextSlot(Slot):
    """``ids [B, L]`` int64 (padding id where not a token), ``mask [B, L]`` bool, ``present [B]``."""

    def __init__(self, name: str, spec: Mapping[str, Any], folder: str | None = None) -> None:
        super().__init__(name, spec, folder)
        self.tokenizer = None
        if self.kind == "text_vocab":
            if self.spec.get("level") not in TEXT_LEVELS:  # an export of a newer mmcore: never split another way
                raise ValueError(f"{name}: text level {self.spec.get('level')!r} is not one this front end knows "
                                 f"({', '.join(TEXT_LEVELS)})")
            self.vocab = {t: i + 2 for i, t in enumerate(self.spec["vocab"] or [])}
        elif self.kind == "text_hf":
            from tokenizers import Tokenizer

            if folder is None:
                raise ValueError(f"{name}: a Hugging Face tokenizer slot needs the export folder (tokenizer files)")
            self.tokenizer = Tokenizer.from_file(os.path.join(folder, self.spec["tokenizer"]))
            self.tokenizer.no_padding()
            self.tokenizer.enable_truncation(self.spec["max_length"])

    def prepare(self, raw: Any) -> np.ndarray:
        if not isinstance(raw, str):
            raise FrontEndError(self.name, f"expected text (a string), got {type(raw).__name__}")
        if len(raw) > MAX_TEXT_CHARS:
            raise FrontEndError(self.name, f"text of {len(raw)} characters, more than {MAX_TEXT_CHARS}")
        s, limit = self.spec, self.spec["max_length"]
        if self.kind == "text_bytes":
            ids = list(raw.encode("utf-8")[:limit] or b" ")
        elif self.kind == "text_vocab":
            text = raw.lower() if s["lowercase"] else raw
            if s["level"] == "ngram":
                ids = ngram_ids(text, self.vocab, s["min_n"], s["max_n"], limit)
            else:
                tokens = list(text) if s["level"] == "char" else re.findall(r"\w+|[^\w\s]", text)
                ids = [self.vocab.get(t, 1) for t in tokens[:limit]] or [1]
        else:
            ids = self.tokenizer.encode(raw).ids
        return np.asarray(ids, dtype=np.int64)

    def reads(self, item: Any) -> bool:
        # text_ngram reads a text of no known unit (one unknown id) as absent
        if item is None:
            return False
        return not (self.kind == "text_vocab" and self.spec["level"] == "ngram" and len(item) == 1 and item[0] == UNKNOWN_ID)

    def collate(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        length = max(MIN_SIZE, max((len(i) for i in items if i is not None), default=1))
        ids = np.full((len(items), length), self.spec["pad_id"], dtype=np.int64)
        mask = np.zeros((len(items), length), dtype=bool)
        for row, item in enumerate(items):
            if item is not None:
                ids[row, : len(item)] = item
                mask[row, : len(item)] = True
        return {self.inputs("ids"): ids, self.inputs("mask"): mask, self.inputs("present"): self._present(items)}


class TabularSlot(Slot):
    """``values [B, F]`` float32 (standardised), ``categories [B, K]`` int64, ``present [B]``."""

    def prepare(self, raw: Any) -> tuple[np.ndarray, np.ndarray]:
        s = self.spec
        columns, categorical = s["columns"], s["categorical"]
        if isinstance(raw, Mapping):
            names = [*(columns or []), *categorical]
            missing = [c for c in names if c not in raw]
            if missing:
                raise FrontEndError(self.name, f"row lacks column(s) {missing}; expected columns {names}")
            values = [raw[c] for c in (columns or [])]
            categories = [None if raw[c] is None else str(raw[c]) for c in categorical]
        elif categorical:
            raise FrontEndError(self.name, f"rows must be mappings column -> value (categorical columns {categorical})")
        elif isinstance(raw, (list, tuple)):
            values, categories = list(raw), []
        else:
            raise FrontEndError(self.name, f"expected a mapping column -> value or a list of {s['num_features']} numbers, "
                                           f"got {type(raw).__name__}")
        if len(values) != s["num_features"]:
            raise FrontEndError(self.name, f"expected {s['num_features']} numbers, got {len(values)}")
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                name = columns[i] if columns else f"#{i}"
                raise FrontEndError(self.name, f"column {name}: expected a finite number, got {value!r}")
        numbers = (np.asarray(values, dtype=np.float32) - np.asarray(s["mean"], dtype=np.float32)) / np.asarray(s["std"], dtype=np.float32)
        vocab = s["vocabularies"]
        index = [0 if v is None else vocab[c].get(v, 0) for c, v in zip(categorical, categories, strict=True)]
        return numbers.astype(np.float32), np.asarray(index, dtype=np.int64)

    def unseen(self, raw: Any) -> dict[str, str]:
        """``{column: value}`` of the row's category cells read as unknown (index 0) though not empty: a value the
        training split never held, or too rare there to be kept -- the tabular processor's rule (``str(value)``)."""
        if not isinstance(raw, Mapping):
            return {}
        vocab = self.spec["vocabularies"]
        return {c: str(raw[c]) for c in self.spec["categorical"]
                if raw.get(c) is not None and str(raw[c]) not in vocab.get(c, {})}

    def unseen_reason(self, column: str) -> str:
        limit = self.spec.get("max_categories")  # absent from exports made before it was written
        full = limit is not None and len(self.spec["vocabularies"].get(column, {})) >= limit - 1
        return "not seen in training" + (f" (or too rare there to be one of its {limit - 1} kept values)" if full else "")

    def collate(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        s = self.spec
        zeros, none = np.zeros(s["num_features"], dtype=np.float32), np.zeros(len(s["categorical"]), dtype=np.int64)
        return {self.inputs("values"): np.stack([zeros if i is None else i[0] for i in items]).reshape(len(items), -1),
                self.inputs("categories"): np.stack([none if i is None else i[1] for i in items]).reshape(len(items), -1),
                self.inputs("present"): self._present(items)}


class VideoSlot(Slot):
    """``frames [B, F, C, S, S]`` float32 in [0, 1] (``F >= 2``: padding frames are zeros), ``mask [B, F]``
    bool, ``present [B]``."""

    def __init__(self, name: str, spec: Mapping[str, Any], folder: str | None = None) -> None:
        super().__init__(name, spec, folder)
        self.frame = ImageSlot(name, {**self.spec["frame"], "kind": "image", "modality": "image"})

    def prepare(self, raw: Any) -> np.ndarray:
        if isinstance(raw, np.ndarray) and raw.ndim == 4:
            raw = list(raw)
        elif isinstance(raw, (str, os.PathLike)):  # a folder of frame images
            raw = video_frames(os.fspath(raw))
        if not isinstance(raw, (list, tuple)) or not raw:
            raise FrontEndError(self.name, "expected a non-empty list of frames")
        frames, most = list(raw), self.spec["max_frames"]
        if len(frames) > most:  # evenly spaced, as torch.linspace(0, n - 1, most).round() picks them
            picks = np.round(np.linspace(0, len(frames) - 1, most, dtype=np.float32)).astype(int)
            frames = [frames[i] for i in picks]
        return np.stack([self.frame.prepare(f) for f in frames])

    def collate(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        f = self.frame.spec
        length = max(MIN_SIZE, max((len(i) for i in items if i is not None), default=1))
        frames = np.zeros((len(items), length, f["channels"], f["image_size"], f["image_size"]), dtype=np.float32)
        mask = np.zeros((len(items), length), dtype=bool)
        for row, item in enumerate(items):
            if item is not None:
                frames[row, : len(item)] = item
                mask[row, : len(item)] = True
        return {self.inputs("frames"): frames, self.inputs("mask"): mask, self.inputs("present"): self._present(items)}


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN: a contrastive
    head's embedding of a missing side is NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def trim(array: Any, rows: int, shape: Sequence[Any]) -> Any:
    """``array`` cut to ``rows`` along every axis whose ``shape`` entry is "batch"."""
    index = tuple(slice(0, rows) if size == "batch" else slice(None) for size in shape)
    return array[index] if len(shape) == array.ndim else array[:rows]


def collate(slots: Mapping[str, Slot], prepared: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Prepared records (``{slot: item or None}``) -> the graph's input arrays in ``names`` order; a
    batch of fewer than ``MIN_SIZE`` records is padded with records that lack every modality."""
    rows = list(prepared) + [dict.fromkeys(slots)] * max(0, MIN_SIZE - len(prepared))
    arrays: dict[str, np.ndarray] = {}
    for name, slot in slots.items():
        arrays.update(slot.collate([r[name] for r in rows]))
    return {n: arrays[n] for n in names}


SLOT_KINDS: dict[str, type[Slot]] = {"image": ImageSlot, "audio": AudioSlot, "text_bytes": TextSlot, "text_vocab": TextSlot,
                                     "text_hf": TextSlot, "tabular": TabularSlot, "video": VideoSlot}


# ----------------------------------------------------------------------------------- the user's columns
# An export of a ``mmcore fit`` run carries fit's column plan (manifest ``"columns"``): users name the
# columns of their own table, and what fit derived from them is derived here again, rule for rule as
# mmcore_plugins.autofit.prepare.Preparer does (and mmcore.labels / mmcore_plugins.autofit.dates /
# mmcore_plugins.io, for what a cell is): an empty number -> the training median and its 0/1
# "<column> missing" indicator; a date -> days since the training table's earliest, year, hour,
# month, weekday; a text-file cell -> the file's text; a file cell -> the path, relative to ``base``;
# categories as their text. Columns fit ignored (ids) are never read.

#: Cell texts that mean "no value" (mmcore.labels.MISSING_PLACEHOLDERS), compared lower-cased and stripped.
MISSING_PLACEHOLDERS = frozenset({"n/a", "na", "#n/a", "<na>", "nan", "null", "none"})
#: Largest text file a text-file column reads (mmcore_plugins.io.text.MAX_TEXT_BYTES).
MAX_TEXT_FILE_BYTES = 64 * 1024 * 1024
#: Modalities whose cells are file (or folder) paths.
FILE_KINDS = ("image", "audio", "video")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


class ColumnsError(ValueError):
    """A user's table or row that the model's columns cannot read: a column the model reads that is absent
    and not declared missing, or a cell that cannot be used; ``column`` names it (None: several)."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class MissingInputsWarning(UserWarning):
    """``predict`` treated cells or rows as missing (files that do not exist or cannot be read,
    placeholders, rows without any input); the message names rows and columns (``strict=True`` refuses)."""


class UnseenCategoriesWarning(UserWarning):
    """``predict`` read category cells as unknown (vocabulary index 0): values the training split never
    held. The records are predicted all the same; one warning per column, in ``mmcore predict``'s words:
    ``column 'brand': 3 records had values not seen in training (e.g. 'Acme'); they were treated as unknown``."""


#: Values quoted per column in an UnseenCategoriesWarning.
UNSEEN_EXAMPLES = 3


def plain(value: Any) -> Any:
    """A cell as a plain Python value, as mmcore reads a table: numpy scalars as their value, every kind
    of missing (None, NaN, NaT, pandas' NA) as None, a pandas Timestamp as a ``datetime``."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    if type(value) in (str, bool, int):
        return value
    if isinstance(value, str):
        return str(value)
    module = type(value).__module__
    if module.startswith("pandas"):
        kind = type(value).__name__
        if kind in ("NAType", "NaTType"):
            return None
        if kind == "Timestamp":
            return value.to_pydatetime(warn=False)
        if kind == "Timedelta":
            return value.to_pytimedelta()
    if module.startswith("numpy") and type(value).__name__ in ("datetime64", "timedelta64"):
        return None if np.isnat(value) else value.astype(f"{type(value).__name__}[us]").item()
    if hasattr(value, "tolist") and module.startswith("numpy"):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def is_missing(value: Any) -> bool:
    """Whether a cell holds no value: None, NaN, a blank string or a :data:`MISSING_PLACEHOLDERS` text."""
    value = plain(value)
    if value is None:
        return True
    return isinstance(value, str) and (not value.strip() or value.strip().lower() in MISSING_PLACEHOLDERS)


def is_non_finite(value: Any) -> bool:
    """Whether a cell is an infinite number (``inf``, ``"-Infinity"``): no measurement."""
    value = plain(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, str):
        try:
            return math.isinf(float(value.strip()))
        except ValueError:
            return False
    return False


def as_number(value: Any) -> float | None:
    """A finite number from a number or a numeric string; None when it is not one (a bool is not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _parse_iso(text: str) -> Any:
    import datetime as dt

    if len(text) < 8 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        return dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None


def parse_date(value: Any, fmt: str) -> Any:
    """One date/time cell with format ``fmt`` (``"iso8601"`` or a ``strptime`` format) -> a naive UTC
    ``datetime`` (a ``time`` for time-of-day formats), or None when it does not read; ``datetime`` /
    ``date`` / ``time`` values are taken as they are (mmcore_plugins.autofit.dates.parse)."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        out: Any = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, dt.time):
        return value.replace(tzinfo=None)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if fmt == "iso8601":
            out = _parse_iso(text)
        else:
            try:
                out = dt.datetime.strptime(text, fmt)
            except ValueError:
                return None
            if "%Y" not in fmt and "%y" not in fmt and "%d" not in fmt:
                return out.time()
        if out is None:
            return None
    else:
        return None
    if out.tzinfo is not None:
        out = out.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return out


def expected_date(fmt: str, time_only: bool = False) -> str:
    """What a cell of a date column read with ``fmt`` must look like, with an example -- the words of
    mmcore_plugins.autofit.dates.expected, so that an export refuses a bad date as Predictor does."""
    import datetime as dt

    what = "a time of day" if time_only else "a date"
    if fmt == "iso8601":
        return f"{what} in ISO 8601 (e.g. {'10:30' if time_only else '2021-03-04 or 2021-03-04T10:30'})"
    try:
        example = dt.datetime(2021, 3, 4, 10, 30).strftime(fmt)
    except ValueError:
        return f"{what} as {fmt}"
    return f"{what} as {fmt} (e.g. {example})"


def date_parts(value: Any, fmt: str, *, origin: float, with_time: bool) -> dict[str, Any] | None:
    """One date cell -> ``days`` since ``origin`` (days since 1970-01-01 of the training table's earliest
    date), ``year``, ``hour`` (with ``with_time``) as numbers, ``month`` and ``weekday`` as category
    texts; a time of day -> ``hour``; None when the cell does not read (mmcore_plugins.autofit.dates)."""
    import datetime as dt

    parsed = parse_date(value, fmt)
    if parsed is None:
        return None
    if isinstance(parsed, dt.time):
        return {"hour": parsed.hour + parsed.minute / 60 + parsed.second / 3600}
    days = (parsed - dt.datetime(1970, 1, 1)).total_seconds() / 86400.0
    out: dict[str, Any] = {"days": days - origin, "year": float(parsed.year), "month": str(parsed.month),
                           "weekday": str(parsed.isoweekday())}
    if with_time:
        out["hour"] = parsed.hour + parsed.minute / 60 + parsed.second / 3600
    return out


def read_text_file(path: str) -> str:
    """A text file's contents as UTF-8 (a byte-order mark stripped; a UTF-16/32 one decides the
    encoding), at most :data:`MAX_TEXT_FILE_BYTES` (mmcore_plugins.io.read_text). Raises ``ValueError``."""
    if os.path.isdir(path):
        raise ValueError(f"text file {path!r} is a folder, expected a file")
    size = os.path.getsize(path)
    if size > MAX_TEXT_FILE_BYTES:
        raise ValueError(f"text file {path!r} is {size} bytes, more than the {MAX_TEXT_FILE_BYTES}-byte limit")
    with open(path, "rb") as fh:
        data = fh.read(MAX_TEXT_FILE_BYTES + 1)
    codec = next((c for bom, c in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(codec).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ValueError(f"text file {path!r} is not valid {codec}: byte offset {exc.start} ({exc.reason})") from exc


def video_frames(folder: str) -> list[str]:
    """The frame images of a video folder in natural order (frame_2 before frame_10), as mmcore lists them."""
    from PIL import Image

    if not os.path.isdir(folder):
        raise ValueError(f"a video given as a path must be a folder of frame images, got {folder!r}")
    Image.init()
    suffixes = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    key = lambda p: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", os.path.basename(p))]  # noqa: E731
    frames = sorted((os.path.join(folder, n) for n in os.listdir(folder)
                     if os.path.splitext(n)[1].lower() in suffixes and os.path.isfile(os.path.join(folder, n))), key=key)
    if not frames:
        raise ValueError(f"video folder {folder!r} holds no frame images")
    return frames


class Columns:
    """fit's column plan (manifest ``"columns"``): the user's rows ``{column: value}`` -> the graph's slots.

    ``slots``: ``{slot: {"kind": modality, "column": name}}`` for a file or text column and ``{"kind":
    "tabular", "numeric", "categorical"[, "dates"]}`` for the table slot; ``fill`` (column -> training
    median), ``indicators`` (column -> its missing-indicator column), ``dates`` (column -> format, origin,
    derived parts), ``text_files`` (text columns whose cells are file paths); ``task``, ``classes`` and
    ``class_values`` (each class as the training table held it: what a prediction gives back);
    ``table_columns``, the training table's whole header (an older export without it: the columns read and
    the target), whence :attr:`ignored_columns`; ``id_columns``, those of them fit inferred as ids. Raises ``ValueError`` naming the field when the plan is malformed or does not fit ``slots`` (the
    export's slot specs: the table slot's columns must be the ones the plan derives).
    """

    def __init__(self, spec: Mapping[str, Any], slots: Mapping[str, Mapping[str, Any]]) -> None:
        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"manifest columns.{field}: expected {expected}")

        need(isinstance(spec, Mapping), "", "an object")
        self.slots = spec.get("slots")
        need(isinstance(self.slots, Mapping) and set(self.slots) == set(slots), "slots", f"the export's slots {sorted(slots)}")
        self.fill, self.indicators = spec.get("fill", {}), spec.get("indicators", {})
        self.dates, self.text_files = spec.get("dates", {}), list(spec.get("text_files", []))
        need(isinstance(self.fill, Mapping) and all(isinstance(v, (int, float)) for v in self.fill.values()), "fill",
             "numbers by column")
        need(isinstance(self.indicators, Mapping) and all(isinstance(v, str) for v in self.indicators.values()), "indicators",
             "column names by column")
        need(isinstance(self.dates, Mapping) and all(
            isinstance(v, Mapping) and isinstance(v.get("format"), str) and isinstance(v.get("origin", 0.0), (int, float))
            and isinstance(v.get("numeric", {}), Mapping) and isinstance(v.get("categorical", {}), Mapping)
            for v in self.dates.values()), "dates", "date plans by column (format, origin, numeric and categorical parts)")
        self.task, self.target = spec.get("task"), spec.get("target")
        self.classes, self.labels = spec.get("classes"), spec.get("labels")
        self.class_values = spec.get("class_values") or self.classes
        need(self.task in ("classification", "multilabel", "regression"), "task", "classification, multilabel or regression")
        self.table_columns = spec.get("table_columns", [])
        #: the columns fit inferred as ids (an older export: none): serve echoes a record's values of them
        self.id_columns = spec.get("id_columns", [])
        need(isinstance(self.id_columns, list) and all(isinstance(c, str) for c in self.id_columns),
             "id_columns", "the id column names")
        #: number columns fit read with decimal commas: their string cells ("59,47") are read so again
        self.decimal_columns = frozenset(c for c in spec.get("decimal_columns", []) if isinstance(c, str))
        need(isinstance(self.table_columns, list) and all(isinstance(c, str) for c in self.table_columns),
             "table_columns", "the training table's column names")
        need(self.task != "classification" or isinstance(self.class_values, list) and len(self.class_values) == len(self.classes or []),
             "class_values", "one value per class")
        need(self.task != "multilabel" or isinstance(self.labels, list), "labels", "the label names")
        for name, s in self.slots.items():
            need(isinstance(s, Mapping) and s.get("kind") in (*FILE_KINDS, "text", "tabular"), f"slots.{name}.kind",
                 "image, audio, video, text or tabular")
            if s["kind"] != "tabular":
                need(isinstance(s.get("column"), str), f"slots.{name}.column", "a column name")
                continue
            need(all(isinstance(s.get(k, []), list) for k in ("numeric", "categorical", "dates"))
                 and all(c in self.dates for c in s.get("dates", [])), f"slots.{name}", "numeric, categorical, dates lists")
            numeric, categorical = self.derived_columns(name)
            front = slots[name]
            need(set(numeric) == set(front.get("columns") or []) and set(categorical) == set(front.get("categorical") or []),
                 f"slots.{name}", f"the columns the slot reads ({front.get('columns')}, {front.get('categorical')})")

    @property
    def input_columns(self) -> list[str]:
        """The user's columns the model reads, in slot order (never one this plan derives)."""
        out: list[str] = []
        for s in self.slots.values():
            out += [s["column"]] if "column" in s else [*s["numeric"], *s["categorical"], *s.get("dates", [])]
        return out

    @property
    def ignored_columns(self) -> list[str]:
        """The training table's columns the model does not read (the target, ids, a split column): a row may
        hold them, as it held them in training; they are never read."""
        read = set(self.input_columns)
        target = [self.target] if isinstance(self.target, str) else []
        return [c for c in dict.fromkeys([*self.table_columns, *target]) if c not in read]

    def slot_columns(self, slot: str) -> list[str]:
        """The user's columns a slot reads."""
        s = self.slots[slot]
        return [s["column"]] if "column" in s else [*s["numeric"], *s["categorical"], *s.get("dates", [])]

    def derived_columns(self, slot: str) -> tuple[list[str], list[str]]:
        """The table slot's numeric and categorical columns as its processor reads them (derived ones included)."""
        s = self.slots[slot]
        numeric = [*s["numeric"], *(self.indicators[c] for c in s["numeric"] if c in self.indicators)]
        categorical = list(s["categorical"])
        for column in s.get("dates", []):
            plan = self.dates[column]
            numeric += [*plan.get("numeric", {}).values(), *([self.indicators[column]] if column in self.indicators else [])]
            categorical += list(plan.get("categorical", {}).values())
        return numeric, categorical

    def check(self, header: Sequence[str], missing: Sequence[str] = (), *, where: str = "the records",
              option: str = "missing_columns") -> list[str]:
        """Every column the model reads is in ``header`` or declared in ``missing`` (then all its cells are
        empty); returns the declared ones. ColumnsError naming each absent column and the closest column
        the table has, or a declared column the model does not read (the rule and the words of
        ``mmcore predict`` and ``Predictor``)."""
        import difflib

        present, needed = set(header), self.input_columns
        declared = list(dict.fromkeys([missing] if isinstance(missing, str) else missing))
        unknown = [c for c in declared if c not in needed]
        if unknown:
            raise ColumnsError(f"{option}: {', '.join(repr(c) for c in unknown)} "
                               f"{'is not a column' if len(unknown) == 1 else 'are not columns'} the model reads "
                               f"(it reads {', '.join(repr(c) for c in needed)})", unknown[0])
        absent = [c for c in needed if c not in present and c not in declared]
        if absent:
            parts = []
            for column in absent:
                close = difflib.get_close_matches(column, sorted(present - set(needed), key=str), n=1)
                parts.append(f"{column!r} (trained on" + (f"; did you mean {close[0]!r}?)" if close else ")"))
            shared = [c for c in needed if c in present]
            shown = list(dict.fromkeys(header))
            columns = ", ".join(repr(c) for c in shown[:20]) + (f", ... ({len(shown) - 20} more)" if len(shown) > 20 else "")
            verb = "have" if where == "the records" else "has"  # "the records have" / "row 2 has" / "the DataFrame has"
            its = "its" if where.startswith("row ") else "the table's"
            raise ColumnsError(f"{where} {verb} no column{'s' if len(parts) > 1 else ''} {', '.join(parts)}; declare a column "
                               f"missing with {option} to predict without it ({its} columns: {columns or 'none'}"
                               + ("" if shared else "; it shares no column with the model's") + ")",
                               absent[0] if len(absent) == 1 else None)
        return declared

    def _number(self, column: str, value: Any) -> float | None:
        if is_missing(value) or is_non_finite(value):  # no measurement: the training median fills it
            return None
        value = plain(value)
        if column in self.decimal_columns and isinstance(value, str):  # as fit read the column (io.tables._point)
            text = value.strip()
            if _DECIMAL_COMMA.fullmatch(text) or ("." in text and _POINT_GROUPED.fullmatch(text)):
                value = text.replace(".", "").replace(",", ".")
        number = as_number(value)
        if number is None:
            # mmcore's hint for a decimal comma, without an option: neither serve nor this front end has one
            hint = (f"; {value!r} reads as a number with a decimal comma: write it with a point"
                    if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value.strip()) else "")
            raise ColumnsError(f"column {column!r}: expected a number, got {value!r}{hint}", column)
        return number

    def table_row(self, slot: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The table slot's cells ``{user's column: value or None}`` -> the row its processor reads: numbers
        (an empty one: the training median, and its indicator 1.0), categories as text (None: empty),
        each date's parts (an empty or unreadable one: the medians, no category, its indicator set).
        ColumnsError naming a number column whose cell is not a number."""
        s, out = self.slots[slot], {}
        for c in s["numeric"]:
            number = self._number(c, values.get(c))
            out[c] = float(self.fill.get(c, 0.0)) if number is None else number
            if c in self.indicators:
                out[self.indicators[c]] = float(number is None)
        for c in s["categorical"]:
            value = plain(values.get(c))
            out[c] = None if is_missing(value) else str(value).strip()
        for c in s.get("dates", []):
            plan, value = self.dates[c], plain(values.get(c))
            parts = None if is_missing(value) else date_parts(value, plan["format"], origin=plan.get("origin", 0.0),
                                                                with_time=bool(plan.get("with_time")))
            if parts is not None and not {*plan.get("numeric", {}), *plan.get("categorical", {})} <= set(parts):
                parts = None  # a time of day in a date column (or the reverse) does not read as one: unreadable
            if parts is None and not is_missing(value):  # as a number that is no number: that record's error
                raise ColumnsError(f"column {c!r}: expected {expected_date(plan['format'], bool(plan.get('time_only')))}, "
                                   f"got {value!r}", c)
            for part, derived in plan.get("numeric", {}).items():
                out[derived] = float(self.fill.get(derived, 0.0)) if parts is None else float(parts[part])
            for part, derived in plan.get("categorical", {}).items():
                out[derived] = None if parts is None else parts[part]
            if c in self.indicators:
                out[self.indicators[c]] = float(parts is None)
        return out

    def _path(self, value: Any, base: str) -> str | None:
        """The existing file or folder a cell names (relative to ``base``), or None."""
        if not isinstance(value, str) or not value.strip() or len(value) > 4096 or "\n" in value or "\x00" in value:
            return None
        try:
            path = os.path.realpath(os.path.join(base, os.path.expanduser(value.strip())))
        except (OSError, ValueError):
            return None
        return path if os.path.exists(path) else None

    def record(self, row: Mapping[str, Any], index: int, base: str, *, strict: bool = False,
               notes: list[str] | None = None) -> dict[str, Any] | None:
        """One user's row -> ``{slot: raw value or None}`` (a file cell as its path, a text-file cell as its
        text, the table slot as :meth:`table_row`), or None when the row has no input at all. A file that
        does not exist (or a text file that cannot be read) is a missing cell, noted in ``notes``;
        ``strict``: ColumnsError naming row and column. Paths are relative to ``base``."""
        out: dict[str, Any] = {}
        given = False  # any input, from the user's cells: the table slot's row fills an empty number with a median
        for slot, s in self.slots.items():
            kind = s["kind"]
            if kind == "tabular":
                try:
                    values = self.table_row(slot, row)
                except ColumnsError as exc:
                    raise ColumnsError(f"row {index + 1}, {exc}", exc.column) from None
                empty = not s["numeric"] and all(v is None for v in values.values())
                out[slot] = None if empty else values  # an all-empty row of categories: a missing modality
                given = given or any(not is_missing(row.get(c)) and not is_non_finite(row.get(c))
                                     for c in self.slot_columns(slot))
                continue
            column = s["column"]
            value = plain(row.get(column))
            if is_missing(value):
                out[slot] = None
            elif kind == "text" and column not in self.text_files:
                out[slot] = str(value)
            else:
                path = self._path(value, base)
                problem = None if path is not None else f"file {value!r} does not exist (relative to {base!r})"
                if path is not None and kind == "text":
                    try:
                        value = read_text_file(path)
                    except (ValueError, OSError) as exc:
                        problem = str(exc)
                if problem is not None:
                    if strict:
                        raise ColumnsError(f"row {index + 1}, column {column!r}: {problem}", column)
                    if notes is not None:
                        notes.append(f"row {index + 1}, column {column!r}: {problem}")
                out[slot] = None if problem is not None else value if kind == "text" else path
            given = given or out[slot] is not None
        return out if given else None

    def decode(self, prediction: Any) -> Any:
        """A graph prediction -> the user's value: the class as the training table held it, the list of
        label names, or the number."""
        if self.task == "classification":
            return self.class_values[int(prediction)]
        if self.task == "multilabel":
            return [label for label, on in zip(self.labels or [], np.asarray(prediction).ravel(), strict=True) if on]
        value = np.asarray(prediction, dtype=np.float64).ravel()
        return float(value[0])


def table_rows(data: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (a list of mappings ``{column: value}``, or a pandas DataFrame) -> plain rows and the header."""
    if hasattr(data, "itertuples") and hasattr(data, "columns"):  # a pandas DataFrame (pandas is not needed otherwise)
        names = [str(c) for c in data.columns]
        return [dict(zip(names, r, strict=True)) for r in data.itertuples(index=False, name=None)], names
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Sequence) or not all(isinstance(r, Mapping) for r in data):
        raise ColumnsError(f"expected a list of rows {{column: value}} (or a pandas DataFrame), got {type(data).__name__}")
    rows = [dict(r) for r in data]
    return rows, list(dict.fromkeys(str(k) for r in rows for k in r))


# ----------------------------------------------------------------------------------- the artefact
class Artefact:
    """An export folder: its manifest, its slots' front ends and the graph, ready to predict.

    ``inputs(records)`` -> graph input arrays; ``run(arrays)`` -> output arrays by name;
    ``predict(records)`` -> one dict per record (``prediction``; ``probabilities`` by class for
    classifiers; ``modalities`` used). ``records``: ``{slot: raw}`` mappings, a missing or None slot
    being a missing modality; a record needs at least one.

    An export of a ``mmcore fit`` run (:attr:`columns` is its column plan) predicts on the user's own
    rows instead, as ``mmcore.Predictor`` does: ``{column: value}`` mappings (or a pandas DataFrame)
    naming the columns of the training table -- never a column fit derived (see :class:`Columns`).
    """

    def __init__(self, folder: str | os.PathLike, *, graph: str | None = None, threads: int | None = None,
                 spinning: bool = True) -> None:
        self.folder = os.fspath(folder)
        with open(os.path.join(self.folder, MANIFEST), encoding="utf-8") as fh:
            self.manifest = json.load(fh)
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.folder}: not an mmcore export of format version {FORMAT_VERSION}")
        self.slots = {name: SLOT_KINDS[spec["kind"]](name, spec, self.folder) for name, spec in self.manifest["slots"].items()}
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        self.graph_file = graph or self.manifest["graph"]["file"]
        self.head = self.manifest["head"]
        #: fit's column plan (an export of a ``mmcore fit`` run), else None: records are then ``{slot: raw}``
        self.columns = Columns(self.manifest["columns"], self.manifest["slots"]) if self.manifest.get("columns") else None
        #: Whether a record's answer would depend on the other records of its graph call: onnxruntime's dynamic
        #: int8 quantises each activation with one scale over the whole tensor -- every record in the call (on the
        #: demo, a record's probabilities moved by up to 0.015 and 1 of 491 predictions changed with its batch).
        #: Such a graph is run one record a call by :meth:`predict` (and ``mmcore serve``): the same record, the
        #: same answer, whatever else is predicted with it.
        self.per_record = self.graph_file == self.manifest["graph"].get("files", {}).get("int8", {}).get("file")
        self._run = self._runner(os.path.join(self.folder, self.graph_file), threads, spinning)

    def _runner(self, path: str, threads: int | None, spinning: bool = True):
        if path.endswith(".onnx"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            # Constant weights stored as int8 behind a DequantizeLinear (model.int8.onnx) are folded to
            # float once at load instead of at every call (onnxruntime keeps them for QDQ fusion otherwise).
            options.add_session_config_entry("session.disable_quant_qdq", "1")
            if threads:
                options.intra_op_num_threads = threads
            if not spinning:  # idle pool threads sleep at once instead of spinning (a server's other threads need the cores)
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            return lambda arrays: session.run(self.output_names, arrays)
        import torch

        program = torch.export.load(path).module()

        def run(arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                out = program(*(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in self.input_names))
            return [o.numpy() for o in out]

        return run

    def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One record -> ``{slot: prepared item or None}``; FrontEndError names the slot at fault."""
        if not isinstance(record, Mapping):
            raise FrontEndError("record", f"expected a mapping slot -> value, got {type(record).__name__}")
        unknown = sorted(set(record) - set(self.slots))
        if unknown:
            raise FrontEndError(unknown[0], f"not a slot of this model; its slots are {list(self.slots)}")
        if all(record.get(s) is None for s in self.slots):
            raise FrontEndError("record", f"needs at least one of the slots {list(self.slots)}")
        out = {}
        for name, slot in self.slots.items():
            raw = record.get(name)
            try:
                out[name] = None if raw is None else slot.prepare(raw)
            except FrontEndError:
                raise
            except (ValueError, TypeError, OSError) as exc:
                raise FrontEndError(name, str(exc)) from exc
        return out

    def collate(self, prepared: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Prepared records -> the graph's input arrays, by name (at least ``MIN_SIZE`` rows: see there)."""
        return collate(self.slots, prepared, self.input_names)

    def inputs(self, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return self.collate([self.prepare(r) for r in records])

    def run(self, arrays: Mapping[str, np.ndarray], rows: int | None = None) -> dict[str, np.ndarray]:
        """The graph's outputs by name; ``rows``: keep the first rows only (drop collate's padding),
        along every axis the manifest marks as the batch (a contrastive head's ``[B, B]`` logits)."""
        out = dict(zip(self.output_names, self._run(arrays), strict=True))
        if rows is None:
            return out
        shapes = {o["name"]: o["shape"] for o in self.manifest["outputs"]}
        return {k: trim(v, rows, shapes.get(k, ["batch"])) for k, v in out.items()}

    def results(self, outputs: Mapping[str, np.ndarray], prepared: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Output arrays -> one JSON-ready dict per record."""
        head, out = self.head, []
        classes = head.get("classes")
        for row, record in enumerate(prepared):
            result: dict[str, Any] = {}
            prediction = outputs["predictions"][row]
            if self.columns is not None and head["task"] in ("classification", "multilabel", "regression"):
                result["prediction"] = self.columns.decode(prediction)  # as the training table held it
            elif head["task"] == "classification":
                index = int(prediction)
                result["prediction"] = classes[index] if classes else index
            elif head["task"] == "multilabel":
                hits = [int(v) for v in np.asarray(prediction).ravel()]
                result["prediction"] = [c for c, h in zip(classes, hits, strict=True) if h] if classes else hits
            else:
                result["prediction"] = json_safe(np.asarray(prediction).tolist())
            if "probabilities" in outputs:
                values = [round(float(p), 6) for p in outputs["probabilities"][row]]
                result["probabilities"] = dict(zip(classes, values, strict=True)) if classes and len(classes) == len(values) else values
            # a fit run's one-column slot by the user's column it reads (what the records name)
            result["modalities"] = [self.columns.slots[s].get("column", s) if self.columns is not None else s
                                    for s, slot in self.slots.items() if slot.reads(record.get(s))]
            out.append(result)
        return out

    def predict(self, records: Any, *, missing_columns: Sequence[str] = (), strict: bool = False,
                base: str | os.PathLike | None = None) -> list[dict[str, Any] | None]:
        """One result per record, in graph calls of at most the manifest's ``max_batch`` records.

        An export of a ``mmcore fit`` run takes the user's rows (``{column: value}``, or a DataFrame) under
        ``mmcore.Predictor``'s rule: every column the model reads is in the rows or declared in
        ``missing_columns`` (else :class:`ColumnsError` naming it and the closest column given); an empty
        cell, a placeholder ("N/A"), a file that does not exist or cannot be read is a missing cell --
        noted in one :class:`MissingInputsWarning` naming rows and columns (``strict``: ColumnsError); a
        row without any input gets None. File paths are relative to ``base`` (default: the current folder),
        in the records of any export (``{slot: path}`` for an image, audio or video slot).
        """
        if self.columns is None:
            records = [self._based(r, base) for r in records] if base is not None else list(records)
            results = self.predict_prepared([self.prepare(r) for r in records])
            self._tell_unseen(records)
            return results
        rows, header = table_rows(records)
        frame = hasattr(records, "itertuples")
        where = "the DataFrame" if frame else "the records"
        if not rows:
            raise ColumnsError("the DataFrame has no rows" if frame else "no records given (an empty list)")
        # A DataFrame has one header; records are each their own row: a record without a column the model
        # reads is refused, whatever the other records hold (Predictor's rule, and serve's).
        if frame:
            declared = self.columns.check(header, missing_columns, where=where)
        else:
            for i, row in enumerate(rows):
                declared = self.columns.check(list(row), missing_columns, where=f"row {i + 1}")
        folder, notes, prepared = os.path.abspath(os.fspath(base) if base is not None else os.getcwd()), [], []
        read = []  # each row's slot values as the model reads them (unseen categories are told from them)
        for i, row in enumerate(rows):
            record = self.columns.record({**row, **dict.fromkeys(declared)}, i, folder, strict=strict, notes=notes)
            prepared.append(None if record is None else self._prepare_cells(record, i, strict, notes))
            read.append(record if prepared[-1] is not None else None)
        empty = [i + 1 for i, p in enumerate(prepared) if p is None]
        if empty:
            if strict:
                raise ColumnsError(f"{where}: rows {empty[:10]} have no input (every column the model reads is empty)")
            notes.append(f"rows {', '.join(map(str, empty[:10]))}{' ...' if len(empty) > 10 else ''}: no input at all "
                         "(no prediction)")
        found = iter(self.predict_prepared([p for p in prepared if p is not None]))
        self._tell_unseen(read, shown=set(self.columns.input_columns))
        if notes:
            import warnings

            shown = "; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
            warnings.warn(MissingInputsWarning(f"predict on {where}: {len(notes)} cell(s) or row(s) treated as missing "
                                               f"(strict=True refuses them): {shown}"), stacklevel=2)
        return [None if p is None else next(found) for p in prepared]

    def _based(self, record: Any, base: str | os.PathLike) -> Any:
        """``record`` with each relative path of a file slot (image, audio, video) joined to ``base``."""
        if not isinstance(record, Mapping):
            return record
        out = dict(record)
        for name, slot in self.slots.items():
            raw = out.get(name)
            if isinstance(slot, (ImageSlot, AudioSlot, VideoSlot)) and isinstance(raw, (str, os.PathLike)) \
                    and not os.path.isabs(raw):
                out[name] = os.path.join(os.fspath(base), os.fspath(raw))
        return out

    def _tell_unseen(self, records: Sequence[Mapping[str, Any] | None], shown: set[str] | None = None) -> None:
        """One :class:`UnseenCategoriesWarning` per category column whose values ``records`` ({slot: raw})
        hold that the training split did not; ``shown``: the columns a user names (a fit run's columns
        derived from dates are its own business)."""
        counts: dict[str, int] = {}
        examples: dict[str, list[str]] = {}
        reasons: dict[str, str] = {}
        for record in records:
            if record is None:
                continue
            for name, slot in self.slots.items():
                raw = record.get(name)
                if raw is None or not isinstance(slot, TabularSlot):
                    continue
                for column, value in slot.unseen(raw).items():
                    if shown is not None and column not in shown:
                        continue
                    counts[column] = counts.get(column, 0) + 1
                    quoted = examples.setdefault(column, [])
                    if value not in quoted and len(quoted) < UNSEEN_EXAMPLES:
                        quoted.append(value)
                    reasons.setdefault(column, slot.unseen_reason(column))
        import warnings

        for column, count in counts.items():
            values = ", ".join(repr(v) for v in examples[column])
            if count == 1:
                line = f"column {column!r}: 1 record had a value {reasons[column]} ({values}); it was treated as unknown"
            else:
                line = (f"column {column!r}: {count} records had values {reasons[column]} (e.g. {values}); "
                        "they were treated as unknown")
            warnings.warn(UnseenCategoriesWarning(line), stacklevel=3)

    def _prepare_cells(self, record: Mapping[str, Any], index: int, strict: bool, notes: list[str]) -> dict[str, Any] | None:
        """A fit export's record ``{slot: raw or None}`` -> prepared items; a cell that cannot be decoded
        (an unreadable file) is missing, noted (``strict``: ColumnsError naming row and column)."""
        out: dict[str, Any] = {}
        for name, slot in self.slots.items():
            raw = record.get(name)
            try:
                out[name] = None if raw is None else slot.prepare(raw)
            except (ValueError, TypeError, OSError) as exc:
                column = ", ".join(repr(c) for c in self.columns.slot_columns(name))
                reason = exc.reason if isinstance(exc, FrontEndError) else str(exc)
                if strict:
                    raise ColumnsError(f"row {index + 1}, column {column}: {reason}", self.columns.slot_columns(name)[0]) from exc
                notes.append(f"row {index + 1}, column {column}: {reason}")
                out[name] = None
        return None if all(v is None for v in out.values()) else out

    def predict_prepared(self, prepared: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One result per prepared record, in graph calls of at most the manifest's ``max_batch`` records --
        one record a call where :attr:`per_record` (an output over pairs of records, a contrastive head's
        ``[B, B]``, keeps its records together)."""
        pairwise = any(list(o["shape"]).count("batch") > 1 for o in self.manifest["outputs"])
        step, out = 1 if self.per_record and not pairwise else int(self.manifest.get("max_batch", 1024)), []
        for start in range(0, len(prepared), step):
            chunk = prepared[start : start + step]
            out += self.results(self.run(self.collate(chunk), len(chunk)), chunk)
        return out


def load(folder: str | os.PathLike, *, graph: str | None = None, threads: int | None = None,
         spinning: bool = True) -> Artefact:
    """The export in ``folder``; ``graph`` picks another graph file of it (e.g. ``model.int8.onnx``);
    ``threads``: onnxruntime's intra-op threads; ``spinning=False``: its idle threads sleep at once rather
    than spin-wait (lower latency alone, but CPU taken from other threads of the process)."""
    return Artefact(folder, graph=graph, threads=threads, spinning=spinning)
