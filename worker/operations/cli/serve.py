"""`ogv api`, `flower` and `fake-opsgenie`: the servers `ogv` starts in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from worker.operations.cli.output import fail

app = typer.Typer()
"""Top-level commands: `ogv` adds them without a group of their own."""


@app.command("fake-opsgenie")
def fake_opsgenie(
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8099,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    scenario: Annotated[
        Path | None,
        typer.Option(help="A scenario JSON file (format: worker/testing/scenario.py)."),
    ] = None,
) -> None:
    """Serve the built-in fake Opsgenie for tests and demos.

    One server stands for three hosts, by path prefix:

      opsgenie      /                       authenticate and alerts
      opsgenie-eu   /eu/                    authenticate and alerts
      jsm-ops       /jsm/ops/integration/   alerts only (authenticate is 404)

    A scenario gives each key a behaviour, e.g. {"keys": {"k1": "valid", "k2":
    {"behaviour": "throttle", "times": 2, "account": "acme"}}, "default": "invalid_key",
    "hosts": {"opsgenie": "retired"}}.

    Opsgenie's own answers (JSON, with X-Request-ID):
      valid             200 success body ({"result"} / {"data": []})
      invalid_key       401
      no_access         403, code 40301
      no_config_access  403 on authenticate, 200 on alerts
      unprocessable     422
      malformed_key     422 "Key format is not valid!"
      retired           410 "This API is deprecated and no longer available"
      throttle          429 naming period_seconds as rate_limit_headers says (opsgenie,
                        retry_after, retry_after_date, ratelimit, ratelimit_policy,
                        ratelimit_reset, x_ratelimit_remaining; or none, negative,
                        absurd, unparseable), `times` times, then 200
      server_error      `status` (5xx), `times` times, then 200
      large_body        200, large_body_bytes long
      eu_only           valid on opsgenie-eu, invalid_key elsewhere
      jsm_only          valid on jsm-ops, invalid_key elsewhere
      switched_off      valid on jsm-ops, 401 "Opsgenie has been turned off" elsewhere
    Intermediaries (HTML or empty, no X-Request-ID):
      redirect          302 to https://id.atlassian.com/login
      html_404          404 nginx page
      gateway_timeout   408 load balancer page
      empty_200         200, empty body
      captive_portal    200 HTML login page
    The network:
      hang              sleeps hang_seconds, then 200
      reset             drops the connection, no answer

    "hosts" overrides a whole host, whatever the key, with one of: invalid_key, retired,
    server_error (503), redirect, html_404, gateway_timeout, empty_200, captive_portal,
    hang (then drops the connection), reset. The admin API (/_fake/scenario, /_fake/keys/KEY,
    /_fake/hosts/HOST, /_fake/stats, /_fake/reset) changes it while running.
    """
    from worker.testing.fake_opsgenie import serve
    from worker.testing.scenario import Scenario

    loaded = Scenario.from_json(scenario.read_text()) if scenario else Scenario(keys={})
    serve(host, port, loaded)


@app.command()
def api(
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    insecure_local: Annotated[
        bool, typer.Option("--insecure-local", help="Allow no OGV_API_TOKEN; loopback only.")
    ] = False,
) -> None:
    """Serve the HTTP API for web apps (docs/WEB_APPS.md)."""
    from worker.settings import get_settings
    from worker.web.api import StartRefused, serve

    try:
        serve(get_settings(), host, port, insecure_local=insecure_local)
    except StartRefused as exc:
        fail(exc.code, str(exc), as_json=False)


@app.command()
def flower(
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 5555,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    insecure_local: Annotated[
        bool,
        typer.Option("--insecure-local", help="Allow no OGV_FLOWER_BASIC_AUTH; loopback only."),
    ] = False,
) -> None:
    """Start Flower on the configured broker, behind OGV_FLOWER_BASIC_AUTH."""
    from worker.celery import app as celery_app
    from worker.operations.flower import FlowerRefused, plan, run
    from worker.settings import get_settings

    try:
        flower_plan = plan(get_settings(), port=port, host=host, insecure_local=insecure_local)
    except FlowerRefused as exc:
        fail(exc.code, str(exc), as_json=False)
    if not flower_plan.sees_events:
        Console(stderr=True).print(
            "[yellow]warning[/yellow]: the embedded broker carries no task events; "
            "Flower shows tasks only with OGV_BROKER_URL on Redis or RabbitMQ"
        )
    run(celery_app, flower_plan)
