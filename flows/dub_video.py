"""Dub one video into several languages: language-independent stages once, then one subflow per language."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from dubbing import pipeline
from dubbing.config import LanguageConfig, Settings, load_settings
from dubbing.types import LanguageOutputs, Manifest, MediaInfo, Transcript

# Stage tasks: one per pipeline step, named for the UI.
probe = task(pipeline.probe_source, name="probe", cache_policy=NO_CACHE)
extract_audio = task(pipeline.extract_audio, name="extract-audio", cache_policy=NO_CACHE)
transcribe = task(pipeline.transcribe, name="transcribe", cache_policy=NO_CACHE)
source_subtitles = task(pipeline.write_source_subtitles, name="source-subtitles", cache_policy=NO_CACHE)
translate = task(pipeline.translate_script, name="translate", cache_policy=NO_CACHE)
synthesize = task(pipeline.synthesize_track, name="synthesize-and-fit", cache_policy=NO_CACHE)
mix = task(pipeline.mix_audio, name="mix", cache_policy=NO_CACHE)
subtitles = task(pipeline.write_subtitles, name="subtitles", cache_policy=NO_CACHE)
render = task(pipeline.render_video, name="render-video", cache_policy=NO_CACHE)
report = task(pipeline.write_report, name="report", cache_policy=NO_CACHE)


@flow(name="dub-language", flow_run_name="dub-{lang}")
def dub_language(
    video: Path,
    info: MediaInfo,
    transcript: Transcript,
    lang: str,
    cfg: LanguageConfig,
    settings: Settings,
    layout: pipeline.RunLayout,
) -> LanguageOutputs:
    script = translate(transcript, lang, cfg, layout)
    script, track = synthesize(script, cfg, info.duration_s, layout)
    audio = mix(track, settings, layout)
    srt, _vtt = subtitles(script, info.duration_s, layout)
    video_out = render(video, info, audio, srt, lang, layout)
    report(script, track, layout)
    return pipeline.language_outputs(lang, video_out, layout)


@flow(name="dub-video", flow_run_name="dub-{video.name}")
def dub_video(
    video: Path, languages: list[str], out: Path, preset: str = "draft", config: Path | None = None
) -> Manifest:
    settings = load_settings(preset, config)
    layout = pipeline.layout_for(video, out)
    lang_cfgs = {lang: settings.for_language(lang) for lang in languages}  # fail fast on unknown codes
    info = probe(video)
    analysis_wav, _mix_wav = extract_audio(video, layout)
    transcript = transcribe(analysis_wav, settings, layout)
    source_subtitles(transcript, layout)
    outputs = {}
    for lang in languages:
        if lang == transcript.language:
            continue
        outputs[lang] = dub_language(video, info, transcript, lang, lang_cfgs[lang], settings, layout)
    return pipeline.write_manifest(video, info, transcript, outputs, layout)
