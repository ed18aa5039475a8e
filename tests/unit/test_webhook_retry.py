"""The retry rules against answers a real n8n gives (issue #25), table by table."""

from __future__ import annotations

import pytest

from actors.webhooks.retry import (
    AnswerKind,
    Attempt,
    RetryRules,
    Verdict,
    classify,
    decide,
    fixed_reason,
    shown_error,
)

# Express's page while n8n 2.8 starts (before its webhook routes exist).
N8N_STARTING_HTML = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    "<title>Error</title>\n</head>\n<body>\n<pre>Cannot POST /webhook/pump-alerts</pre>\n"
    "</body>\n</html>\n"
)
# n8n's answer while the workflow is inactive (starting, deactivated, re-published).
N8N_NOT_REGISTERED = (
    '{"code":404,"message":"The requested webhook \\"POST pump-alerts\\" is not registered.",'
    '"hint":"The workflow must be active for a production URL to run successfully. You can'
    " activate the workflow using the toggle in the top-right of the editor. Note that unlike"
    " test URL calls, production URL calls aren't shown on the canvas (only in the executions"
    ' list)"}'
)
N8N_TEST_URL_NOT_REGISTERED = (
    '{"code":404,"message":"The requested webhook \\"pump-alerts\\" is not registered.",'
    '"hint":"Click the \'Execute workflow\' button on the canvas, then try again."}'
)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, '{"message":"Workflow was started"}', "ok"),
        (204, "", "ok"),
        (404, N8N_STARTING_HTML, "n8n_starting"),
        (404, N8N_NOT_REGISTERED, "n8n_not_registered"),
        (404, N8N_TEST_URL_NOT_REGISTERED, "n8n_not_registered"),
        (410, N8N_NOT_REGISTERED, "n8n_not_registered"),
        (404, "<html><body>nginx: not found</body></html>", "not_found"),
        (404, "", "not_found"),
        (410, "gone for good", "gone"),
        (429, "", "rate_limited"),
        (500, '{"code":0,"message":"Error in workflow"}', "server_error"),
        (502, "Bad Gateway", "server_error"),
        (503, "", "server_error"),
        (301, "", "redirect"),
        (400, "bad request", "client_error"),
        (401, "Authorization data is wrong!", "client_error"),
        (403, "Forbidden", "client_error"),
        (413, "request entity too large", "client_error"),
        (None, "", "no_answer"),
    ],
)
def test_answers_are_classified_by_status_and_n8n_body(
    status: int | None, body: str, kind: AnswerKind
) -> None:
    assert classify(status, body) == kind


def test_an_answer_that_was_never_sent_is_not_a_missing_answer() -> None:
    assert classify(None, sent=False) == "unsendable"


RULES = RetryRules(max_attempts=5, max_age_s=3600, not_found_grace_s=300)


def _attempt(
    status: int | None,
    body: str = "",
    *,
    attempt: int = 1,
    job_age: float = 1.0,
    streak_age: float = 0.0,
    retry_after: float | None = None,
) -> Attempt:
    return Attempt(status, classify(status, body), attempt, job_age, streak_age, retry_after)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        # A restarting n8n: every answer of the outage is retried, none kills the job.
        (_attempt(None), "retry"),
        (_attempt(404, N8N_STARTING_HTML, streak_age=1.5), "retry"),
        (_attempt(404, N8N_NOT_REGISTERED, streak_age=2.5), "retry"),
        (_attempt(200, '{"message":"Workflow was started"}', streak_age=3.0), "delivered"),
        # Within the grace a 404 is retried even beyond the attempt budget.
        (_attempt(404, N8N_NOT_REGISTERED, attempt=9, streak_age=299.0), "retry"),
        (_attempt(404, "Not Found", streak_age=10.0), "retry"),
        (_attempt(410, N8N_NOT_REGISTERED, streak_age=10.0), "retry"),
        # Past the grace the endpoint is missing: the job waits, it is not dead.
        (_attempt(404, N8N_NOT_REGISTERED, streak_age=301.0), "wait"),
        (_attempt(404, N8N_STARTING_HTML, streak_age=301.0), "wait"),
        (_attempt(404, "Not Found", streak_age=3600.0, attempt=50), "wait"),
        (_attempt(410, N8N_NOT_REGISTERED, streak_age=301.0), "wait"),
        # Other refusals stay permanent, whatever the streak.
        (_attempt(410, "gone"), "failed"),
        (_attempt(400, "bad request"), "failed"),
        (_attempt(401, "Authorization data is wrong!"), "failed"),
        (_attempt(403, "Forbidden"), "failed"),
        (_attempt(301), "failed"),
        (Attempt(None, "unsendable", 1, 1.0, 0.0), "failed"),
        # Transient failures: retried within the attempt and age budget, then dead.
        (_attempt(500, streak_age=1000.0), "retry"),
        (_attempt(503, attempt=4), "retry"),
        (_attempt(503, attempt=5), "dead"),
        (_attempt(None, attempt=5), "dead"),
        (_attempt(429, retry_after=30.0), "retry"),
        (_attempt(429, job_age=3590.0, retry_after=30.0), "dead"),
    ],
)
def test_each_answer_gets_its_verdict(answer: Attempt, verdict: Verdict) -> None:
    assert decide(answer, RULES, backoff_s=1.0)[0] == verdict


def test_retry_after_wins_over_back_off_and_not_found_waits_the_back_off() -> None:
    assert decide(_attempt(429, retry_after=7.0), RULES, backoff_s=1.0) == ("retry", 7.0)
    assert decide(_attempt(404, N8N_NOT_REGISTERED), RULES, backoff_s=2.5) == ("retry", 2.5)
    assert decide(_attempt(404, streak_age=400.0), RULES, backoff_s=2.5) == ("wait", 0.0)


def test_the_stored_reason_is_fixed_text_never_the_receivers_body() -> None:
    secret = '{"AccessKeyId":"ASIA...","SecretAccessKey":"abc"}'
    reason = fixed_reason(404, classify(404, secret))
    assert reason == "HTTP 404: endpoint answered 404 Not Found"
    assert "Secret" not in fixed_reason(500, classify(500, secret))
    assert fixed_reason(None, "no_answer").startswith("no HTTP answer")


def test_errors_stored_before_the_fixed_reasons_are_shown_without_the_body() -> None:
    old = 'HTTP 500: {"Code":"Success","AccessKeyId":"ASIA..."}'
    assert shown_error(500, old) == "HTTP 500: endpoint answered a server error (5xx)"
    ours = fixed_reason(404, "n8n_not_registered")
    assert shown_error(404, ours) == ours
    assert shown_error(None, "no answer within 10.0s") == "no answer within 10.0s"
