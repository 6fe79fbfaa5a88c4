"""Voice stage quality and speed: intelligibility, timing fit, speaker similarity, real-time factor.

    .venv/bin/python benchmarks/bench_voice.py            # all sections, markdown tables
    .venv/bin/python benchmarks/bench_voice.py --only wer,timing

Sections:
- wer: sentences in es, pt, it spoken by kokoro (its default voice, jm_kumo) and espeak-ng (its default voice and
  rate per language, from the language record's tts.options.espeak: the first MBROLA voice installed, else the
  formant voice; WER_ESPEAK_ALL=1 adds the formant voice and the other offered MBROLA voices, and the last
  matching voice and the f5 variant moved in pitch and formants as matching would for a female speaker;
  WER_BACKENDS=espeak runs one backend), back-transcribed with whisper base (faster-whisper int8, language
  given); word error rate (jiwer; lowercase, punctuation stripped) per backend and language.
- timing: musetalk_eng.wav (60 s) transcribed (whisper base), translated to Spanish (the configured es
  translator), voices matched and synthesised with kokoro and fitted; plus a synthetic 10-minute script (two
  speakers, espeak-ng, lines every ~4 s). Share of lines whose sound starts within 50 ms of their slot, the
  largest speed factor, and how far the last sound of the dub voice track is from the fitted timeline's end.
  The real-time factor of match + synthesise + fit on the 60 s file is (wall seconds) / 60, measured as a
  machine's first run: the probe clips cached on disk by earlier runs are moved aside meanwhile.
- ahead: the voice stage speaking the next line on a second thread while it fits this one (a backend that declares
  'concurrent') against one line at a time, on musetalk_eng's Spanish script: syntheses, wall and CPU seconds.
- similarity: CAM++ cosine between each real speaker in ../shared/media and their matched kokoro Spanish voice
  (default voice, closest bank voice, after pitch/formant matching), and for the two speakers of
  pyannote_sample.wav the similarity of their two matched voices to each other.
- similarity-scale: what 0.70 means: the same real speaker's held-out speech against their reference clip, and the
  closest bank voice on one probe sentence against five.
- espeak-tune: espeak-ng voices (formant variants, and the installed MBROLA voices) and rates scored on
  CALIBRATION sentences (not the wer ones); the best per language goes into its record,
  configs/languages/<code>.yaml tts.options.espeak (`voice` and `wpm` for the formant voice, `mbrola` for the
  MBROLA voices), and is then reported by `wer` on the held-out SENTENCES.
- probes (not a measurement): rewrite dubbing/data/kokoro_probes.npz, the kokoro bank's probe embeddings.
Timings are wall-clock on a shared 2-core machine: inflated when other work runs at the same time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from dubbing import asr, backends, media, models, speaker_embedding, tts, voice
from dubbing.config import LanguageConfig, load_settings
from dubbing.layout import layout_for
from dubbing.types import Script, ScriptLine, SourceSpeaker, VoiceMatch

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"

SENTENCES = {
    "es": [
        "Buenos días a todos, gracias por venir a la reunión de hoy.",
        "El tren sale de la estación a las ocho y media de la mañana.",
        "Mi hermana trabaja en un hospital cerca del centro de la ciudad.",
        "Necesitamos terminar el proyecto antes del final del mes.",
        "Los niños juegan en el parque cuando hace buen tiempo.",
        "¿Puedes ayudarme a encontrar las llaves del coche?",
        "Este libro cuenta la historia de una familia muy antigua.",
        "Vamos a cenar en el restaurante nuevo de la plaza.",
        "Por favor, apaga la luz cuando salgas de la habitación.",
        "Ayer perdí el autobús y llegué tarde al trabajo.",
        "¿Cuánto cuesta un billete de ida y vuelta a Madrid?",
        "Mi abuelo cultiva tomates y pimientos en su jardín.",
        "La profesora explicó el ejercicio dos veces con mucha paciencia.",
        "Hemos alquilado un piso pequeño con vistas al mar.",
        "El concierto se canceló por culpa de la tormenta.",
        "Siempre tomo un café con leche antes de empezar el día.",
        "Los vecinos organizan una fiesta en la calle cada verano.",
        "No olvides llevar el paraguas, parece que va a llover.",
        "Esta empresa fabrica bicicletas eléctricas desde hace diez años.",
        "Prefiero leer el periódico en papel que en la pantalla.",
    ],
    "pt": [
        "Bom dia a todos, obrigado por virem à reunião de hoje.",
        "O trem sai da estação às oito e meia da manhã.",
        "A minha irmã trabalha num hospital perto do centro da cidade.",
        "Precisamos terminar o projeto antes do fim do mês.",
        "As crianças brincam no parque quando faz bom tempo.",
        "Você pode me ajudar a encontrar as chaves do carro?",
        "Este livro conta a história de uma família muito antiga.",
        "Vamos jantar no restaurante novo da praça.",
        "Por favor, apague a luz quando sair do quarto.",
        "Ontem eu perdi o ônibus e cheguei atrasado ao trabalho.",
        "Quanto custa uma passagem de ida e volta para São Paulo?",
        "Meu avô planta tomates e pimentões no quintal.",
        "A professora explicou o exercício duas vezes com muita paciência.",
        "Nós alugamos um apartamento pequeno com vista para o mar.",
        "O show foi cancelado por causa da tempestade.",
        "Eu sempre tomo um café com leite antes de começar o dia.",
        "Os vizinhos fazem uma festa na rua todo verão.",
        "Não esqueça o guarda-chuva, parece que vai chover.",
        "Esta empresa fabrica bicicletas elétricas há dez anos.",
        "Prefiro ler o jornal no papel do que na tela.",
    ],
    "it": [
        "Buongiorno a tutti, grazie per essere venuti alla riunione di oggi.",
        "Il treno parte dalla stazione alle otto e mezza del mattino.",
        "Mia sorella lavora in un ospedale vicino al centro della città.",
        "Dobbiamo finire il progetto prima della fine del mese.",
        "I bambini giocano nel parco quando fa bel tempo.",
        "Puoi aiutarmi a trovare le chiavi della macchina?",
        "Questo libro racconta la storia di una famiglia molto antica.",
        "Andiamo a cenare nel nuovo ristorante della piazza.",
        "Per favore, spegni la luce quando esci dalla stanza.",
        "Ieri ho perso l'autobus e sono arrivato tardi al lavoro.",
        "Quanto costa un biglietto di andata e ritorno per Roma?",
        "Mio nonno coltiva pomodori e peperoni nel suo giardino.",
        "La maestra ha spiegato l'esercizio due volte con molta pazienza.",
        "Abbiamo affittato un piccolo appartamento con vista sul mare.",
        "Il concerto è stato annullato a causa del temporale.",
        "Prendo sempre un caffè prima di cominciare la giornata.",
        "I vicini organizzano una festa in strada ogni estate.",
        "Non dimenticare l'ombrello, sembra che stia per piovere.",
        "Questa azienda produce biciclette elettriche da dieci anni.",
        "Preferisco leggere il giornale di carta piuttosto che sullo schermo.",
    ],
}

# espeak-ng's voice and rate per language are chosen on these (section espeak-tune) and reported on SENTENCES
# above, which the choice never saw.
CALIBRATION = {
    "es": [
        "La biblioteca cierra a las seis los sábados y los domingos.",
        "Mañana lloverá en el norte y hará sol en el sur del país.",
        "Compré pan, queso y fruta en el mercado de la esquina.",
        "El médico me dijo que descansara durante una semana.",
        "Nuestro equipo ganó el partido en el último minuto.",
        "La película empieza tarde, así que podemos cenar antes.",
        "Escribe tu nombre y tu dirección en la primera página.",
        "El museo tiene una colección de pinturas muy famosa.",
        "El cartero deja las cartas en el buzón cada mañana.",
        "Mi primo estudia medicina en la universidad de Sevilla.",
        "Hace demasiado calor para salir a correr a mediodía.",
        "Ella siempre lleva una chaqueta azul cuando viaja.",
        "Los precios de la fruta han subido mucho este invierno.",
        "El perro de mis vecinos ladra toda la noche.",
        "Tenemos que llamar al fontanero porque la ducha gotea.",
        "¿Sabes a qué hora abre la farmacia los domingos?",
        "Mi padre cocina una paella deliciosa los fines de semana.",
        "El avión aterrizó sin problemas a pesar del viento.",
        "Los estudiantes preparan el examen en la biblioteca.",
        "Nos vemos delante del cine dentro de media hora.",
    ],
    "pt": [
        "A biblioteca fecha às seis horas aos sábados e domingos.",
        "Amanhã vai chover no norte e fazer sol no sul do país.",
        "Comprei pão, queijo e fruta no mercado da esquina.",
        "O médico disse que eu devia descansar durante uma semana.",
        "A nossa equipa ganhou o jogo no último minuto.",
        "O filme começa tarde, então podemos jantar antes.",
        "Escreve o teu nome e a tua morada na primeira página.",
        "O museu tem uma coleção de pinturas muito famosa.",
        "O carteiro deixa as cartas na caixa de correio toda manhã.",
        "Meu primo estuda medicina na universidade do Recife.",
        "Está quente demais para correr ao meio-dia.",
        "Ela sempre usa uma jaqueta azul quando viaja.",
        "Os preços das frutas subiram muito neste inverno.",
        "O cachorro dos meus vizinhos late a noite toda.",
        "Precisamos chamar o encanador porque o chuveiro está pingando.",
        "Você sabe a que horas a farmácia abre no domingo?",
        "Meu pai faz uma feijoada deliciosa nos fins de semana.",
        "O avião pousou sem problemas apesar do vento.",
        "Os estudantes se preparam para a prova na biblioteca.",
        "A gente se encontra na frente do cinema daqui a meia hora.",
    ],
    "it": [
        "La biblioteca chiude alle sei il sabato e la domenica.",
        "Domani pioverà al nord e ci sarà il sole al sud del paese.",
        "Ho comprato pane, formaggio e frutta al mercato all'angolo.",
        "Il medico mi ha detto di riposare per una settimana.",
        "La nostra squadra ha vinto la partita all'ultimo minuto.",
        "Il film comincia tardi, quindi possiamo cenare prima.",
        "Scrivi il tuo nome e il tuo indirizzo sulla prima pagina.",
        "Il museo ha una collezione di quadri molto famosa.",
        "Il postino lascia le lettere nella cassetta ogni mattina.",
        "Mio cugino studia medicina all'università di Bologna.",
        "Fa troppo caldo per andare a correre a mezzogiorno.",
        "Lei porta sempre una giacca blu quando viaggia.",
        "I prezzi della frutta sono aumentati molto quest'inverno.",
        "Il cane dei miei vicini abbaia tutta la notte.",
        "Dobbiamo chiamare l'idraulico perché la doccia perde.",
        "Sai a che ora apre la farmacia la domenica?",
        "Mio padre cucina un risotto delizioso nel fine settimana.",
        "L'aereo è atterrato senza problemi nonostante il vento.",
        "Gli studenti preparano l'esame in biblioteca.",
        "Ci vediamo davanti al cinema tra mezz'ora.",
    ],
}


def _wer_of(
    model, synth, lang: str, voice_name: str, sentences: list[str], tmp: Path, speed: float = 1.0, shift=None
) -> float:
    """Each sentence heard as it sits in a dub voice track: with half a second of silence either side (a clip that
    starts at its first sample makes whisper drop or mishear the first word); `shift`: a VoiceMatch whose pitch,
    formant and EQ shifts are applied first, as matching would."""
    import jiwer

    refs, hyps = [], []
    for i, text in enumerate(sentences):
        audio, rate = synth.synthesize(text, language=lang, voice=voice_name, speed=speed)
        if shift is not None:
            audio = voice.shift_voice(audio, rate, shift)
        path = tmp / f"{synth.name}-{lang}-{i}.wav"
        sf.write(str(path), np.pad(audio, rate // 2), rate)
        segments, _ = model.transcribe(str(path), language=lang, beam_size=5)
        refs.append(normalise(text))
        hyps.append(normalise(" ".join(seg.text for seg in segments)))
    return float(jiwer.wer(refs, hyps))


def bench_espeak_tune(tmp: Path) -> list[str]:
    """espeak-ng voices and rates on the calibration sentences (whisper base WER): the lowest formant voice is what
    the language record's tts.options.espeak `voice` and `wpm` hold, the lowest MBROLA voices what its `mbrola`
    holds. Formant variants are scored with TUNE_FORMANT=1 (slow: ten per language); by default only the tuned
    formant voice is, as the reference. TUNE_AROUND=1 instead scores only the tuned voices, at their rate and 10
    and 20 wpm either side."""
    model = whisper()
    settings = load_settings()
    rows = ["| language | voice | words/min | WER (calibration) |", "|---|---|---|---|"]
    bases = {"es": ["es"], "pt": ["pt", "pt-br"], "it": ["it"]}
    variants = ["", "+m3", "+f2", "+klatt", "+klatt3"]

    for lang in os.environ.get("TUNE_LANGUAGES", "es,pt,it").split(","):
        synth = espeak_for(settings.for_language(lang))

        def score(lang: str, v: str, wpm: int, synth: tts.EspeakSynthesizer = synth) -> float:
            speed = wpm / synth.wpm(lang, v)  # synthesize speaks at the voice's tuned rate times speed
            return _wer_of(model, synth, lang, v, CALIBRATION[lang], tmp, speed)

        formant, mbrola = {}, {}
        tuned = (synth.formant_voice(lang), synth.wpm(lang, synth.formant_voice(lang)))
        formant[tuned] = score(lang, *tuned)
        if os.environ.get("TUNE_FORMANT"):
            for v in [base + var for base in bases[lang] for var in variants]:
                formant[(v, synth.base_wpm)] = score(lang, v, synth.base_wpm)
            for v, _ in sorted(formant, key=formant.get)[:2]:
                formant[(v, int(synth.base_wpm * 0.8))] = score(lang, v, int(synth.base_wpm * 0.8))
        if os.environ.get("TUNE_AROUND"):  # only the tuned voices, 10 and 20 wpm either side of their rate
            tuned_voices = [tuned] + [(v, synth.wpm(lang, v)) for v in synth.installed_mbrola(lang)]
            for v, rate in tuned_voices:
                for wpm in (rate - 20, rate - 10, rate + 10, rate + 20):
                    (mbrola if v.startswith("mb-") else formant)[(v, wpm)] = score(lang, v, wpm)
                if v.startswith("mb-"):
                    mbrola[(v, rate)] = score(lang, v, rate)
        else:
            for v in synth.mbrola_voices(lang):
                mbrola[(v, synth.base_wpm)] = score(lang, v, synth.base_wpm)
            for v, _ in sorted(mbrola, key=mbrola.get)[:2]:
                for wpm in (120, 140, 185):
                    mbrola[(v, wpm)] = score(lang, v, wpm)
        for scores in (formant, mbrola):
            for (v, wpm), w in sorted(scores.items(), key=lambda kv: (kv[1], -kv[0][1]))[:12]:
                rows.append(f"| {lang} | {v} | {wpm} | {w:.3f} |")
                print(rows[-1], flush=True)
    return rows


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def whisper():
    from faster_whisper import WhisperModel

    return WhisperModel(str(models.resolve("whisper-base")), device="cpu", compute_type="int8", cpu_threads=2)


def bench_wer(tmp: Path) -> list[str]:
    """kokoro and espeak-ng's default voice per language (espeak: its MBROLA voice where tuned and installed); for
    espeak also its tuned formant voice and the other offered MBROLA voices, each at its tuned rate. Each backend
    is built from the language's record, as a run builds it."""
    model = whisper()
    settings = load_settings()
    rows = ["| backend | voice | language | WER | sentences |", "|---|---|---|---|---|"]
    extra = os.environ.get("WER_ESPEAK_ALL")  # 1: the formant and the other MBROLA voices as well
    wanted = os.environ.get("WER_BACKENDS", "kokoro,espeak").split(",")
    for backend in [b for b in ("kokoro", "espeak") if b in wanted]:
        for lang, sentences in SENTENCES.items():
            cfg = settings.for_language(lang)
            synth = espeak_for(cfg) if backend == "espeak" else tts.backend_for(cfg, backend)
            espeak = synth if isinstance(synth, tts.EspeakSynthesizer) else None
            voices_for = [synth.default_voice(lang)] + (_espeak_alternatives(espeak, lang) if espeak and extra else [])
            for voice_name in voices_for:
                wer = _wer_of(model, synth, lang, voice_name, sentences, tmp)
                wpm = f", {espeak.wpm(lang, voice_name)} wpm" if espeak else ""
                rows.append(f"| {backend} | {voice_name}{wpm} | {lang} | {wer:.3f} | {len(sentences)} |")
                print(rows[-1], flush=True)
            if espeak and extra:  # a male voice moved to a female speaker, as matching does it
                for voice_name, pitch, formant in ((synth.voices(lang)[-1], 200.0, 1.15), (f"{lang}+f5", 167.0, 1.0)):
                    shift = VoiceMatch(speaker="x", backend="espeak", voice=voice_name, pitch_hz=pitch,
                                       formant_ratio=formant)  # fmt: skip
                    wer = _wer_of(model, synth, lang, voice_name, sentences, tmp, shift=shift)
                    rows.append(f"| {backend} | {shift.label} | {lang} | {wer:.3f} | {len(sentences)} |")
                    print(rows[-1], flush=True)
    return rows


def espeak_for(cfg: LanguageConfig) -> tts.EspeakSynthesizer:
    """espeak-ng tuned by the language record (tts.options.espeak), with its tuning methods (wpm, formant_voice,
    installed_mbrola) in view."""
    synth = tts.backend_for(cfg, "espeak")
    assert isinstance(synth, tts.EspeakSynthesizer)
    return synth


def _espeak_alternatives(synth: tts.EspeakSynthesizer, lang: str) -> list[str]:
    """The tuned formant voice and the offered MBROLA voices other than the default, where they differ."""
    default = synth.default_voice(lang)
    others = [*synth.installed_mbrola(lang), synth.formant_voice(lang)]
    return [v for v in dict.fromkeys(others) if v != default]


def _onsets_ok(track_path: str, lines: list[ScriptLine]) -> tuple[float, float, float]:
    """(share of lines sounding within 50 ms of their start, largest speed, |last sound - fitted end| in s)."""
    audio, rate = sf.read(track_path, dtype="float32")
    loud = np.abs(audio) > 1e-3
    ok = 0
    spoken = [line for line in lines if line.synth_s]
    for line in spoken:
        a = int(line.start * rate)
        hits = np.flatnonzero(loud[max(0, a - int(0.05 * rate)) : a + int(0.5 * rate)])
        ok += bool(hits.size) and abs((hits[0] + max(0, a - int(0.05 * rate)) - a) / rate) <= 0.05
    fitted_end = max(min(line.start + line.synth_s, line.fit_end or 1e9) for line in spoken)
    last_sound = np.flatnonzero(loud)[-1] / rate
    return ok / len(spoken), max(line.speed for line in spoken), abs(last_sound - fitted_end)


def _cpu() -> float:
    """CPU seconds used by this process and its finished children (all threads)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _musetalk_script(tmp: Path):
    """musetalk_eng.wav (60 s) transcribed by whisper base and translated by the configured es translator, with the
    es language settings (kokoro) and the synthesizer the steps build: what the voice stage gets in a run."""
    from dubbing import translate

    src = MEDIA / "musetalk_eng.wav"
    layout = layout_for(src, tmp / "muse")
    media.extract_analysis_audio(src, layout.analysis_wav)
    transcriber = backends.build(asr.BACKENDS, "faster-whisper", "ASR", model="whisper-base")
    transcript = transcriber.transcribe(layout.analysis_wav)
    cfg = load_settings().for_language("es").model_copy(deep=True)
    cfg.tts.backend, cfg.tts.voice = "kokoro", None
    translator = translate.translator_for(cfg.translate, transcript.language, "es")
    texts = translator.translate([u.text for u in transcript.utterances])
    lines = [
        ScriptLine(index=i, speaker=u.speaker, start=u.start, end=u.end, source_text=u.text, text=t)
        for i, (u, t) in enumerate(zip(transcript.utterances, texts, strict=True))
    ]
    script = Script(source_language=transcript.language, language="es", translator=translator.name, lines=lines)
    return script, tts.synthesizer_for(cfg), cfg, transcript, layout


def _speak_script(script, synth, cfg, transcript, matches, voice_wav: Path, clip_cache: Path | None):
    """The script spoken and fitted as the synthesize-and-fit step does, with the translator's shortener."""
    from dubbing import translate

    return voice.speak_track(
        script,
        synth,
        cfg.tts,
        cfg.timing,
        duration_s=transcript.duration_s,
        voices=matches,
        voice_wav=voice_wav,
        clip_cache=clip_cache,
        shorten=translate.shortener(script, cfg.translate, estimate=tts.estimator(cfg)),
    )


def bench_timing(tmp: Path) -> list[str]:

    rows = [
        "| input | lines | within 50 ms | max speed | end error (ms) | wall s | RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    script, synth, cfg, transcript, layout = _musetalk_script(tmp)
    settings = load_settings()
    # As on a machine's first run: the probe clips cached by earlier runs are moved aside (and put back after).
    probe_cache = models.cache_root() / "voice-bank"
    aside = tmp / "voice-bank-aside"
    if probe_cache.exists():
        shutil.move(probe_cache, aside)
    try:
        t0, c0 = time.perf_counter(), _cpu()
        speakers = voice.source_speakers(transcript, None, layout.analysis_wav, layout.speakers_dir)
        matches = voice.match_voices(speakers, "es", synth, cfg.tts, probe_text=cfg.probe_text, cache_dir=probe_cache)
        t1, c1 = time.perf_counter(), _cpu()
    finally:
        if aside.exists():
            shutil.rmtree(probe_cache, ignore_errors=True)
            shutil.move(aside, probe_cache)
    fitted, track = _speak_script(script, synth, cfg, transcript, matches, layout.voice("es"), layout.clip_cache("es"))
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    share, top, end_err = _onsets_ok(track.voice_path, fitted.lines)
    rows.append(
        f"| musetalk_eng.wav 60 s, kokoro es | {len(fitted.lines)} | {share:.0%} | {top:.3f} | {end_err * 1000:.0f} "
        f"| {wall:.1f} | {wall / transcript.duration_s:.2f} |"
    )
    notes.append(
        f"musetalk voice stage (first run: no probe clips cached): match {t1 - t0:.1f} s wall / {c1 - c0:.1f} CPU-s, "
        f"synthesise+fit "
        f"{wall - (t1 - t0):.1f} s wall / {cpu - (c1 - c0):.1f} CPU-s; {cpu / transcript.duration_s:.2f} CPU-s per "
        f"second of audio (RTF on 2 idle cores is at most this, at least half of it); load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    rng = np.random.default_rng(0)
    words = " ".join(SENTENCES["es"][:8]).split()  # the first eight: the 10-minute script as first measured
    long_lines, t, i = [], 1.0, 0
    while t < 595:
        n = int(rng.integers(5, 12))
        text = " ".join(words[(i * 7) % (len(words) - n) :][:n])
        dur = float(rng.uniform(1.5, 3.5))
        long_lines.append(
            ScriptLine(index=i, speaker="AB"[i % 3 == 0], start=t, end=t + dur, source_text="", text=text)
        )
        t += dur + float(rng.uniform(0.1, 1.5))
        i += 1
    cfg_e = settings.for_language("es").model_copy(deep=True)
    cfg_e.tts.backend, cfg_e.tts.voice = "espeak", "es"
    long_layout = layout_for(Path("synthetic10min.wav"), tmp / "long")
    t0 = time.perf_counter()
    fitted, track = voice.speak_track(
        Script(source_language="en", language="es", translator="none", lines=long_lines),
        tts.synthesizer_for(cfg_e),
        cfg_e.tts,
        cfg_e.timing,
        duration_s=600.0,
        voices={},
        voice_wav=long_layout.voice("es"),
        clip_cache=long_layout.clip_cache("es"),
    )
    wall = time.perf_counter() - t0
    share, top, end_err = _onsets_ok(track.voice_path, fitted.lines)
    rows.append(
        f"| synthetic 10 min, espeak es | {len(fitted.lines)} | {share:.0%} | {top:.3f} | {end_err * 1000:.0f} "
        f"| {wall:.1f} | {wall / 600:.2f} |"
    )
    return rows + [""] + notes


class _Counted:
    """A synthesizer seen through: counts its syntheses and can hide its 'concurrent' capability."""

    def __init__(self, synth: tts.Synthesizer, concurrent: bool) -> None:
        self.synth, self.calls = synth, 0
        self.capabilities = synth.capabilities if concurrent else synth.capabilities - {"concurrent"}

    def __getattr__(self, name: str):
        return getattr(self.synth, name)

    def synthesize(self, text: str, **kwargs):
        self.calls += 1
        return self.synth.synthesize(text, **kwargs)


def bench_ahead(tmp: Path) -> list[str]:
    """The voice stage speaking the next line on a second thread ('concurrent' backends) against one line at a
    time: musetalk_eng's 60 s into es, voices matched once, no line cache; each side twice, alternating."""

    script, synth, cfg, transcript, layout = _musetalk_script(tmp)
    speakers = voice.source_speakers(transcript, None, layout.analysis_wav, layout.speakers_dir)
    matches = voice.match_voices(
        speakers, "es", synth, cfg.tts, probe_text=cfg.probe_text, cache_dir=models.cache_root() / "voice-bank"
    )
    rows = [
        "| side | run | lines | syntheses | over limit | wall s | CPU s | CPU % | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, sides in enumerate([(False, True), (True, False)], start=1):
        for concurrent in sides:
            counted = _Counted(synth, concurrent)
            t0, c0 = time.perf_counter(), _cpu()
            fitted, _track = _speak_script(script, counted, cfg, transcript, matches, tmp / f"ahead-{run}.wav", None)
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            over = sum(line.over_limit for line in fitted.lines)
            rows.append(
                f"| {'speak ahead' if concurrent else 'one at a time'} | {run} | {len(fitted.lines)} | "
                f"{counted.calls} | {over} | {wall:.1f} | {cpu:.1f} | {cpu / wall:.0%} | {os.getloadavg()[0]:.1f} |"
            )
    return rows


def _clip(path: Path, tmp: Path, name: str, turns: list[tuple[float, float]] | None = None) -> SourceSpeaker:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if turns:
        audio = np.concatenate([audio[int(a * rate) : int(b * rate)] for a, b in turns])
    out = tmp / f"{name}.wav"
    sf.write(str(out), audio[: int(30 * rate)], rate)
    return SourceSpeaker(speaker=name, reference_clip=str(out))


def probe_text(cfg: LanguageConfig) -> str:
    """The sentence voice matching hears each voice say in the language (its record's `probe_text`)."""
    if not cfg.probe_text:
        raise SystemExit(f"configs/languages/{cfg.code}.yaml has no probe_text")
    return cfg.probe_text


def kokoro_for(cfg: LanguageConfig) -> tts.KokoroSynthesizer:
    """Kokoro built for the language from its record (its phonemiser language), as a run builds it."""
    synth = tts.backend_for(cfg, "kokoro")
    assert isinstance(synth, tts.KokoroSynthesizer)
    return synth


def kokoro_bank(cfg: LanguageConfig) -> voice.VoiceBank:
    """Kokoro's voice bank for the language as matching sees it: each voice says the record's probe sentence, the
    bank screened by the packaged probe table."""
    synth, text = kokoro_for(cfg), probe_text(cfg)
    bank = voice.VoiceBank(
        backend=synth.name,
        speak=lambda v: synth.synthesize(text, language=cfg.code, voice=v),
        voices=synth.voices(cfg.code),
        default_voice=synth.default_voice(cfg.code),
        can_blend=True,
        table_key=voice.probe_table_key(*synth.probe_key(cfg.code, text)),
    )
    return bank


def bench_similarity(tmp: Path) -> list[str]:
    import subprocess

    speakers = [
        _clip(MEDIA / "musetalk_eng.wav", tmp, "musetalk_eng"),
        _clip(MEDIA / "sadtalker_RD_Radio31_000.wav", tmp, "sadtalker_RD_Radio31"),
        _clip(MEDIA / "latentsync_demo2_audio.wav", tmp, "latentsync_demo2"),
    ]
    libri = sorted((MEDIA / "librivox").glob("*.wav"))
    joined = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in libri])
    sf.write(str(tmp / "librivox.wav"), joined, 16000)
    speakers.append(_clip(tmp / "librivox.wav", tmp, "librivox"))
    for name in ("vrt_face1", "vrt_face2", "vrt_face4"):
        wav = tmp / f"{name}.src.wav"
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-y",
                "-v",
                "error",
                "-i",
                str(MEDIA / f"{name}.mp4"),
                "-ac",
                "1",
                "-ar",
                "16000",
                str(wav),
            ],
            check=True,
        )
        speakers.append(_clip(wav, tmp, name))
    turns: dict[str, list[tuple[float, float]]] = {}
    for row in (MEDIA / "pyannote_sample.rttm").read_text().splitlines():
        f = row.split()
        turns.setdefault(f[7], []).append((float(f[3]), float(f[3]) + float(f[4])))
    pair = [_clip(MEDIA / "pyannote_sample.wav", tmp, f"pyannote_{k}", v) for k, v in sorted(turns.items())]
    bank = kokoro_bank(load_settings().for_language("es"))
    matcher = backends.build(voice.MATCHERS, "embedding", "voice matching")
    rows = [
        "| speaker | voice after matching | default voice | closest bank voice | after matching |",
        "|---|---|---|---|---|",
    ]
    t0 = time.perf_counter()
    results = {}
    for s in speakers:
        results.update(matcher.match([s], bank, {}))
    results.update(matcher.match(pair, bank, {}))
    wall = time.perf_counter() - t0
    for name, m in results.items():
        rows.append(
            f"| {name} | {m.label.split(':', 1)[1]} | {m.similarity_default:.3f} | {m.similarity_bank:.3f} "
            f"| {m.similarity_after:.3f} |"
        )
    emb = {}
    for s in pair:
        m = results[s.speaker]
        audio, rate = bank.speak(m.voice)
        emb[s.speaker] = speaker_embedding.embed(voice.shift_voice(audio, rate, m), rate)
    a, b = (s.speaker for s in pair)
    cross = speaker_embedding.cosine(emb[a], emb[b])
    rows.append("")
    rows.append(
        f"pyannote_sample: matched voices to each other {cross:.3f}; to their own source "
        f"{results[a].similarity_after:.3f} ({a}), {results[b].similarity_after:.3f} ({b}). "
        f"Matching {len(results)} speakers took {wall:.1f} s."
    )
    return rows


SCALE_SENTENCES = [
    "Paseamos junto al río y hablamos de nuestros planes para el verano.",
    "Mañana por la mañana vamos a visitar a mis abuelos en el pueblo.",
    "La reunión empezó tarde porque nadie encontraba las llaves de la sala.",
    "Creo que deberíamos revisar el presupuesto antes de tomar una decisión.",
    "El tren llegó con veinte minutos de retraso y la estación estaba llena.",
]


def bench_similarity_scale(tmp: Path) -> list[str]:
    """What a CAM++ cosine of 0.70 means here: the same speaker's own held-out speech against their 30 s reference
    clip (musetalk_eng.wav is the one real file with 30 s left after its reference), and how much of the figure is
    the probe's length: the closest bank voice saying one sentence against five."""
    audio, rate = sf.read(str(MEDIA / "musetalk_eng.wav"), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    reference = speaker_embedding.embed(audio[: 30 * rate], rate)
    rest = audio[30 * rate :]
    rows = ["| compared with musetalk_eng's 30 s reference | cosine (mean, lowest) | stretches |", "|---|---|---|"]
    for seconds in (3, 6, 12):
        n = seconds * rate
        sims = [speaker_embedding.cosine(reference, speaker_embedding.embed(rest[i : i + n], rate))
                for i in range(0, len(rest) - n + 1, n)]  # fmt: skip
        rows.append(f"| the speaker's own held-out speech, {seconds} s | {np.mean(sims):.3f}, {np.min(sims):.3f} | "
                    f"{len(sims)} |")  # fmt: skip
    spanish = load_settings().for_language("es")
    synth = kokoro_for(spanish)
    table = voice.load_probe_table("kokoro", voice.probe_table_key(*synth.probe_key("es", probe_text(spanish))))
    closest = max(table, key=lambda v: speaker_embedding.cosine(reference, table[v][0])) if table else "am_santa"
    clips = [synth.synthesize(t, language="es", voice=closest) for t in SCALE_SENTENCES]
    one = [speaker_embedding.cosine(reference, speaker_embedding.embed(a, r)) for a, r in clips]
    joined = np.concatenate([a for a, _ in clips])
    five = speaker_embedding.cosine(reference, speaker_embedding.embed(joined, clips[0][1]))
    label = f"closest bank voice ({closest})"
    rows.append(f"| {label}, one Spanish sentence (~4 s) | {np.mean(one):.3f}, {np.min(one):.3f} | {len(one)} |")
    rows.append(f"| {label}, the five sentences joined ({len(joined) / clips[0][1]:.0f} s) | {five:.3f} | 1 |")
    return rows


def _test_module(name: str):
    """A module of this checkout's test suite, which is not installed: the `tests` package is loaded from its folder
    (so its own `tests.` imports resolve) without putting the checkout on the import path."""
    import importlib
    import importlib.util

    if "tests" not in sys.modules:
        folder = ROOT / "tests"
        spec = importlib.util.spec_from_file_location(
            "tests", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["tests"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"tests.{name}")


def bench_separation(tmp: Path) -> list[str]:
    """60 s of a repeating music loop with 40 s of espeak speech over it: what is left of the voice in the
    background, how much of the music survives under the speech, speed; then the final mix's loudness."""
    import json
    import subprocess

    from dubbing import mix, separate

    test_mix = _test_module("test_mix")  # the separation test's signals
    RATE, _music, _speech = test_mix.RATE, test_mix._music, test_mix._speech

    music = _music(60.0)
    speech = np.zeros_like(music)
    spans = []
    for start in np.arange(2.0, 56.0, 6.0):
        part, end = _speech(tmp, 60.0, float(start))
        speech += part
        spans.append((float(start), end))
    sf.write(str(tmp / "sep_mix.wav"), music + speech, RATE, subtype="FLOAT")
    t0 = time.perf_counter()
    separator = backends.build(separate.BACKENDS, "classical", "separation")
    separator.separate(tmp / "sep_mix.wav", tmp / "sp.wav", tmp / "bg.wav", speech=spans)
    sep_s = time.perf_counter() - t0
    bg, _ = sf.read(str(tmp / "bg.wav"), dtype="float32")
    inside = np.zeros(len(bg), bool)
    for a, b in spans:
        inside[int((a + 0.2) * RATE) : int((b - 0.2) * RATE)] = True
    voice_part = speech[inside]
    leak = np.sum((bg[inside] - music[inside]) * voice_part) / np.sum(voice_part**2)
    corr = np.corrcoef(bg[inside, 0], music[inside, 0])[0, 1]
    sf.write(str(tmp / "dub.wav"), speech[:, 0], RATE)
    t0 = time.perf_counter()
    out = mix.mix(tmp / "dub.wav", tmp / "final.wav", background=tmp / "bg.wav")
    mix_s = time.perf_counter() - t0
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(out), "-af", "loudnorm=print_format=json", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    lufs = float(json.loads(proc.stderr[proc.stderr.rindex("{") :])["input_i"])
    return [
        "| measure | value |",
        "|---|---|",
        f"| original voice left in the background (share) | {leak:.3f} ({20 * np.log10(max(leak, 1e-6)):.1f} dB) |",
        f"| correlation of the background with the music under speech | {corr:.3f} |",
        f"| separation wall time for 60 s (48 kHz stereo) | {sep_s:.1f} s (RTF {sep_s / 60:.2f}) |",
        f"| mix (ducking + two-pass loudnorm) wall time for 60 s | {mix_s:.1f} s |",
        f"| integrated loudness of the mix (target -16) | {lufs:.1f} LUFS |",
    ]


PROBE_LANGUAGES = ("es", "pt", "it")


def build_probes(tmp: Path) -> list[str]:
    """Not a measurement: (re)write dubbing/data/kokoro_probes.npz, every kokoro voice's probe embedding per language
    (set PROBE_LANGUAGES=es,pt to make only some), so matching screens the bank without synthesising it."""
    settings = load_settings()
    banks = {}
    for lang in os.environ.get("PROBE_LANGUAGES", ",".join(PROBE_LANGUAGES)).split(","):
        bank = kokoro_bank(settings.for_language(lang))
        banks[bank.table_key] = (lang, bank.speak, bank.voices)
    t0 = time.perf_counter()
    path = voice.build_probe_table("kokoro", banks)
    return [f"wrote {path.relative_to(ROOT)}: {len(banks)} languages in {time.perf_counter() - t0:.0f} s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="wer,timing,similarity,separation")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmp_name:
        tmp = Path(tmp_name)
        for section in args.only.split(","):
            t0 = time.perf_counter()
            sections = {
                "wer": bench_wer,
                "timing": bench_timing,
                "ahead": bench_ahead,
                "similarity": bench_similarity,
                "similarity-scale": bench_similarity_scale,
                "separation": bench_separation,
                "probes": build_probes,
                "espeak-tune": bench_espeak_tune,
            }
            rows = sections[section](tmp)
            print(f"\n### {section} ({time.perf_counter() - t0:.0f} s)\n")
            print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
