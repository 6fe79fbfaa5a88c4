"""The studio's goals (issue #21), measured on a 1-minute dub through the studio's own HTTP API.

    .venv/bin/python benchmarks/bench_studio.py                   # dub, edit, regenerate, render; prints the table
    .venv/bin/python benchmarks/bench_studio.py --work /tmp/bs    # the work folder (the input and the run are kept)

Goals: a ~5-second line edited and regenerated is heard in under 5 s on 2 cores; a render after one edit of a
1-minute dub speaks only that line again, as the render flow's task states show.

What it does: builds the 60-s talking head bench_speed.py uses (its helper; kept in the work folder), dubs it
(`dub run VIDEO -l es`, the draft preset, into WORK/run: a cached rerun when this code made the run there; the line
edited last time is put back), picks the line whose slot is closest to 5 s and, through the calls the page makes
(GET /api/state and /api/bank as the page loads; per edit POST /api/line, POST /api/regenerate, then GET of the
new line's audio):
- a studio without the warm-up (how `dub studio` served before it warmed up; the same Studio and server in a plain
  Python process): two edits regenerated, first and second;
- `dub studio` itself (it warms the TTS up in the background once it listens): the time until the page's state says
  `ready`, then two more edits regenerated, then one typed as the page types it (POST /api/estimate, which speaks a
  new text ahead once typing pauses for a second) and Regenerate pressed `--pause` seconds (3) later;
- one more edit, not regenerated, and Render (POST /api/render, polled as the page polls): the render's seconds, the
  line-cache files it wrote (mtimes), what its log says it synthesised, and its task states as the Prefect API
  records them (the server of PREFECT_API_URL, or one this script starts).
Each edit gives the line a new text (two of its words left out, a pair no earlier edit or run left out), so every
regeneration is a real synthesis, never a line-cache hit (but the typed one's, when speaking ahead finished first).
Per regeneration: the time from Regenerate until the page has the new line's audio (the three requests), the
server's own seconds for the regeneration, the studio process's CPU seconds (for the typed one, from the first
keystroke: speaking ahead included), the load average.

A benchmark, not a test: a dub and a render of a minute take minutes on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
from bench_speed import build_inputs  # this folder is the script's own: sys.path[0]
from run_all import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dubbing.layout import layout_for  # noqa: E402
from tests.test_flows import task_states_since  # noqa: E402  # the task states as the Prefect UI shows them

COLD = (  # the studio as `dub studio` served it before the warm-up: the same objects, nothing warmed
    "import sys\n"
    "from dubbing.studio import Studio, StudioServer\n"
    "web = StudioServer(Studio(sys.argv[1]), port=0)\n"
    "print(f'studio: {web.url}', flush=True)\n"
    "web.serve_forever()\n"
)


def env(api: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PREFECT_API_URL": api}


@contextlib.contextmanager
def prefect_api(work: Path) -> Iterator[str]:
    """PREFECT_API_URL when set, else a local Prefect server for the run and the render (their task states)."""
    if api := os.environ.get("PREFECT_API_URL"):
        yield api
        return
    port = free_port()
    prefect = Path(sys.executable).with_name("prefect")
    home = Path(tempfile.mkdtemp(prefix="prefect-", dir=work))
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240
        while not healthy(api):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the Prefect server did not start")
            time.sleep(1)
        yield api
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StudioProcess:
    """A studio server in its own process, reached as the page reaches it."""

    def __init__(self, cmd: list[str], api: str) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env(api))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"studio: (http://\S+/)", line)
        if not found:
            raise SystemExit(f"the studio did not start: {line!r}")
        self.url = found.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=900)

    def get(self, path: str) -> dict:
        reply = self.http.get(path)
        reply.raise_for_status()
        return reply.json() if "json" in reply.headers.get("content-type", "") else {}

    def post(self, path: str, body: dict) -> dict:
        reply = self.http.post(path, json=body, headers={"Origin": self.url.rstrip("/")})
        if reply.status_code >= 400:
            raise SystemExit(f"POST {path}: {reply.status_code} {reply.text}")
        return reply.json()

    def open_page(self, lang: str) -> dict:
        self.http.get("/").raise_for_status()
        state = self.get(f"/api/state?lang={lang}")
        self.get(f"/api/bank?lang={lang}")
        return state

    def regenerate(self, lang: str, index: int, text: str, pause_s: float | None = None) -> dict:
        """Edit the line and regenerate it as the page does; the figures of that one regeneration. With `pause_s`,
        the text is typed first (the page asks for its estimate) and Regenerate pressed `pause_s` later."""
        load = os.getloadavg()[0]
        cpu0 = cpu_s(self.proc.pid)
        if pause_s is not None:
            self.post("/api/estimate", {"lang": lang, "index": index, "text": text})
            time.sleep(pause_s)
        t0 = time.monotonic()
        self.post("/api/line", {"lang": lang, "index": index, "text": text})
        state = self.post("/api/regenerate", {"lang": lang, "index": index})
        new = next(li for li in state["lines"] if li["index"] == index)["regenerated"]
        self.http.get(new["audio"]).raise_for_status()  # the page's <audio> fetches it, then plays it
        return {
            "page_s": time.monotonic() - t0,
            "server_s": new["seconds"],
            "cpu_s": cpu_s(self.proc.pid) - cpu0,
            "load": load,
            "heard_s": new["heard_s"],
            "speed": new["speed"],
            "spoken": new["lines_spoken"],
            "warm": new.get("warm"),
        }

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def variants(text: str, count: int, run: int) -> list[str]:
    """`count` new texts for the line, two of its words left out in each, a different pair in every edit and in
    every run of the benchmark (`run`): an earlier run's text would be found in the line cache."""
    words = text.split()
    pairs = list(itertools.combinations(range(len(words)), 2))
    picked = pairs[run * count : (run + 1) * count]
    if len(picked) < count:
        raise SystemExit(f"the chosen line has no {count} new ways left to edit it; use a fresh --work")
    return [" ".join(w for i, w in enumerate(words) if i not in pair) for pair in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dub-bench-studio")
    parser.add_argument("--lang", default="es")
    parser.add_argument("--slot", type=float, default=5.0, help="the line whose slot is closest to this (s)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between typing and Regenerate (s)")
    args = parser.parse_args()
    work, lang = args.work.resolve(), args.lang
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_studio: {machine()}", flush=True)
    video = build_inputs(work, {"60"})["60"]
    out = work / "run"
    with prefect_api(work) as api:
        # dub run every time: into a folder of an earlier run of this code it is a cached rerun (the render below
        # is compared with a run made by the same code: a changed module re-runs every stage)
        print(f"dubbing {video.name} into {out} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "dubbing.cli", "run", str(video), "-l", lang, "-o", str(out)]
        done = subprocess.run(cmd, env=env(api), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"dub run failed:\n{done.stderr[-3000:]}")
        dub_s, reran = time.monotonic() - t0, "reused from the cache" in done.stderr
        rows: list[tuple[str, dict]] = []
        cold = StudioProcess([sys.executable, "-c", COLD, str(out)], api)
        try:
            state = cold.open_page(lang)
            lines = [li for li in state["lines"] if len(li["text"].split()) >= 6]
            line = min(lines, key=lambda li: abs((li["slot_s"] or li["end"] - li["start"]) - args.slot))
            counter = work / "bench_studio.runs"  # how many runs edited this line before
            runs = int(counter.read_text()) if counter.exists() else 0
            index, texts = line["index"], variants(line["text"], 6, runs)
            counter.write_text(str(runs + 1))
            print(f"line {index}: slot {line['slot_s']} s, {line['text']!r}", file=sys.stderr, flush=True)
            rows.append(("no warm-up, first", cold.regenerate(lang, index, texts[0])))
            rows.append(("no warm-up, second", cold.regenerate(lang, index, texts[1])))
        finally:
            cold.close()
        warm = StudioProcess([sys.executable, "-m", "dubbing.cli", "studio", str(out), "--port", "0"], api)
        try:
            t0 = time.monotonic()
            warm.open_page(lang)
            while not warm.get(f"/api/state?lang={lang}")["ready"]:
                if time.monotonic() - t0 > 300:
                    raise SystemExit("the studio's warm-up did not finish in 300 s")
                time.sleep(0.2)
            ready_s = time.monotonic() - t0
            rows.append(("dub studio (warmed up), first", warm.regenerate(lang, index, texts[2])))
            rows.append(("dub studio (warmed up), second", warm.regenerate(lang, index, texts[3])))
            typed = f"dub studio, typed, Regenerate {args.pause:g} s later"
            rows.append((typed, warm.regenerate(lang, index, texts[4], pause_s=args.pause)))
            # one more edit, not regenerated: the render must speak exactly this line
            warm.post("/api/line", {"lang": lang, "index": index, "text": texts[5]})
            layout = layout_for(video, out)
            cache = layout.clip_cache(lang)
            before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.wav")}
            started, t0 = datetime.now(UTC), time.monotonic()
            warm.post("/api/render", {"lang": lang})
            while (status := warm.get("/api/render"))["running"]:
                time.sleep(1)
            render_s = time.monotonic() - t0
            if status["returncode"] != 0:
                raise SystemExit(f"the render failed: {status['error'] or status['last']}")
            warm.post("/api/line", {"lang": lang, "index": index, "text": line["text"]})  # back for the next time
        finally:
            warm.close()
        after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.wav")}
        written = sorted(name for name, mtime in after.items() if before.get(name) != mtime)
        log = (layout.studio_dir(lang) / "render.log").read_text(encoding="utf-8")
        said = re.search(rf"{lang}: (\d+) line\(s\) synthesised", log)
        deadline = time.monotonic() + 180  # task states arrive as events, a little after the run ends
        states = task_states_since(started, api)
        while "synthesize-and-fit" not in states and time.monotonic() < deadline:
            time.sleep(2)
            states = task_states_since(started, api)
    total = len(after)
    print()
    kind = "a rerun, its stages from the cache" if reran else "computed"
    print(f"dub run of the 60-s input ({kind}): {dub_s:.0f} s; the line: {index}, slot {line['slot_s']} s")
    print(f"dub studio's warm-up, from the page's first request to `ready`: {ready_s:.1f} s\n")
    print("| regeneration | heard after Regenerate | server | studio CPU | load | line | lines synthesised |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['page_s']:.1f} s | {r['server_s']:.1f} s | {r['cpu_s']:.1f} CPU-s | {r['load']:.1f} "
            f"| {r['heard_s']:.1f} s at x{r['speed']:.2f} | {r['spoken']} |"
        )
    print()
    print(f"render after one more edit of line {index}: {render_s:.0f} s")
    print(f"- line-cache files the render wrote: {len(written)} of {total}")
    print(f"- its log: {said.group(1) if said else '?'} line(s) synthesised (new clips in the line cache)")
    print("- its task states (Prefect API): " + ", ".join(f"{k} {'/'.join(v)}" for k, v in sorted(states.items())))
    print(f"\n{load_average()} at the end")


if __name__ == "__main__":
    main()
