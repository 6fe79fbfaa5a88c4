"""Batch plans: which videos to dub into which languages, from a folder or a manifest file."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path, PurePath

import yaml

from dubbing.errors import DubbingError
from dubbing.layout import manifest_of

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


@dataclass(frozen=True)
class BatchItem:
    video: Path
    languages: list[str]
    preset: str
    out: Path
    skip_reason: str = ""

    def summary(self, status: str, detail: str = "") -> dict:
        return {
            "video": str(self.video),
            "languages": ",".join(self.languages),
            "status": status,
            "out": str(self.out),
            "detail": detail,
        }


def plan(source: Path, out: Path, languages: list[str], preset: str, *, only_new: bool = True) -> list[BatchItem]:
    """Expand a folder or a manifest into items; with `only_new`, videos already dubbed are skipped."""
    if not source.exists():
        raise DubbingError(f"batch source not found: {source}")
    if source.is_dir():
        if not languages:
            raise DubbingError("a folder batch needs --languages")
        rows = [{"video": str(p), "languages": languages} for p in sorted(source.iterdir()) if _is_video(p)]
        base = source
    else:
        rows, base = _read_manifest(source), source.parent
    items = [_item(row, base, out, languages, preset, source) for row in rows]
    return [_mark_done(item) if only_new else item for item in items]


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def _read_manifest(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        rows = data.get("videos", []) if isinstance(data, dict) else data
    else:
        raise DubbingError(f"batch manifest must be .csv, .yaml or .yml: {path}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r.get("video") for r in rows):
        raise DubbingError(f"{path}: every entry needs a 'video' (and optionally 'languages', 'preset', 'out')")
    return rows


def _item(row: dict, base: Path, out_root: Path, languages: list[str], preset: str, source: Path) -> BatchItem:
    video = Path(row["video"])
    video = video if video.is_absolute() else base / video
    langs = row.get("languages") or languages
    if isinstance(langs, str):
        langs = [code.strip() for code in langs.replace(" ", ",").split(",") if code.strip()]
    if not langs:
        raise DubbingError(f"{source}: no languages for {row['video']} (add a 'languages' column or pass --languages)")
    name = str(row.get("out") or video.stem)
    return BatchItem(video, list(langs), str(row.get("preset") or preset), safe_child(out_root, name, source))


def safe_child(root: Path, name: str, source: Path) -> Path:
    """`root/name`, refusing names that would write outside `root` (absolute paths, '..')."""
    pure = PurePath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise DubbingError(f"{source}: output name {name!r} would write outside {root}")
    return root / pure


def _mark_done(item: BatchItem) -> BatchItem:
    manifest = manifest_of(item.out)
    try:
        data = json.loads(manifest.read_text())
        done = set(data["outputs"]) | {data.get("source_language")}
    except (OSError, ValueError, KeyError):
        return item
    if set(item.languages) <= done:
        return BatchItem(item.video, item.languages, item.preset, item.out, "already dubbed")
    return item


def summary_markdown(results: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "failed", "skipped")}
    head = f"**{counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped**\n\n"
    table = "| video | languages | status | detail |\n|---|---|---|---|\n"
    table += "\n".join(f"| {r['video']} | {r['languages']} | {r['status']} | {r['detail']} |" for r in results)
    return head + table + "\n"
