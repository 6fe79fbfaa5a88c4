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
from dataclasses import dataclass
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
from prefect.transactions import CommitMode, transaction

from dubbing import backends, pipeline, progress
from dubbing.config import LanguageConfig, Settings, load_settings
from dubbing.errors import DubbingError
from dubbing.files import output_lock
from dubbing.secrets import protect_logs
from dubbing.types import FaceTracks, LanguageOutputs, Manifest, MediaInfo, SpeakerProfile, Transcript
from flows.caching import stage_cache_key

protect_logs()  # workers import this module without the CLI: keep secrets out of their logs too


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
    if state.name == "Cached" and not _files_exist(state.result()):
        state = step.with_options(refresh_cache=True)(*args, return_state=True)  # its files were deleted
    result = state.result()  # raises the stage's own error
    progress.report(step.name, 1.0, language, "cached" if state.name == "Cached" else "")
    _kill_if_asked(step.name, language)
    return result


def _files_exist(result: Any) -> bool:
    """Whether every file a stage returned is still there (a cached result may outlive a deleted file)."""
    if isinstance(result, Path):
        return result.exists()
    if isinstance(result, list | tuple):
        return all(_files_exist(item) for item in result)
    return True


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
separate = stage(pipeline.separate_audio, "separate")
speaker_profiles = stage(pipeline.speaker_profiles, "speaker-profiles")
track_faces = stage(pipeline.track_faces, "track-faces")
# Translation backends may call a network service: retry with backoff.
translate = stage(pipeline.translate_script, "translate", retries=2)
match_voices = stage(pipeline.voices_for, "match-voices")
speak = stage(pipeline.speak_script, "synthesize-and-fit", retries=2)
mix = stage(pipeline.mix_audio, "mix")
subtitles = stage(pipeline.write_subtitles, "subtitles")
lipsync = stage(pipeline.render_lipsync, "lipsync")
render = stage(pipeline.render_video, "render-video")
report = stage(pipeline.write_report, "report")
review = stage(pipeline.review_page, "review-page", cached=False)

SOURCE_STAGES = tuple(
    t.name
    for t in (probe, extract_audio, transcribe, source_subtitles, separate, speaker_profiles, track_faces, review)
)
LANGUAGE_STAGES = tuple(t.name for t in (translate, match_voices, speak, mix, subtitles, lipsync, render, report))


@dataclass(frozen=True)
class SourceAnalysis:
    """What the once-per-video stages hand to every language."""

    transcript: Transcript
    profiles: list[SpeakerProfile]
    background: Path | None
    faces: FaceTracks | None


@flow(name="dub-language", flow_run_name="dub-{lang}")
def dub_language(
    video: Path,
    info: MediaInfo,
    source: SourceAnalysis,
    lang: str,
    cfg: LanguageConfig,
    settings: Settings,
    layout: pipeline.RunLayout,
) -> LanguageOutputs:
    transcript = source.transcript
    script = pipeline.edited_script(layout, lang) or run_stage(translate, transcript, lang, cfg, layout, language=lang)
    voices = run_stage(match_voices, transcript, source.profiles, lang, cfg, layout, language=lang)
    script, track = run_stage(speak, script, cfg, info.duration_s, voices, layout, language=lang)
    audio = run_stage(mix, track, settings, layout, source.background, language=lang)
    srt, _vtt = run_stage(subtitles, script, info.duration_s, layout, language=lang)
    picture = run_stage(lipsync, video, source.faces, script, track, settings, layout, language=lang)
    video_out = run_stage(render, video, info, audio, srt, lang, layout, picture, language=lang)
    report_path = run_stage(report, script, track, layout, settings, video_out, language=lang)
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
    source: SourceAnalysis,
    lang: str,
    cfg: LanguageConfig,
    settings: Settings,
    layout: pipeline.RunLayout,
) -> LanguageOutputs:
    """Runs one language's subflow; as a task it can run beside the other languages. Its stages commit
    their cached results as each finishes (EAGER): inside a task they would otherwise wait for this task to
    end, and a run killed mid-language would lose them."""
    with transaction(commit_mode=CommitMode.EAGER):
        return dub_language(video, info, source, lang, cfg, settings, layout)


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
        try:
            return _dub_video(video, languages, Path(out), preset, config, audio)
        finally:
            backends.release("asr", "diarize")  # a long-lived worker does not hold Whisper between videos


def _dub_video(
    video: Path, languages: list[str], out: Path, preset: str, config: Path | None, audio: Path | None
) -> Manifest:
    settings = load_settings(preset, config)
    layout = pipeline.layout_for(video, out)
    lang_cfgs = {lang: settings.for_language(lang) for lang in languages}  # fail fast on unknown codes
    steps = len(SOURCE_STAGES) + len(languages)
    bar = create_progress_artifact(0.0, key=f"progress-{_slug(layout.name)}", description=f"dubbing {video.name}")

    info = run_stage(probe, video, audio)
    analysis_wav, _mix_wav = run_stage(extract_audio, video, layout, audio)
    update_progress_artifact(bar, 100 * 2 / steps)
    transcript = run_stage(transcribe, analysis_wav, settings, layout)
    pipeline.require_speech(transcript, audio or video)
    run_stage(source_subtitles, transcript, layout)
    separated = run_stage(separate, transcript, settings, layout)
    speech, background = separated if separated else (None, None)
    profiles = run_stage(speaker_profiles, transcript, analysis_wav, layout, speech)
    faces = run_stage(track_faces, video, info, transcript, settings, layout)
    source = SourceAnalysis(transcript=transcript, profiles=profiles, background=background, faces=faces)
    create_table_artifact(
        key=f"transcript-{_slug(layout.name)}",
        table=[{"start": u.start, "end": u.end, "speaker": u.speaker, "text": u.text} for u in transcript.utterances],
        description=f"{video.name}: {len(transcript.utterances)} utterances, language {transcript.language}",
    )
    update_progress_artifact(bar, 100 * len(SOURCE_STAGES) / steps)
    backends.release("asr", "diarize")  # no language stage needs them; QA loads Whisper once for all languages

    targets = pipeline.target_languages(languages, transcript.language)
    outputs: dict[str, LanguageOutputs] = {}
    done = len(SOURCE_STAGES) + len(languages) - len(targets)
    step = settings.max_parallel_languages
    for group in (targets[i : i + step] for i in range(0, len(targets), step)):
        futures = {
            lang: run_language.submit(video, info, source, lang, lang_cfgs[lang], settings, layout) for lang in group
        }
        for lang, future in futures.items():
            outputs[lang] = future.result()
            done += 1
            update_progress_artifact(bar, 100 * done / steps)
    pipeline.write_manifest(video, info, transcript, outputs, layout)
    run_stage(review, layout)
    return Manifest.model_validate_json((layout.out / "manifest.json").read_text())


def _slug(name: str) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower()).strip("-")[:40] or "video"
