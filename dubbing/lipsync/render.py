"""Mouth re-rendering. Backends implement `Renderer`: prepared once per video, then called frame by frame.

`classical` (offline default) warps lips and jaw from tracked landmarks with a piecewise-affine mesh over
the lower face only (cost grows with the face, not the frame), takes the mouth interior from the clip's own
open mouths (or paints one for a photo; see `interior.py`), and leaves everything outside the mesh untouched.
`wav2lip` runs a Wav2Lip network exported to TorchScript or ONNX (GPU when available) through the same
interface; no such weights ship in any registry package, so it needs `lipsync.options.model_path`.
Renderers are built by name with `dubbing.backends.build(BACKENDS, ...)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from pydantic import Field
from scipy.spatial import Delaunay

from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.lipsync.faces import (
    LOWER_INNER,
    LOWER_OUTER,
    UPPER_INNER,
    UPPER_OUTER,
    face_axes,
    face_box,
    mouth_gap,
)
from dubbing.lipsync.interior import (
    INNER,
    ROW_TRIS,
    BankFrame,
    InteriorBank,
    inner_width,
    interior_rows,
    painted_interior,
    relight,
    shape_features,
    sharpness,
    spread_picks,
    teeth_extent,
    tone,
)
from dubbing.lipsync.marked import DrawnRenderer
from dubbing.lipsync.video import pixels_differ
from dubbing.lipsync.visemes import MouthDrive
from dubbing.media import resample

log = logging.getLogger(__name__)


@dataclass
class Clip:
    """What a renderer may use about the whole video before the first frame."""

    fps: float
    drive: MouthDrive
    audio: np.ndarray  # driving speech, mono float32
    audio_rate: int
    tracks: dict[int, tuple[np.ndarray, np.ndarray]]  # track id -> (frame indices, landmarks (n, 478, 2))
    frames_at: Callable[[list[int]], dict[int, np.ndarray]]  # read source frames by index (reference mouths)
    blink: np.ndarray | None = None  # per-frame eye closure in [0, 1] (photos); None leaves the eyes alone


class Renderer(Protocol):
    """Re-animate the mouth of one face per frame.

    `prepare` is called once with the whole clip's drive signals and track summaries; `render` then gets
    each frame in order with the landmarks (478, 2) of the face to animate (None: no face, return the
    frame) and that face's track id, and returns the new frame (same size, BGR uint8).

    A renderer that knows the mouth it drew also has `drawn`: after each `render`, the landmarks (478, 2) of the
    face as it now is in the frame (None: no face). The stage saves their mouth opening beside the picture, so QA
    reads it instead of tracking the picture again; a renderer without it (wav2lip: a network paints the mouth)
    leaves QA to track the picture.
    """

    name: str

    def prepare(self, clip: Clip) -> None: ...

    def render(self, frame: np.ndarray, index: int, face: np.ndarray | None, track: int) -> np.ndarray: ...


# ---------------------------------------------------------------- mesh warping


def _affines(src_tris: np.ndarray, dst_tris: np.ndarray) -> np.ndarray:
    """(n, 2, 3) affine maps taking each dst triangle onto its src triangle."""
    n = len(dst_tris)
    d = np.concatenate([dst_tris.transpose(0, 2, 1), np.ones((n, 1, 3))], axis=1)  # (n, 3, 3)
    det = np.linalg.det(d)
    bad = np.abs(det) < 1e-6
    d[bad] = np.eye(3)
    s = src_tris.transpose(0, 2, 1)  # (n, 2, 3)
    a = s @ np.linalg.inv(d)
    a[bad] = [[1, 0, 0], [0, 1, 0]]
    return a


def warp_mesh(
    image: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    tris: np.ndarray,
    box: tuple[int, int, int, int],
    interpolation: int = cv2.INTER_LINEAR,
) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-affine warp with one remap: the `box` region of the output where `dst` triangles are drawn
    from where their `src` triangles lie in `image`. Returns the patch and its coverage mask (bool)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    labels = np.zeros((h, w), np.int32)
    local = np.round((dst[tris] - [x0, y0]) * 16).astype(np.int32)
    for i, tri in enumerate(local, start=1):
        cv2.fillConvexPoly(labels, tri, i, lineType=cv2.LINE_8, shift=4)
    maps = np.concatenate([np.array([[[1, 0, 0], [0, 1, 0]]], np.float64), _affines(src[tris], dst[tris])])
    # each of the six coefficients gathered per pixel from its own row: 2.6 times faster than gathering (h, w, 2, 3)
    a, b, c, d, e, f = (row.take(labels) for row in maps.astype(np.float32).reshape(len(maps), 6).T)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    mapx = a * xs + b * ys + c
    mapy = d * xs + e * ys + f
    patch = cv2.remap(image, mapx, mapy, interpolation, borderMode=cv2.BORDER_REPLICATE)
    return patch, labels > 0


def clip_box(points: np.ndarray, width: int, height: int, pad: int = 2) -> tuple[int, int, int, int] | None:
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return (x0, y0, x1, y1) if x1 - x0 > 4 and y1 - y0 > 4 else None


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------- the lower-face mesh

LIPS = sorted(set(UPPER_OUTER + LOWER_OUTER + UPPER_INNER + LOWER_INNER))
AROUND_MOUTH = [2, 98, 327, 164, 167, 393, 165, 391, 92, 322, 186, 410, 216, 436, 206, 426, 205, 425, 36, 266, 203,
                423, 50, 280, 187, 411, 147, 376, 213, 433, 192, 416, 57, 287, 43, 273, 106, 335, 182, 406, 83, 313,
                18, 200, 199, 175, 152, 201, 421, 208, 428, 32, 262, 171, 396, 140, 369, 148, 377, 176, 400, 149,
                378, 150, 379, 136, 365, 172, 397, 58, 288, 132, 361, 212, 432, 202, 422, 210, 430, 204, 424, 194,
                418, 135, 364, 138, 367, 214, 434, 169, 394, 170, 395, 211, 431, 215, 435, 177, 401]  # fmt: skip
MESH = LIPS + [i for i in dict.fromkeys(AROUND_MOUTH) if i not in LIPS]
RING_N = 24
_POS = {idx: i for i, idx in enumerate(MESH)}


def _face_coords(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mouth centre, right and down axes, scale."""
    right, down, scale = face_axes(pts)
    centre = (pts[61] + pts[291]) / 2
    return centre, right, down, scale


def _ring(centre: np.ndarray, right: np.ndarray, down: np.ndarray, uv: np.ndarray, scale: float) -> np.ndarray:
    """Fixed points on a rounded box around the mesh (margin 25%): they keep the warp local."""
    u_max = np.abs(uv[:, 0]).max() * 1.25 + 0.05 * scale
    v_up = max(-uv[:, 1].min(), 0.0) * 1.15 + 0.05 * scale
    v_down = uv[:, 1].max() * 1.35 + 0.1 * scale
    ang = np.linspace(0, 2 * np.pi, RING_N, endpoint=False)
    c, s = np.cos(ang), np.sin(ang)
    u = u_max * np.sign(c) * np.abs(c) ** 0.5
    v = np.where(s > 0, v_down, v_up) * np.sign(s) * np.abs(s) ** 0.5
    return centre + u[:, None] * right + v[:, None] * down


def mesh_points(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source mesh (MESH landmarks then the fixed ring) and the landmarks' face coordinates (u, v)."""
    centre, right, down, scale = _face_coords(pts)
    rel = pts[MESH] - centre
    uv = np.stack([rel @ right, rel @ down], axis=1)
    return np.concatenate([pts[MESH], _ring(centre, right, down, uv, scale)]), uv


def target_mesh(pts: np.ndarray, gap: float, wide: float, rounding: float) -> tuple[np.ndarray, np.ndarray]:
    """Source and destination meshes for a mouth with inner-lip opening `gap` (in eye-distance units).

    The shape is set relative to the upper lip, which stays where it is: lower inner lip = upper inner lip
    plus the opening (a sine profile corner to corner), lower outer lip keeps the lip's own thickness,
    chin and jaw follow the change of opening with a weight that fades sideways and upwards."""
    src, uv = mesh_points(pts)
    centre, right, down, scale = _face_coords(pts)
    dst = src.copy()
    n = len(MESH)
    # width and rounding: lateral scaling of the lips, half as much on the skin around them
    k = float(np.clip(1 + 0.10 * wide - 0.15 * rounding - 0.04 * min(gap / 0.3, 1.0), 0.8, 1.15))
    near = 1 - _smoothstep(np.hypot(uv[:, 0], uv[:, 1]) / scale, 0.35, 0.7)
    lat = np.where(np.isin(MESH, LIPS), 1.0, 0.5 * near)
    dst[:n] += ((k - 1) * lat * uv[:, 0])[:, None] * right
    own = mouth_gap(pts)
    delta = (gap - own) * scale  # pixels the lower lip moves down
    # jaw: points below the mouth corners follow
    v, u = uv[:, 1] / scale, np.abs(uv[:, 0]) / scale
    jaw = _smoothstep(v, 0.0, 0.3) * (1 - _smoothstep(u, 0.4, 0.85)) * 0.85
    jaw[np.isin(MESH, LIPS)] = 0.0
    dst[:n] += (jaw * delta)[:, None] * down
    # lips relative to the upper lip
    profile = np.sin(np.linspace(0, np.pi, len(UPPER_INNER))) ** 0.8
    for j in range(1, len(UPPER_INNER) - 1):
        up, lo, lo_out = _POS[UPPER_INNER[j]], _POS[LOWER_INNER[j]], _POS[LOWER_OUTER[j]]
        thickness = src[lo_out] - src[lo]
        dst[lo] = dst[up] + gap * scale * profile[j] * down
        dst[lo_out] = dst[lo] + thickness
    for corner in (61, 291, 78, 308):
        dst[_POS[corner]] += 0.12 * delta * down
    return src, dst


def triangulate(points: np.ndarray) -> np.ndarray:
    return Delaunay(points).simplices.astype(np.int32)


def open_topology(pts: np.ndarray) -> np.ndarray:
    """Triangles of the mesh, computed once per track on an open mouth so the lips get separate triangles."""
    _src, dst = target_mesh(pts, max(mouth_gap(pts), 0.35), 0.0, 0.0)
    return triangulate(dst)


def inner_polygon(mesh: np.ndarray) -> np.ndarray:
    return np.concatenate([mesh[[_POS[i] for i in UPPER_INNER]], mesh[[_POS[i] for i in LOWER_INNER[-2:0:-1]]]])


# ---------------------------------------------------------------- eyes (blinks)

EYE_L_UP, EYE_L_LO = [33, 246, 161, 160, 159, 158, 157, 173, 133], [33, 7, 163, 144, 145, 153, 154, 155, 133]
EYE_R_UP, EYE_R_LO = [263, 466, 388, 387, 386, 385, 384, 398, 362], [263, 249, 390, 373, 374, 380, 381, 382, 362]
BROW_L, BROW_R = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55], [300, 293, 334, 296, 336, 276, 283, 282, 295, 285]


def eye_meshes(pts: np.ndarray, closure: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per eye, (src, dst) meshes with the upper lid lowered `closure` of the way onto the lower lid."""
    out = []
    for upper, lower, brow in ((EYE_L_UP, EYE_L_LO, BROW_L), (EYE_R_UP, EYE_R_LO, BROW_R)):
        idx = list(dict.fromkeys(upper + lower + brow))
        src = pts[idx]
        centre = src[: len(upper)].mean(axis=0)
        radius = np.abs(src - centre).max(axis=0) * 1.6 + 2
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ring = centre + np.stack([np.cos(ang), np.sin(ang)], axis=1) * radius
        src = np.concatenate([src, ring])
        dst = src.copy()
        for j in range(1, len(upper) - 1):
            a, b = idx.index(upper[j]), idx.index(lower[j])
            dst[a] = src[a] + closure * 0.92 * (src[b] - src[a])
        out.append((src, dst))
    return out


# ---------------------------------------------------------------- the classical renderer


@dataclass
class _TrackState:
    max_gap: float
    tris: np.ndarray
    bank: InteriorBank | None  # the face's own open mouths (None: it never opens; the interior is painted)
    eye_tris: list[np.ndarray] = field(default_factory=list)
    closed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (crop, landmarks, pose)


def match_grain(patch: np.ndarray, source: np.ndarray, seed: int) -> None:
    """Resampling smooths sensor noise and compression grain; put back what the source region had, on the
    changed pixels only, so the mouth does not look cleaner than the face around it."""
    changed = pixels_differ(patch, source)
    if changed.sum() < 16:
        return

    def noise(img: np.ndarray) -> float:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float(np.std((grey - cv2.GaussianBlur(grey, (3, 3), 0))[changed]))

    missing = noise(source) ** 2 - noise(patch) ** 2
    if missing > 0.25:
        grain = np.random.default_rng(seed).normal(0.0, np.sqrt(missing), changed.shape).astype(np.float32)
        patch[changed] = np.clip(patch[changed] + grain[changed][:, None], 0, 255).astype(np.uint8)


# Rigid points (eyes, nose, brows, face outline above the mouth): their layout in face coordinates is the pose.
POSE_POINTS = [33, 133, 362, 263, 1, 2, 98, 327, 168, 6, 70, 300, 234, 454, 10]


def pose_signature(pts: np.ndarray) -> np.ndarray:
    centre, right, down, scale = _face_coords(pts)
    rel = pts[POSE_POINTS] - centre
    return np.stack([rel @ right, rel @ down], axis=1).ravel() / scale


def _crop(frame: np.ndarray, pts: np.ndarray, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = face_box(pts)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
    x1, y1 = min(frame.shape[1], int(x1 + mx)), min(frame.shape[0], int(y1 + my))
    return frame[y0:y1, x0:x1].copy(), pts - [x0, y0]


class ClassicalRenderer:
    """Landmark-driven warp of lips and jaw; interior from the clip's own open mouths; no weights needed."""

    name = "classical"
    capabilities: frozenset[str] = frozenset()

    class Options(NoOptions):
        strength: float = Field(1.0, ge=0.0, le=1.5)  # scale of the mouth opening

    def __init__(
        self,
        strength: float = 1.0,
        min_open_gap: float = 0.08,
        closed_bank: int = 6,
        closed_gap: float = 0.015,
        open_bank: int = 8,
    ) -> None:
        self.strength = strength
        self.min_open_gap = min_open_gap  # a reference mouth must open at least this much to lend its interior
        self.open_bank = open_bank  # open-mouth frames kept per face, to lend their teeth and tongue
        self.closed_bank = closed_bank  # closed-mouth frames kept per face, to lend their lips when closing
        self.closed_gap = closed_gap  # a mouth this little open counts as closed
        self.clip: Clip | None = None
        self.state: dict[int, _TrackState] = {}
        self.drawn: np.ndarray | None = None  # the face as the last render left it (see Renderer)

    def prepare(self, clip: Clip) -> None:
        self.clip = clip
        self.state = {}
        plans = {}
        for track, (indices, sample) in clip.tracks.items():
            gaps = np.array([mouth_gap(p) for p in sample])
            plans[track] = (indices, sample, gaps, self._open_picks(sample, gaps), self._closed_picks(gaps))
        wanted = {int(p[0][k]) for p in plans.values() for k in p[3] + p[4]}
        frames = clip.frames_at(sorted(wanted)) if wanted else {}  # one decoding pass for every reference
        for track, (indices, sample, gaps, opened, closed_picks) in plans.items():
            max_gap = float(np.clip(np.percentile(gaps, 95) * 1.1, 0.15, 0.4))
            mid = sample[int(np.argsort(gaps)[len(gaps) // 2])]
            bank = self._open_bank(
                [
                    (int(indices[k]), frames[int(indices[k])], sample[k], float(gaps[k]))
                    for k in opened
                    if int(indices[k]) in frames
                ]
            )
            closed = [
                (*_crop(frames[int(indices[k])], sample[k]), pose_signature(sample[k]))
                for k in closed_picks
                if int(indices[k]) in frames
            ]
            eye_tris = [triangulate(src) for src, _dst in eye_meshes(mid, 1.0)] if clip.blink is not None else []
            self.state[track] = _TrackState(max_gap, open_topology(mid), bank, eye_tris, closed)

    def _open_picks(self, sample: np.ndarray, gaps: np.ndarray) -> list[int]:
        """Candidates for the open-mouth bank: the most open frame, then frames spread over opening, width and pose,
        twice as many as kept (the blurred ones are dropped once read)."""
        candidates = np.flatnonzero(gaps >= self.min_open_gap)
        if candidates.size == 0 or self.open_bank == 0:
            return []
        feats = shape_features(
            gaps[candidates],
            np.array([inner_width(sample[k]) for k in candidates]),
            np.stack([pose_signature(sample[k]) for k in candidates]),
        )
        picks = spread_picks(feats, int(np.argmax(gaps[candidates])), 2 * self.open_bank)
        return [int(candidates[p]) for p in picks]

    def _open_bank(self, picked: list[tuple[int, np.ndarray, np.ndarray, float]]) -> InteriorBank | None:
        """Crop the picked frames; drop those much blurrier than the others (motion blur in fast speech), keep the
        first `open_bank` of the rest (the spread order)."""
        frames = []
        for index, frame, pts, gap in picked:
            crop, local = _crop(frame, pts, margin=0.0)
            upper, lower = teeth_extent(crop, local)
            frames.append(BankFrame(index, crop, local, gap, inner_width(pts), pose_signature(pts), None, upper, lower))
        if not frames:
            return None
        sharp = np.array([sharpness(f.crop, f.pts) for f in frames])
        kept = [f for f, s in zip(frames, sharp, strict=True) if s >= 0.5 * np.median(sharp)]
        return InteriorBank(kept[: self.open_bank])

    def _closed_picks(self, gaps: np.ndarray) -> list[int]:
        """A few of the face's own closed-mouth frames, spread over the clip (different poses and light):
        real closed lips look better than lips squeezed shut by the warp."""
        candidates = np.flatnonzero(gaps <= self.closed_gap)
        if candidates.size == 0 or self.closed_bank == 0:
            return []
        picks = candidates[np.linspace(0, candidates.size - 1, min(self.closed_bank, candidates.size)).astype(int)]
        return list(dict.fromkeys(int(p) for p in picks))

    def render(self, frame: np.ndarray, index: int, face: np.ndarray | None, track: int) -> np.ndarray:
        self.drawn = face  # unchanged unless the mouth is warped below
        if face is None or self.clip is None or track not in self.state:
            return frame
        st = self.state[track]
        drive = self.clip.drive
        i = min(index, drive.frames - 1)
        h, w = frame.shape[:2]
        out = frame.copy()
        if self.clip.blink is not None and index < len(self.clip.blink) and self.clip.blink[index] > 0.02:
            for (src, dst), tris in zip(eye_meshes(face, float(self.clip.blink[index])), st.eye_tris, strict=True):
                if (box := clip_box(src, w, h)) is not None:
                    patch, _ = warp_mesh(frame, src, dst, tris, box)
                    out[box[1] : box[3], box[0] : box[2]] = patch
        gap = float(drive.open[i]) * st.max_gap * self.strength
        src, dst = target_mesh(face, gap, float(drive.wide[i]), float(drive.round[i]))
        box = clip_box(src, w, h)
        if box is None:
            return out
        patch, _covered = warp_mesh(out, src, dst, st.tris, box)
        own = mouth_gap(face)
        _, _, _, scale = _face_coords(face)
        drawn = face.copy()
        drawn[MESH] = dst[: len(MESH)]  # the warp moved the mesh's landmarks there, and the pixels with them
        if gap > own + 0.02:
            alpha = min(1.0, (gap - own - 0.02) / 0.04)
            self._fill_interior(patch, box, face, drawn, st, alpha, scale, index)
        elif st.bank is not None:
            st.bank.rest()
        if gap < 0.04 and own > gap + 0.03:
            alpha = min(1.0, (own - gap) / 0.1)
            if st.closed:
                self._closed_lips(patch, box, face, dst, st, alpha, scale)
            else:
                self._crease(patch, box, dst, alpha, scale)
        match_grain(patch, out[box[1] : box[3], box[0] : box[2]], index)
        out[box[1] : box[3], box[0] : box[2]] = patch
        self.drawn = drawn
        return out

    def _fill_interior(
        self,
        patch: np.ndarray,
        box: tuple[int, int, int, int],
        face: np.ndarray,
        drawn: np.ndarray,
        st: _TrackState,
        alpha: float,
        scale: float,
        index: int,
    ) -> None:
        """Paint the opened mouth: the bank frame whose mouth best matches this one, warped into the new lip
        outline in one (bicubic) remap with its teeth kept their size, and re-lit to this frame by the skin
        around the mouth; a painted interior where the face lends none."""
        target = drawn - box[:2]
        h, w = patch.shape[:2]
        sub = clip_box(target[INNER], w, h, pad=max(2, int(scale * 0.02)))  # the opening: all the work is in it
        if sub is None:
            return
        sx0, sy0, sx1, sy1 = sub
        mask = np.zeros((sy1 - sy0, sx1 - sx0), np.float32)
        poly = np.round((target[INNER] - [sx0, sy0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [poly], 1.0, lineType=cv2.LINE_AA, shift=4)
        k = max(1, int(scale * 0.008)) * 2 + 1
        mask = (cv2.GaussianBlur(mask, (k, k), 0) * alpha)[..., None]
        if st.bank is not None and st.bank.frames:
            ref = st.bank.choose(mouth_gap(target), inner_width(target), pose_signature(face))
            _, _, ref_scale = face_axes(ref.pts)
            rows = interior_rows(target, ref.upper * scale / ref_scale, ref.lower * scale / ref_scale)
            interior, _ = warp_mesh(ref.crop, interior_rows(ref.pts, ref.upper, ref.lower), rows, ROW_TRIS, sub,
                                    cv2.INTER_CUBIC)  # fmt: skip
            if ref.tone is None:
                ref.tone = tone(ref.crop, ref.pts)
            here = tone(patch, target)
            if ref.tone is not None and here is not None:
                interior = relight(interior.astype(np.float32), target - [sx0, sy0], ref.tone, here)
        else:
            interior = painted_interior(patch, target, seed=index)[sy0:sy1, sx0:sx1]
        region = patch[sy0:sy1, sx0:sx1]
        region[:] = np.clip(region * (1 - mask) + interior * mask + 0.5, 0, 255).astype(np.uint8)

    def _closed_lips(
        self,
        patch: np.ndarray,
        box: tuple[int, int, int, int],
        face: np.ndarray,
        dst: np.ndarray,
        st: _TrackState,
        alpha: float,
        scale: float,
    ) -> None:
        """Lay the face's own closed lips (the bank frame of nearest pose) over the warped mouth, warped onto
        the target shape, matched in colour to the frame around the mouth, with a feathered edge."""
        pose = pose_signature(face)
        crop, pts, _ = min(st.closed, key=lambda item: float(np.sum((item[2] - pose) ** 2)))
        x0, y0, x1, y1 = box
        donor_src, _ = mesh_points(pts)
        donor, covered = warp_mesh(crop, donor_src, dst - [x0, y0], st.tris, (0, 0, x1 - x0, y1 - y0))
        outer_idx = [_POS[i] for i in UPPER_OUTER + LOWER_OUTER[-2:0:-1]]
        outer = np.round((dst[outer_idx] - [x0, y0]) * 16).astype(np.int32)
        lips = np.zeros(patch.shape[:2], np.uint8)
        cv2.fillPoly(lips, [outer], 255, cv2.LINE_AA, 4)
        grow = max(3, int(scale * 0.10)) | 1
        core = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
        band = cv2.dilate(core, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))) > core
        band &= covered
        if band.sum() > 10:  # colour: match the donor to the frame on a band of skin around the lips
            shift = np.clip(patch[band].mean(axis=0) - donor[band].mean(axis=0), -30, 30)
            donor = np.clip(donor + shift, 0, 255)
        blur = max(3, int(scale * 0.08)) | 1
        mask = cv2.GaussianBlur(core.astype(np.float32) / 255.0, (blur, blur), 0) * covered * alpha
        patch[:] = (patch * (1 - mask[..., None]) + donor * mask[..., None]).astype(np.uint8)

    def _crease(
        self, patch: np.ndarray, box: tuple[int, int, int, int], dst: np.ndarray, alpha: float, scale: float
    ) -> None:
        """A soft dark line where the lips meet, so a closed mouth does not look like a smooth seam."""
        x0, y0, _x1, _y1 = box
        line = np.round((dst[[_POS[i] for i in UPPER_INNER]] - [x0, y0]) * 16).astype(np.int32)
        mask = np.zeros(patch.shape[:2], np.float32)
        cv2.polylines(mask, [line], False, 1.0, max(1, int(scale * 0.02)), cv2.LINE_AA, shift=4)
        k = max(1, int(scale * 0.01)) * 2 + 1
        mask = cv2.GaussianBlur(mask, (k, k), 0) * 0.45 * alpha
        patch[:] = (patch * (1 - mask[..., None])).astype(np.uint8)


# ---------------------------------------------------------------- neural backend


class Wav2LipRenderer:
    """A Wav2Lip network, exported to TorchScript (.pt, run by torch) or ONNX (.onnx, run by onnxruntime);
    GPU when the runtime has one.

    Contract of the model (that of Wav2Lip's own inference): inputs `mel` (B, 1, 80, 16): an 80-band log-mel
    window of 16 steps (16 kHz, hop 200, window 800, scaled to [-4, 4]) starting at the frame, and `video`
    (B, 6, 96, 96): the face crop with its lower half blacked out stacked with a reference crop, RGB in
    [0, 1]; output (B, 3, 96, 96) in [0, 1]: the face crop with the new mouth. The crop is pasted back with
    a feathered mask over the lower half of the face only.
    """

    name = "wav2lip"
    capabilities: frozenset[str] = frozenset()
    size = 96

    class Options(NoOptions):
        model_path: Path | None = None  # a Wav2Lip model exported to TorchScript (.pt) or ONNX (.onnx)

    def __init__(self, model_path: str | Path | None = None) -> None:
        path = model_path or os.environ.get("DUBBING_WAV2LIP_MODEL")
        if not path or not Path(path).is_file():
            raise DubbingError(
                "the wav2lip lipsync backend needs a Wav2Lip model exported to TorchScript or ONNX "
                f"({'not found: ' + str(path) if path else 'none given'}); no such weights ship offline: set "
                "lipsync.options.model_path (or DUBBING_WAV2LIP_MODEL), or use lipsync.backend: classical"
            )
        self.path = Path(path)
        self._infer = self._load_onnx(self.path) if self.path.suffix == ".onnx" else self._load_torchscript(self.path)
        self.clip: Clip | None = None
        self.mel: np.ndarray | None = None

    @staticmethod
    def _load_onnx(path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        session = ort.InferenceSession(str(path), providers=providers)
        names = {i.name for i in session.get_inputs()}
        if names != {"mel", "video"}:
            raise DubbingError(f"{path}: expected ONNX inputs 'mel' and 'video', found {sorted(names)}")
        return lambda mel, video: session.run(None, {"mel": mel, "video": video})[0]

    @staticmethod
    def _load_torchscript(path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as exc:
            raise DubbingError(f"{path}: not a TorchScript model ({str(exc).splitlines()[0]})") from None

        def infer(mel: np.ndarray, video: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = model(torch.from_numpy(mel).to(device), torch.from_numpy(video).to(device))
            return out.float().cpu().numpy()

        return infer

    def prepare(self, clip: Clip) -> None:
        self.clip = clip
        self.mel = wav2lip_mel(clip.audio, clip.audio_rate)

    def _crop_box(self, face: np.ndarray, w: int, h: int) -> tuple[int, int, int, int] | None:
        x0, y0, x1, y1 = face_box(face)
        side = max(x1 - x0, y1 - y0) * 1.1
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.05 * side
        return clip_box(np.array([[cx - side / 2, cy - side / 2], [cx + side / 2, cy + side / 2]]), w, h, pad=0)

    def render(self, frame: np.ndarray, index: int, face: np.ndarray | None, track: int) -> np.ndarray:
        if face is None or self.clip is None or self.mel is None:
            return frame
        h, w = frame.shape[:2]
        box = self._crop_box(face, w, h)
        if box is None:
            return frame
        x0, y0, x1, y1 = box
        crop = cv2.resize(frame[y0:y1, x0:x1], (self.size, self.size), interpolation=cv2.INTER_AREA)
        rgb = crop[..., ::-1].astype(np.float32) / 255.0
        masked = rgb.copy()
        masked[self.size // 2 :] = 0
        video = np.concatenate([masked, rgb], axis=2).transpose(2, 0, 1)[None]
        start = int(80.0 * index / self.clip.fps)
        window = self.mel[:, start : start + 16]
        if window.shape[1] < 16:
            window = np.pad(window, ((0, 0), (0, 16 - window.shape[1])), constant_values=-4.0)
        pred = self._infer(window[None, None].astype(np.float32), video.astype(np.float32))
        new = (np.clip(pred[0].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)[..., ::-1]
        new = cv2.resize(new, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        mask[int((y1 - y0) * 0.55) :, int((x1 - x0) * 0.1) : int((x1 - x0) * 0.9)] = 1.0
        k = max(3, (y1 - y0) // 10 * 2 + 1)
        soft = cv2.GaussianBlur(mask, (k, k), 0)[..., None]
        out = frame.copy()
        out[y0:y1, x0:x1] = (frame[y0:y1, x0:x1] * (1 - soft) + new * soft).astype(np.uint8)
        return out


def wav2lip_mel(audio: np.ndarray, rate: int) -> np.ndarray:
    """Wav2Lip's mel spectrogram: 80 bands, 80 steps per second, values in [-4, 4]."""
    import librosa

    audio = resample(audio, rate, 16_000)
    emphasised = np.append(audio[0], audio[1:] - 0.97 * audio[:-1])
    spec = np.abs(librosa.stft(emphasised, n_fft=800, hop_length=200, win_length=800))
    mel = librosa.feature.melspectrogram(S=spec, sr=16_000, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4).astype(np.float32)


BACKENDS: dict[str, type] = {"classical": ClassicalRenderer, "wav2lip": Wav2LipRenderer, "drawn": DrawnRenderer}
