"""Reliability of media and native engines: an engine used from threads that end, rotated and odd-sized video,
a picture shorter than its audio, the audio track to dub, a full disk while encoding, and what a killed run leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from dubbing.errors import DubbingError
from dubbing.tools import display_size, ffprobe
from tests.conftest import ROOT, make_speech, media_file
from tests.test_cli import assert_one_line_error, dub

TWO_THREADS = textwrap.dedent(
    """
    import threading
    from dubbing.translate.bergamot import BergamotTranslator

    made, said = [], []
    def make():  # a step's thread: it makes the translator, uses it, and ends
        made.append(BergamotTranslator(source="en", target="pt"))
        said.append(made[0].translate(["Good morning, my friend."]))
    def use():  # the next step, in a new thread
        said.append(made[0].translate(["Good morning, my friend.", "", "See you tomorrow."]))
    for target in (make, use, use):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    print(repr(said))
    """
)


def test_bergamot_translator_survives_the_thread_that_made_it():
    """A translator made in a thread that ends, then used from a new one (as `dub batch` does with its steps):
    no segfault, and the same words each time."""
    proc = subprocess.run([sys.executable, "-c", TWO_THREADS], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    said = eval(proc.stdout)  # noqa: S307 - our own repr
    assert len(said) == 3 and said[0][0] and said[1][0] == said[2][0] == said[0][0]
    assert said[1][1] == "" and said[1][2]


def tagged_processes(tag: str) -> dict[int, str]:
    """The processes whose environment carries `tag` (pid: command line): a run's `dub` and everything it
    started, however deep."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"DUB_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[int(entry.name)] = command[:160]
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


def assert_none_left(tag: str) -> None:
    """Every process of the run has ended, given up to 60 s (a killed server's children need a moment, longer on a
    busy machine); it returns as soon as none is left."""
    deadline = time.monotonic() + 60
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tagged_processes(tag) == {}


def kill_all(proc: subprocess.Popen, tag: str) -> None:
    """What a failed check left: never for the next test."""
    proc.kill()
    for pid in tagged_processes(tag):
        os.kill(pid, signal.SIGKILL)


def children_named(tag: str, name: str) -> bool:
    return any(Path(line.split(" ", 1)[0]).name == name for line in tagged_processes(tag).values())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds a run's processes through /proc")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "Ctrl-C", "crash"])
def test_no_process_outlives_dub_however_it_ends(how, tmp_path):
    """`dub run` stopped while its steps run ffmpeg, each way it can end: killed, terminated, interrupted, Ctrl-C
    at the terminal (SIGINT to its whole process group) or crashed (SIGSEGV): nothing it started (Prefect's API
    server, ffmpeg) runs on, and a stop it can handle is the one line, never a traceback."""
    video = media_file("vrt_face1.mp4")
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the run starts its own API server
    env |= {"HF_HUB_OFFLINE": "1", "DUB_TEST_TAG": tag, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    with open(tmp_path / "dub.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dubbing.cli", "run", str(video), "-l", "es", "-o", str(out)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a shell gives a command
        )
    try:
        lock = out / ".dub.lock"
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:  # the flow runs and a step runs ffmpeg
            if lock.exists() and lock.read_text().startswith("pid") and children_named(tag, "ffmpeg"):
                break
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "dub.log").read_text()[-2000:]
        assert any("uvicorn" in line for line in tagged_processes(tag).values())  # the run's own API server is up
        if how == "Ctrl-C":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, {"crash": signal.SIGSEGV}.get(how) or signal.Signals[how])
        code = proc.wait(timeout=120)
        assert_none_left(tag)
    finally:
        kill_all(proc, tag)
    said = (tmp_path / "dub.log").read_text()
    if how in ("SIGKILL", "crash"):
        assert code == -{"SIGKILL": 9, "crash": 11}[how]
    else:
        name = "SIGTERM" if how == "SIGTERM" else "SIGINT"
        assert code == 128 + signal.Signals[name], said[-2000:]
        assert "Traceback" not in said and said.strip().splitlines()[-1].startswith(f"interrupted ({name})"), said


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


@pytest.fixture(scope="module")
def phone_video(tmp_path_factory) -> tuple[Path, Path]:
    """A portrait face clip (270x350) and the same clip as a phone stores it: sideways (350x270) with a rotation
    of 90 degrees in its metadata, which players (and ffmpeg's decoder) apply."""
    folder = tmp_path_factory.mktemp("phone")
    upright, sideways, phone = folder / "upright.mp4", folder / "sideways.mp4", folder / "phone.mp4"
    source = str(media_file("vrt_face1.mp4"))
    ffmpeg("-i", source, "-t", "1.5", "-vf", "crop=540:700,scale=270:350", "-pix_fmt", "yuv420p", str(upright))
    ffmpeg("-i", str(upright), "-vf", "transpose=clock", "-c:a", "copy", "-pix_fmt", "yuv420p", str(sideways))
    ffmpeg("-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(phone))
    return upright, phone


def test_a_rotated_phone_video_is_probed_and_read_upright(phone_video):
    from dubbing import media
    from dubbing.lipsync.video import probe_video, read_frames, read_frames_at

    upright, phone = phone_video
    assert (media.probe(phone).width, media.probe(phone).height) == (270, 350)
    stream = probe_video(phone)
    assert (stream.width, stream.height) == (270, 350)
    expected = next(read_frames(upright, probe_video(upright))).astype(int)
    assert np.abs(next(read_frames(phone, stream)) - expected).mean() < 4  # the same picture, not a scramble
    assert np.abs(read_frames_at(phone, stream, [0])[0] - expected).mean() < 4


def test_lipsync_on_a_rotated_phone_video_tracks_the_face_and_writes_it_upright(phone_video, tmp_path):
    _, phone = phone_video
    speech = make_speech(tmp_path / "s.wav", "good morning")
    out = tmp_path / "out.mp4"
    proc = dub("lipsync", str(phone), str(speech), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "no face found" not in proc.stderr and "a face animated in 0" not in proc.stdout
    _, video, _ = ffprobe(out)
    assert (video["width"], video["height"]) == (270, 350) and display_size(video) == (270, 350)


def test_an_odd_sized_10_bit_video_is_written_8_bit_4_2_0_with_every_pixel_kept(tmp_path):
    """641x359 in 10 bits (4:4:4, as H.264 has no odd 4:2:0 size): written 642x360, the picture whole and its last
    column and row repeated, in 8-bit 4:2:0 H.264 'High', which browsers play; never 640x358, never High 10."""
    from dubbing.lipsync.video import FrameWriter, probe_video, read_frames

    source = tmp_path / "odd10.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=641x359:rate=25:d=0.4", "-c:v", "libx264", "-pix_fmt", "yuv444p10le",
           "-crf", "0", str(source))  # fmt: skip
    stream = probe_video(source)
    assert (stream.width, stream.height, stream.pix_fmt) == (641, 359, "yuv444p10le")
    out = tmp_path / "out.mp4"
    frames = list(read_frames(source, stream))
    with FrameWriter(out, stream) as writer:
        for frame in frames:
            writer.write(frame)
    _, video, _ = ffprobe(out)
    assert (video["width"], video["height"], video["pix_fmt"], video["profile"]) == (642, 360, "yuv420p", "High")
    luma = cv2.cvtColor(next(read_frames(out, probe_video(out))), cv2.COLOR_BGR2GRAY).astype(int)
    assert np.abs(luma[:359, :641] - cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)).mean() < 2  # in place, unscaled
    assert np.abs(luma[:, 641] - luma[:, 640]).mean() < 2 and np.abs(luma[359] - luma[358]).mean() < 2


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 300 kB file system (tmpfs), where a picture being encoded runs out of space."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_encoding_says_no_space_left(small_disk):
    from dubbing import media
    from dubbing.lipsync.video import FrameWriter, probe_video, read_frames

    video = media_file("vrt_face1.mp4")
    stream = probe_video(video)
    with pytest.raises(DubbingError, match=r"picture\.mp4: No space left on device$"):  # noqa: PT012
        with FrameWriter(small_disk / "picture.mp4", stream, crf=0) as writer:
            for frame in read_frames(video, stream):
                writer.write(frame)
    with pytest.raises(DubbingError, match=r"failed: No space left on device$"):
        media.extract_mix_audio(video, small_disk / "mix.wav")
    assert list(small_disk.iterdir()) == []  # nothing half-written left, no log beside it


@pytest.fixture(scope="module")
def second_track_speech(tmp_path_factory) -> Path:
    """An mkv whose first audio track is silent and whose second holds the speech (a commentary, a dub)."""
    folder = tmp_path_factory.mktemp("tracks")
    speech = make_speech(folder / "speech.wav", "Hello, my name is John. I like to eat apples in the morning.")
    video = folder / "two tracks.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:d=4", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo",
           "-i", str(speech), "-map", "0:v", "-map", "1:a", "-map", "2:a", "-t", "4", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", "-c:a", "aac", str(video))  # fmt: skip
    return video


def test_speech_on_the_second_audio_track_is_pointed_at_and_chosen(second_track_speech, tmp_path):
    silent = dub("transcribe", str(second_track_speech), "-o", str(tmp_path / "first"))
    assert_one_line_error(silent, "no speech found", "track 2 of 2 has audio: --audio-track 2")
    chosen = dub("transcribe", str(second_track_speech), "-o", str(tmp_path / "second"), "--audio-track", "2")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads((tmp_path / "second" / "source" / "transcript.json").read_text())["utterances"]
    missing = dub("run", str(second_track_speech), "-l", "es", "-o", str(tmp_path / "run"), "--audio-track", "3")
    assert_one_line_error(missing, "has 2 audio tracks; --audio-track 3 is not one of them")


@pytest.mark.slow
def test_a_lipsync_killed_while_encoding_leaves_nothing_the_next_one_keeps(tmp_path):
    """SIGKILL while `dub lipsync` writes its video: what it was writing is never under the final name, and the
    next `dub lipsync` into the same file removes it (no log file beside it either)."""
    video = tmp_path / "clip.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-vf", "scale=320:320", str(video))
    speech = make_speech(tmp_path / "s.wav", "good morning, and welcome to the show about apples")
    out = tmp_path / "out" / "re-voiced.mp4"
    out.parent.mkdir()
    (out.parent / "mine.txt").write_text("the user's own file")
    command = [sys.executable, "-m", "dubbing.cli", "lipsync", str(video), str(speech), "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    writing: list[Path] = []
    while proc.poll() is None and not writing:
        writing = [p for p in out.parent.iterdir() if p.name.endswith(".tmp.mp4") and p.stat().st_size > 0]
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert writing, "the lipsync ended before it was seen writing"
    left = sorted(p.name for p in out.parent.iterdir())
    assert not out.exists() and any(name.startswith(".re-voiced.") for name in left), left
    again = dub("lipsync", str(video), str(speech), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine.txt", "re-voiced.mp4"]


def test_a_killed_runs_temporaries_in_language_folders_match_what_the_next_run_removes(tmp_path):
    """The names `atomic_path` gives the run's files as they are written (a language's picture, its mouths) are
    what `remove_temporaries`, run at each run's start, removes; the finished files stay."""
    from dubbing.files import atomic_path, remove_temporaries
    from dubbing.layout import layout_for

    layout = layout_for(tmp_path / "talk.mp4", tmp_path / "out")
    finals = [layout.picture("es"), layout.picture_mouths("es"), layout.transcript, layout.video("es")]
    contexts = [atomic_path(final) for final in finals]
    written = [context.__enter__() for context in contexts]  # as a killed run leaves them: never renamed
    layout.video("pt").parent.mkdir(parents=True, exist_ok=True)
    layout.video("pt").write_bytes(b"finished")
    assert sorted(remove_temporaries(layout.out)) == sorted(written)
    assert not [p for p in layout.out.rglob("*") if ".tmp" in p.name] and layout.video("pt").read_bytes()


def test_audio_longer_than_the_picture_is_cut_at_its_end_with_a_warning(tmp_path, caplog):
    """A 2 s video given 4 s of speech with --audio: the speech is taken up to the picture's end (what is
    transcribed, subtitled, dubbed and mixed ends with the picture), and a warning names both durations."""
    from dubbing import media, steps
    from dubbing.layout import layout_for

    speech = make_speech(tmp_path / "speech.wav", "Hello, my name is John. I like to eat apples in the morning.")
    video = tmp_path / "short.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:d=2", "-pix_fmt", "yuv420p", str(video))
    info = steps.probe_source(video, speech)
    long = media.probe(speech).duration_s
    assert long > info.duration_s + 1
    with caplog.at_level("WARNING", logger="dubbing"):
        analysis, mix = steps.extract_audio(video, speech, info, layout_for(video, tmp_path / "out"))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"({long:.1f} s) is longer than the video" in warning and f"({info.duration_s:.1f} s)" in warning
    for wav in (analysis, mix):
        assert abs(media.probe(wav).duration_s - info.duration_s) < 0.05


def test_lipsync_takes_the_audio_track_it_is_given(second_track_speech, phone_video, tmp_path):
    """`dub lipsync VIDEO AUDIO --audio-track 2`: the face mouths, and the output carries, AUDIO's second track."""
    from dubbing import media

    upright, _ = phone_video
    out = tmp_path / "second.mp4"
    proc = dub("lipsync", str(upright), str(second_track_speech), "--out", str(out), "--audio-track", "2")
    assert proc.returncode == 0, proc.stderr
    assert "a face animated in 0" not in proc.stdout and media.audible_tracks(out) == [1]
    first = dub("lipsync", str(upright), str(second_track_speech), "--out", str(tmp_path / "first.mp4"))
    assert first.returncode == 0, first.stderr
    assert media.audible_tracks(tmp_path / "first.mp4") == []  # the silent first track, as before


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds a run's processes through /proc")
def test_dub_ends_on_sigterm_after_its_terminal_went_away(tmp_path):
    """The terminal closed mid-run (its output pipe has no reader: every write fails with EPIPE), then SIGTERM, as
    a service manager or a closed ssh session sends: dub still ends at once with 143 and leaves no process."""
    video = media_file("vrt_face1.mp4")
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"HF_HUB_OFFLINE": "1", "DUB_TEST_TAG": tag, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dubbing.cli", "run", str(video), "-l", "es", "-o", str(out)],
        env=env, stdout=write_end, stderr=write_end, start_new_session=True,
    )  # fmt: skip
    os.close(write_end)

    def drain() -> None:  # the terminal, until it goes away (the read that is waiting then fails or returns)
        try:
            while os.read(read_end, 65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not children_named(tag, "ffmpeg"):
            time.sleep(0.05)
        assert proc.poll() is None
        os.close(read_end)  # the terminal goes away
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert_none_left(tag)
    finally:
        kill_all(proc, tag)
