"""Prefect flows: they only wire the tasks in :mod:`tasks` together."""
