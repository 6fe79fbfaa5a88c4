"""The studio page: one HTML document with its style and script inline (no CDN, nothing from outside), filled from
/api/state. Every text of the run is put into the page with textContent or as a form value, never as HTML, so a
line reading `<script>` shows as those characters. Every control is a button, a text area, a select or a checkbox:
reachable with Tab and worked with Enter or Space; Ctrl+Enter in a line's text saves it and regenerates it,
Alt+Z undoes (outside a text area, whose own undo keeps Ctrl+Z)."""

from __future__ import annotations

import html

from dubbing import review

STYLE = (
    review.STYLE
    + """
header{display:flex;gap:1em;align-items:center;flex-wrap:wrap}header h1{margin:.2em 0}
#status{min-height:1.4em}#status.error{color:#b00020;font-weight:600}
textarea{width:100%;min-width:16em;font:inherit;box-sizing:border-box}
.est{font-size:12px;color:#555}.est.over{color:#b00020;font-weight:600}
tr.edited td.text{background:#fffbe0}tr.approved td:first-child{border-left:4px solid #2a7}
.speakers{display:flex;gap:1.5em;flex-wrap:wrap}.speakers label{display:block}
button:focus-visible,select:focus-visible,textarea:focus-visible,input:focus-visible{outline:3px solid #f90}
progress{width:14em}.small{font-size:12px;color:#555}code{background:#f4f4f4;padding:0 .3em}
td.acts button{display:block;margin:.15em 0;width:100%}audio{width:14em;display:block}
"""
)

SCRIPT = r"""
const $ = (q, el=document) => el.querySelector(q);
const el = (tag, props={}, ...kids) => { const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) { if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v); else e[k] = v; }
  for (const kid of kids) e.append(kid); return e; };
const clock = s => s == null ? '' : Math.floor(s / 60) + ':' + (s % 60).toFixed(1).padStart(4, '0');
const num = (v, d=2) => v == null ? '-' : (+v).toFixed(d);
let state = null, lang = null, polling = null, bank = [];

function say(text, error=false) { const s = $('#status'); s.textContent = text; s.className = error ? 'error' : ''; }
async function call(path, body) {
  const reply = await fetch(path, body === undefined ? {} : {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const data = await reply.json().catch(() => ({error: 'the studio answered ' + reply.status}));
  if (!reply.ok) { say(data.error || ('error ' + reply.status), true); throw new Error(data.error); }
  return data;
}
async function load(l) { show(await call('/api/state' + (l ? '?lang=' + encodeURIComponent(l) : ''))); }

function setMedia(video, src, vtt, label, srclang) {
  if (!src) { video.removeAttribute('src'); return; }
  if (video.dataset.src === src) return;
  video.dataset.src = src; video.dataset.readyState = 0; video.dataset.duration = '';
  video.replaceChildren(); video.src = src;
  if (vtt) video.append(el('track', {kind: 'subtitles', src: vtt, srclang, label, default: true}));
  video.load();
}

function show(s) {
  state = s; lang = s.language;
  $('#name').textContent = s.name;
  $('#verdict').textContent = s.verdict + (s.figures ? ' (' + s.figures + ')' : '');
  $('#langs').replaceChildren(...s.languages.map(l => el('button', {text: l, type: 'button',
    className: l === lang ? 'on' : '', 'aria-pressed': String(l === lang), onclick: () => load(l)})));
  setMedia($('#source'), s.source, s.source_vtt, 'source', s.source_language);
  setMedia($('#dub'), s.video, s.vtt, 'dub (' + lang + ')', lang);
  $('#export').href = '/export/' + encodeURIComponent(lang) + '.srt';
  $('#command').textContent = s.render_command;
  $('#figures').replaceChildren(...s.summary.map(([k, v]) => el('tr', {}, el('th', {text: k}), el('td', {text: v}))));
  $('#flags').replaceChildren(...(s.flags.length ? s.flags.map(f => el('li', {},
    el('button', {type: 'button', text: clock(f.start), onclick: () => seek(f.start || 0, true)}),
    ' ' + f.check + ': ' + f.message)) : [el('li', {text: 'none'})]));
  $('#undo').disabled = !s.undo.length;
  $('#undo').title = s.undo.length ? 'undo ' + s.undo[s.undo.length - 1] : 'nothing to undo';
  speakers(s); lines(s); renderStatus(s.render);
}

function voiceSelect(speaker, current) {
  const sel = el('select', {'aria-label': 'voice of ' + speaker, 'data-speaker': speaker});
  sel.append(el('option', {value: '', text: 'as matched: ' + (state.voices[speaker] || 'default')}));
  for (const v of bank) sel.append(el('option', {value: v, text: v, selected: v === current}));
  sel.onchange = async () => { show(await call('/api/voice', {lang, speaker, voice: sel.value}));
    say('voice of ' + speaker + ' set; regenerate a line to hear it, render to apply it everywhere'); };
  return sel;
}

function speakers(s) {
  $('#speakers').replaceChildren(...s.speakers.map(sp => el('label', {}, el('b', {text: sp + ' '}),
    voiceSelect(sp, s.picked[sp] || ''))));
}

function lines(s) {
  const others = s.speakers;
  $('#lines').replaceChildren(...s.lines.map(line => {
    const row = el('tr', {className: (line.edited ? 'edited ' : '') + (line.approved ? 'approved ' : '')
      + (line.qa.flags && line.qa.flags.length ? 'flagged' : ''), 'data-index': line.index,
      'data-t': line.start, 'data-end': line.end});
    const text = el('textarea', {value: line.text, rows: 2, 'aria-label': 'translation of line ' + line.index});
    const est = el('div', {className: 'est', 'aria-live': 'polite'});
    let timer = null;
    const estimate = async () => { const e = await call('/api/estimate', {lang, index: line.index, text: text.value});
      est.textContent = 'about ' + e.estimated_s.toFixed(1) + ' s for a ' + e.slot_s.toFixed(1) + ' s slot (x'
        + e.speed.toFixed(2) + (e.fits ? '' : ', over the x' + e.max_speedup + ' limit') + ')';
      est.className = 'est' + (e.fits ? '' : ' over'); row.dataset.estimate = e.estimated_s; };
    text.oninput = () => { clearTimeout(timer); timer = setTimeout(estimate, 150); };
    estimate();
    const save = async () => { if (text.value !== line.text) show(await call('/api/line',
      {lang, index: line.index, text: text.value})); };
    const regen = async () => { await save(); say('speaking line ' + line.index + '...');
      const t0 = performance.now(); const s2 = await call('/api/regenerate', {lang, index: line.index}); show(s2);
      const r = s2.lines.find(l => l.index === line.index).regenerated;
      say('line ' + line.index + ' spoken in ' + ((performance.now() - t0) / 1000).toFixed(1) + ' s (' +
        r.lines_spoken + ' line' + (r.lines_spoken === 1 ? '' : 's') + ' synthesised)');
      const audio = document.querySelector('tr[data-index="' + line.index + '"] audio');
      if (audio) playInPlace(line, audio); };
    text.onkeydown = e => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); regen(); } };
    const who = el('select', {'aria-label': 'speaker of line ' + line.index});
    for (const sp of others) who.append(el('option', {value: sp, text: sp, selected: sp === line.speaker}));
    who.onchange = async () => show(await call('/api/line', {lang, index: line.index, speaker: who.value}));
    const approve = el('input', {type: 'checkbox', checked: line.approved, 'aria-label': 'approve line ' + line.index});
    approve.onchange = async () => show(await call('/api/approve',
      {lang, index: line.index, approved: approve.checked}));
    const spoken = el('td', {className: 'spoken'});
    const r = line.regenerated;
    spoken.append(el('div', {text: r ? 'new: ' + num(r.heard_s, 1) + ' s at x' + num(r.speed) +
      (r.over_limit ? ' (cut)' : '') : num(line.synth_s, 1) + ' s at x' + num(line.speed) +
      (line.over_limit ? ' (cut)' : '')}));
    if (r) { const audio = el('audio', {controls: true, preload: 'auto', src: r.audio});
      audio.setAttribute('aria-label', 'regenerated line ' + line.index); spoken.append(audio); }
    const qa = line.qa, flags = el('td', {});
    for (const f of qa.flags || []) flags.append(el('span', {className: 'flag', text: f}), ' ');
    const acts = el('td', {className: 'acts'},
      el('button', {type: 'button', text: 'play', onclick: () => seek(line.start, true),
        'aria-label': 'play line ' + line.index}),
      el('button', {type: 'button', text: 'save', onclick: save, 'aria-label': 'save line ' + line.index}),
      el('button', {type: 'button', text: 'regenerate', className: 'regen', onclick: regen,
        'aria-label': 'regenerate line ' + line.index}),
      el('button', {type: 'button', text: 'hear in place', disabled: !r, className: 'inplace',
        onclick: () => playInPlace(line, row.querySelector('audio')), 'aria-label': 'hear line ' + line.index +
        ' in place'}),
      el('label', {}, approve, ' approved'));
    row.append(el('td', {text: String(line.index)}), el('td', {text: clock(line.start) + '-' + clock(line.end)}),
      el('td', {}, who), el('td', {text: line.source_text}), el('td', {className: 'text'}, text, est),
      spoken, el('td', {text: qa.heard || ''}), el('td', {text: num(qa.error_rate)}),
      el('td', {text: num(qa.meaning_chrf, 0)}), flags, acts);
    return row; }));
}

function seek(t, play) { for (const v of [$('#dub'), $('#source')]) { if (!v.src) continue;
  v.currentTime = t; if (play && v.id === 'dub') v.play().catch(() => {}); else v.pause(); } }
// the new line over the picture: the dub muted from the line's start while the line plays, then as it was
function playInPlace(line, audio) { if (!audio) return; const dub = $('#dub');
  const muted = dub.muted; dub.muted = true; if (dub.src) { dub.currentTime = line.start; dub.play().catch(() => {}); }
  audio.currentTime = 0; audio.play().catch(() => {});
  audio.onended = () => { dub.pause(); dub.muted = muted; }; }

function renderStatus(r) {
  const bar = $('#progress'), note = $('#render-note');
  bar.hidden = !r.running; bar.max = r.steps_total; bar.value = r.steps_done;
  $('#render').disabled = r.running;
  if (r.running) note.textContent = 'rendering ' + r.language + ': ' + r.steps_done + ' of ' + r.steps_total +
    ' steps, ' + r.seconds.toFixed(0) + ' s';
  else if (r.returncode === 0) note.textContent = 'rendered ' + r.language + ' in ' + r.seconds.toFixed(0) + ' s';
  else if (r.returncode != null) note.textContent = 'render failed: ' + (r.error || r.last);
  else note.textContent = '';
  document.body.dataset.render = r.running ? 'running' : r.returncode === 0 ? 'done'
    : r.returncode == null ? '' : 'failed';
}
async function poll() { const r = await call('/api/render'); renderStatus(r);
  if (!r.running) { clearInterval(polling); polling = null; await load(lang);
    if (r.returncode === 0) say('render finished: players and QA reloaded'); } }
$('#render').onclick = async () => { renderStatus(await call('/api/render', {lang}));
  say('rendering ' + lang + '...'); if (!polling) polling = setInterval(poll, 1000); };
$('#undo').onclick = async () => { show(await call('/api/undo', {lang})); say('undone'); };
document.addEventListener('keydown', e => { if (e.altKey && e.key.toLowerCase() === 'z'
  && document.activeElement.tagName !== 'TEXTAREA') { e.preventDefault(); $('#undo').click(); } });
$('#dub').addEventListener('timeupdate', () => { const t = $('#dub').currentTime;
  document.querySelectorAll('#lines tr').forEach(r =>
    r.classList.toggle('now', t >= +r.dataset.t && t < +r.dataset.end)); });
for (const v of [$('#dub'), $('#source')]) { const note = () => { v.dataset.readyState = v.readyState;
    v.dataset.duration = v.duration; v.dataset.error = v.error ? v.error.code : ''; };
  ['loadedmetadata', 'loadeddata', 'canplay', 'error', 'emptied'].forEach(e => v.addEventListener(e, note)); }
(async () => { state = await call('/api/state'); bank = (await call('/api/bank?lang=' +
  encodeURIComponent(state.language))).voices; show(state);
  if (state.render.running) polling = setInterval(poll, 1000); })().catch(e => say(String(e), true));
"""


def page(name: str) -> str:
    """The studio's page for the run called `name` (its data comes from the API)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>studio: {html.escape(name)}</title><style>{STYLE}</style></head><body>"
        '<header><h1 id="name"></h1><nav id="langs" aria-label="languages"></nav><span id="verdict"></span></header>'
        '<p id="status" role="status" aria-live="polite"></p>'
        '<div class="videos"><figure><figcaption>source</figcaption>'
        '<video id="source" controls muted preload="auto" playsinline></video></figure>'
        "<figure><figcaption>dub</figcaption>"
        '<video id="dub" controls preload="auto" playsinline></video></figure></div>'
        '<p><button type="button" id="render">Render</button> <progress id="progress" hidden></progress> '
        '<span id="render-note" aria-live="polite"></span> <button type="button" id="undo">Undo</button> '
        '<a id="export" href="#" download>export the script as SRT</a></p>'
        '<p class="small">Render runs <code id="command"></code>: only the changed lines are spoken again.</p>'
        '<h3>Lines</h3><table class="lines"><thead><tr><th>#</th><th>time</th><th>speaker</th><th>source</th>'
        "<th>translation</th><th>spoken</th><th>heard back</th><th>error</th><th>chrF</th><th>flags</th>"
        '<th>actions</th></tr></thead><tbody id="lines"></tbody></table>'
        '<h3>Voices for the whole video</h3><div class="speakers" id="speakers"></div>'
        '<h3>QA of the last render</h3><table class="figures"><tbody id="figures"></tbody></table>'
        '<h3>Flagged</h3><ul class="flags" id="flags"></ul>'
        f"<script>{SCRIPT}</script></body></html>"
    )
