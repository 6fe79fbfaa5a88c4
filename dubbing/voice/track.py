"""The voice stage's work for one language: a voice for every speaker, then every line spoken in it and fitted
to its slot on the dub timeline.

The stage reaches TTS only through the `Synthesizer` it is handed (declared here, so it never imports the TTS
stage) and translation only through the `Shorten` hook. It writes the dub voice WAV and its caches; the step layer
writes script.json, voices.json and track.json from what it returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import soundfile as sf

from dubbing import media, progress, speaker_embedding
from dubbing.backends import build, capable
from dubbing.config import TimingConfig, TTSConfig
from dubbing.errors import DubbingError
from dubbing.files import write_json
from dubbing.types import (
    DubTrack,
    PlacedClip,
    Script,
    ScriptLine,
    SourceSpeaker,
    SpeakerProfile,
    Stretch,
    Transcript,
    VoiceMatch,
)
from dubbing.voice.match import (
    MATCHERS,
    VoiceBank,
    VoiceMatcher,
    bank_cache_key,
    parse_voice,
    probe_table_key,
    shift_voice,
    write_clip,
)
from dubbing.voice.timing import SHORTENED, Fit, RateEstimator, Window, conform, place_clips, plan_speed, window_for

SHORTEN_ROUNDS = 2  # a shortened line still too long is asked once more, from its shorter text
DEFAULT_RATE = 24_000  # the voice track's rate when no line was spoken (an all-silent track)


class Synthesizer(Protocol):
    """What the voice stage needs of a TTS backend. `capabilities` may hold 'blend' (a voice may be a weighted mix
    'a*0.6+b*0.4'), 'clone' (a voice is a reference clip's path: no bank to search), 'probe-table' (see
    `ProbeTableSynthesizer`) and 'concurrent' (two threads may synthesise at once: the next line is spoken
    ahead); `revision` changes when the backend's voices sound different (cached probes go)."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def revision(self) -> str: ...

    def voices(self, language: str) -> list[str]: ...

    def default_voice(self, language: str) -> str: ...

    def synthesize(
        self, text: str, *, language: str, voice: str | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """`text` spoken (`speed` > 1 faster): mono float32 samples, silence trimmed, and their rate."""
        ...


class ProbeTableSynthesizer(Synthesizer, Protocol):
    """A backend with the 'probe-table' capability: its bank has packaged probe embeddings (match.load_probe_table)."""

    def probe_key(self, language: str, text: str) -> tuple[str, str, str, str, str]:
        """(backend, model sha256, voices sha256, language, text): what a voice's probe clip depends on."""
        ...


Shorten = Callable[[ScriptLine, float, float], "str | None"]
"""Hook into translation: (line, seconds it must fit, seconds it takes now) -> a shorter text, or None."""


def source_speakers(
    transcript: Transcript, profiles: list[SpeakerProfile] | None, audio: Path, clips_dir: Path, max_s: float = 30.0
) -> list[SourceSpeaker]:
    """What voice matching needs per speaker. Diarization's profiles when given; otherwise a reference clip cut
    from `audio` (the separated speech when there is one) over each speaker's longest utterances, up to `max_s`,
    written to `clips_dir/SPEAKER.wav`. A speaker with too little speech to embed is left out: it gets the default
    voice."""
    if profiles:
        return [
            SourceSpeaker(speaker=p.speaker, reference_clip=p.reference_clip, median_pitch_hz=p.median_pitch_hz)
            for p in profiles
            if p.reference_clip and sf.info(p.reference_clip).duration >= speaker_embedding.MIN_SECONDS
        ]
    samples, rate = media.read_audio(audio)
    speakers = []
    for speaker in transcript.speakers:
        pieces, total = [], 0
        for u in sorted((u for u in transcript.utterances if u.speaker == speaker), key=lambda u: -u.duration):
            piece = samples[int(u.start * rate) : int(u.end * rate)]
            pieces.append(piece)
            total += len(piece)
            if total >= max_s * rate:
                break
        if total < speaker_embedding.MIN_SECONDS * rate:
            continue
        clip = media.write_audio(Path(clips_dir) / f"{speaker}.wav", np.concatenate(pieces), rate)
        speakers.append(SourceSpeaker(speaker=speaker, reference_clip=str(clip)))
    return speakers


def match_voices(
    speakers: list[SourceSpeaker],
    language: str,
    synth: Synthesizer,
    cfg: TTSConfig,
    *,
    probe_text: str | None,
    cache_dir: Path,
) -> dict[str, VoiceMatch]:
    """Each speaker's voice in this language (once per video and language), by the configured matcher (`cfg.match`;
    cloning backends clone). Voices named in `cfg.voices` are kept as named. Each bank voice is heard saying
    `probe_text` (the language record's); a matcher that must hear one fails in one line when the record has none.
    Probe clips are cached in `cache_dir`."""
    matcher: VoiceMatcher = build(MATCHERS, "clone" if capable(synth, "clone") else cfg.match, "voice matching")
    probe_text = probe_text or ""

    def speak(voice: str) -> tuple[np.ndarray, int]:
        if not probe_text.strip():
            raise DubbingError(
                f"language {language} has no probe_text (configs/languages/{language}.yaml): voice matching "
                "needs a sentence of about three seconds to hear each voice say"
            )
        return synth.synthesize(probe_text, language=language, voice=voice)

    table_key = ""
    if capable(synth, "probe-table") and probe_text.strip():
        table_key = probe_table_key(*cast(ProbeTableSynthesizer, synth).probe_key(language, probe_text))
    bank = VoiceBank(
        backend=synth.name,
        speak=speak,
        voices=synth.voices(language),
        default_voice=cfg.voice or synth.default_voice(language),
        can_blend=capable(synth, "blend"),
        clones=capable(synth, "clone"),
        cache_dir=cache_dir,
        cache_key=bank_cache_key(language, probe_text, synth.revision),
        table_key=table_key,
        probe_text=probe_text,
        language=language,
        traits=getattr(synth, "traits", None),  # (language, gender) of a voice: what casting keeps and prefers
    )
    return matcher.match(speakers, bank, dict(cfg.voices)) if speakers else {}


def line_stretches(start: float, end: float, fit: Fit) -> list[Stretch]:
    """The spans of the source a line's fit slows down: its window from where its dub starts to `end`, and a hold
    at `end` for what the slow-down's limit could not give."""
    spans = [Stretch(start=start, end=end, added_s=fit.slowed_s)] if fit.slowed_s > 0 else []
    return spans + ([Stretch(start=end, end=end, added_s=fit.held_s)] if fit.held_s > 0 else [])


def stretch_note(span: Stretch) -> str:
    if span.held:
        return f"picture held at {span.start:.2f}s of the source for {span.added_s:.3f}s (the slow-down's limit)"
    where = f"from {span.start:.2f}s to {span.end:.2f}s of the source"
    return f"picture slowed x{span.factor:.3f} {where} (+{span.added_s:.3f}s)"


def speak_track(
    script: Script,
    synth: Synthesizer,
    tts: TTSConfig,
    timing: TimingConfig,
    *,
    duration_s: float,
    voices: dict[str, VoiceMatch],
    voice_wav: Path,
    clip_cache: Path | None,
    shorten: Shorten | None = None,
) -> tuple[Script, DubTrack]:
    """Speak each line in its speaker's voice at its original start, fitted to its slot (the rule is in
    voice.timing); a line that cannot fit even at the maximum speed-up goes to `shorten` (again from the shorter
    text while it still cannot, `SHORTEN_ROUNDS` in all); then, with `timing.slow_picture`, the source over its
    window is slowed down a little (a `Stretch` of the track: every later time moves by what it adds, so the
    track, the script's dub times and the voice WAV are on the dub's longer timeline); a line that still cannot
    fit is marked `over_limit`. Writes `voice_wav` (the dub voice alone) and reuses or fills `clip_cache`.
    Returns the script with each line's synthesised length, speed and voice, and the placed track."""
    lines_in = sorted(script.lines, key=lambda line: line.start)
    estimators: dict[str, RateEstimator] = {}
    clips: list[tuple[float, np.ndarray]] = []
    placed: list[PlacedClip] = []
    lines: list[ScriptLine] = []
    rate = None
    slowdown = timing.max_picture_slowdown if timing.slow_picture else 0.0
    stretches: list[Stretch] = []
    shift = 0.0  # what the stretches so far add: a source time after them is this much later on the dub's timeline
    previous_end: float | None = None  # where the dub before ends, in source time (windows are in source time)

    def setting(i: int, previous_end: float | None) -> tuple[Window, VoiceMatch, RateEstimator]:
        """Line i's window (after a dub ending at `previous_end`), its voice and that voice's rate so far."""
        line, nxt = lines_in[i], (lines_in[i + 1] if i + 1 < len(lines_in) else None)
        window = window_for(
            line.start,
            line.end,
            line.speaker,
            (nxt.start, nxt.speaker) if nxt else None,
            duration_s,
            far_gap_s=timing.far_gap_s,
            guard_s=timing.guard_s,
            previous_end=previous_end,
            max_lead_s=timing.max_lead_s,
        )
        match = voices.get(line.speaker) or parse_voice(
            tts.voices.get(line.speaker, tts.voice) or synth.default_voice(script.language), synth.name, line.speaker
        )
        return window, match, estimators.setdefault(match.voice, RateEstimator(match.seconds_per_char))

    with _SpeakAhead(synth, script.language, timing.max_speedup, slowdown, clip_cache) as ahead:
        for i, line in enumerate(lines_in):
            window, match, estimator = setting(i, previous_end)
            if i + 1 < len(lines_in):  # the next line is spoken on another core while this one is fitted
                ahead.submit(i + 1, lines_in[i + 1].text, *setting(i + 1, previous_end))
            text, notes = line.text, list(line.notes)
            if not text.strip():
                lines.append(
                    line.model_copy(
                        update={"synth_s": 0.0, "speed": 1.0, "voice": match.label, "over_limit": False, "fit": []}
                    )
                )
                continue
            progress.advance(i, len(lines_in), "lines")
            fit_args = (script.language, match, window, estimator, timing.max_speedup, clip_cache, slowdown)
            audio, rate, natural_s, fit = _speak_line(synth, text, *fit_args, first=ahead.take(i))
            shortened = line.length_action in ("shortened", "shortened_over")  # by the translate stage's estimate
            for _ in range(SHORTEN_ROUNDS if timing.shorten else 0):
                if not (fit.over_limit or fit.added_s > 0) or shorten is None:  # a shorter text before a slower picture
                    break
                asked = line.model_copy(update={"text": text})
                shorter = shorten(asked, (fit.available_s - fit.added_s) * timing.max_speedup, natural_s)
                if not (shorter and shorter.strip() and shorter != text):
                    break
                notes.append(f"shortened by the translation stage (was: {text})")
                text, shortened = shorter, True
                audio, rate, natural_s, fit = _speak_line(synth, text, *fit_args)
            clip_s = len(audio) / rate
            actions = [SHORTENED] * shortened + fit.actions
            if fit.over_limit:
                notes.append(
                    f"does not fit: {natural_s:.2f}s of speech for {fit.available_s:.2f}s even at "
                    f"x{timing.max_speedup}; cut by {fit.cut_s:.2f}s"
                )
            spans = line_stretches(round(line.start - fit.lead_s, 3), round(window.hard_end, 3), fit)
            notes += [stretch_note(span) for span in spans]
            start = round(line.start - fit.lead_s + shift, 3)  # on the dub's timeline
            hard_end = window.hard_end + shift + fit.added_s
            lines.append(
                line.model_copy(
                    update={
                        "text": text,
                        "synth_s": round(clip_s, 3),
                        "natural_s": round(natural_s, 3),
                        "fit_end": round(hard_end, 3),
                        "speed": fit.speed,
                        "over_limit": fit.over_limit,
                        "dub_start": start,
                        "fit": actions,
                        "cut_s": round(fit.cut_s, 3) if fit.over_limit else None,
                        "voice": match.label,
                        "notes": notes,
                    }
                )
            )
            clips.append((start, audio))
            end = min(start + clip_s, hard_end)
            stretches += spans
            shift = round(shift + fit.added_s, 3)
            previous_end = window.hard_end if spans else round(end, 3) - shift  # a slowed line fills its window
            placed.append(
                PlacedClip(
                    index=line.index,
                    start=start,
                    end=round(end, 3),
                    speed=fit.speed,
                    over_limit=fit.over_limit,
                    fit=actions,
                    cut_s=round(fit.cut_s, 3),
                )
            )
    rate = rate or DEFAULT_RATE
    total_s = round(duration_s + shift, 6) if stretches else duration_s
    voice_path = media.write_audio(voice_wav, place_clips(clips, rate, total_s), rate)
    track = DubTrack(
        language=script.language,
        voice_path=str(voice_path),
        sample_rate=rate,
        duration_s=total_s,
        clips=placed,
        voices=voices,
        stretches=stretches,
    )
    return script.model_copy(update={"lines": lines}), track


def dub_timings(script: Script, track: DubTrack | None) -> list[tuple[float, float, str]]:
    """(start, end, text) of every line where its dub is heard (track.json), not the source's slot: what the dub's
    subtitles show. A line the track did not place (nothing to say), or every line without a track (a
    subtitles-only run), keeps its slot."""
    placed = {clip.index: clip for clip in track.clips} if track is not None else {}
    return [
        (placed[line.index].start, placed[line.index].end, line.text)
        if line.index in placed
        else (line.start, line.end, line.text)
        for line in script.lines
    ]


Said = tuple[np.ndarray, int, float]  # a line spoken and shifted into its speaker's voice: audio, rate, speed


class _SpeakAhead:
    """Speaks the next line beside this one, for a backend that can synthesise from two threads at once
    ('concurrent'); otherwise it does nothing. The next line's speed is
    guessed from its voice's rate as known one line earlier; `_speak_line` keeps that take when the fitted speed
    is within the same 8% as its own guess would be, so the result does not depend on which thread got there
    first, only on the lines."""

    def __init__(
        self,
        synth: Synthesizer,
        language: str,
        max_speedup: float,
        max_slowdown: float,
        cache_dir: Path | None,
    ) -> None:
        self.synth, self.language, self.max_speedup, self.max_slowdown = synth, language, max_speedup, max_slowdown
        self.cache_dir = cache_dir
        # two workers: while the stage waits for this line's take, the next one is spoken beside it
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="speak-ahead") if capable(synth, "concurrent") else None
        self.pending: dict[int, Future[Said]] = {}

    def submit(self, index: int, text: str, window: Window, match: VoiceMatch, estimator: RateEstimator) -> None:
        if self.pool is None or not text.strip():
            return
        parts = _line_parts(self.synth, text, self.language, match, window, self.max_speedup, self.max_slowdown)
        if self.cache_dir and (self.cache_dir / f"{_line_key(parts)}.json").exists():
            return  # spoken in an earlier run: the line cache has it
        speed = _guess_speed(estimator, text, window, self.max_speedup, self.max_slowdown)
        self.pending[index] = self.pool.submit(_say, self.synth, text, self.language, match, speed)

    def take(self, index: int) -> Future[Said] | None:
        return self.pending.pop(index, None)

    def __enter__(self) -> _SpeakAhead:
        return self

    def __exit__(self, *_exc: object) -> None:
        """Ends the workers however the loop ends: lines queued ahead are dropped, not spoken."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _say(synth: Synthesizer, text: str, language: str, match: VoiceMatch, speed: float) -> Said:
    audio, rate = synth.synthesize(text, language=language, voice=match.voice, speed=speed)
    return shift_voice(audio, rate, match), rate, speed


def _guess_speed(estimator: RateEstimator, text: str, window: Window, max_speedup: float, max_slowdown: float) -> float:
    guess = estimator.estimate(text)
    return plan_speed(guess, window, max_speedup, max_slowdown).speed if guess else 1.0


def _line_parts(
    synth: Synthesizer,
    text: str,
    language: str,
    match: VoiceMatch,
    window: Window,
    max_speedup: float,
    max_slowdown: float,
) -> list:
    """What a spoken line depends on (its line-cache key is made from these)."""
    sound = match.model_dump(include={"backend", "voice", "pitch_hz", "formant_ratio", "pitch_range", "eq_db"})
    # the window less how early the line may start (an edit of the line before changes that): a line that did
    # not need to start early is reused when its neighbour is edited, as long as it gets the same length
    slot = {k: v for k, v in dataclasses.asdict(window).items() if k != "earliest"}
    return [synth.name, text, language, sound, slot, max_speedup] + ([max_slowdown] if max_slowdown else [])


def _speak_line(
    synth: Synthesizer,
    text: str,
    language: str,
    match: VoiceMatch,
    window: Window,
    estimator: RateEstimator,
    max_speedup: float,
    cache_dir: Path | None = None,
    max_slowdown: float = 0.0,
    first: Future[Said] | None = None,
) -> tuple[np.ndarray, int, float, Fit]:
    """Synthesise one line at the speed it needs (guessed from the voice's rate so far, so usually once; `first`:
    the take spoken ahead at a guessed speed), apply the speaker's voice shift, and conform it to its fitted
    length. Returns audio, rate, natural length and the fit. With `cache_dir`, a line already spoken with the
    same text, voice and window is reused, so editing one line of script.json re-speaks only that line."""
    parts = _line_parts(synth, text, language, match, window, max_speedup, max_slowdown)
    key = _line_key(parts)
    cached = _load_line(cache_dir, key) if cache_dir else None
    if cached is not None:
        audio, rate, natural_s, made_s = cached
        fit = plan_speed(natural_s, window, max_speedup, max_slowdown)
        if made_s is None or abs(fit.target_s - made_s) < 1e-3:
            estimator.update(text, natural_s)
            return audio, rate, natural_s, fit

    def say(speed: float) -> tuple[np.ndarray, int]:
        audio, rate, _ = _say(synth, text, language, match, speed)
        return audio, rate

    if first is not None:
        audio, rate, speed = first.result()
    else:
        speed = _guess_speed(estimator, text, window, max_speedup, max_slowdown)
        audio, rate = say(speed)
    natural_s = len(audio) / rate * speed  # engine rate controls are close to proportional
    fit = plan_speed(natural_s, window, max_speedup, max_slowdown)
    if abs(fit.speed / speed - 1.0) > 0.08:  # the guess was off: synthesise at the right rate
        speed = fit.speed
        audio, rate = say(speed)
        natural_s = len(audio) / rate * speed
        fit = plan_speed(natural_s, window, max_speedup, max_slowdown)
    estimator.update(text, natural_s)
    audio = conform(audio, rate, fit.target_s)
    if cache_dir:
        _save_line(cache_dir, key, audio, rate, natural_s, fit.target_s, parts)
    return audio, rate, natural_s, fit


def _line_key(parts: list) -> str:
    """What a spoken line depends on: backend, text, language, voice, timing window, speed limit. Floats are
    rounded, so recomputing a voice match with the last digits changed still finds the line."""
    return hashlib.sha256(json.dumps(_rounded(parts), sort_keys=True, default=str).encode()).hexdigest()[:24]


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _load_line(cache_dir: Path, key: str) -> tuple[np.ndarray, int, float, float | None] | None:
    """A spoken line: its audio, its length at speed 1.0 and the length it was fitted to (None: not recorded)."""
    wav, meta = cache_dir / f"{key}.wav", cache_dir / f"{key}.json"
    if not (wav.exists() and meta.exists()):
        return None
    audio, rate = sf.read(str(wav), dtype="float32")
    saved = json.loads(meta.read_text())
    return audio, rate, float(saved["natural_s"]), saved.get("target_s")


def _save_line(
    cache_dir: Path, key: str, audio: np.ndarray, rate: int, natural_s: float, target_s: float, parts: list
) -> None:
    write_clip(cache_dir / f"{key}.wav", audio, rate)
    write_json(cache_dir / f"{key}.json", {"natural_s": natural_s, "target_s": target_s, "made_from": _rounded(parts)})
