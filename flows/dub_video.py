"""Dub one video into several languages.

The language-independent stages run once; then one `dub-language` subflow per language, several at a
time. Every stage is a task whose cache key is its inputs' content, its config and the code version,
with results persisted: a rerun resumes at the first unfinished stage, and adding a language re-runs
only that language.
"""

# No `from __future__ import annotations` in flow modules: Prefect builds pydantic models from these
# signatures, concurrently in threads for the language subflows, and string annotations fail there.
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from dubbing import pipeline, progress
from dubbing.config import LanguageConfig, Settings, load_settings
from dubbing.errors import DubbingError
from dubbing.files import output_lock
from dubbing.types import LanguageOutputs, Manifest, MediaInfo, Transcript
from flows.caching import stage_cache_key


def stage(fn: Callable, name: str, *, retries: int = 0, cached: bool = True) -> Task:
    """A pipeline step as a named Prefect task, cached by content unless `cached` is False."""
    options: dict[str, Any] = {
        "name": name,
        "retries": retries,
        "retry_delay_seconds": [2, 10, 30][:retries],
        "retry_condition_fn": _transient,
    }
    if cached:
        options |= {"cache_key_fn": stage_cache_key, "persist_result": True}
    else:
        options["cache_policy"] = NO_CACHE
    return task(fn, **options)


def _transient(_task: Task, _run: Any, state: Any) -> bool:
    """Retry real faults (timeouts, connection errors), not a user's bad input or config."""
    return not isinstance(state.result(raise_on_failure=False), DubbingError)


def run_stage(step: Task, *args: Any, language: str | None = None) -> Any:
    """Run a stage task and report it as a progress event, noting when its result came from the cache."""
    progress.report(step.name, 0.0, language)
    state = step(*args, return_state=True)
    result = state.result()  # raises the stage's own error
    progress.report(step.name, 1.0, language, "cached" if state.name == "Cached" else "")
    _kill_if_asked(step.name, language)
    return result


def _kill_if_asked(stage_name: str, language: str | None) -> None:
    """Fault injection for the crash-and-resume tests: DUBBING_KILL_AFTER=stage[:lang] SIGKILLs this
    process right after that stage finishes, as a power cut or OOM kill would."""
    target = os.environ.get("DUBBING_KILL_AFTER")
    if target and target in (stage_name, f"{stage_name}:{language}"):
        os.kill(os.getpid(), signal.SIGKILL)


probe = stage(pipeline.probe_source, "probe", cached=False)
extract_audio = stage(pipeline.extract_audio, "extract-audio")
transcribe = stage(pipeline.transcribe, "transcribe")
source_subtitles = stage(pipeline.write_source_subtitles, "source-subtitles")
# Translation backends may call a network service: retry with backoff.
translate = stage(pipeline.translate_script, "translate", retries=2)
synthesize = stage(pipeline.synthesize_track, "synthesize-and-fit")
mix = stage(pipeline.mix_audio, "mix")
subtitles = stage(pipeline.write_subtitles, "subtitles")
render = stage(pipeline.render_video, "render-video")
report = stage(pipeline.write_report, "report")


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
    script = run_stage(translate, transcript, lang, cfg, layout, language=lang)
    script, track = run_stage(synthesize, script, cfg, info.duration_s, layout, language=lang)
    audio = run_stage(mix, track, settings, layout, language=lang)
    srt, _vtt = run_stage(subtitles, script, info.duration_s, layout, language=lang)
    video_out = run_stage(render, video, info, audio, srt, lang, layout, language=lang)
    report_path = run_stage(report, script, track, layout, language=lang)
    create_markdown_artifact(
        key=f"qa-{_slug(layout.name)}-{lang}",
        markdown=pipeline.report_markdown(report_path, layout),
        description=f"{layout.name} in {lang}",
    )
    return pipeline.language_outputs(lang, video_out, layout)


@task(name="language", task_run_name="language-{lang}", cache_policy=NO_CACHE)
def run_language(
    video: Path,
    info: MediaInfo,
    transcript: Transcript,
    lang: str,
    cfg: LanguageConfig,
    settings: Settings,
    layout: pipeline.RunLayout,
) -> LanguageOutputs:
    """Runs one language's subflow; as a task it can run beside the other languages."""
    return dub_language(video, info, transcript, lang, cfg, settings, layout)


@flow(name="dub-video", flow_run_name="dub-{video.name}", task_runner=ThreadPoolTaskRunner(max_workers=16))
def dub_video(
    video: Path,
    languages: list[str],
    out: Path,
    preset: str = "draft",
    config: Path | None = None,
    audio: Path | None = None,
) -> Manifest:
    with output_lock(Path(out)):
        return _dub_video(video, languages, Path(out), preset, config, audio)


def _dub_video(
    video: Path, languages: list[str], out: Path, preset: str, config: Path | None, audio: Path | None
) -> Manifest:
    settings = load_settings(preset, config)
    layout = pipeline.layout_for(video, out)
    lang_cfgs = {lang: settings.for_language(lang) for lang in languages}  # fail fast on unknown codes
    steps = 4 + len(languages)
    bar = create_progress_artifact(0.0, key=f"progress-{_slug(layout.name)}", description=f"dubbing {video.name}")

    info = run_stage(probe, video, audio)
    analysis_wav, _mix_wav = run_stage(extract_audio, video, layout, audio)
    update_progress_artifact(bar, 100 * 2 / steps)
    transcript = run_stage(transcribe, analysis_wav, settings, layout)
    pipeline.require_speech(transcript, audio or video)
    run_stage(source_subtitles, transcript, layout)
    create_table_artifact(
        key=f"transcript-{_slug(layout.name)}",
        table=[{"start": u.start, "end": u.end, "speaker": u.speaker, "text": u.text} for u in transcript.utterances],
        description=f"{video.name}: {len(transcript.utterances)} utterances, language {transcript.language}",
    )
    update_progress_artifact(bar, 100 * 4 / steps)

    targets = pipeline.target_languages(languages, transcript.language)
    outputs: dict[str, LanguageOutputs] = {}
    done = 4 + len(languages) - len(targets)
    step = settings.max_parallel_languages
    for group in (targets[i : i + step] for i in range(0, len(targets), step)):
        futures = {
            lang: run_language.submit(video, info, transcript, lang, lang_cfgs[lang], settings, layout)
            for lang in group
        }
        for lang, future in futures.items():
            outputs[lang] = future.result()
            done += 1
            update_progress_artifact(bar, 100 * done / steps)
    return pipeline.write_manifest(video, info, transcript, outputs, layout)


def _slug(name: str) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40] or "video"
