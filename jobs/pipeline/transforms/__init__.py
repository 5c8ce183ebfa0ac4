"""Pure DataFrame -> DataFrame transformations of the streaming job (no I/O), unit-tested with chispa."""
