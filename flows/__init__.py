"""Prefect flows: thin orchestration over dubbing.pipeline."""
