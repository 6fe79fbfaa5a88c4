"""Translation quality and speed on everyday speech: chrF (sacrebleu) against hand-written references.

    .venv/bin/python benchmarks/bench_translate.py            # every offline system, markdown table
    .venv/bin/python benchmarks/bench_translate.py --show es  # also print each line for one language

Data: benchmarks/data/mt_en.tsv (English sentences of everyday speech with Spanish, Portuguese, French and
Italian references written by hand for this benchmark). Systems are built as a dub run
builds them (`translate.translator_for`), glossary and orthography fixes included, so the numbers are the
product's. Times are wall-clock on this machine for the whole set, model loading included: they are inflated
when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sacrebleu

from dubbing import translate
from dubbing.config import TranslateConfig, load_settings

ROOT = Path(__file__).resolve().parent.parent


DATA = ROOT / "benchmarks/data/mt_en.tsv"
COLUMNS = {"es": 1, "pt": 2, "fr": 3, "it": 4}
# (label, target, config); "configured default" is what configs/languages/<lang>.yaml says today.
SYSTEMS = [
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
]


def load_rows() -> list[list[str]]:
    rows = [
        line.split("\t")
        for line in DATA.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(len(r) == 1 + len(COLUMNS) for r in rows), f"every row needs en and {', '.join(COLUMNS)}"
    return rows


def run(label: str, target: str, cfg: TranslateConfig, rows: list[list[str]]) -> tuple[dict, list[str]]:
    sources = [r[0] for r in rows]
    refs = [r[COLUMNS[target]] for r in rows]
    started = time.perf_counter()
    translator = translate.translator_for(cfg, "en", target)
    hyps = translator.translate(sources)
    seconds = time.perf_counter() - started
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    return {"label": label, "target": target, "chrf": chrf, "bleu": bleu, "seconds": seconds}, hyps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", help="print every line for this target language")
    args = parser.parse_args()
    rows = load_rows()
    settings = load_settings()
    systems = SYSTEMS + [
        (f"configured default ({lang}.yaml)", lang, settings.for_language(lang).translate) for lang in COLUMNS
    ]
    print(f"{len(rows)} sentences of everyday English speech, references by hand ({DATA.relative_to(ROOT)})\n")
    print("| system | target | chrF | BLEU | seconds (all lines, with loading) |")
    print("|---|---|---|---|---|")
    for label, target, cfg in systems:
        result, hyps = run(label, target, cfg, rows)
        print(
            f"| {result['label']} | {target} | {result['chrf']:.1f} | {result['bleu']:.1f} | {result['seconds']:.2f} |",
            flush=True,
        )
        if args.show == target:
            for row, hyp in zip(rows, hyps, strict=True):
                print(f"    {row[0]}\n    ref: {row[COLUMNS[target]]}\n    hyp: {hyp}", file=sys.stderr)


if __name__ == "__main__":
    main()
