"""QA stage: error rates, line matching, loudness, lipsync correlation, voice similarity and the report's flags,
on real computations over generated audio and the shared media."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dubbing import asr, backends, lipsync, media, qa, speaker_embedding, steps, translate
from dubbing.config import QAConfig, Settings, load_settings
from dubbing.errors import DubbingError
from dubbing.files import write_json
from dubbing.layout import RunLayout
from dubbing.types import (
    ANALYSIS_RATE,
    FaceTracks,
    InputCheck,
    LanguageOutputs,
    Script,
    ScriptLine,
    Transcript,
    Utterance,
    Word,
)
from tests.conftest import make_speech, media_file


def line(index: int, start: float, text: str, synth_s: float, **extra) -> ScriptLine:
    return ScriptLine(
        index=index, speaker=extra.pop("speaker", "S1"), start=start, end=start + synth_s, source_text=f"src {index}",
        text=text, synth_s=synth_s, **extra,
    )  # fmt: skip


def heard(words: list[tuple[float, float, str]], language: str = "es") -> Transcript:
    ws = [Word(start=a, end=b, word=w) for a, b, w in words]
    return Transcript(language=language, duration_s=10.0, utterances=[Utterance.from_words(ws, language)])


def test_normalise_drops_punctuation_and_case_but_keeps_word_apostrophes():
    assert qa.normalise("¿Qué TAL?  ¡Bien!") == "qué tal bien"
    assert qa.normalise("l’homme d'affaires 'quoted'") == "l'homme d'affaires quoted"


def test_word_and_character_error_rates():
    wer = qa.get_metric("wer")
    assert wer.score(["hola qué tal"], ["Hola, ¿qué tal?"]) == 0.0
    assert wer.score(["uno dos tres cuatro"], ["uno dos tres"]) == pytest.approx(0.25)
    assert wer.score([""], ["something"]) == 0.0  # an empty line has nothing to mishear
    cer = qa.get_metric("cer")  # the metric of languages written without spaces (their config names it)
    assert cer.name == "cer" and wer.name == "wer"
    assert cer.score(["今日は"], ["今日わ"]) == pytest.approx(1 / 3)
    with pytest.raises(DubbingError, match="unknown QA error-rate metric"):
        qa.get_metric("bleu")


def test_heard_words_go_to_the_line_they_were_spoken_in():
    lines = [line(0, 0.0, "hola amigo", 1.0), line(1, 2.0, "adiós", 0.8), line(2, 5.0, "", 0.0)]
    spoken = heard([(0.1, 0.4, "hola"), (0.5, 0.9, "amigo"), (1.15, 1.25, "eh"), (2.1, 2.6, "adiós"), (8, 8.5, "x")])
    per_line, stray = qa.heard_per_line(lines, spoken)
    assert per_line == {0: "hola amigo eh", 1: "adiós"}  # "eh" ends 0.2 s after line 0: within the tolerance
    assert stray == ["x"]


def test_over_limit_and_dub_span_follow_the_fit():
    fits = line(0, 1.0, "a", 2.0, natural_s=2.2, fit_end=3.5, speed=1.1)
    cut = line(1, 4.0, "b", 1.2, natural_s=2.0, fit_end=5.0, speed=1.25)
    assert not qa.over_limit(fits, 1.25) and qa.over_limit(cut, 1.25)
    assert qa.dub_span(cut) == (4.0, 5.0)  # the clip never sounds past the end the fit allowed
    marked = line(2, 0.0, "c", 1.0, over_limit=True)  # the synthesis step marked it: no fit figures needed
    assert qa.over_limit(marked, 1.25)
    noted = line(3, 0.0, "d", 1.0, notes=["does not fit: 3.00s of speech for 1.00s even at x1.25; cut by 0.2s"])
    assert not qa.over_limit(noted, 1.25)  # a note is for people: the field says it


def test_loudness_of_a_known_tone(tmp_path):
    """A 1 kHz sine at half scale: -9.0 LUFS (R128 reads a full-scale 1 kHz sine as -3.0), peak about -6 dBTP."""
    tone = tmp_path / "tone.wav"
    t = np.arange(48_000 * 5) / 48_000
    sf.write(tone, 0.5 * np.sin(2 * np.pi * 1000 * t), 48_000)
    figures = qa.loudness(tone)
    assert figures["integrated_lufs"] == pytest.approx(-9.0, abs=0.3)
    assert figures["true_peak_dbtp"] == pytest.approx(-6.0, abs=0.3)
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(48_000), 48_000)
    assert qa.loudness(silent)["integrated_lufs"] is None


def test_lip_sync_finds_correlation_lag_and_missing_faces():
    rng = np.random.default_rng(0)
    fps, frames = 25.0, 250
    envelope = np.convolve(rng.random(frames), np.ones(4) / 4, mode="same").astype(np.float32)
    mouth = np.roll(envelope, 2) + 0.02 * rng.standard_normal(frames)  # the mouth follows 2 frames late
    mouth[:10] = np.nan  # no face in the first 10 frames
    summary, per_line = qa.lip_sync(mouth, envelope, fps, {0: (1.0, 4.0), 1: (9.9, 10.0)})
    assert summary["best_lag_ms"] == pytest.approx(80.0)
    assert summary["best_lag_correlation"] > 0.9 > summary["correlation"]
    assert summary["no_face_frames"] == 10 and summary["no_face_share"] == pytest.approx(0.04)
    assert per_line[1] is None  # too few frames to judge
    unrelated, _ = qa.lip_sync(rng.random(frames), envelope, fps, {})
    assert abs(unrelated["correlation"]) < 0.3


def test_frame_envelope_follows_speech(tmp_path):
    speech = make_speech(tmp_path / "s.wav", "hello there, this is a test")
    audio, rate = sf.read(speech, dtype="float32")
    padded = np.concatenate([np.zeros(rate, np.float32), audio])  # one second of silence first
    env = qa.frame_envelope(padded, rate, 25.0, int(len(padded) / rate * 25))
    assert env[:20].mean() < env[30:].mean() - 15  # dB: silence sits at the floor


@pytest.fixture(scope="module")
def librivox() -> list[Path]:
    folder = media_file("librivox")
    return sorted(folder.glob("*.wav"))


def test_voice_similarity_tells_the_same_reader_from_a_synthetic_voice(librivox, tmp_path):
    a, rate = sf.read(librivox[0], dtype="float32")
    b, _ = sf.read(librivox[1], dtype="float32")
    source = {"S1": speaker_embedding.embed(a, rate)}
    same = qa.voice_similarity(source, b, rate, [line(0, 0.0, "x", len(b) / rate)])
    robot, robot_rate = sf.read(make_speech(tmp_path / "r.wav", "the same words read by a robot voice today"))
    other = qa.voice_similarity(
        source, robot.astype(np.float32), robot_rate, [line(0, 0.0, "x", len(robot) / robot_rate)]
    )
    assert same["S1"]["similarity"] > 0.6 > other["S1"]["similarity"]
    short = qa.voice_similarity(source, b, rate, [line(0, 0.0, "x", 0.2)])
    assert short["S1"]["similarity"] is None and "too little" in short["S1"]["note"]
    missing = qa.voice_similarity({}, b, rate, [line(0, 0.0, "x", 2.0, speaker="S2")])
    assert missing["S2"]["similarity"] is None


def test_report_flags_each_failing_line_with_its_time():
    script = Script(
        source_language="en", language="es", translator="apertium",
        lines=[
            line(0, 0.0, "hola amigo mío", 1.5, speed=1.0, natural_s=1.5, fit_end=2.0),
            line(1, 2.5, "una frase larga que no cabe", 1.0, speed=1.25, natural_s=2.5, fit_end=3.5),
            line(2, 4.0, "adiós", 0.6, speed=1.0, natural_s=0.6, fit_end=6.0, speaker="S2"),
        ],
    )  # fmt: skip
    measured = qa.Measurements(
        heard=heard([(0.1, 0.5, "hola"), (0.6, 1.0, "amigo"), (1.1, 1.4, "mío"), (4.1, 4.5, "adiós")]),
        voice={"S1": {"similarity": 0.3, "dub_s": 2.5}, "S2": {"similarity": 0.8, "dub_s": 0.6}},
        lipsync={"correlation": 0.4},
        lip_lines={0: 0.5, 1: 0.05, 2: None},
        loudness={"integrated_lufs": -20.5, "range_lu": 3.0, "true_peak_dbtp": -0.5},
        inputs=["the face is in profile in 40% of frames"],
    )
    report = qa.build_report(script, measured, qa.Thresholds(loudness_target=-16.0), metric="wer")
    assert report.intelligibility["error_rate"] == pytest.approx(6 / 10, abs=1e-3)  # 6 of 10 words unheard
    rows = {row.index: row for row in report.line_qa}
    assert rows[0].error_rate == 0.0 and rows[1].error_rate == 1.0 and rows[1].heard == ""
    assert rows[1].over_limit and report.lines_over_limit == [1] and report.max_speed == 1.25
    assert rows[1].flags == ["intelligibility", "timing", "voice", "lipsync"]
    assert rows[2].flags == []
    by_check = {}
    for flag in report.flags:
        by_check.setdefault(flag.check, []).append(flag)
    assert [f.start for f in by_check["intelligibility"]] == [2.5]
    assert by_check["timing"][0].end == 3.5
    assert by_check["voice"][0].line == 0 and by_check["voice"][0].value == 0.3
    assert len(by_check["loudness"]) == 2 and len(by_check["input"]) == 1
    assert [f.start for f in report.flags if f.start is not None] == sorted(
        f.start for f in report.flags if f.start is not None
    )
    assert report.thresholds["max_speedup"] == 1.25


def test_loudness_reads_a_video_with_ffmpeg(tmp_path):
    video = tmp_path / "v.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=d=2:size=64x64", "-f", "lavfi", "-i",
         "sine=f=440:d=2", "-shortest", "-c:v", "libx264", "-c:a", "aac", str(video)],
        check=True,
    )  # fmt: skip
    assert qa.loudness(video)["integrated_lufs"] is not None


def test_listening_windows_group_lines_and_cut_in_the_silences():
    lines = [line(0, 0.0, "a", 4.0), line(1, 4.0, "b", 5.0), line(2, 12.0, "c", 6.0), line(3, 30.0, "d", 3.0)]
    lines.append(line(4, 40.0, "", 0.0))  # nothing to hear
    windows = qa.listening_windows(lines, 50.0, max_s=20.0)
    assert windows == [(0.0, 24.0), (24.0, 50.0)]  # 0-18 s then 30-33 s, cut halfway through 18-30
    assert qa.listening_windows(lines, 50.0, max_s=5.0) == [(0.0, 4.0), (4.0, 10.5), (10.5, 24.0), (24.0, 50.0)]


def test_listening_pieces_hold_the_lines_and_not_the_silence_between_them():
    lines = [line(0, 0.0, "a", 4.0), line(1, 4.0, "b", 5.0), line(2, 12.0, "c", 6.0), line(3, 30.0, "d", 3.0)]
    lines.append(line(4, 40.0, "", 0.0))  # nothing to hear
    pieces = qa.listening_pieces(lines, 50.0, max_s=20.0, pad_s=0.2)
    assert pieces == [(0.0, 18.2), (29.8, 33.2)]  # 12 s of silence between and 17 s after are not heard
    assert qa.listening_pieces(lines, 50.0, max_s=10.0, pad_s=0.2) == [(0.0, 9.2), (11.8, 18.2), (29.8, 33.2)]


def test_back_transcription_hears_every_piece_in_one_call_and_an_unheard_line_again_on_its_own():
    lines = [line(0, 0.0, "uno", 1.0), line(1, 1.0, "dos", 1.0), line(2, 12.0, "tres", 1.0)]
    calls = []

    def hear(audio: Path, language: str, pieces: list[tuple[float, float]]) -> Transcript:
        calls.append(pieces)
        words = {0.5: "uno", 1.5: "dos", 12.5: "tres"}
        found = [Word(start=t - 0.2, end=t + 0.2, word=w) for t, w in words.items()
                 if any(a <= t <= b for a, b in pieces) and (len(calls) > 1 or t > 4)]  # fmt: skip
        return Transcript(language=language, duration_s=15, utterances=[Utterance.from_words([w], "es") for w in found])

    heard, info = qa.back_transcribe(Path("dub.wav"), 15.0, lines, "es", hear)
    assert calls[0] == [(0.0, 2.2), (11.8, 13.2)]  # both pieces in one call, the silences left out
    assert calls[1] == [(0.0, 1.0), (1.0, 2.2)]  # the first piece (two lines) heard as nothing: line by line
    assert [u.text for u in heard.utterances] == ["uno", "dos", "tres"]
    assert info == {"pieces": 4, "heard_s": 5.8, "dub_s": 15.0}

    calls.clear()

    def stops_early(audio: Path, language: str, pieces: list[tuple[float, float]]) -> Transcript:
        calls.append(pieces)  # the first call hears the first line of the first piece and stops there
        words = {0.5: "uno", 1.5: "dos", 12.5: "tres"}
        found = [Word(start=t - 0.2, end=t + 0.2, word=w) for t, w in words.items()
                 if any(a <= t <= b for a, b in pieces) and (len(calls) > 1 or t != 1.5)]  # fmt: skip
        return Transcript(language=language, duration_s=15, utterances=[Utterance.from_words([w], "es") for w in found])

    heard, info = qa.back_transcribe(Path("dub.wav"), 15.0, lines, "es", stops_early)
    assert calls[1] == [(1.0, 2.2)]  # only the line nothing was heard in, not the end of the line before it
    assert [u.text for u in heard.utterances] == ["uno", "dos", "tres"]


def test_thresholds_come_from_the_qa_config_the_mix_and_the_timing():
    cfg = QAConfig(max_error_rate=0.3, min_similarity=0.5, min_lip_sync=0.1, loudness_tolerance_lu=3.0,
                   max_true_peak_db=-2.0)  # fmt: skip
    limits = qa.Thresholds.from_config(cfg, loudness_target=-23.0, max_speedup=1.4)
    assert limits == qa.Thresholds(max_error_rate=0.3, min_similarity=0.5, min_lip_sync=0.1, loudness_target=-23.0,
                                   loudness_tolerance_lu=3.0, max_true_peak_db=-2.0, max_speedup=1.4)  # fmt: skip
    assert qa.Thresholds.from_config(QAConfig(), loudness_target=-16.0, max_speedup=1.25) == qa.Thresholds()


def test_a_run_with_qa_off_reports_the_timing_only():
    script = Script(
        source_language="en", language="es", translator="apertium",
        lines=[line(0, 0.0, "hola", 1.0, speed=1.0), line(1, 2.0, "una frase larga", 1.0, speed=1.25, over_limit=True)],
    )  # fmt: skip
    report = qa.disabled_report(script, qa.Thresholds(max_speedup=1.25))
    for check in ("intelligibility", "voice", "lipsync", "loudness"):
        assert getattr(report, check) == {"note": "QA off (qa.enabled)"}
    assert report.lines_over_limit == [1] and report.timing["max_speed"] == 1.25
    assert [f.check for f in report.flags] == ["timing"]


@pytest.fixture(scope="module")
def hear() -> qa.Hear:
    """The QA ears a run uses: faster-whisper whisper-base, int8, beam 5, with VAD."""
    transcriber = backends.build(
        asr.BACKENDS, "faster-whisper", "ASR", model="whisper-base", compute_type="int8", beam_size=5, vad=True
    )
    return lambda audio, language, pieces: asr.transcribe_pieces(transcriber, audio, pieces, language=language)


def finished_language(tmp_path: Path) -> tuple[RunLayout, LanguageOutputs]:
    """The files a run leaves for one language with no picture: transcript, analysis audio, script, dub voice and
    mix, and the lipsync stage's input check."""
    layout = RunLayout(out=tmp_path / "out", name="talk")
    layout.source_dir.mkdir(parents=True)
    layout.language_dir("es").mkdir()
    source, rate = media.read_audio(make_speech(tmp_path / "src.wav", "good morning my friend, how are you today"),
                                    ANALYSIS_RATE)  # fmt: skip
    media.write_audio(layout.analysis_wav, np.concatenate([source, source]), rate)
    seconds = 2 * len(source) / rate
    transcript = Transcript(language="en", duration_s=seconds, utterances=[Utterance(start=0.0, end=seconds, text="x")])
    write_json(layout.transcript, transcript.model_dump())
    voice, voice_rate = media.read_audio(make_speech(tmp_path / "dub.wav", "buenos días amigo", voice="es"))
    media.write_audio(layout.voice("es"), voice, voice_rate)
    media.write_audio(layout.audio("es"), voice, voice_rate)
    spoken = len(voice) / voice_rate
    script = Script(source_language="en", language="es", translator="t",
                    lines=[line(0, 0.0, "buenos días amigo", spoken, speed=1.0, natural_s=spoken)])  # fmt: skip
    write_json(layout.script("es"), script.model_dump())
    faces = FaceTracks(video="talk.mp4", frames=10, fps=25.0, width=64, height=64, faces=1, face_frames=1.0,
                       checks=[InputCheck(code="low-resolution", message="the face is small")])  # fmt: skip
    write_json(layout.faces_json, faces.model_dump())
    return layout, layout.outputs("es", None)


def test_quality_report_measures_a_finished_language_from_its_files(tmp_path, hear):
    layout, outputs = finished_language(tmp_path)
    limits = qa.Thresholds()
    report = qa.quality_report(layout, "es", outputs, QAConfig(), limits, metric="wer", hear=hear, mouth=None)
    assert report.intelligibility["heard"].strip() and report.intelligibility["metric"] == "wer"  # espeak, heard
    assert qa.normalise(report.line_qa[0].heard) == qa.normalise(report.intelligibility["heard"])  # the only line
    assert 0 <= report.intelligibility["error_rate"] == report.line_qa[0].error_rate
    assert report.voice["speakers"]["S1"]["similarity"] is not None  # embedded from the analysis audio
    assert report.lipsync == {"note": "no video output"}
    assert report.loudness["integrated_lufs"] is not None
    assert report.inputs == ["the face is small"] and "input" in {f.check for f in report.flags}

    off = qa.quality_report(layout, "es", outputs, QAConfig(back_transcribe=False), limits, metric="wer",
                            hear=hear, mouth=None)  # fmt: skip
    assert off.intelligibility == {"note": "back-transcription off (qa.back_transcribe)"}
    deaf = qa.quality_report(layout, "es", outputs, QAConfig(), limits, metric="wer", hear=None, mouth=None)
    assert "no transcriber" in deaf.intelligibility["note"] and deaf.line_qa[0].heard is None


def test_the_step_hears_the_dub_back_in_batched_pieces_with_the_presets_beam(tmp_path):
    """steps.quality_report's ears: the pooled faster-whisper model, every piece in one batched call; the draft
    preset decodes greedily, the final one with beam search, and the report says which."""
    layout, outputs = finished_language(tmp_path)
    for preset, beam in (("draft", 1), ("final", 5)):
        report = steps.quality_report(layout, "es", outputs, load_settings(preset))
        listener = report.intelligibility["listener"]
        assert listener["beam_size"] == beam and listener["backend"] == "faster-whisper"
        assert listener["model"] == "whisper-base" and listener["decoding"].startswith("batched")
        assert listener["pieces"] == 1 and 0 < listener["heard_s"] <= listener["dub_s"] + 1e-6
        # what whisper hears of espeak's "buenos días amigo" varies with the machine's CPU: that it heard, and scored
        assert report.intelligibility["heard"].strip() and report.intelligibility["error_rate"] >= 0


def test_the_lipsync_check_reads_the_mouths_the_renderer_drew_and_tracks_the_picture_without_them(tmp_path):
    """A re-animated picture: QA takes the mouths its renderer saved, and says so; with that file deleted (a run
    from before it was saved) the dubbed video is tracked again, and says why, with figures that agree."""
    layout, _ = finished_language(tmp_path)
    video = tmp_path / "talk.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(media_file("vrt_face1.mp4")), "-t", "2", "-vf",
                    "scale=320:320", "-an", str(video)], check=True)  # fmt: skip
    faces, _ = lipsync.analyse(video, layout.faces_npz, lines=[(0.2, 1.8)])
    assert lipsync.render_dub(video, faces, layout.voice("es"), layout.picture("es")) is not None
    media.mux(layout.picture("es"), layout.audio("es"), layout.video("es"), language="spa", duration_s=2.0)
    outputs = layout.outputs("es", layout.video("es"))
    tracked = []

    def mouth(video: Path | None, faces_npz: Path | None) -> tuple[np.ndarray, float]:
        tracked.append(video)
        return lipsync.mouth_opening(video, landmarks=faces_npz)

    cfg = QAConfig(meaning=False, wrong_language=False)

    def report():
        return qa.quality_report(layout, "es", outputs, cfg, qa.Thresholds(), metric="wer", hear=None,
                                 mouth=mouth, drawn=lipsync.drawn_mouths).lipsync  # fmt: skip

    drawn = report()
    assert drawn["mouth_source"] == "renderer (classical)" and "mouth_note" not in drawn
    assert tracked == [None]  # only the source's landmarks were read (the baseline): the picture was not tracked
    layout.picture_mouths("es").unlink()
    again = report()
    assert again["mouth_source"] == "tracked" and "older run" in again["mouth_note"]
    assert tracked[1:] == [layout.video("es"), None]
    assert drawn["frames"] == again["frames"] and drawn["source_correlation"] == again["source_correlation"]
    assert drawn["correlation"] > 0.3 and again["correlation"] > 0.3
    assert abs(drawn["correlation"] - again["correlation"]) < 0.25, (drawn, again)
    blind = qa.quality_report(layout, "es", outputs, cfg, qa.Thresholds(), metric="wer", hear=None, mouth=mouth)
    assert blind.lipsync["mouth_source"] == "tracked" and "no renderer data reader" in blind.lipsync["mouth_note"]


# ---------------------------------------------------------------- words of another language


def test_words_of_another_language_are_flagged_with_the_language_they_belong_to():
    spanish = qa.foreign_words("Durante años perseguei ese sueño sin descanso.", "es", source="en")
    assert [(w.word, w.language) for w in spanish] == [("perseguei", "pt")]  # in no word list: its ending is pt
    french = qa.foreign_words("Mes majeurs flaquezas sont demander aide lorsque je précis", "fr", source="en")
    assert [(w.word, w.language) for w in french] == [("flaquezas", "es")]  # common in Spanish, unknown in French
    assert qa.foreign_words("Durante años perseguí ese sueño sin descanso.", "es", source="en") == []
    assert qa.foreign_words("Mes plus grandes faiblesses sont de demander de l'aide.", "fr", source="en") == []
    # names (capitalised inside a sentence, all capitals, mixed case), glossary terms and numbers are never flagged
    assert qa.foreign_words("Ayer hablé con Joaquim de la OTAN y del iPhone 15.", "es", source="en") == []
    assert qa.foreign_words("perseguei", "es", keep=["perseguei"]) == []
    untranslated = qa.foreign_words("我们去 the store 买东西, iPhone 很贵", "zh", source="en")
    assert [w.word for w in untranslated] == ["the", "store"]  # written without spaces: Latin-script words only
    assert qa.wrong_language_check("zh") is None and "no word list" in (qa.wrong_language_check("yo") or "")


def test_the_hand_written_references_have_no_word_of_another_language():
    """The false-positive measure of the check: the hand translations of benchmarks/data/mt_en.tsv."""
    table = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "mt_en.tsv"
    rows = [row.split("\t") for row in table.read_text().splitlines() if row.strip() and not row.startswith("#")]
    flagged = {
        (lang, row[column]): qa.foreign_words(row[column], lang, source="en")
        for column, lang in enumerate(("es", "pt", "fr", "it"), start=1)
        for row in rows
    }
    assert len(flagged) >= 150 and {k: v for k, v in flagged.items() if v} == {}


def test_the_report_flags_a_line_with_words_of_another_language():
    script = Script(
        source_language="en", language="es", translator="t",
        lines=[line(0, 0.0, "Durante años perseguei ese sueño.", 2.0), line(1, 3.0, "Perseguí ese sueño.", 1.5)],
    )  # fmt: skip
    foreign = {x.index: qa.foreign_words(x.text, "es", source="en") for x in script.lines}
    report = qa.build_report(script, qa.Measurements(foreign=foreign), qa.Thresholds(), metric="wer")
    rows = {row.index: row for row in report.line_qa}
    assert rows[0].flags == ["language"] and rows[0].foreign_words == ["perseguei"] and rows[1].flags == []
    (flag,) = report.flags
    assert flag.check == "language" and "perseguei" in flag.message and "pt" in flag.message and flag.start == 0.0
    assert report.wrong_language["lines"] == 1 and report.wrong_language["words"]["0"][0]["language"] == "pt"


# ---------------------------------------------------------------- meaning (what was heard, translated back)


@pytest.fixture(scope="module")
def apertium_es_en() -> qa.TranslateBack:
    """A real back-translator, Spanish to English (Debian's apertium-eng-spa): what `qa.meaning_backend` builds."""
    return translate.build_translator("apertium", source="es", target="en").translate


def dubbed_lines(tmp_path: Path, pairs: list[tuple[str, str]]) -> tuple[RunLayout, LanguageOutputs]:
    """A finished Spanish language whose line i has source pairs[i][0] and dub (script and espeak voice) pairs[i][1]."""
    layout = RunLayout(out=tmp_path / "out", name="talk")
    layout.source_dir.mkdir(parents=True)
    layout.language_dir("es").mkdir()
    clips, lines, at = [], [], 0.0
    for i, (source, text) in enumerate(pairs):
        clip, rate = media.read_audio(make_speech(tmp_path / f"{i}.wav", text, voice="es"), ANALYSIS_RATE)
        lines.append(ScriptLine(index=i, speaker="S1", start=at, end=at + len(clip) / rate, source_text=source,
                                text=text, synth_s=len(clip) / rate, speed=1.0))  # fmt: skip
        clips += [clip, np.zeros(rate, np.float32)]
        at += len(clip) / rate + 1.0
    voice = np.concatenate(clips)
    media.write_audio(layout.voice("es"), voice, ANALYSIS_RATE)
    media.write_audio(layout.audio("es"), voice, ANALYSIS_RATE)
    media.write_audio(layout.analysis_wav, voice, ANALYSIS_RATE)
    transcript = Transcript(language="en", duration_s=at, utterances=[Utterance(start=0.0, end=at, text="x")])
    write_json(layout.transcript, transcript.model_dump())
    script = Script(source_language="en", language="es", translator="t", lines=lines)
    write_json(layout.script("es"), script.model_dump())
    return layout, layout.outputs("es", None)


def test_the_meaning_check_flags_a_line_whose_dub_means_something_else(tmp_path, hear, apertium_es_en):
    layout, outputs = dubbed_lines(
        tmp_path,
        [("Good morning, my friend.", "Buenos días, amigo."), ("The train leaves at noon.", "Me gusta mucho el café.")],
    )
    limits = qa.Thresholds()
    report = qa.quality_report(layout, "es", outputs, QAConfig(), limits, metric="wer", hear=hear, mouth=None,
                               translate_back=apertium_es_en)  # fmt: skip
    assert report.meaning["basis"] == "heard" and report.meaning["metric"] == "chrf"
    rows = {row.index: row for row in report.line_qa}
    # the expectation from the run's own outputs: what was heard, translated back in one call, scored
    back = dict(zip(rows, apertium_es_en([row.heard or "" for row in rows.values()]), strict=True))
    script = Script.model_validate_json(layout.script("es").read_text())
    _, expected = qa.meaning(script.lines, back, basis="heard")
    for index, row in rows.items():
        assert row.back_translation == back[index] and row.meaning_chrf == expected[index]
        assert ("meaning" in row.flags) == (expected[index] < limits.min_meaning_chrf)
    assert "meaning" not in rows[0].flags and "meaning" in rows[1].flags
    assert report.meaning["mean_chrf"] == pytest.approx((rows[0].meaning_chrf + rows[1].meaning_chrf) / 2, abs=0.01)
    assert report.wrong_language["lines"] == 0  # both scripts are plain Spanish

    script_only = qa.quality_report(layout, "es", outputs, QAConfig(back_transcribe=False), limits, metric="wer",
                                    hear=hear, mouth=None, translate_back=apertium_es_en)  # fmt: skip
    assert script_only.meaning["basis"] == "script"  # nothing heard back: the script is translated back instead
    assert [row.back_translation for row in script_only.line_qa] == apertium_es_en(
        ["Buenos días, amigo.", "Me gusta mucho el café."]
    )
    assert [f.line for f in script_only.flags if f.check == "meaning"] == [1]


def test_the_meaning_check_is_skipped_with_the_reason_when_there_is_no_back_translator(tmp_path, apertium_es_en):
    layout, outputs = dubbed_lines(tmp_path, [("Good morning.", "Buenos días.")])
    no_pair = steps.back_translator(Settings(qa=QAConfig(meaning_backend="apertium")), "es", "ja")
    no_backend = steps.back_translator(Settings(qa=QAConfig(meaning_backend="no-such-backend")), "es", "en")
    cfg = QAConfig(back_transcribe=False)
    for hook, reason in ((no_pair, "no route es->ja"), (no_backend, "unknown translation backend")):
        report = qa.quality_report(layout, "es", outputs, cfg, qa.Thresholds(), metric="wer", hear=None, mouth=None,
                                   translate_back=hook)  # fmt: skip
        assert report.meaning["note"].startswith("meaning check skipped") and reason in report.meaning["note"]
        assert report.line_qa[0].meaning_chrf is None and "meaning" not in {f.check for f in report.flags}
    off = qa.quality_report(layout, "es", outputs, QAConfig(back_transcribe=False, meaning=False), qa.Thresholds(),
                            metric="wer", hear=None, mouth=None, translate_back=no_pair)  # fmt: skip
    assert off.meaning == {"note": "meaning check off (qa.meaning)"}
    working = steps.back_translator(Settings(qa=QAConfig(meaning_backend="apertium")), "es", "en")
    assert working(["Buenos días.", "Gracias."]) == apertium_es_en(["Buenos días.", "Gracias."])


def test_verdict_words_follow_the_reports_own_thresholds():
    from dubbing.review import verdict

    limits = {"max_error_rate": 0.5, "min_meaning_chrf": 20.0}
    heard = {"metric": "wer", "error_rate": 0.1}
    good = {"thresholds": limits, "intelligibility": heard, "meaning": {"mean_chrf": 60.0}, "flags": []}
    assert verdict(good) == ("good", "WER 0.10, meaning chrF 60")
    flagged = {**good, "flags": [{"line": 2}, {"line": 2}, {"line": 5}]}
    assert verdict(flagged)[0] == "check 2 lines"
    assert verdict({**good, "intelligibility": {**heard, "error_rate": 0.9}})[0] == "unusable"
    assert verdict({**good, "meaning": {"mean_chrf": 12.0}})[0] == "unusable"
    assert "below its goal" in verdict({**good, "below_goal": ["chrF 50 (goal 65)"]})[1]
