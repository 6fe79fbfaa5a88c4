"""Expression for dubs (`lipsync.expression`) on ../shared/media; prints a markdown table (docs/lipsync.md).

  .venv/bin/python benchmarks/bench_expression.py

musetalk_sun.mp4 (22 s, a woman standing, no sound of its own) is dubbed with musetalk_eng.wav (real English
speech) with the switch on, and the output tracked again with the face mesh. Measured there:
1. Brows: the brows' height above the upper lids (in eye-corner distances) in the output minus the source's, per
   frame, against the raise the animation asked for: Pearson r, and the median rise at the raised frames.
2. Head dips: the face's height in the frame (the median y of its landmarks, in face heights) in the output minus
   the source's, per frame, against the dip the animation asked for: Pearson r, and the median dip where asked.
3. Blinks: eye openness dips (under 3/4 of the median, as bench_avatar counts them) in the output and the source;
   the animation's added blinks found in the output within 2 frames, and how many of them start in a pause.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_lipsync import print_measures  # this folder is the script's own: sys.path[0]

from dubbing.lipsync import choose_active, lipsync_video, load_audio, mouth_drive, track_video
from dubbing.lipsync.expression import SOURCE_BLINK, dub_expression, eye_openness
from dubbing.lipsync.faces import FaceData, face_axes, face_box
from dubbing.lipsync.render import BROW_L, BROW_R, EYE_L_UP, EYE_R_UP

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"


def per_frame(faces: FaceData, measure) -> np.ndarray:
    out = np.full(faces.frames, np.nan)
    for t in range(faces.frames):
        face = faces.face_of(t, int(faces.active[t]))
        if face is not None:
            out[t] = measure(face)
    return out


def brow_height(face: np.ndarray) -> float:
    _right, _down, scale = face_axes(face)
    return float(face[EYE_L_UP + EYE_R_UP, 1].mean() - face[BROW_L + BROW_R, 1].mean()) / scale


def head_y(face: np.ndarray) -> float:
    """Where the face sits: the median y of its landmarks (what a dip moves)."""
    return float(np.median(face[:, 1]))


def face_height(face: np.ndarray) -> float:
    x0, y0, x1, y1 = face_box(face)
    return y1 - y0


def onsets(opened: np.ndarray) -> np.ndarray:
    shut = opened < SOURCE_BLINK * np.nanmedian(opened)
    return np.flatnonzero(shut & ~np.concatenate([[False], shut[:-1]]))


def main() -> None:
    video, voice = MEDIA / "musetalk_sun.mp4", MEDIA / "musetalk_eng.wav"
    if not video.is_file() or not voice.is_file():
        sys.exit(f"no test media at {MEDIA}")
    source, stream = track_video(video)
    choose_active(source)
    fps = stream.fps_float
    speech = load_audio(voice)
    drive = mouth_drive(speech, fps, source.frames)
    moves = dub_expression(source, speech, drive, fps)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        result = lipsync_video(video, voice, Path(tmp) / "out.mp4", faces=source, expression=True)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        out, _ = track_video(result.out)
    choose_active(out)
    n = min(source.frames, out.frames)
    rise = (per_frame(out, brow_height) - per_frame(source, brow_height))[:n]
    ok = ~np.isnan(rise)
    r = float(np.corrcoef(rise[ok], moves.brows[:n][ok])[0, 1])
    raised = ok & (moves.brows[:n] > 0.25)
    dip = ((per_frame(out, head_y) - per_frame(source, head_y)) / per_frame(source, face_height))[:n]
    fine = ~np.isnan(dip)
    r_dip = float(np.corrcoef(dip[fine], moves.nod[:n][fine])[0, 1])
    dipped = fine & (moves.nod[:n] > 0.5 * moves.nod.max())
    added = onsets(np.where(moves.blink > 0.5, 0.0, 1.0))  # the animation's own closures
    seen_out, seen_src = onsets(per_frame(out, eye_openness)), onsets(per_frame(source, eye_openness))
    found = sum(bool(np.abs(seen_out - a).min() <= 2) for a in added) if seen_out.size else 0
    in_pause = sum(not drive.speech[a] for a in added)
    rows = [
        ("brow rise in the output vs the raise asked, Pearson r", f"{r:.2f}",
         f"median rise {np.median(rise[raised]):.3f} eye-corner distances at the {raised.sum()} raised frames, "
         f"{np.median(rise[ok & (moves.brows[:n] < 0.02)]):.3f} elsewhere"),
        ("head dip in the output vs the dip asked, Pearson r", f"{r_dip:.2f}",
         f"median dip {np.median(dip[dipped]):.4f} face heights at the {dipped.sum()} frames asked over half the "
         f"deepest ({np.median(moves.nod[:n][dipped]):.4f} asked), "
         f"{np.median(dip[fine & (moves.nod[:n] < 0.001)]):.4f} elsewhere"),
        ("blinks added / found in the output", f"{len(added)} / {found}",
         f"{in_pause} of {len(added)} start in a pause of the dub; blinks seen: source {seen_src.size}, "
         f"output {seen_out.size} in {n / fps:.0f} s"),
        ("render with expression (576x768)", f"{result.frames / wall:.1f} fps wall",
         f"{1000 * cpu / result.frames:.1f} CPU-ms per frame in the process"),
    ]  # fmt: skip
    print_measures(rows)


if __name__ == "__main__":
    main()
