"""The step graph: which steps wait for which, and that `run_graph` runs independent steps side by side while
every step sees the values it would see in table order."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from dubbing import steps
from dubbing.errors import DubbingError
from dubbing.steps import Step


def test_face_tracking_and_voice_matching_wait_for_nothing_they_do_not_read():
    made_by = steps.producers(steps.steps("source"))
    assert "transcribe" not in made_by["track-faces"].values()
    assert made_by["speaking-faces"]["tracked_faces"] == "track-faces"
    assert made_by["speaking-faces"]["transcript"] == "transcribe"
    language = steps.producers(steps.steps("language"))
    assert "translate" not in language["match-voices"].values()
    assert language["subtitles"]["script"] == "synthesize-and-fit"  # the fitted script, not the first translation
    assert language["subtitles"]["track"] == "synthesize-and-fit"  # where each line was placed: the dub's timing
    assert language["lipsync"]["track"] == "synthesize-and-fit"
    assert "lipsync" not in language["mix"].values()
    assert set(language["hear-back"].values()) == {"synthesize-and-fit"}  # QA's hearing beside the render
    assert language["report"]["hearing"] == "hear-back" and language["report"]["dub_video"] == "render-video"


def test_independent_steps_run_side_by_side_and_values_flow_in_table_order():
    b_started = threading.Event()
    seen: dict[str, object] = {}

    def make_text(seed: int) -> str:
        return f"draft {seed}"

    def wait_for_b(seed: int) -> int:  # would wait forever if the steps ran one after the other
        assert b_started.wait(timeout=120), "the independent step never started beside this one"
        return seed + 1

    def start_b(seed: int) -> int:
        b_started.set()
        return seed * 10

    def rewrite(text: str, a: int, b: int) -> str:
        return f"{text} + {a} + {b}"

    def read_final(text: str) -> str:
        seen["final"] = text
        return text.upper()

    graph = (
        Step("make", make_text, ("text",), "language"),
        Step("a", wait_for_b, ("a",), "language"),
        Step("b", start_b, ("b",), "language"),
        Step("rewrite", rewrite, ("text",), "language"),
        Step("read", read_final, ("shout",), "language"),
    )
    context = steps.run_graph(graph, {"seed": 1})
    assert seen["final"] == "draft 1 + 2 + 10"
    assert context["text"] == "draft 1 + 2 + 10" and context["shout"] == "DRAFT 1 + 2 + 10"


def test_a_failed_step_stops_the_steps_after_it_and_raises_its_own_error():
    ran: list[str] = []

    def fail(seed: int) -> int:
        raise DubbingError("no speech found")

    def after(broken: int) -> int:
        ran.append("after")
        return broken

    def beside(seed: int) -> int:
        ran.append("beside")
        return seed

    graph = (
        Step("fail", fail, ("broken",), "source"),
        Step("beside", beside, ("other",), "source"),
        Step("after", after, ("later",), "source"),
    )
    with pytest.raises(DubbingError, match="no speech found"):
        steps.run_graph(graph, {"seed": 1})
    assert "after" not in ran


def test_the_earliest_failed_step_in_table_order_names_the_error():
    other_failed = threading.Event()

    def probe(seed: int) -> int:  # fails last, but it is the check the user needs to read
        assert other_failed.wait(timeout=120)
        raise DubbingError("not a readable media file")

    def extract(seed: int) -> int:
        other_failed.set()
        raise DubbingError("ffmpeg: Invalid data found when processing input")

    graph = (Step("probe", probe, ("info",), "source"), Step("extract", extract, ("wav",), "source"))
    with pytest.raises(DubbingError, match="not a readable media file"):
        steps.run_graph(graph, {"seed": 1})


def test_a_deferred_step_goes_on_after_the_graph_returns_and_only_its_readers_wait_for_it():
    """Face tracking is deferred: the languages start beside it, and only the steps that read the faces wait."""
    release_faces = threading.Event()
    order: list[str] = []

    def track(seed: int) -> str:
        assert release_faces.wait(timeout=120)
        order.append("tracked")
        return f"faces of {seed}"

    def transcribe(seed: int) -> str:
        return f"words {seed}"

    source = (
        Step("track", track, ("faces",), "source", deferred=True),
        Step("transcribe", transcribe, ("transcript",), "source"),
    )
    context = steps.run_graph(source, {"seed": 1})  # returns while `track` still waits
    assert context["transcript"] == "words 1" and not release_faces.is_set()

    def translate(transcript: str) -> str:
        order.append("translated")
        release_faces.set()  # would deadlock if translating waited for the faces
        return transcript.upper()

    def render(faces: str, script: str) -> str:
        return f"{script} on {faces}"

    language = (
        Step("translate", translate, ("script",), "language"),
        Step("render", render, ("picture",), "language"),
    )
    context = steps.run_graph(language, context)
    assert context["picture"] == "WORDS 1 on faces of 1" and order == ["translated", "tracked"]
    assert steps.settled(context)["faces"] == "faces of 1"


def test_a_deferred_steps_error_reaches_the_steps_that_read_its_outputs():
    returned = threading.Event()

    def track(seed: int) -> str:
        assert returned.wait(timeout=120)  # fails after the graph returned (before, the graph itself raises)
        raise DubbingError("no face found")

    def choose(tracks: str) -> str:
        return tracks

    source = (
        Step("track", track, ("tracks",), "source", deferred=True),
        Step("choose", choose, ("faces",), "source", deferred=True),
        Step("transcribe", lambda seed: "words", ("transcript",), "source"),
    )
    context = steps.run_graph(source, {"seed": 1})
    returned.set()
    with pytest.raises(DubbingError, match="no face found"):  # the step after it never ran: the same error
        steps.run_graph((Step("render", lambda faces: faces, ("picture",), "language"),), context)
    with pytest.raises(DubbingError, match="no face found"):
        steps.settled(context)


def test_a_run_that_ends_while_a_deferred_step_runs_exits_without_waiting_for_it():
    """A run whose languages all failed ends at once, not after the face tracking of a long video finishes."""
    code = (
        "import sys, threading\n"
        "from dubbing import steps\n"
        "from dubbing.steps import Step\n"
        "graph = (Step('track', lambda seed: threading.Event().wait(), ('faces',), 'source', deferred=True),\n"
        "         Step('transcribe', lambda seed: 'words', ('transcript',), 'source'))\n"
        "context = steps.run_graph(graph, {'seed': 1})\n"
        "sys.exit(3 if context['transcript'] == 'words' else 4)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)  # a hang fails
    assert proc.returncode == 3, proc.stderr


def test_a_failed_step_is_told_without_waiting_for_a_deferred_step_beside_it():
    never, tracked = threading.Event(), threading.Event()

    def track(seed: int) -> str:
        never.wait(timeout=300)  # the face tracking of a long video
        tracked.set()
        return "faces"

    def transcribe(seed: int) -> str:
        raise DubbingError("no speech found")

    graph = (
        Step("track", track, ("faces",), "source", deferred=True),
        Step("transcribe", transcribe, ("transcript",), "source"),
    )
    with pytest.raises(DubbingError, match="no speech found"):
        steps.run_graph(graph, {"seed": 1})
    assert not tracked.is_set()  # raised while the tracking still ran
    never.set()
