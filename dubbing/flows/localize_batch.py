"""Dub many videos: every video in a folder, or the rows of a manifest file (CSV or YAML).

Each video runs as its own `dub-video` subflow; one failure is recorded and the others go on, and the batch ends
Failed naming the failed videos. A summary table artifact lists what was done. `serve()` turns this into a
scheduled deployment that runs one batch at a time.
"""

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from dubbing import batch
from dubbing.errors import BatchFailed, DubbingError
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
    if any(row["status"] == "failed" for row in results):
        raise BatchFailed(results)
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
    name: str | None = None,
) -> None:
    """Run a deployment of the batch flow on a schedule, in this process (needs a Prefect server). One batch at a
    time: a cycle due while the last one still runs is cancelled (the UI shows it Cancelled), not run beside it."""
    localize_batch.serve(
        name=name or deployment_name(cron, interval_s),
        cron=cron,
        interval=interval_s,
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters={
            "source": str(source),
            "out": str(out),
            "languages": languages,
            "preset": preset,
            "only_new": True,
        },
    )


def deployment_name(cron: str | None, interval_s: float | None) -> str:
    """The schedule, as a deployment name: `every-60s`, `cron-0-2-x-x-x` (for `0 2 * * *`)."""
    if interval_s is not None:
        return f"every-{interval_s:g}s"
    return "cron-" + "-".join((cron or "").replace("*", "x").split())
