"""Batch plans from folders and manifests, and the rule that a manifest cannot write outside --out."""

from __future__ import annotations

import json

import pytest

from dubbing.batch import plan, summary_markdown
from dubbing.errors import DubbingError


def test_folder_lists_videos_only(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.MOV").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    items = plan(tmp_path, tmp_path / "out", ["es"], "draft")
    assert [i.video.name for i in items] == ["a.mp4", "b.MOV"]
    assert items[0].out == tmp_path / "out" / "a"


def test_csv_manifest_paths_relative_to_it(tmp_path):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text('video,languages,preset,out\ntalks/intro.mp4,"es, pt",final,intro\nq.mov,fr,,\n')
    first, second = plan(manifest, tmp_path / "out", [], "draft")
    assert first.video == tmp_path / "talks" / "intro.mp4"
    assert (first.languages, first.preset, first.out) == (["es", "pt"], "final", tmp_path / "out" / "intro")
    assert (second.languages, second.preset, second.out.name) == (["fr"], "draft", "q")


@pytest.mark.parametrize("name", ["../escape", "/etc/cron.d", "a/../../b"])
def test_manifest_cannot_write_outside_out(tmp_path, name):
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text(f"- video: a.mp4\n  languages: [es]\n  out: '{name}'\n")
    with pytest.raises(DubbingError, match="would write outside"):
        plan(manifest, tmp_path / "out", [], "draft")


def test_only_new_skips_finished_videos(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    done = tmp_path / "out" / "a"
    done.mkdir(parents=True)
    dubbed = {"es": {"audio": "es/a.es.wav", "video": "es/a.es.mp4"}, "pt": {"audio": None, "video": None}}
    (done / "manifest.json").write_text(json.dumps({"source_language": "en", "outputs": dubbed}))
    assert plan(tmp_path, tmp_path / "out", ["es"], "draft")[0].skip_reason == "already dubbed"
    assert plan(tmp_path, tmp_path / "out", ["pt"], "draft")[0].skip_reason == ""  # subtitles only: not dubbed yet
    assert plan(tmp_path, tmp_path / "out", ["es", "pt"], "draft")[0].skip_reason == ""
    assert plan(tmp_path, tmp_path / "out", ["es"], "draft", only_new=False)[0].skip_reason == ""


def test_bad_manifests_and_summary(tmp_path):
    with pytest.raises(DubbingError, match="not found"):
        plan(tmp_path / "missing.csv", tmp_path, ["es"], "draft")
    bad = tmp_path / "jobs.yaml"
    bad.write_text("- languages: [es]\n")
    with pytest.raises(DubbingError, match="needs a 'video'"):
        plan(bad, tmp_path, [], "draft")
    rows = [
        {"video": "a", "languages": "es", "status": "done", "detail": ""},
        {"video": "b", "languages": "es", "status": "failed", "detail": "boom"},
    ]
    assert summary_markdown(rows).startswith("**1 done, 1 failed, 0 skipped**")
