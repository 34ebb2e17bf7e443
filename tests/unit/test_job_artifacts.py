"""Atomic artefacts: the assembly step publishes submission.csv, votes.npz and metrics.json all or none.

The real assembly code (workers/jobs/predict.py) over a temporary SHARED_DIR with two finished chunks; a
failing write (read-only folder, full disk) is simulated by the writer raising the OSError it would raise.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from shared.job_store import JobStore
from shared.schemas import ChunkRecord, JobRecord
from shared.settings import Settings
from shared.storage import dataset_csv_path, job_output_dir
from tests.api.arena_rows import arena_csv
from workers.jobs import predict as jobs

DATASET_ID = "d" * 32


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(SHARED_DIR=tmp_path / "shared", API_KEY=None, _env_file=None)
    path = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    path.parent.mkdir(parents=True)
    path.write_bytes(arena_csv(4))
    return settings


def job_with_finished_chunks(settings: Settings, job_id: str) -> JobStore:
    """A running predict job whose two chunks have published their probabilities."""
    store = JobStore(settings.SHARED_DIR)
    chunks = [ChunkRecord(index=0, queue="cpu", start=0, stop=2, task_id="t0", state="succeeded", done=2),
              ChunkRecord(index=1, queue="cpu", start=2, stop=4, task_id="t1", state="succeeded", done=2)]  # fmt: skip
    store.create(JobRecord(id=job_id, kind="predict", state="running", params={"dataset": DATASET_ID}, chunks=chunks))
    for chunk in chunks:
        path = jobs.chunk_path(settings.SHARED_DIR, job_id, chunk.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = chunk.stop - chunk.start
        with open(path, "wb") as handle:
            np.savez(
                handle,
                ids=np.array([str(1000 + row) for row in range(chunk.start, chunk.stop)]),
                probabilities=np.full((rows, 3), 1 / 3),
                vote_logprobs=np.zeros((rows, 2, 5, 4)),
                truncated=np.zeros(rows, dtype=bool),
            )
    return store


def visible_files(settings: Settings, job_id: str) -> dict[str, bytes]:
    folder = job_output_dir(settings.SHARED_DIR, job_id)
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_assembly_publishes_the_files_and_a_labelled_datasets_report(settings):
    store = job_with_finished_chunks(settings, "a" * 32)
    jobs.assemble_predict_job(settings, job_id="a" * 32)
    record = store.read("a" * 32)
    assert record.state == "succeeded"
    assert record.artifacts == ["submission.csv", "votes.npz", "metrics.json", "reliability.png"]
    # The model columns are empty: no leaderboard, and the report says why.
    assert record.result["leaderboard"]["skipped"].startswith("no battles: none of the 4 rows names two")
    assert record.result["confusion_matrix"] == {
        "labels": ["A", "B", "tie"],
        "counts": [[2, 0, 0], [1, 0, 0], [1, 0, 0]],
    }
    assert set(record.result["reliability"]) == {"A", "B", "tie"}
    assert set(visible_files(settings, "a" * 32)) == {
        "submission.csv", "votes.npz", "metrics.json", "reliability.png", "chunks/chunk-0000.npz",
        "chunks/chunk-0001.npz",
    }  # fmt: skip
    assert record.result["submission_path"] == f"submissions/{'a' * 32}/submission.csv"  # no host path


def test_a_dataset_with_model_names_gets_its_predicted_and_human_leaderboards(settings):
    path = dataset_csv_path(settings.SHARED_DIR, DATASET_ID)
    path.write_bytes(arena_csv(4, models=("model-x", "model-y", "model-z")))
    settings.LEADERBOARD_BOOTSTRAP = 20
    store = job_with_finished_chunks(settings, "b" * 32)
    jobs.assemble_predict_job(settings, job_id="b" * 32)
    record = store.read("b" * 32)
    assert record.state == "succeeded", record.error
    assert {"leaderboard.csv", "leaderboard.png", "human_leaderboard.csv", "human_leaderboard.png"} <= set(
        record.artifacts
    )
    board = (job_output_dir(settings.SHARED_DIR, "b" * 32) / "leaderboard.csv").read_text().splitlines()
    assert board[0] == "model,rating,ci_low,ci_high,battles" and len(board) == 4
    assert record.result["leaderboard"]["leaderboard"]["models"] == 3 and "agreement" in record.result["leaderboard"]
    assert not list(job_output_dir(settings.SHARED_DIR, "b" * 32).glob(".*"))  # the staging folder is gone


@pytest.mark.parametrize(
    ("failing", "error"),
    [("write_submission", errno.EROFS), ("save_votes", errno.ENOSPC)],
    ids=["read-only-folder", "disk-full-after-the-submission"],
)
def test_a_failing_write_fails_the_job_and_publishes_nothing(settings, monkeypatch, failing, error):
    earlier = "e" * 32  # another job's finished files must not be touched
    job_with_finished_chunks(settings, earlier)
    jobs.assemble_predict_job(settings, job_id=earlier)
    earlier_files = visible_files(settings, earlier)

    job_id = "f" * 32
    store = job_with_finished_chunks(settings, job_id)
    chunks_before = visible_files(settings, job_id)

    def half_written_then_fails(path, *args, **kwargs):
        path.write_bytes(b"id,winner_model_a,winner_model_b,winner_tie\n1000,0.3")  # a partial file...
        raise OSError(error, os.strerror(error))  # ...then the failure

    monkeypatch.setattr(jobs, failing, half_written_then_fails)
    with pytest.raises(jobs.ArtifactWriteError):
        jobs.assemble_predict_job(settings, job_id=job_id)

    record = store.read(job_id)
    assert record.state == "failed" and record.artifacts == []
    assert "could not write the job's files" in record.error and "nothing was published" in record.error
    assert os.strerror(error) in record.error and "SHARED_DIR" in record.error
    assert str(settings.SHARED_DIR) not in record.error
    # No submission.csv (whole or partial), no staged leftovers; the chunks and the other job are untouched.
    assert visible_files(settings, job_id) == chunks_before
    assert not list(job_output_dir(settings.SHARED_DIR, job_id).glob(".*"))
    assert visible_files(settings, earlier) == earlier_files


def test_a_cancelled_job_is_not_assembled(settings):
    store = job_with_finished_chunks(settings, "c" * 32)
    store.cancel("c" * 32)
    assert jobs.assemble_predict_job(settings, job_id="c" * 32)["state"] == "cancelled"
    assert not (job_output_dir(settings.SHARED_DIR, "c" * 32) / "submission.csv").exists()
    assert store.read("c" * 32).artifacts == []


def test_the_jobs_votes_keep_the_classifier_logits_and_text_model(settings):
    """The job's votes.npz used to drop `adapter_logits` (and `text_logprobs`) that `--save-votes` keeps; the
    transfer model's outputs travel from the chunks to it too."""
    from workers.judge.votes import JudgeResult, load_votes, write_votes

    job_id = "9" * 32
    store = job_with_finished_chunks(settings, job_id)
    rng = np.random.default_rng(0)
    written = []
    for chunk in store.read(job_id).chunks:
        rows = chunk.stop - chunk.start
        result = JudgeResult(
            ids=[str(1000 + row) for row in range(chunk.start, chunk.stop)],
            vote_logprobs=np.zeros((rows, 2, 0, 4)),
            truncated=np.zeros(rows, dtype=bool),
            seconds=1.0,
            prompt_tokens=10,
            adapter_logits=rng.normal(size=(rows, 2, 3)),
            text_logprobs=np.log(np.full((rows, 3), 1 / 3)),
            transfer_logprobs=np.log(rng.dirichlet(np.ones(3), size=rows)),
        )
        written.append(result)
        with open(jobs.chunk_path(settings.SHARED_DIR, job_id, chunk.index), "wb") as handle:
            write_votes(handle, result, probabilities=np.full((rows, 3), 1 / 3))

    jobs.assemble_predict_job(settings, job_id=job_id)

    votes = load_votes(job_output_dir(settings.SHARED_DIR, job_id) / "votes.npz")
    assert votes.ids == [str(1000 + row) for row in range(4)]
    np.testing.assert_array_equal(votes.adapter_logits, np.concatenate([part.adapter_logits for part in written]))
    np.testing.assert_array_equal(votes.text_logprobs, np.concatenate([part.text_logprobs for part in written]))
    transfer = np.concatenate([part.transfer_logprobs for part in written])
    np.testing.assert_array_equal(votes.transfer_logprobs, transfer)
    assert votes.vote_logprobs.shape == (4, 2, 0, 4)


def test_the_chunk_that_completes_the_set_assembles_once_and_a_repeated_delivery_counts_once(settings):
    """No chord counter: completion is the set of succeeded chunk records, claimed under the record's lock."""
    store = JobStore(settings.SHARED_DIR)
    chunks = [ChunkRecord(index=0, queue="gpu.0", start=0, stop=2, task_id="t0"),
              ChunkRecord(index=1, queue="gpu.1", start=2, stop=4, task_id="t1")]  # fmt: skip
    job_id = "e" * 32
    store.create(JobRecord(id=job_id, kind="predict", state="running", params={"dataset": DATASET_ID}, chunks=chunks))
    summary = {"chunk": 0, "rows": 2}
    store.update_chunk(job_id, 0, state="succeeded", done=2, summary=summary)
    assert not jobs.claim_assembly(store, job_id, worker="gpu0@a")
    store.update_chunk(job_id, 0, state="succeeded", done=2)  # the same chunk delivered again
    assert not jobs.claim_assembly(store, job_id, worker="gpu0@a")
    store.update_chunk(job_id, 1, state="succeeded", done=2, summary={"chunk": 1, "rows": 2})
    assert jobs.claim_assembly(store, job_id, worker="gpu1@b")
    assert not jobs.claim_assembly(store, job_id, worker="gpu0@a")  # a late repeat finds it claimed
    assert store.read(job_id).assembler == "gpu1@b"
    job_with_finished_chunks(settings, "f" * 32)  # chunk files, for the summaries read back from the record
    store.update_chunk("f" * 32, 0, summary=summary)
    jobs.assemble_predict_job(settings, job_id="f" * 32)
    metrics = store.read("f" * 32).result
    assert [entry["chunk"] for entry in metrics["chunks"]] == [0]


def test_a_cancel_while_the_files_are_published_leaves_none_of_them(settings, monkeypatch):
    """Cancelled between publishing the files and marking the job succeeded: the job stays cancelled, no file."""
    store = job_with_finished_chunks(settings, "c" * 32)
    succeed = JobStore.succeed

    def cancelled_first(self, job_id, **kwargs):
        self.cancel(job_id)  # the user's DELETE lands between the publish and the succeed
        return succeed(self, job_id, **kwargs)

    monkeypatch.setattr(JobStore, "succeed", cancelled_first)
    assert jobs.assemble_predict_job(settings, job_id="c" * 32)["state"] == "cancelled"
    assert store.read("c" * 32).state == "cancelled"
    assert set(visible_files(settings, "c" * 32)) == {"chunks/chunk-0000.npz", "chunks/chunk-0001.npz"}
