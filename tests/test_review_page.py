"""End to end: `dub run` writes a QA report per language, `dub eval` recomputes the same figures and writes the
review page, and the page works in headless Chromium (videos load and decode, subtitles load, table filled)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubbing import media, qa, review
from dubbing.config import load_settings
from dubbing.layout import layout_for
from dubbing.types import Manifest
from tests.conftest import ROOT, make_video, media_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def dub(*args: str) -> subprocess.CompletedProcess:
    # the ephemeral Prefect API takes longer than its 20 s default to start on a busy 2-core machine
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ}
    return subprocess.run(
        [str(Path(sys.executable).with_name("dub")), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )


def chromium(page: Path, tmp: Path, *extra: str, url_suffix: str = "") -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup installs it)")
    cmd = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", *extra]
    proc = subprocess.run([*cmd, page.as_uri() + url_suffix], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def run(vrt_face1_es, tmp_path_factory) -> dict:
    """One real dub of a talking-head clip into Spanish (conftest's run of the session, shared with test_run_e2e),
    its report as the run wrote it, then `dub eval` on a copy of the run (eval rewrites the report and the page)."""
    _, dubbed = vrt_face1_es
    out = tmp_path_factory.mktemp("review") / "out"
    shutil.copytree(dubbed, out, symlinks=True)
    as_run = json.loads((out / "es" / "report.json").read_text())
    proc = dub("eval", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "as_run": as_run, "eval": json.loads((out / "es" / "report.json").read_text()), "log": proc}


def test_the_run_reports_every_check(run):
    report = run["as_run"]
    assert report["language"] == "es" and report["lines"] == len(report["line_qa"]) > 0
    assert report["intelligibility"]["metric"] == "wer" and 0 <= report["intelligibility"]["error_rate"] <= 1
    assert report["intelligibility"]["heard"].strip()  # the dub voice was transcribed back
    assert report["voice"]["speakers"]["S1"]["similarity"] is not None
    assert report["lipsync"]["frames"] > 100 and report["lipsync"]["no_face_share"] < 0.1
    assert report["loudness"]["integrated_lufs"] == pytest.approx(-16.0, abs=1.5)
    for flag in report["flags"]:
        if flag["line"] is not None:  # a flagged line can be jumped to
            row = report["line_qa"][flag["line"]]
            assert flag["start"] == row["start"] and flag["check"] in row["flags"]


def test_eval_recomputes_the_same_figures(run):
    before, after = run["as_run"], run["eval"]
    assert after["intelligibility"]["error_rate"] == pytest.approx(before["intelligibility"]["error_rate"], abs=1e-6)
    assert [r["heard"] for r in after["line_qa"]] == [r["heard"] for r in before["line_qa"]]
    similarity = before["voice"]["speakers"]["S1"]["similarity"]
    assert after["voice"]["speakers"]["S1"]["similarity"] == pytest.approx(similarity, abs=2e-3)
    assert after["lipsync"]["correlation"] == pytest.approx(before["lipsync"]["correlation"], abs=2e-3)
    assert after["loudness"] == before["loudness"]
    assert [(f["check"], f["line"]) for f in after["flags"]] == [(f["check"], f["line"]) for f in before["flags"]]
    assert "intelligibility" in run["log"].stdout and "report.html" in run["log"].stdout


def test_review_page_plays_both_videos_and_fills_the_table(run, tmp_path):
    out = run["out"]
    page = out / "report.html"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["review"] == "report.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from outside
    dom = chromium(page, tmp_path, "--dump-dom")
    videos = {m.group(1): m.group(0) for m in re.finditer(r'<video id="([^"]+)"[^>]*>', dom)}
    assert set(videos) == {"source-es", "dub-es"}
    for tag in videos.values():
        assert "data-error" not in tag
        assert int(re.search(r'data-ready-state="(\d)"', tag).group(1)) >= 2  # a frame was decoded
        assert float(re.search(r'data-duration="([\d.]+)"', tag).group(1)) == pytest.approx(6.1, abs=0.2)
        assert int(re.search(r'data-cues="(\d+)"', tag).group(1)) >= 1  # the WebVTT subtitles loaded
    rows = re.findall(r'<tr class="seek[^"]*" data-t="([\d.]+)"', dom)
    assert len(rows) == run["eval"]["lines"]
    assert run["eval"]["line_qa"][0]["text"] in dom.replace("&#x27;", "'")
    shot = tmp_path / "page.png"
    chromium(page, tmp_path, "--window-size=1280,1000", f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000


def test_a_link_to_a_line_seeks_both_videos_there(run, tmp_path):
    """report.html#es@T (what clicking a line or a flag sets) opens with both videos at T and that row marked."""
    line = run["eval"]["line_qa"][-1]
    start = line["start"] + 0.3
    dom = chromium(run["out"] / "report.html", tmp_path, "--dump-dom", url_suffix=f"#es@{start}")
    for video in ("source-es", "dub-es"):
        tag = re.search(rf'<video id="{video}"[^>]*>', dom).group(0)
        assert float(re.search(r'data-current-time="([\d.]+)"', tag).group(1)) == pytest.approx(start, abs=0.05)
    marked = re.findall(r'<tr class="seek[^"]*\bnow\b[^"]*" data-t="([\d.]+)"', dom)
    assert marked == [str(line["start"])]


def test_the_prefect_artifact_summarises_the_report(run):
    layout = layout_for(media_file("vrt_face1.mp4"), run["out"])
    text = review.report_markdown(layout.report("es"), layout)
    assert "intelligibility" in text and "loudness (EBU R128)" in text and "report.html" in text
    assert ("No line failed a check." in text) == (not run["eval"]["flags"])


def test_the_lipsync_check_asks_for_the_dubbed_mouth_and_the_source_baseline(run):
    """quality_report's face tracker hook: the re-animated picture is tracked from its pixels, the source's
    landmarks (faces.npz) give the baseline; no tracker, no lipsync figures."""
    layout = layout_for(media_file("vrt_face1.mp4"), run["out"])
    outputs = Manifest.model_validate_json(layout.manifest.read_text()).outputs["es"]
    settings = load_settings()
    limits = qa.Thresholds.from_config(settings.qa, loudness_target=settings.mix.loudness_lufs, max_speedup=1.25)
    asked = []

    def mouth(video: Path | None, faces_npz: Path | None) -> tuple[np.ndarray, float]:
        asked.append((video, faces_npz))
        return np.sin(np.arange(150) / 3.0).astype(np.float32), 25.0

    report = qa.quality_report(layout, "es", outputs, settings.qa, limits, metric="wer", hear=None, mouth=mouth)
    assert layout.picture("es").exists() and report.lipsync["lipsync_applied"]
    assert asked == [(layout.video("es"), None), (None, layout.faces_npz)]
    assert report.lipsync["frames"] == 150 and "source_correlation" in report.lipsync
    similarity = run["eval"]["voice"]["speakers"]["S1"]["similarity"]
    assert report.voice["speakers"]["S1"]["similarity"] == pytest.approx(similarity, abs=2e-3)
    assert report.loudness == run["eval"]["loudness"]
    blind = qa.quality_report(layout, "es", outputs, settings.qa, limits, metric="wer", hear=None, mouth=None)
    assert "no face tracker" in blind.lipsync["note"] and all(row.lip_sync is None for row in blind.line_qa)


def test_a_video_browsers_cannot_play_gets_a_preview(tmp_path):
    """MPEG-4 part 2 (as in one of the shared clips) does not play in browsers: the page gets an H.264 copy."""
    video = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=d=1:size=160x120", "-c:v", "mpeg4", str(video)],
        check=True,
    )
    rel = review.playable(video, tmp_path / "clip.preview.mp4", tmp_path)
    assert rel == "clip.preview.mp4"
    assert media.probe(tmp_path / rel).video_codec == "h264"
    playable = make_video(tmp_path / "ok.mp4", 1.0)
    assert review.playable(playable, tmp_path / "ok.preview.mp4", tmp_path / "sub") == "../ok.mp4"


def test_eval_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    proc = dub("eval", str(tmp_path))
    assert proc.returncode == 2 and "manifest.json not found" in proc.stderr and "Traceback" not in proc.stderr
