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
    ]
    script = Script(source_language="en", language="es", translator="t", lines=lines)
    report = qa.disabled_report(script, qa.Thresholds(max_speedup=1.25))
    assert report.timing["actions"] == {
        "shortened": 1, "borrowed_after": 2, "borrowed_before": 2, "sped_up": 4, "cut": 2,
    }  # fmt: skip
    assert report.timing["borrowed"] == 4 and report.timing["cut_s"] == pytest.approx(0.4)
    rows = {row.index: row for row in report.line_qa}
    assert rows[2].start == pytest.approx(3.8)  # the row (and a click on it) starts where the dub does
    assert rows[4].fit == ["cut"] and report.lines_over_limit == [3, 4]
    page_row = review.fit_marks(rows[1].fit)
    assert "shortened" in page_row and "borrowed after" in page_row and "sped" not in page_row
    summary = dict(review.summary_rows(report.model_dump()))["timing"]
    assert "1 shortened" in summary and "2 cut" in summary and "2 borrowed before" in summary


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


def test_a_shortened_line_still_too_long_is_asked_once_more_from_its_shorter_text(tmp_path):
    from dubbing import tts, voice
    from dubbing.config import load_settings
    from dubbing.types import Script, ScriptLine

    cfg = load_settings().for_language("es")
    long_text = "Esta frase es muchísimo más larga de lo que cabe en un segundo, por rápido que se diga."
    still_long = "Esta frase es mucho más larga de lo que cabe en un segundo."
    lines = [
        ScriptLine(index=0, speaker="A", start=0.0, end=1.0, source_text="No", text=long_text),
        ScriptLine(index=1, speaker="B", start=1.4, end=3.0, source_text="Ok", text="Vale."),
    ]
    asked: list[str] = []

    def shorten(line, budget_s, natural_s):
        asked.append(line.text)
        return {long_text: still_long, still_long: "Es larga."}.get(line.text)

    script = Script(source_language="en", language="es", translator="test", lines=lines)
    fitted, track = voice.speak_track(
        script, tts.backend_for(cfg, "espeak"), cfg.tts, cfg.timing, duration_s=3.5, voices={},
        voice_wav=tmp_path / "v.wav", clip_cache=None, shorten=shorten,
    )  # fmt: skip
    assert asked == [long_text, still_long]  # the second request is about the text now spoken
    first = fitted.lines[0]
    assert first.text == "Es larga." and not first.over_limit and first.fit[0] == "shortened"
    assert track.clips[0].fit == first.fit and "cut" not in first.fit
