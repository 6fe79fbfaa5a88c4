"""The studio's model of one run folder: what the page shows, the edits it saves, one line regenerated, a render.

The contract with `dub run` (docs/studio.md):
- a line's text and speaker are edited in LANG/script.json, the file `dub run` already takes edits from
  (`steps.edited_script`); the line cache re-speaks only the lines whose text, voice or window changed;
- a speaker's voice picked for the whole video goes to studio.config.yaml (`tts.voices` of that language, over the
  run's own --config), which a studio render passes to `dub run --config`;
- LANG/studio.json keeps the studio's own state: the voices picked, approved lines, the lines regenerated since the
  last render and the undo history (each entry: the lines' text and speaker, the voices, the approvals before a
  change).
Every write is atomic and made holding the run's output lock, so nothing is written while a `dub run` (a studio
render included) writes the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dubbing import media
from dubbing.config import LanguageConfig, _merge, _read_yaml, load_settings
from dubbing.errors import DubbingError
from dubbing.files import output_lock, write_json, write_text
from dubbing.layout import RunLayout, layout_for, manifest_of
from dubbing.types import Manifest, PlacedClip, Script, ScriptLine, VoiceMatch

log = logging.getLogger(__name__)

HISTORY_LIMIT = 100  # undo steps kept per language
# A line's new text is spoken ahead once typing pauses this long (no other estimate of it meanwhile), while the
# person reads it over, so that Regenerate usually finds it in the line cache: at load 2.5 a 5-s line takes ~4 s.
AHEAD_AFTER_S = 1.0


class StudioError(DubbingError):
    """A request the studio refuses: `status` is the HTTP status the page gets (4xx), the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def open_run(out: Path) -> tuple[Manifest, RunLayout]:
    """The finished run in `out` (its manifest and layout), refused when another process is writing it."""
    out = Path(out)
    if not manifest_of(out).exists():
        raise DubbingError(f"{out} holds no finished run (no manifest.json); dub a video into it first")
    try:
        manifest = Manifest.model_validate_json(manifest_of(out).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DubbingError(f"{manifest_of(out)}: not a manifest ({str(exc).splitlines()[0]})") from None
    if not manifest.outputs:
        raise DubbingError(f"{out}: no language of this run finished; nothing to edit")
    layout = layout_for(Path(manifest.source), out)
    with output_lock(layout.lock):  # "another run (pid N) is writing to ..." when one is
        pass
    return manifest, layout


class Studio:
    """One run folder being edited. Thread-safe: the web server calls it from several threads."""

    def __init__(
        self, out: Path, preset: str = "draft", config: Path | None = None, *, speak_ahead: bool = False
    ) -> None:
        """`speak_ahead`: speak a line's new text once typing pauses (`estimate`); `dub studio` does."""
        self.manifest, self.layout = open_run(out)
        self.out = self.layout.out
        self.preset, self.config = preset, config
        self.settings = load_settings(preset, config)  # fails here, in one line, on a bad preset or config
        self.languages = list(self.manifest.outputs)
        self._mutex = threading.RLock()
        self._synth_lock = threading.Lock()  # loading a backend: not under _mutex, so edits go on meanwhile
        self._synths: dict[str, Any] = {}
        self.warmed: dict[str, float] = {}  # language -> seconds its warm-up took (`warm_up`)
        self._warming: threading.Thread | None = None
        self._ahead_lock = threading.Lock()
        self._ahead: dict[tuple[str, int], threading.Timer] = {}  # (language, line) -> its text waiting to be spoken
        self.spoken_ahead: dict[tuple[str, int], str] = {}  # (language, line) -> the last text spoken ahead
        self._ahead_on = speak_ahead  # off once the studio closes
        self._duration: float | None = None
        self._playables: dict[tuple[str, int], str | None] = {}
        self.render = Render(self)

    # ---------------------------------------------------------------- reading
    def check_language(self, lang: object) -> str:
        if not isinstance(lang, str) or lang not in self.manifest.outputs:
            raise StudioError(f"no language {lang!r} in this run; it has {', '.join(self.languages)}", 404)
        return lang

    def script(self, lang: str) -> Script:
        return Script.model_validate_json(self.layout.script(lang).read_text(encoding="utf-8"))

    def report(self, lang: str) -> dict:
        path = self.out / self.manifest.outputs[lang].report
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def run_voices(self, lang: str) -> dict[str, VoiceMatch]:
        """voices.json: the voice each speaker was given by the last run."""
        path = self.layout.voices(lang)
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return {k: VoiceMatch.model_validate(v) for k, v in data.items()}

    def edits(self, lang: str) -> dict:
        path = self.layout.studio_edits(lang)
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return {"voices": {}, "approved": [], "regenerated": {}, "history": []} | data

    def cfg(self, lang: str) -> LanguageConfig:
        """The language's settings with the voices picked in the studio (what a studio render runs with)."""
        cfg = self.settings.for_language(lang)
        picked = self.edits(lang)["voices"]
        return cfg.model_copy(update={"tts": cfg.tts.model_copy(update={"voices": {**cfg.tts.voices, **picked}})})

    def synthesizer(self, lang: str) -> Any:
        """The language's TTS backend, loaded once per studio."""
        from dubbing import tts

        with self._synth_lock:
            if lang not in self._synths:
                cfg = self.settings.for_language(lang)
                backend = cfg.tts.backend
                options = dict(cfg.tts.options.get(backend) or {})
                known = getattr(getattr(tts.BACKENDS.get(backend), "Options", None), "model_fields", {})
                if "threads" in known:  # one line at a time, a person waiting: every core on it (a run: one each)
                    options.setdefault("threads", os.cpu_count() or 1)
                tts_cfg = cfg.tts.model_copy(update={"options": {**cfg.tts.options, backend: options}})
                self._synths[lang] = tts.synthesizer_for(cfg.model_copy(update={"tts": tts_cfg}))
            return self._synths[lang]

    def warm_up(self) -> threading.Thread:
        """Get every language ready to regenerate a line, in a background thread, so the first regeneration
        costs what later ones do: the TTS backend loaded, one short phrase spoken with the run's voice (ONNX
        Runtime's first run of a session is slow) and shifted as its speaker's voice (which loads Praat and SciPy's
        filters), the source's length probed. Measured (docs/studio.md): it took the first regeneration of a 5-s
        line from 12.9 s to 4.6 s at load 2-3. A failure is only logged: the regeneration then pays, or reports it."""
        if self._warming is None:
            self._warming = threading.Thread(target=self._warm, daemon=True, name="studio-warm-up")
            self._warming.start()
        return self._warming

    def _warm(self) -> None:
        from dubbing import voice

        for lang in self.languages:
            started = time.monotonic()
            try:
                self.duration()
                synth = self.synthesizer(lang)
                script = self.script(lang)
                text = next((li.text for li in script.lines if li.text.strip()), "")
                phrase = " ".join(text.split()[:3]) or "ok"
                speakers = self.run_voices(lang)
                match = next(iter(speakers.values()), None)
                name = match.voice if match else synth.default_voice(lang)
                audio, rate = synth.synthesize(phrase, language=lang, voice=name)
                if match is not None:
                    voice.shift_voice(audio, rate, match)
            except Exception as exc:  # noqa: BLE001  # warming is an optimisation: never the studio's failure
                log.warning("studio: warming up %s failed (%s); the first regeneration will be slower", lang, exc)
                continue
            self.warmed[lang] = round(time.monotonic() - started, 2)
            log.info("studio: %s ready to regenerate (warm-up %.1f s)", lang, self.warmed[lang])

    def bank(self, lang: str) -> list[str]:
        """The voices a speaker can be given: the backend's bank for this language (what `dub voices` lists)."""
        return sorted(self.synthesizer(lang).voices(lang))

    def line(self, script: Script, index: object) -> int:
        if not isinstance(index, int) or isinstance(index, bool) or not any(li.index == index for li in script.lines):
            raise StudioError(f"no line {index!r} in the {script.language} script", 404)
        return index

    def estimate(self, lang: object, text: str, index: object) -> dict:
        """The spoken length of `text` at speed 1 by the language's speech rate (as the fitting estimates it),
        against the line's slot and the speed-up allowed. The page asks while the person types: a new text is
        also spoken ahead once typing pauses (`_speak_ahead_later`)."""
        from dubbing import tts

        lang = self.check_language(lang)
        cfg = self.settings.for_language(lang)
        script = self.script(lang)
        line = next(li for li in script.lines if li.index == self.line(script, index))
        estimated = tts.estimator(cfg)(text)
        said = " ".join(text.split())  # as edit_line saves it
        if said and said != line.text and len(said) <= 2000:
            self._speak_ahead_later(lang, line.index, said)
        slot = line.slot_s if line.slot_s else max(line.end - line.start, 0.01)
        speed = estimated / slot if slot > 0 else 0.0
        return {
            "estimated_s": round(estimated, 2),
            "slot_s": round(slot, 2),
            "speed": round(speed, 2),
            "max_speedup": cfg.timing.max_speedup,
            "fits": speed <= cfg.timing.max_speedup,
        }

    def state(self, lang: object) -> dict:
        """Everything the page shows for one language."""
        from dubbing import review

        lang = self.check_language(lang)
        outputs = self.manifest.outputs[lang]
        report = self.report(lang)
        script = self.script(lang)
        edits = self.edits(lang)
        rendered = {row["index"]: row for row in report.get("line_qa") or []}
        voices = self.run_voices(lang)
        video = self._playable(self.out / outputs.video, self.layout.preview(lang)) if outputs.video else None
        source = self._playable(Path(self.manifest.source), self.layout.source_preview)
        # the source is often outside the run folder: served from its own fixed address, unless a preview is used
        source_url = self._url(source) if source and not source.startswith("..") else "/source" if source else None
        word, figures = review.verdict(report)
        source_vtt = self.layout.source_subtitles(self.manifest.source_language, ".vtt")
        lines = []
        for li in script.lines:
            qa_row = rendered.get(li.index, {})
            new = edits["regenerated"].get(str(li.index))
            changed = qa_row and (qa_row.get("text") != li.text or qa_row.get("speaker") != li.speaker)
            lines.append(
                li.model_dump(include={"index", "speaker", "start", "end", "source_text", "text", "slot_s", "speed"})
                | {
                    "synth_s": li.synth_s,
                    "over_limit": li.over_limit,
                    "qa": {k: qa_row.get(k) for k in ("heard", "error_rate", "meaning_chrf", "lip_sync", "flags")},
                    "edited": bool(changed),
                    "approved": li.index in edits["approved"],
                    "regenerated": new if new and new["text"] == li.text else None,  # not of an older text
                }
            )
        return {
            "name": self.layout.name,
            "languages": self.languages,
            "language": lang,
            "source_language": self.manifest.source_language,
            "video": self._url(video),
            "source": source_url,
            "source_vtt": self._url(self.layout.relative(source_vtt)) if source_vtt.exists() else None,
            "vtt": self._url(outputs.vtt),
            "verdict": word,
            "figures": figures,
            "summary": review.summary_rows(report) if report else [],
            "flags": report.get("flags") or [],
            "lines": lines,
            "speakers": sorted({li.speaker for li in script.lines} | set(voices)),
            "voices": {s: v.label for s, v in voices.items()},
            "picked": edits["voices"],
            "undo": [h["what"] for h in edits["history"]][-10:],
            "render": self.render.status(),
            "ready": lang in self.warmed,  # warmed up: a regeneration costs only its line
            "render_command": " ".join(self.render.command(lang)),
        }

    def _playable(self, video: Path, preview: Path) -> str | None:
        """review.playable, remembered while the video is unchanged (it probes the file)."""
        from dubbing import review

        if not video.exists():
            return None
        key = (str(video), video.stat().st_mtime_ns)
        if key not in self._playables:
            self._playables[key] = review.playable(video, preview, self.out)
        return self._playables[key]

    def _url(self, relative: str | None) -> str | None:
        """The page's address of a run file, with its mtime so a re-rendered file is fetched again."""
        if not relative or not (self.out / relative).exists():
            return None
        return f"/files/{relative}?v={(self.out / relative).stat().st_mtime_ns}"

    # ---------------------------------------------------------------- writing
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the run's output lock for one change: refused while a render (or any `dub run`) writes here."""
        with self._mutex:
            if self.render.running:
                raise StudioError(f"cannot change the run now: a render of {self.render.lang} is running", 409)
            try:
                with output_lock(self.layout.lock):
                    yield
            except DubbingError as exc:
                if isinstance(exc, StudioError):
                    raise
                busy = "a render is running" if self.render.running else str(exc)
                raise StudioError(f"cannot change the run now: {busy}", 409) from None

    def _snapshot(self, lang: str, what: str) -> dict:
        edits = self.edits(lang)
        lines = [{"index": li.index, "text": li.text, "speaker": li.speaker} for li in self.script(lang).lines]
        return {"what": what, "lines": lines, "voices": dict(edits["voices"]), "approved": list(edits["approved"])}

    def _save(self, lang: str, edits: dict, script: Script | None = None) -> None:
        if script is not None:
            write_json(self.layout.script(lang), script.model_dump())  # no new stamp: the run sees an edit
        write_json(self.layout.studio_edits(lang), edits)

    def _remember(self, lang: str, what: str) -> dict:
        """The edits with the state before this change pushed on the undo history."""
        edits = self.edits(lang)
        edits["history"] = [*edits["history"], self._snapshot(lang, what)][-HISTORY_LIMIT:]
        return edits

    def edit_line(self, lang: object, index: object, text: object = None, speaker: object = None) -> dict:
        """Change a line's text and/or who speaks it (the line takes that speaker's voice)."""
        lang = self.check_language(lang)
        with self.writing():
            script = self.script(lang)
            index = self.line(script, index)
            line = next(li for li in script.lines if li.index == index)
            update: dict[str, Any] = {}
            if text is not None:
                if not isinstance(text, str) or len(text) > 2000:
                    raise StudioError("a line's text is a string of at most 2000 characters")
                update["text"] = " ".join(text.split())
            if speaker is not None:
                if speaker not in {li.speaker for li in script.lines} | set(self.run_voices(lang)):
                    raise StudioError(f"no speaker {speaker!r} in this run")
                update["speaker"] = speaker
            if all(getattr(line, k) == v for k, v in update.items()):
                return self.state(lang)
            what = f"line {index}: " + ", ".join(f"{k} {getattr(line, k)!r}" for k in update)
            edits = self._remember(lang, what)
            lines = [li.model_copy(update=update) if li.index == index else li for li in script.lines]
            self._save(lang, edits, script.model_copy(update={"lines": lines}))
        return self.state(lang)

    def pick_voice(self, lang: object, speaker: object, voice_name: object) -> dict:
        """Give a speaker a bank voice for the whole video ('' or None: back to the run's own matching)."""
        lang = self.check_language(lang)
        if not isinstance(speaker, str) or speaker not in self.state_speakers(lang):
            raise StudioError(f"no speaker {speaker!r} in this run")
        if voice_name not in (None, "") and voice_name not in self.bank(lang):
            raise StudioError(f"{voice_name!r} is not a voice of the {lang} bank")
        with self.writing():
            edits = self._remember(lang, f"voice of {speaker}")
            if voice_name:
                edits["voices"][speaker] = voice_name
            else:
                edits["voices"].pop(speaker, None)
            self._save(lang, edits)
            self._write_config()
        return self.state(lang)

    def state_speakers(self, lang: str) -> set[str]:
        return {li.speaker for li in self.script(lang).lines} | set(self.run_voices(lang))

    def approve(self, lang: object, index: object, approved: object) -> dict:
        lang = self.check_language(lang)
        with self.writing():
            index = self.line(self.script(lang), index)
            edits = self._remember(lang, f"{'approve' if approved else 'unapprove'} line {index}")
            edits["approved"] = sorted(set(edits["approved"]) - {index} | ({index} if approved else set()))
            self._save(lang, edits)
        return self.state(lang)

    def undo(self, lang: object) -> dict:
        """Back to the state before the last change (text, speakers, voices, approvals)."""
        lang = self.check_language(lang)
        with self.writing():
            edits = self.edits(lang)
            if not edits["history"]:
                raise StudioError("nothing to undo", 409)
            last = edits["history"].pop()
            before = {row["index"]: row for row in last["lines"]}
            script = self.script(lang)
            lines = [
                li.model_copy(update={k: before[li.index][k] for k in ("text", "speaker")})
                if li.index in before
                else li
                for li in script.lines
            ]
            edits["voices"], edits["approved"] = last["voices"], last["approved"]
            self._save(lang, edits, script.model_copy(update={"lines": lines}))
            self._write_config()
        return self.state(lang)

    def _write_config(self) -> None:
        """studio.config.yaml: the run's own --config with every language's picked voices over it."""
        data = _read_yaml(self.config) if self.config else {}
        for lang in self.languages:
            picked = self.edits(lang)["voices"]
            if picked:
                data = _merge(data, {"languages": {lang: {"tts": {"voices": picked}}}})
        write_text(self.layout.studio_config, yaml.safe_dump(data, allow_unicode=True, sort_keys=True))

    def duration(self) -> float:
        if self._duration is None:
            source = Path(self.manifest.source)
            self._duration = media.probe(source).duration_s if source.exists() else self.manifest.duration_s
        return self._duration

    def regenerate(self, lang: object, index: object) -> dict:
        """Speak one line again with the run's voice for its speaker (or the one picked here), fitted to its slot
        as a render would (`_speak`), and cut it alone from that track into LANG/studio/line-N.wav. A text spoken
        ahead while the person paused typing (`estimate`) is already in the line cache: then nothing is spoken."""
        lang = self.check_language(lang)
        with self.writing():
            started = time.monotonic()
            script = self.script(lang)
            index = self.line(script, index)
            line, clip, spoken, scratch = self._speak(lang, script, index)
            path = self.layout.studio_line(lang, index)
            if clip is None:
                raise StudioError(f"line {index} has nothing to say: there is no audio to play", 409)
            audio, rate = media.read_audio(scratch)
            media.write_audio(path, audio[int(clip.start * rate) : int(clip.end * rate)], rate)
            edits = self.edits(lang)
            edits["regenerated"][str(index)] = {
                "audio": f"/files/{self.layout.relative(path)}?v={path.stat().st_mtime_ns}",
                "text": line.text,
                "synth_s": line.synth_s,
                "heard_s": round(clip.end - clip.start, 3),  # as placed: cut at the slot's end when it runs over
                "speed": line.speed,
                "over_limit": line.over_limit,
                "voice": line.voice,
                "seconds": round(time.monotonic() - started, 2),
                "lines_spoken": spoken,
                "warm": lang in self.warmed,  # the warm-up had finished (else this one paid for part of it)
            }
            self._save(lang, edits)
        return self.state(lang)

    def _speak(self, lang: str, script: Script, index: int) -> tuple[ScriptLine, PlacedClip | None, int, Path]:
        """The line spoken through the voice stage itself, with the run's line cache: the track up to this line
        (every earlier line read back from the cache; the next one, silent, only bounds the slot) spoken and fitted
        as a render speaks it, so the clip goes into the cache the render reads. Returns the fitted line, its
        placed clip (None: nothing to say), how many lines were synthesised and the scratch voice track. Called
        holding the run's lock (`writing`)."""
        from dubbing import voice

        cfg = self.cfg(lang)
        synth = self.synthesizer(lang)
        voices = self.run_voices(lang)
        for speaker, name in self.edits(lang)["voices"].items():
            voices[speaker] = voice.parse_voice(name, synth.name, speaker)
        cache = self.layout.clip_cache(lang)
        before = {p: p.stat().st_mtime_ns for p in cache.glob("*.wav")} if cache.exists() else {}
        scratch = self.layout.studio_dir(lang) / "voice.wav"
        # the lines after the next one cannot change this line's fit: left out, so a voice picked for a
        # speaker does not have every later line of theirs spoken first; the next line only bounds the slot
        order = sorted(script.lines, key=lambda li: li.start)
        at = next(i for i, li in enumerate(order) if li.index == index)
        upto = order[: at + 1] + [li.model_copy(update={"text": ""}) for li in order[at + 1 : at + 2]]
        fitted, track = voice.speak_track(
            script.model_copy(update={"lines": upto}),
            synth,
            cfg.tts,
            cfg.timing,
            duration_s=self.duration(),
            voices=voices,
            voice_wav=scratch,
            clip_cache=cache,
        )
        spoken = sum(before.get(p) != p.stat().st_mtime_ns for p in cache.glob("*.wav"))
        line = next(li for li in fitted.lines if li.index == index)
        return line, next((c for c in track.clips if c.index == index), None), spoken, scratch

    def _speak_ahead_later(self, lang: str, index: int, text: str) -> None:
        """After a pause in typing (`AHEAD_AFTER_S` without another estimate of this line), speak the new text
        ahead into the line cache, so that Regenerate finds it there. Only a text that differs from the saved one."""
        key = (lang, index)
        with self._ahead_lock:
            if (pending := self._ahead.pop(key, None)) is not None:
                pending.cancel()
            if not self._ahead_on:
                return
            timer = threading.Timer(AHEAD_AFTER_S, self._speak_ahead, args=(lang, index, text))
            timer.daemon = True
            self._ahead[key] = timer
            timer.start()

    def _speak_ahead(self, lang: str, index: int, text: str) -> None:
        with self._ahead_lock:
            if self._ahead.get((lang, index)) is not threading.current_thread() or not self._ahead_on:
                return  # typed on since, or the studio is closing
        try:
            with self.writing():
                script = self.script(lang)
                done = self.edits(lang)["regenerated"].get(str(index)) or {}
                if done.get("text") == text:
                    return  # regenerated meanwhile
                lines = [li.model_copy(update={"text": text}) if li.index == index else li for li in script.lines]
                started = time.monotonic()
                spoken = self._speak(lang, script.model_copy(update={"lines": lines}), index)[2]
                self.spoken_ahead[(lang, index)] = text
                log.info("studio: %s line %d spoken ahead in %.1f s (%d synthesised)", lang, index,
                         time.monotonic() - started, spoken)  # fmt: skip
        except StudioError:
            pass  # a render or another run is writing: Regenerate will speak it
        except Exception as exc:  # noqa: BLE001  # speaking ahead is an optimisation: never the studio's failure
            log.warning("studio: speaking %s line %d ahead failed (%s)", lang, index, exc)
        finally:
            with self._ahead_lock:
                if self._ahead.get((lang, index)) is threading.current_thread():
                    del self._ahead[(lang, index)]

    def close(self) -> None:
        """Stop what runs in the background: a text waiting to be spoken ahead, a render."""
        with self._ahead_lock:
            self._ahead_on = False
            for timer in self._ahead.values():
                timer.cancel()
        with self._mutex:  # a line being spoken ahead finishes first
            pass
        self.render.stop()

    def export_srt(self, lang: object) -> str:
        from dubbing.studio.script_file import to_srt

        return to_srt(self.script(self.check_language(lang)))


_PROGRESS = re.compile(r"\]\s+(\S+): (\S+) (?:done|reused from the cache)")


class Render:
    """One `dub run` of a language at a time, in a background process: the same flow run as on the command line
    (a Prefect flow run, in the UI when a server is configured), its plain progress lines read as they come."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.lang: str | None = None
        self.done: set[str] = set()
        self.lines: list[str] = []
        self.returncode: int | None = None
        self.started = self.ended = 0.0
        self.total = 0
        self._follower: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.returncode is None

    def command(self, lang: str) -> list[str]:
        """`dub run SOURCE -l LANG -o DIR --preset P [--config C]`, with studio.config.yaml when voices were picked."""
        s = self.studio
        config = s.layout.studio_config if any(s.edits(lang)["voices"] for lang in s.languages) else s.config
        cmd = ["dub", "run", s.manifest.source, "-l", lang, "-o", str(s.out), "--preset", s.preset]
        return cmd + (["--config", str(config)] if config else [])

    def start(self, lang: object) -> dict:
        lang = self.studio.check_language(lang)
        with self._lock:
            if self.running:
                raise StudioError(f"a render of {self.lang} is already running; wait for it to finish", 409)
            with self.studio.writing():  # refused while another `dub run` writes the folder
                pass
            cmd = [sys.executable, "-m", "dubbing.cli", *self.command(lang)[1:]]  # `dub` of this Python
            self.studio.layout.studio_dir(lang).mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
            )
            from dubbing import steps  # the steps a one-language run reports (imported once a render is asked for)

            self.total = len(steps.STEPS)
            self.lang, self.done, self.lines, self.returncode = lang, set(), [], None
            self.started, self.ended = time.monotonic(), 0.0
            self._follower = threading.Thread(target=self._follow, args=(self.proc,), daemon=True)
            self._follower.start()
        return self.status()

    def _follow(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        log_path = self.studio.layout.studio_dir(self.lang or "") / "render.log"
        with open(log_path, "w", encoding="utf-8") as log_file:
            for row in proc.stdout:
                log_file.write(row)
                log_file.flush()
                self.lines = [*self.lines, row.rstrip()][-200:]
                if found := _PROGRESS.search(row):
                    self.done = self.done | {f"{found.group(1)}:{found.group(2)}"}
        code = proc.wait()
        if code == 0 and self.lang:
            self._rendered(self.lang)
        self.ended, self.returncode = time.monotonic(), code

    def _rendered(self, lang: str) -> None:
        """After a render: the run's new manifest, and the regenerated lines are now part of the dub."""
        s = self.studio
        with s._mutex:
            s.manifest = Manifest.model_validate_json(s.layout.manifest.read_text(encoding="utf-8"))
            edits = s.edits(lang)
            edits["regenerated"] = {}
            with contextlib.suppress(DubbingError):
                with output_lock(s.layout.lock):
                    write_json(s.layout.studio_edits(lang), edits)

    def status(self) -> dict:
        end = self.ended or time.monotonic()
        return {
            "running": self.running,
            "language": self.lang,
            "steps_done": len(self.done),
            "steps_total": self.total,
            "returncode": self.returncode,
            "seconds": round(end - self.started, 1) if self.proc else 0.0,
            "last": self.lines[-1] if self.lines else "",
            "error": next((row for row in reversed(self.lines) if row.startswith("error:")), None)
            if self.returncode
            else None,
        }

    def stop(self) -> None:
        """End a running render (the studio is closing): `dub run` resumes from its finished steps next time.
        Returns once the follower has read the end, so `running` is false after it."""
        if self.proc is not None and self.returncode is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._follower is not None:
            self._follower.join(timeout=30)
