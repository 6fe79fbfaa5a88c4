"""Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, llama.cpp server) as a translator.

Lines go in small batches with their neighbours as context, the glossary and formality in the instructions, and
the reply must be JSON of a fixed shape: a reply that does not parse or has the wrong number of lines is sent
back with the reason and retried. The API key is read from the environment variable or the Prefect Secret block
the config names (dubbing.secrets), never from the config itself.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Literal

import httpx
from pydantic import Field

from dubbing.backends import NoOptions
from dubbing.config import language_name
from dubbing.errors import DubbingError
from dubbing.secrets import read_secret
from dubbing.translate.base import ShortenRequest

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You translate the spoken lines of a video for dubbing. Translate each line of `lines` from {source} to "
    "{target}, naturally and as it would be spoken, about as long as the original (it must fit the same time). "
    "`context_before` and `context_after` are neighbouring lines, for meaning only: do not translate them. "
    '{glossary}{formality}Reply with JSON only: {{"translations": [one string per line, same order]}}.'
)
SHORTEN_PROMPT = (
    "You condense dubbing lines. Give up to 3 renderings in {target} of the {source} `line`, each at most "
    "{max_chars} characters, keeping its meaning, names and numbers; drop only what a listener would not miss. "
    "`context_before` and `context_after` are neighbouring lines. {glossary}{formality}"
    'Reply with JSON only: {{"candidates": [strings, most faithful first]}}.'
)


TRANSIENT = {429, 500, 502, 503, 504}  # rate limits and overloaded servers: worth asking again
BACKOFF_S = 0.5


class MalformedReply(ValueError):
    """The model's reply is not the JSON asked for (the message says why, and goes back to the model)."""


class ChatTranslator:
    """What every chat-model translator shares: the instructions, the batches with their context, the JSON reply
    checked and sent back with the reason while malformed. A subclass supplies `_complete` (one chat completion)."""

    source: str
    target: str
    glossary: dict[str, str]
    formality: str
    max_retries: int
    batch_size: int
    context_lines: int
    pivot = None

    def _complete(self, messages: list[dict], schema: dict) -> str:
        """The model's reply to `messages`; `schema` is the JSON shape asked for (a backend may enforce it)."""
        raise NotImplementedError

    def _where(self) -> str:
        """The model, for error messages."""
        raise NotImplementedError

    def _instructions(self, template: str, **extra: object) -> str:
        glossary = ""
        if self.glossary:
            pairs = "; ".join(f'"{s}" stays "{t}"' if s == t else f'"{s}" -> "{t}"' for s, t in self.glossary.items())
            glossary = f"Glossary, always use these renderings: {pairs}. "
        formality = "" if self.formality == "default" else f"Use the {self.formality} form of address. "
        return template.format(
            source=_name(self.source),
            target=_name(self.target),
            glossary=glossary,
            formality=formality,
            **extra,
        )

    def _context(self, lines: list[str], start: int, stop: int) -> dict[str, list[str]]:
        return {
            "context_before": lines[max(0, start - self.context_lines) : start],
            "context_after": lines[stop : stop + self.context_lines],
        }

    def translate(self, lines: list[str]) -> list[str]:
        """Non-empty lines in batches of `batch_size`, each with the lines around it as context."""
        out = [""] * len(lines)
        todo = [i for i, line in enumerate(lines) if line.strip()]
        spoken = [lines[i] for i in todo]
        system = self._instructions(SYSTEM_PROMPT)
        for start in range(0, len(spoken), self.batch_size):
            chunk = spoken[start : start + self.batch_size]
            payload = {**self._context(spoken, start, start + len(chunk)), "lines": chunk}
            done = self._ask(system, payload, "translations", len(chunk))
            for i, text in zip(todo[start : start + len(chunk)], done, strict=True):
                out[i] = text
        return out

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        """One rewrite request per line, with its neighbours, current translation and target length."""
        return [self._shorten_one(lines, r) for r in requests]

    def _shorten_one(self, lines: list[str], request: ShortenRequest) -> list[str]:
        system = self._instructions(SHORTEN_PROMPT, max_chars=request.max_chars)
        payload = {
            **self._context(lines, request.index, request.index + 1),
            "line": lines[request.index],
            "current_translation": request.current,
            "max_characters": request.max_chars,
        }
        return self._ask(system, payload, "candidates", None)

    def _ask(self, system: str, payload: dict, key: str, count: int | None) -> list[str]:
        """One request for a list of `count` strings (any number when None) under `key`, retried with the reason
        while the reply is malformed."""
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": json.dumps(payload, ensure_ascii=False)},
        ]
        schema = strings_schema(key, count)
        problem = ""
        for attempt in range(self.max_retries + 1):
            content = self._complete(messages, schema)
            try:
                return _strings(_json_object(content), key, count)
            except MalformedReply as exc:
                problem = str(exc)
                log.warning("translation reply %d malformed (%s)", attempt + 1, exc)
                messages += [
                    {"role": "assistant", "content": content},
                    {"role": "user", "content": f"That reply was invalid: {exc}. Reply again with the JSON only."},
                ]
        raise DubbingError(f"{self._where()} gave malformed JSON {self.max_retries + 1} times; last: {problem}")


class OpenAICompatibleTranslator(ChatTranslator):
    """A chat model told what to do: the glossary and formality go into its instructions ("instructions")."""

    name = "openai-compatible"
    capabilities = frozenset({"instructions"})

    class Options(NoOptions):
        base_url: str | None = None  # e.g. http://localhost:11434/v1 (required)
        api_key_env: str | None = None  # the environment variable that holds the API key
        api_key_secret: str | None = None  # or the Prefect Secret block that does
        formality: Literal["default", "formal", "informal"] = "default"  # the form of address it is asked for
        timeout_s: float = Field(60.0, gt=0, le=600)  # per request
        max_retries: int = Field(2, ge=0, le=10)
        batch_size: int = Field(8, ge=1, le=100)  # lines per request

    @staticmethod
    def routes() -> str:
        """The pairs it translates, for error messages."""
        return "any pair your server's model knows"

    def __init__(
        self,
        *,
        source: str,
        target: str,
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        api_key_secret: str | None = None,
        glossary: dict[str, str] | None = None,
        formality: str = "default",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        batch_size: int = 8,
        context_lines: int = 2,
    ) -> None:
        if not base_url or not model:
            raise DubbingError(
                "openai-compatible translation needs translate.options.base_url and translate.model in the language "
                "config (e.g. options: {base_url: http://localhost:11434/v1}, model: qwen2.5:7b)"
            )
        self.source, self.target, self.model = source, target, model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.glossary = dict(glossary or {})
        self.formality = formality
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.batch_size, self.context_lines = batch_size, context_lines
        headers = {"Content-Type": "application/json"}
        key = read_secret(env=api_key_env, block=api_key_secret, what="translate.options.api_key_env/api_key_secret")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=timeout_s)

    def _where(self) -> str:
        return f"{self.url} (model {self.model})"

    def _complete(self, messages: list[dict], schema: dict) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            response = self._send(body, last_try=attempt == self.max_retries)
            if response is not None and (response.status_code not in TRANSIENT or attempt == self.max_retries):
                break
            if response is not None:
                log.warning(
                    "translation server answered HTTP %d (%s); retrying",
                    response.status_code,
                    response.text.strip()[:200],
                )
            time.sleep(BACKOFF_S * 2**attempt)
        assert response is not None  # _send raises instead of giving None on the last try
        if response.status_code != 200:
            raise DubbingError(
                f"translation server {self.url} answered HTTP {response.status_code}: {response.text.strip()[:200]}"
            )
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise DubbingError(
                f"{self.url} is not an OpenAI-compatible chat-completions endpoint: {response.text[:200]}"
            ) from None

    def _send(self, body: dict, *, last_try: bool) -> httpx.Response | None:
        """The server's response; None after a timeout or a lost connection that is worth trying again, a one-line
        error on the last try."""
        tries = self.max_retries + 1
        try:
            return self.client.post(self.url, json=body)
        except httpx.TimeoutException:
            if last_try:
                raise DubbingError(
                    f"translation server {self.url} did not answer within {self.timeout_s:g}s in {tries} tries "
                    f"(model {self.model}); raise translate.options.timeout_s or check the server"
                ) from None
            log.warning("translation server %s did not answer within %gs; retrying", self.url, self.timeout_s)
        except httpx.TransportError as exc:
            if last_try:
                raise DubbingError(f"cannot reach translation server {self.url} in {tries} tries: {exc}") from None
            log.warning("cannot reach translation server %s (%s); retrying", self.url, exc)
        return None


def _name(code: str) -> str:
    """How the instructions name a language: its record's name, else its code."""
    return language_name(code) or f"the language with ISO 639-1 code {code!r}"


def _json_object(content: str) -> dict:
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", content.strip())
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedReply(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedReply("expected a JSON object")
    return data


def strings_schema(key: str, count: int | None) -> dict:
    """The JSON schema of a reply holding a list of strings under `key` (exactly `count` when given)."""
    items: dict = {"type": "array", "items": {"type": "string"}, "minItems": count or 1}
    if count is not None:
        items["maxItems"] = count
    return {"type": "object", "properties": {key: items}, "required": [key]}


def _strings(reply: dict, key: str, count: int | None) -> list[str]:
    items = reply.get(key)
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise MalformedReply(f'expected "{key}" to be a list of strings')
    if count is not None and len(items) != count:
        raise MalformedReply(f'expected {count} items in "{key}", got {len(items)}')
    return [" ".join(s.split()) for s in items]
