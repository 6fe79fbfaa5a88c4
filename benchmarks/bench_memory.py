"""Peak memory of `dub run` on a 1-minute and a 10-minute 720p talking video; prints a markdown table.

  .venv/bin/python benchmarks/bench_memory.py [--minutes 1,10] [--tts espeak|default] [--keep DIR]

Goal (issue #9): long inputs are processed in chunks, so the peak resident memory of a 10-minute video stays
within 1.5 times that of a 1-minute one.

Input: ../shared/media/vrt_face1.mp4 (a real man speaking to camera) scaled and padded to 1280x720, encoded once
and looped with ffmpeg `-stream_loop` (stream copy), in a temporary folder: real picture, real speech.

How it measures: `dub run VIDEO --languages es --out DIR` (lipsync on, QA on) runs as a child process; every 0.2 s
the resident set size (RSS) of its process tree (the dub process and the ffmpeg, espeak-ng... it runs) is summed,
leaving out Prefect's ephemeral API server (a separate process whose memory does not depend on the video) and
children caught between fork and exec (they still share the dub process's pages). A stage ends when its output file
appears (every output is renamed into place when complete), so each sample is charged to the stage running at that
moment (with one language the stages run one after another).

`--tts espeak` (the default here) gives Spanish the espeak-ng voice instead of Kokoro to keep the 10-minute run
affordable on 2 cores: synthesis runs line by line, so its memory does not grow with the video's length.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from dubbing.layout import RunLayout

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT.parent / "shared" / "media" / "vrt_face1.mp4"
DUB = ROOT / ".venv" / "bin" / "dub"
INTERVAL_S = 0.2


def stage_files(layout: RunLayout, lang: str) -> list[tuple[str, Path]]:
    """The file whose appearance marks each step's end, in pipeline order: each step writes its outputs under a
    temporary name and renames them when complete."""
    return [
        ("extract-audio", layout.mix_wav),
        ("transcribe", layout.transcript),
        ("separate", layout.background_wav),
        ("speaker-profiles", layout.speaker_profiles),
        ("track-faces", layout.faces_json),
        ("translate", layout.script(lang)),
        ("match-voices", layout.voices(lang)),
        ("synthesize-and-fit", layout.track(lang)),
        ("mix", layout.audio(lang)),
        ("subtitles", layout.vtt(lang)),
        ("lipsync", layout.picture(lang)),
        ("render-video", layout.video(lang)),
        ("report", layout.report(lang)),
        ("review-page", layout.review_page),
    ]


ESPEAK_CONFIG = "languages:\n  es:\n    tts:\n      backend: espeak\n      voice: es\n"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


def make_video(minutes: float, folder: Path) -> Path:
    """`minutes` of 1280x720 talking video: the real clip, scaled into 720 rows and padded, then looped."""
    base = folder / "talk_720p.mp4"
    if not base.exists():
        ffmpeg("-i", str(CLIP), "-vf", "scale=720:720,pad=1280:720:280:0,setsar=1", "-c:v", "libx264",
               "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "copy", str(base))  # fmt: skip
    out = folder / f"talk_{minutes:g}min_720p.mp4"
    if not out.exists():
        ffmpeg("-stream_loop", "-1", "-i", str(base), "-t", str(minutes * 60), "-c", "copy", str(out))
    return out


def is_prefect_server(cmd: list[str]) -> bool:
    """Prefect's ephemeral API runs as its own uvicorn/`prefect server` process."""
    line = " ".join(cmd)
    return "uvicorn" in line or ("prefect" in line and "server" in line)


def tree_rss(root: psutil.Process) -> float:
    """RSS in MB of `root` and its descendants, leaving out Prefect's API server and any child caught between
    fork and exec (same command line as its parent: it still shares its parent's pages, which RSS would count
    twice; every subprocess the stages start passes through that state for a moment)."""
    total = 0
    todo = [(root, None)]
    while todo:
        proc, parent_cmd = todo.pop()
        try:
            cmd = proc.cmdline()
            if parent_cmd is not None and (cmd == parent_cmd or is_prefect_server(cmd)):
                continue
            total += proc.memory_info().rss
            todo += [(child, cmd) for child in proc.children(recursive=False)]
        except psutil.Error:
            continue
    return total / 2**20


def run_dub(video: Path, out: Path, config: Path | None) -> tuple[float, list[tuple[float, float]], list]:
    """Run `dub run`; returns (wall s, [(t, MB)] samples, [(t, stage)] stage ends)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [str(DUB), "run", str(video), "--languages", "es", "--out", str(out)]
    cmd += ["--config", str(config)] if config else []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    ends: list[tuple[float, str]] = []
    log: list[str] = []
    waiting = stage_files(RunLayout(out=out, name=video.stem), "es")

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    samples: list[tuple[float, float]] = []
    while proc.poll() is None:
        now = time.perf_counter() - start
        samples.append((now, tree_rss(root)))
        ends += [(now, stage) for stage, path in waiting if path.exists()]
        waiting = [(stage, path) for stage, path in waiting if not path.exists()]
        time.sleep(INTERVAL_S)
    wall = time.perf_counter() - start
    reader.join(timeout=5)
    (out / "dub.log").write_text("".join(log))
    if proc.returncode != 0:
        raise RuntimeError(f"dub run failed ({proc.returncode}):\n{''.join(log[-40:])}")
    return wall, samples, ends


def per_stage(samples: list[tuple[float, float]], ends: list[tuple[float, str]]) -> dict[str, tuple[float, float]]:
    """Stage -> (seconds, peak MB): each sample goes to the first stage that finished after it."""
    result: dict[str, tuple[float, float]] = {}
    last = 0.0
    for t_end, stage in ends:
        inside = [mb for t, mb in samples if last <= t <= t_end]
        seconds, peak = result.get(stage, (0.0, 0.0))
        result[stage] = (seconds + t_end - last, max([peak, *inside]))
        last = t_end
    inside = [mb for t, mb in samples if t > last]
    if inside:
        result["(manifest, exit)"] = (samples[-1][0] - last, max(inside))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,10", help="video lengths in minutes, comma-separated")
    parser.add_argument("--tts", choices=("espeak", "default"), default="espeak")
    parser.add_argument("--keep", type=Path, help="keep videos and outputs in this folder")
    args = parser.parse_args()
    minutes = [float(m) for m in args.minutes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = None
        if args.tts == "espeak":
            config = work / "espeak_es.yaml"
            config.write_text(ESPEAK_CONFIG)
        runs = {}
        for m in minutes:
            video = make_video(m, work)
            out = work / f"out_{m:g}min"
            wall, samples, ends = run_dub(video, out, config)
            runs[m] = (wall, max(mb for _t, mb in samples), per_stage(samples, ends))
            print(f"{m:g} min: {wall:.0f} s, peak {runs[m][1]:,.0f} MB", file=sys.stderr, flush=True)
    print_table(runs, args.tts, os.getloadavg())


def print_table(runs: dict[float, tuple[float, float, dict]], tts: str, load: tuple[float, float, float]) -> None:
    lengths = sorted(runs)
    first, last = lengths[0], lengths[-1]
    head = " | ".join(f"{m:g} min peak MB | {m:g} min s" for m in lengths)
    print(f"| stage | {head} | peak ratio {last:g}/{first:g} |")
    print("|---|" + "---|---|" * len(lengths) + "---|")
    stages: list[str] = []
    for m in lengths:
        stages += [s for s in runs[m][2] if s not in stages]
    for stage in stages:
        cells = []
        for m in lengths:
            seconds, peak = runs[m][2].get(stage, (0.0, 0.0))
            cells.append(f"{peak:,.0f} | {seconds:.0f}" if seconds else "- | -")
        a, b = runs[first][2].get(stage, (0, 0))[1], runs[last][2].get(stage, (0, 0))[1]
        print(
            f"| {stage} | {' | '.join(cells)} | {b / a:.2f} |" if a and b else f"| {stage} | {' | '.join(cells)} | - |"
        )
    cells = " | ".join(f"**{runs[m][1]:,.0f}** | {runs[m][0]:.0f}" for m in lengths)
    print(f"| **whole run** | {cells} | **{runs[last][1] / runs[first][1]:.2f}** |")
    print()
    print(
        f"TTS for es: {'espeak-ng' if tts == 'espeak' else 'the configured default'}; RSS of the dub process tree "
        f"without Prefect's API server, sampled every {INTERVAL_S} s; load average at the end {load[0]:.1f}."
    )


if __name__ == "__main__":
    main()
