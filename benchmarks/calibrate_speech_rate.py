"""Measure how fast each TTS backend speaks each language, for the length estimates of the translate stage.

For every (backend, language) it speaks up to N sentences at speed 1.0 through the TTS stage (dubbing.tts, which
trims leading and trailing silence) with the voice a run uses by default, and prints the rate in syllables,
letters and non-space characters per second (the last is stored in dubbing/translate/isochrony.py), and how well
each predicts a single line's length (median absolute relative error).

    .venv/bin/python benchmarks/calibrate_speech_rate.py [--sentences 15] [--backends espeak,kokoro]

Sentences: the hand-written references of benchmarks/data/mt_en.tsv for es and pt, the English sources for en,
Apertium renderings for ca/gl (from English) and fr/it (from the Spanish references): their translation
quality does not matter here, only that they are text in that language. German is written out below.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dubbing import translate  # noqa: E402
from dubbing.translate import isochrony  # noqa: E402
from dubbing.translate.isochrony import count_letters, count_syllables  # noqa: E402

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
ESPEAK_VOICE = {"en": "en-us", "es": "es", "pt": "pt-br", "fr": "fr", "it": "it", "de": "de", "ca": "ca", "gl": "es"}
UNITS = {"syllables": count_syllables, "letters": count_letters, "chars": lambda s: len(s.replace(" ", ""))}


def load_sentences(n: int, skip: int = 0) -> dict[str, list[str]]:
    """Sentences `skip` to `skip + n` of the benchmark file, per language."""
    rows = [
        line.rstrip("\n").split("\t")
        for line in (ROOT / "benchmarks/data/mt_en.tsv").read_text(encoding="utf-8").splitlines(True)
        if line.strip() and not line.startswith("#")
    ][skip : skip + n]
    en, es, pt = ([r[i] for r in rows] for i in range(3))
    return {
        "en": en,
        "es": es,
        "pt": pt,
        "ca": translate.get_translator("apertium", source="en", target="ca").translate(en),
        "gl": translate.get_translator("apertium", source="en", target="gl").translate(en),
        "fr": translate.get_translator("apertium", source="es", target="fr").translate(es),
        "it": translate.get_translator("apertium", source="es", target="it").translate(es),
        "de": GERMAN[skip : skip + n],
    }


def speaker(backend: str):
    """Speech through the TTS stage itself (silence trimmed there), with the voice a run would use by default."""
    from dubbing import tts

    synth = tts.get_synthesizer(backend)
    languages = set(synth.languages()) if backend != "espeak" else set(ESPEAK_VOICE)

    def seconds(text: str, lang: str) -> float:
        # espeak: the tuned voice and rate a run uses (tts.ESPEAK_TUNING, MBROLA_TUNING) where there is one
        voice = ESPEAK_VOICE[lang] if backend == "espeak" and lang not in tts.ESPEAK_TUNING else None
        audio, rate = synth.synthesize(text, language=lang, voice=voice)
        return len(audio) / rate

    return seconds, languages


def measure(speak, sentences: list[str], lang: str) -> dict[str, float]:
    seconds = [speak(s, lang) for s in sentences]
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
    parser.add_argument("--languages", default="en,es,pt,fr,it,de,ca,gl")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="instead, check the stored rates (dubbing/translate/isochrony.py) on the sentences not used to set them",
    )
    args = parser.parse_args()
    if args.holdout:
        return holdout(args)
    corpus = load_sentences(args.sentences)
    head = " | ".join(f"{u}/s" for u in UNITS) + " | " + " | ".join(f"line error ({u})" for u in UNITS)
    print(f"| TTS | language | sentences | audio s | {head} |")
    print("|---|---|---|---|" + "---|" * 2 * len(UNITS))
    for backend in args.backends.split(","):
        speak, languages = speaker(backend)
        for lang in args.languages.split(","):
            if lang not in languages:
                continue
            started = time.time()
            m = measure(speak, corpus[lang], lang)
            rates = " | ".join(f"{m[u]:.2f}" for u in UNITS)
            errors = " | ".join(f"{m[u + '_err']:.1%}" for u in UNITS)
            print(f"| {backend} | {lang} | {len(corpus[lang])} | {m['s']:.1f} | {rates} | {errors} |", flush=True)
            print(f"  ({time.time() - started:.0f}s wall)", file=sys.stderr)


def holdout(args: argparse.Namespace) -> None:
    """How well the stored constants predict lines they were not measured on (German has none left)."""
    corpus = load_sentences(100, skip=args.sentences)
    print("| TTS | language | held-out lines | median error | lines within 15% | total predicted / spoken s |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        speak, languages = speaker(backend)
        for lang in args.languages.split(","):
            if lang not in languages or not corpus[lang] or lang not in isochrony.CHAR_RATES.get(backend, {}):
                continue
            spoken = [speak(s, lang) for s in corpus[lang]]
            predicted = [isochrony.estimate_seconds(s, lang, backend) for s in corpus[lang]]
            errors = [abs(p - s) / s for p, s in zip(predicted, spoken, strict=True)]
            within = sum(e <= 0.15 for e in errors) / len(errors)
            print(
                f"| {backend} | {lang} | {len(errors)} | {statistics.median(errors):.1%} | {within:.0%} | "
                f"{sum(predicted):.1f} / {sum(spoken):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
