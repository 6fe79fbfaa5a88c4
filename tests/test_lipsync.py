"""Lipsync on real faces: re-voicing closes the mouth in the new audio's silences, the upper frame is kept,
sizes and rates survive, no-face inputs behave, photos talk, and the input checks see what they should."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from dubbing import backends, media, progress
from dubbing.errors import DubbingError
from dubbing.layout import RunLayout
from dubbing.lipsync import (
    analyse,
    drawn_mouths,
    lipsync_video,
    load_audio,
    mouth_opening,
    mouths_path,
    render_dub,
    track_video,
)
from dubbing.lipsync.avatar import blink_track, make_avatar
from dubbing.lipsync.faces import mouth_gap
from dubbing.lipsync.render import BACKENDS, Wav2LipRenderer
from dubbing.lipsync.video import parse_resolution, probe_video, read_frames
from dubbing.lipsync.visemes import apply_script, drive_from_audio, phonemes
from tests.conftest import make_speech, make_video, media_file

RATE = 16_000


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


def speech_at(tmp: Path, total_s: float, parts: list[tuple[float, str]]) -> tuple[Path, list[tuple[float, float]]]:
    """A WAV of `total_s` seconds, silent but for espeak-ng phrases starting at the given times.
    Returns the file and the (start, end) of each phrase."""
    import soundfile as sf

    audio = np.zeros(int(total_s * RATE), np.float32)
    spans = []
    for i, (start, text) in enumerate(parts):
        clip = load_audio(make_speech(tmp / f"part{i}.wav", text))
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        clip = clip[loud[0] : loud[-1] + 1][: audio.size - int(start * RATE)]
        audio[int(start * RATE) : int(start * RATE) + clip.size] = clip
        spans.append((start, start + clip.size / RATE))
    path = tmp / "drive.wav"
    sf.write(path, audio, RATE)
    return path, spans


def gaps_of(video: Path, tracked: tuple | None = None) -> tuple[np.ndarray, float]:
    """Each frame's mouth gap and the frame rate, from `tracked` (what track_video gave for `video`) if given."""
    faces, stream = tracked or track_video(video)
    slot = faces.ids[:, 0] >= 0
    return np.array(
        [mouth_gap(p) if ok else np.nan for p, ok in zip(faces.points[:, 0], slot, strict=True)]
    ), stream.fps_float


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def revoiced(tmp_path_factory):
    """vrt_face1 (he talks throughout) re-voiced with speech, silence, speech, silence."""
    tmp = tmp_path_factory.mktemp("revoice")
    video = media_file("vrt_face1.mp4")
    # he speaks 0-2.5 s and 3.5-4.6 s: the new audio is silent there and speaks in his pauses
    drive, spans = speech_at(tmp, 6.1, [(2.5, "hello there"), (4.7, "we are here")])
    out = tmp / "out.mp4"
    result = lipsync_video(video, drive, out)
    return video, drive, spans, out, result


@pytest.fixture(scope="module")
def source_tracks():
    """vrt_face1's face tracks, tracked once for the tests that compare the re-voiced picture with the source."""
    return track_video(media_file("vrt_face1.mp4"))


def test_face_tracking_reports_its_frames_under_the_running_step():
    events: list[progress.Event] = []
    with progress.listening(events.append), progress.step("track-faces"):
        faces, stream = track_video(media_file("vrt_face1.mp4"))
    assert events and {(e.stage, e.language) for e in events} == {("track-faces", None)}
    done = [int(e.detail.split("/")[0]) for e in events]
    assert events[0].detail == f"1/{stream.frames} frames" and done == sorted(done) and done[-1] <= faces.frames


def test_revoice_closes_the_mouth_in_the_new_silences(revoiced, source_tracks):
    video, _drive, spans, out, result = revoiced
    assert result.animated_frames > 0.9 * result.frames
    gaps, fps = gaps_of(out)
    t = (np.arange(len(gaps)) + 0.5) / fps
    speaking = np.zeros(len(gaps), bool)
    for a, b in spans:
        speaking |= (t >= a + 0.1) & (t <= b - 0.1)
    silent = np.ones(len(gaps), bool)
    for a, b in spans:
        silent &= (t < a - 0.2) | (t > b + 0.25)
    silent_gap, speech_gap = np.nanmedian(gaps[silent]), np.nanmedian(gaps[speaking])
    assert speech_gap > 0.03, speech_gap
    assert silent_gap <= 0.5 * speech_gap, (silent_gap, speech_gap)
    # the source itself talks during those silences: the closed mouth is ours
    src_gaps, _ = gaps_of(video, source_tracks)
    n = min(len(src_gaps), len(gaps))
    src_open = np.nanpercentile(src_gaps[:n][silent[:n]], 75)
    assert src_open > 0.05 and src_open > 2 * np.nanpercentile(gaps[:n][silent[:n]], 75)


def test_revoice_keeps_the_upper_frame_size_and_rate(revoiced, source_tracks):
    """Everything above the nose tip is untouched but for encoding (his mouth sits in the frame's upper half,
    so the rows above the nose are what 'outside the lower face' means here)."""
    video, _drive, _spans, out, result = revoiced
    src, dst = probe_video(video), probe_video(out)
    assert (dst.width, dst.height, dst.fps) == (src.width, src.height, src.fps)
    faces, _ = source_tracks
    values = []
    for i, (a, b) in enumerate(zip(read_frames(video, src), read_frames(out, dst), strict=False)):
        if i % 10 == 0:
            top = int(faces.points[i, 0, 1, 1])  # nose tip row
            values.append(psnr(a[:top], b[:top]))
    assert len(values) >= 10 and min(values) >= 40.0, values
    assert abs(result.frames - src.frames) <= 1


def test_offset_resolution_and_format(tmp_path):
    video = tmp_path / "portrait.mp4"  # vertical video, a few seconds
    ffmpeg("-i", str(media_file("vrt_face2.mp4")), "-t", "2", "-vf", "crop=476:844,scale=240:426", "-an", str(video))
    speech = make_speech(tmp_path / "s.wav", "one two three")
    out = tmp_path / "small.mkv"
    result = lipsync_video(video, speech, out, offset_ms=300, resolution="160p")
    dst = probe_video(out)
    assert (dst.width, dst.height) == (160, 284) and result.animated_frames > 0
    assert parse_resolution("720p", 1920, 1080) == (1280, 720)
    assert parse_resolution("720p", 1080, 1920) == (720, 1280)
    with pytest.raises(DubbingError, match="bad resolution"):
        parse_resolution("big", 100, 100)
    with pytest.raises(DubbingError, match="unknown output format"):
        lipsync_video(video, speech, tmp_path / "x.avi")


def test_video_without_a_face_passes_through(tmp_path):
    speech = make_speech(tmp_path / "s.wav", "nobody is here")
    video = make_video(tmp_path / "pattern.mp4", 2.0, audio=speech)
    faces, _data = analyse(video, tmp_path / "faces.npz")
    assert faces.faces == 0 and [c.code for c in faces.checks][:1] == ["no-face"]
    result = lipsync_video(video, speech, tmp_path / "out.mp4")
    assert result.animated_frames == 0 and result.frames == probe_video(tmp_path / "out.mp4").frames


def test_photo_without_a_face_fails_clearly(tmp_path):
    photo = tmp_path / "pattern.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:d=1", "-frames:v", "1", str(photo))
    speech = make_speech(tmp_path / "s.wav", "hello")
    with pytest.raises(DubbingError, match="no face found"):
        make_avatar(photo, speech, tmp_path / "out.mp4")
    with pytest.raises(DubbingError, match="not a readable image"):
        make_avatar(speech, speech, tmp_path / "out.mp4")


def test_avatar_talks_and_blinks(tmp_path):
    photo = tmp_path / "face.png"
    ffmpeg("-ss", "0.5", "-i", str(media_file("vrt_face1.mp4")), "-frames:v", "1", "-vf", "scale=360:360", str(photo))
    drive, spans = speech_at(tmp_path, 3.0, [(0.5, "good morning everybody")])
    out = tmp_path / "avatar.mp4"
    result = make_avatar(photo, drive, out, fps=25)
    info = probe_video(out)
    assert (info.width, info.height, float(info.fps)) == (360, 360, 25.0)
    assert abs(result.frames - load_audio(drive).size / RATE * 25) <= 1
    gaps, fps = gaps_of(out)
    t = (np.arange(len(gaps)) + 0.5) / fps
    a, b = spans[0]
    assert np.nanmedian(gaps[(t > a + 0.1) & (t < b - 0.1)]) > 2 * np.nanmedian(gaps[t > b + 0.3]) + 0.01
    closure = blink_track(25 * 60, 25.0, np.random.default_rng(1))
    starts = np.flatnonzero(np.diff((closure > 0.5).astype(int)) == 1)
    assert 6 <= len(starts) <= 30  # a human rate: about 15 a minute
    assert np.diff(starts).min() / 25.0 >= 1.5


def test_inspect_sees_cuts_low_resolution_and_several_faces(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "1.2", "-vf", "scale=320:320,fps=25", "-an", str(a))
    ffmpeg("-i", str(media_file("vrt_face4.mp4")), "-t", "1.2", "-vf", "scale=320:320,fps=25", "-an", str(b))
    both = tmp_path / "both.mp4"
    ffmpeg("-i", str(a), "-i", str(b), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", str(both))
    faces, data = analyse(both, None)
    codes = {c.code for c in faces.checks}
    assert {"scene-cuts", "low-resolution"} <= codes, codes
    assert len(faces.scene_cuts) == 1 and abs(faces.scene_cuts[0] - 1.2) < 0.1
    assert faces.faces >= 2  # the track restarts at the cut
    side = tmp_path / "side.mp4"
    ffmpeg("-i", str(a), "-i", str(b), "-filter_complex", "[0:v][1:v]hstack[v]", "-map", "[v]", str(side))
    faces2, data2 = analyse(side, None)
    assert "several-faces" in {c.code for c in faces2.checks}
    from dubbing.lipsync.inspect import contact_sheet, sample_indices

    kept: dict = {}
    _f, d = analyse(side, None, keep=tuple(sample_indices(data2.frames, 4)), kept=kept)
    sheet = contact_sheet(kept, d, tmp_path / "sheet.png")
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] >= 320 and len(kept) == 4


def test_active_speaker_is_the_face_whose_mouth_moves(tmp_path):
    """Two faces side by side, one still (a frozen frame), one talking: each line goes to the talker."""
    talk, still = tmp_path / "talk.mp4", tmp_path / "still.mp4"
    src = media_file("vrt_face1.mp4")
    ffmpeg("-i", str(src), "-t", "2", "-vf", "scale=320:320,fps=25", str(talk))
    ffmpeg("-i", str(media_file("vrt_face4.mp4")), "-frames:v", "1", "-vf", "scale=320:320", str(tmp_path / "p.png"))
    ffmpeg("-loop", "1", "-i", str(tmp_path / "p.png"), "-t", "2", "-r", "25", str(still))
    pair = tmp_path / "pair.mp4"
    ffmpeg("-i", str(still), "-i", str(talk), "-filter_complex", "[0:v][1:v]hstack[v]", "-map", "[v]", "-map", "1:a",
           str(pair))  # fmt: skip
    wav = tmp_path / "src.wav"
    ffmpeg("-i", str(pair), "-ac", "1", "-ar", "16000", str(wav))
    faces, data = analyse(pair, None, lines=[(0.1, 1.9)], source_audio=wav)
    chosen = faces.line_faces[0]
    assert chosen is not None
    slot = np.flatnonzero(data.ids[10] == chosen)[0]
    assert data.points[10, slot, :, 0].mean() > 320  # the right-hand (talking) face
    # only that face is re-animated: the still face's half of the picture is left alone
    out = tmp_path / "out.mp4"
    lipsync_video(pair, make_speech(tmp_path / "s.wav", "quiet now"), out, faces=data)
    src, dst = probe_video(pair), probe_video(out)
    pairs = list(zip(read_frames(pair, src), read_frames(out, dst), strict=False))[5:45:8]
    assert min(psnr(a[:, :320], b[:, :320]) for a, b in pairs) >= 40
    assert min(psnr(a[:, 320:], b[:, 320:]) for a, b in pairs) < 40


def test_phonemes_close_lips_on_bilabials():
    phs = phonemes("bob may pop", "en")
    assert sum(p[0] in "bmp" for p in phs) >= 4, phs
    audio = np.concatenate([np.zeros(RATE // 2), 0.3 * np.sin(2 * np.pi * 600 * np.arange(RATE) / RATE)])
    drive = drive_from_audio(audio.astype(np.float32), RATE, 25.0, 38)
    assert drive.open[:10].max() == 0.0 and drive.open[15:35].min() > 0.5
    closures = apply_script(drive, [(0.5, 1.5, "bob may pop")], "en", 25.0)
    assert closures >= 4 and (drive.open[12:38] == 0).sum() >= 3


def test_renderer_backends(tmp_path):
    with pytest.raises(DubbingError, match="unknown lipsync backend"):
        backends.build(BACKENDS, "nope", "lipsync")
    with pytest.raises(DubbingError, match="needs a Wav2Lip model"):
        backends.build(BACKENDS, "wav2lip", "lipsync")
    with pytest.raises(DubbingError, match="strength"):
        backends.build(BACKENDS, "classical", "lipsync", {"strength": 2.0})
    assert backends.build(BACKENDS, "classical", "lipsync", {"strength": 0.5}).strength == 0.5
    # options are the chosen renderer's own: wav2lip's model_path is an error for the classical renderer
    video = make_video(tmp_path / "v.mp4", 0.5)
    with pytest.raises(DubbingError, match="unknown key 'model_path' for backend classical; allowed: strength"):
        lipsync_video(video, video, tmp_path / "out.mp4", backend_options={"model_path": "w.onnx"})


def test_wav2lip_backend_runs_a_tiny_random_network(tmp_path):
    """The neural backend's real loading, mel features, crop and paste, on a randomly initialised TorchScript
    network with Wav2Lip's interface (no Wav2Lip weights are obtainable offline)."""
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 3, 3, padding=1)
            self.audio = torch.nn.Linear(80 * 16, 3)

        def forward(self, mel, video):
            return torch.sigmoid(self.conv(video) + self.audio(mel.flatten(1))[:, :, None, None])

    torch.manual_seed(0)
    model_path = tmp_path / "tiny.pt"
    torch.jit.trace(Tiny(), (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))).save(str(model_path))
    assert isinstance(backends.build(BACKENDS, "wav2lip", "lipsync", {"model_path": model_path}), Wav2LipRenderer)
    video = tmp_path / "clip.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "1", "-vf", "scale=320:320", "-an", str(video))
    speech = make_speech(tmp_path / "s.wav", "hello")
    out = tmp_path / "out.mp4"
    result = lipsync_video(video, speech, out, backend="wav2lip", backend_options={"model_path": model_path})
    assert result.renderer == "wav2lip" and result.animated_frames > 0
    a = next(read_frames(video, probe_video(video)))
    b = next(read_frames(out, probe_video(out)))
    pts = track_video(video)[0].points[0, 0]
    nose = int(pts[1, 1])
    (x0, y0), (x1, y1) = pts[[61, 0]].min(axis=0).astype(int), pts[[291, 17]].max(axis=0).astype(int)
    assert psnr(a[: nose - 5], b[: nose - 5]) > 40  # above the nose: untouched
    assert psnr(a[y0:y1, x0:x1], b[y0:y1, x0:x1]) < 30  # the mouth: the network's output


def test_faces_tracked_once_then_each_language_rendered_and_muxed(tmp_path):
    """What the steps do: faces tracked once into the run's landmarks file, each language's picture lipsynced to
    its dub voice and muxed, the checks in the report; a video with no face keeps its picture and says so."""
    video = tmp_path / "talk.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "2", "-vf", "scale=320:320", str(video))
    layout = RunLayout(out=tmp_path / "out", name=video.stem)
    faces, _data = analyse(video, layout.faces_npz, lines=[(0.2, 1.8)])
    assert faces.faces == 1 and faces.line_faces == [0]
    assert faces.landmarks == str(layout.faces_npz) and layout.faces_npz.exists()
    voice, spans = speech_at(tmp_path, 2.0, [(0.3, "hola amigo")])
    result = render_dub(video, faces, voice, layout.picture("es"), lines=[(0.3, spans[0][1], "hola amigo")],
                        language="es", backend="classical", backend_options={"strength": 1.0})  # fmt: skip
    assert result is not None
    picture = result.out
    assert picture == layout.picture("es") and probe_video(picture).width == 320 and result.animated_frames > 0
    final = media.mux(picture, voice, layout.video("es"), language="spa", duration_s=2.0)
    assert probe_video(final).frames == probe_video(picture).frames
    assert faces.faces == 1 and "low-resolution" in {c.code for c in faces.checks}

    blank = make_video(tmp_path / "pattern.mp4", 1.0, audio=voice)
    nobody, _ = analyse(blank, RunLayout(out=tmp_path / "o2", name=blank.stem).faces_npz, lines=[(0.2, 0.8)])
    assert nobody.faces == 0 and nobody.line_faces == [None]
    assert render_dub(blank, nobody, voice, tmp_path / "o2" / "picture.mp4") is None
    assert nobody.checks[0].code == "no-face"
    with pytest.raises(DubbingError, match="run the track-faces step first"):
        render_dub(video, faces.model_copy(update={"landmarks": None}), voice, tmp_path / "x.mp4")


def test_the_render_saves_the_mouths_it_drew_and_they_are_what_the_picture_shows(tmp_path):
    """render_dub saves, beside the picture, the inner-lip gap it drew per frame: QA reads it instead of tracking
    the picture again. It follows what tracking the rendered picture finds (the new speech, not the old), and
    is refused once the picture is written again."""
    video = tmp_path / "talk.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "3", "-vf", "scale=360:360", "-an", str(video))
    layout = RunLayout(out=tmp_path / "out", name=video.stem)
    faces, _ = analyse(video, layout.faces_npz, lines=[(0.2, 2.8)])
    voice, spans = speech_at(tmp_path, 3.0, [(1.2, "hola amigo mío")])  # silent where he talks in the source
    result = render_dub(video, faces, voice, layout.picture("es"))
    assert result is not None and result.mouths is not None
    assert mouths_path(result.out) == layout.picture_mouths("es") and layout.picture_mouths("es").is_file()
    gap, fps, renderer = drawn_mouths(layout.picture("es"))
    assert renderer == "classical" and fps == pytest.approx(probe_video(video).fps_float)
    assert len(gap) == probe_video(layout.picture("es")).frames and np.isfinite(gap).all()
    tracked, _ = mouth_opening(layout.picture("es"))
    assert np.corrcoef(gap, tracked)[0, 1] > 0.8  # what was drawn is what the picture shows
    assert np.median(np.abs(gap - tracked)) < 0.03
    before = int(1.0 * fps)  # silent in the new audio: the mouth drawn closed, though he spoke there
    assert gap[:before].max() < 0.05 and gap[int(spans[0][0] * fps) : int(spans[0][1] * fps)].max() > 0.1

    ffmpeg("-i", str(video), "-t", "1", str(layout.picture("es")))  # the picture written again by something else
    with pytest.raises(DubbingError, match="another version"):
        drawn_mouths(layout.picture("es"))
    layout.picture_mouths("es").unlink()
    with pytest.raises(DubbingError, match="older run"):
        drawn_mouths(layout.picture("es"))


def test_a_renderer_that_does_not_say_what_it_drew_saves_nothing(tmp_path):
    """wav2lip paints the mouth with a network: no mouths file, and a stale one from an earlier render is gone."""
    video = tmp_path / "talk.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "1", "-vf", "scale=320:320", "-an", str(video))
    layout = RunLayout(out=tmp_path / "out", name=video.stem)
    faces, _ = analyse(video, layout.faces_npz)
    voice, _ = speech_at(tmp_path, 1.0, [(0.1, "hola")])
    assert render_dub(video, faces, voice, layout.picture("es")) is not None
    assert layout.picture_mouths("es").is_file()

    class Plain:  # renders like a backend with no `drawn`
        name = "plain"

        def prepare(self, clip):
            pass

        def render(self, frame, index, face, track):
            return frame

    BACKENDS["plain"] = Plain
    try:
        result = render_dub(video, faces, voice, layout.picture("es"), backend="plain")
    finally:
        del BACKENDS["plain"]
    assert result is not None and result.mouths is None and not layout.picture_mouths("es").exists()


def test_mouth_opening_from_pixels_or_from_tracked_landmarks(tmp_path):
    """Per frame, the active face's inner-lip gap: the same from the video as from the landmarks it gave, NaN
    where there is no face."""
    video = tmp_path / "talk.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "1.5", "-vf", "scale=320:320", "-an", str(video))
    gap, fps = mouth_opening(video)
    assert fps == pytest.approx(probe_video(video).fps_float) and len(gap) == probe_video(video).frames
    assert np.isfinite(gap).all() and 0 <= gap.min() and gap.max() > 0.02  # he talks: the mouth opens
    analyse(video, tmp_path / "faces.npz")
    tracked, tracked_fps = mouth_opening(None, landmarks=tmp_path / "faces.npz")
    assert tracked_fps == fps and np.allclose(tracked, gap)
    blank, _ = mouth_opening(make_video(tmp_path / "pattern.mp4", 1.0))
    assert len(blank) > 0 and np.isnan(blank).all()
    with pytest.raises(DubbingError, match="needs a video or tracked landmarks"):
        mouth_opening(None)


def test_covered_mouth_is_reported(tmp_path):
    """A skin-coloured patch over the mouth (like a hand): the mesh still places lips, the check notices."""
    clip = tmp_path / "face.mp4"
    ffmpeg("-i", str(media_file("vrt_face4.mp4")), "-t", "1.2", "-vf", "scale=480:480", str(clip))
    faces, data = analyse(clip, None)
    assert "mouth-covered" not in {c.code for c in faces.checks}
    pts = data.points[0, 0]
    (x0, y0), (x1, y1) = (
        pts[[61, 0, 17, 291]].min(axis=0).astype(int) - 12,
        pts[[61, 0, 17, 291]].max(axis=0).astype(int) + 12,
    )
    b, g, r = (int(v) for v in next(read_frames(clip, probe_video(clip)))[int(pts[205, 1]), int(pts[205, 0])])
    covered = tmp_path / "covered.mp4"
    box = f"drawbox=x={x0}:y={y0}:w={x1 - x0}:h={y1 - y0}:color=0x{r:02x}{g:02x}{b:02x}:t=fill"
    ffmpeg("-i", str(clip), "-vf", box, str(covered))
    faces, _ = analyse(covered, None)
    assert "mouth-covered" in {c.code for c in faces.checks}


def test_odd_size_444_video_comes_out_even_and_4_2_0(tmp_path):
    """Odd sizes cannot take the I420 fast path: they go through BGR whole frames, and come out as what every
    player decodes, 8-bit 4:2:0, one edge row and column more (tests/test_reliability_media.py checks the pixels)."""
    video = tmp_path / "odd.mp4"
    ffmpeg("-i", str(media_file("vrt_face1.mp4")), "-t", "1", "-vf", "scale=321:321", "-c:v", "libx264", "-pix_fmt",
           "yuv444p", "-an", str(video))  # fmt: skip
    speech = make_speech(tmp_path / "s.wav", "hello")
    result = lipsync_video(video, speech, tmp_path / "out.mp4")
    out = probe_video(tmp_path / "out.mp4")
    assert (out.width, out.height, out.pix_fmt) == (322, 322, "yuv420p") and result.animated_frames > 0
