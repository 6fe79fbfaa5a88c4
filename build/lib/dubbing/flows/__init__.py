"""Prefect flows: thin orchestration over the steps of dubbing.steps."""
