"""Mistakes and escapes as an attacker or an unlucky user makes them (issue 19): every one is a single `error:` line
with exit code 2, found before any work, and nothing is written outside the folders the user named. Most tests call
the CLI's entry in this process (`dub_here`) or the library function; the few that need a process of their own run
one `dub` that fails in seconds."""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from dubbing import cli, steps
from dubbing.batch import plan
from dubbing.config import load_settings
from dubbing.errors import DubbingError, LanguagesFailed
from dubbing.layout import layout_for
from dubbing.types import LanguageOutputs, Manifest, MediaInfo, Script, ScriptLine, Transcript
from tests.test_cli import assert_one_line_error, dub

MARKUP = "talk [draft] [/i] [bold red]x[/].mp4"  # Rich markup, and a closing tag that matches no opening one
NAME = "talk [draft] [bold red]x.mp4"  # the same in a file name (no slash)


def dub_here(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`dub ARGS` through the CLI's entry point in this process: (exit code, stderr). No Prefect API is started (the
    command must fail before it needs one) and fd 2 stays pytest's; the signal handlers are put back after."""
    monkeypatch.setattr(sys, "argv", ["dub", *args])
    monkeypatch.setattr(cli, "LONG_COMMANDS", set())
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # configured: nothing starts one
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(exit_.value.code or 0), err


def one_error(code: int, err: str, *fragments: str) -> str:
    """The single `error:` line, which holds every fragment; exit code 2."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ escapes


def test_batch_output_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "link").symlink_to(outside)
    (tmp_path / "a.mp4").write_bytes(b"x")
    for name in ("link", "link/deeper"):
        manifest = tmp_path / "jobs.csv"
        manifest.write_text(f"video,languages,out\na.mp4,es,{name}\n")
        with pytest.raises(DubbingError, match="would write outside .*symbolic link"):
            plan(manifest, out, [], "draft")
    (out / "inside").mkdir()
    (out / "fine").symlink_to(out / "inside")  # a link that stays inside is a name like any other
    manifest.write_text("video,languages,out\na.mp4,es,fine\n")
    assert plan(manifest, out, [], "draft")[0].out == out / "fine"


def test_batch_rows_writing_to_one_output_are_refused_naming_both(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text("- {video: a.mp4, languages: es, out: same}\n- {video: b.mp4, languages: es, out: ./same}\n")
    with pytest.raises(DubbingError, match=r"entry 1 \(a.mp4\) and entry 2 \(b.mp4\) both write to"):
        plan(manifest, tmp_path / "out", [], "draft")
    folder = tmp_path / "videos"  # a folder batch: talk.mp4 and talk.mov would share out/talk
    folder.mkdir()
    for name in ("talk.mp4", "talk.mov"):
        (folder / name).write_bytes(b"x")
    with pytest.raises(DubbingError, match="talk.mov and talk.mp4 both write to"):
        plan(folder, tmp_path / "out", ["es"], "draft")


def finished_looking_run(out: Path) -> dict:
    """A manifest as `dub run` writes it (the files it names are not needed: the check comes first)."""
    outputs = LanguageOutputs(
        video="es/a.es.mp4", audio="es/a.es.wav", voice="es/a.es.voice.wav", srt="es/a.es.srt", vtt="es/a.es.vtt",
        script="es/script.json", report="es/report.json", subtitles="bilingual", audio_tracks=["spa", "eng"],
        bilingual_srt="es/a.es.bilingual.srt", bilingual_vtt="es/a.es.bilingual.vtt",
    )  # fmt: skip
    manifest = Manifest(
        source=str(out / "a.mp4"), source_language="en", duration_s=1.0, speakers=["S1"],
        transcript="source/transcript.json", outputs={"es": outputs},
    )  # fmt: skip
    return manifest.model_dump()


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("outputs", "es", "report"), "../../outside/report.json"),
        (("outputs", "es", "report"), "ABSOLUTE"),
        (("outputs", "es", "script"), "link/script.json"),
        (("transcript",), "../outside/t.json"),
        (("outputs", "es", "bilingual_srt"), "../../outside/a.srt"),
        (("outputs", "../../outside"), None),
    ],
    ids=["dotdot", "absolute", "symlink", "transcript", "bilingual", "language-key"],
)
def test_eval_of_a_tampered_manifest_refuses_and_writes_nothing_outside(monkeypatch, capsys, tmp_path, where, value):
    out, outside = tmp_path / "run", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "link").symlink_to(outside)
    data = finished_looking_run(out)
    if value is None:  # a language key that names a folder outside
        data["outputs"][where[1]] = data["outputs"].pop("es")
    else:
        target = data
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = str(outside / "report.json") if value == "ABSOLUTE" else value
    (out / "manifest.json").write_text(json.dumps(data))
    code, err = dub_here(monkeypatch, capsys, "eval", str(out))
    one_error(code, err, "manifest.json", "was the manifest edited")
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ user text printed literally


def test_markup_in_paths_prints_literally(monkeypatch, capsys, tmp_path):
    missing = tmp_path / MARKUP
    code, err = dub_here(monkeypatch, capsys, "run", str(missing), "-l", "es", "-o", str(tmp_path / "o"))
    one_error(code, err, f"input not found: {missing}")


def test_the_run_table_prints_markup_in_paths_literally(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    out = Path("res[/b] [draft]")  # short enough that no cell wraps
    data = finished_looking_run(out)
    data["failed"] = {"pt": "server said [/i] [red]no[/red]"}
    cli._print_outputs(Path(NAME), out, Manifest.model_validate(data))
    shown = capsys.readouterr().out
    flat = "".join(shown.split())  # the title and long cells wrap
    assert "".join(f"dubbed {NAME}".split()) in flat and "".join(f"{out}/es/a.es.mp4".split()) in flat
    assert "[/i] [red]no[/red]" in shown and f"manifest: {out}/manifest.json" in shown


# ------------------------------------------------------------------ bounded input


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": each level lists the previous one nine times (9**9 strings once expanded)."""
    lines = ['  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_bounded_in_memory(tmp_path, monkeypatch, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text(
        "qa:\n  meaning_options:\n" + alias_bomb().replace("  l", "    l") + "mix:\n  loudness_lufs: *l8\n"
    )
    tracemalloc.start()
    try:
        with pytest.raises(DubbingError, match="aliases") as config_error:
            load_settings("draft", config)
        manifest = tmp_path / "jobs.yaml"
        manifest.write_text("bomb:\n" + alias_bomb() + "videos: *l8\n")
        with pytest.raises(DubbingError, match="aliases") as manifest_error:
            plan(manifest, tmp_path / "out", ["es"], "draft")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak >> 20} MB"
    assert len(str(config_error.value)) < 300 and len(str(manifest_error.value)) < 300


def test_an_error_repeats_only_a_slice_of_the_input(tmp_path):
    config = tmp_path / "long.yaml"
    for value in (
        "x" * 100_000,
        f"[{', '.join(['7'] * 50_000)}]",
        "{" + ", ".join(f"k{i}: {i}" for i in range(9999)) + "}",
    ):
        config.write_text(f"mix:\n  loudness_lufs: {value}\n")
        with pytest.raises(DubbingError, match="mix.loudness_lufs") as error:
            load_settings("draft", config)
        assert len(str(error.value)) < 400
    config.write_text("asr:\n  beam_size: &a [[*a]]\n")  # an alias inside itself
    with pytest.raises(DubbingError, match="alias"):
        load_settings("draft", config)


# ------------------------------------------------------------------ --out and Prefect's home, before anything starts


def test_out_that_is_a_file_is_refused_first(monkeypatch, capsys, tmp_path):
    afile = tmp_path / "results"
    afile.write_text("not a folder")
    missing = str(tmp_path / "missing.mp4")  # the --out check comes before the input's
    for command in (["run", missing, "-l", "es"], ["batch", str(tmp_path)]):
        for out in (afile, afile / "sub"):
            code, err = dub_here(monkeypatch, capsys, *command, "-o", str(out))
            one_error(code, err, f"--out {out}", "is a file, not a folder")


@pytest.fixture
def mount_point(tmp_path):
    """A fresh folder to mount a small file system on (tmpfs needs root): unmounted after the test."""
    point = tmp_path / "mnt"
    point.mkdir()
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_out_on_a_read_only_file_system_is_refused_first(monkeypatch, capsys, tmp_path, mount_point):
    read_only = mount_point("ro,size=1m")
    code, err = dub_here(monkeypatch, capsys, "run", str(tmp_path / "x.mp4"), "-l", "es", "-o", str(read_only / "o"))
    one_error(code, err, "not writable")


def test_prefect_home_on_a_full_disk_is_one_line_at_once(tmp_path, mount_point):
    home = mount_point("size=1m")
    proc = dub("run", str(tmp_path / "x.mp4"), "-l", "es", PREFECT_HOME=str(home), PREFECT_API_URL="")
    assert_one_line_error(proc, "Prefect's home", str(home), "full", "PREFECT_HOME")


# ------------------------------------------------------------------ tracebacks that became one line


@pytest.mark.parametrize(
    ("suffix", "text", "fragments"),
    [
        (".yaml", "- {video: a.mp4, languages: es, out: [a, b]}\n", ["entry 1", "'out'", "['a', 'b']"]),
        (".yaml", "- {video: 3, languages: 5}\n", ["entry 1", "'languages'"]),
        (".yaml", "- {video: {a: 1}, languages: es}\n", ["entry 1", "'video'"]),
        (".yaml", "- {video: a.mp4, languages: [es, 7]}\n", ["entry 1", "'languages'"]),
        (".yaml", "- a.mp4\n", ["entry 1", "expected keys"]),
        (".yaml", "videos: {a: 1}\n", ["expected a list"]),
        (".yaml", "- {video: a.mp4, language: es}\n", ["entry 1", "unknown key 'language'"]),
        (".csv", "video,languages\na.mp4,es,extra\n", ["line 2", "more fields"]),
        (".csv", "video,langs\na.mp4,es\n", ["line 2", "unknown key 'langs'"]),
        (".csv", b"video,languages\n\xe9t\xe9.mp4,es\n", ["not UTF-8", "0xe9"]),
        (".yaml", b"- {video: \xff.mp4}\n", ["not UTF-8", "0xff"]),
    ],
    ids=["out-list", "languages-int", "video-map", "languages-item", "not-a-map", "videos-map", "unknown-key",
         "csv-extra-field", "csv-unknown-column", "csv-latin1", "yaml-bytes"],
)  # fmt: skip
def test_wrong_batch_manifests_name_file_row_and_key(monkeypatch, capsys, tmp_path, suffix, text, fragments):
    manifest = tmp_path / f"jobs{suffix}"
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = dub_here(monkeypatch, capsys, "batch", str(manifest), "-o", str(tmp_path / "out"))
    one_error(code, err, str(manifest), *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (b"asr:\n  model: caf\xe9\n", ["not UTF-8", "0xe9"]),
        (b"asr:\n  compute_type: bogus\n", ["asr.compute_type", "int8", "'bogus'"]),
        (b"lipsync:\n  preset: turbo\n", ["lipsync.preset", "veryfast", "'turbo'"]),
    ],
    ids=["latin1", "compute-type", "x264-preset"],
)
def test_wrong_config_values_name_file_and_key(monkeypatch, capsys, tmp_path, text, fragments):
    config = tmp_path / "c.yaml"
    config.write_bytes(text)
    code, err = dub_here(monkeypatch, capsys, "run", str(tmp_path / "x.mp4"), "-l", "es", "--config", str(config))
    one_error(code, err, str(config), *fragments)


def test_translate_with_other_bytes_on_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hello\n\xe9t\xe9\n")))
    code, err = dub_here(monkeypatch, capsys, "translate", "--to", "es")
    one_error(code, err, "stdin", "not UTF-8", "0xe9")


@pytest.mark.parametrize(
    ("start", "end", "fragment"),
    [(math.nan, 1.0, "lines[1].start is nan"), (-2.0, 1.0, "lines[1].start is -2.0"), (1.5, 1.0, "before its start")],
    ids=["nan", "negative", "end-before-start"],
)
def test_edited_script_with_bad_times_names_the_line(tmp_path, start, end, fragment):
    layout = layout_for(tmp_path / "a.mp4", tmp_path / "out")
    lines = [ScriptLine(index=i, speaker="S1", start=i, end=i + 0.5, source_text="Hi", text="Hola") for i in range(2)]
    steps.save_script(Script(source_language="en", language="es", translator="t", lines=lines), layout)
    data = json.loads(layout.script("es").read_text())
    data["lines"][1] |= {"start": start, "end": end}
    layout.script("es").write_text(json.dumps(data))  # json writes NaN as NaN, as Python's users would
    with pytest.raises(DubbingError, match=str(layout.script("es")).replace("[", r"\[")) as error:
        steps.edited_script({"layout": layout, "lang": "es"})
    assert fragment in str(error.value)
    layout.script("es").write_text(json.dumps(data).replace('"start"', '"begin"', 1))
    with pytest.raises(DubbingError, match=r"lines\[0\]\.start: Field required"):
        steps.edited_script({"layout": layout, "lang": "es"})


# ------------------------------------------------------------------ checks up front


def test_unknown_tts_backend_is_found_up_front():
    settings = load_settings()
    settings.languages["es"].tts.backend = "bogus"
    problems = steps.settings_problems(settings, ["es"])
    assert any("es: tts.backend: unknown TTS backend 'bogus'" in p for p in problems), problems


# ------------------------------------------------------------------ the manifest's source from anywhere


def test_the_manifest_source_resolves_from_any_folder(monkeypatch, tmp_path):
    (tmp_path / "in").mkdir()
    video = tmp_path / "in" / "a.mp4"
    video.write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "in")
    layout = layout_for(Path("a.mp4"), tmp_path / "out")
    info = MediaInfo(path="a.mp4", duration_s=1.0, has_video=True, has_audio=True)
    steps.write_manifest(Path("a.mp4"), info, Transcript(language="en", duration_s=1.0), {}, layout)
    monkeypatch.chdir(tmp_path)  # `dub eval` from another folder
    manifest = Manifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.source_path(tmp_path / "out") == video
    old = manifest.model_copy(update={"source": "../in/a.mp4"})  # an old manifest, run from out/'s sibling
    assert old.source_path(tmp_path / "out").resolve() == video
    assert manifest.model_copy(update={"source": "in/a.mp4"}).source_path(tmp_path / "out") == Path("in/a.mp4")


# ------------------------------------------------------------------ exit codes


def test_a_partly_failed_run_exits_3(monkeypatch, capsys):
    """Exit code 3 says "some outputs are there": the CLI's entry gives it for the error a run raises when a
    language failed while others finished (the slow test in test_reliability.py runs such a run)."""

    def fail_partly() -> None:
        raise LanguagesFailed({"pt": "server said no"}, "out/manifest.json", ["es"])

    monkeypatch.setattr(cli, "app", fail_partly)
    code, err = dub_here(monkeypatch, capsys, "doctor")
    assert code == 3 and err.strip() == "error: pt failed: server said no (es done: out/manifest.json)"


def test_unknown_voices_and_missing_models_are_found_up_front(tmp_path):
    settings = load_settings()
    es = settings.languages["es"]
    es.tts.voice = "nosuchvoice"
    es.tts.voices = {"S1": "kokoro:ef_dora pitch=190Hz", "S2": "em_alex*0.5+zz_nobody*0.5"}
    settings.asr.model = "whisper-huge-nowhere"
    settings.lipsync.backend, settings.lipsync.options = "wav2lip", {"model_path": str(tmp_path / "w.onnx")}
    problems = steps.settings_problems(settings, ["es"])
    for expected in (
        "es: tts.voice: kokoro has no voice 'nosuchvoice'",
        "es: tts.voices.S2: kokoro has no voice 'zz_nobody'",
        "asr.model: 'whisper-huge-nowhere' is neither a folder nor a model",
        f"lipsync.options.model_path: {tmp_path / 'w.onnx'} not found",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert not any("S1" in p for p in problems), problems  # a label from an earlier run's voices.json is a voice
    espeak = settings.languages["es"].model_copy(deep=True)
    espeak.tts.backend, espeak.tts.voice, espeak.tts.voices = "espeak", "es+klatt", {"S1": "mb-es1", "S2": "es+nope"}
    assert steps.voice_problems(espeak) == [
        "tts.voices.S2: espeak has no voice '+nope' (in 'es+nope'); `espeak-ng --voices` and `espeak-ng "
        "--voices=variant` list them"
    ]


def test_the_review_page_escapes_what_a_report_holds(tmp_path):
    """Every value a report or manifest carries reaches the page escaped, figures and attributes included."""
    from dubbing import review

    hostile = '"><img src=x onerror=alert(1)>'
    out = tmp_path / "run"
    data = finished_looking_run(out)
    data["failed"] = {"pt": hostile}
    manifest = Manifest.model_validate(data)
    line = {"index": 1, "start": 0.5, "end": 1.0, "speaker": hostile, "source_text": hostile, "text": hostile,
            "heard": hostile, "error_rate": hostile, "back_translation": hostile, "meaning_chrf": hostile,
            "lip_sync": hostile, "flags": [hostile]}  # fmt: skip
    report = {"translator": hostile, "flags": [{"start": 0.5, "check": hostile, "message": hostile}], "line_qa": [line]}
    page = review.page(manifest, {"es": report}, {"source": hostile, "es": hostile}, layout_for(Path("a.mp4"), out))
    assert "<img" not in page and 'onerror=alert(1)"' not in page


def test_an_untouched_manifest_is_read_with_what_its_video_holds(tmp_path):
    """What the video holds (`subtitles`, `audio_tracks`) is not a path to check; every file the manifest names is."""
    from dubbing.steps import read_manifest

    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(finished_looking_run(out)))
    outputs = read_manifest(out / "manifest.json").outputs["es"]
    assert outputs.audio_tracks == ["spa", "eng"] and "audio_tracks" not in outputs.files()
    assert outputs.files()["bilingual_srt"] == "es/a.es.bilingual.srt"
