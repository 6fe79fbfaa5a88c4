"""How the dub's lines fit their slots: per clip and language, lines shortened, borrowing silence, sped up and cut.

    .venv/bin/python benchmarks/bench_fit.py                          # every speech clip of ../shared/media, es,pt,fr
    .venv/bin/python benchmarks/bench_fit.py --languages pt --clips pyannote_sample
    .venv/bin/python benchmarks/bench_fit.py --tree /tmp/before       # the same with another checkout (before/after)

Each clip is dubbed once into every language (`dub run`, draft preset, lipsync and the lipsync and meaning checks
off: they change nothing in the fit), and each language's report.json gives the counts of its `timing.actions`
(what fitting did to each line, `FIT_ACTIONS`) and the heard-back error of the dub. The clips are every speech clip
of MANIFEST.md; the sound files (the phone call pyannote_sample.wav first, the five librivox readings joined) become
videos first: a grey picture under their audio. The goal is 0 lines cut. `--tree` runs the pipeline of another
checkout of the project (its `dubbing` package) on the same clips, to compare; reports of a tree without the actions
count only their lines over the limit. The column "dub - source" checks that each dub lasts exactly as long as its
source (ffprobe's container duration against the manifest's); each row also says whether the report's counts equal
the lines' own records in script.json (`counts_match`). A run is measured as bench_speed measures its cases (wall and
CPU seconds of the whole process tree; its output in WORK/CLIP.log).

Then each clip is dubbed again in the same folder with the picture slow-down on (`timing.slow_picture`, as the
final preset has it; the steps before the fit come from the cache): the last columns are the lines still cut, the
lines whose span was slowed, those held past the 10% limit, the seconds added, and the dub's duration less the
source's and the added seconds (0 within a frame). `--no-slow` skips that second run. `--json` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_speed import Side, become_subreaper, dub_command, duration_s, measure, tree_env  # this folder: sys.path[0]
from run_all import load_average

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared/media"
CLIPS = {  # every speech clip of ../shared/media (MANIFEST.md); the case first: a phone call, two speakers
    "pyannote_sample": "pyannote_sample.wav",  # audio only: made into a video (so are the other .wav)
    "KatieHill": "sadtalker_WDA_KatieHill.mp4",
    "vrt_face1": "vrt_face1.mp4",
    "vrt_face2": "vrt_face2.mp4",
    "vrt_face4": "vrt_face4.mp4",
    "latentsync_demo2": "latentsync_demo2_video.mp4",
    "latentsync_audio": "latentsync_demo2_audio.wav",
    "radio31": "sadtalker_RD_Radio31_000.wav",
    "librivox": "librivox/*.wav",  # the five readings of one man, joined in order (24.7 s)
    "fayu": "sadtalker_fayu.wav",  # French speech
    "deyu": "sadtalker_deyu.wav",  # German speech
    "musetalk_eng": "musetalk_eng.wav",  # a minute
}
ACTIONS = ("shortened", "borrowed_after", "borrowed_before", "sped_up", "cut")
CONFIG = {"lipsync": {"enabled": False}, "qa": {"lipsync": False, "meaning": False}}
SLOW = {"language_defaults": {"timing": {"slow_picture": True}}}  # the second run: the picture may slow down


def as_video(clip: str, work: Path) -> Path:
    """A video of the clip: itself, or for sound files (joined in order) a grey 320x240 picture under them."""
    sources = sorted(MEDIA.glob(CLIPS[clip]))
    if len(sources) == 1 and sources[0].suffix != ".wav":
        return sources[0]
    video = work / f"{clip}.mp4"
    if not video.exists():
        inputs = [arg for path in sources for arg in ("-i", str(path))]
        joined = "".join(f"[{i}:a]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=0:a=1[a]"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", *inputs, "-f", "lavfi", "-i", "color=c=gray:s=320x240:r=25",
             "-filter_complex", joined, "-map", f"{len(sources)}:v", "-map", "[a]", "-shortest", "-c:v", "libx264",
             "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(video)],
            check=True,
        )  # fmt: skip
    return video


def dub(video: Path, languages: str, out: Path, tree: Path, slow: bool = False) -> tuple[dict, str]:
    """One `dub run` of `tree`'s pipeline (`slow`: with the picture slow-down on), measured as bench_speed
    measures its cases (wall, CPU seconds of the whole process tree); the measures and the last error line (empty
    when it worked). Its output is kept in OUT.log (OUT.slow.log)."""
    config = out.parent / f"{out.name}{'.slow' * slow}.yaml"
    config.write_text(json.dumps(CONFIG | SLOW if slow else CONFIG))
    side = Side("fit", "tree", "", tree, tree_env(tree))
    cmd = dub_command(side, "python", video, languages, out, "draft") + ["--config", str(config)]
    log = out.parent / f"{out.name}{'.slow' * slow}.log"
    result = measure(cmd, tree, side.env, log)
    lines = log.read_text(errors="replace").strip().splitlines()
    return result, (lines[-1] if result["rc"] and lines else "")


def rows(clip: str, out: Path, languages: list[str], problem: str) -> list[dict]:
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"outputs": {}}
    found = []
    for lang in languages:
        if lang not in manifest["outputs"]:
            found.append({"clip": clip, "language": lang, "failed": problem or "not dubbed"})
            continue
        report = json.loads((out / manifest["outputs"][lang]["report"]).read_text())
        timing = report.get("timing") or {}
        actions = timing.get("actions") or {"cut": timing.get("over_limit", 0)}
        heard = report.get("intelligibility") or {}
        outputs = manifest["outputs"][lang]
        video = out / outputs["video"] if outputs.get("video") else None
        added = round(sum(s["added_s"] for s in outputs.get("stretched") or []), 3)
        script_path = out / lang / "script.json"
        lines = json.loads(script_path.read_text())["lines"] if script_path.exists() else []
        # the report counts every action: its counts against each line's own record in script.json
        counted = all(actions.get(a, 0) == sum(a in (line.get("fit") or []) for line in lines) for a in actions)
        found.append(
            {
                "clip": clip,
                "language": lang,
                "lines": report.get("lines", 0),
                **{a: actions.get(a) for a in ACTIONS},
                "cut_s": timing.get("cut_s"),
                "max_speed": timing.get("max_speed"),
                "error_rate": heard.get("error_rate"),
                "metric": heard.get("metric", "wer"),
                # the dub must last exactly as long as the source (no slow-down of the picture is made)
                "duration_diff_s": round(duration_s(video) - manifest["duration_s"], 3) if video else None,
                "picture_slowed": actions.get("picture_slowed", 0),
                "picture_held": actions.get("picture_held", 0),
                "added_s": added,
                "counts_match": counted if "actions" in timing else None,
            }
        )
    return found


def with_slow(plain: list[dict], slowed: list[dict]) -> list[dict]:
    """The rows of the first run with the second run's (picture slow-down on) figures beside them."""
    by_key = {(r["clip"], r["language"]): r for r in slowed}
    merged = []
    for row in plain:
        other = by_key.get((row["clip"], row["language"]))
        if other is not None and "failed" not in other and "failed" not in row:
            diff = other["duration_diff_s"]
            row = row | {
                "slow_cut": other["cut"],
                "slow_picture_slowed": other["picture_slowed"],
                "slow_picture_held": other["picture_held"],
                "slow_added_s": other["added_s"],
                "slow_duration_diff_s": None if diff is None else round(diff - other["added_s"], 3),
                "slow_counts_match": other["counts_match"],
            }
        merged.append(row)
    return merged


def table(found: list[dict]) -> str:
    head = (
        "| clip | language | lines | shortened | borrowed after | borrowed before | sped up | cut | heard-back error "
        "| dub - source duration | slowed on: cut | picture slowed | picture held | added | dub - source - added |"
    )
    out = [head, "|" + "---|" * 15]
    for r in found:
        if "failed" in r:
            out.append(f"| {r['clip']} | {r['language']} | failed: {r['failed']} |||||||||||||")
            continue
        counts = " | ".join("-" if r[a] is None else str(r[a]) for a in ACTIONS)
        err = "-" if r["error_rate"] is None else f"{r['error_rate']:.3f} ({r['metric']})"
        diff = "-" if r.get("duration_diff_s") is None else f"{r['duration_diff_s']:+.3f} s"
        if "slow_cut" in r:
            left = "-" if r["slow_duration_diff_s"] is None else f"{r['slow_duration_diff_s']:+.3f} s"
            slow = (
                f"{r['slow_cut']} | {r['slow_picture_slowed']} | {r['slow_picture_held']} | {r['slow_added_s']:.3f} s"
            )
            slow += f" | {left}"
        else:
            slow = "- | - | - | - | -"
        out.append(f"| {r['clip']} | {r['language']} | {r['lines']} | {counts} | {err} | {diff} | {slow} |")
    done = [r for r in found if "failed" not in r]
    total = {a: sum(r[a] or 0 for r in done) for a in ACTIONS}
    slow_total = " | ".join(
        str(sum(r.get(k) or 0 for r in done)) if any(k in r for r in done) else "-"
        for k in ("slow_cut", "slow_picture_slowed", "slow_picture_held")
    )
    added = sum(r.get("slow_added_s") or 0 for r in done)
    out.append(
        f"| all | | {sum(r['lines'] for r in done)} | "
        + " | ".join(str(total[a]) for a in ACTIONS)
        + f" | | | {slow_total} | {added:.3f} s | |"
    )
    return "\n".join(out)


def costs(measures: dict | None, prefix: str) -> dict:
    """The run's wall and CPU seconds (all its languages together) for the rows."""
    return {f"{prefix}{k}": round(measures[k], 1) for k in ("wall_s", "cpu_s")} if measures else {}


def say(clip: str, which: str, measures: dict, problem: str) -> None:
    print(
        f"{clip}{which}: {measures['wall_s']:.0f} s wall, {measures['cpu_s']:.0f} CPU-s, {load_average(2)}"
        + (f" ({problem})" if problem else ""),
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", default="es,pt,fr")
    parser.add_argument("--clips", default=",".join(CLIPS), help=f"of {', '.join(CLIPS)}")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose pipeline runs (default: this)")
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--no-run", action="store_true", help="tabulate the runs already in --work")
    parser.add_argument("--no-slow", action="store_true", help="skip the second run, with the picture slow-down on")
    args = parser.parse_args()
    if not MEDIA.is_dir():
        sys.exit(f"{MEDIA} not found: the real clips live in ../shared/media")
    languages = args.languages.split(",")
    unknown = [c for c in args.clips.split(",") if c not in CLIPS]
    if unknown:
        sys.exit(f"unknown clip {', '.join(unknown)}; known: {', '.join(CLIPS)}")
    become_subreaper()  # so the CPU seconds of processes a run leaves behind are counted
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        found = []
        for clip in args.clips.split(","):
            problem, measures = "", None
            if not args.no_run:
                video = as_video(clip, work)
                measures, problem = dub(video, args.languages, work / clip, args.tree.resolve())
                say(clip, "", measures, problem)
            plain = [r | costs(measures, "") for r in rows(clip, work / clip, languages, problem)]
            if not args.no_slow and not args.no_run:
                measures, problem = dub(video, args.languages, work / clip, args.tree.resolve(), slow=True)
                say(clip, ", slowed on", measures, problem)
                plain = [
                    r | costs(measures, "slow_") for r in with_slow(plain, rows(clip, work / clip, languages, problem))
                ]
            found += plain
            if args.json:  # as it goes: a long benchmark interrupted keeps the clips done
                args.json.write_text(json.dumps(found, indent=1))
    print(table(found))
    checked = [r[k] for r in found for k in ("counts_match", "slow_counts_match") if r.get(k) is not None]
    print(f"\nThe report's timing.actions equal the lines' own records (script.json) in {sum(checked)} of "
          f"{len(checked)} dubs.")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
