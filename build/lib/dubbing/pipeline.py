"""The steps of a dubbing run, as plain functions over files and shared types.

Stages never import each other; this module is where they meet. Prefect flows wrap each step in a
task and add nothing but orchestration, so every step runs (and is tested) without Prefect too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dubbing import (
    asr,
    backends,
    diarize,
    media,
    mix,
    models,
    qa,
    review,
    separate,
    speaker_embedding,
    subtitles,
    timing,
    translate,
    tts,
    voice,
)
from dubbing.config import LanguageConfig, Settings, load_settings
from dubbing.errors import DubbingError
from dubbing.files import atomic_path, write_json, write_text
from dubbing.secrets import read_secret
from dubbing.types import (
    ANALYSIS_RATE,
    DubTrack,
    FaceTracks,
    LanguageOutputs,
    Manifest,
    MediaInfo,
    PlacedClip,
    QAReport,
    Script,
    ScriptLine,
    SourceSpeaker,
    SpeakerProfile,
    SpeakerTurn,
    Transcript,
    VoiceMatch,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLayout:
    """Where a run's files go (paths relative to `out` are what the manifest records)."""

    out: Path
    name: str
    folder_id: str = ""  # changes when the output folder is deleted and made again (see layout_for)

    @property
    def source_dir(self) -> Path:
        return self.out / "source"

    @property
    def analysis_wav(self) -> Path:
        return self.source_dir / "audio.16k.wav"

    @property
    def mix_wav(self) -> Path:
        return self.source_dir / "audio.48k.wav"

    @property
    def transcript(self) -> Path:
        return self.source_dir / "transcript.json"

    @property
    def speakers_dir(self) -> Path:
        return self.source_dir / "speakers"

    @property
    def speaker_profiles(self) -> Path:
        return self.source_dir / "speakers.json"

    def language_dir(self, lang: str) -> Path:
        return self.out / lang

    def output(self, lang: str, suffix: str) -> Path:
        return self.language_dir(lang) / f"{self.name}.{lang}{suffix}"

    def script(self, lang: str) -> Path:
        return self.language_dir(lang) / "script.json"

    def report(self, lang: str) -> Path:
        return self.language_dir(lang) / "report.json"

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))


def layout_for(video: Path, out: Path) -> RunLayout:
    return RunLayout(out=Path(out), name=Path(video).stem, folder_id=_folder_id(Path(out)))


def _folder_id(out: Path) -> str:
    """An id made when an output folder is first used. It is part of every stage's cache key, so a deleted and
    re-made folder starts afresh instead of being handed cached results whose files are gone."""
    marker = out / ".dub-id"
    if not marker.exists():
        write_text(marker, uuid.uuid4().hex)
    return marker.read_text().strip()


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


def extract_audio(video: Path, layout: RunLayout, audio: Path | None = None) -> tuple[Path, Path]:
    """Decode the speech (from `audio` when given, else the video) for analysis and for mixing."""
    source = audio or video
    return (media.extract_analysis_audio(source, layout.analysis_wav), media.extract_mix_audio(source, layout.mix_wav))


def require_speech(transcript: Transcript, source: Path) -> None:
    """Stop before the per-language work when there is nothing to translate."""
    if not transcript.utterances:
        raise DubbingError(f"no speech found in {source}: nothing to dub (is it music or silence?)")


def transcriber_for(backend: str, model: str, compute_type: str, beam_size: int, vad: bool) -> asr.Transcriber:
    """The pooled ASR model: transcription and the QA back-transcription share one when their settings agree."""
    return backends.shared(
        "asr",
        (backend, model, compute_type, beam_size, vad),
        lambda: asr.get_transcriber(backend, model=model, compute_type=compute_type, beam_size=beam_size, vad=vad),
    )


def transcribe(audio: Path, settings: Settings, layout: RunLayout) -> Transcript:
    """ASR (words with times), then diarization (who speaks when), then the words grouped into speaker-labelled
    dubbing lines; writes transcript.json."""
    cfg = settings.asr
    transcriber = transcriber_for(cfg.backend, cfg.model, cfg.compute_type, cfg.beam_size, cfg.vad)
    transcript = transcriber.transcribe(audio, language=cfg.language)
    dcfg = settings.diarize
    turns: list[SpeakerTurn] = []
    if transcript.utterances and dcfg.backend != "none":
        options: dict = {"merge_cos": dcfg.merge_cos} if dcfg.backend == "campplus" else {}
        if dcfg.backend == "pyannote" and dcfg.token_secret:
            options["token"] = read_secret(block=dcfg.token_secret, what="diarize.token_secret")
        diarizer = backends.shared(
            "diarize",
            (dcfg.backend, dcfg.merge_cos, dcfg.token_secret),
            lambda: diarize.get_diarizer(dcfg.backend, **options),
        )
        turns = diarizer.diarize(audio, speakers=dcfg.speakers)
    transcript = diarize.attribute(
        transcript, turns, min_s=dcfg.min_line_s, max_s=dcfg.max_line_s, pause_s=dcfg.pause_s
    )
    for warning in transcript.warnings:
        log.warning(warning)
    write_json(layout.transcript, transcript.model_dump())
    return transcript


def speaker_profiles(
    transcript: Transcript, analysis_wav: Path, layout: RunLayout, reference_audio: Path | None = None
) -> list[SpeakerProfile]:
    """A profile per speaker (embedding, median pitch, clean reference clip) for voice matching; writes
    source/speakers/S*.reference.wav and source/speakers.json. `reference_audio` (e.g. the separated voice at
    full quality) is where the clips are cut from; default the analysis audio."""
    profiles = diarize.speaker_profiles(transcript, analysis_wav, layout.speakers_dir, reference_audio=reference_audio)
    write_json(layout.speaker_profiles, [p.model_dump() for p in profiles])
    return profiles


def translate_script(transcript: Transcript, lang: str, cfg: LanguageConfig, layout: RunLayout) -> Script:
    """Translate every utterance, then the length pass: estimate each line's spoken length for the language's
    TTS, and where it will not fit its slot at the allowed speed-up, take a shorter rendering (recorded per line)."""
    translator = translate.translator_for(cfg.translate, transcript.language, lang)
    sources = [u.text for u in transcript.utterances]
    texts = translator.translate(sources)
    fits = translate.fit_to_slots(
        translator,
        sources,
        texts,
        starts=[u.start for u in transcript.utterances],
        end_of_timeline=transcript.duration_s,
        tts_backend=cfg.tts.backend,
        max_speedup=cfg.timing.max_speedup,
        shorten=cfg.translate.length_aware,
    )
    lines = [
        ScriptLine(
            index=i,
            speaker=u.speaker,
            start=u.start,
            end=u.end,
            source_text=u.text,
            text=fit.text,
            estimated_s=fit.estimated_s,
            slot_s=fit.slot_s,
            length_action=fit.action,
            first_text=fit.original_text,
            notes=fit.notes,
        )
        for i, (u, fit) in enumerate(zip(transcript.utterances, fits, strict=True))
    ]
    script = Script(
        source_language=transcript.language,
        language=lang,
        translator=translator.name,
        pivot=translator.pivot,
        length_basis=f"{cfg.tts.backend} speech rate for {lang}, up to {cfg.timing.max_speedup:g}x speed-up",
        lines=lines,
    )
    save_script(script, layout)
    return script


def save_script(script: Script, layout: RunLayout) -> Path:
    """Write script.json and remember its hash, so a later run can tell a user's edit from our own output."""
    path = write_json(layout.script(script.language), script.model_dump())
    write_text(_script_stamp(layout, script.language), hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def edited_script(layout: RunLayout, lang: str) -> Script | None:
    """The user's edited script.json, if they changed it since the pipeline wrote it (else None). Its lines
    replace the translation; the voice stage re-speaks only the lines whose text changed."""
    path, stamp = layout.script(lang), _script_stamp(layout, lang)
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


def _script_stamp(layout: RunLayout, lang: str) -> Path:
    return layout.language_dir(lang) / ".script.sha256"


Shorten = Callable[[ScriptLine, float, float], "str | None"]
"""Hook into translation: (line, seconds it must fit, seconds it takes now) -> a shorter text, or None."""


def translation_shortener(script: Script, cfg: LanguageConfig) -> Shorten:
    """The `shorten` hook for synthesize_track: asks the language's translator for a shorter rendering of a
    line the voice stage measured as too long (rule-based condensation, n-best or an LLM rewrite)."""
    translator = translate.translator_for(cfg.translate, script.source_language, script.language)
    sources = [line.source_text for line in sorted(script.lines, key=lambda line: line.index)]
    positions = {line.index: i for i, line in enumerate(sorted(script.lines, key=lambda line: line.index))}

    def shorten(line: ScriptLine, budget_s: float, natural_s: float) -> str | None:
        return translate.shorter_after_synthesis(
            translator,
            sources,
            positions[line.index],
            line.text,
            budget_s=budget_s,
            natural_s=natural_s,
            tts_backend=cfg.tts.backend,
        )

    return shorten


def synthesizer_for(cfg: LanguageConfig) -> tts.Synthesizer:
    """The language's TTS backend; XTTS (cloning) instead whenever its weights are cached and allowed."""
    if cfg.tts.clone_when_available and cfg.tts.match != "none" and tts.xtts_available():
        return tts.get_synthesizer("xtts")
    return tts.get_synthesizer(cfg.tts.backend)


def source_speakers(
    transcript: Transcript, audio: Path, layout: RunLayout, profiles: list | None = None, max_s: float = 30.0
) -> list[SourceSpeaker]:
    """What voice matching needs per speaker. Diarization's profiles when given; otherwise a reference clip cut
    from `audio` (the separated speech when there is one) over each speaker's utterances, up to `max_s`."""
    if profiles:  # a speaker with too little clean speech to embed gets the default voice
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
            continue  # too little speech to match: the speaker gets the default voice
        clip = media.write_audio(layout.source_dir / "speakers" / f"{speaker}.wav", np.concatenate(pieces), rate)
        speakers.append(SourceSpeaker(speaker=speaker, reference_clip=str(clip)))
    return speakers


def default_voice(synth: tts.Synthesizer, language: str) -> str:
    """The backend's own default voice, else the first it lists for the language (espeak: its tuned voice)."""
    return getattr(synth, "default_voice", None) or next(iter(synth.voices(language)), language)


def match_voices(speakers: list[SourceSpeaker], lang: str, cfg: LanguageConfig, layout: RunLayout) -> dict:
    """Pick each speaker's voice for this language (once per video and language); written to voices.json."""
    synth = synthesizer_for(cfg)
    text = voice.probe_text(lang)
    bank_voices = synth.voices(lang)
    bank = voice.VoiceBank(
        backend=synth.name,
        speak=lambda v: synth.synthesize(text, language=lang, voice=v),
        voices=bank_voices,
        default_voice=cfg.tts.voice or default_voice(synth, lang),
        can_blend=hasattr(synth, "style"),
        clones=synth.clones,
        cache_dir=models.cache_root() / "voice-bank",
        cache_key=f"{lang}|{text}|{getattr(synth, 'revision', '')}",
        table_key=voice.probe_table_key(*synth.probe_key(lang, text)) if hasattr(synth, "probe_key") else "",
        probe_text=text,
    )
    matcher = voice.get_matcher("clone" if synth.clones else cfg.tts.match)
    matches = matcher.match(speakers, bank, dict(cfg.tts.voices)) if speakers else {}
    write_json(layout.language_dir(lang) / "voices.json", {k: v.model_dump() for k, v in matches.items()})
    return matches


def _speak_line(
    synth: tts.Synthesizer,
    text: str,
    lang: str,
    match: VoiceMatch,
    window: timing.Window,
    estimator: timing.RateEstimator,
    max_speedup: float,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, int, float, timing.Fit]:
    """Synthesise one line at the speed it needs (guessed from the voice's rate so far, so usually once),
    apply the speaker's voice shift, and conform it to its fitted length. Returns audio, rate, natural length
    and the fit. With `cache_dir`, a line already spoken with the same text, voice and window is reused, so
    editing one line of script.json re-speaks only that line."""
    sound = match.model_dump(include={"backend", "voice", "pitch_hz", "formant_ratio", "pitch_range", "eq_db"})
    parts = [synth.name, text, lang, sound, dataclasses.asdict(window), max_speedup]
    key = _line_key(parts)
    cached = _load_line(cache_dir, key) if cache_dir else None
    if cached is not None:
        audio, rate, natural_s = cached
        estimator.update(text, natural_s)
        return audio, rate, natural_s, timing.plan_speed(natural_s, window, max_speedup)

    def say(speed: float) -> tuple[np.ndarray, int]:
        audio, rate = synth.synthesize(text, language=lang, voice=match.voice, speed=speed)
        return voice.shift_voice(audio, rate, match), rate

    guess = estimator.estimate(text)
    speed = timing.plan_speed(guess, window, max_speedup).speed if guess else 1.0
    audio, rate = say(speed)
    natural_s = len(audio) / rate * speed  # engine rate controls are close to proportional
    fit = timing.plan_speed(natural_s, window, max_speedup)
    if abs(fit.speed / speed - 1.0) > 0.08:  # the guess was off: synthesise at the right rate
        speed = fit.speed
        audio, rate = say(speed)
        natural_s = len(audio) / rate * speed
        fit = timing.plan_speed(natural_s, window, max_speedup)
    estimator.update(text, natural_s)
    audio = timing.conform(audio, rate, fit.target_s)
    if cache_dir:
        _save_line(cache_dir, key, audio, rate, natural_s, parts)
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


def _load_line(cache_dir: Path, key: str) -> tuple[np.ndarray, int, float] | None:
    wav, meta = cache_dir / f"{key}.wav", cache_dir / f"{key}.json"
    if not (wav.exists() and meta.exists()):
        return None
    audio, rate = sf.read(str(wav), dtype="float32")
    return audio, rate, float(json.loads(meta.read_text())["natural_s"])


def _save_line(cache_dir: Path, key: str, audio: np.ndarray, rate: int, natural_s: float, parts: list) -> None:
    with atomic_path(cache_dir / f"{key}.wav") as tmp:
        sf.write(str(tmp), audio, rate, format="WAV", subtype="FLOAT")
    write_json(cache_dir / f"{key}.json", {"natural_s": natural_s, "made_from": _rounded(parts)})


def synthesize_track(
    script: Script,
    cfg: LanguageConfig,
    duration_s: float,
    layout: RunLayout,
    voices: dict[str, VoiceMatch] | None = None,
    shorten: Shorten | None = None,
) -> tuple[Script, DubTrack]:
    """Speak each line in its speaker's voice at its original start, fitted to its slot (timing rules in
    dubbing.timing); a line that cannot fit even at the maximum speed-up goes to `shorten` once. Writes
    NAME.LANG.voice.wav (the dub alone) and script.json (slot, synthesised length, speed and voice per line)."""
    synth = synthesizer_for(cfg)
    voices = dict(voices or {})
    tcfg = cfg.timing
    lines_in = sorted(script.lines, key=lambda line: line.start)
    estimators: dict[str, timing.RateEstimator] = {}
    clip_cache = layout.language_dir(script.language) / "clips"
    clips: list[tuple[float, np.ndarray]] = []
    placed: list[PlacedClip] = []
    lines: list[ScriptLine] = []
    rate = None
    for i, line in enumerate(lines_in):
        nxt = lines_in[i + 1] if i + 1 < len(lines_in) else None
        window = timing.window_for(
            line.start,
            line.end,
            line.speaker,
            (nxt.start, nxt.speaker) if nxt else None,
            duration_s,
            far_gap_s=tcfg.far_gap_s,
            guard_s=tcfg.guard_s,
        )
        match = voices.get(line.speaker) or voice.parse_voice(
            cfg.tts.voices.get(line.speaker, cfg.tts.voice) or default_voice(synth, script.language),
            synth.name,
            line.speaker,
        )
        estimator = estimators.setdefault(match.voice, timing.RateEstimator(match.seconds_per_char))
        text, notes = line.text, list(line.notes)
        if not text.strip():
            lines.append(line.model_copy(update={"synth_s": 0.0, "speed": 1.0, "voice": match.label}))
            continue
        fit_args = (script.language, match, window, estimator, tcfg.max_speedup, clip_cache)
        audio, rate, natural_s, fit = _speak_line(synth, text, *fit_args)
        if fit.over_limit and shorten is not None and tcfg.shorten:
            shorter = shorten(line, fit.available_s * tcfg.max_speedup, natural_s)
            if shorter and shorter.strip() and shorter != text:
                notes.append(f"shortened by the translation stage (was: {text})")
                text = shorter
                audio, rate, natural_s, fit = _speak_line(synth, text, *fit_args)
        clip_s = len(audio) / rate
        if fit.over_limit:
            notes.append(
                f"does not fit: {natural_s:.2f}s of speech for {fit.available_s:.2f}s even at x{tcfg.max_speedup}; "
                f"cut by {clip_s - fit.available_s:.2f}s"
            )
        lines.append(
            line.model_copy(
                update={
                    "text": text,
                    "synth_s": round(clip_s, 3),
                    "natural_s": round(natural_s, 3),
                    "fit_end": round(window.hard_end, 3),
                    "speed": fit.speed,
                    "voice": match.label,
                    "notes": notes,
                }
            )
        )
        clips.append((line.start, audio))
        end = min(line.start + clip_s, window.hard_end)
        clip = PlacedClip(index=line.index, start=line.start, end=round(end, 3), speed=fit.speed)
        placed.append(clip.model_copy(update={"over_limit": fit.over_limit}))
    rate = rate or 24_000
    voice_track = timing.place_clips(clips, rate, duration_s)
    voice_path = media.write_audio(layout.output(script.language, ".voice.wav"), voice_track, rate)
    fitted = script.model_copy(update={"lines": lines})
    save_script(fitted, layout)
    track = DubTrack(
        language=script.language,
        voice_path=str(voice_path),
        sample_rate=rate,
        duration_s=duration_s,
        clips=placed,
        voices=voices,
    )
    return fitted, track


def voices_for(
    transcript: Transcript, profiles: list[SpeakerProfile], lang: str, cfg: LanguageConfig, layout: RunLayout
) -> dict[str, VoiceMatch]:
    """Each speaker's voice in this language (a step of its own, so a cached run keeps exactly these voices)."""
    speakers = source_speakers(transcript, layout.analysis_wav, layout, profiles)
    return match_voices(speakers, lang, cfg, layout)


def speak_script(
    script: Script, cfg: LanguageConfig, duration_s: float, voices: dict[str, VoiceMatch], layout: RunLayout
) -> tuple[Script, DubTrack]:
    """The voice stage for one language: speak and fit every line in its speaker's voice, sending lines that
    cannot fit back to the translator once."""
    return synthesize_track(script, cfg, duration_s, layout, voices=voices, shorten=translation_shortener(script, cfg))


def separate_audio(transcript: Transcript, settings: Settings, layout: RunLayout) -> tuple[Path, Path] | None:
    """Split the original (48 kHz) audio into speech and background, gated by the transcript's speech times;
    None when separation is off. Runs once per video."""
    cfg = settings.separate
    if cfg.backend == "none":
        return None
    speech = [(u.start, u.end) for u in transcript.utterances]
    separator = separate.get_separator(cfg.backend)
    return separator.separate(
        layout.mix_wav, layout.source_dir / "speech.wav", layout.source_dir / "background.wav", speech=speech
    )


def mix_audio(track: DubTrack, settings: Settings, layout: RunLayout, background: Path | None = None) -> Path:
    """The final mix: dub voice over the background (ducked under the dub), loudness-normalised (EBU R128).
    `background` defaults to the separated background of this run when it exists."""
    if background is None and (layout.source_dir / "background.wav").exists():
        background = layout.source_dir / "background.wav"
    return mix.mix(
        Path(track.voice_path),
        layout.output(track.language, ".wav"),
        background=background,
        loudness_lufs=settings.mix.loudness_lufs,
        duck_db=settings.mix.duck_db,
    )


def write_subtitles(script: Script, duration_s: float, layout: RunLayout) -> tuple[Path, Path]:
    lang = script.language
    return subtitles.write_subtitles(
        ((line.start, line.end, line.text) for line in script.lines),
        layout.output(lang, ".srt"),
        layout.output(lang, ".vtt"),
        duration_s,
    )


def write_source_subtitles(transcript: Transcript, layout: RunLayout) -> tuple[Path, Path]:
    name = f"{layout.name}.{transcript.language}"
    return subtitles.write_subtitles(
        ((u.start, u.end, u.text) for u in transcript.utterances),
        layout.source_dir / f"{name}.srt",
        layout.source_dir / f"{name}.vtt",
        transcript.duration_s,
    )


def render_video(
    video: Path, info: MediaInfo, audio: Path, srt: Path, lang: str, layout: RunLayout, picture: Path | None = None
) -> Path | None:
    """Mux the dub audio and subtitles under the picture: the lipsynced one when `picture` is given."""
    if not info.has_video:
        return None
    return media.mux(
        picture or video, audio, layout.output(lang, ".mp4"), subtitles=srt, language=lang, duration_s=info.duration_s
    )


def track_faces(
    video: Path, info: MediaInfo, transcript: Transcript, settings: Settings, layout: RunLayout
) -> FaceTracks | None:
    """Once per video: track faces, pick each line's speaking face, and check the input for lipsync.
    Its `checks` (no face, profile, low resolution, several faces, covered mouth, cuts) belong in every report."""
    if not info.has_video or not settings.lipsync.enabled:
        return None
    from dubbing import lipsync  # mediapipe and OpenCV load only when a run has a picture

    faces, _data = lipsync.analyse(
        video,
        layout.source_dir / "faces.npz",
        lines=[(u.start, u.end) for u in transcript.utterances],
        source_audio=layout.analysis_wav if layout.analysis_wav.exists() else None,
        max_faces=settings.lipsync.max_faces,
    )
    write_json(layout.source_dir / "faces.json", faces.model_dump())
    for check in faces.checks:
        log.warning("lipsync: %s", check.message)
    return faces


def render_lipsync(
    video: Path, faces: FaceTracks | None, script: Script, track: DubTrack, settings: Settings, layout: RunLayout
) -> Path | None:
    """Per language: the picture with each line's speaker mouthing the dub voice (None: no face, keep the
    original picture; the report says so)."""
    cfg = settings.lipsync
    if faces is None or not cfg.enabled or faces.faces == 0:
        return None
    from dubbing import lipsync

    texts = {line.index: line.text for line in script.lines}
    lines = [(c.start, c.end, texts.get(c.index, "")) for c in track.clips] if cfg.phonemes else None
    out = layout.language_dir(script.language) / f"{layout.name}.{script.language}.picture.mp4"
    options = {"model_path": cfg.model_path} if cfg.backend == "wav2lip" else {"strength": cfg.strength}
    result = lipsync.render_dub(
        video,
        faces,
        Path(track.voice_path),
        out,
        lines=lines,
        language=script.language,
        backend=cfg.backend,
        backend_options=options,
        crf=cfg.crf,
        preset=cfg.preset,
    )
    return result.out


def lipsync_report(faces: FaceTracks | None, picture: Path | None) -> dict:
    """The lipsync part of a language's report: what was animated and the input checks."""
    if faces is None:
        return {"applied": False, "reason": "no video or lipsync disabled", "checks": []}
    return {
        "applied": picture is not None,
        "reason": None if picture is not None else "no face found: the original picture is kept",
        "faces": faces.faces,
        "face_frames": faces.face_frames,
        "scene_cuts": faces.scene_cuts,
        "line_faces": faces.line_faces,
        "checks": [c.model_dump() for c in faces.checks],
    }


def back_transcribe(voice: Path, lines: list[ScriptLine], lang: str, settings: Settings) -> Transcript:
    """The dub voice transcribed back by the ASR stage in pieces (qa.listening_windows), word times on the dub's
    timeline."""
    audio, rate = media.read_audio(voice, ANALYSIS_RATE)
    transcriber = transcriber_for("faster-whisper", settings.qa.asr_model, settings.asr.compute_type, 5, True)
    utterances = []
    with tempfile.TemporaryDirectory(prefix="dub-qa-") as tmp:
        for start, end in qa.listening_windows(lines, len(audio) / rate):
            piece = media.write_audio(Path(tmp) / "piece.wav", audio[int(start * rate) : int(end * rate)], rate)
            for u in transcriber.transcribe(piece, language=lang).utterances:
                words = [w.model_copy(update={"start": w.start + start, "end": w.end + start}) for w in u.words]
                utterances.append(u.model_copy(update={"start": u.start + start, "end": u.end + start, "words": words}))
    return Transcript(language=lang, duration_s=round(len(audio) / rate, 3), utterances=utterances)


def mouth_opening(video: Path | None, max_faces: int = 2, faces_npz: Path | None = None) -> tuple[np.ndarray, float]:
    """Per frame, the inner-lip gap of the face the lipsync stage would animate (NaN where no face), from a
    video's own pixels, or from landmarks already tracked (`faces_npz`). The QA hook into the lipsync stage."""
    from dubbing.lipsync import track_video
    from dubbing.lipsync.faces import FaceData, choose_active, mouth_gap

    if faces_npz is not None:
        data = FaceData.load(faces_npz)
    elif video is not None:
        data, _stream = track_video(video, max_faces=max_faces)
        choose_active(data)
    else:
        raise DubbingError("mouth_opening needs a video or tracked landmarks")
    gap = np.full(data.frames, np.nan, np.float32)
    for t in range(min(data.frames, len(data.active))):
        face = data.face_of(t, int(data.active[t]))
        if face is not None:
            gap[t] = mouth_gap(face)
    return gap, data.fps


def _source_embeddings(layout: RunLayout, transcript: Transcript) -> dict[str, np.ndarray]:
    """Each source speaker's CAM++ embedding: diarization's profile when written, else embedded here from the
    analysis audio over the speaker's utterances."""
    if layout.speaker_profiles.exists():
        profiles = json.loads(layout.speaker_profiles.read_text())
        found = {p["speaker"]: np.asarray(p["embedding"], np.float32) for p in profiles if p.get("embedding")}
        if found:
            return found
    samples, rate = media.read_audio(layout.analysis_wav, ANALYSIS_RATE)
    result = {}
    for speaker in transcript.speakers:
        pieces = [
            samples[int(u.start * rate) : int(u.end * rate)] for u in transcript.utterances if u.speaker == speaker
        ]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if len(audio) >= speaker_embedding.MIN_SECONDS * rate:
            result[speaker] = speaker_embedding.embed(audio, rate)
    return result


def _input_warnings(layout: RunLayout, transcript: Transcript) -> list[str]:
    """What the source-side stages warned about: ASR/diarization, and the lipsync stage's input checks."""
    warnings = list(transcript.warnings)
    faces_json = layout.source_dir / "faces.json"
    if faces_json.exists():
        faces = FaceTracks.model_validate_json(faces_json.read_text())
        warnings += [check.message for check in faces.checks]
    return warnings


def _lipsync_measure(
    layout: RunLayout, video: Path, voice: np.ndarray, lines: list[ScriptLine], settings: Settings, reanimated: bool
) -> tuple[dict, dict[int, float | None]]:
    """Mouth opening of the dubbed picture against the dub voice; with the same figure for the source picture
    and speech as a baseline when the source's faces were tracked (source/faces.npz). A dub that kept the source
    picture (not `reanimated`) has the source's landmarks: they are reused instead of tracking it again."""
    npz = layout.source_dir / "faces.npz"
    if not reanimated and npz.exists():
        gap, fps = mouth_opening(None, faces_npz=npz)
    else:
        gap, fps = mouth_opening(video, settings.lipsync.max_faces)
    envelope = qa.frame_envelope(voice, ANALYSIS_RATE, fps, len(gap))
    summary, per_line = qa.lip_sync(gap, envelope, fps, {line.index: qa.dub_span(line) for line in lines})
    summary["lipsync_applied"] = reanimated
    if npz.exists() and layout.analysis_wav.exists() and layout.transcript.exists():
        source_gap, source_fps = mouth_opening(None, faces_npz=npz)
        samples, _ = media.read_audio(layout.analysis_wav, ANALYSIS_RATE)
        spans = {
            i: (u.start, u.end)
            for i, u in enumerate(Transcript.model_validate_json(layout.transcript.read_text()).utterances)
        }
        baseline, _ = qa.lip_sync(
            source_gap, qa.frame_envelope(samples, ANALYSIS_RATE, source_fps, len(source_gap)), source_fps, spans
        )
        summary["source_correlation"] = baseline["correlation"]
    return summary, per_line


def quality_report(layout: RunLayout, lang: str, outputs: LanguageOutputs, settings: Settings) -> QAReport:
    """The QA of one finished language, from its files alone (so `dub eval` recomputes exactly what the run
    wrote): back-transcription of the dub voice, timing, voice similarity, lipsync, loudness, input warnings."""
    cfg = settings.qa
    script = Script.model_validate_json((layout.out / outputs.script).read_text())
    transcript = Transcript.model_validate_json(layout.transcript.read_text())
    voice_path = layout.out / outputs.voice
    voice_audio, _ = media.read_audio(voice_path, ANALYSIS_RATE)
    limits = qa.Thresholds(
        max_error_rate=cfg.max_error_rate,
        min_similarity=cfg.min_similarity,
        min_lip_sync=cfg.min_lip_sync,
        loudness_target=settings.mix.loudness_lufs,
        loudness_tolerance_lu=cfg.loudness_tolerance_lu,
        max_true_peak_db=cfg.max_true_peak_db,
        max_speedup=settings.for_language(lang).timing.max_speedup,
    )
    measured = qa.Measurements(inputs=_input_warnings(layout, transcript), notes={})
    if cfg.back_transcribe:
        measured.heard = back_transcribe(voice_path, script.lines, lang, settings)
    else:
        measured.notes["intelligibility"] = "back-transcription off (qa.back_transcribe)"
    measured.voice = qa.voice_similarity(
        _source_embeddings(layout, transcript), voice_audio, ANALYSIS_RATE, script.lines
    )
    video = layout.out / outputs.video if outputs.video else None
    if video is None or not video.exists():
        measured.notes["lipsync"] = "no video output"
    elif not cfg.lipsync:
        measured.notes["lipsync"] = "lipsync check off (qa.lipsync)"
    else:
        reanimated = (layout.language_dir(lang) / f"{layout.name}.{lang}.picture.mp4").exists()  # render_lipsync's
        measured.lipsync, measured.lip_lines = _lipsync_measure(
            layout, video, voice_audio, script.lines, settings, reanimated
        )
    measured.loudness = qa.loudness(layout.out / outputs.audio)
    return qa.build_report(script, measured, limits)


def write_report(
    script: Script, track: DubTrack, layout: RunLayout, settings: Settings | None = None, video: Path | None = None
) -> Path:
    """The language's QA (see `quality_report`) written to report.json. `video` defaults to the rendered
    NAME.LANG.mp4 when it exists; `settings` to the default config (pass the run's, for its thresholds)."""
    settings = settings or load_settings()
    lang = script.language
    if video is None and layout.output(lang, ".mp4").exists():
        video = layout.output(lang, ".mp4")
    outputs = language_outputs(lang, video, layout)
    if settings.qa.enabled:
        report = quality_report(layout, lang, outputs, settings)
    else:
        off = dict.fromkeys(("intelligibility", "voice", "lipsync", "loudness"), "QA off (qa.enabled)")
        limits = qa.Thresholds(max_speedup=settings.for_language(lang).timing.max_speedup)
        report = qa.build_report(script, qa.Measurements(notes=off), limits)
    return write_json(layout.report(lang), report.model_dump())


def _playable(video: Path, preview: Path, out: Path) -> str | None:
    """The path (relative to `out`) of `video` if browsers can play it, else of an H.264 preview made beside it."""
    if not video.exists():
        return None
    info = media.probe(video)
    if info.video_codec not in review.BROWSER_VIDEO or info.audio_codec not in review.BROWSER_AUDIO:
        if not preview.exists() or preview.stat().st_mtime < video.stat().st_mtime:
            review.browser_preview(video, preview)
        video = preview
    return os.path.relpath(video.absolute(), out.absolute())


def review_page(layout: RunLayout) -> Path:
    """report.html at the run's top level: source and dubs side by side, QA figures, flagged lines and the line
    table (dubbing.review), from manifest.json and each language's report.json; run it after write_manifest.
    Records the page in the manifest as `review`."""
    manifest_path = layout.out / "manifest.json"
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    reports = {
        lang: json.loads((layout.out / o.report).read_text())
        for lang, o in manifest.outputs.items()
        if (layout.out / o.report).exists()
    }
    videos = {"source": _playable(Path(manifest.source), layout.source_dir / f"{layout.name}.preview.mp4", layout.out)}
    for lang, o in manifest.outputs.items():
        preview = layout.output(lang, ".preview.mp4")
        videos[lang] = _playable(layout.out / o.video, preview, layout.out) if o.video else None
    page = write_text(layout.out / "report.html", review.page(manifest, reports, videos, layout.out))
    write_json(manifest_path, manifest.model_copy(update={"review": layout.relative(page)}).model_dump())
    return page


def evaluate_run(out: Path, settings: Settings) -> Manifest:
    """`dub eval`: recompute every language's QA of a finished run from its manifest and files, rewriting
    report.json and report.html."""
    manifest_path = Path(out) / "manifest.json"
    if not manifest_path.exists():
        raise DubbingError(f"{manifest_path} not found: give the output folder of a finished `dub run`")
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    layout = layout_for(Path(manifest.source), Path(out))
    for lang, outputs in manifest.outputs.items():
        for what in ("script", "voice", "audio"):
            if not (layout.out / getattr(outputs, what)).exists():
                raise DubbingError(f"{lang}: {getattr(outputs, what)} is missing from {out}; re-run `dub run`")
        report = quality_report(layout, lang, outputs, settings)
        write_json(layout.out / outputs.report, report.model_dump())
    review_page(layout)
    return manifest


def language_outputs(lang: str, video: Path | None, layout: RunLayout) -> LanguageOutputs:
    return LanguageOutputs(
        video=layout.relative(video) if video else None,
        audio=layout.relative(layout.output(lang, ".wav")),
        voice=layout.relative(layout.output(lang, ".voice.wav")),
        srt=layout.relative(layout.output(lang, ".srt")),
        vtt=layout.relative(layout.output(lang, ".vtt")),
        script=layout.relative(layout.script(lang)),
        report=layout.relative(layout.report(lang)),
    )


def target_languages(languages: list[str], source_language: str) -> list[str]:
    """The languages to dub into: a target equal to the source is skipped with a warning."""
    if source_language in languages:
        log.warning("skipping %s: it is the source language", source_language)
    return [lang for lang in languages if lang != source_language]


def report_markdown(report_path: Path, layout: RunLayout) -> str:
    """A short QA summary of one language's report, for the Prefect UI: the headline figures of every check
    (review.summary_rows, shared with report.html) and each flagged line with its time."""
    report = json.loads(Path(report_path).read_text())
    rows = "\n".join(f"| {key} | {value} |" for key, value in report.items() if not isinstance(value, dict | list))
    rows += "".join(f"\n| {key} | {value} |" for key, value in review.summary_rows(report))
    flagged = report.get("lines_over_limit") or []
    flags = "".join(
        f"\n| {review.clock(f.get('start'))} | {'' if f.get('line') is None else f['line']} | {f['check']} | "
        f"{str(f['message']).replace('|', '/')} |"
        for f in report.get("flags") or []
    )
    flag_table = f"| time | line | check | why |\n|---|---|---|---|{flags}" if flags else "No line failed a check."
    return (
        f"### {layout.name}: {report.get('language')}\n\n| figure | value |\n|---|---|\n{rows}\n\n"
        f"Lines over the speed limit: {', '.join(map(str, flagged)) or 'none'}\n\n"
        f"#### Flagged\n\n{flag_table}\n\n"
        f"Outputs: `{layout.language_dir(report.get('language', ''))}`; review page: `{layout.out / 'report.html'}`\n"
    )


def write_manifest(
    video: Path, info: MediaInfo, transcript: Transcript, outputs: dict[str, LanguageOutputs], layout: RunLayout
) -> Manifest:
    manifest = Manifest(
        source=str(video),
        source_language=transcript.language,
        duration_s=info.duration_s,
        speakers=transcript.speakers,
        transcript=layout.relative(layout.transcript),
        outputs=outputs,
    )
    write_json(layout.out / "manifest.json", manifest.model_dump())
    return manifest
