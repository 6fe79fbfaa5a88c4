"""Does the re-animated mouth follow the dub on every talking-head clip? Prints a markdown table.

  .venv/bin/python benchmarks/bench_lip_follow.py [--leads 0.04,0.01] [--work DIR]

Each talking-head clip of ../shared/media is dubbed into Spanish as a user does (`dub run CLIP -l es`, the draft
preset; a folder already in `--work` is reused). Then the lipsync render is run again on that run's own faces,
dub voice and script for each mouth lead in `--leads` (`visemes.LEAD_S`: how far the mouth moves ahead of the
sound), and the mouth the renderer drew is compared with the dub voice the way the report does (`qa.lip_sync`):
Pearson r at lag 0 (the goal: >= 0.75 on every clip), and the lag that correlates best (negative: the mouth
moves before the sound).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dubbing import lipsync, media, qa
from dubbing.lipsync import visemes
from dubbing.types import FaceTracks

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ("vrt_face1", "vrt_face2", "vrt_face4", "sadtalker_WDA_KatieHill", "latentsync_demo2_video")
LANGUAGE = "es"
GOAL = 0.75


def dub(clip: str, out: Path) -> None:
    """The run a user makes; kept, so a second sweep reuses it."""
    if (out / "manifest.json").is_file():
        return
    command = [sys.executable, "-m", "dubbing.cli", "run", str(MEDIA / f"{clip}.mp4"), "-l", LANGUAGE, "-o", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=os.environ | {"HF_HUB_OFFLINE": "1"})


@dataclass
class Run:
    """What a finished run left that the lipsync render and QA's lip-sync figure read."""

    video: Path
    tracks: FaceTracks
    voice: Path
    lines: list[tuple[float, float, str]]
    samples: np.ndarray


def load_run(clip: str, out: Path) -> Run:
    track = json.loads((out / LANGUAGE / "track.json").read_text())
    texts = {line["index"]: line["text"] for line in json.loads((out / LANGUAGE / "script.json").read_text())["lines"]}
    voice = next((out / LANGUAGE).glob("*.voice.wav"))
    video = MEDIA / f"{clip}.mp4"
    return Run(
        video=video,
        tracks=lipsync.read_tracks(video, out / "source" / "faces.npz"),
        voice=voice,
        lines=[(c["start"], c["end"], texts.get(c["index"], "")) for c in track["clips"]],
        samples=media.read_audio(voice, qa.ANALYSIS_RATE)[0],
    )


def follow(run: Run, out: Path, lead_s: float) -> dict:
    """The report's lip-sync figures for the picture rendered again with the mouth `lead_s` ahead."""
    visemes.LEAD_S = lead_s
    picture = out / f"lead-{lead_s:g}.picture.mp4"
    lipsync.render_dub(run.video, run.tracks, run.voice, picture, lines=run.lines, language=LANGUAGE)
    gap, fps, _renderer = lipsync.drawn_mouths(picture)
    summary, _ = qa.lip_sync(gap, qa.frame_envelope(run.samples, qa.ANALYSIS_RATE, fps, len(gap)), fps, {})
    return summary | {"fps": fps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", default=f"0.04,{visemes.LEAD_S:g}", help="comma list of mouth leads in seconds")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dub-bench-lip-follow"), help="the runs, kept")
    args = parser.parse_args()
    if not MEDIA.is_dir():
        sys.exit(f"no test media at {MEDIA}")
    leads = [float(x) for x in args.leads.split(",")]
    print(f"lip r at lag 0 (best lag, its r) of the mouth drawn for the {LANGUAGE} dub, per mouth lead; goal >= {GOAL}")
    print("| clip | fps | " + " | ".join(f"lead {1000 * x:g} ms" for x in leads) + " |")
    print("|---|---|" + "---|" * len(leads))
    worst = dict.fromkeys(leads, 1.0)
    for clip in CLIPS:
        out = args.work / clip
        dub(clip, out)
        run = load_run(clip, out)
        cells = []
        for lead in leads:
            s = follow(run, out, lead)
            worst[lead] = min(worst[lead], s["correlation"])
            cells.append(f"{s['correlation']:.2f} ({s['best_lag_ms']:+.0f} ms, {s['best_lag_correlation']:.2f})")
        print(f"| {clip} | {s['fps']:g} | " + " | ".join(cells) + " |", flush=True)
    verdicts = ", ".join(f"lead {1000 * x:g} ms: worst {worst[x]:.2f} ({'met' if worst[x] >= GOAL else 'not met'})"
                         for x in leads)  # fmt: skip
    print(f"\n{verdicts}")


if __name__ == "__main__":
    main()
