"""``probe_image`` (what ``validate: header`` runs on every image of a manifest) reads the first
``HEAD_BYTES`` of a file in one call and gives Pillow the suffix's format first (issue 26: a million
header checks at start-up). Whatever path it takes, its verdict must be Pillow's own full open's:
the same size, mode, frame count and format, or the same error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmcore_plugins.io import ImageReadError, probe_image
from mmcore_plugins.io.image import HEAD_BYTES, ImageInfo, _probe_head


def pillow_says(path) -> ImageInfo:
    """The reference: Pillow opening the file itself, every format asked, no hint."""
    with Image.open(path) as img:
        return ImageInfo(width=img.size[0], height=img.size[1], mode=img.mode,
                         frames=int(getattr(img, "n_frames", 1) or 1), format=str(img.format))


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def frames(count: int, side: int) -> list[Image.Image]:
    return [Image.fromarray(noise(side, side, seed=k)) for k in range(count)]


def write_cases(folder) -> dict[str, bool]:
    """File name -> whether the first HEAD_BYTES alone should decide it (the fast path taken)."""
    cases: dict[str, bool] = {}
    Image.fromarray(noise(32, 32)).save(folder / "small.png")
    cases["small.png"] = True
    Image.fromarray(noise(300, 300)).save(folder / "large.png")  # pixels past HEAD_BYTES, header before
    cases["large.png"] = True
    Image.fromarray(noise(20, 30, channels=1)).save(folder / "grey.png")
    cases["grey.png"] = True
    text = Image.fromarray(noise(40, 40))
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (2 * HEAD_BYTES))  # a header longer than what is read at once
    text.save(folder / "long_text_chunk.png", pnginfo=info)
    cases["long_text_chunk.png"] = False
    first, *rest = frames(3, 200)
    first.save(folder / "animated.png", save_all=True, append_images=rest)  # APNG: acTL in the header
    cases["animated.png"] = True
    Image.fromarray(noise(64, 48)).save(folder / "photo.jpg", quality=90)
    cases["photo.jpg"] = True
    exif = Image.Exif()
    exif[0x010E] = "d" * 60_000  # ImageDescription: an EXIF block near its 64 KiB limit
    exif[0x0112] = 6
    Image.fromarray(noise(500, 400)).save(folder / "exif.jpg", exif=exif, quality=95)
    cases["exif.jpg"] = True
    with io.BytesIO() as buf:  # two APP segments past HEAD_BYTES before the frame header
        Image.fromarray(noise(16, 16)).save(buf, format="JPEG", icc_profile=b"\0" * (HEAD_BYTES + 5000))
        (folder / "long_icc.jpg").write_bytes(buf.getvalue())
    cases["long_icc.jpg"] = False
    first, *rest = frames(4, 150)
    first.save(folder / "animated.gif", save_all=True, append_images=rest)  # > HEAD_BYTES: counted by reading
    cases["animated.gif"] = False
    first, *rest = frames(2, 8)
    first.save(folder / "tiny.gif", save_all=True, append_images=rest)  # whole in HEAD_BYTES
    cases["tiny.gif"] = True
    first, *rest = frames(3, 160)
    first.save(folder / "pages.tif", save_all=True, append_images=rest)
    cases["pages.tif"] = False
    first, *rest = frames(3, 16)
    first.save(folder / "anim.webp", save_all=True, append_images=rest, lossless=True)
    cases["anim.webp"] = True
    Image.fromarray(noise(300, 300)).save(folder / "big.bmp")
    cases["big.bmp"] = True
    Image.fromarray(noise(10, 12, channels=1)).save(folder / "grey.ppm")
    cases["grey.ppm"] = True
    Image.fromarray(noise(20, 20)).save(folder / "png_named.jpg", format="PNG")  # named for another format
    cases["png_named.jpg"] = False
    Image.fromarray(noise(20, 20)).save(folder / "jpeg_named.png", format="JPEG")
    cases["jpeg_named.png"] = False
    Image.fromarray(noise(20, 20)).save(folder / "UPPER.PNG")
    cases["UPPER.PNG"] = True
    Image.fromarray(noise(20, 20)).save(folder / "no_suffix", format="PNG")  # sniffed, not named
    cases["no_suffix"] = False
    return cases


def test_every_path_gives_pillows_own_verdict(tmp_path):
    cases = write_cases(tmp_path)
    for name, fast in cases.items():
        path = tmp_path / name
        assert probe_image(path) == pillow_says(path), name
        assert probe_image(str(path)) == pillow_says(path), name
        assert (_probe_head(path) is not None) == fast, name  # the one-read path is taken where it can decide


def test_the_frame_counts_are_the_whole_files(tmp_path):
    write_cases(tmp_path)
    assert {name: probe_image(tmp_path / name).frames for name in
            ("animated.png", "animated.gif", "tiny.gif", "pages.tif", "anim.webp", "small.png")} == {
        "animated.png": 3, "animated.gif": 4, "tiny.gif": 2, "pages.tif": 3, "anim.webp": 3, "small.png": 1}


@pytest.mark.parametrize("cut", [0, 8, 20, 33, 40, 60])
def test_a_truncated_png_is_judged_as_pillows_full_open_judges_it(tmp_path, cut):
    Image.fromarray(noise(32, 32)).save(tmp_path / "whole.png")
    path = tmp_path / "cut.png"
    path.write_bytes((tmp_path / "whole.png").read_bytes()[:cut])
    try:
        expected = pillow_says(path)
    except Exception:  # noqa: BLE001 (whatever Pillow raises: probe_image must refuse it too, by name)
        assert _probe_head(path) is None
        with pytest.raises(ImageReadError, match=r"cannot read image '.*cut\.png'"):
            probe_image(path)
    else:  # cut inside the pixels: the header is whole, which is all a header check reads
        assert cut > 33
        assert probe_image(path) == expected


@pytest.mark.parametrize("cut", [2, 100, 2000])
def test_a_truncated_jpeg_header_never_passes_or_hangs(tmp_path, cut):
    exif = Image.Exif()
    exif[0x010E] = "d" * 5000
    Image.fromarray(noise(64, 64)).save(tmp_path / "whole.jpg", exif=exif)
    path = tmp_path / "cut.jpg"
    path.write_bytes((tmp_path / "whole.jpg").read_bytes()[:cut])  # cut inside the markers, before the frame
    assert _probe_head(path) is None
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        probe_image(path)


def test_not_an_image_and_no_pixels_keep_their_messages(tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all\n")
    with pytest.raises(ImageReadError, match="not an image format Pillow reads"):
        probe_image(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match="no such file"):
        probe_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")  # an interrupted copy: said as empty, not as an unknown format
    with pytest.raises(ImageReadError, match=r"'.*empty\.png': the file is empty \(0 bytes\)"):
        probe_image(tmp_path / "empty.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageReadError, match="folder"):
        probe_image(tmp_path / "folder.png")


def test_a_bomb_is_refused_on_the_one_read_path_too(tmp_path, monkeypatch):
    Image.fromarray(noise(64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert _probe_head(tmp_path / "bomb.png") is None  # Pillow's warning, turned into an error, is no verdict
    with pytest.raises(ImageReadError, match="decompression-bomb"):
        probe_image(tmp_path / "bomb.png")
