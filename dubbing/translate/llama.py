"""A local instruct model as the translator: a GGUF file run in-process by llama.cpp (llama-cpp-python).

The default model is Qwen2.5-Coder-1.5B-Instruct, 4-bit, from the model store (`qwen2.5-1.5b-instruct`): it
translates between any two languages it knows, offline. The glossary and formality instructions are the chat
backends' (`ChatTranslator`). Greedy decoding: the same lines always translate the same way, so cached steps stay
valid.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import weakref
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dubbing import models
from dubbing.backends import NoOptions, shared
from dubbing.errors import DubbingError
from dubbing.translate.base import ShortenRequest
from dubbing.translate.llm import ChatTranslator, MalformedReply, _name

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-1.5b-instruct"


def default_threads() -> int:
    """Every core this process may use: translation runs while nothing else does."""
    return max(1, len(os.sched_getaffinity(0)))


class LocalModel:
    """One loaded GGUF and the lock that serialises its use: language threads share it, a context is not
    thread-safe."""

    def __init__(self, path: Path, threads: int, context_tokens: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise DubbingError(f"the llama translator needs llama-cpp-python: run scripts/setup ({exc})") from None
        self.path = path
        self.lock = threading.Lock()
        self.llm: Any = Llama(
            model_path=str(path),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            seed=0,
            verbose=False,
            use_mmap=False,  # read, not mapped: llama.cpp repacks the weights for the CPU, and a mapped file stayed
            # resident beside the repacked copy (1.76 GB in all, 1.17 GB read; replies the same and as fast)
        )
        # Closed when the pool lets it go (`backends.holding`: 1.8 GB back once synthesis ends), else at exit, before
        # interpreter teardown, where llama-cpp-python's own __del__ fails. Not an atexit hook on `self`: that would
        # keep the model alive for the whole process.
        self.close = weakref.finalize(self, self.llm.close)

    def chat(self, messages: list[dict], max_tokens: int, repeat_penalty: float = 1.0) -> str:
        with self.lock:
            reply = self.llm.create_chat_completion(
                messages=messages, temperature=0.0, max_tokens=max_tokens, repeat_penalty=repeat_penalty
            )
        return reply["choices"][0]["message"]["content"] or ""


def given_file(model: str | None) -> Path | None:
    """`model` when it names a GGUF file rather than a model-store name."""
    return Path(model).expanduser() if model and Path(model).expanduser().is_file() else None


def model_path(model: str | None) -> Path:
    """A GGUF path as given, else a model-store name (assembled and checked on first use)."""
    return given_file(model) or models.resolve(model or DEFAULT_MODEL)


TRANSLATE_PROMPT = "Translate the following {source} text into {target}. Output only the translation. {extra}"
POST_EDIT_PROMPT = (
    "You correct machine translations from {source} into {target}. Reply with the corrected {target} translation "
    "only. {extra}"
)
SHORTEN_PROMPT = (
    "Shorten the following {target} sentence to at most {max_chars} characters, keeping its meaning, names and "
    "numbers. Output only the shortened sentence. {extra}"
)
QUOTES = "\"'«»“”„「」"


class LlamaTranslator(ChatTranslator):
    """Any pair the model knows, offline; the glossary and formality go to it as instructions.

    One line per prompt with a plain-text reply: on the project's benchmark a 1.5B model translated far better so
    (Spanish chrF 68.7) than asked for JSON batches (53.3, see docs/translation.md). Neighbouring lines may go in
    as the conversation so far (`context_lines`: earlier lines and their translations; off by default, it helped
    French and hurt Spanish)."""

    name = "llama"
    capabilities = frozenset({"offline", "instructions", "post-edit"})

    class Options(NoOptions):
        formality: Literal["default", "formal", "informal"] = "default"  # the form of address it is asked for
        threads: int = Field(0, ge=0, le=64)  # llama.cpp threads; 0: every core this process may use
        context_lines: int = Field(0, ge=0, le=8)  # earlier lines (with their translations) shown for meaning
        max_retries: int = Field(2, ge=0, le=10)  # unusable replies asked again, each with a stronger repeat penalty
        context_tokens: int = Field(4096, ge=512, le=32768)

    @staticmethod
    def routes() -> str:
        """The pairs it translates, for error messages."""
        return "any pair the local model knows"

    def __init__(
        self,
        *,
        source: str,
        target: str,
        model: str | None = None,
        glossary: dict[str, str] | None = None,
        formality: str = "default",
        threads: int = 0,
        context_lines: int = 0,
        max_retries: int = 2,
        context_tokens: int = 4096,
    ) -> None:
        self.source, self.target = source, target
        self.glossary = dict(glossary or {})
        self.formality = formality
        self.context_lines, self.max_retries = context_lines, max_retries
        path = model_path(model)
        threads = threads or default_threads()
        self.model = shared(
            "llm", (str(path), threads, context_tokens), lambda: LocalModel(path, threads, context_tokens)
        )

    @staticmethod
    def missing(model: str | None) -> list[str]:
        """What this machine lacks to run it (the runtime, the model), said before a run starts."""
        problems = []
        if importlib.util.find_spec("llama_cpp") is None:
            problems.append("the llama translator needs llama-cpp-python, which is not installed: run scripts/setup")
        if given_file(model) is None:
            name = model or DEFAULT_MODEL
            try:
                status = models.check(name)
            except DubbingError as exc:
                return [*problems, str(exc)]
            if status.state != "available":
                problems.append(f"model {name}: {status.message}")
        return problems

    def _where(self) -> str:
        return f"the local model {self.model.path.name}"

    def _extra(self) -> str:
        return self._instructions("{glossary}{formality}").strip()

    def translate(self, lines: list[str]) -> list[str]:
        """Each non-empty line alone, after the `context_lines` before it and their translations."""
        system = TRANSLATE_PROMPT.format(source=_name(self.source), target=_name(self.target), extra=self._extra())
        out = [""] * len(lines)
        history: list[dict] = []
        for i, line in enumerate(lines):
            text = " ".join(line.split())
            if not text:
                continue
            turns = history[len(history) - 2 * self.context_lines :] if self.context_lines else []
            out[i] = self._reply([{"role": "system", "content": system}, *turns], text)
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": out[i]}]
        return out

    def post_edit(self, lines: list[str], drafts: list[str]) -> list[str]:
        """Each draft translation corrected with its source line beside it (translate.post_edit)."""
        names = {"source": _name(self.source), "target": _name(self.target)}
        system = POST_EDIT_PROMPT.format(**names, extra=self._extra())
        out = []
        for line, draft in zip(lines, drafts, strict=True):
            text = " ".join(line.split())
            if not text or not draft.strip():
                out.append(draft)
                continue
            asked = f"{names['source']}: {text}\nDraft: {' '.join(draft.split())}"
            out.append(
                re.sub(
                    r"^(Corrected|Draft|Translation)[^:]{0,30}:\s*",
                    "",
                    self._reply([{"role": "system", "content": system}], asked, text),
                )
            )
        return out

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        """The current translation rewritten to fit, when the model's rewrite is shorter."""
        found = []
        for request in requests:
            system = SHORTEN_PROMPT.format(target=_name(self.target), max_chars=request.max_chars, extra=self._extra())
            shorter = self._reply([{"role": "system", "content": system}], request.current)
            found.append([shorter] if len(shorter) < len(request.current) else [])
        return found

    def _reply(self, messages: list[dict], text: str, line: str | None = None) -> str:
        """The model's one-line answer to `text` (about `line`, its source, when `text` says more), asked again
        while it is unusable. The same question, not a complaint: told why a reply was unusable, a 1.5B model
        translated the complaint (Hindi, 2026-12-01)."""
        messages = [*messages, {"role": "user", "content": text}]
        line = line or text
        problem, replies = "", []
        for attempt in range(self.max_retries + 1):
            # A retry is penalised for repeating itself: a small model's unusable replies are mostly loops.
            content = self.model.chat(messages, max_tokens=64 + 3 * len(line), repeat_penalty=1.0 + 0.2 * attempt)
            try:
                return one_line(content, line)
            except MalformedReply as exc:
                problem = str(exc)
                replies.append(content)
                log.warning("translation reply %d unusable (%s): %r", attempt + 1, exc, content[:120])
        for content in replies:  # the first sentence of a runaway reply is usually the translation
            if found := first_sentence(content, line):
                log.warning("translation of %r cut to its first sentence: %r", line[:60], found)
                return found
        raise DubbingError(
            f"{self._where()} gave no usable translation of {text[:60]!r} in {self.max_retries + 1} tries: {problem}"
        )


SENTENCE_END = re.compile(r"(?<=[.!?।。！？])\s*")


def first_sentence(content: str, source: str) -> str | None:
    """The reply's first sentence when it is a plausible translation of `source` (not empty, not a runaway)."""
    first = next((line.strip() for line in content.splitlines() if line.strip()), "")
    sentence = SENTENCE_END.split(first, maxsplit=1)[0].strip(QUOTES + " ") if first else ""
    return sentence if sentence and len(sentence) <= 3 * len(source) + 30 else None


def one_line(content: str, source: str) -> str:
    """The reply as one clean line, or MalformedReply: empty, several sentences of commentary, or a runaway."""
    lines = [line.strip() for line in content.strip().splitlines() if line.strip()]
    if not lines:
        raise MalformedReply("the reply was empty")
    if len(lines) > 1 and len(" ".join(lines)) > 1.5 * len(source) + 20:
        raise MalformedReply("the reply had several lines; give the translation on one line")
    text = " ".join(" ".join(lines).split()).strip(QUOTES + " ")
    if len(text) > 3 * len(source) + 30:
        raise MalformedReply("the reply was far longer than the line")
    return text
