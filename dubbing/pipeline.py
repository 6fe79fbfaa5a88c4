"""The steps of a dubbing run, as plain functions over files and shared types.

Stages never import each other; this module is where they meet. Prefect flows wrap each step in a
task and add nothing but orchestration, so every step runs (and is tested) without Prefect too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dubbing import asr, media, mix, subtitles, timing, translate, tts
from dubbing.config import LanguageConfig, Settings
from dubbing.errors import DubbingError
from dubbing.files import write_json
from dubbing.types import (
    DubTrack,
    LanguageOutputs,
    Manifest,
    MediaInfo,
    PlacedClip,
    Script,
    ScriptLine,
    Transcript,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLayout:
    """Where a run's files go (paths relative to `out` are what the manifest records)."""

    out: Path
    name: str

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
    return RunLayout(out=Path(out), name=Path(video).stem)


def probe_source(video: Path) -> MediaInfo:
    info = media.probe(video)
    if not info.has_audio:
        raise DubbingError(
            f"{video} has no audio track: there is no speech to dub "
            f"(use `dub lipsync VIDEO AUDIO` to give it new audio)"
        )
    return info


def extract_audio(video: Path, layout: RunLayout) -> tuple[Path, Path]:
    return (media.extract_analysis_audio(video, layout.analysis_wav), media.extract_mix_audio(video, layout.mix_wav))


def transcribe(audio: Path, settings: Settings, layout: RunLayout) -> Transcript:
    cfg = settings.asr
    transcriber = asr.get_transcriber(
        cfg.backend, model=cfg.model, compute_type=cfg.compute_type, beam_size=cfg.beam_size, vad=cfg.vad
    )
    transcript = transcriber.transcribe(audio, language=cfg.language)
    for warning in transcript.warnings:
        log.warning(warning)
    write_json(layout.transcript, transcript.model_dump())
    return transcript


def translate_script(transcript: Transcript, lang: str, cfg: LanguageConfig, layout: RunLayout) -> Script:
    translator = translate.get_translator(
        cfg.translate.backend, source=transcript.language, target=lang, model=cfg.translate.model
    )
    sources = [u.text for u in transcript.utterances]
    texts = translator.translate(sources)
    lines = [
        ScriptLine(index=i, speaker=u.speaker, start=u.start, end=u.end, source_text=u.text, text=t)
        for i, (u, t) in enumerate(zip(transcript.utterances, texts, strict=True))
    ]
    script = Script(
        source_language=transcript.language,
        language=lang,
        translator=translator.name,
        pivot=translator.pivot,
        lines=lines,
    )
    write_json(layout.script(lang), script.model_dump())
    return script


def synthesize_track(
    script: Script, cfg: LanguageConfig, duration_s: float, layout: RunLayout
) -> tuple[Script, DubTrack]:
    """Speak each line, sped up only as far as its slot needs (up to the language's limit), placed at its
    original start on a timeline as long as the source."""
    synth = tts.get_synthesizer(cfg.tts.backend)
    max_speedup = cfg.timing.max_speedup
    starts = [line.start for line in script.lines]
    clips: list[tuple[float, np.ndarray]] = []
    placed: list[PlacedClip] = []
    lines: list[ScriptLine] = []
    rate = None
    for i, line in enumerate(script.lines):
        voice = cfg.tts.voices.get(line.speaker, cfg.tts.voice)
        audio, rate = synth.synthesize(line.text, language=script.language, voice=voice)
        natural_s = len(audio) / rate
        next_start = starts[i + 1] if i + 1 < len(starts) else None
        fit = timing.plan_speed(natural_s, line.start, next_start, duration_s, max_speedup)
        if fit.speed > 1.0:
            audio, rate = synth.synthesize(line.text, language=script.language, voice=voice, speed=fit.speed)
        clip_s = len(audio) / rate
        notes = [f"over the slot by {clip_s - fit.available_s:.2f}s at the maximum speed-up"] if fit.over_limit else []
        lines.append(
            line.model_copy(
                update={"synth_s": round(clip_s, 3), "speed": fit.speed, "voice": voice, "notes": line.notes + notes}
            )
        )
        clips.append((line.start, audio))
        placed.append(
            PlacedClip(
                index=line.index,
                start=line.start,
                end=round(line.start + clip_s, 3),
                speed=fit.speed,
                over_limit=fit.over_limit,
            )
        )
    rate = rate or 24_000
    voice_track = timing.place_clips(clips, rate, duration_s)
    voice_path = media.write_audio(layout.output(script.language, ".voice.wav"), voice_track, rate)
    fitted = script.model_copy(update={"lines": lines})
    write_json(layout.script(script.language), fitted.model_dump())
    track = DubTrack(
        language=script.language, voice_path=str(voice_path), sample_rate=rate, duration_s=duration_s, clips=placed
    )
    return fitted, track


def mix_audio(track: DubTrack, settings: Settings, layout: RunLayout) -> Path:
    return mix.mix(
        Path(track.voice_path), layout.output(track.language, ".wav"), loudness_lufs=settings.mix.loudness_lufs
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


def render_video(video: Path, info: MediaInfo, audio: Path, srt: Path, lang: str, layout: RunLayout) -> Path | None:
    if not info.has_video:
        return None
    return media.mux(
        video, audio, layout.output(lang, ".mp4"), subtitles=srt, language=lang, duration_s=info.duration_s
    )


def write_report(script: Script, track: DubTrack, layout: RunLayout) -> Path:
    over = [c.index for c in track.clips if c.over_limit]
    report = {
        "language": script.language,
        "translator": script.translator,
        "pivot": script.pivot,
        "lines": len(script.lines),
        "max_speed": max((c.speed for c in track.clips), default=1.0),
        "lines_over_limit": over,
    }
    return write_json(layout.report(script.language), report)


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
