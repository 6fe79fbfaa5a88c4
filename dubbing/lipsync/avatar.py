"""A talking video from one photo: the mouth follows the audio, and the face follows the voice: the head dips
on stressed words and sways while speaking, the brows rise on them, the eyes blink at human intervals (mostly in
the pauses), the shoulders rise and fall with breathing.

The photo is moved by a smooth per-frame affine transform (head motion and breathing) and its landmarks
with it, so the same renderer that re-voices videos animates the mouth and the blinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dubbing import backends
from dubbing.errors import DubbingError
from dubbing.lipsync import DRIVE_RATE, LipsyncResult, load_audio, mouth_drive, render_faces
from dubbing.lipsync.faces import N_POINTS, FaceData, detect_photo, face_box
from dubbing.lipsync.render import BACKENDS, BROW_L, BROW_R, EYE_L_UP, EYE_R_UP, clip_box, triangulate, warp_mesh
from dubbing.lipsync.video import FrameWriter, VideoStream
from dubbing.lipsync.visemes import MouthDrive

BLINK_MEAN_S = 4.0  # people blink every 2-10 s, about 15 times a minute, more often in pauses than mid-word
BLINK_MIN_S, BLINK_MAX_S = 2.0, 10.0  # start to start
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.04, 0.11
BLINK_TO_PAUSE_S = 1.0  # a blink due this close to a pause in the speech moves to the pause
BREATH_S = 4.0  # one breath


@dataclass
class Portrait:
    """A photo read and its face found: what the avatar checks before any audio is made or read."""

    image: np.ndarray  # BGR, even size
    landmarks: np.ndarray  # (N_POINTS, 2)
    path: Path


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


def load_portrait(photo: Path) -> Portrait:
    """The photo and its face, or a one-line error: checked first, so no speech is synthesised for a photo
    that cannot be animated."""
    image = read_photo(photo)
    landmarks = detect_photo(image)
    if landmarks is None:
        raise DubbingError(f"no face found in {photo}: use a photo with a clearly visible, roughly frontal face")
    return Portrait(image, landmarks, Path(photo))


def loudness(audio: np.ndarray, fps: float, frames: int, rate: int = DRIVE_RATE) -> np.ndarray:
    """The voice's loudness per frame in [0, 1]: RMS level in dB over a 50 ms window at each frame, from 40 dB
    under the speech's loud parts (its 95th percentile) up to them. What the head motion follows."""
    times = (np.arange(frames) + 0.5) / fps
    half = int(0.025 * rate)
    power = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    centre = np.clip((times * rate).astype(int), 0, max(audio.size - 1, 0))
    lo, hi = np.clip(centre - half, 0, audio.size), np.clip(centre + half, 0, audio.size)
    rms = np.sqrt((power[hi] - power[lo]) / np.maximum(hi - lo, 1))
    db = 20 * np.log10(rms + 1e-6)
    top = float(np.percentile(db, 95)) if frames else 0.0
    return np.clip((db - (top - 40.0)) / 40.0, 0.0, 1.0).astype(np.float32)


def _smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing (edges held)."""
    if x.size == 0 or sigma_frames <= 0:
        return x.astype(np.float64)
    radius = int(3 * sigma_frames) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    padded = np.pad(x.astype(np.float64), radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def blink_times(
    duration_s: float,
    rng: np.random.Generator,
    pauses: np.ndarray | None = None,
    to_pause_s: float = BLINK_TO_PAUSE_S,
) -> list[float]:
    """Blink start times: the first within 0.8-2.5 s, then gamma-distributed intervals (mean BLINK_MEAN_S)
    kept within 2-10 s; a blink due within `to_pause_s` of the start of a pause in the speech (`pauses`,
    seconds) moves to it, as people blink at the ends of phrases rather than mid-word."""
    pauses = np.asarray(pauses if pauses is not None else [], np.float64)
    times: list[float] = []
    t = float(rng.uniform(0.8, 2.5))
    while t < duration_s - (BLINK_CLOSE_S + BLINK_HOLD_S):
        times.append(t)
        due = t + float(np.clip(rng.gamma(4.0, BLINK_MEAN_S / 4.0), BLINK_MIN_S, BLINK_MAX_S))
        near = pauses[(np.abs(pauses - due) <= to_pause_s) & (pauses - t >= BLINK_MIN_S)]
        near = near[near - t <= BLINK_MAX_S]
        t = float(near[np.argmin(np.abs(near - due))]) if near.size else due
    return times


def pause_starts(speech: np.ndarray, fps: float, min_s: float = 0.25) -> np.ndarray:
    """Seconds where the speech stops for at least `min_s` (speech: per-frame bool)."""
    quiet = ~np.asarray(speech, bool)
    starts = np.flatnonzero(quiet[1:] & ~quiet[:-1]) + 1
    need = max(1, int(round(min_s * fps)))
    return np.array([s / fps for s in starts if quiet[s : s + need].all() and s + need <= quiet.size])


def blink_track(frames: int, fps: float, rng: np.random.Generator, speech: np.ndarray | None = None) -> np.ndarray:
    """Eye closure per frame: blinks at human intervals (`blink_times`), in the pauses of `speech` (per-frame
    bool) where one is near; 70 ms closing, a short hold, 110 ms opening."""
    starts = blink_times(frames / fps, rng, None if speech is None else pause_starts(speech, fps))
    if frames and not starts and frames / fps > 1.0:  # short clips still blink once
        starts = [frames / fps / 2]
    return blink_closure(frames, fps, starts, rng)


def blink_closure(frames: int, fps: float, starts: list[float], rng: np.random.Generator) -> np.ndarray:
    """Eye closure per frame for blinks starting at `starts` (seconds): 70 ms closing, a random hold, 110 ms
    opening."""
    closure = np.zeros(frames, np.float32)
    times = (np.arange(frames) + 0.5) / fps
    for t in starts:
        hold = BLINK_HOLD_S * float(rng.uniform(0.5, 1.5))
        close_end, hold_end = t + BLINK_CLOSE_S, t + BLINK_CLOSE_S + hold
        open_end = hold_end + BLINK_OPEN_S
        closing = (times >= t - 0.5 / fps) & (times < close_end)  # the frame the blink starts in starts closing
        closure[closing] = np.maximum(closure[closing], np.clip((times[closing] - t) / BLINK_CLOSE_S, 0.3, 1.0))
        closure[(times >= close_end) & (times < hold_end)] = 1.0
        opening = (times >= hold_end) & (times < open_end)
        closure[opening] = np.maximum(closure[opening], 1 - (times[opening] - hold_end) / BLINK_OPEN_S)
    return closure


def head_motion(
    frames: int,
    fps: float,
    size: tuple[int, int],
    centre: np.ndarray,
    loud: np.ndarray,
    rng: np.random.Generator,
    *,
    expression: bool = True,
) -> np.ndarray:
    """(frames, 2, 3) affine maps of the photo. With `expression`: a slow idle sway (a few sines with random
    phases), motion that follows the voice (the head dips on the loud, stressed parts, about 0.6% of the height
    against the phrase's own level, and sways more while speaking, so it moves with the speech and rests in
    its pauses), breathing as a slight rise of the whole picture. Always a 3% zoom so no border shows; without
    `expression` the picture stays still."""
    w, h = size
    t = np.arange(frames) / fps
    phase = rng.uniform(0, 2 * np.pi, 8)
    on = 1.0 if expression else 0.0
    stress = _smooth(loud, 0.12 * fps)  # syllables blur into stressed words
    level = _smooth(loud, 0.6 * fps)  # how much the phrase is speaking
    dip = np.clip(stress - level, 0.0, None)  # louder than its surroundings: emphasis
    roll = on * (
        0.5 * np.sin(2 * np.pi * 0.11 * t + phase[0])
        + 0.25 * np.sin(2 * np.pi * 0.29 * t + phase[1])
        + 1.2 * level * np.sin(2 * np.pi * 0.7 * t + phase[6])
    )
    dx = (
        on
        * w
        * (
            0.003 * np.sin(2 * np.pi * 0.07 * t + phase[2])
            + 0.0015 * np.sin(2 * np.pi * 0.23 * t + phase[3])
            + 0.003 * level * np.sin(2 * np.pi * 0.5 * t + phase[7])
        )
    )
    nod = on * h * (0.002 * np.sin(2 * np.pi * 0.17 * t + phase[4]) + 0.012 * dip + 0.002 * level)
    breath = -on * 0.0025 * h * (0.5 - 0.5 * np.cos(2 * np.pi * t / BREATH_S + phase[5]))
    maps = np.empty((frames, 2, 3), np.float64)
    for i in range(frames):
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(roll[i]), 1.03)
        m[0, 2] += dx[i]
        m[1, 2] += nod[i] + breath[i]
        maps[i] = m
    return maps


BROW_LIFT = 0.35  # at full emphasis the brows rise this much of their height above the eye


def brow_track(loud: np.ndarray, fps: float) -> np.ndarray:
    """Brow raise per frame in [0, 1]: up on emphasis (a word louder than its phrase), held over the word and
    eased back, as speakers raise their brows on the words they stress."""
    stress = _smooth(loud, 0.12 * fps)
    level = _smooth(loud, 0.6 * fps)
    return np.clip(_smooth(np.clip(stress - level, 0.0, None), 0.15 * fps) * 4.0, 0.0, 1.0).astype(np.float32)


class BrowLift:
    """Raises the photo's brows by a per-frame amount: one piecewise-affine warp of the band around both eyes and
    brows, the upper eyelids and a ring around the band fixed, so the eyes and the forehead beyond stay put (the
    skin between the brows follows them part of the way)."""

    STEPS = 32

    def __init__(self, image: np.ndarray, landmarks: np.ndarray) -> None:
        self.image = image
        lids, arches = landmarks[EYE_L_UP + EYE_R_UP], landmarks[BROW_L + BROW_R]
        self.rise = float(np.clip(lids[:, 1].mean() - arches[:, 1].mean(), 2.0, None))  # brow height above the eye
        band = np.concatenate([arches, lids])
        centre = band.mean(axis=0)
        radius = np.ptp(band, axis=0) * 0.62 + 1.5 * self.rise
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ring = centre + np.stack([np.cos(ang), np.sin(ang)], axis=1) * radius
        self.src = np.concatenate([arches, lids, ring]).astype(np.float64)
        self.tris = triangulate(self.src)
        h, w = image.shape[:2]
        self.box = clip_box(self.src, w, h)
        self._bands: dict[int, np.ndarray] = {}  # the raised band per step

    def shift(self, amount: float) -> np.ndarray:
        """How far the brows' points move at `amount` (up is -y)."""
        return np.array([0.0, -BROW_LIFT * self.rise * amount])

    def __call__(self, amount: float) -> np.ndarray:
        """The photo with the brows raised by `amount`, in steps of 1/STEPS (a fraction of a pixel), each
        drawn once."""
        step = int(round(float(np.clip(amount, 0.0, 1.0)) * self.STEPS))
        if step == 0 or self.box is None:
            return self.image
        if step not in self._bands:
            dst = self.src.copy()
            dst[: len(BROW_L + BROW_R)] += self.shift(step / self.STEPS)
            patch, covered = warp_mesh(self.image, self.src, dst, self.tris, self.box)
            x0, y0, x1, y1 = self.box
            band = self.image[y0:y1, x0:x1].copy()
            band[covered] = patch[covered]
            self._bands[step] = band
        out = self.image.copy()
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self._bands[step]
        return out


@dataclass
class Animation:
    """What moves in an avatar, per frame: the photo's affine maps, eye closure, the mouth's targets and the
    loudness the head follows (the benchmark measures the rendered video against these)."""

    maps: np.ndarray  # (frames, 2, 3)
    blink: np.ndarray | None  # eye closure in [0, 1]; None: eyes left alone
    drive: MouthDrive
    loud: np.ndarray
    brows: np.ndarray  # brow raise in [0, 1]

    @property
    def frames(self) -> int:
        return len(self.maps)


def animate(portrait: Portrait, speech: np.ndarray, fps: float, *, seed: int = 0, expression: bool = True) -> Animation:
    """The avatar's motion for `speech` (mono at DRIVE_RATE), the same for the same seed."""
    frames = max(1, int(np.ceil(speech.size / DRIVE_RATE * fps)))
    rng = np.random.default_rng(seed)
    h, w = portrait.image.shape[:2]
    drive = mouth_drive(speech, fps, frames)
    loud = loudness(speech, fps, frames)
    x0, _y0, x1, y1 = face_box(portrait.landmarks)
    maps = head_motion(frames, fps, (w, h), np.array([(x0 + x1) / 2, y1]), loud, rng, expression=expression)
    blink = blink_track(frames, fps, rng, drive.speech) if expression else None
    brows = brow_track(loud, fps) if expression else np.zeros(frames, np.float32)
    return Animation(maps, blink, drive, loud, brows)


def make_avatar(
    photo: Path | Portrait,
    audio: Path,
    out: Path,
    *,
    fps: float = 25.0,
    resolution: str | None = None,
    fmt: str | None = None,
    seed: int = 0,
    expression: bool = True,
    backend: str = "classical",
    backend_options: Mapping[str, Any] | None = None,
    crf: int = 17,
    preset: str = "superfast",
) -> LipsyncResult:
    """Write a talking video of the face in PHOTO speaking AUDIO, as long as the audio. With `expression` (the
    default) the eyes blink and the head and brows move with the voice; without, only the mouth moves."""
    portrait = photo if isinstance(photo, Portrait) else load_portrait(photo)
    image, landmarks = portrait.image, portrait.landmarks
    speech = load_audio(audio)
    if speech.size == 0:
        raise DubbingError(f"{audio} holds no audio samples")
    motion = animate(portrait, speech, fps, seed=seed, expression=expression)
    frames, maps = motion.frames, motion.maps
    h, w = image.shape[:2]
    lift = BrowLift(image, landmarks)
    base = np.repeat(landmarks[None].astype(np.float64), frames, axis=0)
    base[:, BROW_L + BROW_R] += motion.brows[:, None, None] * lift.shift(1.0)
    points = np.einsum("tij,tkj->tki", maps, np.concatenate([base, np.ones((frames, N_POINTS, 1))], axis=2))
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
        return cv2.warpAffine(lift(float(motion.brows[i])), maps[i], (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)  # fmt: skip

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
            motion.drive,
            speech,
            writer,
            renderer,
            blink=motion.blink,
        )
    return LipsyncResult(Path(out), writer.frames, animated, 1, renderer.name)
