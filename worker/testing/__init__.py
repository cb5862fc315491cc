"""Test support the demo and the benchmarks use too: the fake Opsgenie, local worker processes."""
