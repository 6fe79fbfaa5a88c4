"""Drawn mouths: for cartoon and stylised faces, opened as a drawing opens, in flat colours.

A mouth's box is split at the line between the lips, and what lies below moves down by the dub's mouth
openness with one smooth warp: most in the middle of the mouth, nothing at its corners, easing off below the
box over the chin, so the lower lip and jaw drop as in a drawn mouth and the line between the lips is split
between them. The opening is filled flat, as cartoons are shaded (no photographic grain): a dark interior from
the drawing's own line colour, a tongue when it is wide open.

Two users: `MarkedMouth`, a box the user marks (x, y, w, h in source pixels: `lipsync.mouth_box`,
`--mouth-box`) for faces the mesh does not find, which stays where it is marked (a talking head, a still; not
a character that walks), split at its darkest row near the middle (a drawn mouth's line) or else the middle;
and the `drawn` renderer (`lipsync.backend: drawn`), the box of the tracked face's lips in every frame, split
between the mesh's inner lips, so it follows a drawn face the mesh does find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dubbing.config import MouthBox, mouth_box_problem
from dubbing.errors import DubbingError
from dubbing.lipsync.faces import LOWER_INNER, LOWER_OUTER, UPPER_OUTER
from dubbing.lipsync.visemes import MouthDrive
from dubbing.types import InputCheck

if TYPE_CHECKING:  # render.py lists the drawn renderer among its backends
    from dubbing.lipsync.render import Clip

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


def chin_room(width: float, height: float) -> float:
    """Pixels below a mouth box (`width` x `height`) that the opening may move: the full opening, then the
    easing over the chin (the chin drops with the jaw, as drawn mouths do), long enough that the warp never
    folds (a smoothstep's steepest slope is 1.5 over its length)."""
    return OPEN_OF_WIDTH * width * 2.6 + 0.25 * height


def line_colours(pixels: np.ndarray, box: MouthBox) -> tuple[np.ndarray, np.ndarray]:
    """The interior's flat colours (throat, tongue) from the drawing's darkest pixels in `box` (its lines)."""
    x, y, w, h = box
    inside = pixels[y : y + h, x : x + w].reshape(-1, 3).astype(np.float64)
    grey = inside @ [0.114, 0.587, 0.299]
    dark = inside[grey <= np.percentile(grey, 5)].mean(axis=0)
    throat = 0.5 * dark + 0.5 * THROAT
    return throat, 0.4 * throat + 0.6 * TONGUE


def lip_line(pixels: np.ndarray, box: MouthBox) -> int:
    """The row just under the line between the lips: the darkest row near the box's middle, across its middle
    columns, where a line is visible; else the middle. The line's lower half moves with the lower lip."""
    x, y, w, h = box
    grey = pixels[y : y + h, x : x + w].astype(np.float64) @ [0.114, 0.587, 0.299]
    rows = grey[h // 4 : h - h // 4, w // 4 : w - w // 4].mean(axis=1)
    if rows.size and np.median(grey) - rows.min() > 20:
        return y + h // 4 + int(np.argmin(rows)) + 1
    return y + h // 2


def profile(xs: np.ndarray, x: float, w: float) -> np.ndarray:
    """How much of the opening each column at `xs` gets in a mouth from `x` to `x + w`: an ellipse's lower half
    (rounder at the edges), 1 in the middle, 0 at the corners and beyond."""
    u = (xs - (x + w / 2)) / (w / 2)
    return np.clip(1 - u * u, 0.0, 1.0) ** 0.6


def open_mouth(
    pixels: np.ndarray, box: MouthBox, split: int, gap: float, colours: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """`pixels` (BGR) with the mouth in `box` (pixel coordinates of `pixels`) opened by `gap` pixels at its
    middle below row `split`: one remap, each column moving down by `gap` times the mouth's profile (an
    ellipse's lower half, 0 at the corners), in full through the lower lip and easing to nothing over the chin;
    the opening between is painted. The same array when `gap` is under a quarter of a pixel."""
    if gap < 0.25:
        return pixels
    x, y, w, h = box
    rh, rw = pixels.shape[:2]
    xs = np.arange(rw, dtype=np.float32)
    ys = np.arange(rh, dtype=np.float32)[:, None]
    move = gap * profile(xs + 0.5, x, w)  # (rw,)
    fall = chin_room(w, h) - OPEN_OF_WIDTH * w
    t = np.clip((ys - (y + h + gap)) / fall, 0.0, 1.0)  # from the moved lower lip's lower edge
    ease = 1 - t * t * (3 - 2 * t)  # (rh, 1): 1 through the lip, 0 at the end of the chin
    below = ys >= split
    shift = np.where(below, move[None, :] * ease, 0.0)
    mapy = np.maximum(ys - shift, np.where(below, float(split), 0.0)).astype(np.float32)
    mapx = np.broadcast_to(xs[None, :], (rh, rw)).astype(np.float32)
    out = cv2.remap(pixels, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    depth = np.clip(split + move[None, :] - ys, 0.0, 1.0) * below  # anti-aliased at the opening's lower edge
    _paint(out, depth.astype(np.float32), (x, split, w, gap), colours)
    return out


def _paint(
    out: np.ndarray, mask: np.ndarray, opening: tuple[int, int, int, float], colours: tuple[np.ndarray, np.ndarray]
) -> None:
    """Fill the opening (`mask`, 0-1 per pixel) with the flat throat colour, and a tongue resting on the lower
    lip when the mouth is open wide enough to show one."""
    throat, tongue = colours
    x, split, w, gap = opening
    fill = np.empty(out.shape, np.float32)
    fill[:] = throat
    if gap >= 6:
        shape = np.zeros(out.shape[:2], np.uint8)
        centre = (int(round(x + w / 2)), int(round(split + gap)))
        axes = (max(1, int(0.28 * w)), max(1, int(0.35 * gap)))
        cv2.ellipse(shape, centre, axes, 0, 180, 360, 255, cv2.FILLED, cv2.LINE_AA)
        a = (shape.astype(np.float32) / 255.0)[..., None]
        fill = fill * (1 - a) + tongue.astype(np.float32) * a
    alpha = mask[..., None]
    out[:] = np.clip(np.round(out.astype(np.float32) * (1 - alpha) + fill * alpha), 0, 255).astype(np.uint8)


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
    _look: tuple[int, tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)  # split, colours

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), even-aligned (the I420 patch needs it): the box with a margin, and the chin below."""
        x, y, w, h = self.box
        width, height = self.frame_size
        x0, y0 = max(0, x - 2) & ~1, max(0, y - 2) & ~1
        x1 = min(width, x + w + 3) & ~1
        y1 = min(height, int(np.ceil(y + h + chin_room(w, h))) + 3) & ~1
        return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)

    def render(self, pixels: np.ndarray, index: int) -> np.ndarray:
        """The region's pixels (BGR) with the mouth opened for frame `index` (closed past the drive's end)."""
        x0, y0, _x1, _y1 = self.region
        x, y, w, h = self.box
        local = (x - x0, y - y0, w, h)
        if self._look is None:  # the drawing's line and colours, from the first frame
            self._look = lip_line(pixels, local), line_colours(pixels, local)
        level = float(np.clip(self.drive.open[index], 0.0, 1.0)) if index < self.drive.frames else 0.0
        gap = level * OPEN_OF_WIDTH * w
        self.drawn = gap / w
        return open_mouth(pixels, local, self._look[0], gap, self._look[1])


class DrawnRenderer:
    """The `drawn` backend: a drawn face the mesh tracks, its mouth opened as a drawing opens (`open_mouth`) at
    the box of the tracked lips in every frame, so it follows the face; flat colours, no grain. `drawn`: the
    face's landmarks with the lower lip where it was drawn (the stage saves the mouth opening QA reads)."""

    name = "drawn"
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.drive = MouthDrive.rest(0)
        self.colours: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per track: the drawing's lines, seen first
        self.drawn: np.ndarray | None = None

    def prepare(self, clip: Clip) -> None:
        self.drive, self.colours = clip.drive, {}

    def render(self, frame: np.ndarray, index: int, face: np.ndarray | None, track: int) -> np.ndarray:
        self.drawn = face
        if face is None:
            return frame
        lips = face[UPPER_OUTER + LOWER_OUTER]
        h_frame, w_frame = frame.shape[:2]
        x0, y0 = (int(v) for v in np.maximum(np.floor(lips.min(axis=0)), 0))
        x1, y1 = int(min(np.ceil(lips[:, 0].max()), w_frame)), int(min(np.ceil(lips[:, 1].max()), h_frame))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return frame
        box = (x0, y0, x1 - x0, y1 - y0)
        colours = self.colours.setdefault(track, line_colours(frame, box))
        level = float(np.clip(self.drive.open[index], 0.0, 1.0)) if index < self.drive.frames else 0.0
        gap = level * OPEN_OF_WIDTH * box[2]
        # the part that can change: the lips and the chin below them
        r0, r1 = max(0, y0 - 2), min(h_frame, int(np.ceil(y1 + chin_room(box[2], box[3]))) + 2)
        c0, c1 = max(0, x0 - 2), min(w_frame, x1 + 2)
        local = (x0 - c0, y0 - r0, box[2], box[3])
        part = np.ascontiguousarray(frame[r0:r1, c0:c1])
        opened = open_mouth(part, local, lip_line(part, local), gap, colours)
        drawn = face.copy()
        lower = LOWER_INNER + LOWER_OUTER
        drawn[lower, 1] += gap * profile(face[lower, 0], x0, box[2])
        self.drawn = drawn
        if opened is part:
            return frame
        out = frame.copy()
        out[r0:r1, c0:c1] = opened
        return out


def marked_mouth_check() -> InputCheck:
    """What the report says of a video whose mouth the user marked (lipsync.mouth_box): the box is animated,
    and no face is tracked for it."""
    message = "the marked mouth box (lipsync.mouth_box) is animated; faces are not tracked"
    return InputCheck(code="marked-mouth", value=100.0, message=message)
