"""Translation quality and speed on everyday speech: chrF and BLEU (sacrebleu) against hand-written references.

    .venv/bin/python benchmarks/bench_translate.py                       # every system, held-out set
    .venv/bin/python benchmarks/bench_translate.py --set dev --languages de,ja --show ja
    .venv/bin/python benchmarks/bench_translate.py --languages es,pt --systems apertium,bergamot --json /tmp/mt.json

Data (TAB-separated, the first non-comment line names the columns by language code, `en` the source):
benchmarks/data/mt_en.tsv (`--set heldout`, the default: 38 sentences, the set the project is scored on; never
tune on it) and benchmarks/data/mt_en_dev.tsv (`--set dev`: 12 other sentences, for tuning prompts). Both have
references written by hand in es pt fr it de ru zh ja hi ko ar tr pl nl ca; their header comments say which
variety and register each follows.

Systems are built as a dub run builds them (`translate.translator_for`), glossary and orthography fixes included,
so the numbers are the product's. `SYSTEMS` may list several per language; each language's configured default
(configs/languages/<lang>.yaml, where there is one) is added. A system whose backend this checkout does not have,
or that cannot be built here (a model not installed, a pair missing), is skipped with a note on stderr.

Columns: chrF; BLEU with sacrebleu's tokenizer for the language (`zh` for Chinese; `ja-mecab`/`ko-mecab` when
their extra packages are installed, else `char` for Japanese and `13a` for Korean, which writes spaces; the note
under the table says which were used); `load s`, building the system and translating one warm-up line (lazy
model loading lands here); `seconds`, translating every line after that; `s / s speech`, those seconds per second
of English speech, the speech estimated as the English sentences' characters (spaces included) / 14 characters per
second. Times are wall-clock on this machine: they are inflated when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import sacrebleu

from dubbing import translate
from dubbing.config import TranslateConfig, load_settings

ROOT = Path(__file__).resolve().parent.parent
SETS = {"heldout": ROOT / "benchmarks/data/mt_en.tsv", "dev": ROOT / "benchmarks/data/mt_en_dev.tsv"}
SOURCE = "en"
TARGETS = ("es", "pt", "fr", "it", "de", "ru", "zh", "ja", "hi", "ko", "ar", "tr", "pl", "nl", "ca")
CHARS_PER_SECOND = 14.0  # English speech, spaces included: the `s / s speech` column's estimate
WARM_UP = "Hello, how are you?"  # translated once after building, before the timed lines

# (label, target, config), several per language where worth comparing; each language's configured default is
# appended in main().
SYSTEMS: list[tuple[str, str, TranslateConfig]] = [
    ("apertium eng-spa", "es", TranslateConfig(backend="apertium")),
    (
        "bergamot en-pt + apertium pt-es",
        "es",
        TranslateConfig(backend="bergamot", pivot="pt", pivot_backend="apertium"),
    ),
    ("apertium eng-spa + es-pt", "pt", TranslateConfig(backend="apertium")),
    ("bergamot en-pt (raw engine)", "pt", TranslateConfig(backend="bergamot")),
    ("apertium eng-spa + es-fr", "fr", TranslateConfig(backend="apertium")),
    (
        "bergamot en-pt + apertium pt-es-fr",
        "fr",
        TranslateConfig(backend="bergamot", pivot="pt", pivot_backend="apertium"),
    ),
    ("apertium eng-spa + spa-ita", "it", TranslateConfig(backend="apertium")),
    (
        "bergamot en-pt + apertium pt-es-it",
        "it",
        TranslateConfig(backend="bergamot", pivot="pt", pivot_backend="apertium"),
    ),
    *[("llama", lang, TranslateConfig(backend="llama")) for lang in TARGETS],
]


def load_set(path: Path) -> dict[str, list[str]]:
    """The file's columns by language code (the header row names them); every row must fill every column."""
    text = path.read_text(encoding="utf-8")
    header, *rows = (line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if SOURCE not in header or len(set(header)) != len(header):
        raise SystemExit(f"{path}: the header needs unique language codes, {SOURCE!r} among them: {header}")
    for number, row in enumerate(rows, 2):
        if len(row) != len(header) or not all(cell.strip() for cell in row):
            raise SystemExit(f"{path}: row {number} has {len(row)} cells for {len(header)} columns (or an empty one)")
    return {code: [row[i] for row in rows] for i, code in enumerate(header)}


@functools.cache
def bleu_tokenizer(lang: str) -> str:
    """sacrebleu's tokenizer for BLEU in this language, among those that work offline here."""
    wanted = {"zh": ["zh"], "ja": ["ja-mecab", "char"], "ko": ["ko-mecab", "13a"]}.get(lang, ["13a"])
    for name in wanted:
        try:
            sacrebleu.BLEU(tokenize=name).corpus_score(["テスト 시험"], [["テスト 시험"]])
        except Exception:  # a tokenizer whose extra package is not installed raises on first use
            continue
        return name
    return "char"


def skip_reason(cfg: TranslateConfig) -> str | None:
    """Why this system cannot run in this checkout (a backend it does not have), else None."""
    names = [cfg.backend] + ([cfg.pivot_backend or cfg.backend] if cfg.pivot else [])
    unknown = [name for name in names if name not in translate.BACKENDS]
    if not unknown:
        return None
    return f"unknown backend {', '.join(unknown)} (this checkout has {', '.join(translate.BACKENDS)})"


def run(label: str, target: str, cfg: TranslateConfig, data: dict[str, list[str]]) -> dict:
    sources, refs = data[SOURCE], data[target]
    started = time.perf_counter()
    translator = translate.translator_for(cfg, SOURCE, target)
    translator.translate([WARM_UP])
    loaded = time.perf_counter()
    hyps = translator.translate(sources)
    seconds = time.perf_counter() - loaded
    speech_s = sum(len(s) for s in sources) / CHARS_PER_SECOND
    tokenize = bleu_tokenizer(target)
    return {
        "language": target,
        "system": label,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
        "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score,
        "bleu_tokenize": tokenize,
        "load_s": loaded - started,
        "seconds": seconds,
        "speech_s": speech_s,
        "s_per_speech_s": seconds / speech_s,
        "sentences": len(sources),
        "lines": [{"en": s, "ref": r, "hyp": h} for s, r, h in zip(sources, refs, hyps, strict=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="heldout", help="default: heldout (mt_en.tsv)")
    parser.add_argument("--languages", help="comma-separated target codes (default: every column of the set)")
    parser.add_argument("--systems", help="comma-separated words: only the systems whose label has one (apertium)")
    parser.add_argument("--show", help="print every line for this target language (stderr)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows (with every line) here")
    args = parser.parse_args()
    path = SETS[args.set]
    data = load_set(path)
    available = [code for code in data if code != SOURCE]
    languages = args.languages.split(",") if args.languages else available
    if missing := [lang for lang in languages if lang not in available]:
        parser.error(f"{path.name} has no references for {', '.join(missing)}; it has {', '.join(available)}")
    settings = load_settings()
    systems = [s for s in SYSTEMS if s[1] in languages] + [
        (f"configured default ({lang}.yaml)", lang, settings.languages[lang].translate)
        for lang in languages
        if lang in settings.languages
    ]
    if args.systems:
        words = args.systems.split(",")
        systems = [s for s in systems if any(word in s[0] for word in words)]
    systems.sort(key=lambda s: languages.index(s[1]))  # grouped by language, in the order asked for
    sentences = len(data[SOURCE])
    speech_s = sum(len(s) for s in data[SOURCE]) / CHARS_PER_SECOND
    print(
        f"{sentences} sentences of everyday English speech ({path.relative_to(ROOT)}, about {speech_s:.0f} s of "
        f"speech at {CHARS_PER_SECOND:g} characters per second), references by hand\n"
    )
    print("| language | system | chrF | BLEU | load s | seconds | s / s speech |")
    print("|---|---|---|---|---|---|---|")
    results, skipped = [], []
    for label, target, cfg in systems:
        if reason := skip_reason(cfg):
            skipped.append(f"{target} {label}: {reason}")
            print(f"skipped {target} {label}: {reason}", file=sys.stderr, flush=True)
            continue
        try:
            result = run(label, target, cfg, data)
        except Exception as exc:  # one system that cannot be built here must not end the table
            note = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            skipped.append(f"{target} {label}: {note}")
            print(f"skipped {target} {label}: {note}", file=sys.stderr, flush=True)
            continue
        results.append(result)
        print(
            f"| {target} | {label} | {result['chrf']:.1f} | {result['bleu']:.1f} | {result['load_s']:.2f} "
            f"| {result['seconds']:.2f} | {result['s_per_speech_s']:.3f} |",
            flush=True,
        )
        if args.show == target:
            for line in result["lines"]:
                print(f"    {line['en']}\n    ref: {line['ref']}\n    hyp: {line['hyp']}", file=sys.stderr)
    tokenizers = {r["language"]: r["bleu_tokenize"] for r in results if r["bleu_tokenize"] != "13a"}
    if tokenizers:
        print("\nBLEU tokenizer other than 13a: " + ", ".join(f"{k} {v}" for k, v in tokenizers.items()))
    if skipped:
        print("\nSkipped: " + "; ".join(skipped))
    if args.json:
        report = {"set": args.set, "file": str(path.relative_to(ROOT)), "rows": results, "skipped": skipped}
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
