"""One check of one key, from its pending row to its written outcome.

A check starts as a pending request (`requests`), is claimed by a worker
(`claims`), asks the platform about the key (`opsgenie`, paced by `ratelimit`),
is decided (`rules`, `retries`) and is written back (`records`, `events`).
`pipeline` runs those steps for one request or a batch, without Celery;
`runtime` holds a worker process's event loop and HTTP session.
"""
