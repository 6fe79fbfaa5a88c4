"""Diarization, word attribution, utterance grouping and speaker profiles on real speech."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soundfile as sf

from dubbing import asr, backends, diarize
from dubbing.errors import DubbingError
from dubbing.types import SpeakerTurn, Transcript, Word
from tests.conftest import media_file


@pytest.fixture(scope="module")
def diarizer() -> diarize.CampplusDiarizer:
    return backends.build(diarize.BACKENDS, "campplus", "diarization")


@pytest.fixture(scope="module")
def call(media_dir, diarizer) -> tuple[Transcript, list[SpeakerTurn]]:
    """The two-speaker phone call: ASR words and CAM++ turns."""
    audio = media_dir / "pyannote_sample.wav"
    transcript = backends.build(asr.BACKENDS, "faster-whisper", "ASR").transcribe(audio)
    return transcript, diarizer.diarize(audio)


@pytest.fixture(scope="module")
def attributed(call) -> Transcript:
    transcript, turns = call
    return diarize.attribute(transcript, turns)


def test_phone_call_has_two_speakers_and_few_misattributed_words(call, attributed, media_dir):
    _, turns = call
    assert {t.speaker for t in turns} == {"S1", "S2"}
    assert all(t.start < t.end for t in turns)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(turns, turns[1:], strict=False))  # no overlaps
    words = [w for u in attributed.utterances for w in u.words]
    error = diarize.word_speaker_error(words, diarize.read_rttm(media_dir / "pyannote_sample.rttm"))
    assert error <= 0.2, error


def test_words_are_never_split_or_lost_and_utterances_have_one_speaker(call, attributed):
    transcript, _ = call
    before = [(w.start, w.end, w.word) for u in transcript.utterances for w in u.words]
    after = [(w.start, w.end, w.word) for u in attributed.utterances for w in u.words]
    assert after == before
    for u in attributed.utterances:
        assert {w.speaker for w in u.words} == {u.speaker}
        assert (u.start, u.end) == (u.words[0].start, u.words[-1].end)
        assert u.duration <= 10.0
    lines = attributed.utterances
    for i, u in enumerate(lines):  # a line under 1 s has no line of the same speaker within 1.2 s to join
        if u.duration < 1.0:
            near = [v for v in lines[max(0, i - 1) : i + 2] if v is not u and v.speaker == u.speaker]
            assert all(min(abs(v.start - u.end), abs(u.start - v.end)) > 1.2 for v in near), u


def test_single_speaker_recording_is_one_speaker(diarizer):
    turns = diarizer.diarize(media_file("latentsync_demo2_audio.wav"))
    assert turns and {t.speaker for t in turns} == {"S1"}


def test_speaker_count_override(diarizer, media_dir):
    turns = diarizer.diarize(media_dir / "pyannote_sample.wav", speakers=1)
    assert {t.speaker for t in turns} == {"S1"}


def test_silence_has_no_turns(diarizer, tmp_path):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(16000 * 3, dtype=np.float32), 16000)
    assert diarizer.diarize(silent) == []


def test_none_backend_finds_no_turns_and_everyone_is_s1(call):
    transcript, _ = call
    diarizer = backends.build(diarize.BACKENDS, "none", "diarization")
    turns = diarizer.diarize(media_file("pyannote_sample.wav"), speakers=2)
    assert turns == []
    assert {u.speaker for u in diarize.attribute(transcript, turns).utterances} == {"S1"}


def test_backend_options_are_the_backends_own():
    allowed = "allowed: duplicate_cos, merge_cos"
    with pytest.raises(DubbingError, match=f"unknown key 'token_secret' for backend campplus; {allowed}"):
        backends.build(diarize.BACKENDS, "campplus", "diarization", {"token_secret": "hf"})
    with pytest.raises(DubbingError, match="merge_cos"):
        backends.build(diarize.BACKENDS, "campplus", "diarization", {"merge_cos": 1.5})
    assert backends.build(diarize.BACKENDS, "campplus", "diarization", {"merge_cos": 0.8}).merge_cos == 0.8
    assert set(diarize.PyannoteDiarizer.Options.model_fields) == {"model", "token_secret"}


def _words(spec: list[tuple[float, float, str, str]]) -> list[Word]:
    return [Word(start=s, end=e, word=w, speaker=spk) for s, e, w, spk in spec]


def test_long_monologue_is_split_at_a_sentence_end_within_bounds():
    # 40 words of 0.3 s: 12 s without a pause; sentence ends after words 14 and 29
    spec = []
    for i in range(40):
        text = f"w{i}." if i in (14, 29) else f"w{i}"
        spec.append((i * 0.3, i * 0.3 + 0.28, text, "S1"))
    lines = diarize.make_utterances(_words(spec), min_s=1.0, max_s=10.0, pause_s=0.6)
    assert [w.word for u in lines for w in u.words] == [s[2] for s in spec]
    assert all(1.0 <= u.duration <= 10.0 for u in lines)
    assert all(u.words[-1].word.endswith(".") for u in lines[:-1])


def test_pause_and_speaker_change_end_a_line():
    words = _words(
        [(0.0, 0.5, "Hello", "S1"), (0.6, 1.2, "there", "S1"), (2.5, 3.0, "Hi", "S1"), (3.1, 3.6, "you", "S2")]
    )
    lines = diarize.make_utterances(words, pause_s=0.6)
    assert [u.text for u in lines] == ["Hello there", "Hi", "you"]
    assert [u.speaker for u in lines] == ["S1", "S1", "S2"]


def test_word_on_a_turn_boundary_goes_to_the_speaker_with_more_overlap():
    turns = [SpeakerTurn(start=0, end=1.0, speaker="S1"), SpeakerTurn(start=1.0, end=2.0, speaker="S2")]
    words = _words([(0.7, 1.1, "mostly-one", None), (0.95, 1.5, "mostly-two", None), (5.0, 5.2, "late", None)])
    assert [w.speaker for w in diarize.assign_speakers(words, turns)] == ["S1", "S2", "S2"]


def test_word_speaker_error_counts_unlabelled_words_as_a_label_of_their_own():
    # some words without a speaker (None) among labelled ones: scored, not a TypeError from sorting None with str
    reference = [SpeakerTurn(start=0, end=1.0, speaker="A"), SpeakerTurn(start=1.0, end=2.0, speaker="B")]
    words = _words([(0.1, 0.4, "one", "S1"), (0.5, 0.8, "two", "S1"), (1.1, 1.4, "three", None), (1.5, 1.8, "x", "S1")])
    assert diarize.word_speaker_error(words, reference) == 0.25


def test_speaker_profiles_describe_each_speaker(attributed, media_dir, tmp_path):
    profiles = diarize.speaker_profiles(attributed, media_dir / "pyannote_sample.wav", tmp_path)
    assert [p.speaker for p in profiles] == ["S1", "S2"]
    for p in profiles:
        data, rate = sf.read(p.reference_clip)
        assert 1.0 <= len(data) / rate <= 10.0
        assert abs(len(data) / rate - (p.reference_end - p.reference_start)) < 0.05
        assert p.median_pitch_hz is not None and 60 <= p.median_pitch_hz <= 500
        assert len(p.embedding) == 192 and abs(np.linalg.norm(p.embedding) - 1) < 1e-3
        assert p.talk_time_s > 3
        others = [u for u in attributed.utterances if u.speaker != p.speaker]
        assert not any(u.start < p.reference_end and u.end > p.reference_start for u in others)
    similarity = float(np.dot(profiles[0].embedding, profiles[1].embedding))
    assert similarity < 0.9  # two different people


@pytest.mark.skipif(importlib.util.find_spec("pyannote") is not None, reason="pyannote.audio installed")
def test_pyannote_backend_without_its_extra_is_a_clear_error():
    with pytest.raises(DubbingError, match="pyannote-audio"):
        backends.build(diarize.BACKENDS, "pyannote", "diarization")


def test_pyannote_backend_on_the_phone_call(media_dir):
    if importlib.util.find_spec("pyannote") is None:
        pytest.skip("pyannote-audio is an optional extra (it needs torchaudio/torchcodec builds) and is not installed")
    try:
        diarizer = backends.build(diarize.BACKENDS, "pyannote", "diarization")
    except DubbingError as exc:
        pytest.skip(f"pyannote/speaker-diarization-3.1 not obtainable here: {exc}")
    turns = diarizer.diarize(media_dir / "pyannote_sample.wav")
    assert {t.speaker for t in turns} == {"S1", "S2"}


def test_three_real_speakers_taking_turns_are_told_apart(diarizer, tmp_path):
    """Three different people from the shared media, alternating with half-second pauses."""
    from dubbing.vad import read_analysis_audio

    sources = {
        "A": read_analysis_audio(media_file("latentsync_demo2_audio.wav")),
        "B": read_analysis_audio(media_file("vrt_face4.mp4")),
        "C": read_analysis_audio(media_file("musetalk_eng.wav")),
    }
    plan = [("A", 0, 6), ("B", 0, 4), ("C", 3, 8), ("A", 6, 11), ("B", 4, 6.5), ("C", 12, 17), ("A", 11, 16)]
    pieces, reference, t = [], [], 0.0
    for speaker, start, end in plan:
        piece = sources[speaker][int(start * 16000) : int(end * 16000)]
        pieces += [piece, np.zeros(8000, dtype=np.float32)]
        reference.append(SpeakerTurn(start=t, end=t + len(piece) / 16000, speaker=speaker))
        t += len(piece) / 16000 + 0.5
    path = tmp_path / "three.wav"
    sf.write(path, np.concatenate(pieces), 16000)
    turns = diarizer.diarize(path)
    assert len({x.speaker for x in turns}) == 3
    # one pseudo-word per 0.1 s of reference speech, scored like real words
    probes = [
        Word(start=s, end=s + 0.1, word="x", speaker=None)
        for ref in reference
        for s in np.arange(ref.start + 0.05, ref.end - 0.1, 0.1)
    ]
    labelled = diarize.assign_speakers(probes, turns)
    assert diarize.word_speaker_error(labelled, reference) <= 0.1


def test_speaker_change_moves_to_the_pause_at_a_sentence_end():
    # acoustic turns switched 0.2 s early, inside "you were | there."; the pause after "there." is the real change
    words = _words(
        [
            (8.9, 9.1, "I", "S1"),
            (9.1, 9.3, "know", "S1"),
            (9.3, 9.45, "you", "S1"),
            (9.45, 9.5, "were", "S1"),
            (9.5, 9.7, "there.", "S2"),
            (10.0, 10.3, "Neither", "S2"),
            (10.3, 10.5, "did", "S2"),
            (10.5, 10.7, "I.", "S2"),
        ]
    )
    snapped = diarize.snap_changes(words)
    assert [w.speaker for w in snapped] == ["S1"] * 5 + ["S2"] * 3
    far = _words([(0.0, 0.5, "Hello.", "S1"), (0.6, 1.0, "yes", "S1"), (3.0, 3.4, "no", "S2")])
    assert [w.speaker for w in diarize.snap_changes(far)] == ["S1", "S1", "S2"]  # nothing closer to move to


def test_a_short_line_joins_its_speakers_neighbour_but_a_lone_reply_stays():
    words = _words(
        [
            (0.0, 0.4, "Hello.", "S1"),
            (1.2, 1.6, "How", "S1"),
            (1.6, 1.9, "are", "S1"),
            (1.9, 2.5, "you?", "S1"),
            (2.8, 3.2, "Fine.", "S2"),
            (4.0, 4.5, "Good", "S1"),
            (4.5, 5.2, "to", "S1"),
            (5.2, 5.8, "hear.", "S1"),
        ]
    )
    lines = diarize.make_utterances(words, min_s=1.0, max_s=10.0, pause_s=0.6)
    expected = [("S1", "Hello. How are you?"), ("S2", "Fine."), ("S1", "Good to hear.")]
    assert [(u.speaker, u.text) for u in lines] == expected


def test_reference_clips_are_cut_from_the_full_quality_audio_when_given(attributed, media_dir, tmp_path):
    from dubbing import media

    full = media.extract_mix_audio(media_dir / "pyannote_sample.wav", tmp_path / "mix.wav")  # 48 kHz stereo
    profiles = diarize.speaker_profiles(
        attributed, media_dir / "pyannote_sample.wav", tmp_path / "speakers", reference_audio=full
    )
    for p in profiles:
        data, rate = sf.read(p.reference_clip)
        assert rate == 48000 and data.ndim == 1
        assert abs(len(data) / rate - (p.reference_end - p.reference_start)) < 0.01


def test_a_looped_minute_of_one_man_is_one_speaker(diarizer, tmp_path):
    """vrt_face1's 6 s looped to a minute: the same phrases heard ten times once fell apart into three speakers
    (each window's strongest links were its own repeats); repeated windows are now set aside."""
    import subprocess

    looped = tmp_path / "loop.wav"
    src = media_file("vrt_face1.mp4")
    cmd = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "9", "-i", str(src), "-vn", "-ac", "1", "-ar", "16000"]
    subprocess.run([*cmd, str(looped)], check=True)
    assert sf.info(str(looped)).duration > 55
    turns = diarizer.diarize(looped)
    assert turns and {t.speaker for t in turns} == {"S1"}


def test_repeated_windows_take_the_label_of_the_one_they_repeat():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 192)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    emb = np.concatenate([base, base + 0.01 * rng.normal(size=base.shape).astype(np.float32)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    keep, same_as = diarize.distinct_windows(emb, 0.92)
    assert keep.tolist() == [0, 1, 2] and same_as.tolist() == [0, 1, 2, 0, 1, 2]
    labels = diarize.cluster(emb)  # too few distinct windows to estimate a count: one speaker
    assert labels.tolist() == [0] * 6
