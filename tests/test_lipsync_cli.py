"""`dub lipsync`, `dub avatar` and `dub inspect` as a user runs them."""

from __future__ import annotations

import subprocess

from tests.conftest import make_speech, make_video, media_file
from tests.test_cli import assert_one_line_error, dub


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
