"""Dub one video into several languages: the steps of `dubbing.steps.STEPS`, each as a Prefect task.

The once-per-video steps run once; then one `dub-language` subflow per language, several at a time (face
tracking, a deferred step, goes on beside them: only the steps that read the faces wait for it). Within
each, the steps run as a graph (`steps.run_graph`): a step starts once the values it reads are made. Every
stage is a task whose cache key is its inputs' content, its config and the code version, with results
persisted: a rerun resumes at the first unfinished stage, and adding a language re-runs only that language.
"""

# No `from __future__ import annotations` in flow modules: Prefect builds pydantic models from these
# signatures, concurrently in threads for the language subflows, and string annotations fail there.
import itertools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import CommitMode, transaction

from dubbing import backends, progress, review, steps
from dubbing.config import LanguageConfig, Settings, load_settings
from dubbing.errors import DubbingError, LanguagesFailed
from dubbing.files import output_lock, remove_temporaries
from dubbing.flows.caching import stage_cache_key
from dubbing.layout import RunLayout, layout_for
from dubbing.secrets import protect_logs
from dubbing.types import LanguageOutputs, Manifest, Transcript

protect_logs()  # workers import this module without the CLI: keep secrets out of their logs too
if logging.getLogger("dubbing").level == logging.NOTSET:  # a worker's root logger stops at WARNING
    logging.getLogger("dubbing").setLevel(logging.INFO)  # what the stages decided reaches the run's log in the UI


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


def run_stage(step: Task, *, language: str | None = None, **arguments: Any) -> Any:
    """Run a stage task and report it as a progress event, noting when its result came from the cache."""
    progress.report(step.name, 0.0, language)
    with progress.step(step.name, language):  # what the stage's own progress reports as
        state = step(**arguments, return_state=True)
        if state.name == "Cached" and not _files_exist(state.result()):
            state = step.with_options(refresh_cache=True)(**arguments, return_state=True)  # its files were deleted
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


TASKS: dict[str, Task] = {s.name: stage(s.run, s.name, retries=s.retries, cached=s.cached) for s in steps.STEPS}
"""Every step of `dubbing.steps.STEPS` as a Prefect task of the same name: what the flow runs."""


def run_step(step: steps.Step, context: steps.Context, language: str | None = None) -> steps.Context:
    """Run a step as its task (unless the user supplied its result, as an edited script): its outputs."""
    return steps.run(step, context, partial(run_stage, TASKS[step.name], language=language))


@dataclass(frozen=True)
class SourceAnalysis:
    """What the once-per-video steps hand to every language: the run's named values so far."""

    context: dict[str, Any]

    def __getstate__(self) -> dict[str, Any]:
        """Sent to another process (a Dask worker), it first waits for the deferred steps' values (the faces): a
        future does not travel. In this process (the thread-pool runner) the languages start without them."""
        return {"context": steps.settled(self.context)}


@flow(name="dub-language", flow_run_name="dub-{lang}")
def dub_language(source: SourceAnalysis, lang: str, cfg: LanguageConfig) -> LanguageOutputs:
    context = source.context | {"lang": lang, "cfg": cfg}
    context = steps.run_graph(steps.steps("language", context["settings"]), context, partial(run_step, language=lang))
    layout: RunLayout = context["layout"]
    create_markdown_artifact(
        key=f"qa-{_slug(layout.name)}-{lang}",
        markdown=review.report_markdown(context["report"], layout),
        description=f"{layout.name} in {lang}",
    )
    return steps.language_outputs(context)


@task(name="language", task_run_name="language-{lang}", cache_policy=NO_CACHE)
def run_language(source: SourceAnalysis, lang: str, cfg: LanguageConfig) -> LanguageOutputs:
    """Runs one language's subflow; as a task it can run beside the other languages. Its stages commit
    their cached results as each finishes (EAGER): inside a task they would otherwise wait for this task to
    end, and a run killed mid-language would lose them."""
    with transaction(commit_mode=CommitMode.EAGER):
        return dub_language(source, lang, cfg)


@flow(
    name="dub-video",
    flow_run_name="dub-{video.name}",
    task_runner=ThreadPoolTaskRunner(max_workers=16),  # type: ignore[arg-type]  # Prefect's generic is too narrow
)
def dub_video(
    video: Path,
    languages: list[str],
    out: Path,
    preset: str = "draft",
    config: Path | None = None,
    audio: Path | None = None,
    source_language: str | None = None,
    speakers: int | None = None,
    audio_track: int | None = None,
    script: Path | None = None,
    subtitles: str | None = None,
    keep_original_audio: bool | None = None,
    output_format: str | None = None,
    subtitles_only: bool | None = None,
    voices: dict[str, str] | None = None,
) -> Manifest:
    """`source_language` and `speakers` (None: detect, estimate) override `asr.language` and `diarize.speakers`;
    `audio_track` (from 1; None: the first) is the audio stream the speech is on; `script` (an SRT, WebVTT or
    script.json) is spoken instead of a translation (`steps.edited_script`); `subtitles`, `keep_original_audio`,
    `output_format` and `subtitles_only` (None: as configured) the keys of `output` (a subtitles-only run takes
    only the steps that make the subtitles: `steps.SUBTITLES_ONLY`); `voices` (speaker -> voice, `--voice`) is
    added to every language's `tts.voices`."""
    layout = layout_for(video, out)
    with output_lock(layout.lock):
        remove_temporaries(layout.out)  # a killed run's unfinished writes
        try:
            settings = load_settings(preset, config)
            settings.asr.language = source_language or settings.asr.language
            settings.diarize.speakers = speakers or settings.diarize.speakers
            chosen = dict(subtitles=subtitles, keep_original_audio=keep_original_audio, format=output_format,
                          subtitles_only=subtitles_only)  # fmt: skip
            settings.output = type(settings.output).model_validate(
                settings.output.model_dump() | {key: value for key, value in chosen.items() if value is not None}
            )
            for lang_cfg in settings.languages.values():
                lang_cfg.tts.voices.update(voices or {})
            return _dub_video(video, languages, layout, settings, audio, audio_track, script)
        finally:
            backends.release("asr", "diarize")  # a long-lived worker does not hold Whisper between videos


def _dub_video(
    video: Path,
    languages: list[str],
    layout: RunLayout,
    settings: Settings,
    audio: Path | None,
    audio_track: int | None = None,
    script: Path | None = None,
) -> Manifest:
    lang_cfgs = {lang: settings.for_language(lang) for lang in languages}  # fail fast on unknown codes
    source_steps = steps.steps("source", settings)
    total = len(source_steps) + len(languages)
    bar = cast(
        UUID, create_progress_artifact(0.0, key=f"progress-{_slug(layout.name)}", description=f"dubbing {video.name}")
    )  # sync in a sync flow

    finished = itertools.count(1)  # next() on it is atomic: the steps end in several threads

    def run_and_count(step: steps.Step, context: steps.Context) -> steps.Context:
        outputs = run_step(step, context)
        update_progress_artifact(bar, 100 * next(finished) / total)
        return outputs

    context: steps.Context = {"video": video, "audio": audio, "settings": settings, "layout": layout}
    context["audio_track"] = audio_track
    if script is not None:
        context["script_file"] = script
    context |= steps.skipped(settings)  # what the steps this run skips would make: None
    context = steps.run_graph(source_steps, context, run_and_count)
    transcript: Transcript = context["transcript"]
    create_table_artifact(
        key=f"transcript-{_slug(layout.name)}",
        table=[{"start": u.start, "end": u.end, "speaker": u.speaker, "text": u.text} for u in transcript.utterances],
        description=f"{video.name}: {len(transcript.utterances)} utterances, language {transcript.language}",
    )
    backends.release("asr", "diarize")  # no language stage needs them; QA loads Whisper once for all languages

    source = SourceAnalysis(context)
    targets = steps.target_languages(languages, transcript.language)
    outputs: dict[str, LanguageOutputs] = {}
    errors: dict[str, Exception] = {}
    done = len(source_steps) + len(languages) - len(targets)
    waiting = list(targets)
    running: dict[PrefectFuture[LanguageOutputs], str] = {}
    while waiting or running:  # a rolling pool: the next language starts as soon as one ends
        while waiting and len(running) < settings.max_parallel_languages:
            lang = waiting.pop(0)
            running[run_language.submit(source, lang, lang_cfgs[lang])] = lang
        future = next(as_completed(list(running)))
        lang = running.pop(future)
        try:
            outputs[lang] = future.result()
        except Exception as exc:  # one language's failure never costs the others
            errors[lang] = exc
            get_run_logger().error("%s failed: %s", lang, exc)
        done += 1
        update_progress_artifact(bar, 100 * done / total)
    if outputs:  # the faces, tracked beside the languages, are made: every finished language read them
        context = steps.settled(context)
    outputs = {lang: outputs[lang] for lang in targets if lang in outputs}  # in the order the user gave them
    errors = {lang: errors[lang] for lang in targets if lang in errors}
    if errors and not outputs:  # nothing finished: the run fails with its own error, as a one-language run does
        raise next(iter(errors.values()))
    failed = {lang: " ".join(str(exc).split()) or type(exc).__name__ for lang, exc in errors.items()}
    steps.write_manifest(video, context["info"], transcript, outputs, layout, failed)
    context = steps.run_graph(steps.steps("summary", settings), context, run_step)
    if failed:
        raise LanguagesFailed(failed, str(layout.manifest), list(outputs))
    return Manifest.model_validate_json(layout.manifest.read_text())


def _slug(name: str) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower()).strip("-")[:40] or "video"
