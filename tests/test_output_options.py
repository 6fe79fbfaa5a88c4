"""What the dubbed video holds (config `output`, `dub run` flags): subtitles soft, burned, bilingual or none, the
original audio as a second track, the container, subtitles-only runs; and subtitle text carried literally."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from dubbing import media, steps, subtitles
from dubbing.config import load_settings
from dubbing.layout import layout_for
from dubbing.types import MediaInfo, Script, ScriptLine, Transcript
from tests.conftest import media_file
from tests.test_architecture import BASE_CONTEXT, LANGUAGE_CONTEXT
from tests.test_run_e2e import ffprobe

MARKUP = r"<i>so</i> {\an8}top & a\N b --> c"  # what a user may type into script.json, meant as text


def track_text(path: Path) -> str:
    """The video's first subtitle track as ffmpeg reads it back, written out as SRT."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def cue_texts(srt: str) -> list[str]:
    """The text of each cue of an SRT document."""
    return ["\n".join(block.splitlines()[2:]) for block in srt.strip().split("\n\n")]


def make_clip(path: Path, *, seconds: float = 3.0, tone: int = 440, picture: str = "testsrc") -> Path:
    """A small video with a sine tone as its sound (`picture`: a lavfi source, e.g. color=black)."""
    source = f"{picture}=size=320x240:rate=25:d={seconds}" if picture == "testsrc" else f"{picture}:s=320x240:r=25"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", source, "-f", "lavfi", "-i",
         f"sine=frequency={tone}:duration={seconds}", "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


def make_tone(path: Path, tone: int, seconds: float = 3.0) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={tone}:duration={seconds}",
         "-ar", "48000", str(path)],
        check=True,
    )  # fmt: skip
    return path


def dominant_hz(path: Path, stream: str) -> float:
    """The strongest frequency of one audio stream of a file (`stream` e.g. '0:a:1')."""
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", stream, "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    samples = np.frombuffer(pcm, dtype=np.float32)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * 16000 / len(samples))


def one_line_script(source_text: str, text: str) -> Script:
    line = ScriptLine(index=0, speaker="S1", start=0.0, end=2.0, source_text=source_text, text=text)
    return Script(source_language="en", language="es", translator="test", lines=[line])


# ---------------------------------------------------------------- text shown literally (#19)


def test_srt_and_vtt_carry_markup_as_text(tmp_path):
    srt, vtt = subtitles.write_subtitles([(0.0, 2.0, MARKUP)], tmp_path / "a.srt", tmp_path / "a.vtt", 3.0, "en")
    srt_cue = cue_texts(srt.read_text())[0]
    assert srt_cue != MARKUP and srt_cue.replace(subtitles.WORD_JOINER, "") == MARKUP  # only zero-width marks added
    assert "<i>" not in srt_cue and "{\\" not in srt_cue and "\\N" not in srt_cue
    vtt_cue = vtt.read_text().split("\n\n")[1].splitlines()[1]
    assert "<" not in vtt_cue and "-->" not in vtt_cue and html.unescape(vtt_cue) == MARKUP


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_the_muxed_track_holds_the_text_as_written(tmp_path, suffix):
    clip = make_clip(tmp_path / "clip.mp4")
    dub = make_tone(tmp_path / "dub.wav", 660)
    srt, _ = subtitles.write_subtitles(
        [(0.0, 1.2, MARKUP), (1.4, 2.8, "<b>bold?</b> {not a tag}")], tmp_path / "a.srt", tmp_path / "a.vtt", 3.0
    )
    out = media.mux(clip, dub, tmp_path / f"out{suffix}", subtitles=srt, language="spa", duration_s=3.0)
    assert cue_texts(track_text(out)) == cue_texts(srt.read_text())
    streams = [s for s in ffprobe(out)["streams"] if s["codec_type"] == "subtitle"]
    assert [s["codec_name"] for s in streams] == ["subrip" if suffix == ".mkv" else "mov_text"]
    assert streams[0]["tags"]["language"] == "spa"


def test_steps_write_an_edited_lines_markup_literally(tmp_path):
    layout = layout_for(tmp_path / "talk.mp4", tmp_path / "out")
    script = one_line_script("so", MARKUP)
    info = MediaInfo(path="talk.mp4", duration_s=3.0, has_video=True, has_audio=True)
    srt, vtt = steps.write_subtitles(script, None, info, load_settings().output, layout)
    assert cue_texts(srt.read_text())[0].replace(subtitles.WORD_JOINER, "") == MARKUP
    assert html.unescape(vtt.read_text().split("\n\n")[1].splitlines()[1]) == MARKUP


# ---------------------------------------------------------------- bilingual


def test_bilingual_cues_hold_the_source_over_the_translation():
    source = "We walked along the river for an hour and talked about the summer and the plans we had made"
    text = "Caminamos por el río"
    cues = subtitles.make_bilingual_cues([(0.0, 4.0, source, text), (5.0, 6.0, "Yes.", "Sí.")], 8.0, "en", "es")
    first_line = [c for c in cues if c.end <= 4.0 + 1e-6]
    assert len(first_line) == 1  # a one-line translation is never split away from itself
    lines = first_line[0].text.split("\n")
    assert lines[-1] == text and " ".join(lines[:-1]) == source
    assert cues[-1].text == "Yes.\nSí." and cues[-1].start == 5.0
    long_text = " ".join([text] * 6)  # several subtitle lines: several cues, each with both languages
    split = subtitles.make_bilingual_cues([(0.0, 6.0, source, long_text)], 8.0, "en", "es")
    source_lines, text_lines = subtitles.wrap(source, "en"), subtitles.wrap(long_text, "es")
    assert len(split) > 1
    for cue in split:  # each cue: some source lines, then some translated lines
        lines = cue.text.split("\n")
        cut = next(i for i, line in enumerate(lines) if line not in source_lines)
        assert 0 < cut < len(lines) and all(line in text_lines for line in lines[cut:])
    every = [line for c in split for line in c.text.split("\n")]
    assert [line for line in every if line in source_lines] == source_lines
    assert [line for line in every if line not in source_lines] == text_lines
    assert split[0].start == 0.0 and split[-1].end == 6.0


def test_bilingual_mode_writes_its_files_beside_the_normal_ones(tmp_path):
    layout = layout_for(tmp_path / "talk.mp4", tmp_path / "out")
    script = one_line_script("Hello", "Hola")
    info = MediaInfo(path="talk.mp4", duration_s=3.0, has_video=True, has_audio=True)
    settings = load_settings()
    settings.output.subtitles = "bilingual"
    files = steps.write_subtitles(script, None, info, settings.output, layout)
    assert files[:2] == (layout.srt("es"), layout.vtt("es")) and len(files) == 4
    assert cue_texts(files[0].read_text()) == ["Hola"]
    assert cue_texts(files[2].read_text()) == ["Hello\nHola"]
    assert "Hello\nHola" in files[3].read_text()


# ---------------------------------------------------------------- audio tracks, burned subtitles, containers


def test_original_audio_is_a_second_track_tagged_with_the_source_language(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", tone=440)
    original, dub = make_tone(tmp_path / "original.wav", 1000), make_tone(tmp_path / "dub.wav", 300)
    out = media.mux(clip, dub, tmp_path / "out.mp4", language="spa", original_audio=original,
                    original_language="eng", duration_s=3.0)  # fmt: skip
    audio = [s for s in ffprobe(out)["streams"] if s["codec_type"] == "audio"]
    assert [s["tags"]["language"] for s in audio] == ["spa", "eng"]
    assert [s["disposition"]["default"] for s in audio] == [1, 0]
    assert abs(dominant_hz(out, "0:a:0") - 300) < 10 and abs(dominant_hz(out, "0:a:1") - 1000) < 10


def test_burned_subtitles_are_drawn_where_the_cue_is_and_the_text_stays_text(tmp_path):
    clip = make_clip(tmp_path / "black.mp4", picture="color=black")
    srt, _ = subtitles.write_subtitles([(0.0, 1.0, r"{\an8}WWWW")], tmp_path / "a.srt", tmp_path / "a.vtt", 3.0)
    burn = subtitles.burnable(srt, tmp_path / "burn dir" / "sub's [1].srt")  # a name the filter must escape
    out = media.mux(clip, make_tone(tmp_path / "dub.wav", 300), tmp_path / "out.mp4", burn=burn, crf=20,
                    preset="ultrafast", duration_s=3.0)  # fmt: skip
    kinds = [s["codec_type"] for s in ffprobe(out)["streams"]]
    assert kinds == ["video", "audio"]  # drawn in, no track
    frames = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-vf", "fps=2", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout
    video = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 240, 320)
    during, after = video[0], video[-1]  # t=0 (the cue) and t=2.5 s (none)
    assert during[160:].max() > 150  # text near the bottom: {\an8} was not taken as "move to the top"
    assert during[:80].max() < 40 and after.max() < 40


def text_bands(frame: np.ndarray) -> int:
    """How many separate bands of rows hold drawn (bright) pixels: the lines of text in a black frame."""
    rows = (frame > 150).any(axis=1)
    return int(rows[0]) + int(np.count_nonzero(rows[1:] & ~rows[:-1]))


def test_burned_lines_break_where_the_file_breaks_them_in_a_square_picture(tmp_path):
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:s=360x360:r=25:d=1", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(tmp_path / "square.mp4")], check=True)  # fmt: skip
    line = "Caminamos por el río durante una hora bien"  # 42 characters: one subtitle line
    srt, _ = subtitles.write_subtitles([(0.0, 1.0, line)], tmp_path / "a.srt", tmp_path / "a.vtt", 1.0)
    assert cue_texts(srt.read_text()) == [line]
    burn = subtitles.burnable(srt, tmp_path / "burn.srt")
    tone = make_tone(tmp_path / "dub.wav", 300, 1.0)
    bands = []
    for style in (None, subtitles.burn_style(360, 360)):
        out = media.mux(tmp_path / "square.mp4", tone, tmp_path / f"{style}.mp4", burn=burn, burn_style=style,
                        preset="ultrafast", duration_s=1.0)  # fmt: skip
        frame = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(out), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
            capture_output=True,
            check=True,
        ).stdout
        bands.append(text_bands(np.frombuffer(frame, dtype=np.uint8).reshape(360, 360)))
    assert bands[0] > 1 and bands[1] == 1  # libass's default size wraps the line again; the burn style does not


def test_render_video_burns_into_a_mov_with_both_audio_tracks_and_records_it(tmp_path):
    clip = make_clip(tmp_path / "black.mp4", picture="color=black")
    layout = layout_for(clip, tmp_path / "out")
    settings = load_settings()
    settings.output.subtitles, settings.output.format, settings.output.keep_original_audio = "burn", "mov", True
    settings.lipsync.preset = "ultrafast"
    info = media.probe(clip)
    files = steps.write_subtitles(one_line_script("Hello", "HOLA HOLA"), None, info, settings.output, layout)
    context = {"video": clip, "info": info, "dub_audio": make_tone(tmp_path / "dub.wav", 300), "subtitle_files": files,
               "mix_wav": make_tone(tmp_path / "original.wav", 1000), "picture": None, "stretched": None, "lang": "es",
               "transcript": Transcript(language="en", duration_s=3.0), "cfg": settings.for_language("es"),
               "settings": settings, "output": settings.output, "layout": layout}  # fmt: skip
    out = steps.render_video(**{name: context[name] for name in steps.get_step("render-video").inputs})
    assert out == layout.video("es", "mov") and out.name == "black.es.mov"
    probed = ffprobe(out)
    assert "mov" in probed["format"]["format_name"]
    assert [s["codec_type"] for s in probed["streams"]] == ["video", "audio", "audio"]  # drawn in: no track
    assert [s["tags"]["language"] for s in probed["streams"][1:]] == ["spa", "eng"]
    first = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert np.frombuffer(first, dtype=np.uint8).max() > 150  # the text is in the picture
    entry = steps.language_outputs(context | {"dub_video": out, "track": object()})
    assert (entry.video, entry.subtitles, entry.audio_tracks) == ("es/black.es.mov", "burn", ["spa", "eng"])
    assert entry.bilingual_srt is None and entry.audio == "es/black.es.wav"


def test_mux_refuses_a_container_it_does_not_make(tmp_path):
    from dubbing.errors import DubbingError

    with pytest.raises(DubbingError, match=r"\.mp4, \.mov or \.mkv"):
        media.mux(tmp_path / "a.mp4", tmp_path / "a.wav", tmp_path / "out.avi")


# ---------------------------------------------------------------- subtitles-only runs


def test_a_subtitles_only_run_takes_only_the_steps_that_make_subtitles():
    settings = load_settings()
    settings.output.subtitles_only = True
    taken = {s.name for scope in ("source", "language", "summary") for s in steps.steps(scope, settings)}
    assert taken == steps.SUBTITLES_ONLY
    skipped = steps.skipped(settings)
    assert {"track", "dub_audio", "picture", "hearing", "dub_video", "voices"} <= set(skipped)
    assert "script" not in skipped and "transcript" not in skipped and all(v is None for v in skipped.values())
    for step in (s for scope in ("source", "language", "summary") for s in steps.steps(scope, settings)):
        made_before = {n for s in steps.STEPS[: steps.STEPS.index(step)] if s.name in taken for n in s.outputs}
        context_values = BASE_CONTEXT | LANGUAGE_CONTEXT
        assert set(step.inputs) <= made_before | set(skipped) | context_values, step.name
    assert steps.skipped(load_settings()) == {}


# ---------------------------------------------------------------- end to end: `dub run` with the options


def dub_run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(env if env is not None else os.environ), "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "dubbing.cli", "run", *args], capture_output=True, text=True,
                          env=env, timeout=900)  # fmt: skip


def decoded(path: Path, stream: str) -> np.ndarray:
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", stream, "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(pcm, dtype=np.float32)


def correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> float:
    """The best normalised correlation of two 16 kHz signals within +-50 ms (an AAC encoder's priming samples shift
    a track by about 21 ms in a container that does not record them)."""
    n = min(len(a), len(b)) - 2 * max_lag
    ref = b[max_lag : max_lag + n]
    segments = (a[max_lag + lag : max_lag + lag + n] for lag in range(-max_lag, max_lag + 1))
    return max(float(np.dot(s, ref) / (np.linalg.norm(s) * np.linalg.norm(ref) + 1e-12)) for s in segments)


@pytest.mark.slow
def test_dub_run_bilingual_mkv_with_the_original_audio_and_the_runs_link(tmp_path):
    video = media_file("vrt_face2.mp4")
    out = tmp_path / "out"
    proc = dub_run(str(video), "-l", "es", "-o", str(out), "--subtitles", "bilingual", "--keep-original-audio",
                   "--output-format", "mkv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    es = json.loads((out / "manifest.json").read_text())["outputs"]["es"]
    assert {"video", "audio", "voice", "srt", "vtt", "script", "report"} <= set(es)  # the contract's keys stay
    assert es["video"] == "es/vrt_face2.es.mkv" and es["subtitles"] == "bilingual"
    assert es["audio_tracks"] == ["spa", "eng"]
    dubbed = out / es["video"]
    info = ffprobe(dubbed)
    assert "matroska" in info["format"]["format_name"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    subs = [s for s in info["streams"] if s["codec_type"] == "subtitle"]
    assert [s["tags"]["language"] for s in audio] == ["spa", "eng"] and audio[0]["disposition"]["default"] == 1
    assert [(s["codec_name"], s["tags"]["language"]) for s in subs] == [("subrip", "spa")]
    # the second track is the source's own sound, the first is not
    source = decoded(video, "0:a:0")
    assert correlation(decoded(dubbed, "0:a:1"), source) > 0.9 > correlation(decoded(dubbed, "0:a:0"), source) + 0.5
    # the track is the bilingual file: each cue the source line over the translation
    bilingual = (out / es["bilingual_srt"]).read_text()
    assert cue_texts(track_text(dubbed)) == cue_texts(bilingual) and (out / es["bilingual_vtt"]).is_file()
    script = json.loads((out / es["script"]).read_text())
    words = " ".join(bilingual.split())
    for line in script["lines"]:
        assert all(w in words for w in line["source_text"].split() + line["text"].split())
    assert all(len(cue.splitlines()) >= 2 for cue in cue_texts(bilingual))
    # on a server the user keeps, the summary ends with the run's page in the Prefect UI
    api = os.environ.get("PREFECT_API_URL")
    if api:
        last = proc.stdout.strip().splitlines()[-1]
        match = re.fullmatch(r"in the Prefect UI: (http://\S+)/runs/flow-run/([0-9a-f-]{36})", last)
        assert match and api.startswith(match.group(1)), proc.stdout[-1000:]
        flow_run = httpx.get(f"{api}/flow_runs/{match.group(2)}", timeout=10).json()
        assert flow_run["name"] == "dub-vrt_face2.mp4" and flow_run["state_type"] == "COMPLETED"


@pytest.mark.slow
def test_dub_run_subtitles_only_voices_nothing_and_says_so(tmp_path):
    video = media_file("vrt_face2.mp4")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "ph")}
    proc = dub_run(str(video), "-l", "es,ca", "-o", str(out), "--subtitles-only", env=env)  # the temporary API
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    for lang in ("es", "ca"):
        entry = manifest["outputs"][lang]
        assert entry["video"] is None and entry["audio"] is None and entry["voice"] is None
        assert cue_texts((out / entry["srt"]).read_text()) and (out / entry["vtt"]).is_file()
        report = json.loads((out / entry["report"]).read_text())
        assert report["dubbed"] is False and "no dub" in report["intelligibility"]["note"]
        made = {p.suffix for p in (out / lang).iterdir()}
        assert not made & {".wav", ".mp4", ".mkv", ".mov"}, made
    assert "no dub" in (out / manifest["review"]).read_text()
    assert "no dub" in proc.stdout and "Prefect UI" not in proc.stdout  # no link to a server that is gone


def test_a_source_picture_browsers_do_not_play_is_encoded_again_when_no_lipsync_replaces_it(tmp_path):
    """A dub whose picture is the source's own (no face, lipsync off) is 8-bit 4:2:0 H.264 at an even size like a
    lipsynced one: a 10-bit 4:4:4 odd-sized source is encoded again (one row and column more); an 8-bit 4:2:0 one is
    copied as it is."""
    odd = tmp_path / "odd.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=321x241:rate=25:d=2",
         "-c:v", "libx264", "-pix_fmt", "yuv444p10le", str(odd)],
        check=True,
    )  # fmt: skip
    tone = make_tone(tmp_path / "tone.wav", 440, seconds=2.0)
    info = media.probe(odd)
    assert not media.plays_everywhere(info)
    out = media.mux(odd, tone, tmp_path / "dub.mp4", encode=not media.plays_everywhere(info))
    video = next(s for s in ffprobe(out)["streams"] if s["codec_type"] == "video")
    assert (video["pix_fmt"], video["profile"], video["width"], video["height"]) == ("yuv420p", "High", 322, 242)
    plain = make_clip(tmp_path / "plain.mp4", seconds=2.0)
    assert media.plays_everywhere(media.probe(plain))
    copied = media.mux(plain, tone, tmp_path / "copied.mp4", encode=False)
    before, after = (next(s for s in ffprobe(p)["streams"] if s["codec_type"] == "video") for p in (plain, copied))
    assert after["bit_rate"] == before["bit_rate"] and after["nb_frames"] == before["nb_frames"]
