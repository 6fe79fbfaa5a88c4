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
        runs = wait_for(lambda: _completed_batch_runs(api), 60, "a completed localize-batch run")
        assert runs[0]["deployment_id"] is not None  # created by the schedule, not by hand
    finally:
        for proc in (served, server):
            if proc is not None:
                stop(proc)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _completed_batch_runs(api: str) -> list[dict]:
    body = {"flows": {"name": {"any_": ["localize-batch"]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
