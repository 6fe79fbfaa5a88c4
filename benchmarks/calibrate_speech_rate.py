"""Measure how fast each TTS backend speaks each language, for the length estimates of the translate stage.

For every (backend, language) it speaks up to N sentences at speed 1.0 through the TTS stage (dubbing.tts, which
trims leading and trailing silence) with the voice a run uses by default (the backend built from the language's
record, tuned by its `tts.options`), and prints the rate in syllables, letters and non-space characters per second
and how well each predicts a single line's length (median absolute relative error). The characters per second are
what a language record stores: the script ends with the `tts.rates` line to put into each
configs/languages/<code>.yaml.

    .venv/bin/python benchmarks/calibrate_speech_rate.py [--sentences 15] [--backends espeak,kokoro]

Sentences: the hand-written references of benchmarks/data/mt_en.tsv for es and pt, the English sources for en,
Apertium renderings for ca/gl (from English) and fr/it (from the Spanish references): their translation
quality does not matter here, only that they are text in that language. German is written out below; ru, zh, ja,
hi, ko, ar, tr, pl and nl come from benchmarks/data/speech_sentences.yaml (twelve hand-written sentences each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from dubbing import translate, tts
from dubbing.config import LanguageConfig, available_languages, load_settings

ROOT = Path(__file__).resolve().parent.parent

GERMAN = [
    "Guten Morgen, wie hast du geschlafen?",
    "Ich gehe in den Supermarkt, brauchst du etwas?",
    "Kannst du mir helfen, diese Kisten zu tragen?",
    "Wir treffen uns um acht Uhr im Restaurant.",
    "Ich weiß nicht, wo ich meine Schlüssel gelassen habe.",
    "Das Wetter ist heute wunderschön.",
    "Meine Schwester wohnt in einer kleinen Stadt an der Küste.",
    "Vielen Dank für deine Hilfe.",
    "Wann fährt der Zug ab?",
    "Ich arbeite seit drei Jahren hier.",
    "Könntest du bitte etwas langsamer sprechen?",
    "Die Kinder spielen im Garten.",
    "Ich glaube, es wird heute Nachmittag regnen.",
    "Wir müssen Brot, Milch und Eier kaufen.",
    "Sie hat mich gestern angerufen, um mir die Neuigkeit zu erzählen.",
]
UNITS = {"syllables": tts.count_syllables, "letters": tts.count_letters, "chars": tts.count_chars}
# Languages whose test sentences Apertium writes, and the language it writes them from (the benchmark file has
# hand-written English, Spanish and Portuguese).
APERTIUM_FROM = {"ca": "en", "gl": "en", "fr": "es", "it": "es"}

Speak = Callable[[str], float]  # text -> seconds of speech


def load_sentences(languages: list[str], n: int, skip: int = 0) -> dict[str, list[str]]:
    """Sentences `skip` to `skip + n` of the benchmark file for each of `languages` that has some."""
    header, *rows = (
        line.split("\t")
        for line in (ROOT / "benchmarks/data/mt_en.tsv").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )  # the first row names the columns by language code
    rows = rows[skip : skip + n]
    en, es, pt = ([r[header.index(code)] for r in rows] for code in ("en", "es", "pt"))
    written = {"en": en, "es": es, "pt": pt, "de": GERMAN[skip : skip + n]}
    spoken = yaml.safe_load((ROOT / "benchmarks/data/speech_sentences.yaml").read_text(encoding="utf-8"))
    written |= {lang: lines[skip : skip + n] for lang, lines in spoken.items()}
    for lang in languages:
        if lang in APERTIUM_FROM:
            source = APERTIUM_FROM[lang]
            written[lang] = translate.build_translator("apertium", source=source, target=lang).translate(
                written[source]
            )
    return {lang: written[lang] for lang in languages if written.get(lang)}


def speaker(cfg: LanguageConfig, backend: str) -> Speak | None:
    """Speech through the TTS stage itself (silence trimmed there), with the voice a run would use by default;
    None when the backend cannot speak the language (it neither lists it nor has options for it in the record)."""
    synth = tts.backend_for(cfg, backend)
    if cfg.code not in synth.languages() and backend not in cfg.tts.options:
        return None

    def seconds(text: str) -> float:
        audio, rate = synth.synthesize(text, language=cfg.code)
        return len(audio) / rate

    return seconds


def measure(speak: Speak, sentences: list[str]) -> dict[str, float]:
    seconds = [speak(s) for s in sentences]
    result = {"s": sum(seconds)}
    for unit, count in UNITS.items():
        counts = [count(s) for s in sentences]
        rate = sum(counts) / sum(seconds)
        result[unit] = rate
        result[f"{unit}_err"] = statistics.median(abs(n / rate - s) / s for n, s in zip(counts, seconds, strict=True))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=15)
    parser.add_argument("--backends", default="espeak,kokoro,piper")
    parser.add_argument("--languages", default=",".join(available_languages()), help="default: every record")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="instead, check the records' rates (tts.rates) on the sentences not used to set them",
    )
    args = parser.parse_args()
    settings = load_settings()
    languages = [settings.for_language(code) for code in args.languages.split(",")]
    if args.holdout:
        return holdout(args, languages)
    corpus = load_sentences([cfg.code for cfg in languages], args.sentences)
    head = " | ".join(f"{u}/s" for u in UNITS) + " | " + " | ".join(f"line error ({u})" for u in UNITS)
    print(f"| TTS | language | sentences | audio s | {head} |")
    print("|---|---|---|---|" + "---|" * 2 * len(UNITS))
    measured: dict[str, dict[str, float]] = {}
    for backend in args.backends.split(","):
        for cfg in languages:
            sentences = corpus.get(cfg.code)
            speak = speaker(cfg, backend) if sentences else None
            if speak is None or not sentences:
                continue
            started = time.time()
            m = measure(speak, sentences)
            measured.setdefault(cfg.code, {})[backend] = round(m["chars"], 2)
            rates = " | ".join(f"{m[u]:.2f}" for u in UNITS)
            errors = " | ".join(f"{m[u + '_err']:.1%}" for u in UNITS)
            print(f"| {backend} | {cfg.code} | {len(sentences)} | {m['s']:.1f} | {rates} | {errors} |", flush=True)
            print(f"  ({time.time() - started:.0f}s wall)", file=sys.stderr)
    print("\nFor each record (the measured rates over the ones it holds):\n")
    for cfg in languages:
        if cfg.code in measured:
            rates = cfg.tts.rates | measured[cfg.code]
            now = ", ".join(f"{b}: {r:g}" for b, r in rates.items())
            print(f"configs/languages/{cfg.code}.yaml  tts:  rates: {{{now}}}")


def holdout(args: argparse.Namespace, languages: list[LanguageConfig]) -> None:
    """How well the records' rates predict lines they were not measured on (German has none left)."""
    corpus = load_sentences([cfg.code for cfg in languages], 100, skip=args.sentences)
    print("| TTS | language | held-out lines | median error | lines within 15% | total predicted / spoken s |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for cfg in languages:
            rate, sentences = cfg.tts.rates.get(backend), corpus.get(cfg.code)
            speak = speaker(cfg, backend) if rate and sentences else None
            if speak is None or not rate or not sentences:
                continue
            spoken = [speak(s) for s in sentences]
            predicted = [tts.estimate_seconds(s, rate) for s in sentences]
            errors = [abs(p - s) / s for p, s in zip(predicted, spoken, strict=True)]
            within = sum(e <= 0.15 for e in errors) / len(errors)
            print(
                f"| {backend} | {cfg.code} | {len(errors)} | {statistics.median(errors):.1%} | {within:.0%} | "
                f"{sum(predicted):.1f} / {sum(spoken):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
