"""The leaderboard job (no Celery in here): rank a labelled dataset's models from its human votes.

Bradley-Terry ratings on the Elo scale with bootstrap intervals (workers/reports/leaderboard.py, the same code as
`arena leaderboard`), drawn in a staging folder, then published together into submissions/<job_id>/: a repeated
delivery finds them there and publishes nothing new.
"""

from __future__ import annotations

import shutil
import uuid

from shared.settings import Settings
from shared.storage import job_output_dir
from workers.jobs.predict import load_job_dataset
from workers.jobs.run import ArtifactWriteError, JobRun, publish_together


def run_leaderboard_job(
    settings: Settings, *, job_id: str, task_id: str | None = None, worker: str | None = None
) -> dict:
    """Fit, bootstrap and publish the dataset's leaderboard; returns the job's result.

    Raises:
        JobCancelledError: the job was cancelled (or failed elsewhere) before or while it ran.
        LeaderboardError: the dataset cannot be ranked (no model names, one model, no labels); the job fails with it.
    """
    from workers.reports.leaderboard import write_dataset_leaderboards

    with JobRun(settings, job_id, unit="bootstrap rounds", task_id=task_id, worker=worker) as run:
        run.start()
        dataset = load_job_dataset(settings, run.params["dataset"])
        output_dir = job_output_dir(settings.SHARED_DIR, job_id)
        staging = output_dir / f".leaderboard-{uuid.uuid4().hex}"
        try:
            summary = write_dataset_leaderboards(
                dataset, staging, bootstrap=run.params.get("bootstrap", 1000), seed=run.params.get("seed", 0),
                name="the dataset", on_progress=lambda done, total: run.report(done, total),
            )  # fmt: skip
            writers = {
                name: lambda path, drawn=staging / name: shutil.copyfile(drawn, path) for name in summary["files"]
            }
            publish_together(output_dir, writers)
        except OSError as exc:
            raise ArtifactWriteError(
                f"could not write the leaderboard into submissions/{job_id}/ ({exc.strerror or exc}); free space or"
                " fix the permissions of SHARED_DIR, then submit the job again"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = {key: value for key, value in summary.items() if key != "files"}
        run.succeed(artifacts=list(summary["files"]), result=result)
        return result
