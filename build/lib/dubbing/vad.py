"""Voice activity detection and 16 kHz decoding: a shared helper (not a stage) for ASR and diarization.

Uses the silero VAD v6 model bundled in faster-whisper (ONNX, no torch) so that music and silence never
reach a speech model, and ffmpeg (dubbing.tools.decode_audio) to decode any container it reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dubbing.tools import decode_audio
from dubbing.types import ANALYSIS_RATE


def read_analysis_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples of any media file with an audio stream."""
    return decode_audio(path, ANALYSIS_RATE)


def speech_regions(
    samples: np.ndarray,
    *,
    threshold: float = 0.5,
    min_silence_ms: int = 300,
    pad_ms: int = 100,
    min_speech_ms: int = 250,
) -> list[tuple[float, float]]:
    """Speech stretches in seconds of 16 kHz audio."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=threshold,
        min_silence_duration_ms=min_silence_ms,
        speech_pad_ms=pad_ms,
        min_speech_duration_ms=min_speech_ms,
    )
    chunks = get_speech_timestamps(np.asarray(samples, dtype=np.float32), options)
    return [(c["start"] / ANALYSIS_RATE, c["end"] / ANALYSIS_RATE) for c in chunks]


def group_regions(regions: list[tuple[float, float]], max_s: float = 30.0) -> list[tuple[float, float]]:
    """Consecutive speech regions joined into spans of at most `max_s` (Whisper's window); a longer region
    stands alone (the model chunks it)."""
    groups: list[tuple[float, float]] = []
    for start, end in regions:
        if groups and end - groups[-1][0] <= max_s:
            groups[-1] = (groups[-1][0], end)
        else:
            groups.append((start, end))
    return groups


def cut_at_pauses(
    regions: list[tuple[float, float]], duration_s: float, max_s: float = 240.0
) -> list[tuple[float, float]]:
    """Consecutive pieces covering all `duration_s` seconds, each at most about `max_s` long, cut in the middle
    of the pauses between speech `regions`: a long input is transcribed piece by piece, so memory does not grow
    with its length, and no word is cut. A speech region longer than `max_s` stays whole."""
    cuts: list[float] = [0.0]
    candidate: float | None = None
    for (_, end), (start, _) in zip(regions, regions[1:], strict=False):
        middle = (end + start) / 2
        if middle - cuts[-1] > max_s and candidate is not None and candidate > cuts[-1]:
            cuts.append(candidate)
        candidate = middle
    if duration_s - cuts[-1] > max_s and candidate is not None and candidate > cuts[-1]:
        cuts.append(candidate)
    return list(zip(cuts, [*cuts[1:], duration_s], strict=True))
