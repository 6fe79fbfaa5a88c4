"""The `dub` command as a user runs it: one-line errors with exit code 2, models and doctor offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DUB = [sys.executable, "-m", "dubbing.cli"]


def dub(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([*DUB, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, no traceback, and the error in one line at the end (progress shown before it may stay)."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_missing_input(tmp_path):
    proc = dub("run", str(tmp_path / "nope.mp4"), "--languages", "es", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "input not found")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "talk.mp4"
    fake.write_text("this is not a video\n")
    assert_one_line_error(dub("run", str(fake), "-l", "es", "-o", str(tmp_path / "o")), "not a readable media file")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert_one_line_error(dub("run", str(empty), "-l", "es"), "empty")


def test_unknown_language_lists_available(tmp_path):
    proc = dub("run", str(tmp_path / "x.mp4"), "-l", "es,zz")
    assert_one_line_error(proc, "'zz'", "es")


def test_bad_config_names_file_and_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("mix:\n  loudness: -14\n")
    assert_one_line_error(
        dub("run", str(tmp_path / "x.mp4"), "-l", "es", "--config", str(config)),
        str(config),
        "mix.loudness",
        "loudness_lufs",
    )


def test_models_lists_offline_models_as_available():
    proc = dub("models")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") > 3}
    for name in ("whisper-base", "kokoro-82m", "campplus", "face-mesh"):
        assert "available" in rows[name], rows.get(name)
    assert "hf download" in rows["xtts-v2"] and "missing" in rows["xtts-v2"]


def test_doctor_passes_after_setup():
    proc = dub("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "everything the offline pipeline needs is here" in proc.stdout


def test_console_shows_our_notes_and_warnings_but_not_prefect_services():
    import logging

    from dubbing.cli import _for_the_console

    def record(name: str, level: int, path: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, path, 1, "message", None, None)

    prefect_file = str(Path(logging.__file__).parent.parent / "prefect" / "_internal" / "services.py")
    assert not _for_the_console(record("EventsWorker", logging.WARNING, prefect_file))
    assert not _for_the_console(record("prefect.flow_runs", logging.ERROR, "x.py"))
    assert _for_the_console(record("dubbing.voice", logging.INFO, "dubbing/voice/track.py"))
    assert _for_the_console(record("numba", logging.WARNING, "numba/core.py"))
    assert not _for_the_console(record("numba", logging.INFO, "numba/core.py"))
