"""Input checks for lipsync, and a contact sheet that shows what the tracker saw.

The same checks run inside every dub run (from the tracked faces) and in `dub inspect VIDEO`, which also
draws the tracked face and mouth region on sampled frames.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dubbing.config import MouthBox
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


SHEET_WIDTH = 1920  # px: a screen's width, whatever the video's orientation
SHEET_ASPECT = 16 / 10  # the sheet's shape the layout aims for
GUTTER = 6
BACKGROUND = (60, 60, 60)  # grey gutters and empty tiles: the sheet's own pixels are never black bars
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.55
MOUTH_BOX_COLOUR = (255, 0, 255)  # BGR magenta: the marked mouth, unlike any tracking colour


def sheet_layout(count: int, aspect: float) -> tuple[int, int, int]:
    """(columns, tile width, tile height) for `count` frames of width/height `aspect`: tiles keep the video's
    shape (no letterboxing), and the number of columns makes the sheet closest to 16:10 (a portrait video gets
    a wide row of tall tiles, a landscape one a few columns of wide ones)."""
    best: tuple[float, int] | None = None
    for columns in range(1, max(1, count) + 1):
        rows = -(-max(1, count) // columns)
        tile_w = (SHEET_WIDTH - GUTTER * (columns + 1)) / columns
        height = rows * tile_w / aspect + GUTTER * (rows + 1)
        score = abs(np.log(SHEET_WIDTH / height / SHEET_ASPECT)) + 0.5 * (columns * rows - count) / max(1, count)
        if best is None or score < best[0]:
            best = (score, columns)
    assert best is not None
    columns = best[1]
    tile_w = (SHEET_WIDTH - GUTTER * (columns + 1)) // columns
    return columns, tile_w, max(1, round(tile_w / aspect))


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """Text on a dark box, legible over any picture (y: the text's baseline)."""
    (tw, th), base = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    h, w = img.shape[:2]
    x, y = int(np.clip(x, 0, max(0, w - tw - 6))), int(np.clip(y, th + 4, h - base - 2))
    cv2.rectangle(img, (x, y - th - 4), (x + tw + 6, y + base + 2), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, (x + 3, y), FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)


def draw_faces(
    frame: np.ndarray, faces: FaceData, t: int, scale: float = 1.0, mouth_box: MouthBox | None = None
) -> np.ndarray:
    """The frame (already resized by `scale`) with each tracked face's outline, box and mouth region drawn at
    the tile's own size, so lines and labels stay legible however large the video; the animated face in green;
    a marked mouth box (source pixels) in magenta."""
    out = frame.copy()
    thick = 2
    if mouth_box is not None:
        x, y, w, h = (v * scale for v in mouth_box)
        cv2.rectangle(out, (round(x), round(y)), (round(x + w), round(y + h)), MOUTH_BOX_COLOUR, thick)
        _label(out, "mouth box", round(x), round(y + h) + 20, MOUTH_BOX_COLOUR)
    for s, track in enumerate(faces.ids[t]):
        if track < 0:
            continue
        pts = faces.points[t, s] * scale
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
        _label(out, f"face {track} yaw {faces.yaw[t, s]:+.0f}", x0, y0 - 6, colour)
    _label(out, f"{t / faces.fps:.2f}s", 4, 22, (255, 255, 255))
    return out


def contact_sheet(
    frames: dict[int, np.ndarray], faces: FaceData, out: Path, *, mouth_box: MouthBox | None = None
) -> Path:
    """A grid of sampled frames with the tracking (and a marked mouth box) drawn on them, written as PNG: tiles
    of the video's own shape, laid out for its orientation (`sheet_layout`)."""
    shots = [frames[t] for t in sorted(frames)]
    h, w = shots[0].shape[:2] if shots else (faces.height, faces.width)
    columns, tile_w, tile_h = sheet_layout(len(shots), w / max(1, h))
    rows = max(1, -(-len(shots) // columns))
    sheet = np.empty((rows * tile_h + GUTTER * (rows + 1), columns * tile_w + GUTTER * (columns + 1), 3), np.uint8)
    sheet[:] = BACKGROUND
    for k, t in enumerate(sorted(frames)):
        img = frames[t]
        scale = tile_w / img.shape[1]
        small = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = draw_faces(cv2.resize(img, (tile_w, tile_h), interpolation=small), faces, t, scale, mouth_box)
        y, x = GUTTER + (k // columns) * (tile_h + GUTTER), GUTTER + (k % columns) * (tile_w + GUTTER)
        sheet[y : y + tile_h, x : x + tile_w] = img
    ok, png = cv2.imencode(".png", sheet)
    assert ok
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())
    return Path(out)
