"""Images as a viewer shows them (mmcore_plugins.io.image), on real files written with Pillow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmcore_plugins.encoders.image import ImageProcessor, SmallCNNEncoder
from mmcore_plugins.io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    MediaError,
    check_media,
    looks_like_image,
    probe_image,
    read_image,
)


def strokes_mask(size: int = 24) -> np.ndarray:
    """A plus sign: True on the strokes."""
    mask = np.zeros((size, size), dtype=bool)
    mask[size // 2 - 2 : size // 2 + 2, 3:-3] = True
    mask[3:-3, size // 2 - 2 : size // 2 + 2] = True
    return mask


def rgba_strokes(mask: np.ndarray) -> np.ndarray:
    """Opaque black strokes on a transparent sheet whose hidden colour is black too (RGB 0 everywhere)."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(mask, 255, 0)
    return rgba


def assert_strokes_on_white(image: torch.Tensor, mask: np.ndarray) -> None:
    assert image.dtype == torch.float32 and image.shape[1:] == mask.shape
    values = image.numpy()
    assert values[:, mask].max() < 0.05, "the strokes must stay dark"
    assert values[:, ~mask].min() > 0.95, "the transparent background is shown white"


def test_rgba_png_with_transparent_black_background_keeps_its_strokes(tmp_path):
    mask = strokes_mask()
    Image.fromarray(rgba_strokes(mask), "RGBA").save(tmp_path / "strokes.png")
    grey = read_image(tmp_path / "strokes.png", channels=1)
    assert grey.shape == (1, 24, 24)
    assert_strokes_on_white(grey, mask)
    assert_strokes_on_white(read_image(str(tmp_path / "strokes.png"), channels=3), mask)
    # The image encoder's processor sees the same picture (normalised to [-1, 1]), not a blank one.
    pixels = ImageProcessor(image_size=24, channels=1)(tmp_path / "strokes.png")
    assert pixels[0][torch.from_numpy(mask)].mean() < -0.8 and pixels[0][torch.from_numpy(~mask)].mean() > 0.8


def test_background_option_picks_the_colour_behind_transparent_pixels(tmp_path):
    mask = strokes_mask()
    Image.fromarray(rgba_strokes(mask), "RGBA").save(tmp_path / "strokes.png")
    red = read_image(tmp_path / "strokes.png", channels=3, background=(255, 0, 0)).numpy()
    np.testing.assert_allclose(red[:, ~mask].mean(axis=1), [1.0, 0.0, 0.0], atol=1e-6)
    grey = read_image(tmp_path / "strokes.png", channels=1, background=(255, 0, 0)).numpy()
    np.testing.assert_allclose(grey[0, ~mask], 0.299, atol=1e-3)  # BT.601 luma of pure red
    processor = SmallCNNEncoder(dim=8, image_size=8, width=8, channels=3, background=[0, 0, 255]).processor()
    assert processor.background == (0, 0, 255)
    with pytest.raises(ValueError, match="background"):
        SmallCNNEncoder(dim=8, image_size=8, width=8, background=(300, 0, 0))
    with pytest.raises(ValueError, match="background"):
        read_image(tmp_path / "strokes.png", background="white")


def test_rgba_array_is_channels_last_and_composited_like_the_file(tmp_path):
    mask = strokes_mask(20)
    rgba = rgba_strokes(mask)
    assert_strokes_on_white(read_image(rgba, channels=1), mask)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "s.png")
    torch.testing.assert_close(read_image(rgba, channels=3), read_image(tmp_path / "s.png", channels=3))
    # The same picture as a channels-first tensor [4, H, W].
    chw = torch.from_numpy(rgba).permute(2, 0, 1).contiguous()
    torch.testing.assert_close(read_image(chw, channels=1), read_image(rgba, channels=1))


def test_16_bit_png_ramp_keeps_its_grey_levels(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 1024).round().astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert probe_image(tmp_path / "ramp.png").mode.startswith("I")
    image = read_image(tmp_path / "ramp.png", channels=1)[0]
    assert image.min().item() == 0.0 and image.max().item() == 1.0
    assert image.unique().numel() >= 1000, "a 16-bit ramp must not collapse to a few levels"
    np.testing.assert_allclose(image[0].numpy(), ramp[0] / 65535.0, atol=1e-6)
    assert (image[0].diff() > 0).all()
    # Big-endian 16-bit (I;16B) and a 16-bit TIFF give the same picture.
    torch.testing.assert_close(read_image(Image.fromarray(ramp.astype(">u2")), channels=1)[0], image)
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    torch.testing.assert_close(read_image(tmp_path / "ramp.tif", channels=1)[0], image)


def test_integer_arrays_are_scaled_by_their_dtype_range():
    levels = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(read_image(levels, channels=1)[0, 0].numpy(), levels[0] / 65535.0, atol=1e-6)
    np.testing.assert_allclose(read_image(levels.astype(np.int32) * 32768, channels=1)[0, 0].numpy(),
                               levels[0].astype(np.float64) * 32768 / (2**31 - 1), atol=1e-6)
    np.testing.assert_allclose(read_image(np.array([[0, 255]], dtype=np.uint8), channels=1)[0, 0].numpy(), [0, 1])
    assert read_image(np.array([[-5, 100]], dtype=np.int16), channels=1).min().item() == 0.0  # below 0: clipped
    with pytest.raises(TypeError, match="int64"):
        read_image(np.array([[0, 255]]), channels=1)  # Python ints default to int64: no pixel range


def test_32_bit_integer_and_float_tiffs_use_their_format_range(tmp_path):
    ramp = np.linspace(0, 2**31 - 1, 64).astype(np.int32).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "int32.tif")
    image = read_image(tmp_path / "int32.tif", channels=1)[0].numpy()
    np.testing.assert_allclose(image, ramp / (2**31 - 1), atol=1e-6)
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)

    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(unit).save(tmp_path / "float.tif")
    np.testing.assert_allclose(read_image(tmp_path / "float.tif", channels=1)[0].numpy(), unit, atol=1e-7)
    Image.fromarray(unit * 3 - 1).save(tmp_path / "wide.tif")  # documented: assumed in [0, 1], clipped
    wide = read_image(tmp_path / "wide.tif", channels=1)
    assert wide.min().item() == 0.0 and wide.max().item() == 1.0

    nan = unit.copy()
    nan[2, 3] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"nan\.tif.*NaN or infinite"):
        read_image(tmp_path / "nan.tif", channels=1)


def test_palette_with_transparency_and_la_show_strokes_on_white(tmp_path):
    mask = strokes_mask()
    indices = np.where(mask, 1, 0).astype(np.uint8)
    palette = Image.fromarray(indices, "P")
    palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black; entry 0 is transparent
    palette.save(tmp_path / "palette.png", transparency=0)
    palette.save(tmp_path / "palette.gif", transparency=0)
    assert probe_image(tmp_path / "palette.png").mode == "P"
    for name in ("palette.png", "palette.gif"):
        assert_strokes_on_white(read_image(tmp_path / name, channels=1), mask)

    # Grey and RGB PNGs whose tRNS chunk makes one colour transparent (black here, like the strokes).
    grey = np.where(mask, 10, 0).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey_trns.png", transparency=0)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "rgb_trns.png", transparency=(0, 0, 0))
    for name in ("grey_trns.png", "rgb_trns.png"):
        assert_strokes_on_white(read_image(tmp_path / name, channels=1), mask)

    la = np.zeros((*mask.shape, 2), dtype=np.uint8)
    la[..., 1] = np.where(mask, 255, 0)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert probe_image(tmp_path / "la.png").mode == "LA"
    assert_strokes_on_white(read_image(tmp_path / "la.png", channels=1), mask)
    assert_strokes_on_white(read_image(la, channels=3), mask)  # [H, W, 2]: grey + alpha


def test_cmyk_and_one_bit_images_give_the_viewers_colours(tmp_path):
    cmyk = np.zeros((4, 4, 4), dtype=np.uint8)
    cmyk[0, :, 0] = 255  # cyan
    cmyk[1, :, 1] = 255  # magenta
    cmyk[2, :, 2] = 255  # yellow
    cmyk[3, :, 3] = 255  # black
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.tif")
    rgb = read_image(tmp_path / "cmyk.tif", channels=3).numpy()
    expected = {0: [0, 1, 1], 1: [1, 0, 1], 2: [1, 1, 0], 3: [0, 0, 0]}
    for row, colour in expected.items():
        np.testing.assert_allclose(rgb[:, row, 0], colour, atol=1e-6)

    bits = np.indices((6, 6)).sum(0) % 2 == 0
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    assert probe_image(tmp_path / "bits.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png", channels=1)[0].numpy(), bits.astype(np.float32))


def test_exif_orientation_is_applied_as_a_viewer_shows_it(tmp_path):
    # Stored 16 wide x 8 high: left half black, right half white. EXIF orientation 6 says "rotate
    # 90 degrees clockwise to display": the viewer shows 8 wide x 16 high, black on top.
    stored = np.full((8, 16), 255, dtype=np.uint8)
    stored[:, :8] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "rotated.jpg", channels=1)[0]
    assert shown.shape == (16, 8)
    assert shown[:6].mean() < 0.1 and shown[10:].mean() > 0.9


def test_embedded_icc_profile_is_applied(tmp_path):
    from PIL import ImageCms

    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    Image.fromarray(rgb).save(tmp_path / "tagged.png", icc_profile=srgb)
    assert Image.open(tmp_path / "tagged.png").info.get("icc_profile")
    # An sRGB-tagged picture is shown as stored (up to the colour engine's rounding).
    torch.testing.assert_close(read_image(tmp_path / "tagged.png"), read_image(tmp_path / "plain.png"), atol=2 / 255, rtol=0)


def test_animated_gif_and_multipage_tiff_give_their_first_frame(tmp_path):
    black, white, grey = Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255), Image.new("L", (8, 8), 128)
    black.save(tmp_path / "anim.gif", save_all=True, append_images=[white, grey], duration=100, loop=0)
    black.save(tmp_path / "pages.tif", save_all=True, append_images=[white])
    assert probe_image(tmp_path / "anim.gif").frames == 3
    assert probe_image(tmp_path / "pages.tif").frames == 2
    for name in ("anim.gif", "pages.tif"):
        assert read_image(tmp_path / name, channels=1).max().item() == 0.0


def test_decompression_bomb_is_a_named_error(tmp_path, monkeypatch):
    Image.new("L", (40, 40), 0).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over the limit (a warning in Pillow)
    for call in (lambda: probe_image(tmp_path / "bomb.png"), lambda: read_image(tmp_path / "bomb.png"),
                 lambda: check_media(tmp_path / "bomb.png", "image")):
        with pytest.raises(ImageReadError, match=r"bomb\.png.*decompression-bomb"):
            call()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: Pillow's own error
    with pytest.raises(ImageReadError, match=r"bomb\.png.*decompression-bomb"):
        read_image(tmp_path / "bomb.png")


def test_non_finite_arrays_are_refused_through_the_processor():
    image = np.full((8, 8), 0.5, dtype=np.float32)
    image[1, 1] = np.nan
    processor = ImageProcessor(image_size=8, channels=1)
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        processor(image)
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor(torch.full((3, 8, 8), float("inf")))
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor(torch.full((8, 8), float("nan"), dtype=torch.bfloat16))
    # In range floats pass unchanged; out-of-range ones are clipped to [0, 1].
    np.testing.assert_allclose(read_image(np.array([[-0.5, 0.25, 2.0]], dtype=np.float32), channels=1)[0, 0],
                               [0.0, 0.25, 1.0])


def test_bad_files_are_named_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:-40])
    for name, message in [("notes.png", "not an image format"), ("folder.png", "folder"), ("missing.png", "no such file")]:
        with pytest.raises(ImageReadError, match=name.replace(".", r"\.") + ".*" + message):
            read_image(tmp_path / name)
        with pytest.raises(MediaError, match=name.replace(".", r"\.")):
            check_media(tmp_path / name, "image")
    probe_image(tmp_path / "cut.png")  # the header is intact ...
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        check_media(tmp_path / "cut.png", "image")  # ... but validation decodes the pixels


def test_grey_conversion_is_the_same_for_files_and_arrays(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    torch.testing.assert_close(read_image(rgb, channels=1), read_image(tmp_path / "rgb.png", channels=1), atol=3e-3, rtol=0)
    assert read_image(rgb[..., 0], channels=3).shape == (3, 6, 7)


def test_suffixes_and_sniffing_come_from_pillow(tmp_path):
    assert {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp"} <= IMAGE_SUFFIXES
    Image.new("RGB", (4, 4)).save(tmp_path / "no_suffix", format="PNG")
    (tmp_path / "text.dat").write_text("hello")
    assert looks_like_image(tmp_path / "no_suffix") and not looks_like_image(tmp_path / "text.dat")
    assert read_image(tmp_path / "no_suffix").shape == (3, 4, 4)


# ---------------------------------------------------------------------------- decoded pixels bounded (issue 28.8)
def test_max_side_box_averages_the_composited_picture_the_same_from_every_source(tmp_path):
    """An image four times larger than what the encoder uses is averaged down while it is converted;
    files, PIL images and arrays give the same tensor, equal to averaging the composited picture."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (203, 301, 4), dtype=np.uint8)
    rgba[:50, :, 3] = 0  # transparent: its hidden colour must not bleed into the average
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    from_file = read_image(str(tmp_path / "a.png"), max_side=16, background=(255, 255, 255))
    from_pil = read_image(Image.fromarray(rgba, "RGBA"), max_side=16, background=(255, 255, 255))
    from_array = read_image(rgba, max_side=16, background=(255, 255, 255))
    torch.testing.assert_close(from_file, from_pil)
    torch.testing.assert_close(from_file, from_array)
    # The reference: composite onto white at full size, then average 9 x 6 blocks (factors 301 // 32, 203 // 32).
    full = read_image(str(tmp_path / "a.png"), background=(255, 255, 255)).numpy()
    fy, fx = 203 // 32, 301 // 32
    rows, cols = np.arange(0, 203, fy), np.arange(0, 301, fx)
    sums = np.add.reduceat(np.add.reduceat(full, rows, axis=1), cols, axis=2)
    counts = np.diff(np.append(rows, 203))[:, None] * np.diff(np.append(cols, 301))[None, :]
    np.testing.assert_allclose(from_file.numpy(), sums / counts, atol=1e-5)
    assert from_file.shape == (3, len(rows), len(cols)) and min(from_file.shape[1:]) >= 32
    small = rgba[:60, :60]
    torch.testing.assert_close(read_image(small, max_side=16), read_image(small))  # under 4x: untouched


@pytest.mark.slow
def test_a_huge_png_within_pillows_limit_costs_about_its_decoded_bytes(tmp_path):
    """A 363 KB PNG of 89 million pixels took 4.8 GB: its pixels became floats at full size several times."""
    import json
    import subprocess
    import sys

    path = tmp_path / "big.png"
    side = 8000  # 64 million RGBA pixels (256 MB decoded), within Pillow's 89-million-pixel limit
    make = ("import sys\nfrom PIL import Image, ImageDraw\nim = Image.new('RGBA', (8000, 8000), (0, 0, 0, 0))\n"
            "ImageDraw.Draw(im).ellipse((1000, 1000, 7000, 7000), fill=(200, 40, 40, 255))\nim.save(sys.argv[1])")
    subprocess.run([sys.executable, "-c", make, str(path)], check=True, timeout=600)
    assert path.stat().st_size < 1_000_000
    probe = ("import json, resource, sys\nfrom mmcore_plugins.encoders.image import ImageProcessor\n"
             "processor = ImageProcessor(image_size=32, channels=3)\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nx = processor(sys.argv[1])\n"
             "print(json.dumps({'grew': (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024,"
             " 'shape': list(x.shape)}))")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=600)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    decoded = side * side * 4
    assert outcome["shape"] == [3, 32, 32]
    assert outcome["grew"] < 1.5 * decoded, f"{outcome['grew'] / 2**20:.0f} MiB for {decoded / 2**20:.0f} MiB of pixels"


@pytest.mark.parametrize(("name", "fmt"), [("x.png", "PNG"), ("x.jpg", "JPEG"), ("x.gif", "GIF"), ("x.bmp", "BMP")])
def test_a_known_signature_then_junk_says_the_format_and_pillows_reason(tmp_path, name, fmt):
    """A real file's first bytes, then junk: the error says which format its header is and why Pillow
    stops -- not that the header is none of the formats Pillow reads."""
    buffer = tmp_path / f"real.{fmt.lower()}"
    Image.new("RGB", (8, 8), "red").save(buffer, format=fmt)
    head = buffer.read_bytes()[:{"JPEG": 4, "BMP": 2}.get(fmt, 8)]
    path = tmp_path / name
    path.write_bytes(head + np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError, match=f"its header says {fmt}, but Pillow cannot decode it: .+") as info:
        probe_image(path)
    assert "none of" not in str(info.value) and name in str(info.value)
    other = tmp_path / "plain.png"
    other.write_bytes(b"hello, not an image at all" * 10)
    with pytest.raises(ImageReadError, match="not an image format Pillow reads"):
        probe_image(other)


def test_a_large_jpeg_read_for_a_small_model_is_decoded_at_a_reduced_scale(tmp_path):
    """A phone-sized JPEG read with max_side: libjpeg decodes it at 1/8 scale (not below 2 * max_side),
    then the box-average as for any image; a file and an upload give the same tensor; other formats
    (PNG) and reads without max_side decode every pixel."""
    import io

    y, x = np.mgrid[0:800, 0:1200]
    picture = np.stack([(np.sin(x / 150) + 1) * 120, (np.cos(y / 120) + 1) * 120, x / 1200 * 255], -1).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "photo.jpg", quality=92)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    with Image.open(tmp_path / "photo.jpg") as img:
        img.draft("RGB", (32, 32))  # the scale libjpeg picks for max_side 16: 1/8, 150 x 100
        assert img.size == (150, 100)
        img.load()
        expected = read_image(img.copy(), max_side=16)
    got = read_image(tmp_path / "photo.jpg", max_side=16)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(read_image(io.BytesIO((tmp_path / "photo.jpg").read_bytes()), max_side=16), got, rtol=0, atol=0)
    assert got.shape == (3, 34, 38)  # 100 x 150 box-averaged by 3 x 4 (keeps >= 2 * max_side = 32)
    full = read_image(tmp_path / "photo.jpg")
    assert full.shape == (3, 800, 1200), "no max_side: every pixel"
    assert read_image(tmp_path / "photo.png", max_side=16).shape == (3, 32, 33)  # 800 x 1200 by 25 x 37
    small = torch.nn.functional.interpolate(got[None], size=(16, 16), mode="bilinear", antialias=True)
    reference = torch.nn.functional.interpolate(full[None], size=(16, 16), mode="bilinear", antialias=True)
    assert (small - reference).abs().mean() < 0.02, "the same picture at the model's size"
