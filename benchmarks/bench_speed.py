"""The speed goals (issue #16), measured as this commit against a previous one, side by side in the same run.

    .venv/bin/python benchmarks/bench_speed.py                                  # every case but --long, HEAD~1 vs here
    .venv/bin/python benchmarks/bench_speed.py --cases clip10,firstline,cached  # the quick ones (a few minutes)
    .venv/bin/python benchmarks/bench_speed.py --base main --head bench --repeat 2 --json speed.json
    .venv/bin/python benchmarks/bench_speed.py --base none --cases draft60       # the head alone, no ratios

The machine is shared and noisy, so absolute seconds say little from one run to the next: both commits run here,
one after the other, case by case (base, head; then head, base on the next repeat, so a drift in load falls on
both), and the table gives the ratio head/base of wall time and of CPU seconds (CPU seconds survive contention
much better than wall time). Each side is a detached git worktree under the work folder (`--head` defaults to
this working tree, uncommitted changes included) that runs with the shared virtual environment (the one running
this script) and `PYTHONPATH` set to that tree; before measuring, the script prints where `dubbing` is imported
from on each side, so the code that runs is the code named.

Cases (`--cases`, comma list; `--long` adds `long`):
- draft60, final60: `dub run` of a 60 s 720p talking head, one language (es), preset draft (the CLI default) and
  final. Goals: draft <= 0.6x the video's duration, final <= 1.0x; CPU >= 180% (the machine has 2 cores).
- langs2, langs3: the same video (draft) into es,pt and es,pt,it; the extra-language row derives from them and
  draft60: each extra language <= 0.3x the duration.
- clip10: a 10 s clip of the same video, one language: wall <= 15 s.
- firstline: the clip10 command into a fresh folder on a pseudo-terminal (what a person at a terminal sees: progress
  bars are only drawn there), stopped once any visible text is out: first line <= 2 s (every row also shows the
  time to its own first line, on a pipe unless --tty).
- cached: the clip10 command again into clip10's --out (run first if it was not): a fully cached rerun <= 5 s.
- long: a 10-minute version (draft, es): wall per second within 1.2x of draft60's, peak memory < 2.5 GB.

Inputs are built with ffmpeg in the work folder (vrt_face4.mp4's picture looped and padded to 1280x720, the real
60 s speech of musetalk_eng.wav as audio; the 10-minute one loops both) and kept there for the next run.

Measured per run: wall seconds (spawn to exit); CPU seconds, user + system of every process of the run (the
children's rusage delta; the script is made a child subreaper, so processes that outlive their parents are still
reaped and counted); CPU % = CPU / wall; peak memory two ways: the largest sum of RSS over the whole process tree,
sampled from /proc every 0.2 s (an upper bound: shared pages count once per process), and ru_maxrss of the largest
single process (a lower bound); time to the first byte and to the first full line on stdout or stderr (pipes; on
a terminal, the first visible text). With --repeat N each side's figure is the median of its runs and the ratio
the median of the head/base ratios of runs made next to each other. Goals are judged on the head.

`--entry wrapper` (the default) runs each tree's `./dub` as a user does (scripts/setup's no-op check included; the
tree gets a `.venv` link to the shared environment, and the script refuses when that tree's lock files differ from
what the environment was built from, since setup would then rebuild the shared environment); `--entry python`
runs `python -m dubbing.cli` directly.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import json
import os
import pty
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from run_all import hardware, load_average  # this folder is the script's own: sys.path[0]

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"
PICTURE = MEDIA / "vrt_face4.mp4"
SPEECH = MEDIA / "musetalk_eng.wav"
VENV = Path(sys.prefix)
LOCK_FILES = ("requirements.lock", "requirements-nodeps.lock", "requirements-llama.lock", "pyproject.toml")

CASES = ("draft60", "final60", "langs2", "langs3", "clip10", "firstline", "cached", "long")
DEFAULT_CASES = ("draft60", "final60", "langs2", "langs3", "clip10", "firstline", "cached")


@dataclass(frozen=True)
class Case:
    name: str
    video: str  # key of the inputs: "60", "10" or "600"
    languages: str
    preset: str
    label: str


CASE = {
    "draft60": Case("draft60", "60", "es", "draft", "60 s 720p, es, draft"),
    "final60": Case("final60", "60", "es", "final", "60 s 720p, es, final"),
    "langs2": Case("langs2", "60", "es,pt", "draft", "60 s 720p, es,pt, draft"),
    "langs3": Case("langs3", "60", "es,pt,it", "draft", "60 s 720p, es,pt,it, draft"),
    "clip10": Case("clip10", "10", "es", "draft", "10 s clip, es, draft"),
    "firstline": Case("firstline", "10", "es", "draft", "first output line (10 s clip)"),
    "cached": Case("cached", "10", "es", "draft", "fully cached rerun (10 s clip)"),
    "long": Case("long", "600", "es", "draft", "10 min 720p, es, draft"),
}


@dataclass
class Run:
    case: str
    side: str  # "base" or "head"
    rev: str
    repeat: int
    wall_s: float
    cpu_s: float
    tree_rss_mb: float  # largest sampled sum of RSS over the process tree
    max_rss_mb: float  # ru_maxrss of the largest single process
    first_byte_s: float | None
    first_line_s: float | None
    first_line: str
    rc: int
    stopped: bool = False  # firstline: stopped on purpose once the first line was out
    cache_hits: int = 0  # "(cached)" stages in the output of a run that should have computed everything
    log: str = ""

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.wall_s if self.wall_s else 0.0


@dataclass
class Side:
    name: str  # "base" or "head"
    rev: str  # as given
    commit: str  # what it resolved to ("+ changes" for a dirty working tree)
    tree: Path
    env: dict[str, str] = field(default_factory=dict)
    linked_venv: bool = False  # a .venv link this script made (removed at the end)


# ---------------------------------------------------------------- processes


def become_subreaper() -> bool:
    """Orphaned grandchildren (a server a run started, a stray ffmpeg) are re-parented to this process rather than
    to init, so they stay in the sampled tree and their CPU time reaches RUSAGE_CHILDREN when reaped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """The largest total RSS of this process's descendants, sampled every `every` seconds."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.peak_kb, self._done = every, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, sum(rss_kb(p) for p in descendants(os.getpid())))
            self._done.wait(self.every)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_kb


def reap_orphans(grace_s: float = 10.0) -> None:
    """Wait for (then kill) what the run left behind, so its CPU time is counted and the next run starts alone."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            for left in descendants(os.getpid()):
                try:
                    os.kill(left, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = float("inf")
        time.sleep(0.1)


ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


def first_line_in(text: bytes, tty: bool) -> bytes | None:
    """The first line a person would see: on a pipe a whole line; on a terminal any visible text (a progress bar
    is redrawn in place and may never end its line)."""
    if tty:
        visible = ANSI.sub(b"", text).replace(b"\r", b"\n")
        lines = [line.strip() for line in visible.split(b"\n")]
        return next((line for line in lines if line), None)
    body = text.lstrip(b"\r\n")
    return body.split(b"\n", 1)[0] if b"\n" in body else None


def measure(
    cmd: list[str], cwd: Path, env: dict[str, str], log: Path, *, stop_after_first_line: bool = False, tty: bool = False
) -> dict:
    """Run `cmd` with its output piped (or on a pseudo-terminal): wall (spawn to exit), CPU, memory and when its first
    output came."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = TreeSampler()
    sampler.start()
    lock = threading.Lock()
    seen: dict = {"byte": None, "line": None, "text": b"", "stopped": False}
    if tty:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        outputs, fds = {"stdout": slave, "stderr": slave}, [master]
    else:
        outputs, fds = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}, []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True, **outputs)
    if tty:
        os.close(slave)
    else:
        fds = [proc.stdout.fileno(), proc.stderr.fileno()]

    def stop() -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            time.sleep(3)

    def read(fd: int, sink: BinaryIO) -> None:
        partial = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side closed
                data = b""
            if not data:
                return
            now = time.perf_counter() - start
            with lock:
                sink.write(data)
                if seen["byte"] is None:
                    seen["byte"] = now
                if seen["line"] is None:
                    partial += data
                    line = first_line_in(partial, tty)
                    if line is not None:
                        seen["line"], seen["text"] = now, line
                        if stop_after_first_line:
                            seen["stopped"] = True
                            threading.Thread(target=stop, daemon=True).start()

    with open(log, "wb") as sink:
        readers = [threading.Thread(target=read, args=(fd, sink), daemon=True) for fd in fds]
        for reader in readers:
            reader.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        reap_orphans()
        for reader in readers:
            reader.join(timeout=5)
    if tty:
        os.close(master)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kb = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "tree_rss_mb": peak_kb / 1024,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "first_byte_s": seen["byte"],
        "first_line_s": seen["line"],
        "first_line": seen["text"].decode(errors="replace").strip()[:120],
        "rc": proc.returncode,
        "stopped": seen["stopped"],
    }


# ---------------------------------------------------------------- inputs


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


def build_inputs(work: Path, keys: set[str]) -> dict[str, Path]:
    """The talking-head videos, built once in `work/media` (the PLAN's ffmpeg line)."""
    media = work / "media"
    media.mkdir(parents=True, exist_ok=True)
    paths = {"60": media / "talk60.mp4", "10": media / "talk10.mp4", "600": media / "talk600.mp4"}
    if not paths["60"].exists():
        print("building the 60 s input ...", file=sys.stderr, flush=True)
        ffmpeg(
            "-stream_loop", "-1", "-i", str(PICTURE), "-i", str(SPEECH), "-map", "0:v", "-map", "1:a", "-t", "60",
            "-vf", "scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
            "-c:a", "aac", str(paths["60"]) + ".part.mp4",
        )  # fmt: skip
        os.replace(str(paths["60"]) + ".part.mp4", paths["60"])
    if "10" in keys and not paths["10"].exists():
        ffmpeg("-i", str(paths["60"]), "-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
               "-c:a", "aac", str(paths["10"]))  # fmt: skip
    if "600" in keys and not paths["600"].exists():
        print("building the 10-minute input ...", file=sys.stderr, flush=True)
        ffmpeg("-stream_loop", "-1", "-i", str(paths["60"]), "-t", "600", "-c", "copy", str(paths["600"]))
    return paths


def duration_s(video: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(video)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip())


# ---------------------------------------------------------------- the two trees


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def lock_key(tree: Path) -> str:
    return hashlib.sha256(b"".join((tree / name).read_bytes() for name in LOCK_FILES)).hexdigest()


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs `tree`'s pipeline with the shared virtual environment (bench_fit's too)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("DUBBING_KILL_AFTER", None)
    return env


def prepare_side(name: str, rev: str | None, work: Path, entry: str) -> Side:
    """A worktree at `rev` (None: this working tree as it is), set up to run with the shared environment."""
    if rev is None:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        side = Side(name, "working tree", git("rev-parse", "--short", "HEAD") + (" + changes" if dirty else ""), ROOT)
    else:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        tree = work / "trees" / commit[:12]
        if not tree.exists():
            (work / "trees").mkdir(parents=True, exist_ok=True)
            git("worktree", "add", "--detach", str(tree), commit)
        side = Side(name, rev, commit[:9], tree)
    side.env = env = tree_env(side.tree)
    if entry == "wrapper":
        stamp = VENV / ".setup-stamp"
        if not stamp.exists() or stamp.read_text().strip() != lock_key(side.tree):
            raise SystemExit(
                f"{name} ({rev or 'working tree'}): its lock files differ from what {VENV} was built from, so its "
                "./dub would rebuild the shared environment; use --entry python"
            )
        link = side.tree / ".venv"
        if not link.exists() and not link.is_symlink():
            link.symlink_to(VENV)
            side.linked_venv = True
    where = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import dubbing; print(dubbing.__file__)"],
        cwd=side.tree, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).resolve().is_relative_to(side.tree.resolve()):
        raise SystemExit(f"{name}: dubbing is imported from {where}, not from {side.tree}")
    print(f"{name}: {side.rev} = {side.commit}, dubbing from {where}", file=sys.stderr, flush=True)
    return side


def remove_trees(sides: list[Side]) -> None:
    for side in sides:
        if side.linked_venv:
            (side.tree / ".venv").unlink()
        if side.tree != ROOT:
            subprocess.run(["git", "worktree", "remove", "--force", str(side.tree)], cwd=ROOT, capture_output=True)


def dub_command(side: Side, entry: str, video: Path, languages: str, out: Path, preset: str) -> list[str]:
    args = ["run", str(video), "-l", languages, "-o", str(out), "--preset", preset]
    if entry == "wrapper":
        return [str(side.tree / "dub"), *args]
    return [str(VENV / "bin" / "python"), "-m", "dubbing.cli", *args]


# ---------------------------------------------------------------- running the cases


def run_case(
    case: Case, side: Side, repeat: int, work: Path, inputs: dict[str, Path], entry: str, tty: bool = False
) -> Run:
    video = inputs[case.video]
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    tag = f"{side.name}-{side.commit.split()[0]}"
    if case.name == "cached":
        out = runs / f"clip10-{tag}-r{repeat}"
        if not (out / "manifest.json").exists():
            out = runs / f"cached-{tag}-r{repeat}"
            if not (out / "manifest.json").exists():
                print(f"  {side.name}: a first run for the cached rerun to find ...", file=sys.stderr, flush=True)
                cmd = dub_command(side, entry, video, case.languages, out, case.preset)
                measure(cmd, side.tree, side.env, runs / f"cached-warm-{tag}-r{repeat}.log")
    else:
        out = runs / f"{case.name}-{tag}-r{repeat}"
        shutil.rmtree(out, ignore_errors=True)  # fresh: a folder of its own
    cmd = dub_command(side, entry, video, case.languages, out, case.preset)
    log = runs / f"{case.name}-{tag}-r{repeat}.log"
    first = case.name == "firstline"
    result = measure(cmd, side.tree, side.env, log, stop_after_first_line=first, tty=first or tty)
    text = log.read_text(errors="replace")
    run = Run(case.name, side.name, side.commit, repeat, **result, log=str(log))
    if case.name != "cached":
        run.cache_hits = max(text.count("reused from the cache"), text.count("(cached)"))
    if run.rc != 0 and not run.stopped:
        tail = text.strip().splitlines()[-1:] or [""]
        print(f"  {case.name} {side.name} failed (rc {run.rc}): {tail[0][:200]} (see {log})", file=sys.stderr)
    return run


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(runs: list[Run], key: str) -> float | None:
    """Median over repeats of head/base, each repeat's two runs having run next to each other."""
    pairs = []
    for r in {run.repeat for run in runs}:
        base = [getattr(x, key) for x in runs if x.side == "base" and x.repeat == r]
        head = [getattr(x, key) for x in runs if x.side == "head" and x.repeat == r]
        if base and head and base[0]:
            pairs.append(head[0] / base[0])
    return median(pairs) if pairs else None


def side_value(runs: list[Run], side: str, key: str) -> float | None:
    values = [getattr(x, key) for x in runs if x.side == side and getattr(x, key) is not None]
    return median(values) if values else None


# ---------------------------------------------------------------- goals and the table


def goals(case: str, by_case: dict[str, list[Run]], seconds: dict[str, float]) -> list[tuple[str, bool | None]]:
    """(goal text, met) for the head's figures of `case`."""
    head = {key: side_value(by_case[case], "head", key) for key in ("wall_s", "cpu_s", "first_line_s", "tree_rss_mb")}
    wall, out = head["wall_s"], []
    if wall is None:
        return out
    cpu_pct = 100 * head["cpu_s"] / wall if wall else 0.0
    dur = seconds[CASE[case].video]
    if case in ("draft60", "final60"):
        limit = 0.6 if case == "draft60" else 1.0
        out.append((f"wall <= {limit:g}x duration ({limit * dur:.0f} s)", wall <= limit * dur))
    if case in ("draft60", "final60", "langs2", "langs3", "long"):
        out.append(("CPU >= 180%", cpu_pct >= 180))
    if case == "clip10":
        out.append(("wall <= 15 s", wall <= 15))
    if case == "firstline":
        line = head["first_line_s"]
        out.append(("first line <= 2 s", None if line is None else line <= 2))
    if case == "cached":
        out.append(("wall <= 5 s", wall <= 5))
    if case == "long":
        out.append(("peak memory < 2.5 GB", head["tree_rss_mb"] < 2.5 * 1024))
        one = side_value(by_case.get("draft60", []), "head", "wall_s")
        if one:
            per_s = (wall / dur) / (one / seconds["60"])
            out.append((f"wall per second <= 1.2x the 1-minute's (is {per_s:.2f}x)", per_s <= 1.2))
    return out


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def pair(runs: list[Run], key: str, spec: str = ".1f", sides: tuple[str, ...] = ("base", "head")) -> str:
    values = [side_value(runs, s, key) for s in sides]
    return " → ".join(fmt(v, spec) for v in values) if len(sides) > 1 else fmt(values[0], spec)


def met(flag: bool | None) -> str:
    return "?" if flag is None else ("met" if flag else "**not met**")


def table(by_case: dict[str, list[Run]], seconds: dict[str, float], sides: tuple[str, ...]) -> list[str]:
    both = len(sides) == 2
    arrow = "base → head" if both else "head"
    rows = [
        f"| case | wall s ({arrow}) | × wall | CPU s ({arrow}) | × CPU | CPU % (head) | peak tree RSS MB (head) "
        "| largest process MB (head) | first line s (head) | goal | head |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, runs in by_case.items():
        label = CASE[case].label
        failed = [r for r in runs if r.rc != 0 and not r.stopped]
        hits = sum(r.cache_hits for r in runs)
        notes = (f" (failed: {', '.join(f'{r.side} rc {r.rc}' for r in failed)})" if failed else "") + (
            f" ({hits} cached stages in fresh runs!)" if hits else ""
        )
        cpu_pct = side_value(runs, "head", "cpu_pct")
        checks = goals(case, by_case, seconds)
        rows.append(
            f"| {label}{notes} | {pair(runs, 'wall_s', sides=sides)} | {fmt(ratio(runs, 'wall_s'), '.2f')} "
            f"| {pair(runs, 'cpu_s', sides=sides)} | {fmt(ratio(runs, 'cpu_s'), '.2f')} | {fmt(cpu_pct, '.0f')} "
            f"| {fmt(side_value(runs, 'head', 'tree_rss_mb'), ',.0f')} "
            f"| {fmt(side_value(runs, 'head', 'max_rss_mb'), ',.0f')} "
            f"| {fmt(side_value(runs, 'head', 'first_line_s'), '.2f')} | {'; '.join(g for g, _ in checks) or '-'} "
            f"| {', '.join(met(m) for _, m in checks) or '-'} |"
        )
    one = by_case.get("draft60")
    for case, extra in (("langs2", 1), ("langs3", 2)):
        if one and case in by_case:
            wall = {s: _extra(by_case[case], one, s, extra, "wall_s") for s in sides}
            cpu = {s: _extra(by_case[case], one, s, extra, "cpu_s") for s in sides}
            limit = 0.3 * seconds["60"]
            head = wall["head"]
            rows.append(
                f"| each extra language (({case} − draft60) / {extra}) | {' → '.join(fmt(wall[s]) for s in sides)} "
                f"| {_quotient(wall, both)} | {' → '.join(fmt(cpu[s]) for s in sides)} | {_quotient(cpu, both)} "
                f"| | | | | <= 0.3x duration ({limit:.0f} s) | {met(None if head is None else head <= limit)} |"
            )
    return rows


def _extra(runs: list[Run], one: list[Run], side: str, extra: int, key: str) -> float | None:
    many, single = side_value(runs, side, key), side_value(one, side, key)
    return None if many is None or single is None else (many - single) / extra


def _quotient(values: dict[str, float | None], both: bool) -> str:
    base, head = values.get("base"), values.get("head")
    return fmt(head / base, ".2f") if both and head is not None and base else "-"


def machine() -> str:
    return f"{hardware()}, {load_average(2)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD~1", help="the previous commit (default HEAD~1; 'none': head only)")
    parser.add_argument("--head", help="the commit to judge (default: this working tree, uncommitted changes too)")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--long", action="store_true", help="also the 10-minute case (long)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side and case (alternating)")
    parser.add_argument("--entry", choices=("wrapper", "python"), default="wrapper", help="./dub or python -m")
    parser.add_argument("--tty", action="store_true", help="every run on a pseudo-terminal (firstline always is)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dub-bench-speed"), help="inputs, trees, outputs")
    parser.add_argument("--keep-trees", action="store_true", help="leave the git worktrees in the work folder")
    parser.add_argument("--json", type=Path, help="also save every run as JSON here")
    args = parser.parse_args()

    names = [c.strip() for c in args.cases.split(",") if c.strip()] + (["long"] if args.long else [])
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    names = list(dict.fromkeys(n for n in CASES if n in names))  # draft60 before long, clip10 before cached
    if not PICTURE.exists() or not SPEECH.exists():
        raise SystemExit(f"the shared media is not at {MEDIA}: these benchmarks need it")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    reaper = become_subreaper()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_at_start = machine()
    inputs = build_inputs(work, {CASE[n].video for n in names})
    seconds = {key: duration_s(path) for key, path in inputs.items() if path.exists()}

    sides = []
    try:
        if args.base.lower() != "none":
            sides.append(prepare_side("base", args.base, work, args.entry))
        sides.append(prepare_side("head", args.head, work, args.entry))
        all_runs: list[Run] = []
        for name in names:
            case = CASE[name]
            for r in range(args.repeat):
                order = sides if r % 2 == 0 else sides[::-1]
                for side in order:
                    print(f"{name} #{r + 1} {side.name} ...", file=sys.stderr, flush=True)
                    run = run_case(case, side, r, work, inputs, args.entry, args.tty)
                    all_runs.append(run)
                    print(
                        f"  {run.wall_s:.1f} s wall, {run.cpu_s:.1f} CPU-s ({run.cpu_pct:.0f}%), tree "
                        f"{run.tree_rss_mb:,.0f} MB, first line {fmt(run.first_line_s, '.2f')} s: {run.first_line!r}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if not args.keep_trees:
            remove_trees(sides)
        else:
            remove_trees([s for s in sides if s.tree == ROOT])  # only its .venv link

    by_case = {name: [r for r in all_runs if r.case == name] for name in names}
    side_names = tuple(s.name for s in sides)
    print(f"Speed goals, {started_at}: {load_at_start} at the start; {machine().rsplit(', ', 1)[1]} at the end.")
    print(
        "Sides: "
        + "; ".join(f"{s.name} = {s.rev} ({s.commit})" for s in sides)
        + f". Entry: {'./dub (scripts/setup included)' if args.entry == 'wrapper' else 'python -m dubbing.cli'}; "
        f"{args.repeat} run(s) per side and case, alternating; output "
        f"{'on a pseudo-terminal' if args.tty else 'piped (firstline: on a pseudo-terminal, 160x40)'}.\n"
        f"Ratios are head/base. Peak tree RSS: the largest sum of RSS over the run's process tree, sampled every "
        f"0.2 s (counts shared pages once per process: an upper bound); largest process: ru_maxrss (a lower bound)."
        + ("" if reaper else " (Not a subreaper here: orphaned processes' CPU may be missing.)")
        + "\n"
    )
    print("\n".join(table(by_case, seconds, side_names)))
    if args.json:
        payload = {
            "date": started_at,
            "machine": load_at_start,
            "sides": [{"name": s.name, "rev": s.rev, "commit": s.commit} for s in sides],
            "entry": args.entry,
            "durations_s": seconds,
            "runs": [asdict(r) | {"cpu_pct": r.cpu_pct} for r in all_runs],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
