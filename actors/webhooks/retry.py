"""What to do after one webhook POST: deliver, retry, wait for the endpoint, or give up.

Pure functions, no I/O (the dispatcher acts on the verdict). The rules follow
how n8n really answers, not only the status code (issue #25):

- While n8n starts, and whenever a workflow is deactivated or re-published, its
  webhook answers 404 for a few seconds: Express's HTML `Cannot POST /webhook/x`,
  then JSON `{"code":404,"message":"The requested webhook \"POST x\" is not
  registered.", ...}`. Those are temporary: retried with back-off like a 5xx.
- Any 404 (and a 410 carrying n8n's "not registered" body) within
  `not_found_grace` seconds of the first failure of that URL is retried too.
  Past the grace the URL is "endpoint missing": its jobs wait (never dead)
  until the URL changes, the endpoint answers again or an operator acts.
- Timeouts, connection errors, 429 and 5xx are retried within the attempt and
  age budget; other 4xx (400, 401, 403, a plain 410, 413, 422, ...) are permanent.

The grace is measured from the first failure of the URL's current failing
streak (any kind of failure: n8n restarting refuses connections before it 404s),
and that streak ends with the URL's next success.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["delivered", "retry", "wait", "failed", "dead"]

# What an answer is, for the rules above and for the fixed reasons n8n-status shows
# (never the receiver's body: it may come from a host that must not be read back).
AnswerKind = Literal[
    "ok",
    "n8n_not_registered",
    "n8n_starting",
    "not_found",
    "gone",
    "rate_limited",
    "server_error",
    "client_error",
    "redirect",
    "no_answer",
    "unsendable",
]

FIXED_REASONS: dict[AnswerKind, str] = {
    "ok": "delivered",
    "n8n_not_registered": "n8n: webhook not registered (workflow inactive or n8n starting)",
    "n8n_starting": "n8n: webhook route not ready (n8n starting)",
    "not_found": "endpoint answered 404 Not Found",
    "gone": "endpoint answered 410 Gone",
    "rate_limited": "endpoint answered 429 Too Many Requests",
    "server_error": "endpoint answered a server error (5xx)",
    "client_error": "endpoint refused the request (4xx)",
    "redirect": "endpoint answered a redirect (not followed)",
    "no_answer": "no HTTP answer (timeout or connection error)",
    "unsendable": "not sent (invalid or refused target URL)",
}

# n8n's JSON answer for a webhook path without an active workflow (seen on 1.x and 2.x).
_NOT_REGISTERED = re.compile(r"webhook\s.{0,200}\bis not registered", re.IGNORECASE | re.DOTALL)
# Express's default 404 page, served by n8n before its webhook routes exist.
_CANNOT_POST = re.compile(r"<pre>\s*Cannot POST\s", re.IGNORECASE)


def classify(status_code: int | None, body_head: str = "", *, sent: bool = True) -> AnswerKind:
    """The kind of one answer, from its status and the start of its body.

    No status: "no_answer" (timeout, connection error: worth another try), or
    "unsendable" when `sent` is false (invalid or refused URL: trying again is futile).
    """
    if status_code is None:
        return "no_answer" if sent else "unsendable"
    if 200 <= status_code < 300:
        return "ok"
    if status_code in (404, 410) and _NOT_REGISTERED.search(body_head):
        return "n8n_not_registered"
    if status_code == 404 and _CANNOT_POST.search(body_head):
        return "n8n_starting"
    if status_code == 404:
        return "not_found"
    if status_code == 410:
        return "gone"
    if status_code == 429:
        return "rate_limited"
    if status_code >= 500:
        return "server_error"
    if 300 <= status_code < 400:
        return "redirect"
    return "client_error"


def fixed_reason(status_code: int | None, kind: AnswerKind) -> str:
    """The error text stored and shown for an answer: status code and a fixed reason."""
    reason = FIXED_REASONS[kind]
    return reason if status_code is None else f"HTTP {status_code}: {reason}"


def shown_error(status_code: int | None, error: str | None) -> str | None:
    """A stored error as the API may show it: ours are fixed texts; an older row that
    kept the start of the receiver's body shows the code and its generic reason."""
    if error is None or status_code is None:
        return error
    head, _, reason = error.partition(": ")
    if head == f"HTTP {status_code}" and reason in FIXED_REASONS.values():
        return error
    return fixed_reason(status_code, classify(status_code))


_NOT_FOUND_KINDS = frozenset({"n8n_not_registered", "n8n_starting", "not_found"})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One finished POST as the policy sees it."""

    status_code: int | None
    kind: AnswerKind
    attempt: int  # 1 for the job's first attempt
    job_age_s: float  # seconds since the job was created (or requeued)
    streak_age_s: float  # seconds since the first failure of the URL's failing streak
    retry_after_s: float | None = None  # from a Retry-After header


@dataclass(frozen=True, slots=True)
class RetryRules:
    max_attempts: int
    max_age_s: float
    not_found_grace_s: float


def decide(attempt: Attempt, rules: RetryRules, backoff_s: float) -> tuple[Verdict, float]:
    """(verdict, seconds until the next attempt) for one POST.

    `backoff_s` is the delay the caller's back-off gives this attempt number.
    "failed" is a permanent refusal; "dead" is a retryable failure out of budget;
    "wait" parks the job until its endpoint exists again.
    """
    kind = attempt.kind
    if kind == "ok":
        return "delivered", 0.0
    delay = attempt.retry_after_s if attempt.retry_after_s is not None else backoff_s
    if kind in _NOT_FOUND_KINDS:
        # Bounded by the grace, not by the attempt budget: a not-found never kills a job.
        if attempt.streak_age_s <= rules.not_found_grace_s:
            return "retry", delay
        return "wait", 0.0
    if kind not in ("no_answer", "rate_limited", "server_error"):
        return "failed", 0.0
    if attempt.attempt >= rules.max_attempts or attempt.job_age_s + delay > rules.max_age_s:
        return "dead", 0.0
    return "retry", delay
