"""A real clip dubbed into every shipped target language: how each dub is heard back, and its meaning check.

    .venv/bin/python benchmarks/bench_languages.py                                   # all fifteen, KatieHill clip
    .venv/bin/python benchmarks/bench_languages.py --video ../shared/media/vrt_face4.mp4 --languages fr,ja

One `dub run` into all the languages (default preset; lipsync off, which changes nothing heard), then each
language's report.json gives: the heard-back error (WER, or CER where the record says so), its goal (0.20 for
Kokoro voices, 0.30 for espeak-ng), the meaning check's mean back-translation chrF, the words of another language
flagged, the translator and the voice. A short clip has few words: one misheard word moves the figure a lot, so
read these next to benchmarks/bench_translate.py's chrF. `--json` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dubbing.config import HEARD_ERROR_GOAL, HEARD_ERROR_GOALS, load_settings

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = "es,pt,fr,de,it,ru,zh,ja,hi,ko,ar,tr,pl,nl,ca"
DEFAULT_VIDEO = ROOT.parent / "shared/media/sadtalker_WDA_KatieHill.mp4"


def dub(video: Path, languages: str, out: Path) -> float:
    config = out.parent / "bench.yaml"
    config.write_text(json.dumps({"lipsync": {"enabled": False}}))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dubbing.cli", "run", str(video), "-l", languages, "-o", str(out), "--config",
         str(config)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )  # fmt: skip
    if proc.returncode not in (0, 2):
        sys.exit(proc.stderr[-3000:])
    if proc.returncode:
        print(proc.stderr.strip().splitlines()[-1], file=sys.stderr)  # some language failed: its row says why
    return time.perf_counter() - started


def rows(out: Path, languages: list[str]) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    settings = load_settings("draft", None)
    found = []
    for lang in languages:
        cfg = settings.for_language(lang)
        goal = HEARD_ERROR_GOALS.get(cfg.tts.backend, HEARD_ERROR_GOAL)
        if lang not in manifest["outputs"]:
            found.append({"language": lang, "failed": manifest.get("failed", {}).get(lang, "not dubbed")})
            continue
        report = json.loads((out / manifest["outputs"][lang]["report"]).read_text())
        heard = report.get("intelligibility") or {}
        meaning = report.get("meaning") or {}
        track = out / lang / "track.json"
        cast = json.loads(track.read_text()).get("voices", {}) if track.exists() else {}
        voices = sorted({match["voice"] for match in cast.values()})
        found.append(
            {
                "language": lang,
                "translator": report.get("translator", "") + (f" via {report['pivot']}" if report.get("pivot") else ""),
                "voice": f"{cfg.tts.backend}: {', '.join(voices)}",
                "metric": heard.get("metric", cfg.metric),
                "heard_error": heard.get("error_rate"),
                "goal": goal,
                "meaning_chrf": meaning.get("mean_chrf"),
                "foreign_words": (report.get("wrong_language") or {}).get("lines") or 0,
                "flags": len(report.get("flags") or []),
            }
        )
    return found


def table(found: list[dict]) -> str:
    head = "| language | translator | voice | heard back | goal | meaning chrF | lines with foreign words | flags |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in found:
        if "failed" in r:
            lines.append(f"| {r['language']} | failed: {r['failed'][:80]} | | | | | | |")
            continue
        err = "-" if r["heard_error"] is None else f"{r['metric'].upper()} {r['heard_error']:.2f}"
        ok = "" if r["heard_error"] is None or r["heard_error"] <= r["goal"] else " (below goal)"
        chrf = "-" if r["meaning_chrf"] is None else f"{r['meaning_chrf']:.0f}"
        lines.append(
            f"| {r['language']} | {r['translator']} | {r['voice']} | {err}{ok} | {r['goal']:.2f} | {chrf} | "
            f"{r['foreign_words']} | {r['flags']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--languages", default=SHIPPED)
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.video.exists():
        sys.exit(f"{args.video} not found (the real clips live in ../shared/media)")
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "out"
        seconds = dub(args.video, ",".join(languages), out)
        found = rows(out, languages)
    print(f"{args.video.name} dubbed into {len(languages)} languages in {seconds:.0f} s wall (lipsync off)\n")
    print(table(found))
    if args.json:
        args.json.write_text(json.dumps({"video": args.video.name, "seconds": seconds, "rows": found}, indent=1))


if __name__ == "__main__":
    main()
