"""Input checks for lipsync, and a contact sheet that shows what the tracker saw.

The same checks run inside every dub run (from the tracked faces) and in `dub inspect VIDEO`, which also
draws the tracked face and mouth region on sampled frames.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dubbing.files import atomic_path
from dubbing.lipsync.faces import FACE_OVAL, LOWER_OUTER, UPPER_OUTER, FaceData, face_box
from dubbing.types import InputCheck

PROFILE_DEGREES = 45.0
MIN_SHORT_SIDE = 480


def check_faces(faces: FaceData) -> list[InputCheck]:
    """Warnings about a video's faces that predict a poor lipsync (or none)."""
    checks: list[InputCheck] = []
    present = (faces.ids >= 0).any(axis=1)
    missing = 1.0 - present.mean()
    if not present.any():
        checks.append(InputCheck(code="no-face", value=100.0, message="no face found in any frame: nothing to lipsync"))
    elif missing >= 0.05:
        checks.append(
            InputCheck(
                code="face-missing", value=round(100 * missing, 1), message=f"no face in {100 * missing:.0f}% of frames"
            )
        )
    short = min(faces.width, faces.height)
    if short < MIN_SHORT_SIDE:
        checks.append(
            InputCheck(
                code="low-resolution",
                value=float(short),
                message=f"resolution {faces.width}x{faces.height} is under 480p",
            )
        )
    yaw = np.abs(faces.yaw[faces.ids >= 0])
    if yaw.size and (profile := float((yaw > PROFILE_DEGREES).mean())) >= 0.05:
        checks.append(
            InputCheck(
                code="profile",
                value=round(100 * profile, 1),
                message=f"face turned beyond {PROFILE_DEGREES:.0f} degrees in {100 * profile:.0f}% of frames with a face",  # noqa: E501
            )
        )
    several = float(((faces.ids >= 0).sum(axis=1) > 1).mean())
    if several >= 0.05:
        checks.append(
            InputCheck(
                code="several-faces",
                value=round(100 * several, 1),
                message=f"several faces in {100 * several:.0f}% of frames",
            )
        )
    contrast = faces.mouth_contrast[faces.ids >= 0]
    contrast = contrast[~np.isnan(contrast)]
    if contrast.size and (covered := float((contrast < 0.3).mean())) >= 0.5:
        checks.append(
            InputCheck(
                code="mouth-covered",
                value=round(100 * covered, 1),
                message=f"the mouth looks covered (no lip colour) in {100 * covered:.0f}% of sampled frames",
            )
        )
    if faces.cuts:
        times = ", ".join(f"{c / faces.fps:.2f}s" for c in faces.cuts[:10])
        checks.append(
            InputCheck(
                code="scene-cuts", value=float(len(faces.cuts)), message=f"{len(faces.cuts)} scene cuts at {times}"
            )
        )
    return checks


def sample_indices(frames: int, count: int = 12) -> list[int]:
    if frames <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, frames - 1, min(count, frames))})


def draw_faces(frame: np.ndarray, faces: FaceData, t: int) -> np.ndarray:
    """The frame with each tracked face's outline, box and mouth region; the animated face in green."""
    out = frame.copy()
    thick = max(1, round(min(frame.shape[:2]) / 300))
    for s, track in enumerate(faces.ids[t]):
        if track < 0:
            continue
        pts = faces.points[t, s]
        colour = (0, 220, 0) if track == faces.active[t] else (0, 200, 255)
        cv2.polylines(out, [np.round(pts[FACE_OVAL]).astype(np.int32)], True, colour, thick, cv2.LINE_AA)
        cv2.polylines(
            out,
            [np.round(pts[UPPER_OUTER + LOWER_OUTER[::-1]]).astype(np.int32)],
            True,
            (0, 0, 255),
            thick,
            cv2.LINE_AA,
        )
        x0, y0, x1, y1 = (int(v) for v in face_box(pts))
        mouth_top = int(pts[[1, 2]][:, 1].mean())
        cv2.rectangle(out, (x0, mouth_top), (x1, y1), (255, 120, 0), thick)
        cv2.putText(out, f"face {track} yaw {faces.yaw[t, s]:+.0f}", (x0, max(12, y0 - 6)), 0, 0.4 * thick + 0.2,
                    colour, thick)  # fmt: skip
    cv2.putText(out, f"{t / faces.fps:.2f}s", (8, 8 + 14 * thick), 0, 0.5 * thick, (255, 255, 255), thick)
    return out


def contact_sheet(frames: dict[int, np.ndarray], faces: FaceData, out: Path, columns: int = 4, tile: int = 320) -> Path:
    """A grid of sampled frames with the tracking drawn on them, written as PNG."""
    tiles = []
    for t in sorted(frames):
        img = draw_faces(frames[t], faces, t)
        h, w = img.shape[:2]
        scale = tile / max(h, w)
        img = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 24, np.uint8)
        y, x = (tile - img.shape[0]) // 2, (tile - img.shape[1]) // 2
        canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
        tiles.append(canvas)
    while len(tiles) % columns:
        tiles.append(np.full((tile, tile, 3), 24, np.uint8))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    sheet = np.concatenate(rows, axis=0)
    ok, png = cv2.imencode(".png", sheet)
    assert ok
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())
    return Path(out)
