"""Mixing: the dub voice over the original background, the background ducked while the dub speaks, then
normalised to a loudness target (EBU R128, ffmpeg loudnorm in two passes so the gain is linear, not pumping)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.tools import ffmpeg_input, require_tool, run
from dubbing.types import MIX_RATE

FRAME_S = 0.01
ATTACK_S, RELEASE_S = 0.03, 0.3


BLOCK_S = 10.0  # audio is mixed in blocks of this many seconds: memory does not grow with the video's length


def _stream(path: Path, rate: int) -> Iterator[np.ndarray]:
    """A WAV as float32 stereo at `rate`, in pieces. Resampling runs as a stream (soxr HQ, the engine of
    media.resample, bit for bit), and the total length is the one media.resample gives. The only streaming
    resampler: a whole file never has to fit in memory here."""
    import soxr

    if not Path(path).exists():
        raise DubbingError(f"audio to mix not found: {path}")
    info = sf.info(str(path))
    same = info.samplerate == rate
    resampler = None if same else soxr.ResampleStream(info.samplerate, rate, 2, dtype="float32", quality="HQ")
    length = info.frames if same else int(np.ceil(info.frames * rate / info.samplerate))
    count = 0
    for data in sf.blocks(str(path), blocksize=int(BLOCK_S * info.samplerate), dtype="float32", always_2d=True):
        data = np.repeat(data, 2, axis=1) if data.shape[1] == 1 else np.ascontiguousarray(data[:, :2])
        piece = resampler.resample_chunk(data) if resampler else data
        piece = piece[: length - count]
        count += len(piece)
        yield piece
    if resampler:
        piece = resampler.resample_chunk(np.zeros((0, 2), np.float32), last=True)[: length - count]
        count += len(piece)
        yield piece
    if count < length:
        yield np.zeros((length - count, 2), np.float32)


def _blocks(path: Path, rate: int, block: int) -> Iterator[np.ndarray]:
    """`_stream` in blocks of exactly `block` samples (the last one shorter)."""
    pending = np.zeros((0, 2), np.float32)
    for piece in _stream(path, rate):
        pending = np.concatenate([pending, piece])
        while len(pending) >= block:
            yield pending[:block]
            pending = pending[block:]
    if len(pending):
        yield pending


def _frame_levels(mono: np.ndarray, hop: int) -> np.ndarray:
    """Peak level of each `hop`-sample frame; the last frame may be short or empty (level 0)."""
    frames = len(mono) // hop + 1
    return np.array([mono[i * hop : (i + 1) * hop].max(initial=0.0) for i in range(frames)])


def _frame_gain(level: np.ndarray, duck_db: float, threshold_db: float) -> np.ndarray:
    """Per-frame gain from per-frame levels: ducked where the dub speaks, fast attack, slow release."""
    active = 20 * np.log10(level + 1e-9) > threshold_db
    target = np.where(active, 10 ** (-duck_db / 20), 1.0)
    lead = int(ATTACK_S / FRAME_S)
    target = np.minimum(target, np.concatenate([target[lead:], np.ones(lead)]))  # duck just before speech
    gain = np.empty_like(target)
    g = 1.0
    up = 1 - np.exp(-FRAME_S / RELEASE_S)
    for i, t in enumerate(target):
        g = t if t < g else g + (t - g) * up  # instant down (already led), slow release
        gain[i] = g
    return gain


def _sample_gain(gain: np.ndarray, hop: int, start: int, stop: int) -> np.ndarray:
    """The per-frame gain interpolated to samples [start, stop)."""
    return np.interp(np.arange(start, stop) / hop, np.arange(len(gain)), gain).astype(np.float32)


def duck_gain(voice: np.ndarray, rate: int, duck_db: float, threshold_db: float = -45.0) -> np.ndarray:
    """Per-sample background gain: 1 where the dub is silent, -duck_db where it speaks, with a fast attack
    (starting a little early) and a slow release so the background breathes naturally between lines."""
    hop = max(1, int(FRAME_S * rate))
    mono = np.abs(voice).mean(axis=1) if voice.ndim > 1 else np.abs(voice)
    gain = _frame_gain(_frame_levels(mono, hop), duck_db, threshold_db)
    return _sample_gain(gain, hop, 0, len(mono))


def loudnorm_args(path: Path, loudness_lufs: float) -> str:
    """First loudnorm pass: measure, and return the filter that applies the measured linear gain."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    base = f"loudnorm=I={loudness_lufs}:TP=-1.5:LRA=11"
    proc = run(
        [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-i",
            ffmpeg_input(path),
            "-af",
            f"{base}:print_format=json",
            "-f",
            "null",
            "-",
        ],
        f"measuring loudness of {path}",
    )
    found = re.search(r"\{[^{}]*\"input_i\"[^{}]*\}", proc.stderr)
    if not found:
        return base
    m = json.loads(found.group(0))
    if m["input_i"] in ("-inf", "inf"):  # silence: nothing to normalise
        return "anull"
    return (
        f"{base}:measured_I={m['input_i']}:measured_TP={m['input_tp']}:measured_LRA={m['input_lra']}"
        f":measured_thresh={m['input_thresh']}:offset={m['target_offset']}:linear=true"
    )


def mix(
    voice: Path,
    out: Path,
    *,
    background: Path | None = None,
    loudness_lufs: float = -16.0,
    duck_db: float = 8.0,
) -> Path:
    """Dub voice + ducked background, loudness-normalised, as 48 kHz 16-bit stereo. The mix lasts as long as the
    voice track (which lasts as long as the source)."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    hop = int(FRAME_S * MIX_RATE)
    block = int(BLOCK_S / FRAME_S) * hop  # whole frames: per-frame levels come out as from the whole track
    gain = None
    if background is not None:  # a first pass over the voice: where the dub speaks, per frame
        levels = [_frame_levels(np.abs(speech).mean(axis=1), hop) for speech in _blocks(voice, MIX_RATE, block)]
        # Every block but the last ends on a frame boundary: drop the empty frame _frame_levels adds after it.
        whole = [lv[:-1] for lv in levels[:-1]] + levels[-1:] or [np.zeros(1, np.float32)]
        gain = _frame_gain(np.concatenate(whole), duck_db, -45.0)
    with tempfile.TemporaryDirectory(prefix="dubbing-mix-") as tmp:
        summed = Path(tmp) / "sum.wav"
        backgrounds = _blocks(background, MIX_RATE, block) if background is not None else None
        with sf.SoundFile(str(summed), "w", samplerate=MIX_RATE, channels=2, subtype="FLOAT") as out_file:
            start = 0
            for speech in _blocks(voice, MIX_RATE, block):
                total = speech
                if backgrounds is not None and gain is not None:
                    bg = next(backgrounds, np.zeros((0, 2), np.float32))[: len(speech)]
                    bg = np.pad(bg, ((0, len(speech) - len(bg)), (0, 0)))
                    total = speech + bg * _sample_gain(gain, hop, start, start + len(speech))[:, None]
                out_file.write(total)
                start += len(speech)
        graph = loudnorm_args(summed, loudness_lufs)
        cmd = [ffmpeg, "-nostdin", "-y", "-v", "error", "-i", ffmpeg_input(summed), "-af", graph]
        cmd += ["-ar", str(MIX_RATE), "-ac", "2", "-c:a", "pcm_s16le"]
        with atomic_path(out) as dst:
            run(cmd + ["-f", "wav", str(dst)], f"mixing {out}")
    return Path(out)
