"""HTTP helpers shared by the API judges, sampling engines and trait generation.

Keys come from environment variables only; URLs shown in ids, reprs and messages go through
:func:`redact_url`, so credentials written into a URL never reach caches or logs.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)
T = TypeVar("T")

_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie", re.I)


class ClientError(RuntimeError):
    """An HTTP 4xx answer that retrying cannot fix (bad key, unknown model)."""


def redact_url(url: str) -> str:
    """``url`` without its userinfo and without query/fragment parameters named like secrets.

    >>> redact_url("http://user:secret@localhost:8000/v1?api_key=sk-1&x=2")
    'http://localhost:8000/v1?x=2'
    """
    text = str(url)
    bare = "://" not in text and not text.startswith("//")
    try:  # a URL without a scheme ("user:pw@host:8000/v1") is parsed as a network path
        parts = urlsplit("//" + text if bare else text)
        netloc = parts.netloc.rpartition("@")[2]
        out = urlunsplit((parts.scheme, netloc, parts.path, drop_secrets(parts.query), ""))
        if parts.fragment and (kept := drop_secrets(parts.fragment)):
            out += f"#{kept}"
    except ValueError:  # unparsable (e.g. a broken IPv6 host): strip what looks like userinfo
        return re.sub(r"^([^/?#]*//)?[^/?#]*@", r"\1", text).split("?")[0].split("#")[0]
    return out[2:] if bare and out.startswith("//") else out


def drop_secrets(params: str) -> str:
    """An ``a=1&b=2`` string without the parameters whose names look like credentials."""
    if not params:
        return params
    named = ((p, unquote(p.split("=", 1)[0].replace("+", " "))) for p in params.split("&"))
    return "&".join(p for p, name in named if not _SECRET_PARAM.search(name))


def check_timeout(value: Any, name: str = "timeout") -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_retries(value: Any, name: str = "retries") -> int:
    """``value`` as an int; ``ValueError`` unless it is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def failure_message(
    judge_id: str,
    failed: int,
    total: int,
    retries: int | None = None,
    last_error: BaseException | None = None,
) -> str:
    """The text of a judge-failure warning: how many rows stayed unscored, and why."""
    after = ""
    if retries is not None:
        tries = "retry" if retries == 1 else "retries"
        after = f" after {retries} {tries} ({retries + 1} attempt{'s' if retries else ''} each)"
    text = (
        f"{failed} of {total} rows could not be scored by {judge_id}{after}; they stay missing "
        "(NA) and are not cached, so a rerun retries them"
    )
    if last_error is not None:
        text += f". Last error: {type(last_error).__name__}: {last_error}"
    return text + ". Check the endpoint, or raise the judge's timeout/retries."


def openai_client(
    base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0
) -> openai.OpenAI:
    """An ``openai.OpenAI`` client keyed from ``$api_key_env`` (``EMPTY`` for a local server),
    with its own retries off: use :func:`call_with_retries`."""
    import openai

    key = os.environ.get(api_key_env)
    if not key:
        if base_url is None:
            raise RuntimeError(
                f"environment variable {api_key_env} is not set: export your API key there "
                "(or pass base_url= for a local OpenAI-compatible server)"
            )
        key = "EMPTY"
    return openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)


def call_with_retries(
    fn: Callable[[], T],
    *,
    retries: int = 4,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    what: str = "request",
) -> T:
    """``fn()``, retried on any exception but :class:`ClientError` with jittered exponential
    back-off; ``RuntimeError`` (chained) once ``retries + 1`` attempts failed."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return fn()
        except ClientError:
            raise
        except Exception as err:  # noqa: BLE001 - retried, then re-raised below
            last = err
            if attempt == retries:
                break
            delay = min(max_delay, base_delay * 2**attempt) * random.uniform(0.5, 1.0)
            logger.debug("%s failed (%s); retrying in %.2fs", what, type(err).__name__, delay)
            time.sleep(delay)
    raise RuntimeError(f"{what} failed after {retries + 1} attempts: {last}") from last


def post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> Any:
    """POST ``body`` as JSON and parse the reply; a 4xx other than 408/409/429 raises
    :class:`ClientError`, any other HTTP error ``RuntimeError`` (both name ``url``)."""
    data = json.dumps(body).encode("utf-8")
    headers = {**headers, "content-type": "application/json"}
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:500]
        message = f"HTTP {err.code} from {redact_url(url)}: {detail}"
        fatal = 400 <= err.code < 500 and err.code not in (408, 409, 429)
        raise (ClientError if fatal else RuntimeError)(message) from None
