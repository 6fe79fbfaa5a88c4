"""Failure paths as a user meets them: bad input, crashes at stage boundaries, two runs at once, a full disk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dubbing import steps
from tests.conftest import make_speech, make_video, media_file, session_api
from tests.test_cli import assert_one_line_error, dub
from tests.test_translate import ChatServer

pytestmark = pytest.mark.slow

STRANGE_NAME = '-it\'s a "ñandú" talk.mp4'  # leading dash, quotes, unicode, spaces


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in put")
    speech = make_speech(folder / "speech.wav", "Hello, my name is John. I like to eat apples in the morning.")
    return make_video(folder / STRANGE_NAME, seconds=4.5, audio=speech)


def dub_env(**extra: str) -> dict:
    """The environment of a `dub` run: on the session's Prefect server (conftest's, alive until the session ends;
    never a server an earlier test pointed PREFECT_API_URL at, which may be gone), which saves each run the
    ephemeral API's start-up (about 15 s and as many CPU-seconds on 2 cores); a run given its own PREFECT_HOME,
    or one with no session server, gets an ephemeral API of its own, and everything Prefect stores of it lies in
    that home."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if "PREFECT_HOME" not in extra and (api := session_api()):
        env["PREFECT_API_URL"] = api
    return env | {"HF_HUB_OFFLINE": "1", **extra}


def run_dub(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dubbing.cli", *args], capture_output=True, text=True, env=dub_env(**env), timeout=900
    )


def run_killed(tmp_path: Path, *args: str, **env: str) -> int:
    """Run dub in its own process group until it kills itself; then end what it leaves behind (Prefect's
    ephemeral API server outlives a SIGKILLed parent) so no orphan holds the machine."""
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dubbing.cli", *args],
            env=dub_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        code = proc.wait(timeout=900)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return code


def test_truncated_video(tmp_path):
    source = media_file("vrt_face1.mp4").read_bytes()
    broken = tmp_path / "cut.mp4"
    broken.write_bytes(source[: len(source) // 3])
    proc = dub("run", str(broken), "-l", "es", "-o", str(tmp_path / "o"))
    assert_one_line_error(proc)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_video_without_audio_says_what_to_do(tmp_path):
    assert_one_line_error(dub("run", str(media_file("musetalk_sun.mp4")), "-l", "es"), "no audio track", "--audio")


def test_audio_only_input_suggests_avatar():
    assert_one_line_error(dub("run", str(media_file("pyannote_sample.wav")), "-l", "es"), "dub avatar")


def test_silence_only_writes_no_manifest(tmp_path):
    silent = tmp_path / "silent.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "4", str(silent)], check=True
    )
    video = make_video(tmp_path / "quiet.mp4", seconds=4, audio=silent)
    proc = run_dub("run", str(video), "-l", "es", "-o", str(tmp_path / "o"))
    assert_one_line_error(proc, "no speech found")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_video_without_audio_dubs_with_given_audio_and_strange_paths(clip, tmp_path):
    mute = make_video(tmp_path / "mute video.mp4", seconds=4.5, audio=None)
    speech = clip.parent / "speech.wav"
    out = tmp_path / "out put"
    proc = run_dub("run", str(mute), "-l", "es", "-o", str(out), "--audio", str(speech))
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / manifest["outputs"]["es"]["video"]).is_file()
    # Not on a terminal: a plain line per finished step, with the time since the start.
    finished = re.findall(r"^\[ *([0-9.]+) s\] (source|es): ([a-z-]+) done$", proc.stderr, re.MULTILINE)
    assert {(where, step) for _, where, step in finished} >= {("source", "transcribe"), ("es", "report")}


def needed_before(where: str, stage: str) -> set[tuple[str, str]]:
    """The steps that must have finished before `stage` did: those that make what it reads, and theirs in turn
    (steps run side by side, so a later step in the table may finish first); for a language step, every
    once-per-video step too. The probe reads the input again on every run and is never cached."""
    scope = steps.steps("source" if where == "source" else "language")
    made_by = steps.producers(scope)
    needed: set[str] = set()
    todo = [stage]
    while todo:
        for maker in made_by[todo.pop()].values():
            if maker not in needed:
                needed.add(maker)
                todo.append(maker)
    found = {(where, name) for name in needed}
    if where != "source":
        found |= {("source", s.name) for s in steps.steps("source")}
    return {(w, name) for w, name in found if name != "probe"}


def unfinished_writes(out: Path) -> set[Path]:
    return {p for p in out.rglob("*") if p.is_file() and ".tmp" in p.name}


def test_killed_at_every_stage_boundary_resumes_each_time(clip, tmp_path):
    """SIGKILL right after each stage in turn, as a power cut or an OOM kill would: every rerun reuses what had
    finished (each step the stage waits for that an earlier run finished), never shows a half-written file under
    a final name, removes what the killed run was still writing, and gets one stage further."""
    out = tmp_path / "out"
    boundaries = [("source", s.name) for s in steps.steps("source")]
    boundaries += [("es", s.name) for s in steps.steps("language")]
    left: set[Path] = set()
    finished: set[tuple[str, str]] = set()  # what the killed runs had certainly finished
    for where, stage in boundaries:
        kill_after = stage if where == "source" else f"{stage}:{where}"
        args = ("run", str(clip), "-l", "es", "-o", str(out))
        code = run_killed(tmp_path, *args, DUBBING_KILL_AFTER=kill_after, PYTHONUNBUFFERED="1")  # keep its last words
        log = (tmp_path / "killed.log").read_text()
        assert code == -9, log[-2000:]
        assert not (out / "manifest.json").exists()
        assert not left & unfinished_writes(out), "the next run did not remove what the killed one was writing"
        left = unfinished_writes(out)  # a step beside the killed one may have been cut off mid-write
        needed = needed_before(where, stage)
        for done_where, done in needed & finished:  # ran before this stage, and finished in an earlier run
            assert f"{done_where}: {done} reused from the cache" in log, (kill_after, log[-2000:])
        finished |= needed | ({(where, stage)} if stage != "probe" else set())
    resumed = run_dub("run", str(clip), "-l", "es", "-o", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["outputs"]["es"]["video"]
    assert "translate reused from the cache" in resumed.stderr
    assert not unfinished_writes(out)


def test_second_run_into_the_same_folder_is_refused(clip, tmp_path):
    out = tmp_path / "out"
    quick = tmp_path / "quick.yaml"  # the lock is what is checked: lipsync and QA are left out of the first run
    quick.write_text(json.dumps({"lipsync": {"enabled": False}, "qa": {"enabled": False}}))
    first = subprocess.Popen(
        [sys.executable, "-m", "dubbing.cli", "run", str(clip), "-l", "es", "-o", str(out), "--config", str(quick)],
        env=dub_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = out / ".dub.lock"
        deadline = time.monotonic() + 300  # generous: the first run takes the lock within seconds on a quiet machine
        while not (lock.exists() and lock.read_text().startswith("pid")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lock.exists(), "the first run never took the lock"
        second = run_dub("run", str(clip), "-l", "es", "-o", str(out))
        assert_one_line_error(second, "another run", str(out))
    finally:
        assert first.wait(timeout=600) == 0
    assert (out / "manifest.json").exists()


def test_full_disk_gives_one_line_and_keeps_finished_stages(clip, tmp_path):
    # The source stages of this 4.5 s clip need about 3.4 MB, the Spanish outputs about 2 MB more.
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4500k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        proc = run_dub("run", str(clip), "-l", "es", "-o", str(mount / "out"))
        assert_one_line_error(proc, "No space left on device")
        transcript = mount / "out" / "source" / "transcript.json"
        assert json.loads(transcript.read_text())["utterances"]  # finished before the disk filled: intact
        assert not (mount / "out" / "manifest.json").exists()
    finally:
        subprocess.run(["umount", str(mount)])


API_KEY = "sk-test-5b1f0c9e7d2a4c68e013"


def files_containing(text: str, *roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_secrets_never_reach_logs_artifacts_or_reports(clip, tmp_path):
    """The API key of an LLM translation server, given by environment variable, is sent to the server and nowhere
    else: not to the terminal, the output folder, or the Prefect database (logs, states, artifacts, parameters),
    even when the server echoes it back in an error and a retried warning."""
    server = ChatServer()
    try:
        config = tmp_path / "llm.yaml"
        options = {"base_url": server.url, "api_key_env": "DUB_TEST_API_KEY"}
        es = {"translate": {"backend": "openai-compatible", "model": "tiny", "options": options}}
        config.write_text(json.dumps({"languages": {"es": es}, "lipsync": {"enabled": False}}))
        env = {"DUB_TEST_API_KEY": API_KEY, "PREFECT_HOME": str(tmp_path / "prefect-home")}

        server.replies = [(401, "invalid key: {auth}")]  # refused, with the key in the reply
        failed = run_dub("run", str(clip), "-l", "es", "-o", str(tmp_path / "failed"), "--config", str(config), **env)
        assert_one_line_error(failed, "HTTP 401", "invalid key: Bearer ***")

        server.replies = [(503, "overloaded, retry with {auth}")]  # transient: logged, retried, then answered
        done = run_dub("run", str(clip), "-l", "es", "-o", str(tmp_path / "done"), "--config", str(config), **env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "overloaded, retry with Bearer ***" in done.stderr  # the warning was logged, masked
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    assert server.requests and all(r["auth"] == f"Bearer {API_KEY}" for r in server.requests)
    terminal = failed.stdout + failed.stderr + done.stdout + done.stderr
    assert API_KEY not in terminal
    outputs = [tmp_path / "failed", tmp_path / "done", tmp_path / "prefect-home"]
    assert files_containing(API_KEY, *outputs) == []
    # The warning reached the Prefect API's log store (the UI), masked there too.
    assert files_containing("overloaded, retry with Bearer ***", tmp_path / "prefect-home")


def test_a_failed_language_keeps_the_finished_ones(clip, tmp_path):
    """Portuguese fails mid-run (its translation server refuses): Spanish is finished all the same, the manifest
    and the review page are written for it, Portuguese is marked failed with its reason, and the exit code says so."""
    server = ChatServer()
    try:
        config = tmp_path / "pt-fails.yaml"
        pt = {"translate": {"backend": "openai-compatible", "model": "tiny", "options": {"base_url": server.url}}}
        config.write_text(json.dumps({"languages": {"pt": pt}, "lipsync": {"enabled": False}}))
        server.replies = [(401, "invalid key")]
        out = tmp_path / "out"
        proc = run_dub("run", str(clip), "-l", "es,pt", "-o", str(out), "--config", str(config))
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    assert_one_line_error(proc, "pt failed", "HTTP 401", "es done", code=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["outputs"]) == ["es"] and "HTTP 401" in manifest["failed"]["pt"]
    assert all((out / manifest["outputs"]["es"][key]).exists() for key in ("audio", "srt", "report"))
    page = (out / manifest["review"]).read_text()
    assert "pt failed" in page and 'data-lang="es"' in page


def test_a_batch_with_a_failed_video_exits_3_and_prints_names_literally(clip, tmp_path):
    """One video of a batch is broken: the other, named with Rich markup, is dubbed into a folder named with more
    and shown as typed in the summary table; the error line names the broken one and the exit code is 3."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "talk [draft] [bold].mp4").symlink_to(clip)
    (folder / "broken.mp4").write_text("not a video\n")
    config = tmp_path / "quick.yaml"
    config.write_text(json.dumps({"lipsync": {"enabled": False}, "qa": {"enabled": False}}))
    out = tmp_path / "res[/b]"
    proc = run_dub("batch", str(folder), "-l", "es", "-o", str(out), "--config", str(config))
    assert_one_line_error(proc, "1 of 2 videos failed", "broken.mp4", code=3)
    assert "[draft]" in proc.stdout and "[bold].mp4" in proc.stdout, proc.stdout  # words a table cell may wrap at
    assert (out / "talk [draft] [bold]" / "manifest.json").exists()
