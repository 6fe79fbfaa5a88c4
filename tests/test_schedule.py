"""A scheduled deployment of the batch flow on a real local Prefect server creates and completes runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, make_speech, make_video, stop

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_served_schedule_runs_the_batch(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    make_video(incoming / "hello.mp4", seconds=3.0, audio=make_speech(tmp_path / "s.wav", "Good morning, friends."))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api}
    prefect = Path(sys.executable).with_name("prefect")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    served = None
    try:
        wait_for(lambda: _healthy(api), 90, "the Prefect server")
        served = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dubbing.cli",
                "serve",
                str(incoming),
                "-l",
                "es",
                "--every",
                "5",
                "--out",
                str(tmp_path / "dubbed"),
                "--name",
                "test-schedule",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        manifest = tmp_path / "dubbed" / "hello" / "manifest.json"
        wait_for(manifest.exists, 600, "the scheduled batch run to dub the video")  # slow on a busy 2-core box
        runs = wait_for(lambda: _batch_runs(api, "COMPLETED"), 60, "a completed localize-batch run")
        assert runs[0]["deployment_id"] is not None  # created by the schedule, not by hand
        # The dub took far longer than the 5 s interval: the cycles due meanwhile were cancelled, not run beside it.
        wait_for(lambda: _batch_runs(api, "CANCELLED"), 120, "a cycle cancelled while the batch ran")
        started = sorted(
            (run["start_time"], run["end_time"] or "9999")
            for run in _batch_runs(api, "COMPLETED", "RUNNING", "FAILED")
            if run["start_time"]
        )
        assert all(end <= next_start for (_, end), (next_start, _) in zip(started, started[1:], strict=False))
    finally:
        for proc in (served, server):
            if proc is not None:
                stop(proc)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _batch_runs(api: str, *states: str) -> list[dict]:
    body = {"flows": {"name": {"any_": ["localize-batch"]}}, "flow_runs": {"state": {"type": {"any_": list(states)}}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
