"""The `dub` command as a user runs it: one-line errors with exit code 2, models and doctor offline, a status line
at once, and native libraries' messages kept off the terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import media_file

DUB = [sys.executable, "-m", "dubbing.cli"]


def dub(*args: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **extra}
    return subprocess.run([*DUB, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    """Exit code 2 (3: part of the work failed, the rest was kept), no traceback, and the error in one line at the
    end (progress shown before it may stay)."""
    assert proc.returncode == code, proc.stderr
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
    # a fallback translation route is a row's detail, never a stray log line over the table
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("WARNING", "INFO"))]


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
    # espeak's words count mismatch, on many lines of a synthesis: kept in the log
    assert not _for_the_console(record("phonemizer", logging.WARNING, "phonemizer/backend/espeak/words_mismatch.py"))


NATIVE_NOISE = re.compile(r"W0000|XNNPACK|absl::|inference_feedback_manager|landmark_projection_calculator")


def test_importing_the_cli_loads_no_heavy_library():
    """The status line is printed after this module's imports: they must stay light (no Prefect, torch, numpy)."""
    heavy = "('prefect', 'torch', 'numpy', 'pydantic', 'mediapipe')"
    code = f"import sys, dubbing.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def in_terminal(*args: str, timeout_s: float = 300) -> tuple[float, str]:
    """Run dub in a pseudo-terminal: (seconds to its first output, all it printed)."""
    start = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "dubbing.cli", *args], {**os.environ, "COLUMNS": "200"})
    first, chunks = None, []
    while time.monotonic() - start < timeout_s:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        first = first or time.monotonic() - start
        chunks.append(data)
    os.waitpid(pid, 0)
    return first or timeout_s, b"".join(chunks).decode(errors="replace")


def test_terminal_shows_a_status_line_first_and_an_error_last(tmp_path):
    """On a terminal the first thing shown is what dub is doing; a user error still ends as one line."""
    _, shown = in_terminal("run", str(tmp_path / "nope.mp4"), "-l", "es", "-o", str(tmp_path / "o"))
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # the status line is redrawn in place: \r, erase line
    assert plain.startswith("\rdub: starting..."), shown[:200]
    shown_last = [part.strip() for part in re.split(r"[\r\n]+", plain) if part.strip()][-1]
    assert shown_last.startswith("error: input not found"), shown[-300:]


BUGGY_INSPECT = """
import os, subprocess, sys
import dubbing.lipsync.video as video
from dubbing import cli

def probe_video(path):
    os.write(2, b"W0000 00:00:1.0 1 inference_feedback_manager.cc:114] a native line\\n")
    subprocess.run(["sh", "-c", "echo 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' >&2"])
    print("a Python warning line", file=sys.stderr)
    raise RuntimeError("a bug in the code")

video.probe_video = probe_video
sys.argv = ["dub", *sys.argv[1:], "inspect", "clip.mp4"]
cli.main()
"""


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_native_messages_go_to_a_log_and_a_bug_still_shows_its_traceback(tmp_path, verbose):
    """Lines written to file descriptor 2 by native code or a subprocess go to the command's log, not the
    terminal (shown too with -v); Python's own stderr, a bug's traceback included, still reaches the terminal."""
    args = ["-v"] if verbose else []
    env = {**os.environ, "DUBBING_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", BUGGY_INSPECT, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "RuntimeError: a bug in the code" in proc.stderr
    assert "a Python warning line" in proc.stderr
    assert bool(NATIVE_NOISE.search(proc.stderr)) == verbose, proc.stderr
    log = (tmp_path / "cache" / "logs" / "inspect.log").read_text()
    assert "inference_feedback_manager.cc:114] a native line" in log and "XNNPACK delegate" in log


def test_face_tracking_keeps_mediapipe_off_the_terminal(tmp_path):
    """A real command that runs MediaPipe's face mesh in-process: its C++ log lines stay off stderr."""
    proc = dub("inspect", str(media_file("vrt_face1.mp4")), "--out", str(tmp_path / "sheet.png"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sheet.png").exists()
    noisy = [line for line in proc.stderr.splitlines() if NATIVE_NOISE.search(line)]
    assert not noisy, proc.stderr


def test_a_runs_prefect_api_starts_at_once_and_ends_with_a_killed_dub(tmp_path):
    """The API server a run starts in the background answers, and does not outlive a SIGKILLed dub."""
    code = (
        "import os, signal, sys\n"
        "from dubbing import cli\n"
        "cli._api.start()\n"
        "cli._api.wait()\n"
        "print(cli._api.proc.pid, os.environ['PREFECT_API_URL'], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    server_pid, url = proc.stdout.split()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    deadline = time.monotonic() + 60  # its shutdown on SIGTERM takes longer on a busy machine; returns once it ends
    while running(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running(server_pid):
        os.kill(int(server_pid), signal.SIGKILL)
        pytest.fail("the API server outlived its dub process")


def running(pid: str) -> bool:
    """Whether a process runs (an ended one its new parent has not reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_configured_prefect_api_is_used_rather_than_one_of_our_own(tmp_path, monkeypatch):
    from dubbing.cli import _api_configured

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert not _api_configured()
    (tmp_path / "home").mkdir()
    profiles = tmp_path / "home" / "profiles.toml"
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    assert _api_configured()
    monkeypatch.setenv("PREFECT_PROFILE", "other")
    assert not _api_configured()
    (tmp_path / "prefect.toml").write_text('[api]\nurl = "http://127.0.0.1:4200/api"\n')
    assert _api_configured()
    (tmp_path / "prefect.toml").unlink()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert _api_configured()


def test_prefect_keeps_our_log_handlers():
    """Prefect's logging set-up replaces the root logger's handlers unless it takes one for the user's own: ours
    must stay, or our stages' warnings would no longer reach the terminal."""
    code = (
        "import logging\n"
        "from dubbing import cli\n"
        "cli._root(verbose=False, version=False)\n"
        "from prefect.logging.configuration import setup_logging\n"
        "setup_logging(incremental=False)\n"
        "print(sorted(type(h).__name__ for h in logging.getLogger().handlers))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "['ConsoleLogHandler', 'KeptLogHandler']", proc.stdout + proc.stderr


def test_an_unreachable_prefect_server_is_one_line(tmp_path):
    proc = dub(
        "run", str(media_file("vrt_face1.mp4")), "-l", "es", "-o", str(tmp_path / "out"),
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )  # fmt: skip
    assert_one_line_error(proc, "does not answer", "dub server")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_says_how_to_resume_and_stops_its_api_server(tmp_path, sig):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [*DUB, "run", str(media_file("vrt_face1.mp4")), "-l", "es", "-o", str(out)],
        env=env | {"PREFECT_HOME": str(tmp_path / "home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "source" / "audio.16k.wav").exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the run is under way: its API server is up and a step has finished
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        servers = children(proc.pid)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1].startswith("interrupted"), err
    assert "Traceback" not in err
    deadline = time.monotonic() + 60  # as above: a generous bound, left as soon as the servers end
    while any(running(str(pid)) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(str(pid)) for pid in servers), "the API server outlived the interrupted run"


def test_verbose_is_taken_anywhere_on_the_line():
    from dubbing.cli import _verbose_first

    assert _verbose_first(["run", "x.mp4", "-l", "es", "-v"]) == ["-v", "run", "x.mp4", "-l", "es"]
    assert _verbose_first(["--verbose", "doctor"]) == ["-v", "doctor"]
    assert _verbose_first(["run", "x.mp4"]) == ["run", "x.mp4"]


@pytest.mark.parametrize("command", [["run"], ["batch"], ["transcribe"], ["models"], ["avatar"], ["lipsync"], []])
def test_help_shows_boolean_options_as_flags(command):
    proc = dub(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--help" in proc.stdout  # Typer's own --help too
    assert not [line for line in proc.stdout.splitlines() if "<bool>" in line or "--no-" in line], proc.stdout
