"""Every benchmark in one go: per-stage cost, the whole pipeline, scaling, and each area's quality tables.

    .venv/bin/python benchmarks/run_all.py                          # everything (long: see --help)
    .venv/bin/python benchmarks/run_all.py --only stages,pipeline   # a subset
    .venv/bin/python benchmarks/run_all.py --durations 1 --scale-languages es

Sections (each prints a markdown table):
- stages: every step of dubbing.steps.STEPS run as a dub run runs it (default config),
  each in its own worker process on ../shared/media/vrt_face1.mp4: wall seconds, real-time factor (seconds per
  second of video) and the worker's peak resident memory (imports and models included, as a task worker pays
  them). The once-per-video steps run once; the per-language steps for each language.
- pipeline: `dub run` itself (the Prefect flow) for one language and for three: wall seconds, RTF, peak memory.
- scaling: the same stage workers on 1, 5 and 10 minutes of talking video (vrt_face1 looped with ffmpeg), and on
  the 1-minute video with 1 and 3 languages: the once-per-video total and the per-language total, to show the
  first does not grow with the number of languages.
- areas: the other engineers' scripts (benchmarks/bench_*.py), run as they are; their tables are printed as
  they print them, with each script's wall time and peak memory.

Peak memory is the child's ru_maxrss from wait4. Timings are wall-clock on this machine; when other work shares
the CPU they are inflated (the header says how busy the machine was).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"
CLIP = MEDIA / "vrt_face1.mp4"


# ---------------------------------------------------------------- child processes


def measured(cmd: list[str]) -> tuple[float, float, str, int]:
    """Run `cmd`; returns (wall seconds, peak RSS in MB of the child and its waited descendants, stdout, rc)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        if proc.returncode != 0:
            text += "\n" + err.read().decode(errors="replace")[-3000:]
    return wall, usage.ru_maxrss / 1024, text, proc.returncode


def worker(step: str, video: Path, out: Path, lang: str | None) -> None:
    """One pipeline step in this process, its inputs read back from the files earlier steps wrote (as a task
    worker would get them); prints nothing but what the step made."""
    from dubbing import steps
    from dubbing.config import load_settings
    from dubbing.layout import layout_for

    config = os.environ.get("DUB_BENCH_CONFIG")
    settings = load_settings(user_config=Path(config) if config else None)
    context: steps.Context = {"video": video, "audio": None, "settings": settings, "layout": layout_for(video, out)}
    if lang is not None:
        context |= {"lang": lang, "cfg": settings.for_language(lang)}
    steps.run(steps.get_step(step), context)


def run_step(step: str, video: Path, out: Path, lang: str | None = None) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--worker", step, str(video), str(out)] + ([lang] if lang else [])
    wall, peak, text, rc = measured(cmd)
    if rc != 0:
        raise RuntimeError(f"step {step} ({lang or 'source'}) failed:\n{text[-2000:]}")
    return wall, peak


def chain(video: Path, out: Path, languages: list[str]) -> dict[tuple[str, str | None], tuple[float, float]]:
    """Every step once per video, then every per-language step for each language, each in its own worker; then
    the manifest and the once-per-video summary steps."""
    from dubbing import steps
    from dubbing.layout import layout_for
    from dubbing.types import Transcript

    results = {}
    for step in steps.steps("source"):
        if step.name != "probe":  # every worker probes the input to build its context
            results[(step.name, None)] = run_step(step.name, video, out)
    for lang in languages:
        for step in steps.steps("language"):
            results[(step.name, lang)] = run_step(step.name, video, out, lang)
    layout = layout_for(video, out)
    outputs = {lang: layout.outputs(lang, layout.video(lang)) for lang in languages}
    transcript = Transcript.model_validate_json(layout.transcript.read_text())
    steps.write_manifest(video, steps.probe_source(video), transcript, outputs, layout)
    for step in steps.steps("summary"):
        results[(step.name, None)] = run_step(step.name, video, out)
    return results


# ---------------------------------------------------------------- inputs


def duration(video: Path) -> float:
    from dubbing import media

    return media.probe(video).duration_s


def looped(minutes: float, folder: Path) -> Path:
    """`minutes` of talking video: the real clip looped (stream copy, so the picture and voice stay real)."""
    out = folder / f"talk_{minutes:g}min.mp4"
    if not out.exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-y", "-v", "error", "-stream_loop", "-1", "-i", str(CLIP), "-t",
             str(minutes * 60), "-c", "copy", str(out)],
            check=True,
        )  # fmt: skip
    return out


# ---------------------------------------------------------------- sections


def fmt_mb(mb: float) -> str:
    return f"{mb:,.0f}" if mb else "-"


def section_stages(work: Path, languages: list[str]) -> list[str]:
    video_s = duration(CLIP)
    results = chain(CLIP, work / "stages", languages)
    rows = [
        f"On `{CLIP.name}` ({video_s:.1f} s), languages {', '.join(languages)}; every step in its own worker process.",
        "",
        "| step | runs | language | wall s | RTF | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for (step, lang), (wall, peak) in results.items():
        runs = "per video" if lang is None else "per language"
        rows.append(f"| {step} | {runs} | {lang or '-'} | {wall:.1f} | {wall / video_s:.2f} | {fmt_mb(peak)} |")
    source = sum(w for (s, lang), (w, _p) in results.items() if lang is None)
    per_lang = {lang: sum(w for (s, x), (w, _p) in results.items() if x == lang) for lang in languages}
    rows.append(
        f"| **total** | | | {source + sum(per_lang.values()):.1f} | "
        f"{(source + sum(per_lang.values())) / video_s:.2f} | {fmt_mb(max(p for _w, p in results.values()))} |"
    )
    return rows


def section_pipeline(work: Path, language_sets: list[str]) -> list[str]:
    video_s = duration(CLIP)
    dub = str(Path(sys.executable).with_name("dub"))
    rows = [
        f"`dub run {CLIP.name} -l LANGS` (the Prefect flow, fresh output folder, ephemeral Prefect API included).",
        "",
        "| languages | wall s | RTF | peak MB | outputs |",
        "|---|---|---|---|---|",
    ]
    for langs in language_sets:
        out = work / f"pipeline_{langs.replace(',', '_')}"
        config = ["--config", os.environ["DUB_BENCH_CONFIG"]] if os.environ.get("DUB_BENCH_CONFIG") else []
        wall, peak, text, rc = measured([dub, "run", str(CLIP), "-l", langs, "-o", str(out), *config])
        made = "failed: " + text.strip().splitlines()[-1][:120] if rc else _outputs(out)
        rows.append(f"| {langs} | {wall:.1f} | {wall / video_s:.2f} | {fmt_mb(peak)} | {made} |")
    if not rc:
        rows += ["", f"QA of the last run ({langs}), from its report.json files:", "", *qa_table(out)]
    return rows


def qa_table(out: Path) -> list[str]:
    """The headline QA figures of each language of a finished run."""
    rows = [
        "| language | error rate of the dub heard back | voice similarity | lipsync r (source r) | LUFS / true peak "
        "| max speed | flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    for lang, outputs in manifest["outputs"].items():
        r = json.loads((out / outputs["report"]).read_text())
        heard, lips, loud = r["intelligibility"], r["lipsync"], r["loudness"]
        voices = ", ".join(f"{k} {v['similarity']}" for k, v in r["voice"].get("speakers", {}).items())
        checks = sorted({f["check"] for f in r["flags"]})
        rows.append(
            f"| {lang} | {heard.get('metric', '')} {heard.get('error_rate', '-')} | {voices or '-'} | "
            f"{lips.get('correlation', '-')} ({lips.get('source_correlation', '-')}) | "
            f"{loud.get('integrated_lufs', '-')} / {loud.get('true_peak_dbtp', '-')} | {r['max_speed']} | "
            f"{len(r['flags'])} {', '.join(checks)} |"
        )
    return rows


def _outputs(out: Path) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    langs = manifest["outputs"]
    reports = sum((out / o["report"]).exists() for o in langs.values())
    return f"{len(langs)} language(s), {reports} report.json, report.html: {(out / 'report.html').exists()}"


def section_scaling(work: Path, minutes: list[float], languages: list[str]) -> list[str]:
    rows = [
        "Looped `vrt_face1.mp4`; every step in its own worker. `per video` is the once-per-video steps, "
        "`per language` the per-language steps summed over the languages.",
        "",
        "| video | languages | per video s | per language s | total s | RTF | peak MB | slowest steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    plan = [(m, languages[:1]) for m in minutes]
    if len(languages) > 1:
        plan.insert(1, (minutes[0], languages))
    for m, langs in plan:
        video = looped(m, work)
        results = chain(video, work / f"scale_{m:g}_{len(langs)}", langs)
        source = sum(w for (s, lang), (w, _p) in results.items() if lang is None and s != "review-page")
        per_lang = sum(w for (s, lang), (w, _p) in results.items() if lang is not None)
        total = sum(w for w, _p in results.values())
        slow = sorted(results.items(), key=lambda kv: -kv[1][0])[:3]
        slowest = ", ".join(f"{s}{'/' + lang if lang else ''} {w:.0f}s" for (s, lang), (w, _p) in slow)
        peak = max(p for _w, p in results.values())
        rows.append(
            f"| {m:g} min | {','.join(langs)} | {source:.0f} | {per_lang:.0f} | {total:.0f} | {total / (m * 60):.2f} | "
            f"{fmt_mb(peak)} | {slowest} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def section_areas(names: list[str] | None) -> list[str]:
    rows: list[str] = []
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        if names and not any(n in script.stem for n in names):
            continue
        wall, peak, text, rc = measured([sys.executable, str(script)])
        rows += [f"#### {script.name} ({wall:.0f} s wall, peak {fmt_mb(peak)} MB{', FAILED' if rc else ''})", ""]
        rows += [text.strip(), ""]
    return rows


def hardware() -> str:
    """The CPU model, its cores and the memory: what every benchmark table names."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB"


def load_average(digits: int = 1) -> str:
    return "load average " + "/".join(f"{value:.{digits}f}" for value in os.getloadavg())


def machine() -> str:
    return f"{hardware()}, Python {platform.python_version()}, {load_average()} at the start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="stages,pipeline,scaling,areas")
    parser.add_argument("--languages", default="es,pt,it", help="languages for the multi-language rows")
    parser.add_argument("--durations", default="1,5,10", help="minutes of looped video for the scaling rows")
    parser.add_argument("--areas", help="only the bench_*.py scripts whose name contains one of these (comma list)")
    parser.add_argument("--work", type=Path, help="keep the outputs here (default: a temporary folder)")
    parser.add_argument("--config", type=Path, help="a YAML config for every run (e.g. lipsync off)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        step, video, out, *lang = args.worker
        worker(step, Path(video), Path(out), lang[0] if lang else None)
        return
    if not CLIP.exists():
        raise SystemExit(f"the shared media is not at {MEDIA}: these benchmarks need it")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # slow on a busy machine
    if args.config:
        os.environ["DUB_BENCH_CONFIG"] = str(args.config.resolve())
        settings = [x for x in args.config.read_text().splitlines() if x.strip() and not x.lstrip().startswith("#")]
        print(f"Config: {args.config}: {' '.join(' '.join(settings).split())}\n")
    languages = [x.strip() for x in args.languages.split(",") if x.strip()]
    sections = args.only.split(",")
    work_dir = args.work or Path(tempfile.mkdtemp(prefix="dub-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}.\n")
    started = time.perf_counter()
    if "stages" in sections:
        print("### Stages\n\n" + "\n".join(section_stages(work_dir, languages[:1])) + "\n", flush=True)
    if "pipeline" in sections:
        sets = [languages[0], ",".join(languages)] if len(languages) > 1 else [languages[0]]
        print("### Whole pipeline\n\n" + "\n".join(section_pipeline(work_dir, sets)) + "\n", flush=True)
    if "scaling" in sections:
        minutes = [float(x) for x in args.durations.split(",")]
        print("### Scaling\n\n" + "\n".join(section_scaling(work_dir, minutes, languages)) + "\n", flush=True)
    if "areas" in sections:
        names = args.areas.split(",") if args.areas else None
        print("### Per-area benchmarks\n\n" + "\n".join(section_areas(names)), flush=True)
    load = os.getloadavg()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\nAll of it: {time.perf_counter() - started:.0f} s wall, {children.ru_utime + children.ru_stime:.0f} CPU-s "
        f"in workers; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end. Outputs in {work_dir}."
    )


if __name__ == "__main__":
    main()
