"""Class descriptions from a large language model behind any OpenAI-compatible endpoint.

The model is asked for JSON (``response_format={"type": "json_object"}``). A template with a
``{class_name}`` placeholder is sent once per class and must return
``{"descriptions": [...]}``; a template with only ``{classes}`` is sent once and must return
``{"<class>": [...], ...}`` for every class. ``{n}`` is the number wanted per class. Answers are
stripped and de-duplicated and must give at least ``n`` distinct descriptions per class.

Answers are untrusted and bounded: each request caps the answer's length (``max_tokens``),
descriptions longer than ``MAX_DESCRIPTION_CHARS`` are dropped, and only the first ``n`` of
a class are kept.

Rate limits (429), request time-outs (408), server errors (5xx), client time-outs, connection
errors and malformed answers are retried with exponential backoff (``backoff_s · 2^attempt``,
or the server's Retry-After); after ``max_retries`` retries an :class:`LLMError` says what went
wrong. Other HTTP errors (401, 404, ...) fail at once.

The API key is read from the environment variable named by ``api_key_env``. It is never
logged and never written: every message logged during the calls, and every error raised, has
the key and any other credential-shaped text (a server may echo the request's Authorization
header or a password) replaced by ``***`` (:func:`hmf.credentials.scrub`); HTTP client loggers
are held at WARNING during the calls so request headers are never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hmf.credentials import scrub
from hmf.text.bank import clean_descriptions
from hmf.text.settings import LLMSettings

log = logging.getLogger(__name__)

SYSTEM_MESSAGE = "You answer with a single valid JSON object and nothing else."
HTTP_LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "urllib3")
MAX_BACKOFF_S = 60.0
RETRY_STATUS = (408, 429)  # plus every 5xx
# The built-in template asks for one sentence of 15-40 words (about 300 characters).
MAX_DESCRIPTION_CHARS = 1000
# Answer budget per description (a token is about 4 characters) and for the JSON around them.
TOKENS_PER_DESCRIPTION = MAX_DESCRIPTION_CHARS // 3
TOKENS_OVERHEAD = 256


class LLMError(RuntimeError):
    """The LLM could not deliver valid descriptions."""


class MalformedOutput(ValueError):
    """The LLM answered, but not with the JSON asked for."""


def render(template: str, classes: list[str], class_name: str | None, n: int) -> str:
    """Fill the placeholders by plain replacement, so JSON braces in a template need no escaping."""
    text = template.replace("{classes}", ", ".join(classes)).replace("{n}", str(n))
    if class_name is not None:
        text = text.replace("{class_name}", class_name)
    return text


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def _pick_list(obj: dict, class_name: str) -> Any:
    """The list of descriptions for ``class_name`` in a per-class answer."""
    for key in ("descriptions", class_name):
        if key in obj:
            return obj[key]
    by_norm = {_norm(k): v for k, v in obj.items()}
    if _norm(class_name) in by_norm:
        return by_norm[_norm(class_name)]
    lists = [v for v in obj.values() if isinstance(v, list)]
    if len(lists) == 1:
        return lists[0]
    raise MalformedOutput(f"no 'descriptions' list in the answer (keys: {sorted(obj)})")


def parse_answer(content: str | None, classes: list[str], n: int) -> dict[str, list[str]]:
    """Parse one answer into class -> descriptions for ``classes``; raise MalformedOutput if invalid.

    With one class the answer may be ``{"descriptions": [...]}``; otherwise a mapping that holds
    every class (matched ignoring case and spacing), optionally wrapped in ``descriptions``.
    """
    if not content or not content.strip():
        raise MalformedOutput("empty answer")
    text = content.strip()
    if text.startswith("```"):  # some endpoints wrap JSON in a code fence despite json mode
        text = text.strip("`").removeprefix("json").strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise MalformedOutput(f"answer is not JSON ({err}): {text[:200]!r}") from None
    if not isinstance(obj, dict):
        raise MalformedOutput(f"answer is a JSON {type(obj).__name__}, expected an object")
    if len(classes) == 1:
        raw = {classes[0]: _pick_list(obj, classes[0])}
    else:
        if isinstance(obj.get("descriptions"), dict):
            obj = obj["descriptions"]
        by_norm = {_norm(k): v for k, v in obj.items()}
        missing = [c for c in classes if _norm(c) not in by_norm]
        if missing:
            raise MalformedOutput(f"answer lacks classes {missing} (keys: {sorted(obj)})")
        raw = {c: by_norm[_norm(c)] for c in classes}
    out = {}
    for name, items in raw.items():
        try:
            texts = clean_descriptions(items, f"class {name!r}")
        except ValueError as err:
            raise MalformedOutput(str(err)) from None
        long = [t for t in texts if len(t) > MAX_DESCRIPTION_CHARS]
        if long:
            log.warning(
                "class %r: dropped %d description(s) longer than %d characters", name, len(long), MAX_DESCRIPTION_CHARS
            )
            texts = [t for t in texts if len(t) <= MAX_DESCRIPTION_CHARS]
        if len(texts) < n:
            raise MalformedOutput(
                f"class {name!r}: {len(texts)} distinct non-empty descriptions of at most "
                f"{MAX_DESCRIPTION_CHARS} characters, need {n}"
            )
        out[name] = texts[:n]
    return out


def max_answer_tokens(n_classes: int, n_per_class: int) -> int:
    """The answer length allowed for one request (``max_tokens``)."""
    return TOKENS_OVERHEAD + n_classes * n_per_class * TOKENS_PER_DESCRIPTION


class _Redact(logging.Filter):
    """Replaces the key and every credential-shaped part of a log record's message by ``***``."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message, self.secret)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


@contextlib.contextmanager
def _guard_logs(secret: str) -> Iterator[None]:
    """Keep HTTP client loggers at WARNING (no request headers) and scrub credentials from every handler."""
    saved = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    redact = _Redact(secret)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(redact)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redact)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def public_url(url: str | None) -> str:
    """``url`` without any user:password part, for messages and provenance."""
    if not url:
        return "the default OpenAI endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def api_key(settings: LLMSettings) -> str:
    key = os.environ.get(settings.api_key_env, "")
    if not key:
        raise LLMError(
            f"environment variable {settings.api_key_env} is not set: export the API key of the "
            f"endpoint in it (text.llm.api_key_env names the variable; any non-empty value for "
            f"endpoints without authentication)"
        )
    return key


def _ask(client, settings: LLMSettings, prompt: str, job: list[str], extra: dict[str, Any]) -> dict[str, list[str]]:
    """One chat-completions request; the parsed descriptions of the classes in ``job``."""
    reply = client.chat.completions.create(
        model=settings.model,
        messages=[{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt}],
        response_format={"type": "json_object"},
        max_tokens=max_answer_tokens(len(job), settings.n_per_class),
        **extra,
    )
    if not reply.choices:
        raise MalformedOutput("answer has no choices")
    return parse_answer(reply.choices[0].message.content, job, settings.n_per_class)


def generate_descriptions(
    classes: list[str] | tuple[str, ...], settings: LLMSettings
) -> tuple[dict[str, list[str]], int]:
    """Ask the LLM for descriptions of every class; return (class -> descriptions, requests made).

    Raises LLMError after the retries are spent or on a non-retryable HTTP error.
    """
    import openai

    classes = list(classes)
    key = api_key(settings)
    client = openai.OpenAI(
        api_key=key,
        base_url=settings.base_url or None,
        timeout=settings.timeout_s,
        max_retries=0,  # retries (malformed answers included) are handled here
    )
    extra: dict[str, Any] = {"temperature": settings.temperature}
    if settings.seed is not None:
        extra["seed"] = settings.seed
    endpoint = public_url(settings.base_url)
    jobs = [[c] for c in classes] if settings.per_class else [classes]
    result: dict[str, list[str]] = {}
    requests = 0
    with _guard_logs(key):
        for job in jobs:
            prompt = render(settings.template, classes, job[0] if settings.per_class else None, settings.n_per_class)
            last_error = "no attempt made"
            wait_s = settings.backoff_s
            for attempt in range(settings.max_retries + 1):
                if attempt:
                    time.sleep(min(MAX_BACKOFF_S, wait_s))
                    wait_s = settings.backoff_s * 2**attempt
                requests += 1
                try:
                    result.update(_ask(client, settings, prompt, job, extra))
                    break
                except MalformedOutput as err:
                    last_error = f"malformed answer: {scrub(str(err), key)}"
                except openai.APITimeoutError:
                    last_error = f"no answer within timeout_s={settings.timeout_s}"
                except openai.APIConnectionError as err:
                    last_error = f"connection error: {scrub(str(err), key)}"
                except openai.APIStatusError as err:
                    last_error = f"HTTP {err.status_code}: {scrub(str(err.message), key)}"
                    if err.status_code not in RETRY_STATUS and err.status_code < 500:
                        raise LLMError(
                            f"{endpoint} refused the request for model {settings.model!r}: {last_error}"
                        ) from None
                    wait_s = max(wait_s, _retry_after(err) or 0.0)
                log.warning(
                    "LLM request for %s failed (attempt %d of %d): %s",
                    job,
                    attempt + 1,
                    settings.max_retries + 1,
                    last_error,
                )
            else:
                raise LLMError(
                    f"no valid descriptions for classes {job} from model {settings.model!r} at {endpoint} "
                    f"after {settings.max_retries + 1} attempts; last error: {last_error}"
                )
    return {c: result[c] for c in classes}, requests
