"""The read model: the DuckDB projection of the event stream, its fold and schema, the
projector that feeds it, and the guarded SQL that users run against it."""
