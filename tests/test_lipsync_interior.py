"""The mouth interior of the classical renderer: the bank of the clip's own open mouths chooses the one closest to
the wanted opening and holds its choice; a photo's painted interior has depth, teeth and grain, no flat fill."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from dubbing.lipsync import DRIVE_RATE, choose_active, load_audio, mouth_drive, track_video
from dubbing.lipsync.avatar import load_portrait
from dubbing.lipsync.faces import face_axes, mouth_gap
from dubbing.lipsync.interior import INNER, BankFrame, InteriorBank, painted_interior, shape_features, spread_picks
from dubbing.lipsync.render import MESH, ClassicalRenderer, Clip, target_mesh
from dubbing.lipsync.video import read_frames, read_frames_at
from tests.conftest import media_file


def bank_of(gaps: list[float], poses: list[np.ndarray] | None = None) -> InteriorBank:
    blank = np.zeros((4, 4, 3), np.uint8)
    poses = poses or [np.zeros(30)] * len(gaps)
    return InteriorBank(
        [
            BankFrame(k, blank, np.zeros((478, 2)), g, 0.5, pose)
            for k, (g, pose) in enumerate(zip(gaps, poses, strict=True))
        ]
    )


def test_the_bank_chooses_the_opening_closest_to_the_wanted_one():
    gaps = [0.09, 0.14, 0.2, 0.27, 0.36]
    for wanted in (0.1, 0.18, 0.25, 0.4):
        bank = bank_of(gaps)
        chosen = bank.choose(wanted, 0.5, np.zeros(30))
        assert abs(chosen.gap - wanted) == min(abs(g - wanted) for g in gaps)


def test_the_choice_holds_instead_of_switching_every_frame():
    bank = bank_of([0.2, 0.24])
    wanted = [0.19, 0.23] * 30  # every frame would prefer the other source; both are open enough for either
    chosen = [bank.choose(w, 0.5, np.zeros(30)).index for w in wanted]
    runs = [len(list(group)) for _key, group in itertools.groupby(chosen)]
    assert len(runs) <= len(wanted) // bank.hold
    assert min(runs[:-1], default=bank.hold) >= bank.hold


def test_a_closed_mouth_lets_the_next_opening_choose_afresh():
    bank = bank_of([0.2, 0.24])
    assert bank.choose(0.19, 0.5, np.zeros(30)).index == 0
    assert bank.choose(0.23, 0.5, np.zeros(30)).index == 0  # held
    bank.rest()  # the mouth closed: a change is hidden
    assert bank.choose(0.23, 0.5, np.zeros(30)).index == 1


def test_a_source_is_never_stretched_far_while_a_more_open_one_exists():
    pose = np.full(30, 0.2)
    bank = bank_of([0.1, 0.12, 0.3], [pose, pose, np.zeros(30)])
    assert bank.choose(0.25, 0.5, pose).index == 2  # a far pose, but the others would be stretched 2x
    bank.rest()
    assert bank.choose(0.11, 0.5, np.zeros(30)).gap >= 0.85 * 0.11
    assert bank.choose(0.3, 0.5, np.zeros(30)).index == 2  # no longer open enough: switches at once


def test_the_bank_spreads_over_opening():
    rng = np.random.default_rng(1)
    gaps = rng.uniform(0.08, 0.4, 200)
    feats = shape_features(gaps, np.full(200, 0.5), np.zeros((200, 30)))
    picks = spread_picks(feats, int(np.argmax(gaps)), 6)
    assert len(picks) == 6
    assert gaps[picks].min() < 0.1 and gaps[picks].max() == gaps.max()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """A real face (a frame of vrt_face1) and its landmarks with the mouth opened by the renderer's own mesh."""
    path = tmp_path_factory.mktemp("photo") / "face.png"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-ss", "0.5", "-i", str(media_file("vrt_face1.mp4")),
                    "-frames:v", "1", "-vf", "scale=360:360", str(path)], check=True)  # fmt: skip
    portrait = load_portrait(Path(path))
    _src, dst = target_mesh(portrait.landmarks.astype(np.float64), 0.3, 0.0, 0.0)
    opened = portrait.landmarks.astype(np.float64).copy()
    opened[MESH] = dst[: len(MESH)]
    return portrait.image, opened


def opening(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[INNER]).astype(np.int32)], 1)
    return cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)


def test_a_photos_painted_interior_has_no_flat_region(photo):
    image, pts = photo
    assert mouth_gap(pts) > 0.25
    interior = painted_interior(image, pts, seed=3)
    mask = opening(image, pts)
    assert mask.sum() > 200
    grey = cv2.cvtColor(interior.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (5, 5))
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (5, 5)) - mean * mean, 0))
    assert (std[mask] < 1.0).mean() < 0.05  # no flat fill anywhere
    values = interior[mask]
    assert len(np.unique(np.round(values / 16), axis=0)) > 8  # many colours, not one
    # depth and teeth: the band under the upper lip (teeth) is far lighter than the middle of the opening (throat)
    _right, down, scale = face_axes(pts)
    top = np.round(pts[13] + down * scale * 0.03).astype(int)
    middle = np.round((pts[13] + pts[14]) / 2).astype(int)
    assert grey[top[1], top[0] - 2 : top[0] + 3].mean() > grey[middle[1], middle[0] - 2 : middle[0] + 3].mean() + 40


def test_a_photos_teeth_are_separated_not_a_uniform_strip(photo):
    image, pts = photo
    interior = painted_interior(image, pts, seed=3)
    grey = cv2.cvtColor(interior.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    _right, down, scale = face_axes(pts)
    row = pts[[80, 81, 82, 13, 312, 311, 310]] + down * scale * 0.035  # across the upper teeth
    xs = np.arange(int(row[0, 0]), int(row[-1, 0]))
    ys = np.round(np.interp(xs, row[:, 0], row[:, 1])).astype(int)
    line = cv2.GaussianBlur(grey, (3, 3), 0)[ys, xs]
    dips = [i for i in range(2, len(line) - 2) if line[i] < min(line[i - 2], line[i + 2]) - 6]
    assert len({d // 3 for d in dips}) >= 3  # the midline and the edges of several teeth


def test_on_a_real_clip_the_bank_spreads_and_its_choice_holds():
    """Katie Hill re-voiced with another clip's speech: the bank holds several of her own open mouths over a range
    of openings, every choice is open enough for the wanted mouth (or the most open there is), and the source
    changes far less often than every frame."""
    video, speech = media_file("sadtalker_WDA_KatieHill.mp4"), media_file("sadtalker_RD_Radio31_000.wav")
    faces, stream = track_video(video)
    choose_active(faces)
    audio = load_audio(speech)
    drive = mouth_drive(audio, stream.fps_float, faces.frames)
    tracks = {int(k): faces.track_frames(int(k)) for k in np.unique(faces.active) if k >= 0}
    renderer = ClassicalRenderer()
    clip = Clip(
        stream.fps_float, drive, audio, DRIVE_RATE, tracks, lambda wanted: read_frames_at(video, stream, wanted)
    )
    renderer.prepare(clip)
    (state,) = [renderer.state[k] for k in tracks]
    bank = state.bank
    assert bank is not None and len(bank.frames) >= 4
    gaps = np.array([f.gap for f in bank.frames])
    assert gaps.min() >= renderer.min_open_gap and gaps.max() - gaps.min() > 0.08
    chosen = []
    for t, frame in enumerate(read_frames(video, stream)):
        track = int(faces.active[t])
        renderer.render(frame, t, faces.face_of(t, track), track)
        if bank.current is not None:
            wanted = mouth_gap(renderer.drawn)
            assert bank.frames[bank.current].gap >= bank.stretch * wanted - 1e-6 or bank.current == int(np.argmax(gaps))
        chosen.append(bank.current)
    shown = [c for c in chosen if c is not None]
    changes = sum(a is not None and b is not None and a != b for a, b in zip(chosen, chosen[1:], strict=False))
    assert len(shown) > 20
    assert changes <= len(shown) / bank.hold  # at most one change per `hold` frames shown
