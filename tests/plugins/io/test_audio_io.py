"""Audio through libsndfile (mmcore_plugins.io.audio), on real files written with soundfile or crafted with struct.

(Named test_audio_io.py: tests/plugins/encoders/test_audio.py already holds the basename
test_audio.py, and the test folders are not packages.)
"""

from __future__ import annotations

import math
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from mmcore_plugins.encoders.audio import LogMelProcessor
from mmcore_plugins.io import (
    AUDIO_SUFFIXES,
    AudioReadError,
    MediaError,
    check_media,
    load_audio,
    looks_like_audio,
    probe_audio,
    read_audio,
    resample,
)


def tone(rate: int, seconds: float = 0.5, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * math.pi * hz * t)).astype(np.float64)


def peak_hz(wav: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wav * torch.hann_window(len(wav))).abs()
    return spectrum.argmax().item() * rate / len(wav)


def format_tag(path) -> int:
    """The WAVE format tag of a canonical RIFF header (byte 20): 1 PCM, 3 float, 6 A-law, 7 mu-law, 0xFFFE extensible."""
    return struct.unpack("<H", path.read_bytes()[20:22])[0]


# subtype -> (largest error against the written tone, expected WAVE format tag)
WAV_SUBTYPES = {
    "PCM_U8": (1 / 100, 1), "PCM_16": (1e-4, 1), "PCM_24": (1e-6, 1), "PCM_32": (1e-7, 1),
    "FLOAT": (1e-7, 3), "DOUBLE": (1e-7, 3), "ULAW": (0.02, 7), "ALAW": (0.02, 6),
}


@pytest.mark.parametrize("subtype", sorted(WAV_SUBTYPES))
def test_every_wav_subtype_is_read(tmp_path, subtype):
    path = tmp_path / f"tone_{subtype}.wav"
    x = tone(8000)
    sf.write(path, x, 8000, subtype=subtype, format="WAV")
    tolerance, tag = WAV_SUBTYPES[subtype]
    assert format_tag(path) == tag  # e.g. 3: the 32-bit float WAV the old reader refused ("unknown format: 3")
    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.frames, info.subtype) == (8000, 1, len(x), subtype)
    wav = read_audio(path, sample_rate=8000)
    assert wav.dtype == torch.float32 and wav.shape == (len(x),)
    np.testing.assert_allclose(wav.numpy(), x, atol=tolerance)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_wave_format_extensible_headers_are_read(tmp_path, subtype):
    path = tmp_path / "ext.wav"
    x = np.stack([tone(16000), tone(16000, hz=880)], axis=1)
    sf.write(path, x, 16000, subtype=subtype, format="WAVEX")
    assert format_tag(path) == 0xFFFE
    np.testing.assert_allclose(read_audio(path, sample_rate=16000).numpy(), x.mean(axis=1), atol=1e-4)


@pytest.mark.parametrize(("suffix", "fmt", "subtype", "atol"), [
    (".flac", "FLAC", "PCM_16", 1e-4),
    (".ogg", "OGG", "VORBIS", None),
    (".mp3", "MP3", "MPEG_LAYER_III", None),
])
def test_compressed_formats_are_read(tmp_path, suffix, fmt, subtype, atol):
    if fmt not in sf.available_formats() or not sf.check_format(fmt, subtype):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    assert suffix in AUDIO_SUFFIXES
    path = tmp_path / f"tone{suffix}"
    x = tone(44100, seconds=1.0)
    sf.write(path, x, 44100, format=fmt, subtype=subtype)
    assert probe_audio(path).format == fmt
    wav = read_audio(path, sample_rate=44100)
    if atol is not None:
        np.testing.assert_allclose(wav.numpy(), x, atol=atol)
    else:  # lossy: the same tone, about as loud (encoders may add a little delay)
        assert abs(len(wav) - len(x)) < 0.1 * len(x)
        assert peak_hz(wav, 44100) == pytest.approx(440, abs=3)
        assert wav.pow(2).mean().sqrt().item() == pytest.approx(0.5 / math.sqrt(2), rel=0.15)


def test_multichannel_is_downmixed_by_the_mean(tmp_path):
    left, right = tone(8000), -tone(8000)
    sf.write(tmp_path / "opposite.wav", np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    assert read_audio(tmp_path / "opposite.wav", sample_rate=8000).abs().max().item() < 1e-7
    six = np.tile(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), (100, 1))
    sf.write(tmp_path / "six.wav", six, 8000, subtype="FLOAT")
    assert probe_audio(tmp_path / "six.wav").channels == 6
    np.testing.assert_allclose(read_audio(tmp_path / "six.wav", sample_rate=8000).numpy(), 0.35, atol=1e-6)
    # In-memory waveforms: [C, T] and [T, C] give the same mono signal.
    stereo = torch.from_numpy(np.stack([left, 0.5 * left])).float()
    torch.testing.assert_close(read_audio(stereo, sample_rate=8000), read_audio(stereo.T, sample_rate=8000))
    torch.testing.assert_close(read_audio(stereo, sample_rate=8000), stereo.mean(0))


def test_44k1_file_is_resampled_to_the_processors_rate_keeping_its_pitch(tmp_path):
    sf.write(tmp_path / "a440.wav", tone(44100, seconds=1.0), 44100, subtype="PCM_24")
    processor = LogMelProcessor(sample_rate=16000, n_mels=40, max_seconds=4.0)
    wav = processor.waveform(tmp_path / "a440.wav")
    assert wav.shape == (16000,)
    assert peak_hz(wav, 16000) == pytest.approx(440, abs=1.5)
    assert wav.abs().max().item() == pytest.approx(0.5, abs=0.01)
    assert processor(tmp_path / "a440.wav").shape[0] == 40
    # (waveform, rate) pairs are resampled the same way.
    pair = read_audio((torch.from_numpy(tone(44100, seconds=1.0)), 44100), sample_rate=16000)
    torch.testing.assert_close(pair, wav, atol=1e-4, rtol=0)


def test_resampling_removes_what_the_new_rate_cannot_hold():
    t = torch.arange(16000, dtype=torch.float64) / 16000
    mixed = torch.sin(2 * math.pi * 500 * t) + torch.sin(2 * math.pi * 6000 * t)
    down = resample(mixed, 16000, 8000)  # 6 kHz is above the new 4 kHz Nyquist: removed, not aliased to 2 kHz
    assert down.shape == (8000,) and down.dtype == torch.float64
    spectrum = torch.fft.rfft(down).abs()
    assert spectrum.argmax().item() == 500
    assert spectrum[1900:2100].max() < 1e-3 * spectrum[500]


def test_max_seconds_decodes_only_the_start(tmp_path):
    sf.write(tmp_path / "long.flac", tone(8000, seconds=10.0), 8000)
    assert read_audio(tmp_path / "long.flac", sample_rate=8000, max_seconds=1.5).shape == (12000,)
    wav, rate = load_audio(tmp_path / "long.flac", max_seconds=0.5)
    assert rate == 8000 and wav.shape == (4001,)


def wav_header(*, rate: int = 16000, channels: int = 1, bits: int = 16, data_bytes: int, tag: int = 1) -> bytes:
    """A canonical 44-byte RIFF/WAVE header, fields as given (which may lie)."""
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 2**32 - 1)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels % 2**16, rate, (rate * block) % 2**32, block % 2**16, bits)
            + b"data" + struct.pack("<I", data_bytes))


CRAFTED = {
    "rate0.wav": (dict(rate=0, data_bytes=1600), "sample rate of 0 Hz"),
    "rate_max.wav": (dict(rate=2**31 - 1, data_bytes=1600), "sample rate of 2147483647 Hz"),
    "channels1000.wav": (dict(channels=1000, data_bytes=1600), "1000 channels"),
    "frames_beyond.wav": (dict(data_bytes=2**32 - 8), "claims 4294967288 bytes of audio but the file holds 1600"),
    "float_beyond.wav": (dict(bits=32, tag=3, data_bytes=2**31), "claims 2147483648 bytes of audio but the file holds 1600"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_headers_are_named_errors_without_big_allocations(tmp_path, name):
    fields, message = CRAFTED[name]
    path = tmp_path / name
    path.write_bytes(wav_header(**fields) + b"\x00" * 1600)  # a 1.6 KB file
    tracemalloc.start()
    try:
        for call in (lambda: probe_audio(path), lambda: check_media(path, "audio"),
                     lambda: read_audio(path, sample_rate=16000), lambda: LogMelProcessor()(path)):
            with pytest.raises(AudioReadError, match=name.replace(".", r"\.") + ".*" + message):
                call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"refusing a crafted header allocated {peak} bytes"


def test_compressed_file_claiming_absurd_length_is_refused(tmp_path):
    sf.write(tmp_path / "ok.flac", tone(8000), 8000)
    data = bytearray((tmp_path / "ok.flac").read_bytes())
    assert data[:4] == b"fLaC"
    # STREAMINFO starts at byte 8; its 36-bit total-samples field ends 4 bytes into byte 22..25.
    data[21] |= 0x0F
    data[22:26] = b"\xff\xff\xff\xff"
    (tmp_path / "lying.flac").write_bytes(bytes(data))
    with pytest.raises(AudioReadError, match=r"lying\.flac.*68719476735 frames.*compression"):
        probe_audio(tmp_path / "lying.flac")


def test_truncated_and_damaged_files_are_named_errors(tmp_path):
    sf.write(tmp_path / "whole.wav", tone(8000), 8000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[:-100])
    (tmp_path / "text.wav").write_text("not audio at all")
    (tmp_path / "empty.wav").write_bytes(wav_header(data_bytes=0))
    (tmp_path / "zero.wav").write_bytes(b"")  # an interrupted copy: said as empty, not as an unknown format
    (tmp_path / "folder.wav").mkdir()
    for name, message in [("cut.wav", "claims 8000 bytes of audio but the file holds 7900"), ("text.wav", "not an audio format"),
                          ("empty.wav", "no audio frames"), ("zero.wav", r"the file is empty \(0 bytes\)"),
                          ("folder.wav", "folder"), ("missing.wav", "no such file")]:
        with pytest.raises(AudioReadError, match=name.replace(".", r"\.") + ".*" + message):
            read_audio(tmp_path / name, sample_rate=8000)


def test_an_upload_held_in_memory_is_checked_as_its_file_is(tmp_path):
    """Serve reads uploads from bytes: a truncated WAV is the same error there as on disk (it was
    decoded silently from bytes, refused from a path), and a whole one reads the same samples."""
    import io

    sf.write(tmp_path / "whole.wav", tone(8000), 8000, subtype="PCM_16")
    whole = (tmp_path / "whole.wav").read_bytes()
    with pytest.raises(AudioReadError, match="stream: header claims 8000 bytes of audio but the file holds 7900"):
        read_audio(io.BytesIO(whole[:-100]), sample_rate=8000)
    stream = io.BytesIO(b"junk" + whole)
    stream.seek(4)  # the length counted from where the stream stands
    assert torch.equal(read_audio(stream, sample_rate=8000), read_audio(tmp_path / "whole.wav", sample_rate=8000))
    # A WAV written to a pipe leaves the length open (espeak-ng --stdout: 0x7ffff000): a stream reads to its end.
    pcm = sf.read(tmp_path / "whole.wav", dtype="int16")[0].astype("<i2").tobytes()
    piped = wav_header(rate=8000, data_bytes=0x7FFFF000) + pcm
    assert torch.equal(read_audio(io.BytesIO(piped), sample_rate=8000), read_audio(tmp_path / "whole.wav", sample_rate=8000))
    (tmp_path / "piped.wav").write_bytes(piped)  # on disk it is refused, as any file whose header lies
    with pytest.raises(AudioReadError, match="piped.wav.*claims 2147479552 bytes"):
        read_audio(tmp_path / "piped.wav", sample_rate=8000)

def test_non_finite_audio_is_refused(tmp_path):
    x = tone(8000).astype(np.float32)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match=r"nan\.wav.*NaN or infinite"):
        read_audio(tmp_path / "nan.wav", sample_rate=8000)
    with pytest.raises(MediaError, match="finite"):
        LogMelProcessor()(torch.from_numpy(x))
    with pytest.raises(MediaError, match="finite"):
        LogMelProcessor()((np.full(100, np.inf), 8000))


def test_integer_waveform_arrays_are_scaled_by_their_dtype():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(read_audio(pcm, sample_rate=8000).numpy(), pcm / 32768.0)
    np.testing.assert_allclose(read_audio(np.array([128, 255, 0], dtype=np.uint8), sample_rate=8000).numpy(),
                               [0.0, 127 / 128, -1.0])
    with pytest.raises(TypeError, match="audio must be"):
        read_audio(object(), sample_rate=8000)


def test_suffixes_and_sniffing_come_from_libsndfile(tmp_path):
    assert {".wav", ".flac", ".ogg", ".aiff"} <= AUDIO_SUFFIXES
    sf.write(tmp_path / "clip.dat", tone(8000), 8000, format="WAV")
    (tmp_path / "notes.dat").write_text("hello")
    assert looks_like_audio(tmp_path / "clip.dat") and not looks_like_audio(tmp_path / "notes.dat")
    assert read_audio(tmp_path / "clip.dat", sample_rate=8000).shape == (4000,)


@pytest.mark.parametrize(("head", "fmt"), [(b"RIFF\x10\x00\x00\x00WAVEfmt ", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "Ogg")])
def test_a_known_signature_then_junk_says_the_format_and_libsndfiles_reason(tmp_path, head, fmt):
    path = tmp_path / "clip.wav"
    path.write_bytes(head + bytes(range(256)) * 2)
    with pytest.raises(AudioReadError, match=f"its header says {fmt}, but libsndfile cannot decode it: .+") as info:
        probe_audio(path)
    assert "not an audio format" not in str(info.value)
    other = tmp_path / "plain.wav"
    other.write_bytes(b"hello, not audio at all" * 10)
    with pytest.raises(AudioReadError, match="not an audio format libsndfile reads"):
        probe_audio(other)


def test_the_fft_size_table_gives_the_smallest_7_smooth_size_the_search_gives():
    """``_smooth`` (resampling's FFT size) looks the answer up in a table built once; it equals the search it
    replaced for every small size, around each power of two, past the table's end, and is 2-3-5-7-smooth."""
    import random

    from mmcore_plugins.io.audio import SMOOTH_TABLE_LIMIT, _smooth, _smooth_search

    sizes = list(range(0, 5000)) + [p + d for p in (1 << k for k in range(13, 33)) for d in (-1, 0, 1)]
    sizes += [random.Random(0).randrange(1, SMOOTH_TABLE_LIMIT) for _ in range(300)] + [SMOOTH_TABLE_LIMIT + 1, 10**11]
    for n in sizes:
        got = _smooth(n)
        assert got == _smooth_search(n), n
        rest = got
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        assert rest == 1 and got >= n
