"""What beat runs: the re-validation dispatcher and the outbox sweeper."""
