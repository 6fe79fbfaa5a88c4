"""Drawn faces: a mouth the user marks, and the `drawn` renderer on a drawn face the mesh tracks, open where the
dub speaks, measured from the output's own pixels; the box is validated (config and command line: one clear line)
and `dub inspect` draws it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dubbing import media, steps
from dubbing.config import load_settings
from dubbing.errors import DubbingError
from dubbing.layout import layout_for
from dubbing.lipsync import drawn_mouths, lipsync_video, load_audio, render_dub, track
from dubbing.lipsync.faces import FaceData
from dubbing.lipsync.inspect import MOUTH_BOX_COLOUR, contact_sheet
from dubbing.lipsync.marked import parse_mouth_box
from dubbing.lipsync.video import probe_video, read_frames
from dubbing.lipsync.visemes import envelope
from tests.cartoons import box_opening, cartoon_clip
from tests.test_cli import assert_one_line_error, dub
from tests.test_lipsync import RATE, speech_at


@pytest.fixture(scope="module")
def emoji_dub(tmp_path_factory):
    """An emoji face (the mesh finds none) dubbed through a marked box: speech, a pause, speech."""
    tmp = tmp_path_factory.mktemp("marked")
    drive, spans = speech_at(tmp, 3.0, [(0.2, "hello there"), (1.9, "see you")])
    source = tmp / "emoji.mp4"
    box = cartoon_clip("emoji", drive, source, 3.0)
    out = tmp / "out.mp4"
    result = lipsync_video(source, drive, out, mouth_box=box)
    return source, drive, spans, box, out, result


def test_a_marked_mouth_opens_where_the_speech_is_loud(emoji_dub):
    source, drive, spans, box, out, result = emoji_dub
    assert result.renderer == "marked" and result.frames == probe_video(source).frames
    stream = probe_video(out)
    opened = box_opening(list(read_frames(out, stream)), box)
    closed = box_opening(list(read_frames(source, probe_video(source))), box)
    fps = stream.fps_float
    loud, speech = envelope(load_audio(drive), RATE, fps, len(opened))
    assert np.corrcoef(opened, loud)[0, 1] > 0.6
    # where the drive rests between the phrases the mouth is as the drawing has it; while speaking it opens
    between = np.zeros(len(opened), bool)
    between[int(spans[0][1] * fps) : int(spans[1][0] * fps)] = True
    rest = between & (loud < 0.01)
    assert rest.sum() >= 5
    assert np.abs(opened[rest] - closed[rest]).max() < 1.5
    assert np.median(opened[speech]) > np.median(closed[speech]) + 0.1 * box[2]
    # what the renderer says it drew is what the picture shows
    assert result.mouths is not None and np.corrcoef(result.mouths, opened)[0, 1] > 0.9


def test_outside_the_box_the_picture_is_the_source(emoji_dub):
    source, _drive, _spans, box, out, _result = emoji_dub
    x, y, w, h = box
    before = list(read_frames(source, probe_video(source)))
    after = list(read_frames(out, probe_video(out)))
    outside = np.ones(before[0].shape[:2], bool)
    outside[y - 4 : y + h + w, x - 4 : x + w + 4] = False  # the mouth, and the chin that drops with it
    for a, b in zip(before[::10], after[::10], strict=True):
        assert np.abs(a[outside].astype(int) - b[outside].astype(int)).mean() < 1.0  # re-encoding only


def test_a_dub_with_no_face_found_animates_the_marked_box_and_saves_what_it_drew(tmp_path, emoji_dub):
    source, drive, _spans, box, _out, _result = emoji_dub
    tracked = track(source, tmp_path / "faces.npz")
    assert tracked.faces == 0
    assert render_dub(source, tracked, drive, tmp_path / "none.mp4") is None  # nothing marked: the picture is kept
    result = render_dub(source, tracked, drive, tmp_path / "picture.mp4", mouth_box=box)
    assert result is not None and result.renderer == "marked"
    gap, fps, renderer = drawn_mouths(result.out)  # what QA reads
    assert renderer == "marked" and fps == tracked.fps and len(gap) == result.frames and np.nanmax(gap) > 0.1


def test_the_track_faces_step_says_the_marked_box_is_animated_and_tracks_no_face(tmp_path, emoji_dub):
    source, _drive, _spans, box, _out, _result = emoji_dub
    settings = load_settings()
    marked = settings.model_copy(update={"lipsync": settings.lipsync.model_copy(update={"mouth_box": box})})
    layout = layout_for(source, tmp_path / "out")
    layout.source_dir.mkdir(parents=True)
    plain = steps.track_faces(source, media.probe(source), settings, layout)
    tracked = steps.track_faces(source, media.probe(source), marked, layout)
    assert plain is not None and tracked is not None
    assert plain.checks[0].code == "no-face" and "nothing to lipsync" in plain.checks[0].message
    assert [c.code for c in tracked.checks] == ["marked-mouth"] and "marked mouth box" in tracked.checks[0].message
    empty = FaceData.load(layout.tracked_faces_npz)  # what the steps after read: every frame, no face
    assert empty.frames == tracked.frames == plain.frames and not (empty.ids >= 0).any()


def test_the_drawn_renderer_opens_a_tracked_cartoon_mouth_where_the_speech_is_loud(tmp_path):
    drive, _spans = speech_at(tmp_path, 3.0, [(0.3, "hello there"), (1.8, "see you")])
    source = tmp_path / "cartoon.mp4"
    box = cartoon_clip("flat cartoon", drive, source, 3.0)
    result = lipsync_video(source, drive, tmp_path / "out.mp4", backend="drawn")
    assert result.renderer == "drawn" and result.animated_frames == result.frames  # the mesh finds this face
    opened = box_opening(list(read_frames(result.out, probe_video(result.out))), box)
    loud, _speech = envelope(load_audio(drive), RATE, probe_video(source).fps_float, len(opened))
    assert np.corrcoef(opened, loud)[0, 1] > 0.6
    assert result.mouths is not None and np.corrcoef(result.mouths, opened)[0, 1] > 0.8


def test_mouth_box_validates(tmp_path):
    assert parse_mouth_box("10,20,100,40") == (10, 20, 100, 40)
    for bad in ("10,20,100", "a,b,c,d", "10,20,0,40", "-1,0,10,10"):
        with pytest.raises(DubbingError, match="mouth box"):
            parse_mouth_box(bad)
    config = tmp_path / "bad.yaml"
    config.write_text("lipsync:\n  mouth_box: [10, 20, 2, 40]\n")
    with pytest.raises(DubbingError, match=r"lipsync\.mouth_box.*width and height at least 4"):
        load_settings(user_config=config)
    config.write_text("lipsync:\n  mouth_box: [10, 20, 100, 40]\n")
    assert load_settings(user_config=config).lipsync.mouth_box == (10, 20, 100, 40)


def test_a_box_outside_the_frame_is_one_line(tmp_path, emoji_dub):
    source, drive, *_ = emoji_dub
    assert_one_line_error(dub("lipsync", str(source), str(drive), "--out", str(tmp_path / "o.mp4"),
                              "--mouth-box", "600,400,100,40"), "reaches outside the 640x480 frame")  # fmt: skip
    assert_one_line_error(dub("inspect", str(source), "--mouth-box", "1,2,3"), "expected X,Y,W,H")


def test_inspect_says_a_mouth_can_be_marked_and_lipsync_animates_it(tmp_path, emoji_dub):
    source, drive, _spans, box, _out, _result = emoji_dub
    proc = dub("inspect", str(source), "--out", str(tmp_path / "sheet.png"))
    assert proc.returncode == 0 and "no face found" in proc.stderr and "--mouth-box X,Y,W,H" in proc.stderr
    marked = ",".join(map(str, box))
    proc = dub("inspect", str(source), "--out", str(tmp_path / "sheet.png"), "--mouth-box", marked)
    assert proc.returncode == 0 and f"mouth box {marked}: animated in every frame" in proc.stdout
    proc = dub("lipsync", str(source), str(drive), "--out", str(tmp_path / "o.mp4"), "--mouth-box", marked)
    assert proc.returncode == 0 and "(marked)" in proc.stdout and (tmp_path / "o.mp4").stat().st_size > 0


def test_inspect_draws_the_marked_box(tmp_path):
    frame = np.full((240, 320, 3), 128, np.uint8)
    faces = FaceData(
        points=np.full((1, 1, 478, 2), np.nan, np.float32),
        ids=np.full((1, 1), -1, np.int32),
        yaw=np.full((1, 1), np.nan, np.float32),
        mouth_contrast=np.full((1, 1), np.nan, np.float32),
        cuts=[],
        fps=25.0,
        width=320,
        height=240,
        active=np.full(1, -1, np.int32),
    )
    plain = cv2.imread(str(contact_sheet({0: frame}, faces, tmp_path / "plain.png")))
    marked = cv2.imread(str(contact_sheet({0: frame}, faces, tmp_path / "box.png", mouth_box=(100, 150, 120, 40))))
    drawn = np.all(marked == MOUTH_BOX_COLOUR, axis=2) & ~np.all(plain == MOUTH_BOX_COLOUR, axis=2)
    rows, cols = np.nonzero(drawn)
    scale = marked.shape[1] / 320  # about: the tile fills the sheet's width less its gutters
    assert rows.size and abs((cols.max() - cols.min()) / scale - 120) < 12
