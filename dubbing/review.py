"""The review page (report.html): one static file a person opens in a browser to check a run before publishing.

The source and each dub side by side (HTML5 video with the run's WebVTT subtitles), the QA figures of each language,
the flagged lines, and the per-line table (source, translation, what the back-transcription heard, that translated
back and its chrF, speed, lipsync, flags) where a click seeks both videos to the line. No server and nothing fetched
from outside: CSS and JS are inline, videos are referenced by paths relative to the page. Browsers refuse <track>
files from file:// pages, so each subtitle file is also inlined as a data: URL the page falls back to.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Iterable
from pathlib import Path

from dubbing import media
from dubbing.files import atomic_path, write_json, write_text
from dubbing.layout import RunLayout
from dubbing.tools import ffmpeg_input, require_tool, run
from dubbing.types import Manifest, Stretch

BROWSER_VIDEO = {"h264", "vp8", "vp9", "av1"}  # what Chromium, Firefox and Safari all decode (H.264 included)
BROWSER_AUDIO = {"aac", "mp3", "opus", "vorbis", "flac", None}
BROWSER_CONTAINERS = {".mp4", ".m4v", ".webm"}


def clock(seconds: float | None) -> str:
    """m:ss.s, the way a reviewer reads a timeline."""
    if seconds is None:
        return ""
    minutes, rest = divmod(max(float(seconds), 0.0), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _num(value: object, digits: int = 2) -> str:
    """A figure for the page; anything else a (hand-edited) report holds is escaped like all its text."""
    return (
        "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float | int) else html.escape(str(value))
    )


def _attr(value: object) -> str:
    """A value in an HTML attribute (`data-t="..."`): escaped, quotes included, whatever the report holds."""
    return html.escape(str(value), quote=True)


def verdict(report: dict) -> tuple[str, str]:
    """A plain word for a language's dub and the figures behind it: 'unusable' when the whole dub is heard back
    worse than a line may be, or means something else on average; 'check' when lines are flagged; else 'good';
    'no dub' for a subtitles-only run."""
    if report.get("dubbed") is False:
        return "no dub", "subtitles only"
    limits = report.get("thresholds") or {}
    heard = (report.get("intelligibility") or {}).get("error_rate")
    meaning = (report.get("meaning") or {}).get("mean_chrf")
    metric = str((report.get("intelligibility") or {}).get("metric", "wer")).upper()
    figures = [f"{metric} {heard:.2f}"] if heard is not None else []
    figures += [f"meaning chrF {meaning:.0f}"] if meaning is not None else []
    flagged = {f.get("line") for f in report.get("flags") or []}
    worst_heard = limits.get("max_error_rate")
    if (heard is not None and worst_heard is not None and heard > worst_heard) or (
        meaning is not None and meaning < limits.get("min_meaning_chrf", 0)
    ):
        word = "unusable"
    elif flagged:
        word = f"check {len(flagged)} line{'s' * (len(flagged) > 1)}"
    else:
        word = "good"
    if report.get("below_goal"):
        figures.append("language below its goal")
    return word, ", ".join(figures)


def register_of(cast: dict) -> str:
    """The speaker's age register and why, for the casting row."""
    if not cast.get("age_register"):
        return ""
    return f", {cast['age_register']} register: {cast.get('register_reason') or 'from F0'}"


def fit_counts(actions: dict | None) -> str:
    """How many lines each fitting action took (report timing.actions), for the timing row."""
    done = [f"{n} {name.replace('_', ' ')}" for name, n in (actions or {}).items() if n and name != "sped_up"]
    return f"; {', '.join(done)}" if done else ""


def fit_marks(actions: list | None) -> str:
    """What fitting did to one line, for its speed cell (a speed-up shows as the speed itself)."""
    done = [html.escape(str(a).replace("_", " ")) for a in actions or [] if a != "sped_up"]
    return f" ({', '.join(done)})" if done else ""


def summary_rows(report: dict) -> list[tuple[str, str]]:
    """The headline figure of each check, as (label, text): used by report.html and the Prefect artifact."""
    rows: list[tuple[str, str]] = []
    if report.get("below_goal"):
        rows.append(("language below its goal (measured by the project)", "; ".join(report["below_goal"])))
    heard = report.get("intelligibility") or {}
    if "error_rate" in heard:
        rows.append(
            (f"intelligibility ({heard.get('metric', 'wer').upper()} of the dub heard back)", _num(heard["error_rate"]))
        )
    else:
        rows.append(("intelligibility", heard.get("note", "not measured")))
    timing = report.get("timing") or {}
    if timing:
        rows.append(
            (
                "timing",
                f"max x{_num(timing.get('max_speed'))} (limit x{_num(timing.get('max_speedup'))}), "
                f"{timing.get('sped_up', 0)} sped up, {timing.get('over_limit', 0)} over the limit"
                + fit_counts(timing.get("actions")),
            )
        )
    voice = report.get("voice") or {}
    if "speakers" in voice:
        text = ", ".join(
            f"{speaker} {_num(v.get('similarity'))}" + (f" ({v['note']})" if v.get("note") else "")
            for speaker, v in voice["speakers"].items()
        )
        rows.append(("voice similarity to the source (CAM++ cosine)", text or "no speakers"))
    else:
        rows.append(("voice similarity", voice.get("note", "not measured")))
    if "cast" in voice:
        speech = voice.get("speech_s") or {}
        text = "; ".join(
            f"{speaker} ({_num(speech.get(speaker), 1)} s of speech{register_of(c)}): {c.get('voice')} - "
            f"{c.get('reason')}"
            for speaker, c in voice["cast"].items()
        )
        rows.append((f"casting ({voice.get('speaker_count')} speaker(s) in the source)", text or "no speakers"))
    lips = report.get("lipsync") or {}
    if "correlation" in lips:
        source = (
            f" (source picture with its own speech: {_num(lips['source_correlation'])})"
            if lips.get("source_correlation") is not None
            else ""
        )
        rows.append(
            (
                "lipsync (mouth opening vs dub audio, r)",
                f"{_num(lips.get('correlation'))}{source}; best lag {_num(lips.get('best_lag_ms'), 0)} ms; "
                f"no face in {100 * (lips.get('no_face_share') or 0):.0f}% of frames; "
                f"mouth re-animated: {'yes' if lips.get('lipsync_applied') else 'no'}",
            )
        )
    else:
        rows.append(("lipsync", lips.get("note", "not measured")))
    loud = report.get("loudness") or {}
    if "integrated_lufs" in loud:
        rows.append(
            (
                "loudness (EBU R128)",
                f"{_num(loud.get('integrated_lufs'), 1)} LUFS (target {_num(loud.get('target_lufs'), 0)}), "
                f"range {_num(loud.get('range_lu'), 1)} LU, true peak {_num(loud.get('true_peak_dbtp'), 1)} dBTP",
            )
        )
    else:
        rows.append(("loudness", loud.get("note", "not measured")))
    sense = report.get("meaning") or {}
    if "mean_chrf" in sense:
        what = "the dub heard back" if sense.get("basis") == "heard" else "the script"
        rows.append(
            (
                f"meaning ({what} translated back, chrF against the source)",
                f"mean {_num(sense.get('mean_chrf'), 1)} over {sense.get('lines', 0)} lines "
                f"(flagged under {_num(sense.get('min_chrf'), 0)})",
            )
        )
    else:
        rows.append(("meaning", sense.get("note", "not measured")))
    foreign = report.get("wrong_language") or {}
    if "words" in foreign:
        words = [w["word"] for found in foreign["words"].values() for w in found]
        rows.append(("words of another language", ", ".join(words) or "none"))
    else:
        rows.append(("words of another language", foreign.get("note", "not measured")))
    rows.append(("input warnings", "; ".join(report.get("inputs") or []) or "none"))
    rows.append(("flagged", str(len(report.get("flags") or []))))
    return rows


def browser_preview(video: Path, out: Path) -> Path:
    """An H.264/AAC copy a browser can play, for a video whose codecs it cannot (HEVC, MPEG-4 part 2...)."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    with atomic_path(out) as tmp:
        run(
            [ffmpeg, "-nostdin", "-y", "-v", "error", "-i", ffmpeg_input(video), "-map", "0:v:0", "-map", "0:a:0?",
             "-vf", "scale=-2:'min(720,ih)'", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-f", "mp4", str(tmp)],
            f"writing a browser preview of {video}",
        )  # fmt: skip
    return Path(out)


def _data_url(vtt: Path) -> str:
    return "data:text/vtt;base64," + base64.b64encode(Path(vtt).read_bytes()).decode() if Path(vtt).exists() else ""


def _video(
    kind: str, lang: str, src: str | None, vtt: str | None, vtt_path: Path | None, label: str, spoken: str
) -> str:
    """One video of a language's section (`lang` names the section); `spoken`: its subtitles' language."""
    if not src:
        return f'<figure><figcaption>{html.escape(label)}</figcaption><p class="none">no video</p></figure>'
    track = ""
    if vtt:
        track = (
            f'<track kind="subtitles" srclang="{html.escape(spoken)}" label="{html.escape(label)}" default '
            f'src="{html.escape(vtt)}" data-inline="{_data_url(vtt_path) if vtt_path else ""}">'
        )
    muted = " muted" if kind == "source" else ""
    return (
        f"<figure><figcaption>{html.escape(label)} "
        f'<span class="status" data-for="{kind}-{_attr(lang)}"></span></figcaption>'
        f'<video id="{kind}-{html.escape(lang)}" class="{kind}" controls preload="auto" playsinline{muted} '
        f'src="{html.escape(src)}">{track}</video></figure>'
    )


def _cells(values: Iterable[str]) -> str:
    return "".join(f"<td>{v}</td>" for v in values)


def _language_section(lang: str, report: dict, source: str | None, source_vtt: tuple[str, Path] | None,
                      dub: str | None, dub_vtt: tuple[str, Path], hidden: bool,
                      source_language: str, stretched: list[Stretch] | None = None) -> str:  # fmt: skip
    figures = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary_rows(report))
    flags = "".join(
        f'<li class="seek" data-t="{_attr(f.get("start") or 0)}" data-lang="{html.escape(lang)}">'
        f"<b>{clock(f.get('start'))}</b> {html.escape(f['check'])}: {html.escape(str(f['message']))}</li>"
        for f in report.get("flags") or []
    )
    rows = []
    for line in report.get("line_qa") or []:
        err, lip = line.get("error_rate"), line.get("lip_sync")
        speed = f"x{line['speed']:.2f}" if line.get("speed") else "-"
        marks = " ".join(f'<span class="flag">{html.escape(f)}</span>' for f in line.get("flags") or [])
        values = [
            _num(line["index"], 0),
            f"{clock(line['start'])}-{clock(line['end'])}",
            html.escape(line["speaker"]),
            html.escape(line["source_text"]),
            html.escape(line["text"]),
            html.escape(line.get("heard") or ""),
            _num(err),
            html.escape(line.get("back_translation") or ""),
            _num(line.get("meaning_chrf"), 0),
            speed + fit_marks(line.get("fit") or (["cut"] if line.get("over_limit") else [])),
            _num(lip),
            marks,
        ]
        cls = "seek flagged" if line.get("flags") else "seek"
        rows.append(
            f'<tr class="{cls}" data-t="{_attr(line["start"])}" data-end="{_attr(line["end"])}" '
            f'data-lang="{html.escape(lang)}">'
            f"{_cells(values)}</tr>"
        )
    head = _cells(
        ["#", "time", "speaker", "source", "translation", "heard back", "error", "back-translated", "chrF", "speed",
         "lips r", "flags"]
    )  # fmt: skip
    heading = f"{lang}: {report.get('translator', '')}" + (f" via {report['pivot']}" if report.get("pivot") else "")
    source_vtt_src, source_vtt_path = source_vtt or (None, None)
    # spans of the source slowed down in the dub (manifest `stretched`): the source video follows the dub's times
    spans = json.dumps([[s.start, s.end, s.added_s] for s in stretched or []])
    spans_attr = f' data-stretches="{_attr(spans)}"' if stretched else ""
    return (
        f'<section class="lang" id="lang-{html.escape(lang)}"{" hidden" if hidden else ""}'
        f"{spans_attr}>"
        f"<h2>{html.escape(heading)}</h2>"
        f'<div class="videos">'
        f"{_video('source', lang, source, source_vtt_src, source_vtt_path, 'source', source_language)}"
        f"{_video('dub', lang, dub, *dub_vtt, f'dub ({lang})', lang)}</div>"
        f'<p><button class="both" data-lang="{html.escape(lang)}">play both from the start</button> '
        f'<label><input type="checkbox" class="sync" data-lang="{html.escape(lang)}" checked> keep the source in '
        f"step with the dub (muted)</label></p>"
        f'<h3>QA</h3><table class="figures">{figures}</table>'
        f'<h3>Flagged ({len(report.get("flags") or [])})</h3><ul class="flags">{flags or "<li>none</li>"}</ul>'
        f'<h3>Lines</h3><table class="lines"><thead><tr>{head.replace("td>", "th>")}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


STYLE = """
.failed { color: #b00020; font-weight: bold; }
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
nav button{margin-right:.3em;padding:.3em .9em}nav button.on{background:#246;color:#fff}
.videos{display:flex;gap:1em;flex-wrap:wrap}
figure{margin:0;flex:1 1 360px}video{width:100%;max-height:45vh;background:#000}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}
table.figures th{background:#f4f4f4;font-weight:600}table.lines tbody tr{cursor:pointer}
table.lines tbody tr:hover{background:#eef}tr.flagged{background:#fff3f0}tr.now{outline:2px solid #246}
.flag{background:#c33;color:#fff;border-radius:3px;padding:0 .3em;margin-right:.2em;font-size:12px}
ul.flags li{cursor:pointer}.status{color:#777;font-size:12px}.none{color:#777}
"""

SCRIPT = r"""
const $ = (q, el=document) => el.querySelector(q), $$ = (q, el=document) => [...el.querySelectorAll(q)];
function show(lang){ $$('section.lang').forEach(s => s.hidden = s.id !== 'lang-' + lang);
  $$('nav button').forEach(b => b.classList.toggle('on', b.dataset.lang === lang)); }
$$('nav button').forEach(b => b.onclick = () => show(b.dataset.lang));
function pair(lang){ return [document.getElementById('dub-' + lang), document.getElementById('source-' + lang)]; }
function synced(lang){ const c = $('input.sync[data-lang="' + lang + '"]'); return c && c.checked; }
function at(v, t){ if (v.readyState >= 1) v.currentTime = t;
  else v.addEventListener('loadedmetadata', () => { v.currentTime = t; }, {once: true}); }
// the source's time at the dub's `t`: the same, but for the spans slowed down in the dub (data-stretches)
function srcT(lang, t){ let shift = 0;
  for (const [a, b, add] of JSON.parse(document.getElementById('lang-' + lang).dataset.stretches || '[]')) {
    if (t < a + shift) break;
    if (t < b + shift + add) return a + (t - a - shift) * (b - a) / (b - a + add);
    shift += add; }
  return t - shift; }
function seek(lang, t, play){ const [dub, src] = pair(lang); if (src) at(src, srcT(lang, t));
  if (dub) { at(dub, t); if (play) dub.play().catch(() => {}); else dub.pause(); } }
// a line's address is #LANG@SECONDS: clicking a line or flag sets it and plays; opening a link to it only seeks
function fromHash(play){ const m = decodeURIComponent(location.hash).match(/^#([\w-]+)@([\d.]+)$/);
  if (m && document.getElementById('lang-' + m[1])) { show(m[1]); seek(m[1], parseFloat(m[2]), play); } }
window.addEventListener('hashchange', () => fromHash(true));
$$('.seek').forEach(el => el.onclick = () => { const h = '#' + el.dataset.lang + '@' + el.dataset.t;
  if (location.hash === h) fromHash(true); else location.hash = h; });
$$('button.both').forEach(b => b.onclick = () => seek(b.dataset.lang, 0, true));
$$('video.dub').forEach(dub => { const lang = dub.id.slice(4), src = document.getElementById('source-' + lang);
  if (!src) return;
  dub.addEventListener('play', () => {
    if (synced(lang)) { src.currentTime = srcT(lang, dub.currentTime); src.play().catch(() => {}); } });
  dub.addEventListener('pause', () => src.pause());
  dub.addEventListener('seeked', () => { if (synced(lang)) src.currentTime = srcT(lang, dub.currentTime); });
  dub.addEventListener('timeupdate', () => { $$('#lang-' + lang + ' tr.seek').forEach(r =>
    r.classList.toggle('now', dub.currentTime >= +r.dataset.t && dub.currentTime < +r.dataset.end)); }); });
$$('video').forEach(v => { const status = $('.status[data-for="' + v.id + '"]');
  const note = () => { v.dataset.readyState = v.readyState; v.dataset.duration = v.duration;
    v.dataset.width = v.videoWidth; status.textContent = v.error ? 'cannot play: error ' + v.error.code
      : v.readyState >= 2 ? v.duration.toFixed(1) + ' s, ' + v.videoWidth + 'x' + v.videoHeight : 'loading'; };
  ['loadedmetadata', 'loadeddata', 'canplay'].forEach(e => v.addEventListener(e, note));
  const now = () => { v.dataset.currentTime = v.currentTime.toFixed(3); };
  ['seeked', 'timeupdate'].forEach(e => v.addEventListener(e, now));
  v.addEventListener('error', () => { v.dataset.error = v.error ? v.error.code : 'unknown'; note(); });
  const cues = t => { v.dataset.cues = t.track.cues ? t.track.cues.length : 0; t.track.mode = 'showing'; };
  $$('track', v).forEach(t => { t.addEventListener('load', () => cues(t));
    t.addEventListener('error', () => { if (t.dataset.inline && t.src !== t.dataset.inline) {
      const copy = t.cloneNode(); copy.src = t.dataset.inline; copy.removeAttribute('data-inline');
      copy.addEventListener('load', () => cues(copy));
      t.replaceWith(copy); } }); }); });
fromHash(false);
"""


def page(manifest: Manifest, reports: dict[str, dict], videos: dict[str, str | None], layout: RunLayout) -> str:
    """report.html for a run: `reports` maps a language to its report.json content, `videos` maps 'source' and
    each language to the video path (relative to the output folder) the page plays."""
    name = layout.name
    source_vtt = layout.source_subtitles(manifest.source_language, ".vtt")
    langs = list(reports)
    nav = "".join(
        f'<button data-lang="{html.escape(lang)}"{" class=on" if i == 0 else ""}>{html.escape(lang)}'
        f" ({len(reports[lang].get('flags') or [])} flagged)</button>"
        for i, lang in enumerate(langs)
    )
    sections = "".join(
        _language_section(
            lang,
            reports[lang],
            videos.get("source"),
            (layout.relative(source_vtt), source_vtt) if source_vtt.exists() else None,
            videos.get(lang),
            (manifest.outputs[lang].vtt, layout.out / manifest.outputs[lang].vtt),
            hidden=i > 0,
            source_language=manifest.source_language,
            stretched=manifest.outputs[lang].stretched,
        )
        for i, lang in enumerate(langs)
    )
    meta = json.dumps({"source": manifest.source, "languages": langs})
    failed = "".join(
        f'<p class="failed">{html.escape(lang)} failed: {html.escape(why)}</p>' for lang, why in manifest.failed.items()
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>review: {html.escape(name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(name)}</h1><p>source: {html.escape(manifest.source)} "
        f"({html.escape(manifest.source_language)}, {manifest.duration_s:.1f} s, speakers "
        f"{html.escape(', '.join(manifest.speakers))}). Click a line or a flag to jump to it.</p>"
        f"<nav>{nav}</nav>{failed}{sections}"
        f'<script type="application/json" id="run">{html.escape(meta)}</script><script>{SCRIPT}</script></body></html>'
    )


def playable(video: Path, preview: Path, out: Path) -> str | None:
    """The path (relative to `out`) of `video` if browsers can play it, else of an H.264 `preview` made beside it
    (remade when the video is newer); None when there is no video."""
    if not video.exists():
        return None
    info = media.probe(video)
    container_plays = video.suffix.lower() in BROWSER_CONTAINERS  # an .mkv or .mov dub (output.format) gets a preview
    if not container_plays or info.video_codec not in BROWSER_VIDEO or info.audio_codec not in BROWSER_AUDIO:
        if not preview.exists() or preview.stat().st_mtime < video.stat().st_mtime:
            browser_preview(video, preview)
        video = preview
    return os.path.relpath(video.absolute(), out.absolute())


def review_page(layout: RunLayout) -> Path:
    """report.html of a run: source and dubs side by side, QA figures, flagged lines and the line table, from
    manifest.json and each language's report.json; run it after the manifest is written. Records the page in the
    manifest as `review`."""
    manifest = Manifest.model_validate_json(layout.manifest.read_text())
    reports = {
        lang: json.loads((layout.out / o.report).read_text())
        for lang, o in manifest.outputs.items()
        if (layout.out / o.report).exists()
    }
    videos = {"source": playable(manifest.source_path(layout.out), layout.source_preview, layout.out)}
    for lang, o in manifest.outputs.items():
        videos[lang] = playable(layout.out / o.video, layout.preview(lang), layout.out) if o.video else None
    review = write_text(layout.review_page, page(manifest, reports, videos, layout))
    write_json(layout.manifest, manifest.model_copy(update={"review": layout.relative(review)}).model_dump())
    return review


def report_markdown(report_path: Path, layout: RunLayout) -> str:
    """A short QA summary of one language's report, for the Prefect UI: the headline figures of every check
    (`summary_rows`, shared with report.html) and each flagged line with its time."""
    report = json.loads(Path(report_path).read_text())
    rows = "\n".join(f"| {key} | {value} |" for key, value in report.items() if not isinstance(value, dict | list))
    rows += "".join(f"\n| {key} | {value} |" for key, value in summary_rows(report))
    flagged = report.get("lines_over_limit") or []
    flags = "".join(
        f"\n| {clock(f.get('start'))} | {'' if f.get('line') is None else f['line']} | {f['check']} | "
        f"{str(f['message']).replace('|', '/')} |"
        for f in report.get("flags") or []
    )
    flag_table = f"| time | line | check | why |\n|---|---|---|---|{flags}" if flags else "No line failed a check."
    return (
        f"### {layout.name}: {report.get('language')}\n\n| figure | value |\n|---|---|\n{rows}\n\n"
        f"Lines over the speed limit: {', '.join(map(str, flagged)) or 'none'}\n\n"
        f"#### Flagged\n\n{flag_table}\n\n"
        f"Outputs: `{layout.language_dir(report.get('language', ''))}`; review page: `{layout.review_page}`\n"
    )
