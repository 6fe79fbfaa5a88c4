"""Separation (speech vs background) and the final mix (ducking, EBU R128 loudness)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from dubbing import backends, media, mix, separate
from dubbing.errors import DubbingError
from dubbing.types import MIX_RATE
from tests.conftest import make_speech

RATE = MIX_RATE


def _music(seconds: float) -> np.ndarray:
    """A repeating 2-second loop of plucked chords: the kind of background REPET is built for."""
    t = np.arange(int(2.0 * RATE)) / RATE
    loop = np.zeros_like(t)
    for k, freqs in enumerate([(220, 277, 330), (196, 247, 294), (175, 220, 262), (165, 208, 247)]):
        seg = (t >= k * 0.5) & (t < (k + 1) * 0.5)
        env = np.exp(-6 * (t - k * 0.5)) * seg
        loop += env * sum(np.sin(2 * np.pi * f * t) for f in freqs) / 3
    music = np.tile(loop, int(np.ceil(seconds / 2.0)))[: int(seconds * RATE)]
    return (0.25 * np.stack([music, music * 0.9], axis=1)).astype(np.float32)


def _speech(tmp_path, seconds: float, start: float) -> tuple[np.ndarray, float]:
    wav = make_speech(tmp_path / "speech.wav", "This is the original voice speaking over the music for a while now.")
    audio, _ = media.read_audio(wav, RATE)
    out = np.zeros((int(seconds * RATE), 2), dtype=np.float32)
    out[int(start * RATE) : int(start * RATE) + len(audio)] = 0.5 * audio[:, None]
    return out, start + len(audio) / RATE


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12)


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sep")
    music = _music(12.0)
    speech, end = _speech(tmp, 12.0, 3.0)
    sf.write(str(tmp / "mix.wav"), music + speech, RATE, subtype="FLOAT")
    out = backends.build(separate.BACKENDS, "classical", "separation").separate(
        tmp / "mix.wav", tmp / "speech.wav", tmp / "bg.wav", speech=[(3.0, end)]
    )
    return music, speech, end, out


def test_background_keeps_the_music_and_drops_the_voice(separated):
    music, speech, end, (speech_path, bg_path) = separated
    bg, rate = sf.read(str(bg_path), dtype="float32")
    sp, _ = sf.read(str(speech_path), dtype="float32")
    assert rate == RATE and bg.shape == music.shape
    assert np.abs(bg + sp - (music + speech)).max() < 2e-3  # the stems add up to the original (16-bit)
    region = slice(int(3.2 * RATE), int((end - 0.2) * RATE))
    outside = slice(0, int(2.5 * RATE))
    assert _db(bg[outside] - music[outside]) < _db(music[outside]) - 35  # untouched outside speech
    voice = speech[region]
    leak = np.sum((bg[region] - music[region]) * voice) / np.sum(voice**2)  # share of the voice left in it
    assert leak < 0.2  # the original voice is at least 14 dB down
    corr = np.corrcoef(bg[region, 0], music[region, 0])[0, 1]
    assert corr > 0.7  # the music under the speech survived


def test_median_of_rows_is_numpys_median():
    rng = np.random.default_rng(0)
    for k in range(1, 12):
        stack = rng.integers(0, 5, (7, k, 9)).astype(np.float32)  # ties included
        assert np.array_equal(separate.median_of_rows(stack.copy()), np.median(stack, axis=1))


def test_equal_channels_are_transformed_once_with_the_same_stems(tmp_path, monkeypatch):
    """A mono source extracted as stereo: each chunk's spectrum is computed and inverted once, and the stems are
    exactly those of separating each channel on its own."""
    import librosa

    music = _music(8.0)
    speech, end = _speech(tmp_path, 8.0, 1.0)
    mono = (music + speech)[:, :1]
    sf.write(str(tmp_path / "mix.wav"), np.repeat(mono, 2, axis=1), RATE, subtype="FLOAT")
    calls = {"stft": 0, "istft": 0}

    def counted(name: str):
        real = getattr(librosa, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    for name in list(calls):
        monkeypatch.setattr(librosa, name, counted(name))

    def stems(tag: str) -> tuple[np.ndarray, np.ndarray, dict]:
        calls.update(stft=0, istft=0)
        out = separate.ClassicalSeparator().separate(
            tmp_path / "mix.wav", tmp_path / f"{tag}.speech.wav", tmp_path / f"{tag}.bg.wav", speech=[(1.0, end)]
        )
        return sf.read(str(out[0]))[0], sf.read(str(out[1]))[0], dict(calls)

    shared_speech, shared_bg, shared = stems("shared")
    monkeypatch.setattr(separate, "equal_channel", lambda data, c: None)
    own_speech, own_bg, own = stems("own")
    assert np.array_equal(shared_speech, own_speech) and np.array_equal(shared_bg, own_bg)
    assert np.array_equal(shared_bg[:, 0], shared_bg[:, 1])
    assert shared["stft"] * 2 == own["stft"] and shared["istft"] * 2 == own["istft"]


def test_separator_needs_speech_times_and_known_backend(tmp_path, separated):
    with pytest.raises(DubbingError, match="speech times"):
        classical = backends.build(separate.BACKENDS, "classical", "separation")
        classical.separate(separated[3][1], tmp_path / "a.wav", tmp_path / "b.wav")
    with pytest.raises(DubbingError, match="unknown separation backend"):
        backends.build(separate.BACKENDS, "spleeter", "separation")


def test_none_backend_separates_nothing(tmp_path, separated):
    separator = backends.build(separate.BACKENDS, "none", "separation")
    assert separator.separate(separated[3][1], tmp_path / "a.wav", tmp_path / "b.wav", speech=[(0.0, 1.0)]) is None
    assert not (tmp_path / "a.wav").exists()
    with pytest.raises(DubbingError, match="unknown key 'model' for backend classical; allowed: none"):
        backends.build(separate.BACKENDS, "classical", "separation", {"model": "htdemucs"})


def test_demucs_backend_loads_its_model_when_installed():
    pytest.importorskip("demucs", reason="the demucs separator needs the `demucs` extra (pip install demucs)")
    try:
        backends.build(separate.BACKENDS, "demucs", "separation")
    except DubbingError as exc:
        pytest.skip(f"demucs weights not cached offline: {exc}")


def _loudness(path) -> float:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(path), "-af", "loudnorm=print_format=json", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    return float(json.loads(proc.stderr[proc.stderr.rindex("{") :])["input_i"])


def test_mix_ducks_the_background_and_hits_the_loudness_target(tmp_path):
    voice_rate = 24_000
    voice = np.zeros(int(10 * voice_rate), dtype=np.float32)
    t = np.arange(int(3 * voice_rate)) / voice_rate
    voice[int(4 * voice_rate) : int(7 * voice_rate)] = 0.3 * np.sin(2 * np.pi * 150 * t)
    sf.write(str(tmp_path / "voice.wav"), voice, voice_rate)
    noise = np.random.default_rng(0).normal(0, 0.05, (10 * RATE, 2)).astype(np.float32)
    sf.write(str(tmp_path / "bg.wav"), noise, RATE)
    gain = mix.duck_gain(np.repeat(voice[:, None], 2, axis=1), voice_rate, 10.0)
    assert gain[int(5 * voice_rate)] == pytest.approx(10 ** (-10 / 20), rel=0.01)
    assert gain[int(1 * voice_rate)] == 1.0 and gain[int(3.99 * voice_rate)] < 0.5  # ducks just before speech
    out = mix.mix(tmp_path / "voice.wav", tmp_path / "out.wav", background=tmp_path / "bg.wav", duck_db=10.0)
    mixed, rate = sf.read(str(out), dtype="float32")
    assert rate == RATE and mixed.shape == (10 * RATE, 2)
    assert _loudness(out) == pytest.approx(-16.0, abs=1.0)
    alone = mix.mix(tmp_path / "voice.wav", tmp_path / "alone.wav", loudness_lufs=-23.0)
    assert _loudness(alone) == pytest.approx(-23.0, abs=1.0)


def test_speech_gate_on_clips_shorter_than_its_ramp():
    """Frames of about 21 ms: a clip of one to four frames is shorter than the 50 ms ramps."""
    for n_frames in range(5):
        gate = separate.speech_gate([(0.0, 0.03)], n_frames, 1024 / MIX_RATE)
        assert gate.shape == (n_frames,) and np.all(gate == 1.0)
