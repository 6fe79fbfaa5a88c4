"""Batch plans: which videos to dub into which languages, from a folder or a manifest file."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path, PurePath

from dubbing.config import load_yaml
from dubbing.errors import DubbingError, quoted, read_user_text
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
    """Expand a folder or a manifest into items; with `only_new`, videos already dubbed are skipped. Every row is
    checked before any work: its types, an output inside `out` (symlinks resolved), and no two rows writing to the
    same output folder."""
    if not source.exists():
        raise DubbingError(f"batch source not found: {source}")
    if source.is_dir():
        if not languages:
            raise DubbingError("a folder batch needs --languages")
        videos = [p for p in sorted(source.iterdir()) if _is_video(p)]
        rows = [(p.name, {"video": str(p), "languages": languages}) for p in videos]
        base = source
    else:
        rows, base = _read_manifest(source), source.parent
    items = [_item(where, row, base, out, languages, preset, source) for where, row in rows]
    labels = [
        where if source.is_dir() else f"{where} ({item.video.name})"
        for (where, _), item in zip(rows, items, strict=True)
    ]
    _refuse_shared_outputs(items, labels, source)
    return [_mark_done(item) if only_new else item for item in items]


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


ROW_KEYS = ("video", "languages", "preset", "out")


def _read_manifest(path: Path) -> list[tuple[str, dict]]:
    """The manifest's rows, each with where it is ("line 3" of a CSV, "entry 2" of a YAML list) for messages."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(read_user_text(path, "batch manifest"), newline=""))
        try:
            rows = [(f"line {reader.line_num}", row) for row in reader]
        except csv.Error as exc:
            raise DubbingError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
        if None in (reader.fieldnames or []):
            raise DubbingError(f"{path}: the header has an empty column name")
    elif path.suffix.lower() in (".yaml", ".yml"):
        data = load_yaml(path, "batch manifest") or []
        entries = data.get("videos", []) if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise DubbingError(f"{path}: expected a list of entries (or `videos:` with one), got {quoted(entries)}")
        rows = [(f"entry {i}", row) for i, row in enumerate(entries, 1)]
    else:
        raise DubbingError(f"batch manifest must be .csv, .yaml or .yml: {path}")
    for where, row in rows:
        _check_row(row, where, path)
    return rows


def _check_row(row: object, where: str, path: Path) -> None:
    """One line naming the file, the row and the key for a row a run would trip on."""
    if not isinstance(row, dict):
        raise DubbingError(f"{path}: {where}: expected keys {', '.join(ROW_KEYS)}, got {quoted(row)}")
    if None in row:  # csv.DictReader: more fields than the header has columns
        raise DubbingError(f"{path}: {where}: more fields than the header's {len(row) - 1} columns")
    unknown = [key for key in row if key not in ROW_KEYS]
    if unknown:
        raise DubbingError(f"{path}: {where}: unknown key {quoted(unknown[0])}; allowed: {', '.join(ROW_KEYS)}")
    if not row.get("video"):
        raise DubbingError(f"{path}: {where}: every entry needs a 'video' (optionally {', '.join(ROW_KEYS[1:])})")
    for key in ("video", "preset", "out"):
        value = row.get(key)
        if value is not None and not _is_name(value):
            raise DubbingError(f"{path}: {where}: key {key!r}: expected one name (text), got {quoted(value)}")
    langs = row.get("languages")
    if langs is not None and not (
        isinstance(langs, str) or isinstance(langs, list) and all(isinstance(code, str) and code for code in langs)
    ):
        raise DubbingError(
            f"{path}: {where}: key 'languages': expected codes (\"es,pt\" or a list of them), got {quoted(langs)}"
        )


def _is_name(value: object) -> bool:
    """Text, or a number YAML read from an unquoted name (`video: 2024`); not a list, a mapping or a boolean."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _item(
    where: str, row: dict, base: Path, out_root: Path, languages: list[str], preset: str, source: Path
) -> BatchItem:
    video = Path(str(row["video"]))
    video = video if video.is_absolute() else base / video
    langs = row.get("languages") or languages
    if isinstance(langs, str):
        langs = [code.strip() for code in langs.replace(" ", ",").split(",") if code.strip()]
    if not langs:
        raise DubbingError(
            f"{source}: {where}: no languages for {quoted(str(row['video']))} "
            "(add a 'languages' column or pass --languages)"
        )
    name = str(row.get("out") or video.stem)
    return BatchItem(video, list(langs), str(row.get("preset") or preset), safe_child(out_root, name, source))


def safe_child(root: Path, name: str, source: Path) -> Path:
    """`root/name`, refusing names that would write outside `root`: absolute paths, '..', and a symlink inside
    `root` that points outside it (the path is resolved before it is compared)."""
    pure = PurePath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise DubbingError(f"{source}: output name {quoted(name)} would write outside {root}")
    child = root / pure
    real_root = root.resolve()
    if not child.resolve().is_relative_to(real_root):
        raise DubbingError(
            f"{source}: output name {quoted(name)} would write outside {root}: {child} leads to {child.resolve()} "
            "(a symbolic link)"
        )
    return child


def _refuse_shared_outputs(items: list[BatchItem], labels: list[str], source: Path) -> None:
    """Two rows writing into one output folder would overwrite each other and both be reported done."""
    seen: dict[Path, int] = {}
    for i, item in enumerate(items):
        key = item.out.resolve()
        if key in seen:
            first = seen[key]
            raise DubbingError(
                f"{source}: {labels[first]} and {labels[i]} both write to {item.out}; give one of them another "
                "'out' name (a manifest's column)"
            )
        seen[key] = i


def _mark_done(item: BatchItem) -> BatchItem:
    manifest = manifest_of(item.out)
    try:
        data = json.loads(manifest.read_text())
        # a language counts once dubbed: a subtitles-only run's outputs have no dub audio
        done = {lang for lang, made in data["outputs"].items() if made.get("audio")} | {data.get("source_language")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or not a run's manifest
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
