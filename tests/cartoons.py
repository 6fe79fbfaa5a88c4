"""Drawn talking faces for the animated-face tests and benchmark (made here with OpenCV, never committed media).

Each style is a still character with a closed mouth (a blink now and then, so the picture is not frozen);
`cartoon_clip` writes it as a video with speech under it. `box_opening` measures, from a video's own pixels,
how open the mouth in a marked box is: what the lip-follow checks of a marked mouth compare with the speech.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
INK = (30, 25, 25)  # BGR: the drawing's line colour
MouthBox = tuple[int, int, int, int]


def _eyes(img: np.ndarray, closed: bool, cx: int, cy: int, spread: int, size: tuple[int, int]) -> None:
    for side in (-1, 1):
        centre = (cx + side * spread, cy)
        if closed:
            cv2.ellipse(img, centre, (size[0], size[1] // 3), 0, 0, 180, INK, 4, cv2.LINE_AA)
            continue
        cv2.ellipse(img, centre, size, 0, 0, 360, (255, 255, 255), cv2.FILLED, cv2.LINE_AA)
        cv2.ellipse(img, centre, size, 0, 0, 360, INK, 3, cv2.LINE_AA)
        pupil = (centre[0] + side * 4, centre[1] + 6)
        cv2.circle(img, pupil, int(size[0] * 0.5), (90, 60, 30), cv2.FILLED, cv2.LINE_AA)
        cv2.circle(img, pupil, int(size[0] * 0.25), INK, cv2.FILLED, cv2.LINE_AA)
        cv2.circle(img, (pupil[0] - 6, pupil[1] - 8), 5, (255, 255, 255), cv2.FILLED, cv2.LINE_AA)


def _lips(img: np.ndarray, cx: int, cy: int, half: int) -> None:
    """Closed drawn lips: a pink upper and lower lip, outlined, the line between them dark."""
    upper = np.array([[cx - half, cy], [cx - half // 2, cy - 12], [cx, cy - 7], [cx + half // 2, cy - 12],
                      [cx + half, cy]], np.int32)  # fmt: skip
    lower = np.array([[cx + half, cy], [cx + half // 2, cy + 14], [cx, cy + 17], [cx - half // 2, cy + 14],
                      [cx - half, cy]], np.int32)  # fmt: skip
    for lip, colour in ((upper, (120, 110, 215)), (lower, (135, 125, 230))):
        cv2.fillPoly(img, [lip], colour, cv2.LINE_AA)
        cv2.polylines(img, [lip], True, INK, 2, cv2.LINE_AA)
    cv2.line(img, (cx - half, cy), (cx + half, cy), INK, 3, cv2.LINE_AA)


def _character(closed_eyes: bool, outline: bool) -> tuple[np.ndarray, MouthBox]:
    """A cartoon character in flat colours, outlined or not: big eyes, a simple nose, drawn lips."""
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = (200, 170, 120)  # a flat blue-grey wall
    cx, cy = WIDTH // 2, HEIGHT // 2 + 10
    line = 3 if outline else 0
    cv2.ellipse(img, (cx, cy + 230), (200, 90), 0, 0, 360, (60, 120, 200), cv2.FILLED, cv2.LINE_AA)  # shoulders
    cv2.rectangle(img, (cx - 45, cy + 100), (cx + 45, cy + 170), (150, 190, 235), cv2.FILLED)  # neck
    for side in (-1, 1):  # ears
        cv2.ellipse(img, (cx + side * 135, cy), (25, 38), 0, 0, 360, (160, 200, 245), cv2.FILLED, cv2.LINE_AA)
        if line:
            cv2.ellipse(img, (cx + side * 135, cy), (25, 38), 0, 0, 360, INK, line, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy), (140, 170), 0, 0, 360, (170, 210, 250), cv2.FILLED, cv2.LINE_AA)  # head
    if line:
        cv2.ellipse(img, (cx, cy), (140, 170), 0, 0, 360, INK, line, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy - 120), (150, 80), 0, 180, 360, (40, 60, 110), cv2.FILLED, cv2.LINE_AA)  # hair
    cv2.ellipse(img, (cx, cy - 118), (146, 40), 0, 0, 180, (40, 60, 110), cv2.FILLED, cv2.LINE_AA)
    for side in (-1, 1):  # brows
        cv2.ellipse(img, (cx + side * 55, cy - 70), (30, 10), 0, 200, 340, INK, 5, cv2.LINE_AA)
    _eyes(img, closed_eyes, cx, cy - 25, 55, (32, 40))
    cv2.ellipse(img, (cx, cy + 35), (10, 7), 0, 20, 160, INK, 3, cv2.LINE_AA)  # nose
    _lips(img, cx, cy + 85, 45)
    return img, (cx - 50, cy + 70, 100, 36)


def flat_cartoon(closed_eyes: bool) -> tuple[np.ndarray, MouthBox]:
    """A flat-shaded cartoon face: outlined flat colours, big eyes, a simple nose, drawn lips."""
    return _character(closed_eyes, outline=True)


def shaded_cartoon(closed_eyes: bool) -> tuple[np.ndarray, MouthBox]:
    """The same character without outlines, lit from the upper left (a soft 3D-render look)."""
    img, box = _character(closed_eyes, outline=False)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    light = 1.0 - 0.35 * np.clip(np.hypot((xs - 250) / 260, (ys - 180) / 300), 0, 1)
    return np.clip(img * light[..., None], 0, 255).astype(np.uint8), box


def anime_face(closed_eyes: bool) -> tuple[np.ndarray, MouthBox]:
    """An anime-like face: a pointed chin, huge eyes low in the face, no nose, a small mouth line."""
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = (235, 225, 215)
    cx, cy = WIDTH // 2, HEIGHT // 2
    chin = np.array([[cx - 120, cy - 60], [cx - 110, cy + 60], [cx - 40, cy + 150], [cx, cy + 165],
                     [cx + 40, cy + 150], [cx + 110, cy + 60], [cx + 120, cy - 60]], np.int32)  # fmt: skip
    cv2.ellipse(img, (cx, cy - 60), (120, 130), 0, 180, 360, (200, 225, 250), cv2.FILLED, cv2.LINE_AA)
    cv2.fillPoly(img, [chin], (200, 225, 250), cv2.LINE_AA)
    cv2.polylines(img, [chin], False, INK, 2, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy - 110), (140, 110), 0, 170, 370, (90, 50, 160), cv2.FILLED, cv2.LINE_AA)  # hair
    _eyes(img, closed_eyes, cx, cy + 10, 55, (36, 52))
    cv2.line(img, (cx - 14, cy + 112), (cx + 14, cy + 112), INK, 3, cv2.LINE_AA)
    return img, (cx - 22, cy + 100, 44, 24)


def emoji_face(closed_eyes: bool) -> tuple[np.ndarray, MouthBox]:
    """An emoji-like face: a yellow disc, two black oval eyes, a curved line for a mouth."""
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = (250, 250, 250)
    cx, cy = WIDTH // 2, HEIGHT // 2
    cv2.circle(img, (cx, cy), 180, (40, 200, 250), cv2.FILLED, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), 180, (20, 120, 190), 4, cv2.LINE_AA)
    for side in (-1, 1):
        if closed_eyes:
            cv2.line(img, (cx + side * 60 - 18, cy - 45), (cx + side * 60 + 18, cy - 45), INK, 6, cv2.LINE_AA)
        else:
            cv2.ellipse(img, (cx + side * 60, cy - 45), (18, 32), 0, 0, 360, INK, cv2.FILLED, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy + 45), (80, 35), 0, 20, 160, INK, 7, cv2.LINE_AA)
    return img, (cx - 80, cy + 40, 160, 50)


STYLES: dict[str, Callable[[bool], tuple[np.ndarray, MouthBox]]] = {
    "flat cartoon": flat_cartoon,
    "shaded cartoon": shaded_cartoon,
    "anime": anime_face,
    "emoji": emoji_face,
}


def cartoon_clip(style: str, speech: Path, out: Path, seconds: float, fps: int = 25) -> MouthBox:
    """A still drawn character (blinking every 2 s) as an H.264 video with `speech` under it; returns where its
    mouth is (x, y, w, h)."""
    draw = STYLES[style]
    (open_eyes, box), (shut, _box) = draw(False), draw(True)
    frames = int(round(seconds * fps))
    cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
           f"{WIDTH}x{HEIGHT}", "-r", str(fps), "-i", "-", "-i", str(speech), "-t", f"{frames / fps:.3f}",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-c:a", "aac", str(out)]  # fmt: skip
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        for t in range(frames):
            proc.stdin.write((shut if t % (2 * fps) in (fps, fps + 1, fps + 2) else open_eyes).tobytes())
        proc.stdin.close()
        assert proc.wait() == 0
    return box


def box_opening(frames: list[np.ndarray], box: MouthBox, dark: float = 110.0) -> np.ndarray:
    """Per frame, how open the mouth in `box` is, from the pixels: the count of dark pixels (luminance under
    `dark`: the drawing's lines and a mouth's interior) per column, over the middle third of the box's columns,
    from the box's top down to half its width below it (room for a wide-open mouth), in pixels. A closed mouth
    leaves its line's thickness."""
    x, y, w, h = box
    out = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        part = grey[y : y + h + w // 2, x + w // 3 : x + w - w // 3]
        out.append(float((part < dark).sum()) / part.shape[1])
    return np.asarray(out)
