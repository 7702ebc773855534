"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) that rides out a flaky hospital network.

Every request is retried on what a network or a busy PACS does for a while
(refused or dropped connections, timeouts, HTTP 408/429/5xx), with
exponential backoff and jitter, honouring ``Retry-After``; anything else
(404, 400, a study the server rejects) fails at once. A retry redoes the whole
transaction (a half-received study is fetched again, a push is sent again:
SR UIDs are fixed per study, so the PACS replaces rather than duplicates).
Retries are counted so the run summary can say how often the network failed.

dicomweb-client's own retrying is switched off: it retries only some status
codes, never connection errors, and cannot be counted.
"""

from __future__ import annotations

import errno
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

from medplug.errors import MedplugError

log = logging.getLogger("medplug.batch")
T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # as stored: no transcoding on the server


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one DICOMweb transaction (picklable: worker processes get a copy).

    The defaults wait at least ~33 s in all (about 50 s on average) before a
    request is given up, so a PACS restart or a switch failing over is ridden out.
    """

    retries: int = 10  # further attempts after the first
    first_wait: float = 0.5  # seconds before the first retry; doubles each time
    max_wait: float = 10.0  # cap on one backoff wait
    timeout: float = 30.0  # connect and read timeout of one request
    max_retry_after: float = 120.0  # longest Retry-After honoured

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Equal jitter: half of the exponential step fixed, half random, so clients spread."""
        step = min(self.max_wait, self.first_wait * 2**retry)
        return step / 2 + rng.uniform(0, step / 2)


class PacsError(MedplugError):
    """A DICOMweb transaction failed for good (not retriable, or out of retries)."""


class SourceUnreachable(PacsError):
    """The DICOMweb source could not be searched at all."""


@dataclass
class RetryCount:
    """Retries spent so far (by one study, or by the search)."""

    retries: int = 0


def with_retries(
    operation: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    count: RetryCount | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``operation()``, retried per ``policy`` on transient failures; raises ``PacsError``."""
    rng = random.Random()
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return operation()
        except Exception as exc:
            retriable, retry_after = classify(exc)
            if not retriable or attempt >= policy.retries:
                tried = (
                    f" (gave up after {attempt + 1} attempts over "
                    f"{time.monotonic() - started:.0f} s)"
                    if retriable
                    else ""
                )
                raise PacsError(f"{what} failed: {describe(exc)}{tried}") from exc
            wait = policy.backoff(attempt, rng)
            if retry_after is not None:
                wait = max(wait, min(retry_after, policy.max_retry_after))
            attempt += 1
            if count is not None:
                count.retries += 1
            # INFO, not WARNING: in a worker process (no handler) a warning would reach the
            # terminal through logging's last-resort handler. Never a UID here: no PHI.
            log.info("%s: %s; retry %d of %d in %.1f s", what, describe(exc), attempt,
                     policy.retries, wait)  # fmt: skip
            sleep(wait)


def classify(exc: BaseException) -> tuple[bool, float | None]:
    """Whether ``exc`` is worth retrying, and the server's Retry-After in seconds if it gave one."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return status in RETRY_STATUSES, retry_after_seconds(exc.response.headers)
    transient = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        ConnectionError,
        TimeoutError,
    )
    return isinstance(exc, transient), None


def retry_after_seconds(headers: Any) -> float | None:
    """``Retry-After`` as seconds (it may be a number or an HTTP date); None if absent."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def describe(exc: BaseException) -> str:
    """A short reason: HTTP status, or the socket error, never a URL with query keys."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no response in time (read timeout)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped while receiving"
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno in errno.errorcode:
            return current.strerror or errno.errorcode[current.errno]
        current = current.__cause__ or current.__context__
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def client(url: str, policy: RetryPolicy) -> Any:
    """A dicomweb-client for ``url`` with our timeout and its own retrying off."""
    from dicomweb_client.api import DICOMwebClient

    web = DICOMwebClient(url=url, timeout=policy.timeout)
    web.set_http_retry_params(retry=False)
    return web


def search_studies(
    url: str, filters: dict[str, str], policy: RetryPolicy, count: RetryCount, page: int = 500
) -> Iterator[dict[str, Any]]:
    """QIDO-RS over every page of matching studies (DICOM JSON per study)."""
    web = client(url, policy)
    offset = 0
    while True:
        found = with_retries(
            functools.partial(
                web.search_for_studies, search_filters=dict(filters), offset=offset, limit=page
            ),
            policy,
            f"QIDO-RS search of {url}",
            count,
        )
        yield from found
        if len(found) < page:
            return
        offset += page


def retrieve_study(
    url: str, study_uid: str, target: Path, policy: RetryPolicy, count: RetryCount
) -> int:
    """WADO-RS the whole study into ``target`` as stored (any transfer syntax); returns files.

    Asking for the stored transfer syntax means the PACS never transcodes (a
    JPEG 2000 study an Orthanc without a J2K codec cannot transcode still comes
    through); pydicom decodes it here. A server that refuses ``transfer-syntax=*``
    (406) is asked again for its default.
    """
    web = client(url, policy)

    def fetch(media_types: Any) -> int:
        for stale in target.glob("*.dcm"):  # a retry after a dropped transfer starts over
            stale.unlink()
        written = 0
        for number, dataset in enumerate(web.iter_study(study_uid, media_types=media_types)):
            dataset.save_as(target / f"{number:05d}.dcm", enforce_file_format=False)
            written += 1
        return written

    def fetch_any_syntax() -> int:
        import requests

        try:
            return fetch(ANY_TRANSFER_SYNTAX)
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code != 406:
                raise
        return fetch(None)

    return with_retries(fetch_any_syntax, policy, "WADO-RS retrieve", count)


def store_instances(url: str, datasets: list[Any], policy: RetryPolicy, count: RetryCount) -> None:
    """STOW-RS ``datasets`` to ``url``."""
    web = client(url, policy)
    with_retries(lambda: web.store_instances(datasets), policy, f"STOW-RS to {url}", count)
