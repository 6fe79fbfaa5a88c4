"""`dub studio`: the server alone on a run folder made by hand (files outside the folder refused, bad requests 4xx,
text escaped, edits saved where `dub run` reads them with an undo history, the output lock respected, a second
render refused), the script as SRT in and out (`dub run --script`), and one real run edited, regenerated and
rendered again from headless Chromium driven over the DevTools Protocol."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.sync.client import connect

from dubbing import steps
from dubbing.config import load_settings
from dubbing.errors import DubbingError
from dubbing.files import output_lock, write_json
from dubbing.layout import RunLayout, layout_for
from dubbing.studio import Studio, StudioServer, read_cues, script_from_cues, to_srt
from dubbing.types import Manifest, Script, ScriptLine, Transcript, Utterance, VoiceMatch
from tests.conftest import ROOT, media_file
from tests.test_flows import task_states_since

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
XSS = "Hola <script>window.__xss = 1</script><img src=x onerror='window.__xss=2'>"


# ---------------------------------------------------------------- a browser over the DevTools Protocol


class Browser:
    """Headless Chromium, one page, driven over the Chrome DevTools Protocol (a websocket)."""

    def __init__(self, profile: Path) -> None:
        if CHROMIUM is None:
            pytest.skip("chromium is not installed (scripts/setup installs it)")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--mute-audio",
             "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        port = None
        for row in self.proc.stderr:
            if found := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", row):
                port = int(found.group(1))
                break
        assert port, "chromium did not start its DevTools endpoint"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep its pipe drained
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = 0
        self.send("Runtime.enable")
        self.send("Page.enable")

    def send(self, method: str, **params: Any) -> dict:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=120))
            if reply.get("id") == self.ids:
                assert "error" not in reply, reply
                return reply["result"]

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, expression: str, timeout_s: float = 120) -> Any:
        """Poll until `expression` is truthy (a condition, not a delay: the timeout only stops a hung test)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := self.eval(expression):
                return value
            time.sleep(0.2)
        raise AssertionError(f"still false after {timeout_s} s: {expression}")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")

    def key(self, key: str, code: int, ctrl: bool = False) -> None:
        """A key pressed and released, as from the keyboard."""
        common = {"key": key, "code": key, "windowsVirtualKeyCode": code, "modifiers": 2 if ctrl else 0}
        text = {"text": "\r"} if key == "Enter" and not ctrl else {}
        self.send("Input.dispatchKeyEvent", type="keyDown", **common, **text)
        self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


@contextlib.contextmanager
def browser(tmp: Path) -> Iterator[Browser]:
    b = Browser(tmp / "profile")
    try:
        yield b
    finally:
        b.close()


@contextlib.contextmanager
def serving(out: Path, **options: Any) -> Iterator[StudioServer]:
    web = StudioServer(Studio(out, **options))
    web.start()
    try:
        yield web
    finally:
        web.close()


# ---------------------------------------------------------------- a run folder made by hand


def fake_run(tmp: Path, source: Path | None = None) -> RunLayout:
    """A finished run's files as `dub run` writes them (manifest, script, voices, report), no media."""
    source = source or tmp / "clip.mp4"
    layout = RunLayout(out=tmp / "out", name=source.stem)
    lines = [
        ScriptLine(index=0, speaker="S1", start=0.0, end=2.0, source_text="Hello <b>there</b>", text=XSS, slot_s=2.5),
        ScriptLine(index=1, speaker="S2", start=2.5, end=4.0, source_text="Good bye.", text="Adiós.", slot_s=2.5),
    ]
    steps.save_script(Script(source_language="en", language="es", translator="test", lines=lines), layout)
    voices = {s: VoiceMatch(speaker=s, backend="kokoro", voice=v) for s, v in (("S1", "em_alex"), ("S2", "ef_dora"))}
    write_json(layout.voices("es"), {k: v.model_dump() for k, v in voices.items()})
    qa_rows = [line.model_dump(include={"index", "speaker", "start", "end", "source_text", "text"}) for line in lines]
    write_json(layout.report("es"), {"language": "es", "translator": "test", "line_qa": qa_rows, "flags": []})
    (layout.out / "es" / "notes.txt").write_text("a file of the run")
    manifest = Manifest(
        source=str(source), source_language="en", duration_s=5.0, speakers=["S1", "S2"],
        transcript="source/transcript.json", outputs={"es": layout.outputs("es", None)},
    )  # fmt: skip
    write_json(layout.manifest, manifest.model_dump())
    return layout


def request(web: StudioServer, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    """A raw request (http.client sends the path as given: no client-side normalisation of '..')."""
    host, port = web.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=sent | headers)
    reply = conn.getresponse()
    raw = reply.read()
    conn.close()
    kind = reply.getheader("Content-Type") or ""
    return reply.status, json.loads(raw) if "json" in kind else raw


def test_files_outside_the_run_folder_are_refused(tmp_path):
    layout = fake_run(tmp_path)
    (tmp_path / "secret.txt").write_text("not yours")
    (layout.out / "es" / "link.txt").symlink_to(tmp_path / "secret.txt")
    with serving(layout.out) as web:
        assert request(web, "GET", "/files/es/notes.txt") == (200, b"a file of the run")
        status, part = request(web, "GET", "/files/es/notes.txt", Range="bytes=2-5")
        assert (status, part) == (206, b"file")  # media elements seek with ranges
        for path in ("/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/es/../../secret.txt",
                     "/files/es/link.txt", f"/files/{tmp_path}/secret.txt", "/files//etc/passwd",
                     "/files/..%2fsecret.txt", "/files/es/notes.txt%00.wav", "/files/", "/../secret.txt"):  # fmt: skip
            status, body = request(web, "GET", path)
            assert status == 404 and "error" in body, (path, status, body)


def test_bad_requests_are_answered_with_4xx_and_one_line(tmp_path):
    layout = fake_run(tmp_path)
    with serving(layout.out) as web:
        cases = [
            (("POST", "/api/line", b"text=1", {"Content-Type": "application/x-www-form-urlencoded"}), 415),
            (("POST", "/api/line", b"{not json", {}), 400),
            (("POST", "/api/line", [1, 2], {}), 400),
            (("POST", "/api/line", {"lang": "xx", "index": 0, "text": "a"}, {}), 404),
            (("POST", "/api/line", {"lang": "es", "index": "0", "text": "a"}, {}), 404),
            (("POST", "/api/line", {"lang": "es", "index": 7, "text": "a"}, {}), 404),
            (("POST", "/api/line", {"lang": "es", "index": 0, "text": ["a"]}, {}), 400),
            (("POST", "/api/estimate", {"lang": "es", "index": 0, "text": None}, {}), 400),
            (("POST", "/api/undo", {"lang": "es"}, {}), 409),  # nothing to undo yet
            (("POST", "/api/nothing", {"lang": "es"}, {}), 404),
            (("GET", "/api/state?lang=%3Cscript%3E", None, {}), 404),
            (("GET", "/export/..%2fmanifest.srt", None, {}), 404),
            (("PUT", "/api/line", None, {}), 405),
            (("GET", "/", None, {"Host": "evil.example:80"}), 421),  # a rebound DNS name
            (("POST", "/api/line", {"lang": "es", "index": 0, "text": "a"}, {"Origin": "http://evil.example"}), 403),
        ]
        for (method, path, body, headers), expected in cases:
            status, reply = request(web, method, path, body, **headers)
            assert status == expected, (path, body, status, reply)
            assert isinstance(reply, dict) and "\n" not in reply["error"] and "Traceback" not in reply["error"]
        assert json.loads(layout.script("es").read_text())["lines"][0]["text"] == XSS  # nothing was changed


def test_edits_go_where_dub_run_reads_them_with_an_undo_history(tmp_path):
    layout = fake_run(tmp_path)
    stamp = layout.script_stamp("es").read_text()
    with serving(layout.out) as web:
        status, state = request(web, "POST", "/api/line", {"lang": "es", "index": 1, "text": "  Hasta   luego. "})
        assert status == 200 and state["lines"][1]["text"] == "Hasta luego." and state["lines"][1]["edited"]
        status, state = request(web, "POST", "/api/line", {"lang": "es", "index": 1, "speaker": "S1"})
        assert state["lines"][1]["speaker"] == "S1"
        request(web, "POST", "/api/approve", {"lang": "es", "index": 0, "approved": True})
        status, estimate = request(web, "POST", "/api/estimate", {"lang": "es", "index": 0, "text": "Hola " * 20})
        assert status == 200 and estimate["slot_s"] == 2.5 and not estimate["fits"]
        short = request(web, "POST", "/api/estimate", {"lang": "es", "index": 0, "text": "Hola"})[1]
        assert estimate["estimated_s"] > short["estimated_s"] > 0
        # what `dub run` reads: script.json changed, its stamp not, so the translate step takes it as the user's
        assert layout.script_stamp("es").read_text() == stamp
        context = {"layout": layout, "lang": "es"}
        edited = steps.edited_script(context)
        assert edited is not None and [(li.text, li.speaker) for li in edited.lines][1] == ("Hasta luego.", "S1")
        assert not list(layout.language_dir("es").glob(".*.tmp*"))  # written atomically: no leftovers
        status, state = request(web, "POST", "/api/undo", {"lang": "es"})  # the approval
        status, state = request(web, "POST", "/api/undo", {"lang": "es"})  # the speaker
        assert state["lines"][1]["speaker"] == "S2" and state["lines"][1]["text"] == "Hasta luego."
        status, state = request(web, "POST", "/api/undo", {"lang": "es"})  # the text
        assert state["lines"][1]["text"] == "Adiós." and not state["undo"]
        assert request(web, "POST", "/api/undo", {"lang": "es"})[0] == 409


def test_a_voice_picked_for_a_speaker_is_what_the_render_runs_with(tmp_path):
    layout = fake_run(tmp_path)
    with serving(layout.out) as web:
        status, bank = request(web, "GET", "/api/bank?lang=es")
        assert status == 200 and "ef_dora" in bank["voices"]
        assert request(web, "POST", "/api/voice", {"lang": "es", "speaker": "S1", "voice": "no_such"})[0] == 400
        status, state = request(web, "POST", "/api/voice", {"lang": "es", "speaker": "S1", "voice": "ef_dora"})
        assert status == 200 and state["picked"] == {"S1": "ef_dora"}
        assert "--config" in state["render_command"] and str(layout.studio_config) in state["render_command"]
    settings = load_settings("draft", layout.studio_config)  # what `dub run --config` of the render loads
    assert settings.for_language("es").tts.voices == {"S1": "ef_dora"}
    assert yaml.safe_load(layout.studio_config.read_text()) == {
        "languages": {"es": {"tts": {"voices": {"S1": "ef_dora"}}}}
    }


def test_the_warm_up_readies_the_tts_and_a_failed_one_is_only_logged(tmp_path, caplog):
    layout = fake_run(tmp_path)
    studio = Studio(layout.out)
    assert studio.state("es")["ready"] is False
    studio.warm_up().join(timeout=300)
    assert studio.state("es")["ready"] is True and studio.warmed["es"] > 0
    assert studio.warm_up() is studio.warm_up()  # once per studio
    # a voice the backend does not have: the warm-up says so in the log; the studio still serves the run
    bad = fake_run(tmp_path / "bad")
    write_json(bad.voices("es"), {"S1": VoiceMatch(speaker="S1", backend="kokoro", voice="xx_nobody").model_dump()})
    other = Studio(bad.out)
    with caplog.at_level(logging.WARNING, logger="dubbing.studio.session"):
        other.warm_up().join(timeout=300)
    assert "warming up es failed" in caplog.text and "xx_nobody" in caplog.text
    assert other.state("es")["ready"] is False and other.state("es")["lines"][1]["text"] == "Adiós."


def test_a_typed_text_is_spoken_ahead_and_regenerate_finds_it_in_the_line_cache(tmp_path):
    layout = fake_run(tmp_path)
    clips = layout.clip_cache("es")
    with serving(layout.out, speak_ahead=True) as web:  # as `dub studio` serves
        studio = web.studio
        request(web, "POST", "/api/estimate", {"lang": "es", "index": 0, "text": XSS})  # the saved text: nothing
        status, _ = request(web, "POST", "/api/estimate", {"lang": "es", "index": 0, "text": " Hola a  todos. "})
        assert status == 200
        deadline = time.monotonic() + 300  # a condition, not a delay: the timeout only stops a hung test
        while studio.spoken_ahead.get(("es", 0)) != "Hola a todos." and time.monotonic() < deadline:
            time.sleep(0.2)
        assert studio.spoken_ahead == {("es", 0): "Hola a todos."}
        assert len(list(clips.glob("*.wav"))) == 1  # that line alone, not the saved text
        assert json.loads(layout.script("es").read_text())["lines"][0]["text"] == XSS  # not saved: only spoken
        request(web, "POST", "/api/line", {"lang": "es", "index": 0, "text": "Hola a todos."})
        status, state = request(web, "POST", "/api/regenerate", {"lang": "es", "index": 0})
        assert status == 200 and state["lines"][0]["regenerated"]["lines_spoken"] == 0  # found in the cache
        assert state["lines"][0]["regenerated"]["text"] == "Hola a todos."
        assert len(list(clips.glob("*.wav"))) == 1


def test_text_of_the_run_shows_as_text_never_as_html(tmp_path):
    layout = fake_run(tmp_path)
    with serving(layout.out) as web:
        status, page = request(web, "GET", "/")
        assert status == 200 and b"__xss" not in page and b"http://" not in page and b"https://" not in page
        with browser(tmp_path) as b:
            b.open(web.url)
            b.wait("document.querySelectorAll('#lines tr').length === 2")
            assert b.eval("document.querySelector('#lines tr textarea').value") == XSS
            assert b.eval("document.querySelector('#lines tr td:nth-child(4)').textContent") == "Hello <b>there</b>"
            assert b.eval("document.querySelectorAll('#lines script, #lines img, #lines b').length") == 0
            assert b.eval("window.__xss === undefined")


def test_the_output_lock_is_respected(tmp_path):
    layout = fake_run(tmp_path)
    with output_lock(layout.lock):  # another run writing this folder
        with pytest.raises(DubbingError, match="is writing to"):
            Studio(layout.out)
    with serving(layout.out) as web:
        with output_lock(layout.lock):
            status, reply = request(web, "POST", "/api/line", {"lang": "es", "index": 1, "text": "Chao."})
            assert status == 409 and "is writing to" in reply["error"]
            assert request(web, "POST", "/api/render", {"lang": "es"})[0] == 409
        assert json.loads(layout.script("es").read_text())["lines"][1]["text"] == "Adiós."
        assert request(web, "POST", "/api/line", {"lang": "es", "index": 1, "text": "Chao."})[0] == 200


def test_a_second_render_is_refused_while_one_runs(tmp_path, monkeypatch):
    """The render is a real `dub run` of the manifest's source; a FIFO as the source holds it at its first read
    (ffprobe waits for a writer), so it is still running when the second render is asked for."""
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    layout = fake_run(tmp_path, fifo)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no API is started for a run that waits
    with serving(layout.out) as web:
        status, first = request(web, "POST", "/api/render", {"lang": "es"})
        assert status == 202 and first["running"]
        status, second = request(web, "POST", "/api/render", {"lang": "es"})
        assert status == 409 and "already running" in second["error"]
        status, reply = request(web, "POST", "/api/line", {"lang": "es", "index": 1, "text": "Chao."})
        assert status == 409 and "render" in reply["error"]  # no edit while a render may read or write the run
        web.studio.render.stop()
        assert not web.studio.render.running


# ---------------------------------------------------------------- the script as subtitles


SRT = """1
00:00:00,100 --> 00:00:01,200
<i>Hola</i> a todos,

2
00:00:01,300 --> 00:00:02,000
{\\an8}soy Ana.

3
00:00:06,000 --> 00:00:07,000
Adiós.
"""


def transcript() -> Transcript:
    return Transcript(language="en", duration_s=8.0, utterances=[
        Utterance(start=0.0, end=2.2, text="Hello everyone, I'm Ana.", speaker="S1"),
        Utterance(start=3.0, end=4.0, text="Some words.", speaker="S2"),
        Utterance(start=5.5, end=6.8, text="Goodbye.", speaker="S1"),
    ])  # fmt: skip


def test_an_edited_srt_becomes_the_script_matched_by_time(tmp_path):
    path = tmp_path / "edited.srt"
    path.write_text(SRT, encoding="utf-8")
    vtt = tmp_path / "edited.vtt"
    vtt.write_text("WEBVTT\n\nNOTE made by hand\n\n" + re.sub(r"(\d\d),(\d\d\d)", r"\1.\2", SRT))
    assert [c.text for c in read_cues(vtt)] == [c.text for c in read_cues(path)]
    script = script_from_cues(read_cues(path), transcript(), "es", lambda text: len(text) / 15, path.name)
    assert [line.text for line in script.lines] == ["Hola a todos, soy Ana.", "", "Adiós."]
    assert [line.speaker for line in script.lines] == ["S1", "S2", "S1"]  # the transcript's lines and speakers
    assert script.lines[0].estimated_s == pytest.approx(len("Hola a todos, soy Ana.") / 15)
    assert script.lines[1].notes and "silent" in script.lines[1].notes[0]
    again = script_from_cues(read_cues_text(tmp_path, to_srt(script)), transcript(), "es", len, "again.srt")
    assert [line.text for line in again.lines] == [line.text for line in script.lines]  # export, import: the same


def read_cues_text(tmp: Path, text: str) -> list:
    path = tmp / "export.srt"
    path.write_text(text, encoding="utf-8")
    return read_cues(path)


def test_dub_run_script_is_taken_instead_of_the_translation_and_kept(tmp_path):
    layout = fake_run(tmp_path)
    srt = tmp_path / "edited.srt"
    srt.write_text(SRT, encoding="utf-8")
    cfg = load_settings().for_language("es")
    context = {"layout": layout, "lang": "es", "cfg": cfg, "transcript": transcript(), "script_file": srt}
    imported = steps.edited_script(context)
    assert imported is not None and imported.lines[0].text == "Hola a todos, soy Ana."
    steps.save_script(imported, layout)  # as the voice step writes the fitted script and its stamp
    later = steps.edited_script({"layout": layout, "lang": "es"})  # a later run without --script keeps it
    assert later is not None and later.lines[0].text == "Hola a todos, soy Ana."
    proc = subprocess.run(
        [sys.executable, "-m", "dubbing.cli", "run", str(tmp_path / "v.mp4"), "-l", "es,pt", "--script", str(srt)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --script gives the lines")


def test_the_script_exports_as_srt(tmp_path):
    layout = fake_run(tmp_path)
    with serving(layout.out) as web:
        status, body = request(web, "GET", "/export/es.srt")
    assert status == 200 and "00:00:02,500 --> 00:00:04,000\nAdiós." in body.decode()
    proc = subprocess.run(
        [sys.executable, "-m", "dubbing.cli", "studio", str(layout.out), "--export-srt", "es"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == body.decode()


# ---------------------------------------------------------------- one real run, edited in the browser


def dub(*args: str) -> subprocess.CompletedProcess:
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ}
    return subprocess.run(
        [sys.executable, "-m", "dubbing.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=900, env=env
    )


@pytest.mark.slow
def test_edit_regenerate_and_render_a_real_dub_in_chromium(tmp_path):
    video = media_file("vrt_face1.mp4")  # 6 s, one or two lines (as whisper splits it on this CPU)
    out = tmp_path / "out"
    proc = dub("run", str(video), "-l", "es", "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    layout = layout_for(video, out)
    lines = len(json.loads(layout.script("es").read_text())["lines"])
    clips = layout.clip_cache("es")
    before = {p.name: p.stat().st_mtime_ns for p in clips.glob("*.wav")}
    old_video = layout.video("es").stat().st_mtime_ns
    with serving(out, speak_ahead=True) as web, browser(tmp_path) as b:
        web.studio.warm_up().join(timeout=300)  # as `dub studio` does once it listens
        b.open(web.url)
        count = "document.querySelectorAll('#lines tr').length"
        rows = b.wait(f"{count} >= {lines} && {count}")  # a row per line of the run's script
        b.wait("+document.getElementById('dub').dataset.readyState >= 2")  # the dub decodes
        # edit line 0 from the keyboard: focus its text, type, Ctrl+Enter saves it and regenerates it
        b.eval("(() => { const t = document.querySelector('#lines tr textarea'); t.focus(); t.select(); })()")
        b.send("Input.insertText", text="Me cuesta pedir ayuda <b>ya</b>.")
        b.wait("document.querySelector('#lines tr .est').textContent.includes('slot')")  # the estimate while typing
        b.key("Enter", 13, ctrl=True)
        audio = "document.querySelector('#lines tr audio')"
        b.wait(f"{audio} && {audio}.readyState >= 1 && {audio}.duration > 0", timeout_s=300)
        duration = b.eval(f"{audio}.duration")
        regenerated = web.studio.edits("es")["regenerated"]["0"]
        assert duration == pytest.approx(regenerated["heard_s"], abs=0.05) and duration > 0.5  # the file as placed
        print(f"regenerated line 0 ({duration:.2f} s of speech) in {regenerated['seconds']:.2f} s on the server")
        b.wait(f"{audio}.currentTime > 0.2")  # it plays (heard in place: the dub muted under it)
        assert b.eval("document.querySelector('#lines tr .spoken').textContent.startsWith('new:')")
        assert b.eval("document.querySelector('#lines tr').classList.contains('edited')")
        assert b.eval("document.querySelector('#lines tr textarea').value").endswith("<b>ya</b>.")
        assert regenerated["lines_spoken"] == 1 and regenerated["warm"] is True
        # render from the keyboard: focus the button, Enter
        t0 = datetime.now(UTC)
        b.eval("document.getElementById('render').focus()")
        b.key("Enter", 13)
        b.wait("document.body.dataset.render === 'running'", timeout_s=30)
        assert request(web, "POST", "/api/render", {"lang": "es"})[0] == 409 or not web.studio.render.running
        b.wait("document.body.dataset.render === 'done' || document.body.dataset.render === 'failed'", 900)
        assert b.eval("document.body.dataset.render") == "done", web.studio.render.lines[-20:]
        b.wait(f"!document.getElementById('dub').dataset.src.endsWith('v={old_video}')")  # the new file
        b.wait("+document.getElementById('dub').dataset.readyState >= 2")  # the new dub loads and decodes
        assert b.eval("+document.getElementById('dub').dataset.duration") == pytest.approx(6.1, abs=0.3)
        assert b.eval(count) == rows
        assert not b.eval("document.querySelector('#lines tr').classList.contains('edited')")  # QA of the new dub
    after = {p.name: p.stat().st_mtime_ns for p in clips.glob("*.wav")}
    assert len(set(after) - set(before)) == 1  # only the edited line was ever spoken again
    assert all(after[name] == mtime for name, mtime in before.items())
    script = json.loads(layout.script("es").read_text())
    assert script["lines"][0]["text"] == "Me cuesta pedir ayuda <b>ya</b>."
    log = (layout.studio_dir("es") / "render.log").read_text()
    assert "es: synthesize-and-fit done" in log and "es: translate" not in log  # the edit, not a translation
    assert "es: 0 line(s) synthesised" in log  # the regenerated line was in the line cache
    if api := os.environ.get("PREFECT_API_URL"):  # the flow run's task states, as the Prefect UI shows them
        deadline = time.monotonic() + 180  # the server records task states from events, a little after they end
        states = task_states_since(t0, api)
        while states.get("synthesize-and-fit") != ["Completed"] and time.monotonic() < deadline:
            time.sleep(2)
            states = task_states_since(t0, api)
        assert "translate" not in states and states.get("synthesize-and-fit") == ["Completed"], states
        assert states["transcribe"] == ["Cached"]


def test_dub_studio_prints_its_address_and_warns_off_loopback(tmp_path):
    layout = fake_run(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dubbing.cli", "studio", str(layout.out), "--port", "0", "--host", "0.0.0.0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = re.search(r"studio: (http://0\.0\.0\.0:(\d+)/)", proc.stdout.readline())
        assert url, "no address printed"
        assert httpx.get(f"http://127.0.0.1:{url.group(2)}/api/state", timeout=120).json()["name"] == "clip"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the studio stops; it has nothing to resume
        proc.wait(timeout=30)
    said = proc.stderr.read()
    assert "warning: listening on 0.0.0.0" in said
    assert said.strip().splitlines()[-1] == "interrupted (SIGINT)" and proc.returncode == 130, said
    empty = subprocess.run(
        [sys.executable, "-m", "dubbing.cli", "studio", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert empty.returncode == 2 and empty.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no finished run" in empty.stderr and "Traceback" not in empty.stderr
