"""Pipeline steps: typed, verb-named functions wrapped as Prefect tasks.

Each task is usable without Prefect through its ``.fn`` attribute.
"""
