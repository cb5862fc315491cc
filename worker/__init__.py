"""opsgenie-validator: background validation of stored Opsgenie integration keys.

`celery -A worker worker` finds the Celery app in `worker.celery` (Celery's own
convention), so importing this package stays cheap for the fake server and the CLI.
"""
