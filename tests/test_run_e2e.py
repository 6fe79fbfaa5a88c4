"""`dub run` end to end on a real talking-head clip: the output contract of DESIGN.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest
import soundfile as sf

pytestmark = pytest.mark.slow


def ffprobe(path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def run_es(vrt_face1_es):
    """vrt_face1 dubbed into Spanish with the default config (conftest's run, shared with test_review_page)."""
    return vrt_face1_es


def test_manifest_follows_the_contract(run_es):
    video, out = run_es
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_language"] == "en"
    assert manifest["speakers"]
    es = manifest["outputs"]["es"]
    for key in ("video", "audio", "voice", "srt", "vtt", "script", "report"):
        assert (out / es[key]).is_file(), key
    transcript = json.loads((out / manifest["transcript"]).read_text())
    first = transcript["utterances"][0]
    assert {"start", "end", "speaker", "text", "words"} <= set(first)
    assert {"start", "end", "word"} <= set(first["words"][0])
    script = json.loads((out / es["script"]).read_text())
    assert all(line["speed"] <= 1.4 for line in script["lines"])


def test_dubbed_video_keeps_picture_and_has_spanish_audio_and_subtitles(run_es):
    video, out = run_es
    source, dubbed = ffprobe(video), ffprobe(out / "es" / "vrt_face1.es.mp4")
    src_v = next(s for s in source["streams"] if s["codec_type"] == "video")
    kinds = {s["codec_type"]: s for s in dubbed["streams"]}
    assert set(kinds) == {"video", "audio", "subtitle"}
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (src_v["width"], src_v["height"])
    assert kinds["video"]["r_frame_rate"] == src_v["r_frame_rate"]
    frame = 1 / float(Fraction(src_v["r_frame_rate"]))
    # The source is variable-rate (135 frames in 6.1 s at a nominal 30 fps); the re-rendered picture is
    # constant-rate at the nominal rate, so its frames must span the source's duration.
    assert abs(int(kinds["video"]["nb_frames"]) * frame - float(src_v["duration"])) <= frame + 0.001
    assert abs(float(dubbed["format"]["duration"]) - float(source["format"]["duration"])) <= frame + 0.03
    srt = (out / "es" / "vrt_face1.es.srt").read_text()
    assert "ayuda" in srt.lower()  # "asking for help" -> "pidiendo ayuda"
    voice, rate = sf.read(out / "es" / "vrt_face1.es.voice.wav")
    assert abs(voice).max() > 0.05 and rate > 8000


def test_the_same_command_into_an_untouched_folder_prints_its_outputs_without_running(run_es, tmp_path):
    """A rerun of the last complete command, with the same code, settings and input files, into a folder nothing
    has changed: the outputs at once, no step run, no file written. A file added to the folder (or any edit,
    a studio's included) makes the command run the flow again."""
    video, shared = run_es
    out = tmp_path / "out"
    shutil.copytree(shared, out)  # the shared run is read only; copy2 keeps each file's modification time
    command = [sys.executable, "-m", "dubbing.cli", "run", str(video), "--languages", "es", "--out", str(out)]

    def files() -> dict[str, int]:
        kept = (p for p in out.rglob("*") if p.is_file() and p.name not in ("dub.log", ".dub.lock"))
        return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in kept}

    before = files()
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing changed since the last run" in again.stdout and "manifest:" in again.stdout
    assert " done" not in again.stderr  # no step ran (a run not on a terminal prints a line per finished step)
    assert files() == before

    (out / "notes.txt").write_text("mine")
    changed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert changed.returncode == 0, changed.stderr[-3000:]
    # the flow ran (its steps' cache keys name the folder, so in this copy they are computed again)
    assert "nothing changed" not in changed.stdout and "es: report done" in changed.stderr
    third = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert "nothing changed since the last run" in third.stdout, third.stderr[-3000:]
    other = subprocess.run([*command, "--subtitles", "none"], capture_output=True, text=True, timeout=900)
    assert other.returncode == 0 and "nothing changed" not in other.stdout, other.stderr[-3000:]
