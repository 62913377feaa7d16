"""The lifecycle: pure rules for jobs and nodes (``decide``/``evolve``/``anomaly``), the
scheduling policy, and central's own state folded from the stream through those rules.
Nothing here does I/O except ``state``'s waiters."""
