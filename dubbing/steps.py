"""The steps of a dubbing run, declared once: the flow, the CLI's progress, `dub transcribe` and the benchmarks all
read `STEPS`.

A step is a small function over named values (`Step.inputs` -> `Step.outputs`): it calls one stage, hands it what
other stages made, and writes the run's files through `RunLayout`. Stages never import each other; this module is
where they meet. Every value a step makes can be read back from the run's files (`restore`), so one step can run on
its own in a fresh process, as a benchmark worker or a task worker would run it.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
from dubbing.config import ASRConfig, LanguageConfig, Settings, check_language, shortfalls
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
    SpeakerProfile,
    Transcript,
    VoiceMatch,
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

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.run).parameters)


Context = dict[str, Any]
"""The named values of a run: `video`, `audio` (the --audio file or None), `settings`, `layout`; per language also
`lang` and `cfg` (its LanguageConfig); and every step's outputs."""


# ---------------------------------------------------------------- once per video


def probe_source(video: Path, audio: Path | None = None) -> MediaInfo:
    """Check the input before any work: a video, with speech in it or given separately as `audio`."""
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
    return info


def extract_audio(video: Path, audio: Path | None, layout: RunLayout) -> tuple[Path, Path]:
    """Decode the speech (from `audio` when given, else the video) for analysis (16 kHz) and for mixing (48 kHz)."""
    source = audio or video
    return media.extract_analysis_audio(source, layout.analysis_wav), media.extract_mix_audio(source, layout.mix_wav)


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


def transcribe(
    video: Path, audio: Path | None, analysis_wav: Path, settings: Settings, layout: RunLayout
) -> Transcript:
    """ASR (words with times), diarization (who speaks when), then the words grouped into speaker-labelled dubbing
    lines; writes transcript.json. An input without speech stops here: there is nothing to dub."""
    transcript = transcriber(settings.asr).transcribe(analysis_wav, language=settings.asr.language)
    cfg = settings.diarize
    turns = []
    if transcript.utterances:
        diarizer = backends.shared_build("diarize", diarize.BACKENDS, cfg.backend, "diarization", cfg.options)
        turns = diarizer.diarize(analysis_wav, speakers=cfg.speakers)
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
        raise DubbingError(f"no speech found in {audio or video}: nothing to dub (is it music or silence?)")
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
    return lipsync.track(video, layout.tracked_faces_npz, max_faces=settings.lipsync.max_faces)


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
    script = translate.translate_script(
        transcript,
        lang,
        cfg.translate,
        estimate=tts.estimator(cfg),
        max_speedup=cfg.timing.max_speedup,
        length_basis=tts.length_basis(cfg),
    )
    save_script(script, layout)
    return script


def save_script(script: Script, layout: RunLayout) -> Path:
    """Write script.json and remember its hash, so a later run can tell a user's edit from our own output."""
    path = write_json(layout.script(script.language), script.model_dump())
    write_text(layout.script_stamp(script.language), hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def edited_script(context: Context) -> Script | None:
    """The user's edited script.json, if they changed it since the pipeline wrote it (else None). Its lines replace
    the translation; the voice stage re-speaks only the lines whose text changed."""
    layout, lang = context["layout"], context["lang"]
    path, stamp = layout.script(lang), layout.script_stamp(lang)
    if not (path.exists() and stamp.exists()):
        return None
    if hashlib.sha256(path.read_bytes()).hexdigest() == stamp.read_text().strip():
        return None
    try:
        script = Script.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DubbingError(f"{path}: not a valid script after editing ({str(exc).splitlines()[0]})") from None
    log.warning("%s was edited: using its lines instead of translating again", path)
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
        log.info("%s: %s speaks as %s%s", lang, match.speaker, match.label, similarity)
    return matches


def synthesize_track(
    script: Script, voices: dict[str, VoiceMatch], info: MediaInfo, cfg: LanguageConfig, layout: RunLayout
) -> tuple[Script, DubTrack]:
    """Speak and fit every line in its speaker's voice; a line that cannot fit goes back to the translator once.
    Writes NAME.LANG.voice.wav, script.json (what was spoken, how fast) and track.json (where it was placed)."""
    lang = script.language
    fitted, track = voice.speak_track(
        script,
        tts.synthesizer_for(cfg),
        cfg.tts,
        cfg.timing,
        duration_s=info.duration_s,
        voices=voices,
        voice_wav=layout.voice(lang),
        clip_cache=layout.clip_cache(lang),
        shorten=translate.shortener(script, cfg.translate, estimate=tts.estimator(cfg)),
    )
    save_script(fitted, layout)
    write_json(layout.track(lang), track.model_dump())
    _log_fit(fitted)
    return fitted, track


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
        "%s: %d lines spoken, %d sped up (at most x%.2f), %d shortened, %d borrowed silence, %d cut",
        lang,
        len(script.lines),
        len(sped),
        max(sped, default=1.0),
        count["shortened"],
        sum(any(a.startswith("borrowed") for a in line.fit) for line in script.lines),
        sum(line.over_limit for line in script.lines),
    )


def mix_audio(track: DubTrack, separated: tuple[Path, Path] | None, settings: Settings, layout: RunLayout) -> Path:
    """The dub voice over the background (ducked under the dub), loudness-normalised (EBU R128)."""
    return mix.mix(
        layout.voice(track.language),
        layout.audio(track.language),
        background=separated[1] if separated else None,
        loudness_lufs=settings.mix.loudness_lufs,
        duck_db=settings.mix.duck_db,
    )


def write_subtitles(script: Script, track: DubTrack, info: MediaInfo, layout: RunLayout) -> tuple[Path, Path]:
    lang = script.language
    return subtitles.write_subtitles(
        voice.dub_timings(script, track),  # where each line is heard in the dub (track.json), not the source slot
        layout.srt(lang),
        layout.vtt(lang),
        info.duration_s,
        lang,
    )


def render_lipsync(
    video: Path, faces: FaceTracks | None, script: Script, track: DubTrack, settings: Settings, layout: RunLayout
) -> Path | None:
    """The picture with each line's speaker mouthing the dub voice (None: no face, the original picture is kept and
    the report says so)."""
    cfg = settings.lipsync
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
    )
    return result.out if result else None


def render_video(
    video: Path,
    info: MediaInfo,
    dub_audio: Path,
    subtitle_files: tuple[Path, Path],
    picture: Path | None,
    cfg: LanguageConfig,
    lang: str,
    layout: RunLayout,
) -> Path | None:
    """Mux the dub audio and subtitles under the picture: the lipsynced one when there is one."""
    if not info.has_video:
        return None
    return media.mux(
        picture or video,
        dub_audio,
        layout.video(lang),
        subtitles=subtitle_files[0],
        language=cfg.iso639_2,
        duration_s=info.duration_s,
    )


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
    track: DubTrack,
    hearing: qa.Measurements | None,
    dub_video: Path | None,
    lang: str,
    settings: Settings,
    layout: RunLayout,
) -> Path:
    """The language's QA (dubbing.qa) written to report.json, measured from the run's files alone."""
    report = quality_report(layout, lang, layout.outputs(lang, dub_video), settings, hearing)
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
        source=str(video),
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
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    layout = layout_for(Path(manifest.source), Path(out))
    for lang, outputs in manifest.outputs.items():
        for what in ("script", "voice", "audio"):
            if not (layout.out / getattr(outputs, what)).exists():
                raise DubbingError(f"{lang}: {getattr(outputs, what)} is missing from {out}; re-run `dub run`")
        write_json(layout.out / outputs.report, quality_report(layout, lang, outputs, settings).model_dump())
    review.review_page(layout)
    return manifest


def language_problems(cfg: LanguageConfig) -> list[str]:
    """What a language's record lacks for a run, and what its stages refuse in it (each problem names its key)."""
    return check_language(cfg) + tts.check(cfg) + translate.check(cfg.translate)


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
    Step("track-faces", track_faces, ("tracked_faces",), "source"),
    Step("speaking-faces", choose_speaking_faces, ("faces",), "source"),
    # Translation backends may call a network service: retry with backoff.
    Step("translate", translate_script, ("script",), "language", retries=2, reuse=edited_script),
    Step("match-voices", match_voices, ("voices",), "language"),
    Step("synthesize-and-fit", synthesize_track, ("script", "track"), "language", retries=2),
    Step("mix", mix_audio, ("dub_audio",), "language"),
    Step("subtitles", write_subtitles, ("subtitle_files",), "language"),
    Step("lipsync", render_lipsync, ("picture",), "language"),
    Step("hear-back", hear_back, ("hearing",), "language"),
    Step("render-video", render_video, ("dub_video",), "language"),
    Step("report", write_report, ("report",), "language"),
    Step("review-page", write_review_page, ("review_page",), "summary", cached=False),
)


def steps(scope: Scope) -> tuple[Step, ...]:
    return tuple(s for s in STEPS if s.scope == scope)


def get_step(name: str) -> Step:
    for step in STEPS:
        if step.name == name:
            return step
    raise DubbingError(f"unknown step {name!r}; steps: {', '.join(s.name for s in STEPS)}")


def arguments(step: Step, context: Context) -> dict[str, Any]:
    """The step's inputs from the context, each read back from the run's files when the context lacks it."""
    return {name: context[name] if name in context else restore(name, context) for name in step.inputs}


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
    audio extraction's ffmpeg message beside it). Each thread runs in a copy of the caller's context variables
    (Prefect's run context)."""
    made_by = producers(scope_steps)
    results: dict[str, Context] = {}
    waiting = list(scope_steps)
    running: dict[Future[Context], Step] = {}
    errors: dict[str, BaseException] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, len(scope_steps)), thread_name_prefix="step")
    try:
        while waiting or running:
            for step in [s for s in waiting if not errors and set(made_by[s.name].values()) <= results.keys()]:
                waiting.remove(step)
                inputs = context | {name: results[maker][name] for name, maker in made_by[step.name].items()}
                running[pool.submit(contextvars.copy_context().run, runner, step, inputs)] = step
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                step = running.pop(future)
                try:
                    results[step.name] = future.result()
                except BaseException as exc:  # raised below, once the running steps end
                    errors[step.name] = exc
    finally:
        pool.shutdown(wait=not running, cancel_futures=True)  # an interrupt does not wait for the running steps
    for step in scope_steps:
        if step.name in errors:
            raise errors[step.name]
    for step in scope_steps:  # later outputs of the same name win, as in table order
        context = context | results[step.name]
    return context


# ---------------------------------------------------------------- reading a value back from the run's files


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _if_exists(path: Path) -> Path | None:
    return path if path.exists() else None


def _restore_separated(c: Context) -> tuple[Path, Path] | None:
    layout = c["layout"]
    return (layout.speech_wav, layout.background_wav) if layout.background_wav.exists() else None


_RESTORE: dict[str, Callable[[Context], Any]] = {
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
    "dub_audio": lambda c: c["layout"].audio(c["lang"]),
    "subtitle_files": lambda c: (c["layout"].srt(c["lang"]), c["layout"].vtt(c["lang"])),
    "picture": lambda c: _if_exists(c["layout"].picture(c["lang"])),
    "dub_video": lambda c: _if_exists(c["layout"].video(c["lang"])),
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
