"""Readers of the Delta lake: the Delta log, the SQL views and the engines that run them, charts."""
