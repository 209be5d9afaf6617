"""OpenTelemetry tracing for every Atrium process (docs/observability.md), off unless asked for.

:func:`telemetry_setup` runs once per process (the kit's ``AppConfig.ready()``: every web process, worker, beat
and management command). It turns tracing on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set — spans go to that collector over OTLP/HTTP in batches — or when
``ATRIUM_OTEL_FILE`` names a file, which gets one JSON object per span per line (appended; for tests, benchmarks
and a laptop without a collector). Otherwise nothing is imported from OpenTelemetry, nothing is instrumented and
no header is added: every function below returns at once on one module-level flag.

When on, the official instrumentations do the work: Django (a server span per request, the W3C ``traceparent``
of the caller taken as parent), httpx (the kit's client: a client span, ``traceparent`` sent), Celery (a
publish span and a run span per task, the context carried in the task's headers), psycopg and Redis. The SDK
reads the standard ``OTEL_*`` variables itself (sampler, exporter headers and timeouts, batch processor, span
limits, resource attributes, propagators); ``OTEL_SERVICE_NAME`` defaults to the process's catalog slug
(``settings.ATRIUM_SERVICE``); ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (``django,celery,psycopg,redis,httpx``)
leaves some out; ``OTEL_SDK_DISABLED=true`` turns it all off.

What Atrium adds: ``atrium.request_id`` (and ``atrium.task_id`` in a task) on every span; the creation context of
a batch's items as span links on the span processing the batch (:func:`batch_links_add`, what OpenTelemetry's
messaging conventions prescribe for batches), with ``messaging.batch.message_count`` and ``atrium.request_ids``.

Fork safety: the SDK's batch processor restarts its export thread in a forked child (``os.register_at_fork``, as
:mod:`services.kit.background` does for the kit's threads), and the file exporter opens its file per process, so
setting up before gunicorn or Celery's prefork pool forks is enough. Celery's pool processes leave through
``os._exit`` (no ``atexit``): their spans are flushed on ``worker_process_shutdown``.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from services.kit.context import REQUEST_ID_HEADER, request_id_var, task_id_var

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
FILE_VARIABLE = "ATRIUM_OTEL_FILE"
# A batch span links to at most this many items (OpenTelemetry's default limit is 128 links per span; the
# provider is given this one unless OTEL_SPAN_LINK_COUNT_LIMIT says otherwise). The items past it are counted
# in atrium.links_dropped, and their request ids are still listed, up to the same bound.
LINKS_MAX = 1000
INSTRUMENTATIONS = ("django", "celery", "psycopg", "redis", "httpx")
# Health probes and scrapes would be most of a quiet service's spans.
DJANGO_EXCLUDED_URLS = "health/live,health/ready,metrics"

_enabled = False  # the one check every function makes first: False means nothing else is touched
_lock = threading.Lock()
_provider: Any = None
_exporters: list[Any] = []  # exporters already given a processor (a test's in-memory one is added once)
_instrumented: list[Any] = []
_batches: weakref.WeakKeyDictionary[Any, _BatchState] = weakref.WeakKeyDictionary()


def telemetry_wanted(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether the environment asks for tracing (an OTLP endpoint or ``ATRIUM_OTEL_FILE``, no
    ``OTEL_SDK_DISABLED=true``)."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES) or bool(environ.get(FILE_VARIABLE))


def telemetry_enabled() -> bool:
    """Whether this process traces."""
    return _enabled


def telemetry_setup(*, service: str | None = None, exporter: Any = None) -> bool:
    """Turn tracing on in this process when the environment asks for it (or, in tests, with ``exporter``: an SDK
    ``SpanExporter`` given a synchronous processor); whether it is on. Safe to call again."""
    global _enabled
    if _enabled and exporter is None:
        return True
    if exporter is None and not telemetry_wanted():
        return False
    with _lock:
        _provider_start(service, exporter)
        if not _enabled:
            _instrument()
            _enabled = True
    return True


def telemetry_stop() -> None:
    """Undo the instrumentations and flush (tests; a process that ends flushes through the SDK's ``atexit``)."""
    global _enabled
    with _lock:
        _enabled = False
        while _instrumented:
            _instrumented.pop().uninstrument()
        if _provider is not None:
            _provider.force_flush()


def telemetry_flush() -> None:
    """Export the spans still buffered (a Celery pool process about to ``os._exit``)."""
    if _enabled and _provider is not None:
        _provider.force_flush()


# ------------------------------------------------------------------------------------- set-up


def _provider_start(service: str | None, exporter: Any) -> None:
    global _provider
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if _provider is None:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service or _service_slug()}))
        limits = SpanLimits(max_links=None if os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT") else LINKS_MAX)
        # No sampler given: the SDK reads OTEL_TRACES_SAMPLER / _ARG (parent-based, always on by default).
        _provider = TracerProvider(resource=resource, span_limits=limits)
        _provider.add_span_processor(_attributes_processor())
        if any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_*, OTEL_BSP_*
        path = os.environ.get(FILE_VARIABLE)
        if path:
            _provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(path)))
        trace.set_tracer_provider(_provider)
        _celery_signals_connect()
    if exporter is not None and exporter not in _exporters:
        _exporters.append(exporter)
        _provider.add_span_processor(SimpleSpanProcessor(exporter))


def _service_slug() -> str:
    from django.conf import settings

    return str(getattr(settings, "ATRIUM_SERVICE", "") or "atrium")


def _instrument() -> None:
    disabled = {name.strip().lower() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    wanted = [name for name in INSTRUMENTATIONS if name not in disabled]
    if "django" in wanted:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        excluded = None
        if not (os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")):
            excluded = DJANGO_EXCLUDED_URLS
        _instrumentor_run(DjangoInstrumentor(), excluded_urls=excluded, response_hook=_django_response)
    if "celery" in wanted:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        _publish_guard_connect(before=True)
        _instrumentor_run(CeleryInstrumentor())
        _publish_guard_connect(before=False)
    if "psycopg" in wanted:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        _instrumentor_run(PsycopgInstrumentor())
    if "redis" in wanted:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        _instrumentor_run(RedisInstrumentor())
    if "httpx" in wanted:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        _instrumentor_run(HTTPXClientInstrumentor())


def _instrumentor_run(instrumentor: Any, **kwargs: Any) -> None:
    instrumentor.instrument(**{k: v for k, v in kwargs.items() if v is not None})
    _instrumented.append(instrumentor)


def _django_response(span: Any, request: Any, response: Any) -> None:
    """The server span starts before the kit's middleware gives the request its id: the answer carries it."""
    request_id = response.get(REQUEST_ID_HEADER) if response is not None else None
    if request_id and span.is_recording():
        span.set_attribute("atrium.request_id", request_id)


def _celery_signals_connect() -> None:
    from celery import signals

    signals.worker_process_shutdown.connect(_flush_on_exit, weak=False)


def _flush_on_exit(**kwargs: Any) -> None:
    telemetry_flush()


# The Celery instrumentation keeps the publish span of a task sent by name (``send_task``) only when the task is
# registered in the sending process; Atrium sends every task by name, mostly from processes that do not have it
# (a web process sends payments.drain, a relay audit.ingest). Such a span would be started, made current in the
# sending thread and never ended: every later span of that thread (a relay's, a kicker's) would hang under it.
# These two receivers, around the instrumentation's, end it and restore the thread's context.
_unregistered: dict[int, Any] = {}  # thread id → the context to restore after its publish


def _publish_guard_connect(*, before: bool) -> None:
    from celery import signals

    if before:
        signals.before_task_publish.connect(_publish_started, weak=False)
    else:
        signals.after_task_publish.connect(_publish_ended, weak=False)


def _publish_started(sender: Any = None, **kwargs: Any) -> None:
    if not _enabled:
        return
    from celery import current_app
    from opentelemetry import context

    thread = threading.get_ident()
    left = _unregistered.pop(thread, None)
    if left is not None:  # this thread's last publish failed (no after_task_publish): its span is dropped
        context.attach(left)
    if isinstance(sender, str) and sender not in current_app.tasks:
        _unregistered[thread] = context.get_current()


def _publish_ended(sender: Any = None, **kwargs: Any) -> None:
    saved = _unregistered.pop(threading.get_ident(), None)
    if saved is None:
        return
    from opentelemetry import context, trace

    span = trace.get_current_span()
    if span.is_recording() and getattr(span, "name", "").endswith(f"/{sender}"):
        span.end()
    context.attach(saved)


# ------------------------------------------------------------------------------------- attributes


def _attributes_processor() -> Any:
    """A span processor setting the current request id (and task id) on every span as it starts."""
    from opentelemetry.sdk.trace import SpanProcessor

    class AtriumAttributes(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            request_id = request_id_var.get()
            if request_id:
                span.set_attribute("atrium.request_id", request_id)
            task_id = task_id_var.get()
            if task_id:
                span.set_attribute("atrium.task_id", task_id)

    return AtriumAttributes()


def task_span_annotate(*, request_id: str | None, task_id: str | None) -> None:
    """On the running task's span (started before the task set its ids): its request id and task id."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        if request_id:
            span.set_attribute("atrium.request_id", request_id)
        if task_id:
            span.set_attribute("atrium.task_id", task_id)


def trace_parent() -> str:
    """The W3C ``traceparent`` of the current span ("" when tracing is off or no span is current): what an item
    created now records, so that the batch processing it later can link to this context."""
    if not _enabled:
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def span_context_of(value: str) -> Any:
    """The span context a W3C ``traceparent`` names (remote), or None if it names none."""
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0x01))
    return context if context.is_valid else None


class _BatchState:
    __slots__ = ("dropped", "items", "links", "request_ids")

    def __init__(self) -> None:
        self.items = 0
        self.links = 0
        self.dropped = 0
        self.request_ids: dict[str, None] = {}


def batch_links_add(items: Iterable[tuple[str, str, str]]) -> None:
    """On the current span (the one processing a batch), for each item ``(message id, traceparent it was created
    under, request id)``: a link to its creation context (``messaging.message.id`` and ``atrium.request_id`` on the
    link), and the span's ``messaging.batch.message_count`` and ``atrium.request_ids`` — counted over every call
    made on the span (a drain runs several batches). At most :data:`LINKS_MAX` links and request ids per span."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    state = _batches.get(span)
    if state is None:
        state = _batches[span] = _BatchState()
    for message_id, parent, request_id in items:
        state.items += 1
        if request_id and len(state.request_ids) < LINKS_MAX:
            state.request_ids[request_id] = None
        context = span_context_of(parent) if parent else None
        if context is None:
            continue
        if state.links >= LINKS_MAX:
            state.dropped += 1
            continue
        attributes = {"messaging.message.id": message_id}
        if request_id:
            attributes["atrium.request_id"] = request_id
        span.add_link(context, attributes)
        state.links += 1
    span.set_attribute("messaging.batch.message_count", state.items)
    if state.request_ids:
        span.set_attribute("atrium.request_ids", list(state.request_ids))
    if state.dropped:
        span.set_attribute("atrium.links_dropped", state.dropped)


def span_request_ids_set(items: Any) -> None:
    """``atrium.request_ids`` on the current span from the ``request_id`` of a request's batch items (dicts; any
    other item, or one without it, is skipped)."""
    if not _enabled or not isinstance(items, list):
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    ids: dict[str, None] = {}
    for item in items:
        request_id = item.get("request_id") if isinstance(item, dict) else None
        if isinstance(request_id, str) and request_id:
            ids[request_id[:128]] = None
            if len(ids) >= LINKS_MAX:
                break
    if ids:
        span.set_attribute("atrium.request_ids", list(ids))


def outbox_events_link(events: Any) -> None:
    """:func:`batch_links_add` for a batch of relayed outbox events (``services.kit.outbox``): each event's
    ``trace_parent`` and ``request_id``, when its payload has them."""
    if not _enabled or not isinstance(events, list):
        return
    from services.kit.outbox import event_expand

    def items() -> Iterable[tuple[str, str, str]]:
        for item in events:
            try:
                event = event_expand(item)
            except Exception:  # noqa: S112  (a malformed event is the consumer's to report, not a reason to stop)
                continue
            if isinstance(event, dict):
                parent, request_id = event.get("trace_parent"), event.get("request_id")
                yield (
                    str(event.get("id") or ""),
                    parent if isinstance(parent, str) else "",
                    request_id if isinstance(request_id, str) else "",
                )

    batch_links_add(items())


# ------------------------------------------------------------------------------------- the file exporter


class FileSpanExporter:
    """An SDK span exporter appending one JSON object per span per line to ``path`` (``ATRIUM_OTEL_FILE``): what
    ``ReadableSpan.to_json`` gives (name, context, parent_id, kind, attributes, links, resource...). Every process
    of a machine may share the file: each batch is one ``write`` to a file opened for appending, by each process
    (a forked child opens its own)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: Any = None
        self._pid = 0
        ref = weakref.ref(self)

        def _in_child() -> None:  # the parent's lock may have been copied held, its file is the parent's
            exporter = ref()
            if exporter is not None:
                exporter._lock, exporter._file = threading.Lock(), None

        os.register_at_fork(after_in_child=_in_child)

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        text = "".join(span.to_json(indent=None) + "\n" for span in spans)
        try:
            with self._lock:
                if self._file is None or self._pid != os.getpid():
                    self._file = open(self.path, "a", encoding="utf-8")
                    self._pid = os.getpid()
                self._file.write(text)
                self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None and self._pid == os.getpid():
                self._file.close()
            self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
