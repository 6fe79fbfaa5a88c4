"""`dub lipsync`, `dub avatar` and `dub inspect` as a user runs them."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from dubbing.lipsync import load_audio
from tests.conftest import make_speech, make_video, media_file
from tests.test_cli import assert_one_line_error, dub
from tests.test_run_e2e import ffprobe


def test_inspect_writes_a_contact_sheet_and_warns(tmp_path):
    speech = make_speech(tmp_path / "s.wav", "nobody here")
    video = make_video(tmp_path / "pattern.mp4", 1.0, audio=speech)
    proc = dub("inspect", str(video), "--out", str(tmp_path / "sheet.png"))
    assert proc.returncode == 0, proc.stderr
    assert "no face found in any frame" in proc.stderr and "under 480p" in proc.stderr
    assert (tmp_path / "sheet.png").stat().st_size > 1000


def test_lipsync_and_avatar_errors_are_one_line(tmp_path):
    speech = make_speech(tmp_path / "s.wav", "hello")
    video = make_video(tmp_path / "v.mp4", 1.0)
    assert_one_line_error(dub("lipsync", str(video), str(tmp_path / "none.wav"), "--out", str(tmp_path / "o.mp4")),
                          "audio not found")  # fmt: skip
    photo = tmp_path / "pattern.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:d=1", "-frames:v", "1",
                    str(photo)], check=True)  # fmt: skip
    assert_one_line_error(dub("avatar", str(photo), str(speech), "--out", str(tmp_path / "a.mp4")), "no face found")
    assert not (tmp_path / "a.mp4").exists()


def test_lipsync_command_writes_the_video(tmp_path):
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media_file("vrt_face1.mp4")), "-t", "1.5", "-vf",
                    "scale=320:320", str(video)], check=True)  # fmt: skip
    speech = make_speech(tmp_path / "s.wav", "good morning")
    out = tmp_path / "out.mov"
    proc = dub("lipsync", str(video), str(speech), "--out", str(out), "--offset-ms", "-100")
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and "a face animated in" in proc.stdout


def test_avatar_speech_options_are_checked_up_front(tmp_path):
    photo, speech = tmp_path / "face.png", make_speech(tmp_path / "s.wav", "hello")
    out = tmp_path / "a.mp4"
    base = ("avatar", str(photo), "--out", str(out))
    assert_one_line_error(dub(*base), "--text", "--audio")
    assert_one_line_error(dub(*base, "--audio", str(speech), "--text", "hi", "-l", "en"), "exclusive")
    assert_one_line_error(dub(*base, "--text", "hi", "-l", "xx"), "no configuration for language 'xx'")
    assert_one_line_error(dub(*base, "--text", "hi", "-l", "en", "--voice", "zz_nobody"), "zz_nobody")
    assert not out.exists()


@pytest.mark.slow
def test_avatar_speaks_a_script_in_a_chosen_voice(tmp_path):
    """`dub avatar PHOTO --text FILE -l en --voice V`: the script spoken by Kokoro, then animated; the video lasts
    as long as the speech, its audio holds speech, and its face is the photo's."""
    photo = tmp_path / "face.png"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "0.5", "-i", str(media_file("vrt_face1.mp4")), "-frames:v", "1",
                    "-vf", "scale=320:320", str(photo)], check=True)  # fmt: skip
    script = tmp_path / "script.txt"
    script.write_text("Good morning.\nThank you for coming today.\n")
    out = tmp_path / "talk.mp4"
    proc = dub("avatar", str(photo), "--text", str(script), "--language", "en", "--voice", "am_michael", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "spoken by kokoro am_michael" in proc.stdout
    streams = {s["codec_type"]: s for s in ffprobe(out)["streams"]}
    assert set(streams) == {"video", "audio"} and (streams["video"]["width"], streams["video"]["height"]) == (320, 320)
    audio = load_audio(out)
    seconds = audio.size / 16_000
    assert 1.5 < seconds < 6.0 and abs(float(streams["video"]["duration"]) - seconds) < 0.1
    middle = audio[int(0.3 * 16_000) : -int(0.3 * 16_000)]
    assert np.sqrt(np.mean(middle**2)) > 0.01  # speech, not silence
