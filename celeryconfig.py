"""Celery's settings, mapped from `worker.settings.Settings` (nothing is decided here)."""

from __future__ import annotations

from pydantic import ValidationError

from worker import broker, embedded_broker
from worker.settings import describe_invalid_settings, get_settings

try:
    _settings = get_settings()
except ValidationError as exc:
    # A worker, beat or Flower with a bad setting stops here, in one line naming it.
    raise SystemExit(f"ogv: invalid settings: {describe_invalid_settings(exc)}") from None
embedded_broker.register()

broker_url = _settings.effective_broker_url
broker_connection_retry_on_startup = True
# What the broker needs (worker/broker.py): on Redis a visibility timeout that
# outlasts the longest countdown (checked in Settings); on RabbitMQ a durable
# quorum queue, publisher confirms and native delayed delivery; on the embedded
# broker, which passes its options to create_engine(), nothing.
_topology = broker.topology(
    broker_url, _settings.namespace, visibility_timeout=_settings.visibility_timeout
)
broker_transport_options = _topology.transport_options
task_queues = _topology.queues
task_default_exchange = _topology.exchange
task_default_exchange_type = _topology.exchange_type
task_default_routing_key = _topology.routing_key
worker_detect_quorum_queues = True
broker_native_delayed_delivery_queue_type = "quorum"

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True

# At-least-once delivery: acknowledge after the task ran, put the message back if
# the worker process died mid-task, and take one message at a time.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit

task_default_queue = _settings.namespace
worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False

# Exactly one `celery -A worker beat` runs these (see the README); its schedule
# file lives with the service's other files, not in whatever folder beat started in.
beat_schedule_filename = str(_settings.data_dir / "celerybeat-schedule")
beat_schedule = {
    "sweep-outbox": {"task": "ogv.sweep_outbox", "schedule": _settings.sweep_interval},
    "revalidate-all": {"task": "ogv.revalidate", "schedule": _settings.revalidate_interval},
    "prune-history": {"task": "ogv.prune_history", "schedule": _settings.prune_interval},
    "prune-audit": {"task": "ogv.prune_audit", "schedule": _settings.prune_interval},
    # Each held team is due every OGV_GUARD_RECHECK seconds; looking every minute at
    # most keeps a due one from waiting nearly twice that.
    "recheck-held": {"task": "ogv.recheck_held", "schedule": min(60.0, _settings.guard_recheck)},
    "announce-sunset": {"task": "ogv.announce_sunset", "schedule": _settings.sunset_interval},
}
