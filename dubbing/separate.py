"""Separation: split the original audio into speech and everything else, so the dub can sit on the original
background (music, room, effects) without the original voice under it.

`classical` (offline default): outside speech the background is the original, untouched; inside speech
(gated by the transcript's speech times) it is a REPET-SIM estimate: each spectrogram frame's background is the
median of the frames most similar to it elsewhere, which keeps repeating music and steady noise and drops the
non-repeating voice. `demucs` (extra, needs its weights) runs the htdemucs neural separator.
Both write 48 kHz stereo WAVs with speech + background equal to the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from dubbing.backends import pick
from dubbing.errors import DubbingError
from dubbing.files import atomic_path

Segments = list[tuple[float, float]]


class Separator(Protocol):
    name: str

    def separate(
        self, audio: Path, speech_out: Path, background_out: Path, *, speech: Segments | None = None
    ) -> tuple[Path, Path]:
        """Write the speech and background stems; returns their paths."""
        ...


def _read(path: Path) -> tuple[np.ndarray, int]:
    path = Path(path)
    if not path.exists():
        raise DubbingError(f"audio to separate not found: {path}")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data, rate


def _write(path: Path, audio: np.ndarray, rate: int) -> Path:
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return Path(path)


def speech_gate(segments: Segments, n_frames: int, frame_s: float, pad_s: float = 0.15) -> np.ndarray:
    """1 in (padded) speech, 0 elsewhere, with ~50 ms ramps so the background does not click at the edges."""
    gate = np.zeros(n_frames, dtype=np.float32)
    for start, end in segments:
        a = max(0, int((start - pad_s) / frame_s))
        b = min(n_frames, int(np.ceil((end + pad_s) / frame_s)))
        gate[a:b] = 1.0
    ramp = max(1, int(0.05 / frame_s))
    kernel = np.ones(2 * ramp + 1, dtype=np.float32) / (2 * ramp + 1)
    return np.maximum(gate, np.convolve(gate, kernel, mode="same")).clip(0, 1)


class ClassicalSeparator:
    """VAD-gated REPET-SIM soft mask (librosa): no model, fast, good for music and steady noise."""

    name = "classical"

    def __init__(
        self, n_fft: int = 4096, hop: int = 1024, chunk_s: float = 60.0, margin: float = 2.0, k: int = 10
    ) -> None:
        self.n_fft, self.hop, self.chunk_s, self.margin, self.k = n_fft, hop, chunk_s, margin, k

    def background_mask(self, magnitude: np.ndarray, rate: int, gate: np.ndarray) -> np.ndarray:
        """Soft mask (0..1) of the background in speech frames. Each speech frame's background is the median of
        the most similar frames without speech nearby (VAD-gated REPET-SIM); where there are too few such frames,
        of the most similar frames of any kind (plain REPET-SIM)."""
        import librosa

        features = librosa.power_to_db(librosa.feature.melspectrogram(S=magnitude**2, sr=rate, n_mels=64), top_db=80)
        features = features - features.mean(axis=0, keepdims=True)
        features /= np.linalg.norm(features, axis=0, keepdims=True) + 1e-9
        chunk = max(32, int(self.chunk_s * rate / self.hop))
        context = chunk // 2
        free = np.flatnonzero(gate == 0)
        mask = np.ones_like(magnitude)
        for a in range(0, magnitude.shape[1], chunk):
            queries = np.arange(a, min(a + chunk, magnitude.shape[1]))
            queries = queries[gate[queries] > 0]
            if not queries.size:
                continue
            refs = free[(free >= a - context) & (free < a + chunk + context)]
            if refs.size < 4 * self.k:  # hardly any speech-free frames: compare with every other frame
                refs = np.arange(max(0, a - context), min(magnitude.shape[1], a + chunk + context))
            for block in np.array_split(queries, max(1, queries.size // 256)):
                sim = features[:, block].T @ features[:, refs]
                if refs.size > 2 * self.k:  # a frame must not explain itself or its immediate neighbours
                    sim[np.abs(block[:, None] - refs[None, :]) < 3] = -np.inf
                k = min(self.k, refs.size)
                nearest = refs[np.argpartition(-sim, k - 1, axis=1)[:, :k]]
                repeated = np.minimum(magnitude[:, block], np.median(magnitude[:, nearest], axis=2))
                mask[:, block] = librosa.util.softmask(
                    repeated, self.margin * (magnitude[:, block] - repeated), power=2
                )
        return mask

    def separate(
        self, audio: Path, speech_out: Path, background_out: Path, *, speech: Segments | None = None
    ) -> tuple[Path, Path]:
        import librosa

        data, rate = _read(audio)
        if speech is None:
            raise DubbingError("the classical separator needs the speech times (from the transcript)")
        channels = [librosa.stft(data[:, c], n_fft=self.n_fft, hop_length=self.hop) for c in range(data.shape[1])]
        magnitude = np.mean([np.abs(x) for x in channels], axis=0)
        gate = speech_gate(speech, magnitude.shape[1], self.hop / rate)
        if gate.any():
            mask = 1.0 - gate[None, :] * (1.0 - self.background_mask(magnitude, rate, gate))
        else:
            mask = np.ones_like(magnitude)
        background = np.stack(
            [librosa.istft(x * mask, hop_length=self.hop, length=len(data)) for x in channels], axis=1
        )
        return _write(speech_out, data - background, rate), _write(background_out, background, rate)


class DemucsSeparator:
    """Demucs (extra `demucs`): the htdemucs neural separator; 'vocals' is the speech, the rest the background.
    Weights load from torch hub's cache (offline) or `model_path` (a saved model file)."""

    name = "demucs"

    def __init__(self, model: str = "htdemucs", model_path: Path | None = None, device: str = "cpu") -> None:
        try:
            from demucs.apply import apply_model
            from demucs.pretrained import get_model
        except ImportError as exc:
            raise DubbingError(f"the demucs separator needs the `demucs` extra (pip install demucs): {exc}") from None
        import torch

        try:
            self.model = torch.load(str(model_path), map_location=device) if model_path else get_model(model)
        except Exception as exc:  # no network: the weights must already be cached
            raise DubbingError(f"demucs model {model!r} is not available offline: {exc}") from None
        self.model.eval()
        self.apply_model, self.device = apply_model, device

    def separate(
        self, audio: Path, speech_out: Path, background_out: Path, *, speech: Segments | None = None
    ) -> tuple[Path, Path]:
        import librosa
        import torch

        data, rate = _read(audio)
        wav = data.T if data.shape[1] == 2 else np.repeat(data.T, 2, axis=0)
        if rate != self.model.samplerate:
            wav = librosa.resample(wav, orig_sr=rate, target_sr=self.model.samplerate, axis=1)
        with torch.no_grad():
            sources = self.apply_model(self.model, torch.from_numpy(wav)[None], device=self.device)[0].numpy()
        vocals = sources[self.model.sources.index("vocals")]
        if rate != self.model.samplerate:
            vocals = librosa.resample(vocals, orig_sr=self.model.samplerate, target_sr=rate, axis=1)
        vocals = vocals.T[: len(data), : data.shape[1]]
        vocals = np.pad(vocals, ((0, len(data) - len(vocals)), (0, 0)))
        return _write(speech_out, vocals, rate), _write(background_out, data - vocals, rate)


BACKENDS: dict[str, type] = {"classical": ClassicalSeparator, "demucs": DemucsSeparator}


def get_separator(backend: str, **options) -> Separator:
    return pick(BACKENDS, backend, "separation")(**options)
