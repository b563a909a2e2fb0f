"""What a credential looks like: API keys, tokens and passwords, recognised by their shape.

:func:`looks_like_credential` tells whether one string is shaped like a key (a known provider
prefix, a long hexadecimal string, or a long token mixing lower case, upper case and digits);
the config refuses such a value where a variable *name* is expected, without showing it.
:func:`url_has_credentials` finds ``user:password@`` in a URL. :func:`scrub` replaces every
credential-shaped part of a text (an answer or error message of a server, which may echo the
request's headers) with ``***`` before it is logged or raised.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"

# Prefixes of provider keys and tokens (OpenAI, Anthropic, Groq, Hugging Face, xAI, Google,
# GitHub, GitLab, Slack, AWS, Replicate, Perplexity, NVIDIA, Cerebras, Fireworks, Stripe, JWTs).
KEY_PREFIXES = (
    "sk-",
    "sk_",
    "rk_",
    "pk_",
    "gsk_",
    "hf_",
    "xai-",
    "AIza",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxa-",
    "xoxb-",
    "xoxp-",
    "xapp-",
    "AKIA",
    "ASIA",
    "r8_",
    "pplx-",
    "nvapi-",
    "csk-",
    "fw_",
    "eyJ",
)
# A prefix alone (``hf_TOKEN``) is a name; a key has at least this many characters after it.
MIN_KEY_BODY = 16
# Characters of keys and tokens (base64, base64url, hex and the separators providers use).
_TOKEN = r"[A-Za-z0-9_\-+/=.~]"
_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, KEY_PREFIXES)) + r")" + _TOKEN + f"{{{MIN_KEY_BODY},}}"
)
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9_\-+/=.~])" + _TOKEN + r"{20,}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
# "Bearer <token>", "Basic <base64>", "Token <token>" (HTTP Authorization values).
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token|apikey)(\s+)(" + _TOKEN + "{6,})")
# key=value and "key": "value" pairs whose key names a secret.
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (["']?(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd|pwd)["']?
    \s*[:=]\s*["']?)
    ([^\s"',;&}]+)
    """
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")


def looks_like_credential(value: str) -> bool:
    """Whether ``value`` is shaped like an API key or token rather than a name.

    True for a known provider prefix followed by at least :data:`MIN_KEY_BODY` characters,
    for 32 or more hexadecimal digits with at least one digit and one letter, for 20 or more
    token characters mixing lower case, upper case and digits, and for 32 or more token
    characters of which a fifth are digits. Environment variable names (``OPENAI_API_KEY``,
    ``AZURE_OPENAI_KEY_2``) are none of these.
    """
    value = value.strip()
    if _PREFIXED.fullmatch(value):
        return True
    if _HEX.fullmatch(value) and re.search(r"[0-9]", value) and re.search(r"[a-fA-F]", value):
        return True
    if re.fullmatch(_TOKEN + "+", value) is None:
        return False
    digits = sum(c.isdigit() for c in value)
    mixed_case = re.search(r"[a-z]", value) is not None and re.search(r"[A-Z]", value) is not None
    return (len(value) >= 20 and mixed_case and digits > 0) or (len(value) >= 32 and digits >= 0.2 * len(value))


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user name or password (``scheme://user:password@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return bool(parts.username or parts.password) or "@" in parts.netloc


def _opaque(token: str) -> bool:
    """Whether the word after an auth scheme is a token, not prose ("basic architecture")."""
    return len(token) >= 20 or not (token.isalpha() and (token.islower() or token.isupper() or token.istitle()))


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every credential-shaped part replaced by :data:`MASK`: the given
    ``secrets``, Authorization values, ``password=...``-style pairs, ``user:password@`` in
    URLs, prefixed provider keys and other key-shaped tokens."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + MASK if _opaque(m.group(3)) else m.group(0), text)
    text = _SECRET_PAIR.sub(lambda m: m.group(1) + MASK, text)
    text = _PREFIXED.sub(MASK, text)
    return _CANDIDATE.sub(lambda m: MASK if looks_like_credential(m.group(0)) else m.group(0), text)
