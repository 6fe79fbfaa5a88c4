"""The steps of a dubbing run, declared once: the flow, the CLI's progress, `dub transcribe` and the benchmarks all
read `STEPS`.

A step is a small function over named values (`Step.inputs` -> `Step.outputs`): it calls one stage, hands it what
other stages made, and writes the run's files through `RunLayout`. Stages never import each other; this module is
where they meet. Every value a step makes can be read back from the run's files (`restore`), so one step can run on
its own in a fresh process, as a benchmark worker or a task worker would run it.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from dubbing import (
    asr,
    backends,
    diarize,
    lipsync,
    media,
    mix,
    models,
    qa,
    review,
    separate,
    subtitles,
    translate,
    tts,
    voice,
)
from dubbing.config import (
    ASRConfig,
    DiarizeConfig,
    LanguageConfig,
    OutputConfig,
    Settings,
    check_language,
    shortfalls,
)
from dubbing.errors import DubbingError
from dubbing.files import write_json, write_text
from dubbing.layout import RunLayout, layout_for, manifest_of
from dubbing.types import (
    FIT_ACTIONS,
    DubTrack,
    FaceTracks,
    LanguageOutputs,
    Manifest,
    MediaInfo,
    QAReport,
    Script,
    ScriptLine,
    SpeakerProfile,
    StretchedSource,
    Transcript,
    VoiceMatch,
    stretched_time,
)

log = logging.getLogger(__name__)

Scope = Literal["source", "language", "summary"]


@dataclass(frozen=True)
class Step:
    """One step of a run. Its function's parameters name the values it reads (`inputs`); `outputs` name what it
    returns (a tuple when more than one). `scope`: once per video before the languages (source), once per
    language, or once per video after every language (summary)."""

    name: str
    run: Callable[..., Any]
    outputs: tuple[str, ...]
    scope: Scope
    retries: int = 0  # retried on faults (timeouts, connection errors), never on a user's bad input
    cached: bool = True  # persisted and keyed on the inputs' content, so a rerun resumes after the last finished
    reuse: Callable[[dict[str, Any]], Any] | None = None  # a value the user supplied instead of running it
    deferred: bool = False  # not waited for by `run_graph`: only the later steps that read its outputs wait

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.run).parameters)


Context = dict[str, Any]
"""The named values of a run: `video`, `audio` (the --audio file or None), `settings`, `layout`; per language also
`lang` and `cfg` (its LanguageConfig); and every step's outputs. `output` (settings.output: what the video holds)
is read back from `settings`; it is a value of its own so that choosing other subtitles or another container
changes the cache key of only the steps that read it (a Settings' cache fingerprint leaves it out)."""


# ---------------------------------------------------------------- once per video


def probe_source(video: Path, audio: Path | None = None, audio_track: int | None = None) -> MediaInfo:
    """Check the input before any work: a video, with speech in it or given separately as `audio`; `audio_track`
    (from 1; None: the first) is the audio stream of that speech to dub."""
    info = media.probe(video)
    if not info.has_video:
        raise DubbingError(
            f"{video} has no video stream; to make a talking video from a photo and this audio, "
            f"use `dub avatar PHOTO {video}`"
        )
    if audio is not None:
        if not media.probe(audio).has_audio:
            raise DubbingError(f"{audio} has no audio stream")
    elif not info.has_audio:
        raise DubbingError(
            f"{video} has no audio track: give the speech to translate with --audio FILE "
            f"(or re-voice it in the same language with `dub lipsync VIDEO AUDIO`)"
        )
    if audio_track is not None:
        media.check_audio_track(audio or video, audio_track)
    return info


def extract_audio(
    video: Path, audio: Path | None, info: MediaInfo, layout: RunLayout, audio_track: int | None = None
) -> tuple[Path, Path]:
    """Decode the speech (from `audio` when given, else the video; its track `audio_track`, else the first) for
    analysis (16 kHz) and for mixing (48 kHz). An `audio` longer than the picture is cut at the picture's end, with
    a warning: the dubbed video ends with its picture, so speech past it would be transcribed, translated and
    subtitled for nothing (and its subtitles would run past the picture)."""
    source, track, until = audio or video, audio_track or 1, None
    if audio is not None and (length := media.probe(audio).duration_s) > info.duration_s + 0.05:
        until = info.duration_s
        log.warning(
            "%s (%.1f s) is longer than the video %s (%.1f s): only its first %.1f s are dubbed; the last %.1f s "
            "are left out (extend the video, e.g. hold its last frame, to dub them)",
            audio.name, length, video.name, info.duration_s, until, length - until,
        )  # fmt: skip
    return (
        media.extract_analysis_audio(source, layout.analysis_wav, track, duration_s=until),
        media.extract_mix_audio(source, layout.mix_wav, track, duration_s=until),
    )


def transcriber(cfg: ASRConfig) -> asr.Transcriber:
    """The pooled ASR model: transcription and the QA back-transcription share one when their settings agree."""
    return backends.shared_build(
        "asr",
        asr.BACKENDS,
        cfg.backend,
        "ASR",
        cfg.options,
        model=cfg.model,
        compute_type=cfg.compute_type,
        beam_size=cfg.beam_size,
        vad=cfg.vad,
    )


def diarizer(cfg: DiarizeConfig) -> diarize.Diarizer:
    """The pooled diarization model (speaker embeddings)."""
    return backends.shared_build("diarize", diarize.BACKENDS, cfg.backend, "diarization", cfg.options)


def preload_source_models(settings: Settings) -> threading.Thread:
    """Load the transcription and diarization models on a thread of their own, into the pool the transcribe step
    takes them from: started while the CLI waits for the Prefect API, a new run's first step finds them loaded. A
    model that fails to load here is left to the step, which loads it again and says what is wrong."""

    def load() -> None:
        try:
            transcriber(settings.asr)
            diarizer(settings.diarize)
        except Exception:  # noqa: BLE001 - reported by the step
            log.debug("preloading the source models failed", exc_info=True)

    thread = threading.Thread(target=load, name="preload-models", daemon=True)
    thread.start()
    return thread


def transcribe(
    video: Path,
    audio: Path | None,
    analysis_wav: Path,
    settings: Settings,
    layout: RunLayout,
    audio_track: int | None = None,
) -> Transcript:
    """ASR (words with times), diarization (who speaks when), then the words grouped into speaker-labelled dubbing
    lines; writes transcript.json. An input without speech stops here: there is nothing to dub."""
    transcript = transcriber(settings.asr).transcribe(analysis_wav, language=settings.asr.language)
    cfg = settings.diarize
    turns = []
    if transcript.utterances:
        turns = diarizer(cfg).diarize(analysis_wav, speakers=cfg.speakers)
    transcript = diarize.attribute(transcript, turns, min_s=cfg.min_line_s, max_s=cfg.max_line_s, pause_s=cfg.pause_s)
    for warning in transcript.warnings:
        log.warning(warning)
    write_json(layout.transcript, transcript.model_dump())
    log.info(
        "heard %s: %d lines, %d speaker(s) (%s), %.1f s of speech in %.1f s",
        transcript.language,
        len(transcript.utterances),
        len(transcript.speakers),
        ", ".join(transcript.speakers),
        sum(u.end - u.start for u in transcript.utterances),
        transcript.duration_s,
    )
    if not transcript.utterances:
        source, track = audio or video, audio_track or 1
        where = f"{source} (audio track {track})" if audio_track else str(source)
        hint = media.other_track_hint(source, track)  # the speech may be on another track of an mkv
        raise DubbingError(f"no speech found in {where}: nothing to dub (is it music or silence?){hint}")
    return transcript


def write_source_subtitles(transcript: Transcript, layout: RunLayout) -> tuple[Path, Path]:
    lang = transcript.language
    return subtitles.write_subtitles(
        ((u.start, u.end, u.text) for u in transcript.utterances),
        layout.source_subtitles(lang, ".srt"),
        layout.source_subtitles(lang, ".vtt"),
        transcript.duration_s,
        lang,
    )


def separate_audio(
    mix_wav: Path, transcript: Transcript, settings: Settings, layout: RunLayout
) -> tuple[Path, Path] | None:
    """Split the original (48 kHz) audio into speech and background, gated by the transcript's speech times; None
    when the backend keeps no background ('none')."""
    cfg = settings.separate
    separator = backends.build(separate.BACKENDS, cfg.backend, "separation", cfg.options)
    speech = [(u.start, u.end) for u in transcript.utterances]
    return separator.separate(mix_wav, layout.speech_wav, layout.background_wav, speech=speech)


def profile_speakers(
    transcript: Transcript, analysis_wav: Path, separated: tuple[Path, Path] | None, layout: RunLayout
) -> list[SpeakerProfile]:
    """A profile per speaker (embedding, median pitch, a clean reference clip cut from the separated speech when
    there is one) for voice matching; writes source/speakers/ and source/speakers.json."""
    reference = separated[0] if separated else None
    profiles = diarize.speaker_profiles(transcript, analysis_wav, layout.speakers_dir, reference_audio=reference)
    write_json(layout.speaker_profiles, [p.model_dump() for p in profiles])
    return profiles


def track_faces(video: Path, info: MediaInfo, settings: Settings, layout: RunLayout) -> FaceTracks | None:
    """Every face tracked once per video; it needs no transcript, so it runs beside the transcription."""
    if not info.has_video or not settings.lipsync.enabled:
        return None
    return _faces_of(video, layout.tracked_faces_npz, settings)


def _faces_of(video: Path, landmarks: Path, settings: Settings) -> FaceTracks:
    """Every face of `video` tracked into `landmarks`; none where the user marked the mouth, which the render
    animates instead."""
    if settings.lipsync.mouth_box is not None:
        return lipsync.untracked(video, landmarks)
    return lipsync.track(video, landmarks, max_faces=settings.lipsync.max_faces)


def choose_speaking_faces(
    tracked_faces: FaceTracks | None, transcript: Transcript, analysis_wav: Path, layout: RunLayout
) -> FaceTracks | None:
    """Each line's speaking face (whose mouth follows the source speech), and the input checks every report
    carries."""
    if tracked_faces is None:
        return None
    faces = lipsync.speaking_faces(
        tracked_faces,
        layout.faces_npz,
        lines=[(u.start, u.end) for u in transcript.utterances],
        source_audio=analysis_wav,
    )
    write_json(layout.faces_json, faces.model_dump())
    for check in faces.checks:
        log.warning("lipsync: %s", check.message)
    return faces


# ---------------------------------------------------------------- per language


def translate_script(transcript: Transcript, lang: str, cfg: LanguageConfig, layout: RunLayout) -> Script:
    """Translate every line, shortening those that will not fit their slot at the allowed speed-up."""
    with backends.holding("llm"):  # an LLM translator's memory is free again when no language uses it
        script = translate.translate_script(
            transcript,
            lang,
            cfg.translate,
            estimate=tts.estimator(cfg),
            max_speedup=cfg.timing.max_speedup,
            length_basis=tts.length_basis(cfg),
        )
    layout.script_edited(lang).unlink(missing_ok=True)  # a fresh translation: no user's script any more
    save_script(script, layout)
    return script


def save_script(script: Script, layout: RunLayout) -> Path:
    """Write script.json and remember its hash, so a later run can tell a user's edit from our own output."""
    path = write_json(layout.script(script.language), script.model_dump())
    write_text(layout.script_stamp(script.language), hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def edited_script(context: Context) -> Script | None:
    """The script the user gave instead of a translation, else None: the file of `dub run --script` (context
    `script_file`: an SRT or WebVTT put on the transcript's lines by time, or a script.json), or script.json once
    they changed it since the pipeline wrote it. Its lines replace the translation; the voice stage re-speaks only
    the lines whose text changed. A user's script stays the run's script (LANG/.script.edited marks it): a later
    run, or a change of config that would translate again, keeps it; delete script.json to translate afresh."""
    layout, lang = context["layout"], context["lang"]
    path, stamp, kept = layout.script(lang), layout.script_stamp(lang), layout.script_edited(lang)
    if context.get("script_file") is not None:
        from dubbing.studio.script_file import imported_script

        script = imported_script(context["script_file"], context["transcript"], lang, tts.estimator(context["cfg"]))
        write_text(kept, f"imported {context['script_file']}\n")
        log.warning("%s: speaking the lines of %s instead of a translation", lang, context["script_file"])
        return script
    if not path.exists():
        return None
    if not kept.exists():
        if not stamp.exists() or hashlib.sha256(path.read_bytes()).hexdigest() == stamp.read_text().strip():
            return None
    script = _read_edited_script(path)
    if not kept.exists():
        write_text(kept, "edited\n")
    log.warning("%s was edited: using its lines instead of translating again", path)
    return script


def _read_edited_script(path: Path) -> Script:
    """A script.json the user edited, checked as far as the voice stage relies on it: one line naming the file, the
    line and the key for bytes that are not UTF-8, JSON or the script's shape, and for a time that is not a number of
    seconds from the start (NaN, negative, an end before its start)."""
    from dubbing.errors import quoted, read_user_text

    try:
        script = Script.model_validate_json(read_user_text(path, "script"))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        raise DubbingError(
            f"{path}: not a valid script after editing: {key}: {err['msg'][:200]} (got {quoted(err.get('input'))})"
        ) from None
    for i, line in enumerate(script.lines):
        for key, value in (("start", line.start), ("end", line.end)):
            if not math.isfinite(value) or value < 0:
                raise DubbingError(f"{path}: lines[{i}].{key} is {value}: a time in seconds from the start (>= 0)")
        if line.end < line.start:
            raise DubbingError(f"{path}: lines[{i}].end ({line.end}) is before its start ({line.start})")
    return script


def match_voices(
    transcript: Transcript, profiles: list[SpeakerProfile], lang: str, cfg: LanguageConfig, layout: RunLayout
) -> dict[str, VoiceMatch]:
    """Each speaker's voice in this language (a step of its own, so a cached run keeps exactly these voices)."""
    speakers = voice.source_speakers(transcript, profiles, layout.analysis_wav, layout.speakers_dir)
    matches = voice.match_voices(
        speakers,
        lang,
        tts.synthesizer_for(cfg),
        cfg.tts,
        probe_text=cfg.probe_text,
        cache_dir=models.cache_root() / "voice-bank",
    )
    write_json(layout.voices(lang), {k: v.model_dump() for k, v in matches.items()})
    for match in matches.values():
        similarity = f", similarity {match.similarity_after:.2f}" if match.similarity_after is not None else ""
        log.info("%s: %s speaks as %s%s (%s)", lang, match.speaker, match.label, similarity, match.reason or "-")
    for speaker in sorted(cfg.tts.voices.keys() - set(transcript.speakers)):
        log.warning("%s: a voice is named for %s, but this video's speakers are %s", lang, speaker,
                    ", ".join(transcript.speakers))  # fmt: skip
    return matches


def named_voices(settings: Settings, languages: list[str], voices: dict[str, str], speakers: int | None) -> list[str]:
    """Problems with voices named on the command line (`--voice S1=NAME`), found before any work starts: a speaker
    that is not S1, S2, ... (or beyond `--speakers`), a voice the language's TTS backend does not have."""
    import re

    problems = []
    for speaker, name in voices.items():
        number = re.fullmatch(r"S([1-9]\d*)", speaker)
        if not number or (speakers is not None and int(number.group(1)) > speakers):
            known = f"S1..S{speakers}" if speakers else "S1, S2, ... (as script.json and voices.json name them)"
            problems.append(f"--voice {speaker}={name}: no speaker {speaker!r}; speakers are {known}")
            continue
        for lang in languages:
            synth = tts.synthesizer_for(settings.for_language(lang))
            if (why := tts.unknown_voice(synth, lang, name)) is not None:
                problems.append(f"--voice {speaker}={name} ({lang}): {why}")
    return problems


def voice_bank(settings: Settings, languages: list[str]) -> list[dict[str, str]]:
    """The voices casting picks from in each language (`dub voices`): backend, name, the language and gender its
    name or voice file says, and its probe clip when a match has heard it saying the language's probe sentence.
    A voice offered in several languages is listed once, with each of them."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    cache = models.cache_root() / "voice-bank"
    for lang in languages:
        cfg = settings.for_language(lang)
        synth = tts.synthesizer_for(cfg)
        key = voice.bank_cache_key(lang, cfg.probe_text or "", synth.revision)
        for name in synth.voices(lang):
            own_language, gender = tts.voice_traits(synth, name)
            row = rows.setdefault(
                (synth.name, name),
                {"backend": synth.name, "voice": name, "language": own_language or "?", "gender": gender or "?",
                 "offered in": "", "probe clip": ""},
            )  # fmt: skip
            row["offered in"] = ", ".join(filter(None, [row["offered in"], lang]))
            clip = voice.probe_clip_path(cache, synth.name, name, key)
            if clip.exists() and not row["probe clip"]:
                row["probe clip"] = str(clip)
    own = languages[0].split("-")[0] if len(languages) == 1 else None  # one language: its own voices first
    return sorted(rows.values(), key=lambda r: own is not None and r["language"].split("-")[0] != own)


SCRIPT_SENTENCE = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+|\s*\n\s*")
SCRIPT_PAUSE_S, SCRIPT_EDGE_S = 0.35, 0.3  # between sentences; before the first and after the last


def script_speaker(settings: Settings, language: str, name: str | None = None) -> tuple[tts.Synthesizer, str]:
    """The TTS backend and voice that speak a script alone (`dub avatar --text`): Kokoro where it speaks the
    language (natural speech), else the language's own backend; `name` if one of them has it, else the first
    voice recorded in the language as `dub voices` lists them. An unknown language or voice is a DubbingError
    before anything is spoken."""
    cfg = settings.for_language(language)
    names = list(
        dict.fromkeys(["kokoro", cfg.tts.backend] if language in tts.KokoroSynthesizer.LANGUAGES else [cfg.tts.backend])
    )
    synths, reasons = [], []
    for backend in names:
        try:
            synths.append(tts.backend_for(cfg, backend))
        except DubbingError as exc:  # Kokoro's weights absent: the language's own backend speaks
            reasons.append(str(exc))
    if not synths:
        raise DubbingError("; ".join(reasons))
    if name:
        problems = [tts.unknown_voice(synth, language, name) for synth in synths]
        for synth, problem in zip(synths, problems, strict=True):
            if problem is None:
                return synth, name.strip()
        raise DubbingError(f"--voice {name!r}: {problems[0]}")
    synth = synths[0]
    voices = synth.voices(language)
    own = [v for v in voices if (tts.voice_traits(synth, v)[0] or "").split("-")[0] == language]
    return synth, (own or [synth.default_voice(language)])[0]


def speak_script(synth: tts.Synthesizer, voice_name: str, language: str, text: str) -> tuple[np.ndarray, int]:
    """A whole script in one voice, sentence by sentence with a short pause after each (where an avatar rests
    and blinks) and a little silence at both ends (the mouth starts and ends closed). Mono float32 and its rate."""
    sentences = [s.strip() for s in SCRIPT_SENTENCE.split(text) if tts.count_letters(s)]
    if not sentences:
        raise DubbingError("the script has nothing to say (no letters or digits)")
    parts: list[np.ndarray] = []
    rate = 0
    for sentence in sentences:
        audio, rate = synth.synthesize(sentence, language=language, voice=voice_name)
        parts += [np.zeros(int(SCRIPT_PAUSE_S * rate), np.float32), np.asarray(audio, np.float32)]
    edge = np.zeros(int(SCRIPT_EDGE_S * rate), np.float32)
    return np.concatenate([edge, *parts[1:], edge]), rate


def synthesize_track(
    script: Script, voices: dict[str, VoiceMatch], info: MediaInfo, cfg: LanguageConfig, layout: RunLayout
) -> tuple[Script, DubTrack]:
    """Speak and fit every line in its speaker's voice; a line that cannot fit goes back to the translator.
    Writes NAME.LANG.voice.wav, script.json (what was spoken, how fast) and track.json (where it was placed)."""
    lang = script.language
    cache = layout.clip_cache(lang)
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*.wav")} if cache.exists() else {}
    estimate = tts.estimator(cfg)
    fitted, track = speak_in_passes(
        lambda shorten: voice.speak_track(
            script,
            tts.synthesizer_for(cfg),  # built for each pass: the voice model is released between them
            cfg.tts,
            cfg.timing,
            duration_s=info.duration_s,
            voices=voices,
            voice_wav=layout.voice(lang),
            clip_cache=cache,
            shorten=shorten,
        ),
        lambda: translate.shortener(script, cfg.translate, estimate=estimate),  # an LLM translator loads it
        lang,
    )
    save_script(fitted, layout)
    write_json(layout.track(lang), track.model_dump())
    _log_fit(fitted)
    made = sum(before.get(p) != p.stat().st_mtime_ns for p in cache.glob("*.wav")) if cache.exists() else 0
    log.info("%s: %d line(s) synthesised (new clips in the line cache)", lang, made)  # what an edit re-spoke
    return fitted, track


class ShortenBetweenPasses:
    """The voice stage's shorten hook, answered between passes over the lines instead of inside one: a pass
    records each line too long for its slot (and gets the shorter text of those already rewritten), and between
    passes `answer` rewrites them. So the voice model (0.45 GB) and the shortening LLM (1.2 GB) are never in
    memory together; the next pass takes the lines it already spoke from the line cache."""

    def __init__(self) -> None:
        self.asked: dict[tuple[int, str], tuple[ScriptLine, float, float]] = {}
        self.answers: dict[tuple[int, str], str | None] = {}

    def __call__(self, line: ScriptLine, budget_s: float, natural_s: float) -> str | None:
        key = (line.index, line.text)
        if key not in self.answers:
            self.asked[key] = (line, budget_s, natural_s)
        return self.answers.get(key)

    def answer(self, shorten: voice.Shorten) -> bool:
        """Rewrite the lines asked since the last answer; whether any of them got a shorter text."""
        for key, (line, budget_s, natural_s) in self.asked.items():
            self.answers[key] = shorten(line, budget_s, natural_s)
        shortened = any(self.answers[key] for key in self.asked)
        self.asked.clear()
        return shortened


def speak_in_passes(
    speak: Callable[[voice.Shorten], tuple[Script, DubTrack]], shortener: Callable[[], voice.Shorten], language: str
) -> tuple[Script, DubTrack]:
    """`speak` (a pass over every line) again while it finds lines too long, a `shortener()` answering between
    passes (`ShortenBetweenPasses`), at most `voice.SHORTEN_ROUNDS` times. The voice model is held only during a
    pass and the translator that shortens only between two, so a step that shortens nothing is one pass as
    before and loads no LLM."""
    hook = ShortenBetweenPasses()
    for _ in range(voice.SHORTEN_ROUNDS):
        with backends.holding("tts"):  # the voice model, released after the pass
            spoken = speak(hook)
        if not hook.asked:
            return spoken
        log.info("%s: shortening %d line(s) that do not fit", language, len(hook.asked))
        with backends.holding("llm"):  # released before the next pass loads the voice model again
            if not hook.answer(shortener()):
                return spoken  # nothing shorter: the next pass would speak the same
    with backends.holding("tts"):
        return speak(hook)


def _log_fit(script: Script) -> None:
    """What fitting did to each line that did not simply fit: what a person reading the run needs to check."""
    lang = script.language
    for line in script.lines:
        if line.over_limit:
            speed, cut = line.speed or 1.0, line.cut_s or 0.0
            log.warning(
                "%s line %d does not fit its slot even shortened, with the silence around it and at x%.2f: "
                "its last %.2fs are cut",
                lang,
                line.index,
                speed,
                cut,
            )
        elif "shortened" in line.fit:
            log.info("%s line %d shortened to fit: %r", lang, line.index, line.text)
    sped = [line.speed for line in script.lines if line.speed and line.speed > 1.0]
    count = {action: sum(action in line.fit for line in script.lines) for action in FIT_ACTIONS}
    log.info(
        "%s: %d lines spoken, %d sped up (at most x%.2f), %d shortened, %d borrowed silence, %d picture slowed, "
        "%d picture held, %d cut",
        lang,
        len(script.lines),
        len(sped),
        max(sped, default=1.0),
        count["shortened"],
        sum(any(a.startswith("borrowed") for a in line.fit) for line in script.lines),
        count["picture_slowed"],
        count["picture_held"],
        sum(line.over_limit for line in script.lines),
    )


def stretch_source(
    video: Path,
    info: MediaInfo,
    track: DubTrack,
    separated: tuple[Path, Path] | None,
    mix_wav: Path,
    analysis_wav: Path,
    faces: FaceTracks | None,
    transcript: Transcript,
    settings: Settings,
    layout: RunLayout,
) -> StretchedSource | None:
    """With spans slowed down so lines fit (`timing.slow_picture`; the track's `stretches`), the source on the
    dub's timeline: its picture, background and original sound slowed over the same spans, and its faces tracked
    again on that picture (each line's speaking face chosen with its times moved). None when nothing was slowed:
    the source serves as it is. Writes LANG/stretched/."""
    lang = track.language
    layout.stretched(lang).unlink(missing_ok=True)
    if not track.stretches:
        shutil.rmtree(layout.stretched_dir(lang), ignore_errors=True)  # an earlier run's, slowed otherwise
        return None
    spans, folder = track.stretches, layout.stretched_dir(lang)
    folder.mkdir(parents=True, exist_ok=True)
    picture = media.stretch_video(
        video,
        layout.stretched_picture(lang),
        spans,
        duration_s=track.duration_s,
        crf=settings.lipsync.crf,
        preset=settings.lipsync.preset,
    )
    background = media.stretch_audio(separated[1], layout.stretched_background(lang), spans) if separated else None
    faces_after = None
    if faces is not None and settings.lipsync.enabled:
        tracked = _faces_of(picture, layout.stretched_tracked_faces(lang), settings)
        faces_after = lipsync.speaking_faces(
            tracked,
            layout.stretched_faces(lang),
            lines=[(stretched_time(u.start, spans), stretched_time(u.end, spans)) for u in transcript.utterances],
            source_audio=media.stretch_audio(analysis_wav, layout.stretched_speech(lang), spans),
        )
    result = StretchedSource(
        video=str(picture),
        duration_s=track.duration_s,
        stretches=spans,
        background=str(background) if background else None,
        original_audio=str(media.stretch_audio(mix_wav, layout.stretched_original(lang), spans)),
        faces=faces_after,
    )
    added = sum(s.added_s for s in spans)
    log.info("%s: picture slowed over %d span(s): the dub lasts %.3f s longer (%.3f s)", lang, len(spans), added,
             track.duration_s)  # fmt: skip
    write_json(layout.stretched(lang), result.model_dump())
    return result


def mix_audio(
    track: DubTrack,
    separated: tuple[Path, Path] | None,
    settings: Settings,
    layout: RunLayout,
    stretched: StretchedSource | None = None,
) -> Path:
    """The dub voice over the background (ducked under the dub; slowed with the picture when spans were),
    loudness-normalised (EBU R128)."""
    background = separated[1] if separated else None
    if stretched is not None:
        background = Path(stretched.background) if stretched.background else None
    return mix.mix(
        layout.voice(track.language),
        layout.audio(track.language),
        background=background,
        loudness_lufs=settings.mix.loudness_lufs,
        duck_db=settings.mix.duck_db,
    )


def write_subtitles(
    script: Script, track: DubTrack | None, info: MediaInfo, output: OutputConfig, layout: RunLayout
) -> tuple[Path, ...]:
    """NAME.LANG.srt and .vtt of the script's lines where the dub speaks them (track.json; the source slots in a
    subtitles-only run, which has no track); with `output.subtitles: bilingual` also NAME.LANG.bilingual.srt and
    .vtt (the source line over the translation in each cue), returned after them."""
    lang = script.language
    timings = voice.dub_timings(script, track)
    duration_s = track.duration_s if track is not None else info.duration_s  # longer when spans were slowed
    written = subtitles.write_subtitles(
        timings,
        layout.srt(lang),
        layout.vtt(lang),
        duration_s,
        lang,
    )
    if output.subtitles != "bilingual":
        return written
    cues = subtitles.make_bilingual_cues(
        ((start, end, line.source_text, text) for (start, end, text), line in zip(timings, script.lines, strict=True)),
        duration_s,
        script.source_language,
        lang,
    )
    return written + subtitles.write_cues(cues, layout.bilingual(lang, ".srt"), layout.bilingual(lang, ".vtt"))


def render_lipsync(
    video: Path,
    faces: FaceTracks | None,
    script: Script,
    track: DubTrack,
    settings: Settings,
    layout: RunLayout,
    stretched: StretchedSource | None = None,
) -> Path | None:
    """The picture with each line's speaker mouthing the dub voice (None: no face, the original picture is kept and
    the report says so); the slowed-down picture and its faces when spans were slowed."""
    cfg = settings.lipsync
    if stretched is not None:
        video, faces = Path(stretched.video), stretched.faces
    if faces is None or not cfg.enabled:
        return None
    texts = {line.index: line.text for line in script.lines}
    lines = [(c.start, c.end, texts.get(c.index, "")) for c in track.clips] if cfg.phonemes else None
    result = lipsync.render_dub(
        video,
        faces,
        layout.voice(script.language),
        layout.picture(script.language),
        lines=lines,
        language=script.language,
        backend=cfg.backend,
        backend_options=cfg.options,
        crf=cfg.crf,
        preset=cfg.preset,
        mouth_box=cfg.mouth_box,
        expression=cfg.expression,
    )
    return result.out if result else None


def render_video(
    video: Path,
    info: MediaInfo,
    dub_audio: Path,
    mix_wav: Path,
    transcript: Transcript,
    subtitle_files: tuple[Path, ...],
    picture: Path | None,
    cfg: LanguageConfig,
    lang: str,
    output: OutputConfig,
    settings: Settings,
    layout: RunLayout,
    stretched: StretchedSource | None = None,
) -> Path | None:
    """Mux the dub audio under the picture (the lipsynced one when there is one) as config `output` asks: the
    container, the subtitles as a track (the bilingual one), drawn into the picture or left out, and the original
    audio as a second track. With spans slowed down (`stretched`), the slowed picture and original sound, and the
    video lasts as long as the dub's timeline."""
    if not info.has_video:
        return None
    duration_s = info.duration_s
    if stretched is not None:
        video, mix_wav, duration_s = (
            Path(stretched.video),
            Path(stretched.original_audio or mix_wav),
            stretched.duration_s,
        )
    srt = subtitle_files[2] if output.subtitles == "bilingual" else subtitle_files[0]  # (srt, vtt[, srt, vtt])
    with tempfile.TemporaryDirectory(prefix="dub-burn-") as tmp:
        burn = subtitles.burnable(srt, Path(tmp) / "subtitles.srt") if output.subtitles == "burn" else None
        return media.mux(
            picture or video,
            dub_audio,
            layout.video(lang, output.format),
            subtitles=srt if output.subtitles in ("soft", "bilingual") else None,
            language=cfg.iso639_2,
            duration_s=duration_s,
            burn=burn,
            burn_style=subtitles.burn_style(info.width, info.height),
            original_audio=mix_wav if output.keep_original_audio else None,
            original_language=iso639_2(settings, transcript.language),
            crf=settings.lipsync.crf,
            preset=settings.lipsync.preset,
            encode=picture is None and stretched is None and not media.plays_everywhere(info),
        )


def iso639_2(settings: Settings, code: str) -> str:
    """The ISO 639-2 code of a language (its record's), 'und' (undetermined) for one without a record."""
    record = settings.languages.get(code.split("-")[0].lower())
    return (record.iso639_2 if record else None) or "und"


def language_outputs(context: Context) -> LanguageOutputs:
    """The manifest's entry for a finished language: its files, and what its video holds (config `output`)."""
    layout, lang, output = context["layout"], context["lang"], context["settings"].output
    tracks = [context["cfg"].iso639_2 or "und"]
    if output.keep_original_audio:
        tracks.append(iso639_2(context["settings"], context["transcript"].language))
    return layout.outputs(
        lang,
        context["dub_video"],
        dubbed=context["track"] is not None,
        subtitles=output.subtitles,
        audio_tracks=tracks,
        bilingual=output.subtitles == "bilingual",
    ).model_copy(update={"stretched": list(stretched.stretches) if (stretched := context.get("stretched")) else []})


def hear_back(
    script: Script, track: DubTrack, lang: str, settings: Settings, layout: RunLayout
) -> qa.Measurements | None:
    """QA's part that needs only the dub voice and the script (heard back, meaning, voices), written to
    hearing.json; a step of its own so it runs beside the lipsync render. None when QA is off."""
    if not settings.qa.enabled:
        return None
    parts = qa_parts(layout, lang, settings)
    heard = qa.listen(
        layout,
        lang,
        layout.outputs(lang, None),
        settings.qa,
        hear=parts.hear,
        translate_back=parts.translate_back,
        keep_words=parts.keep_words,
        listener=parts.listener,
    )
    write_text(layout.hearing(lang), qa.HEARING.dump_json(heard).decode())
    return heard


def write_report(
    script: Script,
    track: DubTrack | None,
    hearing: qa.Measurements | None,
    dub_video: Path | None,
    lang: str,
    settings: Settings,
    layout: RunLayout,
) -> Path:
    """The language's QA (dubbing.qa) written to report.json, measured from the run's files alone (`track` None:
    a subtitles-only run, the report says there is no dub)."""
    outputs = layout.outputs(lang, dub_video, dubbed=track is not None)
    report = quality_report(layout, lang, outputs, settings, hearing)
    word, figures = review.verdict(report.model_dump())
    log.info("%s QA: %s%s; %d flag(s)", lang, word, f" ({figures})" if figures else "", len(report.flags))
    return write_json(layout.report(lang), report.model_dump())


@dataclass(frozen=True)
class QAParts:
    """What QA borrows from the other stages: ears (the ASR stage), a way back to the source language (the
    translate stage) and a description of the ears for the report."""

    metric: str
    hear: qa.Hear
    listener: dict
    translate_back: qa.TranslateBack
    keep_words: list[str]


def qa_parts(layout: RunLayout, lang: str, settings: Settings) -> QAParts:
    cfg = settings.for_language(lang)
    if cfg.metric is None:
        raise DubbingError(f"{lang}: its record has no QA metric (metric: wer or cer in configs/languages/{lang}.yaml)")
    # the listener: the run's own ASR settings (beam size from the preset: draft 1, final 5) with QA's backend and
    # model, so with the defaults it is the transcription step's pooled model
    listener = settings.asr.model_copy(update={"model": settings.qa.asr_model})
    if settings.qa.asr_backend != settings.asr.backend:
        listener.backend, listener.options = settings.qa.asr_backend, {}

    def hear(audio: Path, language: str, pieces: list[tuple[float, float]]) -> Transcript:
        return asr.transcribe_pieces(transcriber(listener), audio, pieces, language=language, prompt=cfg.asr_prompt)

    heard_by = {"backend": listener.backend, "model": listener.model, "beam_size": listener.beam_size,
                "decoding": "batched pieces, no temperature fallback" if listener.backend == "faster-whisper"
                else "one call per piece"}  # fmt: skip
    source = Script.model_validate_json(layout.script(lang).read_text()).source_language
    glossary = cfg.translate.glossary
    return QAParts(cfg.metric, hear, heard_by, back_translator(settings, lang, source), [*glossary, *glossary.values()])


def quality_report(
    layout: RunLayout, lang: str, outputs: LanguageOutputs, settings: Settings, hearing: qa.Measurements | None = None
) -> QAReport:
    """What `report` and `dub eval` compute: QA hears the dub back with the ASR stage and reads the mouths with the
    lipsync stage, through the hooks given here; `hearing`: what the hear-back step measured already."""
    cfg = settings.for_language(lang)
    limits = qa.Thresholds.from_config(
        settings.qa, loudness_target=settings.mix.loudness_lufs, max_speedup=cfg.timing.max_speedup
    )
    if outputs.voice is None:  # a subtitles-only run: nothing was voiced, nothing to hear or watch
        script = Script.model_validate_json((layout.out / outputs.script).read_text())
        return qa.disabled_report(script, limits, NO_DUB).model_copy(update={"dubbed": False})
    if not settings.qa.enabled:
        script = Script.model_validate_json((layout.out / outputs.script).read_text())
        return qa.disabled_report(script, limits).model_copy(update={"below_goal": shortfalls(cfg)})
    parts = qa_parts(layout, lang, settings)

    def mouth(video: Path | None, landmarks: Path | None) -> Any:
        return lipsync.mouth_opening(video, max_faces=settings.lipsync.max_faces, landmarks=landmarks)

    report = qa.quality_report(
        layout,
        lang,
        outputs,
        settings.qa,
        limits,
        metric=parts.metric,
        hear=parts.hear,
        mouth=mouth,
        translate_back=parts.translate_back,
        keep_words=parts.keep_words,
        drawn=lipsync.drawn_mouths,
        listener=parts.listener,
        heard=hearing,
    )
    return report.model_copy(update={"below_goal": shortfalls(cfg)})


NO_DUB = "no dub: subtitles only (output.subtitles_only, dub run --subtitles-only)"
FAST_BACK_TRANSLATORS = ("apertium", "bergamot")  # `qa.meaning_backend: auto` tries these before the LLM


def back_translator(settings: Settings, lang: str, source: str) -> qa.TranslateBack:
    """QA's meaning check's way back: `qa.meaning_backend` from the dub's language to the source's, built when
    first called (so a run with the check off never loads it); a pair it lacks or a missing model raise
    DubbingError there, and QA skips the check with the reason. `auto`: a fast rule-based or tiny engine that has
    the pair (Apertium es->en separates right from wrong lines, chrF 53 against 14), else the local LLM."""
    built: list[translate.Translator] = []

    def build() -> translate.Translator:
        backend, options = settings.qa.meaning_backend, settings.qa.meaning_options
        if backend != "auto":
            return translate.build_translator(backend, source=lang, target=source, options=options)
        for fast in FAST_BACK_TRANSLATORS:
            try:
                return translate.build_translator(fast, source=lang, target=source)
            except translate.LanguagePairError:
                continue
        return translate.build_translator("llama", source=lang, target=source, options=options)

    def translate_back(lines: list[str]) -> list[str]:
        if not built:
            built.append(build())
        return built[0].translate(lines)

    return translate_back


# ---------------------------------------------------------------- once per video, after every language


def write_manifest(
    video: Path,
    info: MediaInfo,
    transcript: Transcript,
    outputs: dict[str, LanguageOutputs],
    layout: RunLayout,
    failed: dict[str, str] | None = None,
) -> Manifest:
    manifest = Manifest(
        failed=dict(failed or {}),
        source=os.path.abspath(video),  # `dub eval` and the review page find it from any folder (no "..")
        source_language=transcript.language,
        duration_s=info.duration_s,
        speakers=transcript.speakers,
        transcript=layout.relative(layout.transcript),
        outputs=outputs,
    )
    write_json(layout.manifest, manifest.model_dump())
    return manifest


def write_review_page(layout: RunLayout) -> Path:
    return review.review_page(layout)


def evaluate_run(out: Path, settings: Settings) -> Manifest:
    """`dub eval`: recompute every language's QA of a finished run from its manifest and files, rewriting
    report.json and report.html."""
    manifest_path = manifest_of(out)
    if not manifest_path.exists():
        raise DubbingError(f"{manifest_path} not found: give the output folder of a finished `dub run`")
    manifest = read_manifest(manifest_path)
    layout = layout_for(manifest.source_path(Path(out)), Path(out))
    for lang, outputs in manifest.outputs.items():
        for what in ("script", "voice", "audio"):
            if getattr(outputs, what) is not None and not (layout.out / getattr(outputs, what)).exists():
                raise DubbingError(f"{lang}: {getattr(outputs, what)} is missing from {out}; re-run `dub run`")
        write_json(layout.out / outputs.report, quality_report(layout, lang, outputs, settings).model_dump())
    review.review_page(layout)
    return manifest


def read_manifest(path: Path) -> Manifest:
    """A manifest.json to work from (`dub eval`), refused in one line when it is not one or when it was edited to
    point outside its folder: every path it names for reading or writing must stay inside (absolute paths, '..' and
    symbolic links leading out are refused), and its language codes must be codes, since they name folders."""
    from dubbing.errors import quoted, read_user_text

    try:
        manifest = Manifest.model_validate_json(read_user_text(path, "manifest"))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "the top level"
        raise DubbingError(f"{path}: not a run's manifest: {key}: {err['msg'][:200]}") from None
    out = path.parent
    named = [("transcript", manifest.transcript)] + ([("review", manifest.review)] if manifest.review else [])
    for lang, outputs in manifest.outputs.items():
        if not LANGUAGE_CODE.fullmatch(lang):
            raise DubbingError(f"{path}: outputs: {quoted(lang)} is not a language code; was the manifest edited?")
        named += [(f"outputs.{lang}.{key}", value) for key, value in outputs.files().items()]
    for key in manifest.failed:
        if not LANGUAGE_CODE.fullmatch(key):
            raise DubbingError(f"{path}: failed: {quoted(key)} is not a language code; was the manifest edited?")
    real_out = out.resolve()
    for key, value in named:
        relative = Path(value)
        if relative.is_absolute() or ".." in relative.parts or not (out / relative).resolve().is_relative_to(real_out):
            raise DubbingError(
                f"{path}: {key} is {quoted(value)}, outside {out} (a manifest's paths stay inside its folder); "
                "was the manifest edited? re-run `dub run`"
            )
    return manifest


LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")


def language_problems(cfg: LanguageConfig) -> list[str]:
    """What a language's record lacks for a run, and what its stages refuse in it (each problem names its key)."""
    return check_language(cfg) + tts.check(cfg) + translate.check(cfg.translate) + voice_problems(cfg)


def voice_problems(cfg: LanguageConfig) -> list[str]:
    """Voices the record names (`tts.voice`, `tts.voices`) that its TTS backend does not have: found before a run,
    not at its first spoken line a minute in. Kokoro's bank and espeak-ng's voices are listed; other backends'
    names are left to them."""
    named = [("tts.voice", cfg.tts.voice)] if cfg.tts.voice else []
    named += [(f"tts.voices.{speaker}", spec) for speaker, spec in cfg.tts.voices.items()]
    if not named or cfg.tts.backend not in ("kokoro", "espeak"):
        return []
    known = _voice_names(cfg.tts.backend)
    if known is None:
        return []
    problems = []
    for key, spec in named:
        words = spec.strip().split()
        name = words[0].removeprefix(f"{cfg.tts.backend}:") if words else ""
        if cfg.tts.backend == "kokoro":
            try:
                parts = [part for part, _ in tts.parse_blend(name)] if name else [""]
            except DubbingError as exc:
                problems.append(f"{key}: {exc}")
                continue
        else:  # espeak-ng: a voice or language, optionally with a variant: es+klatt
            base, _, variant = name.partition("+")
            parts = [base] + ([f"+{variant}"] if variant else [])
        unknown = [part for part in parts if part.lower() not in known]
        if unknown:
            listed = (
                f"it has {', '.join(sorted(known)[:5])}, … ({len(known)} voices)"
                if cfg.tts.backend == "kokoro"
                else "`espeak-ng --voices` and `espeak-ng --voices=variant` list them"
            )
            problems.append(f"{key}: {cfg.tts.backend} has no voice {unknown[0]!r} (in {spec!r}); {listed}")
    return problems


@functools.cache
def _voice_names(backend: str) -> frozenset[str] | None:
    """Every voice name `backend` accepts, lower-cased (espeak-ng's variants with a leading '+'); None when they
    cannot be listed here (the voice pack or the binary is missing: reported by their own checks)."""
    import shutil
    import subprocess

    if backend == "kokoro":
        import numpy as np

        try:
            with np.load(tts.kokoro_voices_path()) as pack:
                return frozenset(name.lower() for name in pack.files)
        except (DubbingError, OSError, ValueError):
            return None
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    names: set[str] = set()
    for selector, prefix in (("", ""), ("=mb", ""), ("=variant", "+")):
        rows = subprocess.run([espeak, f"--voices{selector}"], capture_output=True, text=True).stdout.splitlines()
        for row in rows[1:]:
            cols = row.split()
            if len(cols) > 4:
                names |= {prefix + cols[4].split("/")[-1].lower()} | ({cols[1].lower()} if not prefix else set())
    return frozenset(names)


def settings_problems(settings: Settings, languages: list[str]) -> list[str]:
    """Everything a run into `languages` would fail on, found before any work: unknown language codes, incomplete
    language records, unknown backends and options the backends do not take."""
    s = settings
    sections: list[tuple[dict[str, type], str, str, dict, str]] = [
        (asr.BACKENDS, "ASR", s.asr.backend, s.asr.options, "asr"),
        (diarize.BACKENDS, "diarization", s.diarize.backend, s.diarize.options, "diarize"),
        (separate.BACKENDS, "separation", s.separate.backend, s.separate.options, "separate"),
        (lipsync.BACKENDS, "lipsync", s.lipsync.backend, s.lipsync.options, "lipsync"),
    ]
    problems = [
        problem
        for registry, what, name, options, key in sections
        for problem in backends.config_problems(
            registry, name, what, options, backend_key=f"{key}.backend", options_key=f"{key}.options"
        )
    ]
    problems += backends.config_problems(
        asr.BACKENDS, settings.qa.asr_backend, "ASR", {}, backend_key="qa.asr_backend", options_key="qa"
    )
    problems += model_problems(settings)
    unknown = [lang for lang in languages if lang not in settings.languages]
    if unknown:
        codes = ", ".join(map(repr, unknown))
        problems.append(
            f"no configuration for language{'s' * (len(unknown) > 1)} {codes}; available: "
            f"{', '.join(sorted(settings.languages))} (add configs/languages/CODE.yaml)"
        )
    for lang in languages:
        if lang in settings.languages:
            problems += [f"{lang}: {p}" for p in language_problems(settings.languages[lang])]
    return problems


def model_problems(settings: Settings) -> list[str]:
    """Models a run would miss, found before it starts: an ASR model (faster-whisper's, the run's and QA's) that is
    neither a folder nor a model `dub models` lists, or a hub model that is not cached; and any backend option
    `..._path` naming a file that is not there (lipsync.options.model_path: a Wav2Lip export)."""
    s, problems = settings, []
    ears = [("asr.model", s.asr.backend, s.asr.model)]
    if s.qa.enabled and s.qa.back_transcribe:
        ears.append(("qa.asr_model", s.qa.asr_backend, s.qa.asr_model))
    for key, backend, model in ears:
        if backend != "faster-whisper" or Path(model).exists():
            continue
        if model not in models.REGISTRY:
            problems.append(f"{key}: {model!r} is neither a folder nor a model `dub models` lists")
        elif isinstance(models.REGISTRY[model].source, models.HubSource):
            status = models.check(model)
            if status.state == "missing":
                problems.append(f"{key}: model {model}: {status.message}")
    sections = [("asr.options", s.asr.options), ("diarize.options", s.diarize.options)]
    sections += [("separate.options", s.separate.options)]
    sections += [("lipsync.options", s.lipsync.options)] if s.lipsync.enabled else []
    for key, options in sections:
        for name, value in options.items():
            if name.endswith("_path") and isinstance(value, str | Path) and value and not Path(value).exists():
                problems.append(f"{key}.{name}: {value} not found")
    return problems


def target_languages(languages: list[str], source_language: str) -> list[str]:
    """The languages to dub into: a target equal to the source is skipped with a warning."""
    if source_language in languages:
        log.warning("skipping %s: it is the source language", source_language)
    return [lang for lang in languages if lang != source_language]


# ---------------------------------------------------------------- the table


STEPS: tuple[Step, ...] = (
    Step("probe", probe_source, ("info",), "source", cached=False),
    Step("extract-audio", extract_audio, ("analysis_wav", "mix_wav"), "source"),
    Step("transcribe", transcribe, ("transcript",), "source"),
    Step("source-subtitles", write_source_subtitles, ("source_subtitles",), "source"),
    Step("separate", separate_audio, ("separated",), "source"),
    Step("speaker-profiles", profile_speakers, ("profiles",), "source"),
    Step("track-faces", track_faces, ("tracked_faces",), "source", deferred=True),
    Step("speaking-faces", choose_speaking_faces, ("faces",), "source", deferred=True),
    # Translation backends may call a network service: retry with backoff.
    Step("translate", translate_script, ("script",), "language", retries=2, reuse=edited_script),
    Step("match-voices", match_voices, ("voices",), "language"),
    Step("synthesize-and-fit", synthesize_track, ("script", "track"), "language", retries=2),
    Step("stretch-source", stretch_source, ("stretched",), "language"),
    Step("mix", mix_audio, ("dub_audio",), "language"),
    Step("subtitles", write_subtitles, ("subtitle_files",), "language"),
    Step("lipsync", render_lipsync, ("picture",), "language"),
    Step("hear-back", hear_back, ("hearing",), "language"),
    Step("render-video", render_video, ("dub_video",), "language"),
    Step("report", write_report, ("report",), "language"),
    Step("review-page", write_review_page, ("review_page",), "summary", cached=False),
)


SUBTITLES_ONLY = frozenset(
    {"probe", "extract-audio", "transcribe", "source-subtitles", "translate", "subtitles", "report", "review-page"}
)
"""The steps of a subtitles-only run (config `output.subtitles_only`): the transcript, its translation, the subtitle
files, and a report and review page that say there is no dub."""


def steps(scope: Scope, settings: Settings | None = None) -> tuple[Step, ...]:
    """The steps of `scope`; given a run's `settings`, only those the run takes (a subtitles-only run skips voices,
    synthesis, mix, lipsync, render and hear-back)."""
    only = SUBTITLES_ONLY if settings is not None and settings.output.subtitles_only else None
    return tuple(s for s in STEPS if s.scope == scope and (only is None or s.name in only))


def skipped(settings: Settings) -> Context:
    """None for each value that only the steps a run skips make: the steps it takes read "not made" (no dub track,
    no video) instead of reading files that were never written."""
    taken = [s for scope in ("source", "language", "summary") for s in steps(scope, settings)]
    made = {name for s in taken for name in s.outputs}
    return {name: None for s in STEPS if s not in taken for name in s.outputs if name not in made}


def get_step(name: str) -> Step:
    for step in STEPS:
        if step.name == name:
            return step
    raise DubbingError(f"unknown step {name!r}; steps: {', '.join(s.name for s in STEPS)}")


def arguments(step: Step, context: Context) -> dict[str, Any]:
    """The step's inputs from the context, each read back from the run's files when the context lacks it (an
    option with a default, as `audio_track`, keeps its default)."""
    found = {name: context[name] for name in step.inputs if name in context}
    for name, parameter in inspect.signature(step.run).parameters.items():
        if name not in found:  # an option a context may not carry (audio_track) keeps the function's default
            keep = parameter.default is not parameter.empty and name not in _RESTORE
            found[name] = parameter.default if keep else restore(name, context)
    return found


def outputs(step: Step, result: Any) -> Context:
    """The step's result as named values."""
    if len(step.outputs) == 1:
        return {step.outputs[0]: result}
    return dict(zip(step.outputs, result, strict=True))


def run(step: Step, context: Context, runner: Callable[..., Any] | None = None) -> Context:
    """Run one step, unless the user supplied its result (an edited script): its outputs as named values.
    `runner` calls the step with its arguments (the flow: as a Prefect task); default the plain function (dub
    transcribe, benchmark workers, tests)."""
    reused = step.reuse(context) if step.reuse else None
    if reused is not None:
        return outputs(step, reused)
    return outputs(step, (runner or step.run)(**arguments(step, context)))


def producers(scope_steps: Sequence[Step]) -> dict[str, dict[str, str]]:
    """For each step, which of `scope_steps` makes each of its inputs: the nearest one before it in table order
    (synthesize-and-fit rewrites the script: the steps after it read that version, translate's own readers the
    first). Inputs no step of these makes come from the context."""
    made: dict[str, dict[str, str]] = {}
    last_maker: dict[str, str] = {}
    for step in scope_steps:
        made[step.name] = {name: last_maker[name] for name in step.inputs if name in last_maker}
        last_maker |= dict.fromkeys(step.outputs, step.name)
    return made


StepRunner = Callable[[Step, Context], Context]
"""Runs one step on a context and returns its outputs as named values (`run`, or the flow's task wrapper)."""


def run_graph(scope_steps: Sequence[Step], context: Context, runner: StepRunner = run) -> Context:
    """Run steps as a graph: each starts in a thread of its own as soon as the steps that make its inputs are done
    (face tracking beside the transcription, the mix beside the lipsync render), so both cores work; every step
    sees exactly the values it would see in table order. The stages' native code (CTranslate2, ONNX Runtime,
    MediaPipe, ffmpeg) runs outside the GIL. After a failure no new step starts; once the running ones end, the
    error of the earliest failed step in table order is raised (the probe's "not a readable media file", not the
    audio extraction's ffmpeg message beside it); a deferred step still running is not waited for. Each thread
    runs in a copy of the caller's context variables (Prefect's run context).

    A `deferred` step is not waited for: this returns once the others end, the deferred ones go on, and their
    outputs are in the returned context as futures. A later step that reads one waits for it in its own thread
    (`run_graph` of the languages): translation and synthesis start while the faces are still being tracked, and
    only the steps that read the faces wait for them. `settled` waits for them all."""
    graph = _GraphRun(scope_steps, context, runner)
    graph.advance(graph.foreground_ended)
    for step in scope_steps:
        if step.name in graph.errors:
            raise graph.errors[step.name]
    later = graph.pending()
    if later:
        threading.Thread(
            target=contextvars.copy_context().run, args=(graph.finish,), name="deferred-steps", daemon=True
        ).start()
    for step in scope_steps:  # later outputs of the same name win, as in table order
        context = context | (graph.promised[step.name] if step in later else graph.results[step.name])
    return context


def settled(context: Context) -> Context:
    """The context with the deferred steps' outputs waited for (their futures replaced by their values)."""
    return {name: value.result() if isinstance(value, Future) else value for name, value in context.items()}


class _GraphRun:
    """One `run_graph`: which steps wait, run and have ended, and the futures of the deferred steps' outputs."""

    def __init__(self, scope_steps: Sequence[Step], context: Context, runner: StepRunner) -> None:
        self.steps, self.context, self.runner = list(scope_steps), context, runner
        self.made_by = producers(scope_steps)
        self.results: dict[str, Context] = {}
        self.waiting = list(scope_steps)
        self.running: dict[Future[Context], Step] = {}
        self.errors: dict[str, BaseException] = {}
        self.promised: dict[str, dict[str, Future[Any]]] = {
            step.name: {name: Future() for name in step.outputs} for step in scope_steps if step.deferred
        }

    def foreground_ended(self) -> bool:
        """Every step that is not deferred has ended, or one failed and none of them still runs: a failed
        transcription is told at once, not after the tracking of a long video beside it."""
        if self.errors:
            return not any(not step.deferred for step in self.running.values())
        return all(s.name in self.results for s in self.steps if not s.deferred)

    def pending(self) -> list[Step]:
        return [s for s in self.steps if s.name not in self.results]

    def advance(self, done: Callable[[], bool]) -> None:
        """Start the steps whose inputs are made, record those that end, until `done` or nothing can run."""
        while (self.waiting or self.running) and not done():
            for step in [s for s in self.waiting if not self.errors and self._ready(s)]:
                self.waiting.remove(step)
                made = {name: self.results[maker][name] for name, maker in self.made_by[step.name].items()}
                self.running[_start(step, self.runner, self.context | made)] = step
            if not self.running:
                break
            finished, _ = wait(self.running, return_when=FIRST_COMPLETED)
            for future in finished:
                step = self.running.pop(future)
                try:
                    self.results[step.name] = future.result()
                except BaseException as exc:  # raised once the running steps end
                    self.errors[step.name] = exc
                self._keep(step)

    def _ready(self, step: Step) -> bool:
        return set(self.made_by[step.name].values()) <= self.results.keys()

    def _keep(self, step: Step) -> None:
        """A deferred step's outputs (or its error) to the futures its readers wait on."""
        for name, promise in self.promised.get(step.name, {}).items():
            if step.name in self.results:
                promise.set_result(self.results[step.name][name])
            else:
                promise.set_exception(self.errors[step.name])

    def finish(self) -> None:
        """The deferred steps, in the background; those that cannot run pass the earliest error on to readers."""
        try:
            self.advance(lambda: False)
        finally:
            first = next((self.errors[s.name] for s in self.steps if s.name in self.errors), None)
            for promises in self.promised.values():
                for promise in promises.values():
                    if not promise.done():
                        promise.set_exception(first or DubbingError("a step of the run was stopped before it ended"))


def _start(step: Step, runner: StepRunner, inputs: Context) -> Future[Context]:
    """Run a step in a thread of its own, in a copy of the caller's context variables, once the deferred values it
    reads are made (waited for in that thread). A daemon thread: a run that fails, or is interrupted, exits at once
    instead of waiting at exit for the steps still running beside it (the face tracking of a long video)."""
    future: Future[Context] = Future()

    def work() -> None:
        try:
            future.set_result(runner(step, inputs | settled({n: v for n, v in inputs.items() if n in step.inputs})))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the step
            future.set_exception(exc)

    threading.Thread(target=contextvars.copy_context().run, args=(work,), name=f"step-{step.name}", daemon=True).start()
    return future


# ---------------------------------------------------------------- reading a value back from the run's files


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _if_exists(path: Path) -> Path | None:
    return path if path.exists() else None


def _restore_separated(c: Context) -> tuple[Path, Path] | None:
    layout = c["layout"]
    return (layout.speech_wav, layout.background_wav) if layout.background_wav.exists() else None


_RESTORE: dict[str, Callable[[Context], Any]] = {
    "output": lambda c: c["settings"].output,  # its own value: a cache key changes with it only where it is read
    "info": lambda c: media.probe(c["video"]),
    "analysis_wav": lambda c: c["layout"].analysis_wav,
    "mix_wav": lambda c: c["layout"].mix_wav,
    "transcript": lambda c: Transcript.model_validate_json(c["layout"].transcript.read_text()),
    "separated": _restore_separated,
    "profiles": lambda c: [SpeakerProfile.model_validate(p) for p in _json(c["layout"].speaker_profiles)],
    "tracked_faces": lambda c: (
        lipsync.read_tracks(c["video"], c["layout"].tracked_faces_npz)
        if c["layout"].tracked_faces_npz.exists()
        else None
    ),
    "faces": lambda c: (
        FaceTracks.model_validate_json(c["layout"].faces_json.read_text()) if c["layout"].faces_json.exists() else None
    ),
    "script": lambda c: Script.model_validate_json(c["layout"].script(c["lang"]).read_text()),
    "voices": lambda c: {k: VoiceMatch.model_validate(v) for k, v in _json(c["layout"].voices(c["lang"])).items()},
    "track": lambda c: DubTrack.model_validate_json(c["layout"].track(c["lang"]).read_text()),
    "stretched": lambda c: (
        StretchedSource.model_validate_json(c["layout"].stretched(c["lang"]).read_text())
        if c["layout"].stretched(c["lang"]).exists()
        else None
    ),
    "dub_audio": lambda c: c["layout"].audio(c["lang"]),
    "subtitle_files": lambda c: (
        (c["layout"].srt(c["lang"]), c["layout"].vtt(c["lang"]))
        + (
            (c["layout"].bilingual(c["lang"], ".srt"), c["layout"].bilingual(c["lang"], ".vtt"))
            if c["settings"].output.subtitles == "bilingual"
            else ()
        )
    ),
    "picture": lambda c: _if_exists(c["layout"].picture(c["lang"])),
    "dub_video": lambda c: _if_exists(c["layout"].video(c["lang"], c["settings"].output.format)),
    "hearing": lambda c: (
        qa.HEARING.validate_json(c["layout"].hearing(c["lang"]).read_bytes())
        if c["layout"].hearing(c["lang"]).exists()
        else None
    ),
}


def restore(name: str, context: Context) -> Any:
    """A step's output read back from the files the step wrote (layout names them)."""
    if name not in _RESTORE:
        raise DubbingError(f"{name!r} is not in this run's context and cannot be read back from its files")
    return _RESTORE[name](context)
