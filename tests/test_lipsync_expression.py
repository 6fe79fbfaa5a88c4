"""Expression for dubs (`lipsync.expression`): the brows rise and the head dips where the dub stresses a word and
blinks are added only in the dub's pauses, away from the source's own; frames with none of them are rendered
exactly as without it."""

from __future__ import annotations

from itertools import islice

import numpy as np

from dubbing import backends
from dubbing.config import load_settings
from dubbing.lipsync import choose_active, load_audio, mouth_drive, render_faces
from dubbing.lipsync.avatar import BLINK_MIN_S
from dubbing.lipsync.expression import NOD_MIN, dip_head, dub_blinks, dub_expression, source_blinks
from dubbing.lipsync.faces import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, detect_photo, face_box, track_faces
from dubbing.lipsync.render import BACKENDS
from dubbing.lipsync.video import probe_video, read_frames
from tests.conftest import media_file
from tests.test_lipsync import speech_at


class Frames:
    """A writer that keeps the frames (BGR) in memory: the render's output, compared frame by frame."""

    yuv = False

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)


def test_brows_and_head_follow_the_dubs_stress_and_blinks_its_pauses(tmp_path):
    video = media_file("vrt_face1.mp4")
    stream = probe_video(video)
    fps = stream.fps_float
    frames = list(islice(read_frames(video, stream), int(3 * fps)))  # 3 s keep it cheap
    faces = track_faces(iter(frames), fps)
    choose_active(faces)
    drive_wav, _spans = speech_at(tmp_path, len(frames) / fps, [(0.1, "we are HERE"), (1.9, "GOOD")])
    speech = load_audio(drive_wav)
    drive = mouth_drive(speech, fps, faces.frames)
    moves = dub_expression(faces, speech, drive, fps)
    assert len(moves.brows) == len(moves.blink) == len(moves.nod) == faces.frames
    assert np.corrcoef(moves.brows, moves.nod)[0, 1] > 0.99 and 0 < moves.nod.max() <= 0.02  # with the brows, subtly
    # the brows rise while the dub speaks (its stressed words), not in its silences
    assert moves.brows.max() > 0.05 and 0 < moves.brows.max() <= 0.5
    assert drive.speech[int(np.argmax(moves.brows))] or moves.brows[~drive.speech].max() < moves.brows.max()
    # added blinks start in the dub's pauses, never within 2 s of one of the source's
    onsets = np.flatnonzero((moves.blink > 0) & ~np.concatenate([[False], moves.blink[:-1] > 0]))
    seen = source_blinks(faces)
    for t in onsets:
        assert not drive.speech[t]
        assert seen.size == 0 or np.abs(seen - t / fps).min() >= BLINK_MIN_S - 1 / fps

    def render(**moving: np.ndarray) -> list[np.ndarray]:
        out = Frames()
        renderer = backends.build(BACKENDS, "classical", "lipsync")
        render_faces(frames, lambda wanted: {i: frames[i] for i in wanted}, fps, faces, drive, speech, out,
                     renderer, **moving)  # type: ignore[arg-type]  # fmt: skip
        return out.frames

    plain, moved = render(), render(blink=moves.blink, brows=moves.brows)
    still = (moves.brows < 1 / 64) & (moves.blink <= 0.02)
    for t in np.flatnonzero(still)[::7]:
        assert np.array_equal(plain[t], moved[t])
    # at the highest raise, what changed lies around the eyes and brows, above the mouth
    t = int(np.argmax(moves.brows))
    changed = np.any(plain[t] != moved[t], axis=2)
    rows = np.flatnonzero(changed.any(axis=1))
    face = faces.face_of(t, int(faces.active[t]))
    assert face is not None and rows.size
    eyes_y = float(face[[LEFT_EYE_OUTER, RIGHT_EYE_OUTER], 1].mean())
    assert np.median(np.nonzero(changed)[0]) < eyes_y + 0.1 * (face[:, 1].max() - face[:, 1].min())
    # at the deepest dip the whole face sits lower by what was asked; where no dip is drawn nothing moves
    nodded = render(nod=moves.nod)
    t = int(np.argmax(moves.nod))
    before, after = detect_photo(plain[t]), detect_photo(nodded[t])
    assert before is not None and after is not None
    asked = float(moves.nod[t]) * (face_box(before)[3] - face_box(before)[1])
    assert asked > 1.0 and abs(float(np.median(after[:, 1] - before[:, 1])) - asked) < 0.3 * asked + 0.3
    assert abs(float(np.median(after[:, 0] - before[:, 0]))) < 0.5
    for t in np.flatnonzero(moves.nod < NOD_MIN)[::7]:
        assert np.array_equal(plain[t], nodded[t])


def test_a_face_at_the_frames_edge_does_not_dip():
    frame = next(iter(read_frames(media_file("vrt_face1.mp4"), probe_video(media_file("vrt_face1.mp4")))))
    face = detect_photo(frame)
    assert face is not None
    top = int(face_box(face)[1]) + 2  # the forehead cut by the frame's top edge: no room above the face
    cropped, moved = dip_head(frame[top:], face - [0, top], 0.012)
    assert np.array_equal(cropped, frame[top:]) and np.array_equal(moved, face - [0, top])


def test_added_blinks_fall_in_the_dubs_pauses_away_from_the_sources_own():
    fps, rng = 25.0, np.random.default_rng(3)
    rng_speech = np.random.default_rng(4)
    speech = np.concatenate([np.r_[np.ones(int(rng_speech.uniform(40, 90))), np.zeros(int(rng_speech.uniform(8, 30)))]
                             for _ in range(30)]).astype(bool)  # fmt: skip  # phrases of 1.6-3.6 s, pauses of 0.3-1.2 s
    seen = np.arange(5.0, len(speech) / fps, 11.0)  # the source blinks every 11 s
    starts = np.asarray(dub_blinks(speech, fps, seen, rng))
    assert starts.size >= len(speech) / fps / 9  # one every 9 s at least, besides the source's own
    assert all(not speech[int(t * fps)] for t in starts)
    assert np.abs(starts[:, None] - seen[None, :]).min() >= BLINK_MIN_S
    assert np.diff(starts).min() >= BLINK_MIN_S


def test_expression_is_off_by_default_and_a_switch():
    assert load_settings().lipsync.expression is False
