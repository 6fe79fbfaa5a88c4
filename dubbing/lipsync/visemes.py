"""What the mouth should do in each video frame: how open, how wide, how rounded.

Openness comes from the driving speech itself (energy in the 250-1500 Hz band, where the first formant of
open vowels lives), normalised by the clip's own percentiles, with a fast attack and a slower release so
the mouth snaps open on syllables and eases shut. Where the script is known, espeak-ng's phonemes add
width and rounding, and lips close on p, b and m.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import numpy as np

from dubbing.tools import require_tool

HOP_S = 0.005


@dataclass
class MouthDrive:
    """Per-frame targets in [0, 1] (width in [-1, 1]: narrower / wider than rest)."""

    open: np.ndarray
    wide: np.ndarray
    round: np.ndarray
    speech: np.ndarray  # bool: the driving audio is speaking in this frame

    @property
    def frames(self) -> int:
        return len(self.open)

    @classmethod
    def rest(cls, frames: int) -> MouthDrive:
        z = np.zeros(frames, np.float32)
        return cls(open=z.copy(), wide=z.copy(), round=z.copy(), speech=np.zeros(frames, bool))


def band_energy_db(
    audio: np.ndarray, rate: int, low: float = 250.0, high: float = 1500.0, chunk_frames: int = 12_000
) -> np.ndarray:
    """Band energy in dB, one value every HOP_S seconds. Long audio goes through the STFT `chunk_frames` frames
    at a time (a minute): the same values, without a full-length spectrogram in memory."""
    hop = max(1, int(rate * HOP_S))
    nper = 4 * hop if 4 * hop >= 64 else 64
    if len(audio) <= nper + chunk_frames * hop:
        return 10 * np.log10(_band_power(audio, rate, nper, hop, low, high) + 1e-12)
    total = (len(audio) + (-(len(audio) - nper) % hop) % nper - nper) // hop + 1  # frames scipy's padding gives
    parts = []
    for f0 in range(0, total, chunk_frames):
        f1 = min(total, f0 + chunk_frames)
        piece = audio[f0 * hop : (f1 - 1) * hop + nper]
        piece = np.pad(piece, (0, (f1 - 1 - f0) * hop + nper - len(piece)))  # the zeros scipy pads the end with
        parts.append(_band_power(piece, rate, nper, hop, low, high))
    return 10 * np.log10(np.concatenate(parts) + 1e-12)


def _band_power(audio: np.ndarray, rate: int, nper: int, hop: int, low: float, high: float) -> np.ndarray:
    from scipy.signal import stft  # here: scipy.signal costs seconds to import, and most commands never call it

    freqs, _times, spec = stft(audio, fs=rate, nperseg=nper, noverlap=nper - hop, boundary=None, padded=True)
    band = (freqs >= low) & (freqs <= high)
    return (np.abs(spec[band]) ** 2).sum(axis=0)


def envelope(
    audio: np.ndarray,
    rate: int,
    fps: float,
    frames: int,
    *,
    attack_s: float = 0.015,
    release_s: float = 0.07,
    lead_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mouth openness per frame in [0, 1], and whether each frame is speech. With `lead_s` the mouth moves
    that much ahead of the sound (lips start to move before the sound they make)."""
    if audio.size == 0:
        return np.zeros(frames, np.float32), np.zeros(frames, bool)
    db = band_energy_db(audio, rate)
    peak = np.percentile(db, 98)
    floor = max(np.percentile(db, 10), peak - 45.0)
    speech_level = max(floor + 0.35 * (peak - floor), peak - 30.0)
    x = np.clip((db - speech_level) / max(peak - speech_level, 1e-6), 0.0, 1.0)
    # fast attack, slower release (one-pole followers)
    up, down = np.exp(-HOP_S / attack_s), np.exp(-HOP_S / release_s)
    y = np.empty_like(x)
    level = 0.0
    for i, v in enumerate(x):
        coef = up if v > level else down
        level = coef * level + (1 - coef) * v
        y[i] = level
    # average into frames
    times = (np.arange(frames) + 0.5) / fps + lead_s
    idx = np.clip((times / HOP_S).astype(int), 0, len(y) - 1)
    half = max(1, int(0.5 / fps / HOP_S))
    cs = np.concatenate([[0.0], np.cumsum(y)])
    lo, hi = np.clip(idx - half, 0, len(y)), np.clip(idx + half + 1, 0, len(y))
    per_frame = (cs[hi] - cs[lo]) / np.maximum(hi - lo, 1)
    per_frame[times > len(audio) / rate] = 0.0
    opened = np.clip(per_frame, 0, 1) ** 0.8
    return opened.astype(np.float32), opened > 0.08


# How far the mouth moves ahead of the sound: enough to make up for the envelope's own lag (its release and the
# per-frame averaging), no more. 40 ms put the drawn mouth a whole frame early at 25-30 fps: its lip-follow r was
# 0.06-0.22 under 10 ms's on five clips (benchmarks/bench_lip_follow.py, docs/lipsync.md); 10 ms gave the best r.
LEAD_S = 0.01


def drive_from_audio(audio: np.ndarray, rate: int, fps: float, frames: int) -> MouthDrive:
    opened, speech = envelope(audio, rate, fps, frames, lead_s=LEAD_S)
    zeros = np.zeros(frames, np.float32)
    return MouthDrive(open=opened, wide=zeros.copy(), round=zeros.copy(), speech=speech)


# ---------------------------------------------------------------- phonemes (espeak-ng)

# espeak-ng phoneme mnemonics (-x output) -> (width, rounding, closes lips)
_BILABIAL = set("pbm")
_STRESS = re.compile(r"[',%=:]+$|^[',%=]+")
_ROUNDED = re.compile(r"^(u|U|o|O|w|y|Y|9|2|@U|oU|aU|OI|u:|o:|O:)")
_WIDE = re.compile(r"^(i|I|e|E|a|eI|aI|i:|e:|a:|j)")


def phonemes(text: str, language: str) -> list[str]:
    """espeak-ng's phoneme mnemonics for `text` (words separated), e.g. ['h', '@', 'l', 'oU']."""
    binary = require_tool("espeak-ng", "espeak-ng")
    proc = subprocess.run([binary, "-q", "-x", "--sep=_", "-v", language], input=text.encode(), capture_output=True)
    out = proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else ""
    result: list[str] = []
    for word in out.split():
        result += [p for p in (_STRESS.sub("", part) for part in word.split("_")) if p]
    return result


def phoneme_shape(ph: str) -> tuple[float, float, bool]:
    """(width, rounding, bilabial) for one phoneme mnemonic."""
    if ph and ph[0] in _BILABIAL:
        return 0.0, 0.0, True
    if ph in ("f", "v"):
        return 0.2, 0.0, False
    if _ROUNDED.match(ph):
        return -0.6, 0.8, False
    if _WIDE.match(ph):
        return 0.6, 0.0, False
    return 0.0, 0.0, False


def apply_script(
    drive: MouthDrive,
    lines: list[tuple[float, float, str]],
    language: str,
    fps: float,
) -> int:
    """Shape `drive` in place from each line's phonemes spread over the speech frames of the line's span
    (in proportion to a nominal duration: vowels twice consonants). Bilabials close the lips: the frame of
    least openness near the phoneme's nominal time is forced shut. Returns how many closures were placed."""
    closures = 0
    for start, end, text in lines:
        a, b = int(np.floor(start * fps)), min(drive.frames, int(np.ceil(end * fps)) + 1)
        frames = np.arange(a, b)[drive.speech[a:b]]
        phs = phonemes(text, language) if frames.size else []
        if not phs:
            continue
        weights = np.array([2.0 if _is_vowel(p) else 1.0 for p in phs])
        centres = (np.cumsum(weights) - weights / 2) / weights.sum()
        span = frames[-1] - frames[0] + 1
        for ph, c in zip(phs, centres, strict=True):
            t = int(frames[0] + c * span)
            width, rounding, bilabial = phoneme_shape(ph)
            lo, hi = max(a, t - 1), min(b, t + 2)
            drive.wide[lo:hi] = width
            drive.round[lo:hi] = rounding
            if bilabial:
                w = 2  # search +-2 frames for the quietest one: stop closures are quiet
                seg = slice(max(a, t - w), min(b, t + w + 1))
                best = seg.start + int(np.argmin(drive.open[seg]))
                drive.open[best] = 0.0
                closures += 1
    return closures


def _is_vowel(ph: str) -> bool:
    return bool(ph) and ph[0] in "aeiouAEIOU@3VQ0y&9"
