"""The naive baseline of bench/revalidate.py: what a user writes first.

One Celery task per key, a blocking HTTP call (urllib), one UPDATE per task, on
Celery's defaults (early acks, prefetch 4) and the threads pool:

    celery -A bench.naive_app worker --pool threads --concurrency 64 -Q $NAIVE_QUEUE

It shares nothing with the service but the tables: no batching, no pacing per
account, no retries, no request rows, no status history. Configured from
NAIVE_BROKER_URL, NAIVE_DATABASE_URL, NAIVE_FERNET_KEY and NAIVE_QUEUE.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from celery import Celery
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

TASK = "naive.validate"
QUEUE = os.environ.get("NAIVE_QUEUE", "ogvbench-naive")

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/9"))
app.conf.task_default_queue = QUEUE
app.conf.task_ignore_result = True

# A pool large enough for 64 threads that each hold a connection only for a query.
engine = create_engine(
    os.environ.get("NAIVE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/x"),
    pool_size=16,
    max_overflow=48,
)
fernet = Fernet(os.environ.get("NAIVE_FERNET_KEY") or Fernet.generate_key())

LOAD = text(
    "SELECT t.encrypted_key, i.base_url FROM teams t "
    "JOIN organization_integrations oi ON oi.id = t.organization_integration_id "
    "JOIN integrations i ON i.id = oi.integration_id WHERE t.id = :id"
)
SAVE = text(
    "UPDATE teams SET status = :status, last_http_status = :http_status, "
    "last_checked_at = clock_timestamp() WHERE id = :id"
)
STATUSES = {200: "valid", 401: "invalid_key", 403: "key_lacks_access"}


@app.task(name=TASK)
def validate(team_id: str) -> None:
    with engine.connect() as conn:
        token, base_url = conn.execute(LOAD, {"id": team_id}).one()
    request = urllib.request.Request(
        base_url + "v2/integrations/authenticate",
        data=b'{"type": "sentry"}',
        method="POST",
        headers={
            "Authorization": f"GenieKey {fernet.decrypt(token).decode()}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    with engine.begin() as conn:
        conn.execute(
            SAVE, {"id": team_id, "status": STATUSES.get(status, "rejected"), "http_status": status}
        )
