"""A step's own progress (frames, lines, seconds of audio): reported under the running step's name, throttled,
and shown by the CLI as bars on a terminal and as plain lines elsewhere."""

from __future__ import annotations

import io
import sys
import time

from dubbing import cli, progress


def test_a_steps_own_progress_is_reported_under_its_name_and_throttled():
    events: list[progress.Event] = []
    with progress.listening(events.append):
        progress.advance(1, 10, "lines")  # outside a step (a stage called from a script): nothing to say
        with progress.step("track-faces", "es"):
            started = time.monotonic()
            taken = list(progress.counted(range(1000), 1000, "frames"))
            elapsed = time.monotonic() - started
        progress.advance(2, 10, "lines")  # the step has ended
    assert taken == list(range(1000))
    assert {(e.stage, e.language) for e in events} == {("track-faces", "es")}
    assert events[0].detail == "1/1000 frames" and events[-1].detail == "1000/1000 frames"
    assert all(0.0 < e.fraction < 1.0 for e in events)  # the flow alone says when a step is done
    assert [e.fraction for e in events] == sorted(e.fraction for e in events)
    assert len(events) <= 2 + elapsed / progress.EVERY_S  # the first, the last, and one per EVERY_S between


def test_the_terminal_shows_each_running_step_with_its_progress_and_time():
    running = {
        "lipsync": cli.RunningStep(100.0, 0.4, "340/1500 frames"),
        "mix": cli.RunningStep(107.2, 0.0, ""),
    }
    assert cli._running_text(running, 112.0) == "lipsync 340/1500 frames 12s, mix 5s"


def test_plain_output_says_how_far_a_long_step_is_and_when_it_is_done(capsys):
    show = cli._plain_progress(time.monotonic(), every_s=0.0)
    show(progress.Event("synthesize-and-fit", 0.0, "es"))  # a step starting is not a line
    show(progress.Event("synthesize-and-fit", 0.5, "es", "2/4 lines"))
    show(progress.Event("synthesize-and-fit", 1.0, "es"))
    said = [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert said == ["es: synthesize-and-fit 2/4 lines", "es: synthesize-and-fit done"]
    quiet = cli._plain_progress(time.monotonic(), every_s=1e9)  # a step quicker than every_s: only its end
    quiet(progress.Event("transcribe", 0.0))
    quiet(progress.Event("transcribe", 0.5, None, "5/10 s of audio"))
    quiet(progress.Event("transcribe", 1.0, None, "cached"))
    assert [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines()] == [
        "source: transcribe reused from the cache"
    ]


def test_a_one_step_command_shows_its_progress_on_its_status_line(monkeypatch):
    """`dub lipsync`, `dub avatar`, `dub inspect`, `dub transcribe`: no bars, the status line counts instead."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with cli._status_progress("tracking the faces"):
        taken = list(progress.counted(range(3), 3, "frames"))
    shown = [state for state in terminal.getvalue().split("\r\x1b[2K") if state]
    assert taken == [0, 1, 2] and shown[0] == "dub: tracking the faces..."
    assert shown[1].startswith("dub: tracking the faces: 1/3 frames, ") and "3/3 frames" in shown[-1]
    cli._status.clear()
