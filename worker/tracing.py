"""Tracing, opt-in: OpenTelemetry spans from `POST /v1/validations` through the Celery
task to the probe and the database write.

On with `OGV_TRACING=on` or `OTEL_EXPORTER_OTLP_ENDPOINT` set (spans go over OTLP/HTTP
to that endpoint; OpenTelemetry's own `OTEL_*` variables apply). Off by default, and
then this module is never imported: its callers check `Settings.tracing_on` first, so
a service without the `tracing` extra installed runs as before, at no cost.

Each process starts it once: `ogv api` before building its app, a prefork child in
`worker_process_init` (the SDK's export thread and the instrumented engine must be the
child's own), a threads or solo worker when it is ready. It instruments Celery (the
publish carries the trace to the task), aiohttp's server (the API) and client (the
probes, the webhooks), and the process's SQLAlchemy engine.

No secret reaches a span: keys travel in a header and headers are never recorded
(the `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*` variables are dropped); a client
URL keeps its path only on an allowed base URL (the probes, which hold no key) and is
cut to its origin elsewhere (a webhook URL may carry a token); SQL is recorded with
its placeholders, never its parameters; task arguments are ids.
"""

from __future__ import annotations

import logging
import os
import threading
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from yarl import URL

from worker.database import session_factory
from worker.settings import Settings

log = logging.getLogger("ogv.tracing")

SERVICE = "opsgenie-validator"
HEADER_CAPTURE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_"
"""Prefix of the variables that would make the aiohttp instrumentations record headers."""

_lock = threading.Lock()
_started_pid: int | None = None


def start(settings: Settings, role: str, processor: SpanProcessor | None = None) -> None:
    """Make this process's spans and send them (once per process; a forked child starts
    again). `role` is `api` or `worker`; `processor` replaces the OTLP export (tests)."""
    global _started_pid
    with _lock:
        if _started_pid == os.getpid():
            return
        _started_pid = os.getpid()
        for name in [n for n in os.environ if n.startswith(HEADER_CAPTURE)]:
            del os.environ[name]  # headers carry the key and the API token
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"{SERVICE}-{role}"}))
        provider.add_span_processor(processor or BatchSpanProcessor(_exporter()))
        trace.set_tracer_provider(provider)
        allowed = tuple(settings.allowed_base_urls)
        CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        AioHttpServerInstrumentor().instrument(tracer_provider=provider)
        AioHttpClientInstrumentor().instrument(
            tracer_provider=provider, url_filter=lambda url: safe_url(url, allowed)
        )
        engine = session_factory().kw["bind"]
        # The instrumentation declares SQLAlchemy < 2.1 and would quietly do nothing on
        # ours; the engine events it listens to are unchanged in 2.1 (tests/e2e/test_tracing.py).
        SQLAlchemyInstrumentor().instrument(
            tracer_provider=provider, engine=engine, skip_dep_check=True
        )
    log.info("tracing.started", extra={"role": role, "endpoint": settings.otlp_endpoint})


def _exporter() -> SpanExporter:
    return OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT and its kin itself


def safe_url(url: URL, allowed: tuple[str, ...]) -> str:
    """What a client span records of `url`: an allowed base URL's calls with their path
    (no key is ever in one), anything else (a webhook) cut to its origin; never a
    query string, user or password."""
    text = str(url.with_query(None).with_fragment(None).with_user(None))
    if text.startswith(allowed):
        return text
    parts = urlsplit(text)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"


def stop() -> None:
    """Send what is left (a process that ends; tests)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
