"""The ways in for producers: the Python client, the HTTP API and its OpenAPI document."""
