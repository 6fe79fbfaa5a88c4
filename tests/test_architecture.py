"""The architecture's contracts: stages never import each other, the step table is complete and is what the flow
runs, and the run layout names every file of the output contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dubbing import steps
from dubbing.layout import RunLayout
from dubbing.types import LanguageOutputs

PACKAGE = Path(__file__).resolve().parent.parent / "dubbing"

# What each top-level name under dubbing/ is. Stages may import shared modules only; the composition layer (steps,
# flows, cli, batch) may import anything.
STAGES = {"asr", "diarize", "translate", "tts", "voice", "separate", "mix", "lipsync", "subtitles", "qa", "review"}
SHARED = {
    "types", "layout", "config", "errors", "files", "media", "tools", "backends", "models", "progress", "secrets",
    "speaker_embedding", "vad",
}  # fmt: skip
COMPOSITION = {"steps", "flows", "cli", "batch", "studio", "__init__"}
BASE_CONTEXT = {
    "video",
    "audio",
    "audio_track",
    "settings",
    "layout",
    "output",
}  # output: read back from settings (steps.restore)
LANGUAGE_CONTEXT = {"lang", "cfg"}


def top_level(module: str) -> str | None:
    """'dubbing.voice.track' -> 'voice'; None for modules outside the package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "dubbing" and len(parts) > 1 else None


def imported_parts(path: Path) -> set[str]:
    """The dubbing top-level names a source file imports (at any depth in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {p for alias in node.names if (p := top_level(alias.name))}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "dubbing":
                found |= {alias.name for alias in node.names}
            elif part := top_level(node.module):
                found.add(part)
    return found


def owner(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def test_every_module_is_a_stage_a_shared_module_or_composition():
    names = {owner(p) for p in PACKAGE.rglob("*.py")}
    assert names <= STAGES | SHARED | COMPOSITION, names - (STAGES | SHARED | COMPOSITION)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_stage_imports_another_stage_and_shared_modules_import_no_stage(path):
    me = owner(path)
    if me in COMPOSITION:
        return
    imported = imported_parts(path) - {me}
    assert not imported & STAGES, f"{path.relative_to(PACKAGE)} imports the stage(s) {sorted(imported & STAGES)}"
    assert not imported & COMPOSITION, f"{path.relative_to(PACKAGE)} imports {sorted(imported & COMPOSITION)}"


def test_step_names_are_unique_and_every_input_is_made_before_it_is_read():
    names = [s.name for s in steps.STEPS]
    assert len(names) == len(set(names))
    available = set(BASE_CONTEXT)
    for scope in ("source", "language", "summary"):
        if scope == "language":
            available |= LANGUAGE_CONTEXT
        for step in steps.steps(scope):
            missing = set(step.inputs) - available
            assert not missing, f"step {step.name} reads {sorted(missing)} before any step makes it"
            available |= set(step.outputs)
        if scope == "language":
            available -= LANGUAGE_CONTEXT | {o for s in steps.steps("language") for o in s.outputs}


def test_every_step_input_can_be_read_back_from_the_run_files():
    """So any one step can run alone in a fresh worker (the benchmarks do): each value a step reads is a base value
    of the run or has a reader in steps.restore."""
    made = {o for s in steps.STEPS for o in s.outputs}
    for step in steps.STEPS:
        for name in set(step.inputs) & made:
            assert name in steps._RESTORE, f"{step.name} reads {name}, which cannot be read back from the files"


def test_the_flow_runs_one_task_per_step_under_the_step_name():
    from dubbing.flows.dub_video import TASKS

    assert list(TASKS) == [s.name for s in steps.STEPS]
    for step in steps.STEPS:
        assert TASKS[step.name].name == step.name
        assert TASKS[step.name].retries == step.retries


def test_layout_names_every_file_of_the_output_contract(tmp_path):
    layout = RunLayout(out=tmp_path, name="talk")
    outputs = layout.outputs("es", layout.video("es"))
    contract = {"video", "audio", "voice", "srt", "vtt", "script", "report"}  # DESIGN.md's keys; fields are added
    assert set(LanguageOutputs.model_fields) == contract | {
        "subtitles",
        "audio_tracks",
        "bilingual_srt",
        "bilingual_vtt",
        "stretched",  # the spans slowed down (timing.slow_picture)
    }
    assert outputs == LanguageOutputs(
        video="es/talk.es.mp4",
        audio="es/talk.es.wav",
        voice="es/talk.es.voice.wav",
        srt="es/talk.es.srt",
        vtt="es/talk.es.vtt",
        script="es/script.json",
        report="es/report.json",
    )
    assert layout.relative(layout.manifest) == "manifest.json"
    assert layout.relative(layout.transcript) == "source/transcript.json"
    assert layout.relative(layout.review_page) == "report.html"


CONTRACT_NAMES = (
    "manifest.json", "transcript.json", "script.json", "report.json", "report.html", "faces.json", "speakers.json",
    "voices.json", "track.json", ".voice.wav", ".picture.mp4", ".preview.mp4",
)  # fmt: skip


def test_no_module_but_the_layout_spells_a_run_file():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                spelled = [n for n in CONTRACT_NAMES if node.value.endswith(n) and "\n" not in node.value]
                assert not spelled, f"{path.relative_to(PACKAGE)}:{node.lineno} spells {spelled}: ask RunLayout"


def test_a_built_wheel_carries_the_configs_and_flows_and_loads_from_any_folder(tmp_path):
    """A non-editable install (the wheel pip builds from this tree) has everything a run reads: the language
    records, presets and defaults as package data, and the flows inside the package."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = tmp_path / "tree"  # setuptools builds inside the tree it is given: a copy keeps the checkout clean
    shutil.copytree(PACKAGE, root / "dubbing", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, root / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("dubbing-*.whl")
    assert not (PACKAGE.parent / "build").exists()
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"dubbing/configs/defaults.yaml", "dubbing/configs/languages/es.yaml", "dubbing/flows/dub_video.py"} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = "import dubbing.config as c; s = c.load_settings('final'); print(c.config_dir(), s.for_language('es').name)"
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True, env={"PYTHONPATH": str(site)}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(site / "dubbing" / "configs"), "Spanish"]


def test_the_layout_names_every_module_of_the_package():
    doc = (PACKAGE.parent / "docs/architecture.md").read_text(encoding="utf-8")
    layout = doc.split("## Layout", 1)[1].split("```")[1]
    entries = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir() if not p.name.startswith("__")}
    missing = sorted(e for e in entries if e not in layout)
    assert not missing, f"docs/architecture.md's Layout section does not mention {missing}"
