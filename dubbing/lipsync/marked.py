"""A mouth the user marks, for drawn and stylised faces the face mesh does not find.

The user gives the mouth's box (x, y, w, h in source pixels: `lipsync.mouth_box`, `--mouth-box`). The box is
split at the line between the lips (its darkest row near the middle: a drawn mouth's line, else the middle),
and what lies below moves down by the dub's mouth openness with one smooth warp: most in the middle of the
mouth, nothing at its corners, easing off below the box over the chin, so the lower lip and jaw drop as in a
drawn mouth and the line between the lips is split between them. The opening is filled flat, as cartoons
are shaded: a dark interior from the drawing's own line colour, a tongue when it is wide open. The box does
not move: it suits a character whose mouth stays in place (a talking head, a still), not one that walks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from dubbing.config import MouthBox, mouth_box_problem
from dubbing.errors import DubbingError
from dubbing.lipsync.visemes import MouthDrive

OPEN_OF_WIDTH = 0.35  # fully open, the mouth opens this much of the box's width (a drawn "ah")
THROAT = np.array([40.0, 30.0, 110.0])  # BGR: the deep red the interior leans to, mixed with the line colour
TONGUE = np.array([110.0, 100.0, 215.0])  # BGR: pink


def parse_mouth_box(text: str) -> MouthBox:
    """'X,Y,W,H' (source pixels) as a box, or a one-line error."""
    try:
        values = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise DubbingError(f"mouth box {text!r}: expected X,Y,W,H, four whole numbers of source pixels")
    box: MouthBox = values
    if problem := mouth_box_problem(box):
        raise DubbingError(f"mouth box {text!r}: {problem}")
    return box


def fit_mouth_box(box: MouthBox, width: int, height: int) -> MouthBox:
    """The box checked against a frame of `width` x `height`: it must lie inside it (one-line error)."""
    x, y, w, h = box
    if x + w > width or y + h > height:
        raise DubbingError(f"mouth box {x},{y},{w},{h} reaches outside the {width}x{height} frame")
    return box


@dataclass
class MarkedMouth:
    """Opens a marked mouth by the drive's openness, frame by frame. `region` is the part of the frame it may
    change (the box, the chin below it, a margin); `render` takes that region's pixels and returns them, the
    same array where nothing moves. `drawn` is the opening it drew last, as a fraction of the box's width."""

    box: MouthBox
    frame_size: tuple[int, int]  # width, height
    drive: MouthDrive
    name: str = "marked"
    drawn: float = 0.0
    _split: int | None = field(default=None, repr=False)  # the lips' line, a row of the region
    _colours: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def full_open(self) -> float:
        return OPEN_OF_WIDTH * self.box[2]

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), even-aligned (the I420 patch needs it): the box with a margin, and below it room
        for the full opening and the chin's easing."""
        x, y, w, h = self.box
        width, height = self.frame_size
        x0, y0 = max(0, x - 2) & ~1, max(0, y - 2) & ~1
        x1 = min(width, x + w + 3) & ~1
        y1 = min(height, int(np.ceil(y + h + self.full_open + self._fall())) + 3) & ~1
        return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)

    def _fall(self) -> float:
        """How far below the box the move eases off (the chin drops with the jaw, as drawn mouths do): long enough
        that the warp never folds (a smoothstep's steepest slope is 1.5 over its length)."""
        return 1.6 * self.full_open + 0.25 * self.box[3]

    def opening(self, index: int) -> float:
        """Pixels the middle of the mouth opens in frame `index` (0 past the drive's end)."""
        if index >= self.drive.frames:
            return 0.0
        return float(np.clip(self.drive.open[index], 0.0, 1.0)) * self.full_open

    def render(self, pixels: np.ndarray, index: int) -> np.ndarray:
        """The region's pixels (BGR) with the mouth opened for frame `index`."""
        if self._split is None:
            self._split, self._colours = self._look(pixels)
        gap = self.opening(index)
        self.drawn = gap / self.box[2]
        if gap < 0.25:
            return pixels
        return self._open(pixels, gap)

    def _look(self, pixels: np.ndarray) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
        """The row between the lips (darkest near the box's middle, across its middle columns), and the
        interior's flat colours from the drawing's darkest pixels in the box (its line colour)."""
        x, y, w, h = self._local_box()
        inside = pixels[y : y + h, x : x + w].astype(np.float64)
        grey = inside @ [0.114, 0.587, 0.299]
        rows = grey[h // 4 : h - h // 4, w // 4 : w - w // 4].mean(axis=1)
        split = y + h // 2
        if rows.size and np.median(grey) - rows.min() > 20:  # a visible line: the lips meet there
            split = y + h // 4 + int(np.argmin(rows))
        dark = inside[grey <= np.percentile(grey, 5)].mean(axis=0)
        throat = 0.5 * dark + 0.5 * THROAT
        tongue = 0.4 * throat + 0.6 * TONGUE
        return split + 1, (throat, tongue)  # the line's lower half moves with the lower lip

    def _local_box(self) -> MouthBox:
        x0, y0, _x1, _y1 = self.region
        x, y, w, h = self.box
        return x - x0, y - y0, w, h

    def _open(self, pixels: np.ndarray, gap: float) -> np.ndarray:
        """One remap: below the split, each column moves down by `gap` times the mouth's profile (an ellipse's
        lower half, 0 at the corners), in full through the lower lip and easing to nothing over the chin; the
        opening between is painted."""
        assert self._split is not None and self._colours is not None
        x, y, w, h = self._local_box()
        rh, rw = pixels.shape[:2]
        xs = np.arange(rw, dtype=np.float32)
        ys = np.arange(rh, dtype=np.float32)[:, None]
        u = (xs + 0.5 - (x + w / 2)) / (w / 2)
        profile = np.clip(1 - u * u, 0.0, 1.0) ** 0.6  # (rw,)
        move = gap * profile
        bottom = y + h + gap  # the lower lip's new lower edge
        t = np.clip((ys - bottom) / self._fall(), 0.0, 1.0)
        ease = 1 - t * t * (3 - 2 * t)  # (rh, 1): 1 through the lip, 0 at the end of the chin
        below = ys >= self._split
        shift = np.where(below, move[None, :] * ease, 0.0).astype(np.float32)
        mapy = np.maximum(ys - shift, np.where(below, float(self._split), 0.0)).astype(np.float32)
        mapx = np.broadcast_to(xs[None, :], (rh, rw)).astype(np.float32)
        out = cv2.remap(pixels, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # the opening: rows from the split down to the moved lower lip, anti-aliased at its lower edge
        depth = np.clip(self._split + move[None, :] - ys, 0.0, 1.0) * below
        self._paint(out, depth.astype(np.float32), move)
        return out

    def _paint(self, out: np.ndarray, mask: np.ndarray, move: np.ndarray) -> None:
        """Fill the opening (`mask`, 0-1 per pixel) with the flat throat colour and a tongue resting on the
        lower lip when the mouth is open wide enough to show one."""
        assert self._split is not None and self._colours is not None
        throat, tongue = self._colours
        x, _y, w, _h = self._local_box()
        fill = np.empty_like(out, dtype=np.float32)
        fill[:] = throat
        gap = float(move.max())
        if gap >= 6:
            shape = np.zeros(out.shape[:2], np.uint8)
            centre = (int(round(x + w / 2)), int(round(self._split + gap)))
            axes = (max(1, int(0.28 * w)), max(1, int(0.35 * gap)))
            cv2.ellipse(shape, centre, axes, 0, 180, 360, 255, cv2.FILLED, cv2.LINE_AA)
            a = (shape.astype(np.float32) / 255.0)[..., None]
            fill = fill * (1 - a) + tongue.astype(np.float32) * a
        alpha = mask[..., None]
        blended = out.astype(np.float32) * (1 - alpha) + fill * alpha
        out[:] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
