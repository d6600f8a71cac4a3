"""Images -> float tensors ``[C, H, W]`` in [0, 1], as an image viewer shows them (through Pillow).

What the model sees, per kind of input:

* **Alpha** (RGBA, LA, palette or grey/RGB with a transparency entry): composited onto ``background``
  (default white, as viewers and browsers show a transparent PNG), so strokes drawn on a
  transparent sheet stay visible whatever the hidden colour of the transparent pixels.
* **Bit depth**: 8-bit modes are divided by 255; 16-bit (``I;16``, ``I;16B``, 16-bit TIFF/PNG) by
  65535; 32-bit integer TIFFs by their format's range (``BitsPerSample``/``SampleFormat`` tags;
  signed values below 0 clipped to 0); 32-bit float TIFFs (mode ``F``) are taken as already in
  [0, 1] and clipped to it, and refused when they hold NaN or infinity.
* **CMYK, YCbCr, LAB, 1-bit, palette**: converted to RGB/grey by Pillow; an embedded ICC profile is
  applied (converted to sRGB) as colour-managed viewers do.
* **EXIF orientation**: applied (``ImageOps.exif_transpose``): the picture is upright as shown.
* **Animated GIF/WebP/PNG, multi-page TIFF**: the first frame only.
* **Decompression bombs**: an image with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's
  limit, about 89 million by default; change it there to allow more) is refused with
  :class:`ImageReadError` before it is decoded.
* **Memory**: pixels become floats a strip of rows at a time. Given ``max_side`` (the side the
  caller resizes to: an encoder's ``image_size``), an image at least four times larger on an axis
  is box-averaged by an integer factor per axis while it is converted (keeping at least twice
  ``max_side`` per axis; colour premultiplied by alpha, so the hidden colour of transparent pixels
  does not bleed in -- exactly what averaging the composited picture gives). Reading an image then
  costs about its decoded bytes (Pillow's buffer, at most a few bytes per pixel) rather than some
  50 bytes per pixel (a 363 KB PNG of 89 million pixels took 4.8 GB). Files, PIL images and arrays
  go through the same conversion and give the same tensor -- except a JPEG file or upload read with
  ``max_side``, which libjpeg decodes at 1/2, 1/4 or 1/8 scale (``PIL.Image.draft``; never below
  ``2 * max_side`` per axis) before the box-average: the same picture within JPEG's own error, at a
  fraction of the time and memory.
* **Grey output** (``channels=1``): ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (Pillow's
  ``convert("L")``), for files and arrays alike; **RGB output** of a grey image repeats it.

Arrays and tensors: ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with ``C`` in {1, 2, 3, 4} (2 = grey +
alpha, 4 = RGBA, composited like files). When both the first and last axis could be channels
(e.g. ``[3, 8, 4]``), numpy arrays are read channels-last (the numpy/Pillow convention) and torch
tensors channels-first (the torch convention). ``uint8``/``uint16``/``uint32`` are divided by their
maximum, ``int8``/``int16``/``int32`` by theirs (negative values clipped to 0), ``bool`` is 0/1,
floats must be finite and are clipped to [0, 1]. ``int64`` (what Python lists and
``torch.tensor([...])`` default to) has no image range and is refused: give ``uint8`` (0..255) or
floats in [0, 1].
"""

from __future__ import annotations

import functools
import io
import os
import stat
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmcore_plugins.io.errors import ImageReadError, describe, is_empty_file, not_a_regular_file

__all__ = ["IMAGE_SUFFIXES", "ImageInfo", "check_background", "verify_image", "looks_like_image", "probe_image", "read_image"]


@functools.cache
def _image_suffixes() -> frozenset[str]:
    from PIL import Image

    Image.init()  # load every format plugin Pillow ships, so the registry is complete
    readable = set(Image.OPEN)
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in readable)


@functools.cache
def _suffix_formats() -> dict[str, str]:
    """Lower-case suffix -> the Pillow format registered for it (".png" -> "PNG"), readable formats only."""
    from PIL import Image

    Image.init()
    return {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


#: Declared for type checkers and ``__all__``; the value comes from ``__getattr__`` below.
IMAGE_SUFFIXES: frozenset[str]


def __getattr__(name: str):
    # IMAGE_SUFFIXES: the file suffixes (lower case, with the dot) of every format the installed
    # Pillow can open. Computed on first use (PEP 562) because asking Pillow imports it, and plugin
    # discovery must not import heavy libraries.
    if name == "IMAGE_SUFFIXES":
        return _image_suffixes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says: ``width`` x ``height`` pixels, Pillow ``mode``, ``frames``
    (1 unless animated / multi-page; only the first is read) and ``format`` (Pillow's name, e.g. "PNG")."""

    width: int
    height: int
    mode: str
    frames: int
    format: str


def _open(path: str | os.PathLike | io.IOBase):
    """``PIL.Image.open`` with Pillow's decompression-bomb warning turned into a named error."""
    from PIL import Image, UnidentifiedImageError

    stream = isinstance(path, io.IOBase)  # an upload's bytes: the same checks, no file name
    name = "(the given stream)" if stream else describe(path)
    where = None if stream else path
    problem = None if stream else not_a_regular_file(path)
    if problem is not None:  # a FIFO would block Image.open for ever
        raise ImageReadError(f"cannot read image {name}: {problem}" + (", expected an image file" if "folder" in problem else ""),
                             path=path)
    # The format the suffix names is tried first: once every plugin is loaded Pillow asks ~40 formats in
    # turn whether a file is theirs (PNG is the 18th), ~10 us a file -- a tenth of a header check. A file
    # named for another format is then opened as before, every format asked.
    hint = None if stream else _suffix_formats().get(os.path.splitext(path)[1].lower())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if hint is not None:
                try:
                    return Image.open(path, formats=(hint,))
                except UnidentifiedImageError:
                    pass
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"cannot read image {name}: too large to decode safely (decompression-bomb limit): {exc} "
                             f"(raise PIL.Image.MAX_IMAGE_PIXELS to allow it)", path=where) from exc
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {name}: no such file", path=where) from exc
    except UnidentifiedImageError as exc:
        if not stream and is_empty_file(path):
            raise ImageReadError(f"cannot read image {name}: the file is empty (0 bytes)", path=where) from exc
        known = _recognised_format(path)
        if known is not None:  # a known signature, then damage: say so, with Pillow's reason
            raise ImageReadError(f"cannot read image {name}: its header says {known[0]}, but Pillow cannot decode it: {known[1]}",
                                 path=where) from exc
        raise ImageReadError(f"cannot read image {name}: not an image format Pillow reads (its header is none of "
                             f"PNG, JPEG, GIF, BMP, TIFF, WebP, ...)", path=where) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises these three for damaged headers
        known = _recognised_format(path)
        what = f"its header says {known[0]}, but Pillow cannot decode it: " if known is not None else ""
        raise ImageReadError(f"cannot read image {name}: {what}{exc}", path=where) from exc


def _recognised_format(path: str | os.PathLike | io.IOBase) -> tuple[str, str] | None:
    """``(format, Pillow's reason)`` for a file whose first bytes one of Pillow's format plugins accepts
    (its own signature check, ``Image.OPEN``'s accept function) but which that plugin cannot open; None
    when no plugin recognises the signature. Pillow's ``open`` hides the plugin's error behind "cannot
    identify image file": opening with the recognising plugin alone gives it back."""
    from PIL import Image

    try:
        if isinstance(path, io.IOBase):
            path.seek(0)
            prefix, fh, own = path.read(16), path, False
        else:
            fh, own = open(path, "rb"), True  # noqa: SIM115 (closed below)
            prefix = fh.read(16)
    except (OSError, ValueError):
        return None
    try:
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            try:
                if accept is None or not accept(prefix) or isinstance(accept(prefix), str):
                    continue
            except Exception:  # noqa: BLE001 (a plugin's own check failing is no recognition)
                continue
            try:
                fh.seek(0)
                factory(fh, None if isinstance(path, io.IOBase) else os.fspath(path)).close()
            except Exception as exc:  # noqa: BLE001 (Pillow's plugins raise many kinds; the text is the reason)
                return fmt, (str(exc).strip() or type(exc).__name__)
            return fmt, "its data are damaged"
        return None
    finally:
        if own:
            fh.close()


def looks_like_image(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file with an image suffix, or whose header Pillow identifies."""
    if not os.path.isfile(path):
        return False
    if os.path.splitext(os.fspath(path))[1].lower() in _image_suffixes():
        return True
    try:
        with _open(path):
            return True
    except ImageReadError:
        return False


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Read only the header of the image file ``path`` (one open; no pixel is decoded).

    Raises :class:`ImageReadError` naming the file when it is missing, a folder, not an image,
    damaged in its header, empty (0 pixels) or over Pillow's decompression-bomb limit.
    """
    if not isinstance(path, io.IOBase):
        info = _probe_head(path)
        if info is not None:
            return info
    with _open(path) as img:
        return _header(img, path)


#: Bytes read for a header check in one system call: a PNG's chunks before its pixels and a JPEG's markers
#: up to its frame header (an EXIF block is at most 64 KiB) fit in them for most files; small files whole.
HEAD_BYTES = 65536
#: Formats whose header check reads nothing past the header (the frame count included): their first
#: HEAD_BYTES decide even when the file is longer. Others (GIF counts its frames by reading them all, TIFF
#: walks its pages, WebP hands the whole file to libwebp) are decided from memory only when all of it fitted.
_HEADER_FIRST = frozenset({"PNG", "JPEG", "BMP", "PPM"})


def _probe_head(path: str | os.PathLike) -> ImageInfo | None:
    """:func:`probe_image`'s verdict from the file's first :data:`HEAD_BYTES`, read with one ``os.read``
    and given to Pillow in memory with the format the suffix names: about two thirds of the cost of
    opening the file through Pillow (a validated manifest checks a million of them). None whenever that
    cannot decide -- no known suffix, not a regular file, the header longer than what was read, the file
    not of the suffix's format, any error -- and :func:`probe_image` opens the file as before, which also
    words every error."""
    from PIL import Image

    fmt = _suffix_formats().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a device is never opened here
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # NONBLOCK: swapped for a FIFO since, still no wait
    except (OSError, ValueError, TypeError):
        return None
    try:
        head = os.read(fd, HEAD_BYTES)  # a regular file reads short only at its end: then it is all here
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(head) >= HEAD_BYTES and fmt not in _HEADER_FIRST:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head), formats=(fmt,)) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    return None
                return ImageInfo(width=width, height=height, mode=img.mode, frames=int(getattr(img, "n_frames", 1) or 1),
                                 format=str(img.format))
    except Exception:  # noqa: BLE001 (any doubt -- a short read, a misnamed file, a bomb: the full open decides)
        return None


def _header(img, path: str | os.PathLike) -> ImageInfo:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageReadError(f"cannot read image {describe(path)}: it has no pixels ({width} x {height})", path=path)
    return ImageInfo(width=width, height=height, mode=img.mode, frames=int(getattr(img, "n_frames", 1) or 1),
                     format=str(img.format))


def verify_image(path: str | os.PathLike) -> ImageInfo:
    """:func:`probe_image`, then decode the first frame's pixels (at most Pillow's decompression-bomb
    limit of them): catches truncated or corrupt files whose header is intact. The file is opened
    once: the header is checked on the open image before its pixels are decoded. Raises ImageReadError."""
    from PIL import Image

    with _open(path) as img:
        info = _header(img, path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, ValueError, ...
            raise ImageReadError(f"cannot read image {describe(path)}: decoding failed ({exc})", path=path) from exc
    return info


def _check_channels(channels: int | None) -> None:
    if channels not in (1, 3, None):
        raise ValueError(f"channels must be 1 (grey), 3 (RGB) or None (the image's own), got {channels!r}")


def check_background(background: Any) -> np.ndarray:
    """``background`` (an int grey level or an ``(R, G, B)`` triple, 0..255) -> float RGB in [0, 1].

    Raises ``ValueError`` naming the option for anything else.
    """
    values = [background] * 3 if isinstance(background, (int, float)) else list(background)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in values):
        raise ValueError(f"background must be a grey level or an (R, G, B) triple of values in 0..255, got {background!r}")
    return np.asarray(values, dtype=np.float32) / 255.0


def _int_range(dtype: np.dtype, bits: int | None = None) -> tuple[float, bool]:
    """The full-scale value of an integer sample type and whether it is signed."""
    info = np.iinfo(dtype)
    signed = info.min < 0
    if bits is not None:
        return float(2 ** (bits - 1) - 1 if signed else 2**bits - 1), signed
    return float(info.max), signed


def _pil_bits(img) -> tuple[int | None, bool | None]:
    """Bits per sample and signedness of a 32-bit-mode ("I") image's source format, when it says."""
    if img.format == "PNG":  # PNG has no signed or 32-bit samples: an "I" PNG is 16-bit grey
        return 16, False
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)
        bits = int(bits[0] if isinstance(bits, tuple) else bits) if bits else None
        fmt = tags.get(339)
        fmt = int(fmt[0] if isinstance(fmt, tuple) else fmt) if fmt else 1
        return bits, fmt == 2
    return None, None


class _Source:
    """Pixels to be converted: ``height`` x ``width``, ``rows(y0, y1)`` -> float32 ``[y1 - y0, width, C]``
    in [0, 1] (alpha last when ``alpha``), read a strip at a time so that no full-size float copy is made."""

    def __init__(self, height: int, width: int, rows, alpha: bool) -> None:
        self.height, self.width, self.rows, self.alpha = height, width, rows, alpha


def _pil_source(img, name: str, path: Any) -> _Source:
    """A PIL image (decoded) -> a :class:`_Source` with the semantics of the module docstring."""
    from PIL import ImageOps

    try:
        # A viewer shows the picture upright. exif_transpose copies the image even when there is
        # nothing to turn: asked only when the orientation tag says so.
        if img.getexif().get(0x0112, 1) not in (1, None):
            img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the pixels are still the picture
        pass
    img = _to_srgb(img)
    mode = img.mode
    width, height = img.size

    def strip(image, y0: int, y1: int, convert: str | None = None) -> np.ndarray:
        part = image.crop((0, y0, width, y1)) if (y0, y1) != (0, height) else image
        return np.asarray(part.convert(convert) if convert is not None and part.mode != convert else part)

    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _Source(height, width, lambda y0, y1: (strip(img, y0, y1).astype(np.float32) / 65535.0)[..., None], False)
    if mode in ("I", "I;32", "I;16S", "I;32S"):
        bits, signed = _pil_bits(img)
        sample = np.asarray(img.crop((0, 0, 1, 1)))
        full, dtype_signed = _int_range(sample.dtype, bits)
        clip_negative = signed if signed is not None else dtype_signed

        def int_rows(y0: int, y1: int) -> np.ndarray:
            values = strip(img, y0, y1).astype(np.float64)
            if clip_negative:
                values = np.clip(values, 0, None)
            return np.clip(values / full, 0.0, 1.0).astype(np.float32)[..., None]

        return _Source(height, width, int_rows, False)
    if mode == "F":
        def float_rows(y0: int, y1: int) -> np.ndarray:
            data = strip(img, y0, y1).astype(np.float32)
            if not np.isfinite(data).all():
                raise ImageReadError(f"cannot read image {name}: it holds NaN or infinite values (a float image must be "
                                     f"finite, in [0, 1])", path=path)
            return np.clip(data, 0.0, 1.0)[..., None]

        return _Source(height, width, float_rows, False)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or img.has_transparency_data
    grey = mode in ("1", "L", "LA", "La", "I;16", "I") or (mode == "P" and img.palette is not None and img.palette.mode == "L")
    if has_alpha:
        target = "LA" if grey else "RGBA"
    else:
        target = "L" if grey else "RGB"
    def byte_rows(y0: int, y1: int) -> np.ndarray:  # converted a strip at a time: no full-size copy
        data = strip(img, y0, y1, target).astype(np.float32) / 255.0
        return data[..., None] if data.ndim == 2 else data

    return _Source(height, width, byte_rows, has_alpha)


#: Float values converted per strip (16 MB of float32).
_STRIP_VALUES = 1 << 22


def _convert(source: _Source, max_side: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A :class:`_Source` -> (float32 ``[H, W, C]``, alpha ``[H, W]`` or None), box-averaged for
    ``max_side`` (module docstring) strip by strip."""
    height, width = source.height, source.width
    fx = max(1, width // (2 * max_side)) if max_side else 1
    fy = max(1, height // (2 * max_side)) if max_side else 1
    if fx < 2 and fy < 2:
        data = source.rows(0, height)
        return (data[..., :-1], data[..., -1]) if source.alpha else (data, None)
    # Rows per strip: a multiple of fy holding at most _STRIP_VALUES floats (at most 4 channels).
    step = max(fy, (_STRIP_VALUES // (4 * width)) // fy * fy)
    columns = np.arange(0, width, fx)
    col_counts = np.diff(np.append(columns, width)).astype(np.float32)
    parts = []
    for y0 in range(0, height, step):
        data = source.rows(y0, min(height, y0 + step))
        if source.alpha:  # premultiplied: the average of composited pixels, whatever the background
            data[..., :-1] *= data[..., -1:]
        rows = np.arange(0, data.shape[0], fy)
        row_counts = np.diff(np.append(rows, data.shape[0])).astype(np.float32)
        sums = np.add.reduceat(np.add.reduceat(data, rows, axis=0), columns, axis=1)
        parts.append(sums / (row_counts[:, None, None] * col_counts[None, :, None]))
    out = np.concatenate(parts)
    if not source.alpha:
        return out, None
    alpha = out[..., -1]
    colour = np.divide(out[..., :-1], alpha[..., None], out=np.zeros_like(out[..., :-1]), where=alpha[..., None] > 0)
    return colour, alpha


@functools.lru_cache(maxsize=1)
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(img):
    """Apply an embedded ICC profile (convert to sRGB), as colour-managed viewers do; else unchanged."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return img
    try:
        import io

        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if img.mode in ("L", "LA"):
            return img  # a grey profile changes only the tone curve slightly; keep the stored levels
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(img, source, _srgb_profile(), outputMode=out_mode)
        return converted if converted is not None else img
    except Exception:  # noqa: BLE001 - a broken or unsupported profile: show the stored values, as viewers do
        return img


def _array_source(raw: Any) -> _Source:
    """An array / tensor image -> a :class:`_Source` of float32 ``[H, W, C]`` rows in [0, 1] (alpha last)."""
    is_tensor = isinstance(raw, torch.Tensor)
    if is_tensor:
        data = raw.detach().cpu()
        data = (data.float() if data.dtype in (torch.bfloat16, torch.float16) else data).numpy()  # numpy has no bfloat16
    else:
        try:
            data = np.asarray(raw)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"an image must be a path, PIL image, array or tensor, got {type(raw).__name__}") from exc
    if data.dtype == object or data.dtype.kind not in "biuf":
        raise TypeError(f"an image must be a path, PIL image, array or tensor of numbers, got {type(raw).__name__} "
                        f"of dtype {data.dtype}")
    shape = list(data.shape)
    if data.ndim == 2:
        data = data[..., None]
    elif data.ndim == 3:
        first, last = data.shape[0] in (1, 2, 3, 4), data.shape[-1] in (1, 2, 3, 4)
        if first and (not last or is_tensor):
            data = np.moveaxis(data, 0, -1)
        elif not last:
            raise ValueError(f"an image array must be [H, W], [H, W, C] or [C, H, W] with C in 1..4, got shape {shape}")
    else:
        raise ValueError(f"an image array must be [H, W], [H, W, C] or [C, H, W], got shape {shape}")
    if 0 in data.shape:
        raise ValueError(f"an image array must hold pixels, got shape {shape}")
    kind = data.dtype.kind
    if kind in "iu" and data.dtype.itemsize > 4:
        raise TypeError(f"an image array of dtype {data.dtype} has no pixel range; give uint8 (0..255), uint16 "
                        f"(0..65535) or floats in [0, 1]")
    if kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ImageReadError(f"an image array must hold finite values, got {bad} NaN or infinite value(s)")
    full, signed = _int_range(data.dtype) if kind in "iu" else (1.0, False)

    def rows(y0: int, y1: int) -> np.ndarray:
        part = data[y0:y1]
        if kind == "b":
            return part.astype(np.float32)
        if kind in "iu":
            values = part.astype(np.float64)
            if signed:
                values = np.clip(values, 0, None)
            return (values / full).astype(np.float32)
        return np.clip(part.astype(np.float32), 0.0, 1.0)

    return _Source(data.shape[0], data.shape[1], rows, data.shape[-1] in (2, 4))


def read_image(raw: Any, *, channels: int | None = 3, background: Any = (255, 255, 255),
               max_side: int | None = None) -> torch.Tensor:
    """An image -> ``torch.float32`` tensor ``[channels, H, W]`` with values in [0, 1].

    ``raw``: a path (``str`` or ``os.PathLike``), a binary file object (e.g. ``io.BytesIO`` of an
    upload: read with the same checks and limits as a file), a ``PIL.Image.Image``, or a numpy array / torch
    tensor (see the module docstring for shapes and dtypes). ``channels``: 1 (grey, BT.601 luma),
    3 (RGB) or None (the image's own: 1 for grey images, 3 for colour). ``background``: the colour transparent pixels are composited onto, an ``(R, G, B)``
    triple or a grey level in 0..255 (default white). ``max_side``: the side the caller resizes to;
    an image four or more times larger on an axis comes back box-averaged on that axis to at least
    ``2 * max_side`` (module docstring: the memory bound), not at its full size.

    Raises :class:`ImageReadError` (a ``ValueError``) naming the file for unreadable, damaged or
    oversized files and for non-finite values; ``TypeError`` for values that are not images.
    """
    _check_channels(channels)
    bg = check_background(background)
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    if isinstance(raw, (str, os.PathLike, io.IOBase)):
        from PIL import Image

        name = "(the given stream)" if isinstance(raw, io.IOBase) else describe(raw)
        img = _open(raw)
        try:
            with img:
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # animated / multi-page: the first frame, documented
                if max_side is not None and img.format == "JPEG" and img.mode in ("RGB", "L"):
                    # A phone photo (12-48 megapixels) read for a 64-224 px model: libjpeg decodes at 1/2,
                    # 1/4 or 1/8 scale in its inverse DCT, never below 2 * max_side per axis (the bound the
                    # box-average keeps), instead of decoding every pixel and averaging most of them away.
                    # Every reader (training, predict, serve) goes through here: they see the same pixels.
                    img.draft(img.mode, (2 * max_side, 2 * max_side))
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    img.load()
                rgb, alpha = _convert(_pil_source(img, name, None if isinstance(raw, io.IOBase) else raw), max_side)
        except ImageReadError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageReadError(f"cannot read image {name}: decoding failed ({exc})",
                                 path=None if isinstance(raw, io.IOBase) else raw) from exc
    elif type(raw).__module__.startswith("PIL."):  # checked by module: PIL is imported lazily
        rgb, alpha = _convert(_pil_source(raw, "given as a PIL image", None), max_side)
    else:
        rgb, alpha = _convert(_array_source(raw), max_side)
    if alpha is not None:
        if rgb.shape[-1] == 1 and not (bg == bg[0]).all():
            rgb = np.repeat(rgb, 3, axis=-1)  # grey strokes on a coloured background: an RGB picture
        colour = bg[:1] if rgb.shape[-1] == 1 else bg
        rgb = rgb * alpha[..., None] + colour * (1.0 - alpha[..., None])
    if channels == 1 and rgb.shape[-1] == 3:
        rgb = rgb @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
    elif channels == 3 and rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    out = torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, -1, 0), dtype=np.float32))
    return out.clamp_(0.0, 1.0)
