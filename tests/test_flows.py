"""Prefect flows under a test harness: states, cache hits on rerun, retries, batch isolation, Dask."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import TaskRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from dubbing import backends
from dubbing.errors import BatchFailed, DubbingError
from dubbing.flows.dub_video import dub_video, stage
from dubbing.flows.localize_batch import localize_batch
from tests.conftest import make_speech, make_video, session_api

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def harness():
    """The flows run here talk to the session's Prefect server (conftest's) when one runs, which saves starting
    a test server of their own (10-20 s on 2 cores); else to prefect_test_harness's server and database."""
    if api := session_api():
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield
            drain_logs_and_events()  # as the harness does: none left to send once the server has ended
        return
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    speech = make_speech(folder / "speech.wav", "Hello, my name is John. I like to eat apples in the morning.")
    return make_video(folder / "talk.mp4", seconds=4.5, audio=speech)


def drain_logs_and_events() -> None:
    """Send the logs and events Prefect's workers still hold (prefect_test_harness does the same at its end)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for result in (APILogWorker.drain_all(), EventsWorker.drain_all()):
            if inspect.isawaitable(result):
                await result

    run_coro_as_sync(drain())


def task_states_since(t0: datetime, api_url: str | None = None) -> dict[str, list[str]]:
    """Task run name -> state names, for runs created since t0, as the Prefect API (and UI) shows them.

    Flows run in this process use the API chosen when Prefect was imported; a `dub` subprocess uses the one in
    PREFECT_API_URL now (conftest sets it after the import), so a test of a subprocess's runs passes that URL."""
    updates = {PREFECT_API_URL: api_url} if api_url else {}
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        runs = client.read_task_runs(sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=200)
    states: dict[str, list[str]] = {}
    for run in runs:
        if run.created and run.created >= t0:
            states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name)
    return states


def quick_config(folder: Path) -> Path:
    """A config without lipsync and QA, for a test whose checks read neither (the stages it checks run the same)."""
    quick = folder / "quick.yaml"
    quick.write_text("lipsync: {enabled: false}\nqa: {enabled: false}\n")
    return quick


def test_rerun_reuses_every_stage_a_new_language_runs_alone_and_a_changed_input_is_not_cached(clip, tmp_path):
    """One folder dubbed three times: the same video again with a language more (only that language runs), then
    another video (its transcription is not served from the first one's cache)."""
    out = tmp_path / "out"
    t0 = datetime.now(UTC)
    backends.release()  # an earlier test in this process may have left Whisper in the pool
    asr_loads = backends.loads["asr"]
    first = dub_video(video=clip, languages=["es"], out=out, return_state=True)
    assert first.is_completed()
    # Whisper: once for transcription, dropped for the language stages, once more for the QA back-transcription,
    # and dropped again when the video is done.
    assert backends.loads["asr"] - asr_loads == 2
    assert backends.pooled("asr") == []
    first_states = task_states_since(t0)
    assert first_states["transcribe"] == ["Completed"]
    assert json.loads((out / "manifest.json").read_text())["outputs"]["es"]["video"] == "es/talk.es.mp4"

    t1 = datetime.now(UTC)
    asr_loads = backends.loads["asr"]
    dub_video(video=clip, languages=["es", "pt"], out=out)
    assert backends.loads["asr"] - asr_loads == 1  # transcription cached: Whisper only for pt's QA
    states = task_states_since(t1)
    assert states["transcribe"] == ["Cached"]
    assert states["extract-audio"] == ["Cached"]
    # es was finished: its stages come from the cache; pt is new and runs.
    assert sorted(states["translate"]) == ["Cached", "Completed"]
    assert sorted(states["synthesize-and-fit"]) == ["Cached", "Completed"]
    assert set(json.loads((out / "manifest.json").read_text())["outputs"]) == {"es", "pt"}

    # A changed input into the same folder (was test_changed_input_is_not_served_from_cache, which dubbed the clip
    # once more first): its audio lands under the same file names, yet transcription runs again.
    other = make_video(tmp_path / "other.mp4", seconds=3.0, audio=make_speech(tmp_path / "s.wav", "Good night."))
    t2 = datetime.now(UTC)
    dub_video(video=other, languages=["es"], out=out)
    assert task_states_since(t2)["transcribe"] == ["Completed"]


def test_editing_one_line_respeaks_only_that_line(tmp_path):
    first = make_speech(tmp_path / "a.wav", "Hello, my name is John and I live in Madrid.")
    second = make_speech(tmp_path / "b.wav", "Tomorrow I will buy a new car for my family.")
    speech = tmp_path / "both.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(first),
            "-i",
            str(second),
            "-filter_complex",
            "[0]apad=pad_dur=1.5[a];[a][1]concat=n=2:v=0:a=1",
            str(speech),
        ],
        check=True,
    )
    video = make_video(tmp_path / "two.mp4", seconds=8.0, audio=speech)
    out, quick = tmp_path / "out", quick_config(tmp_path)
    dub_video(video=video, languages=["es"], out=out, config=quick)
    script_path = out / "es" / "script.json"
    script = json.loads(script_path.read_text())
    assert len(script["lines"]) >= 2
    clips = out / "es" / "clips"
    before = {p.name: p.stat().st_mtime_ns for p in clips.glob("*.wav")}
    script["lines"][0]["text"] = "Buenos días a todos."
    script_path.write_text(json.dumps(script, ensure_ascii=False))

    t0 = datetime.now(UTC)
    dub_video(video=video, languages=["es"], out=out, config=quick)
    states = task_states_since(t0)
    assert "translate" not in states  # the edited script is used, not a new translation
    assert states["synthesize-and-fit"] == ["Completed"]
    after = {p.name: p.stat().st_mtime_ns for p in clips.glob("*.wav")}
    assert len(set(after) - set(before)) == 1  # only the edited line was spoken again
    assert all(after[name] == mtime for name, mtime in before.items())
    assert "Buenos días a todos." in (out / "es" / "two.es.srt").read_text()


def test_transient_failures_are_retried_and_user_errors_are_not(tmp_path):
    calls = {"flaky": 0, "bad": 0}

    def flaky(marker: str) -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise ConnectionError("service unavailable")
        return marker

    def bad(marker: str) -> str:
        calls["bad"] += 1
        raise DubbingError("unknown language")

    flaky_task = stage(flaky, "flaky", retries=2, cached=False).with_options(retry_delay_seconds=0)
    bad_task = stage(bad, "bad", retries=2, cached=False).with_options(retry_delay_seconds=0)
    assert flaky_task("ok") == "ok" and calls["flaky"] == 2
    with pytest.raises(DubbingError):
        bad_task("x")
    assert calls["bad"] == 1


def test_batch_isolates_a_bad_video(clip, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.mp4").write_bytes(clip.read_bytes())
    (folder / "broken.mp4").write_text("not a video")
    quick = quick_config(tmp_path)
    state = localize_batch(source=folder, out=tmp_path / "out", languages=["es"], config=quick, return_state=True)
    assert state.is_failed()  # the batch run ends Failed, naming the video
    with pytest.raises(BatchFailed, match=r"1 of 2 videos failed: broken\.mp4: .*not a readable media file") as failed:
        state.result()
    status = {Path(r["video"]).name: r for r in failed.value.results}
    assert status["good.mp4"]["status"] == "done"
    assert status["broken.mp4"]["status"] == "failed"
    assert "not a readable media file" in status["broken.mp4"]["detail"]
    assert (tmp_path / "out" / "good" / "manifest.json").exists()
    with pytest.raises(BatchFailed) as again:  # called as a function, the flow raises the same error
        localize_batch(source=folder, out=tmp_path / "out", languages=["es"], config=quick)
    assert {Path(r["video"]).name: r["status"] for r in again.value.results}["good.mp4"] == "skipped"


def test_language_subflows_run_on_a_local_dask_cluster(clip, tmp_path):
    pytest.importorskip("prefect_dask")
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False, "threads_per_worker": 2})
    manifest = dub_video.with_options(task_runner=runner)(video=clip, languages=["es", "ca"], out=tmp_path / "o")
    assert set(manifest.outputs) == {"es", "ca"}


def test_api_key_from_a_prefect_secret_block_is_sent_and_masked():
    from prefect.blocks.system import Secret

    from dubbing import translate
    from dubbing.config import TranslateConfig
    from dubbing.secrets import read_secret, redact
    from tests.test_translate import ChatServer

    key = "sk-block-93c1d5e2f7a8b4"
    Secret(value=key).save("dub-test-llm-key", overwrite=True)
    server = ChatServer()
    try:
        cfg = TranslateConfig(
            backend="openai-compatible",
            model="tiny",
            options={"base_url": server.url, "api_key_secret": "dub-test-llm-key"},
        )
        assert translate.translator_for(cfg, "en", "es").translate(["hello"]) == ["<hello>"]
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    assert server.requests[0]["auth"] == f"Bearer {key}"
    assert redact(f"the server said: {key}") == "the server said: ***"
    with pytest.raises(DubbingError, match="Prefect Secret block 'no-such-block'"):
        read_secret(block="no-such-block", what="translate.api_key_secret")


def test_the_source_language_and_speaker_count_given_override_detection(clip, tmp_path):
    quick = quick_config(tmp_path)
    manifest = dub_video(
        video=clip, languages=["pt"], out=tmp_path / "o", config=quick, source_language="es", speakers=1
    )  # English speech, heard as Spanish because the user said so
    transcript = json.loads((tmp_path / "o" / manifest.transcript).read_text())
    assert manifest.source_language == "es" and transcript["language"] == "es"
    assert manifest.speakers == ["S1"]


def test_the_source_analysis_sent_to_another_process_carries_the_deferred_values_not_futures():
    """A Dask runner pickles what a language task gets; the face tracking may still run when the languages start."""
    import pickle
    import threading
    from concurrent.futures import Future

    from dubbing.flows.dub_video import SourceAnalysis

    faces: Future[str] = Future()
    threading.Thread(target=faces.set_result, args=("tracked faces",)).start()
    sent = pickle.loads(pickle.dumps(SourceAnalysis({"faces": faces, "transcript": "words"})))
    assert sent.context == {"faces": "tracked faces", "transcript": "words"}
