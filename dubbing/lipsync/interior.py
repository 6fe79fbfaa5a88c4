"""Mouth interiors (teeth, tongue, throat) for the classical renderer, where it opens a mouth wider than the frame's
own.

A video lends its own open mouths: `InteriorBank` keeps a few of the clip's open-mouth frames spread over opening,
width and pose, chooses per rendered frame the one whose mouth best matches the wanted shape and holds that choice
(a new one must be clearly better, and only after a few frames), so the teeth do not flicker between sources. The
renderer warps the chosen interior into the new lip outline once and `relight` matches it to the frame by the skin
around the mouth (brightness per side of the mouth, colour in Lab). A photo with a closed mouth has nothing
to lend: `painted_interior` builds one from the photo's own tones, with depth (the throat darkens away from the
lips), upper teeth with separations and shading, a shaded tongue and the photo's grain.

Everything here works on the 478 face-mesh landmarks (image coordinates); it imports no other renderer code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from dubbing.lipsync.faces import LOWER_INNER, LOWER_OUTER, UPPER_INNER, UPPER_OUTER, face_axes

OUTER = UPPER_OUTER + LOWER_OUTER[-2:0:-1]
INNER = UPPER_INNER + LOWER_INNER[-2:0:-1]


def inner_gap(pts: np.ndarray) -> float:
    """Mean inner-lip opening over the middle of the mouth (eye-distance units): steadier than one point pair."""
    _right, down, scale = face_axes(pts)
    mid = slice(3, 8)
    diff = pts[LOWER_INNER[mid]] - pts[UPPER_INNER[mid]]
    return float(np.mean(diff @ down)) / scale


def inner_width(pts: np.ndarray) -> float:
    right, _down, scale = face_axes(pts)
    return float(abs((pts[308] - pts[78]) @ right)) / scale


def polygon_mask(shape: tuple[int, ...], pts: np.ndarray, idx: list[int]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[idx] * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


# ---------------------------------------------------------------- tone (relighting)


def skin_band(shape: tuple[int, ...], pts: np.ndarray, width: float = 0.12) -> np.ndarray:
    """The skin around the lips: their outline grown by `width` eye distances, less the lips."""
    _right, _down, scale = face_axes(pts)
    outer = polygon_mask(shape, pts, OUTER).astype(np.uint8)
    grow = max(3, int(scale * width)) | 1
    ring = cv2.dilate(outer, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))).astype(bool)
    return ring & ~outer.astype(bool)


def lips_mask(shape: tuple[int, ...], pts: np.ndarray) -> np.ndarray:
    return polygon_mask(shape, pts, OUTER) & ~polygon_mask(shape, pts, INNER)


def tone(image: np.ndarray, pts: np.ndarray, region: np.ndarray | None = None) -> np.ndarray | None:
    """Mean Lab (L in 0-100) of `region` (default: the skin band around the lips), per side of the mouth: (2, 3),
    left then right. The lips are left out by default: in a frame being re-rendered they are warped and stretched,
    and matching on them measured worse (colour distance to the person's own open mouths 8.7 and 4.9 against 7.5
    and 3.7 on skin alone, benchmarks/bench_interior.py). None where too little of the region lies in the image."""
    ys, xs = np.nonzero(skin_band(image.shape, pts) if region is None else region)
    if len(xs) < 40:
        return None
    lab = cv2.cvtColor(image[ys, xs][None].astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)[0]
    right, _down, _scale = face_axes(pts)
    centre = (pts[61] + pts[291]) / 2
    side = (np.stack([xs, ys], axis=1) - centre) @ right > 0
    if side.sum() < 20 or (~side).sum() < 20:
        return None
    return np.stack([lab[~side].mean(axis=0), lab[side].mean(axis=0)])


def relight(interior: np.ndarray, pts: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Re-light an interior (float BGR, drawn in the target's geometry `pts`) taken under the `source` tone to the
    `target` tone: lightness by a gain that runs linearly from the mouth's left to its right (side light), colour
    by a shift of a and b. Gains are bounded: a wrong tone must not paint the teeth black or white."""
    lab = cv2.cvtColor(np.clip(interior, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    gain = np.clip(target[:, 0] / np.maximum(source[:, 0], 1.0), 0.6, 1.6)  # (left, right)
    shift = np.clip((target[:, 1:] - source[:, 1:]).mean(axis=0), -12, 12)
    right, _down, _scale = face_axes(pts)
    half = max(float(abs((pts[291] - pts[61]) @ right)) / 2, 1.0)
    centre = (pts[61] + pts[291]) / 2
    h, w = interior.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    t = np.clip(((xs - centre[0]) * right[0] + (ys - centre[1]) * right[1]) / half, -1, 1) * 0.5 + 0.5
    lab[..., 0] = np.clip(lab[..., 0] * (gain[0] * (1 - t) + gain[1] * t), 0, 100)
    lab[..., 1:] += shift
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR) * 255.0


# ---------------------------------------------------------------- warping an interior into a new opening


def _strip(n: int, offset: int) -> np.ndarray:
    tris = []
    for k in range(n - 1):
        a, b = offset + k, offset + n + k
        tris += [(a, a + 1, b + 1), (a, b + 1, b)]
    return np.asarray(tris, np.int32)


N_INNER = len(UPPER_INNER)
ROW_TRIS = np.concatenate([_strip(N_INNER, r * N_INNER) for r in range(3)])  # upper lip, teeth, throat, lower lip


def interior_rows(pts: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Four rows of points across the opening, column by column: the upper inner lip, `upper` pixels below it
    (the upper teeth's edge), `lower` pixels above the lower inner lip (the lower teeth's), the lower inner lip.
    Each offset is capped at 45% of the column's opening so the rows never cross."""
    up, lo = pts[UPPER_INNER], pts[LOWER_INNER]
    _right, down, _scale = face_axes(pts)
    gap = np.maximum((lo - up) @ down, 0.0)
    a, b = np.minimum(upper, 0.45 * gap), np.minimum(lower, 0.45 * gap)
    return np.concatenate([up, up + a[:, None] * down, lo - b[:, None] * down, lo])


def teeth_extent(crop: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a source mouth's teeth end, per column in pixels below the upper and above the lower inner lip, read
    from the picture (teeth are the light part of the opening, the throat the dark part). Warping with these rows
    moved, not stretched, keeps the teeth their size while the throat between them takes the change of opening.
    Columns without a clear light-dark split take a third and a fifth of the opening."""
    up, lo = pts[UPPER_INNER], pts[LOWER_INNER]
    _right, down, _scale = face_axes(pts)
    gap = np.maximum((lo - up) @ down, 0.0)
    steps = np.linspace(0.0, 1.0, 25)
    line = up[:, None, :] + steps[None, :, None] * (lo - up)[:, None, :]  # (columns, steps, xy)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    xy = line.reshape(-1, 2).astype(np.float32)
    values = cv2.remap(grey, xy[:, 0:1], xy[:, 1:2], cv2.INTER_LINEAR).reshape(line.shape[:2])
    middle = values[2:-2, 2:-2]
    dark, light = np.percentile(middle, 10), np.percentile(middle, 90)
    upper, lower = 0.33 * gap, 0.2 * gap
    if light - dark < 30:  # no teeth against a throat to tell apart
        return upper, lower
    lit = values > (dark + light) / 2
    for j in range(2, len(gap) - 2):
        down_run = np.argmin(lit[j, 2:]) if not lit[j, 2:].all() else len(steps) - 2  # light from the top
        up_run = np.argmin(lit[j, ::-1][2:]) if not lit[j, ::-1][2:].all() else len(steps) - 2
        if lit[j, 2:].any():
            upper[j] = steps[min(2 + down_run, len(steps) - 1)] * gap[j]
        if lit[j, ::-1][2:].any():
            lower[j] = steps[min(2 + up_run, len(steps) - 1)] * gap[j]
    return upper, lower


# ---------------------------------------------------------------- the bank of the clip's own open mouths


@dataclass
class BankFrame:
    """One of the clip's own open mouths: a crop of the frame and its landmarks in crop coordinates."""

    index: int  # frame index in the clip
    crop: np.ndarray
    pts: np.ndarray
    gap: float
    width: float
    pose: np.ndarray
    tone: np.ndarray | None = None
    upper: np.ndarray = field(default_factory=lambda: np.zeros(0))  # teeth rows (`teeth_extent`), pixels
    lower: np.ndarray = field(default_factory=lambda: np.zeros(0))


def sharpness(crop: np.ndarray, pts: np.ndarray) -> float:
    """Variance of the Laplacian over the mouth opening (motion blur and defocus lower it)."""
    mask = polygon_mask(crop.shape, pts, INNER)
    if mask.sum() < 10:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F)[mask].var())


def spread_picks(features: np.ndarray, first: int, size: int) -> list[int]:
    """Farthest-point sampling: `first`, then repeatedly the row farthest from every row picked (rows already
    scaled so one unit is a comparable change of shape)."""
    picks = [first]
    dist = np.linalg.norm(features - features[first], axis=1)
    while len(picks) < min(size, len(features)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 1e-9:
            break
        picks.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(features - features[nxt], axis=1))
    return picks


def shape_features(gaps: np.ndarray, widths: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Rows that make a unit mean about the same visible change: 20% of opening, 8% of width, a head turn (pose
    signatures of one clip lie 0.1-0.45 apart, consecutive frames 0.03-0.1)."""
    return np.column_stack(
        [np.log(np.maximum(gaps, 1e-3)) / 0.2, np.log(np.maximum(widths, 1e-3)) / 0.08, poses / 0.25]
    )


@dataclass
class InteriorBank:
    """A face's own open mouths and the running choice among them (render calls come in frame order)."""

    frames: list[BankFrame]
    hold: int = 6  # a choice lasts at least this many frames while the interior is shown
    better: float = 0.6  # and gives way only to a frame whose cost is below this share of its own
    current: int | None = None
    held: int = 0

    stretch: float = 0.85  # a source may be stretched to an opening at most 1/0.85 of its own

    def cost(self, k: int, gap: float, width: float, pose: np.ndarray) -> float:
        """Squared distance in `shape_features` units; a source less open than wanted costs three times as much
        (stretching an interior drags its teeth long; squeezing one shows less throat, which is natural)."""
        f = self.frames[k]
        feats = shape_features(np.array([f.gap, gap]), np.array([f.width, width]), np.stack([f.pose, pose]))
        diff = (feats[0] - feats[1]) ** 2
        if f.gap < gap:
            diff[0] *= 3.0
        return float(np.sum(diff))

    def choose(self, gap: float, width: float, pose: np.ndarray) -> BankFrame:
        """The bank frame for a wanted mouth: the cheapest of those open enough (or the most open), held for
        `hold` frames unless it is no longer open enough, and then only given up for a clearly cheaper one."""
        gaps = np.array([f.gap for f in self.frames])
        fits = gaps >= self.stretch * gap
        if not fits.any():
            fits = gaps == gaps.max()
        costs = np.array([self.cost(k, gap, width, pose) if fits[k] else np.inf for k in range(len(self.frames))])
        best = int(np.argmin(costs))
        if self.current is None:
            self.current, self.held = best, 0
        elif best != self.current and (
            not fits[self.current] or (self.held >= self.hold and costs[best] < self.better * costs[self.current])
        ):
            self.current, self.held = best, 0
        self.held += 1
        return self.frames[self.current]

    def rest(self) -> None:
        """No interior shown on this frame (the mouth is closed or at its own opening): the next opening may choose
        afresh, a change there is hidden by the closing."""
        self.current = None


# ---------------------------------------------------------------- a painted interior (photos)


def grain_level(patch: np.ndarray, pts: np.ndarray) -> float:
    """High-frequency standard deviation of the skin and lips around the mouth (sensor noise, compression grain)."""
    ring = skin_band(patch.shape, pts, 0.15) | lips_mask(patch.shape, pts)
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.float32)
    high = grey - cv2.GaussianBlur(grey, (3, 3), 0)
    return float(np.std(high[ring])) * 1.6 if ring.sum() > 20 else 1.5  # the 3x3 high-pass keeps ~60% of white noise


# Upper tooth edges from the midline outwards, in eye-distance units as seen from the front: central incisor,
# lateral incisor, canine, premolars (the arch turns away from the camera, so each shows narrower).
TOOTH_EDGES = np.array([0.0, 0.085, 0.148, 0.198, 0.236, 0.266, 0.29, 0.31])


def _mouth_coords(shape: tuple[int, ...], pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: u (across the mouth, from its centre, eye-distance units), the upper and lower inner lip's v at
    that u, and v itself (down the face)."""
    right, down, scale = face_axes(pts)
    centre = (pts[78] + pts[308]) / 2
    h, w = shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32) - centre[0], np.arange(h, dtype=np.float32) - centre[1])
    u = (xs * right[0] + ys * right[1]) / scale
    v = (xs * down[0] + ys * down[1]) / scale

    def curve(idx: list[int]) -> np.ndarray:
        rel = (pts[idx] - centre) / scale
        cu, cv = rel @ right, rel @ down
        order = np.argsort(cu)
        return np.interp(u, cu[order], cv[order])

    return u, curve(UPPER_INNER), curve(LOWER_INNER), v


def _lab_to_bgr(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2BGR) * 255.0


def painted_interior(patch: np.ndarray, pts: np.ndarray, seed: int = 0) -> np.ndarray:
    """A mouth interior for a face that never opens its mouth, in `patch`'s geometry (float BGR, whole patch;
    the caller masks it to the opening). Tones come from the photo: the throat from its lips, darkening with
    depth; upper teeth from its skin, shaded by the arch (darker towards the corners), the lip's shadow and each
    tooth's curve, with dark separations; a tongue from the lips, lit on its crown; then the photo's own grain."""
    _right, _down, scale = face_axes(pts)
    rng = np.random.default_rng(seed)
    lips, skin = tone(patch, pts, lips_mask(patch.shape, pts)), tone(patch, pts)
    lips_lab = lips.mean(axis=0) if lips is not None else np.array([45.0, 18.0, 12.0])
    skin_l = float(skin[:, 0].max()) if skin is not None else 65.0
    u, v_up, v_lo, v = _mouth_coords(patch.shape, pts)
    gap = np.maximum(v_lo - v_up, 1e-4)
    s = np.clip((v - v_up) / gap, 0, 1)  # 0 at the upper lip, 1 at the lower
    half = max(float(np.abs(((pts[[78, 308]] - (pts[78] + pts[308]) / 2) / scale) @ _right).max()), 0.05)
    across = np.clip(np.abs(u) / half, 0, 1)  # 0 mid-mouth, 1 at the corners
    # throat: the lips' hue, dark, darkest at the back (mid-opening) and in the corners
    depth = np.sin(np.pi * s) * (1 - across**2)
    lab = np.empty((*patch.shape[:2], 3), np.float32)
    lab[..., 0] = lips_lab[0] * (0.42 - 0.30 * depth**0.7) * (1 - 0.35 * across**2)
    lab[..., 1] = lips_lab[1] * 0.8 + 4
    lab[..., 2] = lips_lab[2] * 0.5
    # tongue: a dome rising from the lower lip, lit on its crown, fading into the throat at its back
    tongue_h = 0.38 * gap * (1 - across**2) ** 0.5
    rise = (v_lo - v) / np.maximum(tongue_h, 1e-4)  # 0 at the lower lip, 1 at the tongue's top
    tongue = np.clip(1 - rise, 0, 1) * (rise >= 0)
    crown = np.exp(-(((rise - 0.65) / 0.25) ** 2)) * (1 - across) * (rise >= 0) * (rise <= 1)
    texture = cv2.GaussianBlur(rng.normal(0, 1, patch.shape[:2]).astype(np.float32), (0, 0), max(0.8, scale * 0.006))
    t_l = lips_lab[0] * (0.62 + 0.18 * crown) * (1 - 0.3 * across**2) + 2.5 * texture
    t_mix = np.clip(tongue * 3, 0, 1) * (rise <= 1)
    lab[..., 0] = lab[..., 0] * (1 - t_mix) + t_l * t_mix
    lab[..., 1] = lab[..., 1] * (1 - t_mix) + (lips_lab[1] * 1.1 + 6) * t_mix
    lab[..., 2] = lab[..., 2] * (1 - t_mix) + lips_lab[2] * 0.8 * t_mix
    tooth_l = float(np.clip(skin_l + 10, 62, 94))  # teeth are lit like the skin, a little lighter
    _teeth(lab, u, v_lo - v, gap, across, tooth_l * 0.82, (0.045, 0.2), scale, rng)  # lower teeth, in shadow
    _teeth(lab, u, v - v_up, gap, across, tooth_l, (0.1, 0.45), scale, rng)
    bgr = _lab_to_bgr(lab)
    bgr += rng.normal(0, grain_level(patch, pts), patch.shape[:2]).astype(np.float32)[..., None]
    return np.clip(bgr, 0, 255)


def _teeth(
    lab: np.ndarray,
    u: np.ndarray,
    below: np.ndarray,
    gap: np.ndarray,
    across: np.ndarray,
    tooth_l: float,
    size: tuple[float, float],
    scale: float,
    rng: np.random.Generator,
) -> None:
    """One row of teeth drawn into `lab` in place, `below` (eye-distance units) away from the lip it hangs from:
    crowns up to `size` = (eye-distance units, share of the opening) tall, shorter towards the corners, each with
    its own curve, the lip's shadow at its root, a translucent biting edge and a dark separation."""
    edges = TOOTH_EDGES * (1 + rng.uniform(-0.04, 0.04, TOOTH_EDGES.size))
    au = np.abs(u)
    k = np.clip(np.searchsorted(edges, au) - 1, 0, len(edges) - 2)
    lo, hi = edges[k], edges[k + 1]
    pos = np.clip((au - lo) / (hi - lo), 0, 1)  # 0..1 across the tooth
    crown = np.minimum(size[0] * (1 - 0.5 * across**1.5), size[1] * gap) * (1 - 0.2 * (2 * pos - 1) ** 4)
    inside = (below >= 0) & (below <= crown) & (au <= edges[-1])
    f = np.clip(below / np.maximum(crown, 1e-4), 0, 1)  # 0 at the lip, 1 at the biting edge
    shade = 1 - 0.4 * across**1.6  # the arch turns away from the light and the camera
    shade = shade * (0.9 + 0.1 * np.sin(np.pi * pos) ** 0.5)  # each tooth's own curve
    shade = shade * (0.78 + 0.22 * np.clip(f / 0.3, 0, 1))  # the lip's shadow at the root
    shade = shade * (1 - 0.1 * np.clip((f - 0.8) / 0.2, 0, 1))  # translucent biting edge
    sep_w = max(0.5, scale * 0.004) / scale  # separation half-width, eye-distance units
    sep = np.exp(-(((au - lo) / sep_w) ** 2)) * (k > 0) + np.exp(-(((au - hi) / sep_w) ** 2))
    sep = np.maximum(sep, np.exp(-((au / sep_w) ** 2)))  # the midline between the central incisors
    shade = shade * (1 - 0.4 * np.clip(sep, 0, 1))
    edge = np.clip(np.minimum(below, crown - below) * scale / 0.6, 0, 1) * inside  # anti-aliased rim
    lab[..., 0] = lab[..., 0] * (1 - edge) + tooth_l * shade * edge
    lab[..., 1] = lab[..., 1] * (1 - edge) + 1.0 * edge
    lab[..., 2] = lab[..., 2] * (1 - edge) + (7 + 5 * (1 - shade)) * edge
