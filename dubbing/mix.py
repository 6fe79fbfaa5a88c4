"""Mixing: the dub voice over the original background, the background ducked while the dub speaks, then
normalised to a loudness target (EBU R128, ffmpeg loudnorm in two passes so the gain is linear, not pumping)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.tools import ffmpeg_input, require_tool, run
from dubbing.types import MIX_RATE

FRAME_S = 0.01
ATTACK_S, RELEASE_S = 0.03, 0.3


def _read(path: Path, rate: int) -> np.ndarray:
    """A WAV as float32 stereo at `rate`."""
    import librosa

    if not Path(path).exists():
        raise DubbingError(f"audio to mix not found: {path}")
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    data = data[:, :2]
    if sr != rate:
        data = librosa.resample(data, orig_sr=sr, target_sr=rate, axis=0)
    return data.astype(np.float32)


def duck_gain(voice: np.ndarray, rate: int, duck_db: float, threshold_db: float = -45.0) -> np.ndarray:
    """Per-sample background gain: 1 where the dub is silent, -duck_db where it speaks, with a fast attack
    (starting a little early) and a slow release so the background breathes naturally between lines."""
    hop = max(1, int(FRAME_S * rate))
    mono = np.abs(voice).mean(axis=1) if voice.ndim > 1 else np.abs(voice)
    frames = len(mono) // hop + 1
    level = np.array([mono[i * hop : (i + 1) * hop].max(initial=0.0) for i in range(frames)])
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
    return np.interp(np.arange(len(mono)) / hop, np.arange(frames), gain).astype(np.float32)


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
    speech = _read(voice, MIX_RATE)
    total = speech
    if background is not None:
        bg = _read(background, MIX_RATE)[: len(speech)]
        bg = np.pad(bg, ((0, len(speech) - len(bg)), (0, 0)))
        total = speech + bg * duck_gain(speech, MIX_RATE, duck_db)[:, None]
    with tempfile.TemporaryDirectory(prefix="dubbing-mix-") as tmp:
        summed = Path(tmp) / "sum.wav"
        sf.write(str(summed), total, MIX_RATE, subtype="FLOAT")
        graph = loudnorm_args(summed, loudness_lufs)
        cmd = [ffmpeg, "-nostdin", "-y", "-v", "error", "-i", ffmpeg_input(summed), "-af", graph]
        cmd += ["-ar", str(MIX_RATE), "-ac", "2", "-c:a", "pcm_s16le"]
        with atomic_path(out) as dst:
            run(cmd + ["-f", "wav", str(dst)], f"mixing {out}")
    return Path(out)
