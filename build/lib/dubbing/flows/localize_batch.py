"""Dub many videos: every video in a folder, or the rows of a manifest file (CSV or YAML).

Each video runs as its own `dub-video` subflow; one failure is recorded and the others go on. A
summary table artifact lists what was done. `serve()` turns this into a scheduled deployment.
"""

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from dubbing import batch
from dubbing.errors import DubbingError
from dubbing.flows.dub_video import dub_video


@flow(name="localize-batch", flow_run_name="batch-{source.name}")
def localize_batch(
    source: Path,
    out: Path,
    languages: list[str] | None = None,
    preset: str = "draft",
    only_new: bool = True,
    config: Path | None = None,
) -> list[dict]:
    items = batch.plan(Path(source), Path(out), languages or [], preset, only_new=only_new)
    results = []
    for item in items:
        if item.skip_reason:
            results.append(item.summary("skipped", item.skip_reason))
            continue
        state = dub_video(
            video=item.video,
            languages=item.languages,
            out=item.out,
            preset=item.preset,
            config=config,
            return_state=True,
        )
        if state.is_completed():
            results.append(item.summary("done"))
        else:
            results.append(item.summary("failed", _failure(state)))
    create_markdown_artifact(
        key="batch-summary", markdown=batch.summary_markdown(results), description=f"batch over {source}"
    )
    return results


def _failure(state) -> str:
    try:
        state.result()
    except DubbingError as exc:
        return str(exc)
    except Exception as exc:  # a bug: keep its type for the summary; the traceback is in the flow run's log
        return f"{type(exc).__name__}: {exc}"
    return state.name


def serve(
    source: Path,
    out: Path,
    languages: list[str],
    *,
    cron: str | None = None,
    interval_s: float | None = None,
    preset: str = "draft",
    name: str = "nightly",
) -> None:
    """Run a deployment of the batch flow on a schedule, in this process (needs a Prefect server)."""
    localize_batch.serve(
        name=name,
        cron=cron,
        interval=interval_s,
        parameters={
            "source": str(source),
            "out": str(out),
            "languages": languages,
            "preset": preset,
            "only_new": True,
        },
    )
