"""Mouth interior (teeth, tongue) of the classical renderer on ../shared/media; prints a markdown table.

  .venv/bin/python benchmarks/bench_interior.py [--crops OUT.npz]
  .venv/bin/python benchmarks/bench_interior.py --figure docs/lipsync-interior.png BEFORE.npz AFTER.npz

Each clip of a person who shows teeth is re-voiced with another clip's speech, so the mouth opens where the source
did not; the output is tracked again and, on the frames where the renderer opened the mouth beyond the source's own
(re-rendered interiors), the inner-lip region (eroded off the lips) is compared with the same region of the person's
own open-mouth frames in the source: sharpness (variance of the Laplacian, grey levels squared), flat share (pixels
whose 5x5 standard deviation is under 2 grey levels), colour distance (CIE76 delta E of the region's mean Lab to the
own frames of nearest opening) and the lip-follow r (the re-tracked opening against the driving speech's loudness,
as the QA stage computes it). A photo case makes an avatar from the clip's most closed frame (no open mouth to lend:
the interior is painted) and compares it with the same person's open frames.

The figures measure whatever `dubbing` is on the path: run it with PYTHONPATH set to an older tree for a before row.
`--crops` saves mouth crops of fixed frames (chosen from the source and the driving speech, so two runs crop the same
frames); `--figure` lays out two such files (before, after) with the person's own open mouths into one PNG.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from bench_lipsync import MEDIA, print_measures

from dubbing.lipsync import choose_active, lipsync_video, load_audio, mouth_drive, track_video
from dubbing.lipsync.avatar import make_avatar
from dubbing.lipsync.faces import LOWER_INNER, UPPER_INNER, FaceData, face_axes, mouth_gap
from dubbing.lipsync.video import probe_video, read_frames
from dubbing.qa import ANALYSIS_RATE, frame_envelope, lip_sync

CASES = [  # (video, driving speech from another clip)
    ("sadtalker_WDA_KatieHill.mp4", "sadtalker_RD_Radio31_000.wav"),
    ("vrt_face4.mp4", "latentsync_demo2_audio.wav"),
]
OPEN = 0.1  # an inner-lip gap (eye-distance units) that shows the interior
FLAT_STD = 2.0  # grey levels: a 5x5 window this uniform reads as a flat fill
INNER = UPPER_INNER + LOWER_INNER[-2:0:-1]
TILE = 100  # pixels per crop in the figure


def interior_mask(shape: tuple[int, ...], pts: np.ndarray) -> np.ndarray:
    """The mouth opening, eroded off the lips (their edge would dominate every measure)."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[INNER]).astype(np.int32)], 1)
    _r, _d, scale = face_axes(pts)
    k = max(3, int(scale * 0.03)) | 1
    return cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)


def region_measures(frame: np.ndarray, pts: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """(Laplacian variance, flat share, mean Lab) of the mouth opening; None when it is too small to judge."""
    mask = interior_mask(frame.shape, pts)
    if mask.sum() < 30:
        return None
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (5, 5))
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (5, 5)) - mean * mean, 0))
    lab = cv2.cvtColor(frame[mask][None].astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)[0]
    return float(cv2.Laplacian(grey, cv2.CV_32F)[mask].var()), float((std[mask] < FLAT_STD).mean()), lab.mean(axis=0)


def gaps_of(faces: FaceData) -> np.ndarray:
    return np.array(
        [mouth_gap(p) if i >= 0 else np.nan for p, i in zip(faces.points[:, 0], faces.ids[:, 0], strict=True)]
    )


def own_measures(video: Path, faces: FaceData, gaps: np.ndarray) -> list[tuple[float, float, float, np.ndarray]]:
    """(gap, sharpness, flat share, mean Lab) of the source's own open-mouth frames."""
    out = []
    for t, frame in enumerate(read_frames(video, probe_video(video))):
        if t < len(gaps) and gaps[t] >= OPEN and (m := region_measures(frame, faces.points[t, 0])) is not None:
            out.append((float(gaps[t]), *m))
    return out


def rendered_measures(
    out: Path, src_gaps: np.ndarray | float
) -> tuple[list[tuple[float, float, float, np.ndarray]], np.ndarray]:
    """The same for the output frames whose mouth the renderer opened beyond the source's own (`src_gaps` per
    frame, or one figure for a photo); and the output's re-tracked gaps."""
    faces, stream = track_video(out)
    gaps = gaps_of(faces)
    src_gaps = np.broadcast_to(np.asarray(src_gaps, np.float64), gaps.shape) if np.ndim(src_gaps) == 0 else src_gaps
    rows = []
    for t, frame in enumerate(read_frames(out, stream)):
        if t >= min(len(gaps), len(src_gaps)) or not (gaps[t] >= OPEN and gaps[t] > src_gaps[t] + 0.04):
            continue
        if (m := region_measures(frame, faces.points[t, 0])) is not None:
            rows.append((float(gaps[t]), *m))
    return rows, gaps


def compare(name: str, own: list, rendered: list, lip_r: float | None) -> list[tuple[str, str, str]]:
    if not rendered or not own:
        return [(f"{name}: re-rendered open mouths", "none", f"{len(own)} own open frames")]
    own_gap = np.array([o[0] for o in own])

    def delta_e(row: tuple) -> float:
        near = np.argsort(np.abs(own_gap - row[0]))[:3]
        return float(np.linalg.norm(row[3] - np.mean([own[k][3] for k in near], axis=0)))

    sharp, flat = np.median([r[1] for r in rendered]), np.median([r[2] for r in rendered])
    o_sharp, o_flat = np.median([o[1] for o in own]), np.median([o[2] for o in own])
    worst_flat = max(r[2] for r in rendered)
    return [
        (f"{name}: interior sharpness, re-rendered / own (goal >= 1)", f"{sharp:.0f} / {o_sharp:.0f}",
         f"ratio {sharp / o_sharp:.2f}; {len(rendered)} re-rendered and {len(own)} own open frames"),
        (f"{name}: flat share of the interior, re-rendered / own", f"{flat:.1%} / {o_flat:.1%}",
         f"median over frames; worst frame {worst_flat:.1%} re-rendered, {max(o[2] for o in own):.1%} own"),
        (f"{name}: colour distance to own open mouths (delta E)", f"{np.median([delta_e(r) for r in rendered]):.1f}",
         "mean Lab of the region vs the 3 own frames of nearest opening"),
        (f"{name}: lip-follow r (re-tracked opening vs driving loudness)", "n/a" if lip_r is None else f"{lip_r:.2f}",
         "Pearson r at zero lag, as QA reports it"),
    ]  # fmt: skip


def spaced(order: np.ndarray, n: int = 3, apart: int = 10) -> list[int]:
    """The first `n` frames of `order` that lie `apart` frames or more from each other, sorted."""
    picks: list[int] = []
    for t in order:
        if all(abs(int(t) - p) >= apart for p in picks):
            picks.append(int(t))
        if len(picks) == n:
            break
    return sorted(picks)


def crop_frames(src_gaps: np.ndarray, drive_open: np.ndarray) -> list[int]:
    """Frames where the driving speech opens the mouth most while the source's is nearly closed."""
    m = min(len(src_gaps), len(drive_open))
    return spaced(np.argsort(-(drive_open[:m] - np.nan_to_num(src_gaps[:m], nan=1.0) * 4)))


def mouth_crops(video: Path, faces: FaceData, frames: list[int], size: int = 120) -> list[np.ndarray]:
    """Square crops around the (source-tracked) mouth of the given frames, `size` pixels."""
    wanted, out = set(frames), {}
    for t, frame in enumerate(read_frames(video, probe_video(video))):
        if t in wanted:
            pts = faces.points[t, 0]
            _r, _d, scale = face_axes(pts)
            cx, cy = (pts[61] + pts[291]) / 2
            half = int(scale * 0.42)
            x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
            out[t] = cv2.resize(
                frame[y0 : y0 + 2 * half, x0 : x0 + 2 * half], (size, size), interpolation=cv2.INTER_AREA
            )
    return [out[t] for t in frames if t in out]


def run_case(video: Path, speech: Path, tmp: Path, crops: dict[str, np.ndarray]) -> list[tuple[str, str, str]]:
    faces, stream = track_video(video)
    choose_active(faces)
    src_gaps = gaps_of(faces)
    out = tmp / f"{video.stem}.revoiced.mp4"
    lipsync_video(video, speech, out, faces=faces, mux_audio=False)
    rendered, out_gaps = rendered_measures(out, src_gaps)
    audio = load_audio(speech)
    envelope = frame_envelope(load_audio(speech, rate=ANALYSIS_RATE), ANALYSIS_RATE, stream.fps_float, len(out_gaps))
    summary, _ = lip_sync(out_gaps, envelope, stream.fps_float, {})
    own = own_measures(video, faces, src_gaps)
    drive = mouth_drive(audio, stream.fps_float, faces.frames)
    frames = crop_frames(src_gaps, drive.open)
    crops[f"{video.stem}/rendered"] = np.stack(mouth_crops(out, faces, frames))
    own_frames = [int(t) for t in np.argsort(-np.nan_to_num(src_gaps, nan=0.0))[:40:13]]
    crops[f"{video.stem}/own"] = np.stack(mouth_crops(video, faces, sorted(own_frames)))
    return compare(video.stem, own, rendered, summary["correlation"])


def run_photo(video: Path, speech: Path, tmp: Path, crops: dict[str, np.ndarray]) -> list[tuple[str, str, str]]:
    """An avatar from the clip's most closed frame, against the clip's own open mouths."""
    faces, _stream = track_video(video)
    choose_active(faces)
    src_gaps = gaps_of(faces)
    still = int(np.nanargmin(src_gaps))
    frame = next(f for t, f in enumerate(read_frames(video, probe_video(video))) if t == still)
    photo = tmp / "photo.png"
    cv2.imwrite(str(photo), frame)
    out = tmp / "avatar.mp4"
    make_avatar(photo, speech, out, expression=False)
    rendered, out_gaps = rendered_measures(out, float(src_gaps[still]))
    envelope = frame_envelope(load_audio(speech, rate=ANALYSIS_RATE), ANALYSIS_RATE, 25.0, len(out_gaps))
    summary, _ = lip_sync(out_gaps, envelope, 25.0, {})
    own = own_measures(video, faces, src_gaps)
    photo_faces, _ = track_video(out)
    crops["photo/rendered"] = np.stack(mouth_crops(out, photo_faces, spaced(np.argsort(-np.nan_to_num(out_gaps)))))
    return compare(f"photo ({video.stem} frame {still})", own, rendered, summary["correlation"])


def figure(out: Path, before: Path, after: Path) -> None:
    """Rows per clip: before | after | own, three crops each, with labels; 128 colours keep the PNG small."""
    a, b = np.load(before), np.load(after)
    names = [k.split("/")[0] for k in b.files if k.endswith("/rendered")]
    rows = []
    for name in names:
        own_key = f"{name}/own" if f"{name}/own" in b.files else f"{CASES[0][0].removesuffix('.mp4')}/own"
        tiles = [a[f"{name}/rendered"], b[f"{name}/rendered"], b[own_key]]
        row = []
        for label, group in zip(("before", "after", "own frames"), tiles, strict=True):
            strip = np.concatenate([cv2.resize(g, (TILE, TILE), interpolation=cv2.INTER_AREA) for g in group], axis=1)
            head = np.full((22, strip.shape[1], 3), 40, np.uint8)
            cv2.putText(
                head, f"{name}: {label}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA
            )
            row.append(np.concatenate([head, strip], axis=0))
            row.append(np.full((row[-1].shape[0], 6, 3), 90, np.uint8))
        rows.append(np.concatenate(row[:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=90) for r in rows]
    sheet = np.concatenate(rows, axis=0)
    pixels = sheet.reshape(-1, 3).astype(np.float32)  # 128 colours: a third of the file, no visible change
    criteria = (cv2.TERM_CRITERIA_MAX_ITER, 8, 1.0)
    _c, labels, centres = cv2.kmeans(pixels, 128, np.zeros(0, np.int32), criteria, 1, cv2.KMEANS_PP_CENTERS)
    sheet = centres[labels.ravel()].reshape(sheet.shape).astype(np.uint8)
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{out}: {out.stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=Path, help="save mouth crops of fixed frames here (.npz)")
    parser.add_argument("--figure", nargs=3, type=Path, metavar=("PNG", "BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.figure:
        figure(*args.figure)
        return
    if not MEDIA.is_dir():
        sys.exit(f"no test media at {MEDIA}")
    rows: list[tuple[str, str, str]] = []
    crops: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for video, speech in CASES:
            rows += run_case(MEDIA / video, MEDIA / speech, Path(tmp), crops)
        rows += run_photo(MEDIA / CASES[0][0], MEDIA / CASES[0][1], Path(tmp), crops)
    if args.crops:
        np.savez_compressed(args.crops, **crops)
    print_measures(rows)


if __name__ == "__main__":
    main()
