"""A talking video from one photo: the mouth follows the audio, eyes blink at human intervals, the head
drifts slightly and the shoulders rise and fall with breathing.

The photo is moved by a smooth per-frame affine transform (head motion and breathing) and its landmarks
with it, so the same renderer that re-voices videos animates the mouth and the blinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dubbing import backends
from dubbing.errors import DubbingError
from dubbing.lipsync import DRIVE_RATE, LipsyncResult, load_audio, mouth_drive, render_faces
from dubbing.lipsync.faces import N_POINTS, FaceData, detect_photo, face_box
from dubbing.lipsync.render import BACKENDS
from dubbing.lipsync.video import FrameWriter, VideoStream

BLINK_MEAN_S = 4.0  # people blink every 2-10 s, about 15 times a minute
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.04, 0.11
BREATH_S = 4.0  # one breath


def read_photo(photo: Path) -> np.ndarray:
    """The photo as BGR with even dimensions (the encoder's 4:2:0 needs them)."""
    photo = Path(photo)
    if not photo.is_file():
        raise DubbingError(f"photo not found: {photo}")
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise DubbingError(f"not a readable image: {photo}")
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])


def blink_track(frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Eye closure per frame: blinks at random human intervals (gamma-distributed, mean BLINK_MEAN_S)."""
    closure = np.zeros(frames, np.float32)
    t = rng.uniform(0.8, 2.5)
    times = (np.arange(frames) + 0.5) / fps
    while t < frames / fps:
        close_end, hold_end = t + BLINK_CLOSE_S, t + BLINK_CLOSE_S + BLINK_HOLD_S
        open_end = hold_end + BLINK_OPEN_S
        closing = (times >= t) & (times < close_end)
        closure[closing] = np.maximum(closure[closing], (times[closing] - t) / BLINK_CLOSE_S)
        closure[(times >= close_end) & (times < hold_end)] = 1.0
        opening = (times >= hold_end) & (times < open_end)
        closure[opening] = np.maximum(closure[opening], 1 - (times[opening] - hold_end) / BLINK_OPEN_S)
        t = open_end + max(1.5, rng.gamma(4.0, BLINK_MEAN_S / 4.0))
    if frames and not closure.any() and frames / fps > 1.0:  # short clips still blink once
        mid = frames // 2
        closure[mid : mid + max(1, int(0.15 * fps))] = 1.0
    return closure


def head_motion(
    frames: int, fps: float, size: tuple[int, int], centre: np.ndarray, speech: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(frames, 2, 3) affine maps: slow sway and nods (a few sines with random phases, a little more while
    speaking), breathing as a slight rise of the whole picture, and a small zoom so no border shows."""
    w, h = size
    t = np.arange(frames) / fps
    phase = rng.uniform(0, 2 * np.pi, 6)
    talk = np.convolve(speech.astype(np.float32), np.ones(int(fps)) / fps, mode="same") if frames else speech
    roll = 0.9 * np.sin(2 * np.pi * 0.11 * t + phase[0]) + 0.4 * np.sin(2 * np.pi * 0.29 * t + phase[1])
    dx = 0.004 * w * np.sin(2 * np.pi * 0.07 * t + phase[2]) + 0.002 * w * np.sin(2 * np.pi * 0.23 * t + phase[3])
    nod = 0.003 * h * np.sin(2 * np.pi * 0.17 * t + phase[4]) + 0.002 * h * talk * np.sin(
        2 * np.pi * 0.9 * t + phase[5]
    )
    breath = -0.0025 * h * (0.5 - 0.5 * np.cos(2 * np.pi * t / BREATH_S))
    maps = np.empty((frames, 2, 3), np.float64)
    for i in range(frames):
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(roll[i]), 1.03)
        m[0, 2] += dx[i]
        m[1, 2] += nod[i] + breath[i]
        maps[i] = m
    return maps


def make_avatar(
    photo: Path,
    audio: Path,
    out: Path,
    *,
    fps: float = 25.0,
    resolution: str | None = None,
    fmt: str | None = None,
    seed: int = 0,
    backend: str = "classical",
    backend_options: Mapping[str, Any] | None = None,
    crf: int = 17,
    preset: str = "superfast",
) -> LipsyncResult:
    """Write a talking video of the face in PHOTO speaking AUDIO, as long as the audio."""
    image = read_photo(photo)
    landmarks = detect_photo(image)
    if landmarks is None:
        raise DubbingError(f"no face found in {photo}: use a photo with a clearly visible, roughly frontal face")
    speech = load_audio(audio)
    if speech.size == 0:
        raise DubbingError(f"{audio} holds no audio samples")
    duration = speech.size / DRIVE_RATE
    frames = max(1, int(np.ceil(duration * fps)))
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    drive = mouth_drive(speech, fps, frames)
    x0, y0, x1, y1 = face_box(landmarks)
    maps = head_motion(frames, fps, (w, h), np.array([(x0 + x1) / 2, y1]), drive.speech, rng)
    points = np.einsum("tij,kj->tki", maps, np.concatenate([landmarks, np.ones((N_POINTS, 1))], axis=1))
    faces = FaceData(
        points=points[:, None].astype(np.float32),
        ids=np.zeros((frames, 1), np.int32),
        yaw=np.zeros((frames, 1), np.float32),
        mouth_contrast=np.full((frames, 1), np.nan, np.float32),
        cuts=[],
        fps=fps,
        width=w,
        height=h,
        active=np.zeros(frames, np.int32),
    )

    def picture(i: int) -> np.ndarray:
        return cv2.warpAffine(image, maps[i], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    stream = VideoStream(width=w, height=h, fps=Fraction(fps).limit_denominator(1001), frames=frames)
    renderer = backends.build(BACKENDS, backend, "lipsync", backend_options)
    writer = FrameWriter(
        out,
        stream,
        audio=Path(audio),
        fmt=fmt or (Path(out).suffix.lstrip(".") or "mp4"),
        resolution=resolution,
        crf=crf,
        preset=preset,
        duration_s=frames / fps,
    )
    with writer:
        animated = render_faces(
            (picture(i) for i in range(frames)),
            lambda wanted: {i: picture(i) for i in wanted},
            fps,
            faces,
            drive,
            speech,
            writer,
            renderer,
            blink=blink_track(frames, fps, rng),
        )
    return LipsyncResult(Path(out), writer.frames, animated, 1, renderer.name)
