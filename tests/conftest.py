"""Shared fixtures: the real media in ../shared/media (skipped when absent) and generated inputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"


# The session server's loop services that no test's run needs (schedules, late or paused runs, cancellations,
# automations, workers): each wakes every few seconds, and together they cost about 1.5 CPU-seconds a minute of an
# idle server. What runs report (task states from events, logs) is recorded by the services that stay on.
IDLE_SERVICES_OFF = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS", "TRIGGERS")
}

_server: subprocess.Popen | None = None
_server_api: str | None = None  # the URL of _server's API once it answers


def pytest_collection_finish(session: pytest.Session) -> None:
    """When slow (end-to-end) tests will run, one local Prefect server serves every `dub` they start: each run
    then skips starting Prefect's ephemeral API (about 15 s and as many CPU-seconds a run on 2 cores). A test
    that gives a run its own PREFECT_HOME still gets the ephemeral API (tests/test_reliability.py's `dub_env`)."""
    global _server, _server_api
    if os.environ.get("PREFECT_API_URL") or not any(item.get_closest_marker("slow") for item in session.items):
        return
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="dub-test-prefect-"))
    prefect = Path(sys.executable).with_name("prefect")
    _server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PREFECT_HOME": str(home), **IDLE_SERVICES_OFF},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and _server.poll() is None:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                os.environ["PREFECT_API_URL"] = _server_api = api
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(_server)  # no server: every run starts its own ephemeral API, slower but the same
    _server = None


# The modules whose tests read the session's shared dub (`vrt_face1_es`): one worker runs them all, so it is made once.
SHARED_DUB_MODULES = {"tests/test_run_e2e.py", "tests/test_review_page.py"}


def xdist_group(nodeid: str) -> str:
    """What one pytest-xdist worker runs whole (scripts/test: `-n 2 --dist loadfile`): a module, whose module
    fixtures (a model, a face track) are then made once; the modules that read the shared dub are one group."""
    module = nodeid.split("::", 1)[0]
    return "vrt_face1_es" if module in SHARED_DUB_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile` by `xdist_group`, in the workers' collection order (below: the end-to-end groups first)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    config.option.loadscopereorder = False  # not by the number of tests: by the order the workers collected
    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker: the groups with the most end-to-end tests first, so the long ones start at once on
    both workers and the short ones fill in at the end (a group's tests keep their order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow: dict[str, int] = {}
    for item in items:
        group = xdist_group(item.nodeid)
        slow[group] = slow.get(group, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[xdist_group(item.nodeid)])


def session_api() -> str | None:
    """The API of the session's Prefect server (None when none runs): a test that clears PREFECT_API_URL for a
    `dub` run can still point it here, and save the ephemeral API's start-up, whatever an earlier test left in
    the environment; this server lives until the session ends."""
    return _server_api


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _server is not None:
        stop(_server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Terminate a server process, killing it if it does not end in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"real test media not found at {MEDIA} (a fresh clone has no ../shared/media)")
    return MEDIA


def media_file(name: str) -> Path:
    """A file from ../shared/media, or a skip with the reason."""
    path = MEDIA / name
    if not path.exists():
        pytest.skip(f"real test media {path} not present")
    return path


def make_speech(path: Path, text: str, voice: str = "en", rate_wpm: int = 160) -> Path:
    """Speech generated with espeak-ng, for inputs the shared media does not cover."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(path)], input=text.encode(), check=True)
    return path


def make_video(
    path: Path, seconds: float = 3.0, *, audio: Path | None = None, size: str = "320x240", fps: int = 25
) -> Path:
    """A test-pattern video with `audio` as its soundtrack, or with no audio stream when `audio` is None."""
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-y",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={fps}:d={seconds}",
    ]
    if audio is not None:
        cmd += ["-i", str(audio), "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="session")
def vrt_face1_es(tmp_path_factory) -> tuple[Path, Path]:
    """(source, output folder) of vrt_face1.mp4 dubbed into Spanish by `dub run` with the default config, once a
    session: the output-contract tests (test_run_e2e) and the QA report and review page tests (test_review_page)
    read the same run. Read only: a test that changes the folder (`dub eval` rewrites the report) copies it first."""
    video = media_file("vrt_face1.mp4")
    out = tmp_path_factory.mktemp("run") / "out dir"  # a space in the path on purpose
    # the ephemeral Prefect API (no session server) takes longer than its 20 s default on a busy 2-core machine
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "dubbing.cli", "run", str(video), "--languages", "es", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return video, out
