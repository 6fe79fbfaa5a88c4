"""Translation stage: real backends on real text, the LLM backend against a real local HTTP server, a tiny
randomly initialised Marian model for the transformers backend, and the length-awareness pass."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dubbing import translate, tts
from dubbing.config import TranslateConfig, load_settings
from dubbing.errors import DubbingError
from dubbing.translate import isochrony
from dubbing.translate.base import Glossary, finish, spanish_marks, split_trailing_break
from dubbing.translate.condense import condense

ROOT = Path(__file__).resolve().parent.parent
ESTIMATE = partial(tts.estimate_seconds, rate=14.0)  # seconds to speak a text, for tests that need any estimate


def espeak_record(language: str):
    """The language's record with espeak as its TTS backend: the estimate its voice stage would use."""
    cfg = load_settings().for_language(language).model_copy(deep=True)
    cfg.tts.backend = "espeak"
    return cfg


# --- offline backends -----------------------------------------------------------------------------------------


def test_apertium_keeps_one_line_per_line_and_records_its_pivot():
    es = translate.build_translator("apertium", source="en", target="es")
    out = es.translate(["We need to buy bread, milk and eggs.", "", "Thank you."])
    assert len(out) == 3 and "pan" in out[0] and "leche" in out[0] and out[1] == ""
    assert es.pivot is None
    assert translate.build_translator("apertium", source="en", target="fr").pivot == "es"


def test_bergamot_raw_engine_avoids_the_package_postprocessing_bug():
    pt = translate.build_translator("bergamot", source="en", target="pt")
    (line,) = pt.translate(["See you next year."])
    assert "próximo ano" in line and "não próximo" not in line


def test_a_broken_off_line_is_translated_without_its_break_and_gets_it_back():
    assert split_trailing_break("I - ") == ("I", " -")
    assert split_trailing_break("Well, I was thinking...") == ("Well, I was thinking", "...")
    assert split_trailing_break("...") == ("...", "") and split_trailing_break("Yes.") == ("Yes.", "")
    pt = translate.translator_for(TranslateConfig(backend="bergamot"), "en", "pt")
    alone = pt.translate(["I", "So"])
    # the raw engine invents words for a bare break: "I -" -> "Eu - Eu", "I..." -> "Que bom que gostou..."
    assert pt.translate(["I -", "I...", "So -"]) == [alone[0] + " -", alone[0] + "...", alone[1] + " -"]


def test_apertium_keeps_a_last_empty_line():
    es = translate.translator_for(load_settings().for_language("es").translate, "en", "es")
    out = es.translate(["Thank you.", ""])
    assert len(out) == 2 and out[1] == ""


def test_spanish_defaults_chain_bergamot_and_apertium_through_portuguese():
    tr = translate.translator_for(load_settings().for_language("es").translate, "en", "es")
    assert tr.name == "bergamot+apertium" and tr.pivot == "pt"
    out = tr.translate(["Good morning, how did you sleep?", "The children are playing in the garden."])
    assert out[0].startswith("Buen") and ", ¿" in out[0] and out[0].endswith("?")
    assert "niños" in out[1] and "jardín" in out[1]


def test_glossary_keeps_names_and_forces_terms_through_placeholders():
    cfg = TranslateConfig(backend="bergamot", glossary={"Prefect": "Prefect", "dashboard": "painel de controle"})
    tr = translate.translator_for(cfg, "en", "pt")
    plain = translate.translator_for(TranslateConfig(backend="bergamot"), "en", "pt")
    source = ["I deployed it with Prefect and opened the dashboard."]
    assert "Prefect" not in plain.translate(source)[0]  # the raw model renders it as "Prefeito"
    (line,) = tr.translate(source)
    assert "Prefect" in line and "painel de controle" in line and "ZX" not in line


def test_glossary_placeholders_round_trip():
    g = Glossary({"New York": "Nueva York", "York": "York"})
    text, renderings = g.protect("From new york to York.")
    assert text == "From ZX0 to ZX1." and renderings == ["Nueva York", "York"]
    assert g.restore("De ZX0 a ZX 1.", renderings) == "De Nueva York a York."


def test_spanish_question_and_exclamation_marks():
    assert spanish_marks("Good morning, how did you sleep?", "Buenos días, cómo dormiste?") == (
        "Buenos días, ¿cómo dormiste?"
    )
    assert spanish_marks("Could you speak slower, please?", "Podrías hablar más despacio, por favor?") == (
        "¿Podrías hablar más despacio, por favor?"
    )
    assert spanish_marks("Hi. See you!", "Hola. Hasta luego!") == "Hola. ¡Hasta luego!"
    # A shortened line lost the leading fillers of its source: the question is found counting from the end.
    assert spanish_marks("Well, you know, good morning, how did you sleep?", "Buen día, como dormiste?") == (
        "Buen día, ¿como dormiste?"
    )
    assert finish("Hello", "olá,", "pt") == "Olá"


def test_unknown_language_and_missing_pair_fail_with_one_line_listing_what_exists(tmp_path):
    with pytest.raises(DubbingError, match="available: .*es.*pt"):
        load_settings().for_language("xx")
    with pytest.raises(DubbingError) as err:
        translate.build_translator("apertium", source="de", target="ca", model="eng-cat")
    message = str(err.value)
    assert "\n" not in message and "de->ca" in message and "en->ca" in message
    with pytest.raises(DubbingError, match="available: apertium, bergamot"):
        translate.build_translator("nope", source="en", target="es")


def test_a_pair_no_configured_backend_has_falls_back_to_the_local_llm():
    _llama_or_skip()
    assert translate.translator_for(TranslateConfig(backend="apertium"), "de", "ca").name == "llama"


def test_configured_backend_falls_back_to_apertium_for_other_sources():
    tr = translate.translator_for(load_settings().for_language("es").translate, "fr", "es")
    assert tr.name == "apertium" and tr.translate(["Bonjour"])[0]
    english = load_settings().for_language("en").translate
    assert translate.translator_for(english, "pt", "en").name == "bergamot"
    assert translate.translator_for(english, "es", "en").name == "apertium"


def test_dub_translate_cli_is_line_for_line(tmp_path):
    dub = [sys.executable, "-m", "dubbing.cli"]
    proc = subprocess.run(
        [*dub, "translate", "--from", "en", "--to", "pt"],
        input="Good morning.\n\nWhere is the nearest pharmacy?\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Bom dia.", "", "Onde é a farmácia mais próxima?"]
    bad = subprocess.run([*dub, "translate", "--to", "xx"], input="hi\n", capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "available" in bad.stderr


# --- length awareness -----------------------------------------------------------------------------------------


def test_condense_drops_fillers_then_asides_then_wordy_phrases():
    levels = condense("Well, you know, I think (honestly) that it is, like, really good.")
    assert levels == ["I think (honestly) that it is really good.", "I think that it is good.", "It is good."]
    assert condense("The meeting is at 8.") == [] and condense("Bueno, pues sí.", "es") == []


def test_slots_run_to_the_next_line_or_the_end():
    # (estimates follow the language record's speech rate: tests/test_tts.py, the estimator)
    assert isochrony.slots([0.0, 2.0, 5.0], 6.5) == [2.0, 3.0, 1.5]


def test_faithful_rejects_dropped_numbers_terms_and_truncations():
    faithful = partial(isochrony.faithful, estimate=ESTIMATE)
    assert faithful("Nos vemos a las 8 en Madrid.", "A las 8 en Madrid.", ["Madrid"])
    assert not faithful("Nos vemos a las 8 en Madrid.", "Nos vemos en Madrid.")
    assert not faithful("Nos vemos a las 8 en Madrid.", "A las 8 allí.", ["Madrid"])
    assert not faithful("Nos vemos mañana a primera hora en la oficina.", "Nos.")


def test_length_pass_shortens_a_line_that_cannot_fit_and_keeps_one_that_does():
    tr = translate.translator_for(TranslateConfig(backend="apertium"), "en", "es")
    sources = [
        "Well, you know, I think that the meeting is, like, really very important for us.",
        "Thank you.",
    ]
    texts = tr.translate(sources)
    estimate = tts.estimator(espeak_record("es"))
    first_s = estimate(texts[0])
    slot = first_s * 0.75 / 1.25  # the first line would need 1.33x speed-up at the 1.25 limit
    fits = translate.fit_to_slots(
        tr, sources, texts, starts=[0.0, slot], end_of_timeline=slot + 3.0, estimate=estimate, max_speedup=1.25
    )
    first, second = fits
    assert first.action == "shortened" and first.original_text == texts[0]
    assert first.estimated_s <= slot * 1.25 and len(first.text) < len(texts[0]) and "reunión" in first.text
    assert second.action == "fits" and second.text == texts[1] and second.slot_s == 3.0
    unchanged = translate.fit_to_slots(
        tr,
        sources,
        texts,
        starts=[0.0, slot],
        end_of_timeline=slot + 3.0,
        estimate=estimate,
        max_speedup=1.25,
        shorten=False,
    )
    assert unchanged[0].action == "over" and unchanged[0].text == texts[0]


def test_translate_script_records_estimate_slot_and_action_per_line():
    from dubbing.types import Script, Transcript, Utterance

    transcript = Transcript(
        language="en",
        duration_s=6.0,
        utterances=[
            Utterance(start=0.0, end=0.6, text="Well, you know, I think the food is, like, really very delicious."),
            Utterance(start=1.5, end=3.5, text="Where is the nearest pharmacy?", speaker="S2"),
        ],
    )
    cfg = load_settings().for_language("pt")
    script = translate.translate_script(
        transcript,
        "pt",
        cfg.translate,
        estimate=tts.estimator(cfg),
        max_speedup=cfg.timing.max_speedup,
        length_basis=tts.length_basis(cfg),
    )
    saved = json.loads(Script.model_validate_json(script.model_dump_json()).model_dump_json())  # as script.json
    assert saved["translator"] == "bergamot" and saved["length_basis"].startswith(cfg.tts.backend)
    assert saved["source_language"] == "en" and saved["language"] == "pt"
    first, second = saved["lines"]
    assert first["slot_s"] == 1.5 and first["length_action"] in {"shortened", "shortened_over"}
    assert first["first_text"] and len(first["text"]) < len(first["first_text"])
    assert second["length_action"] == "fits" and second["estimated_s"] > 0 and second["slot_s"] == 4.5
    assert script.lines[1].text == second["text"]


# --- openai-compatible, against a real server on 127.0.0.1 ----------------------------------------------------


class ChatServer:
    """A small chat-completions server: answers from a queue of replies and records each request."""

    def __init__(self) -> None:
        # A string is the assistant's content; a float: sleep that long first; an int: answer with that HTTP status;
        # (status, text): that status and content, "{auth}" in the text replaced by the request's Authorization
        # header (a server that echoes the key back).
        self.replies: list[str | float | int] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                reply = server.replies.pop(0) if server.replies else server.echo(body)
                status = 200
                if isinstance(reply, float):
                    time.sleep(reply)
                    reply = server.echo(body)
                if isinstance(reply, int):
                    status, reply = reply, "server says no"
                if isinstance(reply, tuple):
                    status, reply = reply[0], reply[1].format(auth=self.headers.get("Authorization"))
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (the timeout test)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def echo(body: dict) -> str:
        payload = json.loads(body["messages"][1]["content"])
        if "lines" in payload:
            return json.dumps({"translations": [f"<{line}>" for line in payload["lines"]]})
        return json.dumps({"candidates": [payload["line"][:10]]})


@pytest.fixture
def chat_server():
    server = ChatServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _llm(url: str, **options) -> translate.ConfiguredTranslator:
    cfg = TranslateConfig(
        backend="openai-compatible",
        model="tiny-test",
        options={"base_url": url, "formality": "informal", **options},
        glossary={"Prefect": "Prefect", "dub": "doblar"},
    )
    tr = translate.translator_for(cfg, "en", "es")
    assert not tr.placeholders  # it takes instructions: the glossary goes into them, not through placeholders
    return tr


def test_llm_request_shape_context_and_glossary(chat_server, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sekret")
    lines = [f"line {i}" for i in range(10)]
    out = _llm(chat_server.url, api_key_env="TEST_LLM_KEY").translate(lines)
    assert out == [f"<line {i}>" for i in range(10)]  # the server's reply, in order, one per line
    first, second = chat_server.requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sekret"
    body = first["body"]
    assert body["model"] == "tiny-test" and body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system" and '"Prefect" stays "Prefect"' in system["content"]
    assert '"dub" -> "doblar"' in system["content"] and "informal" in system["content"]
    assert "English" in system["content"] and "Spanish" in system["content"]
    payload = json.loads(user["content"])
    assert payload["lines"] == lines[:8] and payload["context_before"] == [] and payload["context_after"] == lines[8:]
    later = json.loads(second["body"]["messages"][1]["content"])
    assert later["lines"] == lines[8:] and later["context_before"] == lines[6:8]


def test_llm_retries_malformed_replies_then_fails_clearly(chat_server):
    chat_server.replies = ["Sure! Here you go: hola", json.dumps({"translations": ["a", "b"]})]
    assert _llm(chat_server.url).translate(["hello"]) == ["<hello>"]
    retry = chat_server.requests[-1]["body"]["messages"]
    assert retry[-1]["role"] == "user" and "expected 1 items" in retry[-1]["content"]
    assert len(chat_server.requests) == 3
    chat_server.replies = ["nope"] * 3
    with pytest.raises(DubbingError, match="malformed JSON 2 times"):
        _llm(chat_server.url, max_retries=1).translate(["hello"])


def test_llm_retries_busy_servers_skips_empty_lines_and_reports_refusals(chat_server, monkeypatch):
    monkeypatch.setattr(translate.llm, "BACKOFF_S", 0.01)
    chat_server.replies = [503]
    assert _llm(chat_server.url).translate(["a", "", "b"]) == ["<a>", "", "<b>"]
    assert len(chat_server.requests) == 2
    assert json.loads(chat_server.requests[-1]["body"]["messages"][1]["content"])["lines"] == ["a", "b"]
    chat_server.replies = [401]
    with pytest.raises(DubbingError, match="answered HTTP 401"):
        _llm(chat_server.url).translate(["a"])
    assert len(chat_server.requests) == 3  # a refusal is not retried


def test_llm_timeouts_are_retried_then_a_clear_error(chat_server, monkeypatch):
    monkeypatch.setattr(translate.llm, "BACKOFF_S", 0.01)
    # One slow answer: retried, then answered. The answer in time must come within timeout_s however busy the
    # machine is (a local echo takes milliseconds; 2 s is generous); the slow one waits far longer than that.
    chat_server.replies = [8.0]
    assert _llm(chat_server.url, timeout_s=2.0).translate(["hello"]) == ["<hello>"]
    assert len(chat_server.requests) == 2
    chat_server.replies = [2.0, 2.0, 2.0]  # never in time, however busy: three tries (max_retries 2), then one line
    with pytest.raises(DubbingError, match=r"did not answer within 0.5s in 3 tries"):
        _llm(chat_server.url, timeout_s=0.5, max_retries=2).translate(["hello"])
    assert len(chat_server.requests) == 5


def test_llm_unreachable_server_is_retried_then_a_clear_error(monkeypatch):
    monkeypatch.setattr(translate.llm, "BACKOFF_S", 0.01)
    with pytest.raises(DubbingError, match=r"cannot reach translation server http://127.0.0.1:9/v1.* in 2 tries"):
        _llm("http://127.0.0.1:9/v1", max_retries=1).translate(["hello"])


def test_llm_shorten_asks_for_a_target_length(chat_server):
    chat_server.replies = [json.dumps({"candidates": ["Corto.", "Más corto aún."]})]
    tr = _llm(chat_server.url)
    request = translate.ShortenRequest(1, "una línea larga", 12)
    assert tr.shorten(["a", "a long line", "c"], [request]) == [["Corto.", "Más corto aún."]]
    body = chat_server.requests[-1]["body"]
    assert "at most 12 characters" in body["messages"][0]["content"]
    payload = json.loads(body["messages"][1]["content"])
    assert payload["current_translation"] == "una línea larga" and payload["context_before"] == ["a"]


# --- transformers, on a tiny randomly initialised Marian model ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A SentencePiece model trained here on the benchmark sentences, and its vocabulary."""
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("tiny-spm")
    corpus = folder / "corpus.txt"
    rows = (ROOT / "benchmarks/data/mt_en.tsv").read_text(encoding="utf-8").splitlines()
    cells = [r.split("\t")[:5] for r in rows if r.strip() and not r.startswith("#")][1:]  # header; en es pt fr it
    corpus.write_text("\n".join(c for r in cells for c in r), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "sp"), vocab_size=120, model_type="unigram",
        unk_id=2, bos_id=-1, eos_id=1, pad_id=0, unk_piece="<unk>", eos_piece="</s>", pad_piece="<pad>",
    )  # fmt: skip
    processor = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    return folder / "sp.model", {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}


TINY = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_marian(tiny_spm, tmp_path_factory) -> Path:
    """A real MarianMT checkpoint folder with random weights."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    sp_model, vocab = tiny_spm
    folder = tmp_path_factory.mktemp("tiny-marian")
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(sp_model.read_bytes())
    tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1, **TINY
    )
    torch.manual_seed(0)
    MarianMTModel(config).eval().save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def tiny_m2m100(tiny_spm, tmp_path_factory) -> Path:
    """A real M2M100 checkpoint folder with random weights (its tokenizer adds the 100 language tokens)."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    sp_model, vocab = tiny_spm
    folder = tmp_path_factory.mktemp("tiny-m2m100")
    vocab = {"<s>": len(vocab), **vocab}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "sentencepiece.bpe.model").write_bytes(sp_model.read_bytes())
    tokenizer = M2M100Tokenizer(str(folder / "vocab.json"), str(folder / "sentencepiece.bpe.model"))
    config = M2M100Config(
        vocab_size=max(tokenizer.lang_code_to_id.values()) + 1 + tokenizer.num_madeup_words, pad_token_id=0,
        eos_token_id=1, bos_token_id=len(vocab) - 1,
        decoder_start_token_id=1, **TINY,
    )  # fmt: skip
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).eval().save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def tiny_nllb(tmp_path_factory) -> Path:
    """A real NLLB-style checkpoint (M2M100 weights, NllbTokenizer with the FLORES codes) with random weights; the
    tokenizer is character-level BPE built here."""
    import string

    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in ["▁", *string.ascii_letters, *".,?!'"]:
        vocab.setdefault(ch, len(vocab))
    tokenizer = NllbTokenizer(vocab=vocab, merges=[])
    config = M2M100Config(
        vocab_size=len(tokenizer), pad_token_id=1, eos_token_id=2, bos_token_id=0, decoder_start_token_id=2, **TINY
    )
    folder = tmp_path_factory.mktemp("tiny-nllb") / "model"
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_transformers_nllb_uses_flores_codes(tiny_nllb, monkeypatch):
    monkeypatch.setattr(translate.hub, "MAX_NEW_TOKENS", 6)
    tr = translate.build_translator("transformers", source="en", target="es", model=str(tiny_nllb))
    assert tr.family == "nllb" and tr.tokenizer.src_lang == "eng_Latn"
    assert tr.forced_bos == tr.tokenizer.convert_tokens_to_ids("spa_Latn") != tr.tokenizer.unk_token_id
    batch = tr.tokenizer(["Good morning."], return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tr.tokenizer.convert_tokens_to_ids("eng_Latn")
    generated = tr.model.generate(**batch, forced_bos_token_id=tr.forced_bos, max_new_tokens=4)
    assert generated[0, 1].item() == tr.forced_bos
    assert len(tr.translate(["Good morning.", "", "Thank you."])) == 3


def test_transformers_m2m100_forces_the_target_language_token(tiny_m2m100, monkeypatch):
    monkeypatch.setattr(translate.hub, "MAX_NEW_TOKENS", 6)
    tr = translate.build_translator("transformers", source="en", target="es", model=str(tiny_m2m100))
    assert tr.family == "m2m100" and tr.tokenizer.src_lang == "en"
    assert tr.forced_bos == tr.tokenizer.get_lang_id("es") == tr.tokenizer.convert_tokens_to_ids("__es__")
    batch = tr.tokenizer(["Good morning."], return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tr.tokenizer.get_lang_id("en")  # the source language token
    generated = tr.model.generate(**batch, forced_bos_token_id=tr.forced_bos, max_new_tokens=4)
    assert generated[0, 1].item() == tr.forced_bos
    assert len(tr.translate(["Good morning.", "Thank you."])) == 2


def test_transformers_backend_loads_a_marian_folder_and_batches(tiny_marian, monkeypatch):
    monkeypatch.setattr(translate.hub, "MAX_NEW_TOKENS", 8)
    tr = translate.build_translator(
        "transformers", source="en", target="es", model=str(tiny_marian), options={"batch_size": 4}
    )
    assert tr.batch_size == 4 and tr.beams == 4
    assert tr.family == "marian" and tr.forced_bos is None
    lines = [f"I have {i} boxes." for i in range(9)] + [""]
    out = tr.translate(lines)
    assert len(out) == 10 and out[-1] == "" and all(isinstance(t, str) for t in out)
    assert out == tr.translate(lines)  # beam search is deterministic
    (nbest,) = tr.shorten(lines, [translate.ShortenRequest(0, out[0], 10)])
    assert 1 <= len(nbest) <= 6 + 1


def test_transformers_language_codes():
    from dubbing.translate.hub import default_model, nllb_code

    assert nllb_code("es") == "spa_Latn" and nllb_code("pt-BR") == "por_Latn" and nllb_code("zho_Hant") == "zho_Hant"
    with pytest.raises(DubbingError, match="no NLLB code"):
        nllb_code("xx")
    assert default_model("en", "de") == "opus-mt-en-de" and default_model("en", "pt") == "nllb-200-distilled-600m"


def test_transformers_missing_hub_model_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(DubbingError, match="hf download Helsinki-NLP/opus-mt-en-de"):
        translate.build_translator("transformers", source="en", target="de", model="opus-mt-en-de")


def test_voice_stage_hook_returns_a_line_that_really_speaks_shorter(tmp_path):
    """The hook synthesize_track calls when a measured clip is too long: the shorter line, spoken by the same
    espeak-ng voice, must actually take less time."""
    from dubbing.types import Script, ScriptLine

    cfg = espeak_record("es")
    source = "Well, you know, I think that the meeting is, like, really very important for all of us."
    translator = translate.translator_for(cfg.translate, "en", "es")
    (text,) = translator.translate([source])
    line = ScriptLine(index=0, speaker="S1", start=0.0, end=3.0, source_text=source, text=text)
    script = Script(source_language="en", language="es", translator=translator.name, lines=[line])
    synth = tts.backend_for(cfg, "espeak")

    def seconds(t: str) -> float:
        audio, rate = synth.synthesize(t, language="es", voice="es")
        return len(audio) / rate

    natural_s = seconds(text)
    shorten = translate.shortener(script, cfg.translate, estimate=tts.estimator(cfg))
    shorter = shorten(line, 0.7 * natural_s, natural_s)
    assert shorter and "reunión" in shorter and seconds(shorter) < 0.85 * natural_s
    assert shorten(line, 1.1 * natural_s, natural_s) is None  # it already fits: nothing to do


def test_same_language_passes_lines_through_and_pivots_are_recorded():
    tr = translate.translator_for(load_settings().for_language("es").translate, "es", "es")
    assert tr.name == "identity" and tr.translate(["¿Qué tal?"]) == ["¿Qué tal?"]
    it = translate.translator_for(load_settings().for_language("it").translate, "en", "it")
    assert it.name == "bergamot+apertium" and it.pivot == "pt+es"


def test_bad_translate_config_names_key_and_allowed_backends(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("languages:\n  es:\n    translate:\n      backend: deepl\n")
    cfg = load_settings("draft", user).for_language("es").translate  # backends are named by the stage, not config
    (problem,) = translate.check(cfg)
    assert problem.startswith("translate.backend:") and "'deepl'" in problem and "bergamot" in problem
    with pytest.raises(DubbingError, match="unknown translation backend 'deepl'; available: apertium, bergamot"):
        translate.translator_for(cfg, "en", "es")
    user.write_text("languages:\n  es:\n    translate:\n      toggle: 1\n")  # unknown keys still name the file
    with pytest.raises(DubbingError, match=r"mine.yaml: unknown key 'languages.es.translate.toggle'"):
        load_settings("draft", user)


def test_backend_options_are_validated_by_the_backend_with_one_line_errors():
    with pytest.raises(DubbingError) as err:
        translate.translator_for(TranslateConfig(backend="openai-compatible", options={"beam": 4}), "en", "es")
    message = str(err.value)
    assert "\n" not in message and "'beam'" in message and "openai-compatible" in message
    assert "api_key_env, api_key_secret, base_url, batch_size, formality, max_retries, timeout_s" in message
    # formality is asked of a backend that takes instructions; others do not take it
    formal = TranslateConfig(backend="bergamot", options={"formality": "formal"})
    with pytest.raises(DubbingError, match="unknown key 'formality' for backend bergamot; allowed: none"):
        translate.translator_for(formal, "en", "pt")
    assert translate.check(formal) == ["translate.options: unknown key 'formality' for backend bergamot; allowed: none"]
    with pytest.raises(DubbingError, match=r"options.beams: .*less than or equal to 16"):
        translate.build_translator("transformers", source="en", target="de", options={"beams": 99})


def test_pivot_options_and_offline_backends():
    same = TranslateConfig(backend="transformers", options={"beams": 2}, pivot="pt")
    assert translate.pivot_options(same) == {"beams": 2}
    other = TranslateConfig(backend="transformers", options={"beams": 2}, pivot="pt", pivot_backend="apertium")
    assert translate.pivot_options(other) == {} and translate.check(other) == []
    given = other.model_copy(update={"pivot_options": {"beams": 3}})
    assert translate.pivot_options(given) == {"beams": 3}
    assert [p.split(":")[0] for p in translate.check(given)] == ["translate.pivot_options"]
    settings = load_settings()
    assert translate.is_offline(settings.for_language("es").translate)  # bergamot + apertium
    assert translate.is_offline(settings.for_language("de").translate)  # the local LLM
    assert not translate.is_offline(TranslateConfig(backend="transformers"))  # a hub model
    assert not translate.is_offline(other) and not translate.is_offline(TranslateConfig(backend="openai-compatible"))
    assert all(cls.name == name and isinstance(cls.capabilities, frozenset) for name, cls in translate.BACKENDS.items())


# ---------------------------------------------------------------- the local LLM (llama)


def _llama_or_skip() -> None:
    from dubbing.translate.llama import LlamaTranslator

    if problems := LlamaTranslator.missing(None):
        pytest.skip("; ".join(problems))


def test_llama_reply_parsing_is_strict():
    from dubbing.translate.llama import MalformedReply, first_sentence, one_line

    assert one_line(' "Hola, ¿qué tal?" \n', "Hi, how are you?") == "Hola, ¿qué tal?"
    assert one_line("Buenos días.\nBuenas.", "Good morning.") == "Buenos días. Buenas."  # a wrapped line
    for reply, why in [
        ("  \n ", "empty"),
        ("Hola.\nNote: this is a greeting used in Spain and Latin America, often informal.", "several lines"),
        ("hola " * 40, "far longer"),
    ]:
        with pytest.raises(MalformedReply, match=why):
            one_line(reply, "Hi.")
    # What is kept of a runaway reply when every try ran away: its first sentence, if it is of a plausible length.
    assert first_sentence("मौसम आज सुंदर है। मौसम आज सुंदर है। मौसम", "The weather is nice.") == "मौसम आज सुंदर है।"
    assert first_sentence("hola " * 40, "Hi.") is None


@pytest.mark.slow
def test_llama_translates_each_line_keeps_glossary_terms_and_shortens():
    """The real local model: one line out per line in (blank lines stay blank), in the target language, the
    glossary's term kept; a shorter rendering is shorter than the line it replaces."""
    from wordfreq import zipf_frequency

    _llama_or_skip()
    glossary = {"Acme": "Acme"}
    translator = translate.build_translator("llama", source="en", target="es", glossary=glossary)
    lines = ["Hello, I'm Anna and I work at Acme.", "", "Today I will show you our new kitchen."]
    out = translator.translate(lines)
    assert len(out) == 3 and out[1] == "" and all(out[i] and out[i] != lines[i] for i in (0, 2))
    assert "Acme" in out[0]
    words = [w.strip("¿?¡!.,").lower() for w in " ".join(out).split()]
    spanish = [w for w in words if zipf_frequency(w, "es") > zipf_frequency(w, "en")]
    assert len(spanish) > len(words) / 2, out  # mostly Spanish words, not the English left as it was
    request = translate.ShortenRequest(index=2, current=out[2], max_chars=max(10, len(out[2]) // 2))
    [candidates] = translator.shorten(lines, [request])
    assert all(len(c) < len(out[2]) for c in candidates)


@pytest.mark.slow
def test_the_local_model_is_freed_once_no_step_holds_it():
    """The shortening LLM was 1.8 GB kept for the whole run: `backends.holding` lets the pool drop it, and nothing
    else (no exit hook) keeps it alive."""
    import gc
    import weakref

    from dubbing import backends

    _llama_or_skip()
    with backends.holding("llm"):
        translator = translate.build_translator("llama", source="en", target="es", options={"context_tokens": 1024})
        model = weakref.ref(translator.model)
        del translator
        gc.collect()
        assert model() is not None  # pooled while a step holds it
    gc.collect()
    assert model() is None


def test_missing_llama_model_is_named_before_a_run():
    problems = translate.check(TranslateConfig(backend="llama", model="no-such-model"))
    assert problems and "unknown model 'no-such-model'" in problems[0]


@pytest.mark.slow
def test_llama_post_edits_a_routes_draft():
    _llama_or_skip()
    cfg = TranslateConfig(backend="bergamot", post_edit="llama")
    translator = translate.translator_for(cfg, "en", "pt")
    assert translator.name == "bergamot+llama"
    [out] = translator.translate(["Good morning, how did you sleep?"])
    assert out and out != "Good morning, how did you sleep?"
    with pytest.raises(DubbingError, match="cannot post-edit"):
        translate.translator_for(TranslateConfig(backend="bergamot", post_edit="apertium"), "en", "pt")


def test_a_shorter_rendering_that_slips_back_into_the_source_language_is_refused():
    """A small LLM asked for a shorter French line once answered in English words; a shortening that only drops
    words, or adds target-language ones, is kept."""
    from dubbing.translate import copies_the_source

    source = "congressional district, and I'm currently in D.C. for my second week of new member orientation."
    french = "District du Congrès, je suis à Washington pour ma deuxième semaine d'orientation des nouveaux membres."
    assert copies_the_source("District Congressional, Washington, D.C. orientation.", french, source)
    assert not copies_the_source("District du Congrès, à Washington pour ma deuxième semaine.", french, source)
    assert not copies_the_source("Au Congrès, ma deuxième semaine d'accueil.", french, source)
