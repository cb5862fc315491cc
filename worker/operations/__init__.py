"""The operators' tools: the `ogv` CLI, the demo, health, Flower, import and key rotation."""
