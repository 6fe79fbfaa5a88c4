"""Expression for dubs (`lipsync.expression`, off by default): the dub's voice, not the original take's, raises
the brows, dips the head and times added blinks, subtly.

The pieces are the avatar's (avatar.py: `loudness`, `brow_track`, `BrowLift`, `blink_times`, `blink_closure`),
one piece of code for photos and videos. A filmed face already moves, so the brows rise on the dub's stressed
words (a word louder than its phrase) by half the avatar's height, and the head dips with them by at most
DUB_NOD of the face's height (the face moves as one inside a fixed frame around it). The source's own blinks
stay (taking one out would mean painting open eyes over closed ones); blinks are added only where the dub pauses
and the source does not blink within BLINK_MIN_S (2 s) of it, so the rate stays human and the new ones fall at the
dub's phrase ends (a blink due up to DUB_TO_PAUSE_S from a pause moves to it; one due mid-phrase further from any
is not added).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dubbing.lipsync.avatar import (
    BLINK_MIN_S,
    BrowLift,
    blink_closure,
    blink_times,
    brow_track,
    loudness,
    pause_starts,
)
from dubbing.lipsync.faces import FACE_OVAL, FaceData, face_box
from dubbing.lipsync.render import BROW_L, BROW_R, clip_box, triangulate, warp_mesh
from dubbing.lipsync.visemes import MouthDrive

DUB_BROWS = 0.5  # of the avatar's brow raise: a filmed face already moves
DUB_NOD = 0.012  # at full emphasis the head dips this much of the face's height (3 px for a 250 px face)
NOD_MIN = 0.002  # a dip under this (half a pixel for a 250 px face) is not drawn
LIDS = [(159, 145, 33, 133), (386, 374, 263, 362)]  # per eye: upper lid, lower lid, corner, corner (mesh indices)
DUB_TO_PAUSE_S = 3.0  # a blink due this close to a pause of the dub moves to it (the rest are not added)
SOURCE_BLINK = 0.75  # eye openness under this much of its median: a blink (the tracker's smoothing halves one)


@dataclass
class DubExpression:
    """Per frame: eye closure of the added blinks in [0, 1], the brow raise in [0, 1], and the head's dip in face
    heights."""

    blink: np.ndarray
    brows: np.ndarray
    nod: np.ndarray


def eye_openness(points: np.ndarray) -> float:
    """Lid gap over eye width, both eyes averaged (landmarks (478, 2))."""
    return float(
        np.mean(
            [abs(points[up, 1] - points[lo, 1]) / (abs(points[b, 0] - points[a, 0]) + 1e-6) for up, lo, a, b in LIDS]
        )
    )


def source_blinks(faces: FaceData) -> np.ndarray:
    """Seconds where the animated face's eyes start to close in the source (its eye openness dips under
    SOURCE_BLINK of its median)."""
    opened = np.full(faces.frames, np.nan)
    for t in range(min(faces.frames, len(faces.active))):
        face = faces.face_of(t, int(faces.active[t]))
        if face is not None:
            opened[t] = eye_openness(face)
    if np.isnan(opened).all():
        return np.zeros(0)
    shut = opened < SOURCE_BLINK * np.nanmedian(opened)
    onsets = np.flatnonzero(shut & ~np.concatenate([[False], shut[:-1]]))
    return onsets / faces.fps


def dub_expression(faces: FaceData, speech: np.ndarray, drive: MouthDrive, fps: float, seed: int = 0) -> DubExpression:
    """The brows, head dips and added blinks of a dub: brows and dips from the dub `speech`'s stress (speakers
    raise their brows and nod on the words they stress), blinks at the pauses of the dub (`drive.speech`) away
    from the source's own; the same for the same seed."""
    frames = drive.frames
    rng = np.random.default_rng(seed)
    stress = brow_track(loudness(speech, fps, frames), fps)
    starts = dub_blinks(drive.speech, fps, source_blinks(faces), rng)
    return DubExpression(
        blink=blink_closure(frames, fps, starts, rng),
        brows=(DUB_BROWS * stress).astype(np.float32),
        nod=(DUB_NOD * stress).astype(np.float32),
    )


def dub_blinks(speech: np.ndarray, fps: float, seen: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Start times (s) of the blinks a dub adds: the avatar's (`blink_times`, drawn to the pauses of `speech`,
    per-frame bool, from up to DUB_TO_PAUSE_S away), kept where they fall in a pause and BLINK_MIN_S away from the
    source's own (`seen`, s)."""
    frames = len(speech)
    quiet = ~np.asarray(speech, bool)
    return [
        t
        for t in blink_times(frames / fps, rng, pause_starts(speech, fps), DUB_TO_PAUSE_S)
        if quiet[min(frames - 1, int(t * fps))] and (seen.size == 0 or np.abs(seen - t).min() >= BLINK_MIN_S)
    ]


def raise_brows(image: np.ndarray, face: np.ndarray, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """`image` with the face's brows raised by `amount` (the avatar's `BrowLift`), and the landmarks with them
    (the blink's eye mesh holds the brows where they now are)."""
    lift = BrowLift(image, face)
    moved = face.copy()
    moved[BROW_L + BROW_R] += float(np.clip(amount, 0.0, 1.0)) * lift.shift(1.0)
    return lift(amount), moved


def dip_head(image: np.ndarray, face: np.ndarray, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """`image` with the face moved down by `amount` face heights, and the landmarks with it: the face oval moves
    as one, a rectangle around it (inside the box the lipsync render works in) stays put, and the skin, hair and
    background between are stretched or pressed smoothly. Unchanged when the frame's edge leaves no room."""
    x0, y0, x1, y1 = face_box(face)
    fw, fh = x1 - x0, y1 - y0
    shift = np.array([0.0, float(amount) * fh])
    h, w = image.shape[:2]
    left, top = max(0.0, x0 - 0.35 * fw), max(0.0, y0 - 0.08 * fh)
    right, bottom = min(w - 1.0, x1 + 0.35 * fw), min(h - 1.0, y1 + 0.45 * fh)
    room = min(x0 - left, right - x1, y0 - top, bottom - y1)
    if abs(shift[1]) < 0.25 or room < 3 * abs(shift[1]) + 2:
        return image, face
    side = np.linspace(0.0, 1.0, 6)[:-1]
    ring = np.concatenate(
        [
            np.stack([left + (right - left) * side, np.full(5, top)], axis=1),
            np.stack([np.full(5, right), top + (bottom - top) * side], axis=1),
            np.stack([right - (right - left) * side, np.full(5, bottom)], axis=1),
            np.stack([np.full(5, left), bottom - (bottom - top) * side], axis=1),
        ]
    )
    oval = face[FACE_OVAL].astype(np.float64)
    src = np.concatenate([oval, ring])
    dst = np.concatenate([oval + shift, ring])
    box = clip_box(ring, w, h, pad=0)
    if box is None:
        return image, face
    patch, covered = warp_mesh(image, src, dst, triangulate(src), box)
    bx0, by0, bx1, by1 = box
    out = image.copy()
    region = out[by0:by1, bx0:bx1]
    region[covered] = patch[covered]
    return out, face + shift
