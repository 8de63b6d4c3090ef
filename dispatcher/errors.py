"""One tree of errors: DispatchError → Retryable / Permanent / Fatal (and usage errors).

Errors carry data (HTTP status, gateway explanation, transaction id) and also inherit
the matching builtin (``ValueError``, ``OSError``, ``TimeoutError``), as aiohttp's own
client exceptions do. None of them ever holds the API key.
"""

from __future__ import annotations


class DispatchError(Exception):
    """Base of every error the dispatcher raises on purpose."""


# --- usage and configuration -------------------------------------------------------


class ConfigError(DispatchError, ValueError):
    """The configuration or the command line is wrong; the message says what to fix.

    The CLI turns it into exit code 2.
    """


# --- per-recipient input problems (never stop the run) -----------------------------


class PermanentError(DispatchError):
    """Retrying cannot help: the same input will fail the same way."""


class InvalidNumber(PermanentError, ValueError):
    """A destination number that is not E.164; the message is the reason."""


class RenderError(PermanentError, ValueError):
    """A template could not be rendered for a recipient (missing or unusable param)."""


# --- gateway answers ---------------------------------------------------------------


class GatewayError(DispatchError):
    """The gateway (or the road to it) failed a request.

    ``status`` is the HTTP status when there was a response, ``explain`` the gateway's
    ``meta.explain`` when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        explain: str | None = None,
        transaction_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.explain = explain
        self.transaction_id = transaction_id


class RetryableError(GatewayError):
    """A failure that may succeed if tried again.

    ``safe`` says whether the gateway certainly did *not* act on the request (nothing
    was sent, or it answered 408/429/503). An unsafe (ambiguous) failure may have
    texted people already: it is retried only with an idempotency key the gateway
    honours, or when the user opts in with ``--retry-ambiguous``.
    """

    #: Short label used to count retries by cause in the summary.
    cause = "error"
    safe = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        cause: str | None = None,
        status: int | None = None,
        explain: str | None = None,
        transaction_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, explain=explain, transaction_id=transaction_id)
        self.retry_after = retry_after
        if cause is not None:
            self.cause = cause


class ConnectError(RetryableError, OSError):
    """Could not connect or the request never left: safe to retry."""

    cause = "connect"
    safe = True


class ConnectionLost(RetryableError, OSError):
    """The connection dropped after the request was sent: the gateway may have acted."""

    cause = "disconnect"


class RequestTimeout(RetryableError, TimeoutError):
    """No answer in time after sending: the gateway may have acted."""

    cause = "timeout"


class RateLimited(RetryableError):
    """429 Too Many Requests: nothing was recorded, slow down and retry."""

    cause = "429"
    safe = True


class Unavailable(RetryableError):
    """408 or 503: the gateway refused before acting; safe to retry."""

    cause = "503"
    safe = True


class ServerError(RetryableError):
    """500/502/504: the gateway may or may not have acted."""

    cause = "5xx"


class BadResponse(RetryableError):
    """A 2xx answer that cannot be read or does not match the batch: the gateway
    probably acted, but we cannot tell which messages it accepted."""

    cause = "bad-response"


class BatchTooLarge(PermanentError, GatewayError):
    """413: the gateway refuses a batch this big; the sender splits it in two."""


class RequestRejected(PermanentError, GatewayError):
    """400, 422 or another 4xx: the gateway refused the request as it is.

    ``gateway_status`` is the status the gateway named in ``data.status`` (such as
    ``CODE_NOT_ALLOWED`` or ``SEGMENTS_EXCEEDED``) and ``invalid`` the numbers it
    listed in ``data.invalidNumber``, when it gave them.
    """

    def __init__(
        self,
        message: str,
        *,
        gateway_status: str | None = None,
        invalid: list[str] | None = None,
        status: int | None = None,
        explain: str | None = None,
        transaction_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, explain=explain, transaction_id=transaction_id)
        self.gateway_status = gateway_status
        self.invalid = invalid or []


# --- fatal: stop the run -----------------------------------------------------------


class FatalError(DispatchError):
    """The run cannot go on; everything already done is written, then exit 3."""

    exit_code = 3


class AuthError(FatalError, GatewayError):
    """401/403: the API key was refused."""


class OutputError(FatalError, OSError):
    """An output file cannot be written (permissions, disk full)."""


class InputError(FatalError, OSError):
    """The input cannot be read on (missing file, truncated gzip stream).

    Every line read before the failure still gets its result.
    """


class GatewayUnreachable(FatalError, OSError):
    """Every attempt to connect failed: going on would only mark every line FAILED.

    The batches that could not be sent stay unsent in the journal, so ``--resume``
    sends them once the gateway is back.
    """
