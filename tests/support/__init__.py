"""What the tests stand on; no test lives here, and tests import only from here.

- `services`: this run's namespace and artifacts, and the services it uses (Redis,
  PostgreSQL), each skipped on a laptop without it and required when CI is set.
- `redis_server`, `rabbitmq`: servers the tests start for themselves on private ports,
  the only ones a test may stop or restart; and RabbitMQ virtual hosts.
- `sentinels`: marks left in the machine's own Redis and RabbitMQ, checked at the end.
- `stacks`: a running service (environment, worker processes, the `ogv` command line).
- `pipeline`, `cli`: installing accounts and teams in-process, and calling the CLI.
- `api`, `monitoring`, `webhooks`, `hostile_upstream`: the HTTP API's server and client,
  Flower and /metrics, a webhook receiver, a misbehaving Opsgenie.
- `tcp_proxy`: a network between a process and a server that a test can cut.
- `chaos`: the chaos suite's harness (tests/chaos).
"""
