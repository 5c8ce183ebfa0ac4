"""The pipeline core: configuration, table definitions, the Spark session, Delta I/O and the pure transforms."""
