"""Separation: split the original audio into speech and everything else, so the dub can sit on the original
background (music, room, effects) without the original voice under it.

`classical` (offline default): outside speech the background is the original, untouched; inside speech
(gated by the transcript's speech times) it is a REPET-SIM estimate: each spectrogram frame's background is the
median of the frames most similar to it elsewhere, which keeps repeating music and steady noise and drops the
non-repeating voice. `demucs` (extra, needs its weights) runs the htdemucs neural separator.
Both write 48 kHz stereo WAVs with speech + background equal to the input; `none` writes nothing (the dub is
mixed without a background). Backends are built by name with `dubbing.backends.build(BACKENDS, ...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.media import resample, write_audio

Segments = list[tuple[float, float]]


class Separator(Protocol):
    name: str

    def separate(
        self, audio: Path, speech_out: Path, background_out: Path, *, speech: Segments | None = None
    ) -> tuple[Path, Path] | None:
        """Write the speech and background stems; returns their paths (None: no separation)."""
        ...


def _read(path: Path) -> tuple[np.ndarray, int]:
    path = Path(path)
    if not path.exists():
        raise DubbingError(f"audio to separate not found: {path}")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data, rate


def speech_gate(segments: Segments, n_frames: int, frame_s: float, pad_s: float = 0.15) -> np.ndarray:
    """1 in (padded) speech, 0 elsewhere, with ~50 ms ramps so the background does not click at the edges."""
    gate = np.zeros(n_frames, dtype=np.float32)
    for start, end in segments:
        a = max(0, int((start - pad_s) / frame_s))
        b = min(n_frames, int(np.ceil((end + pad_s) / frame_s)))
        gate[a:b] = 1.0
    ramp = max(1, int(0.05 / frame_s))
    kernel = np.ones(2 * ramp + 1, dtype=np.float32) / (2 * ramp + 1)
    if n_frames < len(kernel):  # a clip shorter than one ramp: no room to soften the edges
        return gate
    return np.maximum(gate, np.convolve(gate, kernel, mode="same")).clip(0, 1)


def equal_channel(data: np.ndarray, c: int) -> int | None:
    """An earlier channel of (samples, channels) `data` whose samples equal channel `c`'s, if any."""
    return next((d for d in range(c) if np.array_equal(data[:, d], data[:, c])), None)


def median_of_rows(stack: np.ndarray) -> np.ndarray:
    """np.median(stack, axis=1) of a (bins, k, frames) array, equal to it bit for bit, four times faster for the
    separator's k = 10: an odd-even transposition sorting network of elementwise min/max over the k rows (numpy
    partitions each bin's k values one by one). Changes `stack`."""
    k = stack.shape[1]
    rows = [stack[:, j] for j in range(k)]
    for r in range(k):
        for i in range(r % 2, k - 1, 2):
            low = np.minimum(rows[i], rows[i + 1])
            np.maximum(rows[i], rows[i + 1], out=rows[i])
            rows[i], rows[i + 1] = low, rows[i]
    return rows[k // 2] if k % 2 else (rows[k // 2 - 1] + rows[k // 2]) / 2


class ClassicalSeparator:
    """VAD-gated REPET-SIM soft mask (librosa): no model, fast, good for music and steady noise."""

    name = "classical"
    Options = NoOptions
    capabilities: frozenset[str] = frozenset()

    def __init__(
        self, n_fft: int = 4096, hop: int = 1024, chunk_s: float = 60.0, margin: float = 2.0, k: int = 10
    ) -> None:
        self.n_fft, self.hop, self.chunk_s, self.margin, self.k = n_fft, hop, chunk_s, margin, k

    def _chunk_mask(
        self, audio: Path, a: int, chunk: int, n_frames: int, rate: int, gate: np.ndarray, features: np.ndarray | None
    ) -> np.ndarray:
        """Soft mask (0..1) of the background for frames [a, a + chunk). Each speech frame's background is the
        median of the most similar frames without speech nearby (VAD-gated REPET-SIM, within half a chunk either
        side); where there are too few such frames, of the most similar frames of any kind (plain REPET-SIM).
        Outside speech the mask is 1: the background is the original there."""
        import librosa

        b = min(n_frames, a + chunk)
        queries = np.arange(a, b)
        queries = queries[gate[queries] > 0]
        if features is None or not queries.size:
            return np.ones((self.n_fft // 2 + 1, b - a), dtype=np.float32)
        context = chunk // 2
        free = np.flatnonzero(gate == 0)
        refs = free[(free >= a - context) & (free < a + chunk + context)]
        if refs.size < 4 * self.k:  # hardly any speech-free frames: compare with every other frame
            refs = np.arange(max(0, a - context), min(n_frames, a + chunk + context))
        lo, hi = min(a, int(refs[0])), max(b, int(refs[-1]) + 1)
        magnitude = self._magnitude(audio, lo, hi)  # frames [lo, hi): the chunk and its references
        mask = np.ones((magnitude.shape[0], b - a), dtype=magnitude.dtype)
        for block in np.array_split(queries, max(1, queries.size // 256)):
            sim = features[:, block].T @ features[:, refs]
            if refs.size > 2 * self.k:  # a frame must not explain itself or its immediate neighbours
                sim[np.abs(block[:, None] - refs[None, :]) < 3] = -np.inf
            k = min(self.k, refs.size)
            nearest = refs[np.argpartition(-sim, k - 1, axis=1)[:, :k]]
            own = magnitude[:, block - lo]
            repeated = np.minimum(own, median_of_rows(magnitude[:, (nearest - lo).T]))
            mask[:, block - a] = librosa.util.softmask(repeated, self.margin * (own - repeated), power=2)
        return 1.0 - gate[None, a:b] * (1.0 - mask)

    def separate(
        self, audio: Path, speech_out: Path, background_out: Path, *, speech: Segments | None = None
    ) -> tuple[Path, Path]:
        """Streams the file in chunks of `chunk_s` (the mask's own chunks): memory does not grow with length."""
        import librosa

        audio = Path(audio)
        if not audio.exists():
            raise DubbingError(f"audio to separate not found: {audio}")
        if speech is None:
            raise DubbingError("the classical separator needs the speech times (from the transcript)")
        info = sf.info(str(audio))
        rate, length = info.samplerate, info.frames
        n_frames = 1 + length // self.hop  # as librosa.stft(center=True) frames it
        gate = speech_gate(speech, n_frames, self.hop / rate)
        features = self._features(audio, n_frames, rate) if gate.any() else None
        chunk = max(32, int(self.chunk_s * rate / self.hop))
        margin = self.n_fft // self.hop  # frames beyond a chunk that overlap its samples
        masks: dict[int, np.ndarray] = {}
        with atomic_path(speech_out) as speech_tmp, atomic_path(background_out) as background_tmp:
            options = {"samplerate": rate, "channels": info.channels, "format": "WAV", "subtype": "PCM_16"}
            with (
                sf.SoundFile(str(speech_tmp), "w", **options) as speech_file,
                sf.SoundFile(str(background_tmp), "w", **options) as background_file,
            ):
                for a in range(0, n_frames, chunk):
                    for b in (a - chunk, a, a + chunk):  # this chunk's mask and its neighbours' (the margins)
                        if 0 <= b < n_frames and b not in masks:
                            masks[b] = self._chunk_mask(audio, b, chunk, n_frames, rate, gate, features)
                    masks.pop(a - 2 * chunk, None)
                    f0, f1 = max(0, a - margin), min(n_frames, a + chunk + margin)
                    mask = np.concatenate([masks[b][:, max(f0, b) - b : min(f1, b + chunk) - b] for b in sorted(masks)
                                           if b < f1 and b + chunk > f0], axis=1)  # fmt: skip
                    spectra = self._stft(audio, f0, f1)
                    inverse: dict[int, np.ndarray] = {}  # a channel equal to another is inverted once
                    for x in spectra:
                        if id(x) not in inverse:
                            inverse[id(x)] = librosa.istft(x * mask, hop_length=self.hop, center=False)
                    local = [inverse[id(x)] for x in spectra]
                    s0, s1 = a * self.hop, min(length, (a + chunk) * self.hop)
                    i0 = s0 - f0 * self.hop + self.n_fft // 2
                    background = np.stack([y[i0 : i0 + s1 - s0] for y in local], axis=1)
                    data = sf.read(str(audio), start=s0, stop=s1, dtype="float32", always_2d=True)[0]
                    speech_file.write(np.clip(data - background, -1.0, 1.0))
                    background_file.write(np.clip(background, -1.0, 1.0))
        return Path(speech_out), Path(background_out)

    def _stft(self, audio: Path, f0: int, f1: int) -> list[np.ndarray]:
        """STFT frames [f0, f1) of each channel, equal to those of librosa.stft(center=True) on the whole file.
        Channels with equal samples (a mono source extracted as stereo) share one array, computed once."""
        import librosa

        pad = self.n_fft // 2
        start, stop = f0 * self.hop - pad, (f1 - 1) * self.hop + pad
        data = sf.read(str(audio), start=max(0, start), stop=stop, dtype="float32", always_2d=True)[0]
        data = np.pad(data, ((max(0, -start), stop - max(0, start) - len(data)), (0, 0)))  # zeros beyond the file
        spectra: list[np.ndarray] = []
        for c in range(data.shape[1]):
            same = equal_channel(data, c)
            spectra.append(
                spectra[same]
                if same is not None
                else librosa.stft(data[:, c], n_fft=self.n_fft, hop_length=self.hop, center=False)
            )
        return spectra

    def _magnitude(self, audio: Path, f0: int, f1: int) -> np.ndarray:
        spectra = self._stft(audio, f0, f1)
        if all(x is spectra[0] for x in spectra):  # the mean of equal channels is the channel itself, exactly
            return np.abs(spectra[0])
        return np.mean([np.abs(x) for x in spectra], axis=0)

    def _features(self, audio: Path, n_frames: int, rate: int) -> np.ndarray:
        """Per-frame spectral shape (64 mel bands, dB, unit norm) of the whole file, computed chunk by chunk:
        64 values a frame, where the spectrogram itself has n_fft / 2 + 1."""
        import librosa

        step = max(32, int(self.chunk_s * rate / self.hop))
        power = np.concatenate(
            [
                librosa.feature.melspectrogram(
                    S=self._magnitude(audio, a, min(n_frames, a + step)) ** 2, sr=rate, n_mels=64
                )
                for a in range(0, n_frames, step)
            ],
            axis=1,
        )
        features = librosa.power_to_db(power, top_db=80)
        features = features - features.mean(axis=0, keepdims=True)
        features /= np.linalg.norm(features, axis=0, keepdims=True) + 1e-9
        return features


class DemucsSeparator:
    """Demucs (extra `demucs`): the htdemucs neural separator; 'vocals' is the speech, the rest the background.
    Weights load from torch hub's cache (offline) or `model_path` (a saved model file)."""

    name = "demucs"
    capabilities: frozenset[str] = frozenset()

    class Options(NoOptions):
        model: str = "htdemucs"  # a pretrained model name in torch hub's cache
        model_path: Path | None = None  # or a saved model file

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
        import torch

        data, rate = _read(audio)
        wav = data.T if data.shape[1] == 2 else np.repeat(data.T, 2, axis=0)
        wav = resample(wav, rate, self.model.samplerate)
        with torch.no_grad():
            sources = self.apply_model(self.model, torch.from_numpy(wav)[None], device=self.device)[0].numpy()
        vocals = resample(sources[self.model.sources.index("vocals")], self.model.samplerate, rate)
        vocals = vocals.T[: len(data), : data.shape[1]]
        vocals = np.pad(vocals, ((0, len(data) - len(vocals)), (0, 0)))
        return (
            write_audio(speech_out, np.clip(vocals, -1.0, 1.0), rate),
            write_audio(background_out, np.clip(data - vocals, -1.0, 1.0), rate),
        )


class NoSeparator:
    """No separation: the dub is mixed without the original background."""

    name = "none"
    Options = NoOptions
    capabilities: frozenset[str] = frozenset()

    def separate(self, audio: Path, speech_out: Path, background_out: Path, *, speech: Segments | None = None) -> None:
        return None


BACKENDS: dict[str, type] = {"classical": ClassicalSeparator, "demucs": DemucsSeparator, "none": NoSeparator}


def compile_kernels() -> None:
    """Separate two seconds of generated sound once, so that numba compiles librosa's kernels into the
    environment's own cache: scripts/setup calls this, and a user's first run does not pay for the compilation."""
    import tempfile

    rate = 48_000
    t = np.arange(2 * rate) / rate
    noise = np.random.default_rng(0).normal(0.0, 0.05, (t.size, 2))
    sound = (0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + noise).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="dub-kernels-") as folder:
        mixed = write_audio(Path(folder) / "mix.wav", sound, rate, subtype="FLOAT")
        ClassicalSeparator().separate(
            mixed, Path(folder) / "speech.wav", Path(folder) / "background.wav", speech=[(0.5, 1.5)]
        )
