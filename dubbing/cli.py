"""The `dub` command line. User-facing failures become one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dubbing import __version__, models
from dubbing.errors import DubbingError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Translate and dub videos, offline first.",
)
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

REQUIRED_MODELS = ("whisper-base", "silero-vad", "kokoro-82m", "kokoro-voices", "campplus", "face-mesh")
TOOLS = (
    ("ffmpeg", "ffmpeg"),
    ("ffprobe", "ffmpeg"),
    ("espeak-ng", "espeak-ng"),
    ("apertium", "apertium"),
    ("sox", "sox"),
    ("rubberband", "rubberband-cli"),
)


def _quiet_environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _split_languages(value: str) -> list[str]:
    langs = [code.strip().lower() for code in value.split(",") if code.strip()]
    if not langs:
        raise DubbingError("no target language given; pass e.g. --languages es,pt")
    return list(dict.fromkeys(langs))


@app.command()
def run(
    video: Annotated[Path, typer.Argument(help="The video to dub.")],
    languages: Annotated[str, typer.Option("--languages", "-l", help="Target languages, e.g. es,pt,fr.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    preset: Annotated[str, typer.Option(help="Config preset: draft or final.")] = "draft",
    config: Annotated[Path | None, typer.Option(help="A YAML file overriding the defaults.")] = None,
) -> None:
    """Dub VIDEO into each language: video, audio, subtitles, script and report per language."""
    from dubbing import pipeline
    from dubbing.config import load_settings

    langs = _split_languages(languages)
    settings = load_settings(preset, config)  # validate config and languages before any work
    for lang in langs:
        settings.for_language(lang)
    pipeline.probe_source(video)

    from flows.dub_video import dub_video

    manifest = dub_video(video=video, languages=langs, out=out, preset=preset, config=config)
    table = Table(title=f"dubbed {video.name}", show_lines=False)
    for column in ("language", "video", "subtitles", "report"):
        table.add_column(column)
    for lang, outputs in manifest.outputs.items():
        table.add_row(
            lang, str(out / outputs.video) if outputs.video else "-", str(out / outputs.srt), str(out / outputs.report)
        )
    console.print(table)
    console.print(f"manifest: {out / 'manifest.json'}")


@app.command("models")
def models_command(
    prepare: Annotated[bool, typer.Option("--prepare", help="Assemble and verify every offline model now.")] = False,
) -> None:
    """List every model: task, licence, size, and whether it is available here."""
    table = Table()
    for column in ("model", "task", "licence", "size", "state", "where / how to get it"):
        table.add_column(column)
    problems = 0
    for name, spec in models.REGISTRY.items():
        if prepare and isinstance(spec.source, models.PackageSource):
            try:
                models.resolve(name)
            except DubbingError as exc:
                err_console.print(f"[red]{exc}[/red]")
        status = models.check(name)
        style = {"available": "green", "missing": "yellow", "corrupt": "red"}[status.state]
        where = str(status.path) if status.path else status.message
        problems += status.state == "corrupt"
        table.add_row(
            name, spec.task, spec.license, f"{spec.size_mb:g} MB", f"[{style}]{status.state}[/{style}]", where
        )
    console.print(table)
    if problems:
        raise typer.Exit(1)


@app.command()
def doctor() -> None:
    """Check the tools, translation pairs and models a run needs, and say how to get what is missing."""
    from dubbing.config import available_languages, load_settings
    from dubbing.translate import APERTIUM_MODES

    problems: list[str] = []
    table = Table(title=f"dubbing {__version__}")
    table.add_column("check")
    table.add_column("state")
    table.add_column("detail")
    for tool, package in TOOLS:
        path = shutil.which(tool)
        table.add_row(tool, "[green]ok[/green]" if path else "[red]missing[/red]", path or f"apt-get install {package}")
        if not path:
            problems.append(tool)
    settings = load_settings()
    for lang in available_languages():
        cfg = settings.for_language(lang)
        if cfg.translate.backend != "apertium" or not cfg.translate.model:
            continue
        for mode in cfg.translate.model.split("+"):
            ok = (APERTIUM_MODES / f"{mode}.mode").exists()
            table.add_row(
                f"apertium {mode} ({lang})",
                "[green]ok[/green]" if ok else "[red]missing[/red]",
                "" if ok else f"apt-get install apertium-{mode}",
            )
            if not ok:
                problems.append(f"apertium {mode}")
    for name in models.REGISTRY:
        status = models.check(name)
        required = name in REQUIRED_MODELS
        ok = status.state == "available"
        state = "[green]ok[/green]" if ok else ("[red]" if required else "[yellow]") + status.state + "[/]"
        table.add_row(f"model {name}", state, str(status.path or status.message))
        if required and not ok:
            problems.append(f"model {name}")
    console.print(table)
    if problems:
        err_console.print(f"missing: {', '.join(problems)}; run scripts/setup")
        raise typer.Exit(1)
    console.print("everything the offline pipeline needs is here")


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main() -> None:
    _quiet_environment()
    try:
        app()  # standalone: usage errors print their usage line and exit 2
    except DubbingError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
