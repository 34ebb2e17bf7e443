"""/v1/jobs: submit predict, train and synth jobs (sent to workers by task name), read, cancel, download."""

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.convertors import StringConvertor, register_url_convertor

from api.deps import (
    CeleryDep,
    DatasetStoreDep,
    FreeSpaceDep,
    IdempotencyDep,
    JobStoreDep,
    SettingsDep,
    TenantDep,
    WorkersDep,
)
from api.dispatch import (
    BrokerUnavailableError,
    new_predict_record,
    revoke,
    send_placeholder_job,
    send_predict_job,
)
from api.idempotency import KEY_PATTERN, IdempotencyConflictError, IdempotencyKeyError
from api.openapi import CREATE_JOB_RESPONSES, ITEM_CHANGE_RESPONSES, ITEM_RESPONSES, PAGE_HEADERS
from api.paging import PageAfter, PageLimit, page_headers
from api.tenants import Tenant
from shared.adapter_claim import (
    AdapterNameTakenError,
    claim_adapter_name,
    claim_tenant,
    discard_unfinished_adapter,
    release_adapter_name,
)
from shared.adapter_store import AdapterNotFoundError
from shared.artifacts import ADAPTERS_DIR_NAME, CALIBRATION_NAME
from shared.calibration_file import CalibrationFileError, applied_calibration, check_judge_calibration
from shared.dataset_store import DatasetNotFoundError
from shared.job_store import JobNotFoundError
from shared.model_folder import ModelFolder, ModelFolderError, check_lora_options, resolve_base_model
from shared.schemas import (
    ID_PATTERN,
    NAME_PATTERN,
    JobCreated,
    JobKind,
    JobRecord,
    JobState,
    JudgeOptions,
    LeaderboardJobRequest,
    PredictJobRequest,
    SynthJobRequest,
    TrainJobRequest,
)
from shared.settings import Settings
from shared.storage import (
    JudgeOptionsError,
    UnsafePathError,
    job_output_dir,
    new_id,
    resolve_inside,
    resolve_judge_files,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="A job id (32 hex digits).")]
# The create routes' names: GET and DELETE /jobs/{job_id} never take one for a job id, so that GET /v1/jobs/predict is
# a 405 naming POST (Starlette prefers a route whose path matches over one whose path and method would) rather than
# a 422 for a malformed id. Any other malformed id still reaches the route and its pattern (422).
CREATE_JOB_PATHS = ("predict", "train", "leaderboard", "synth")


class JobIdConvertor(StringConvertor):
    regex = f"(?!(?:{'|'.join(CREATE_JOB_PATHS)})$)[^/]+"


register_url_convertor("job_id", JobIdConvertor())
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN.pattern,
        min_length=1,
        max_length=255,
        description="Any unique value (e.g. a UUID): repeating the request with the same key returns the job it"
        " created (200) instead of creating another; the same key with a different request is a 409.",
    ),
]
# A tenant at its cap of unfinished jobs: a small job finishes in about this long.
ACTIVE_CAP_RETRY_AFTER_S = 30
# A job is created, recorded and sent by a submit function; `remember(job_id)` ties the key to it before sending.
SubmitJob = Callable[[Callable[[str], None]], JobRecord]


def read_own_dataset(datasets, dataset_id: str, tenant: Tenant):
    """The dataset, or 404 when it does not exist or is another tenant's (the same answer: nothing to learn)."""
    try:
        dataset = datasets.read(dataset_id)
    except DatasetNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if not tenant.owns(dataset.tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(DatasetNotFoundError(dataset_id)))
    return dataset


def _require_dataset(datasets, dataset_id: str | None, tenant: Tenant):
    if dataset_id is None:
        return None
    return read_own_dataset(datasets, dataset_id, tenant)


def _require_labelled(datasets, field: str, dataset_id: str | None, tenant: Tenant) -> None:
    dataset = _require_dataset(datasets, dataset_id, tenant)
    if dataset is not None and not dataset.labelled:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"{field}: dataset {dataset_id} has no labels; training needs the columns winner_model_a,"
            " winner_model_b and winner_tie (upload a labelled CSV, or label this one with POST /v1/jobs/synth)",
        )


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def require_own_adapter(settings: Settings, name: str, tenant: Tenant) -> None:
    """404 for an adapter of another tenant, as for one that does not exist (shipped models stay shared)."""
    if not tenant.owns(claim_tenant(settings.SHARED_DIR / ADAPTERS_DIR_NAME / name)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(AdapterNotFoundError(name)))


def check_judge_files(settings: Settings, request: JudgeOptions, tenant: Tenant) -> None:
    """422 for judge options a worker would refuse: missing or unsafe files, and a calibration that is not one or
    that this judge cannot feed (the one named, else the adapter's own); 404 for another tenant's adapter, or a
    calibration inside one."""
    if request.adapter is not None:
        require_own_adapter(settings, request.adapter, tenant)
    calibration_parts = request.calibration.split("/") if request.calibration else []
    if len(calibration_parts) > 1 and calibration_parts[0] == ADAPTERS_DIR_NAME:
        require_own_adapter(settings, calibration_parts[1], tenant)
    try:
        _, adapter_dir, calibration_path = resolve_judge_files(
            settings.SHARED_DIR,
            settings.judge_model_path,
            model=request.model,
            adapter=request.adapter,
            calibration=request.calibration,
            raw=request.raw,
            default_predictor=settings.DEFAULT_PREDICTOR,
        )
    except (FileNotFoundError, UnsafePathError, JudgeOptionsError) as exc:
        raise _unprocessable(str(exc)) from None
    name = f"calibration {request.calibration}"
    if calibration_path is None and request.adapter is not None:  # its own calibration.json, unless raw
        calibration_path = applied_calibration(adapter_dir, None, raw=request.raw)
        name = f"the adapter's adapters/{request.adapter}/{CALIBRATION_NAME}"
    if calibration_path is not None:
        try:
            check_judge_calibration(calibration_path, name=name, adapter_dir=adapter_dir, tta=request.tta)
        except CalibrationFileError as exc:
            raise _unprocessable(str(exc)) from None


def _require_base_model(settings: Settings, name: str | None, *, field: str) -> ModelFolder:
    """The base model a train or synth job names, checked to be one (not predict's judge-files rule)."""
    try:
        return resolve_base_model(settings.SHARED_DIR, settings.judge_model_path, name, field=field)
    except (ModelFolderError, UnsafePathError) as exc:
        raise _unprocessable(str(exc)) from None


# What only a LoRA judge reads: a text-only fit refuses them rather than ignore them silently.
LORA_ONLY_FIELDS = (
    "validation_dataset",
    "model",
    "epochs",
    "learning_rate",
    "lora_rank",
    "max_length",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "lora_top_layers",
    "batch_size",
    "grad_accum",
    "max_steps",
    "time_budget_min",
    "val_fraction",
    "max_val_rows",
    "text_model",
    "quantization",
)
TEXT_ONLY_FIELDS = ("include_shipped_data", "shipped_data_weight")


def check_text_fit_options(settings: Settings, request: TrainJobRequest, *, user_rows: int) -> None:
    """422 for a text-only train job's bad combinations and for more rows than TEXT_FIT_MAX_ROWS, before 202."""
    lora_options = sorted(set(LORA_ONLY_FIELDS) & request.model_fields_set)
    if lora_options:
        raise _unprocessable(
            f"{', '.join(lora_options)}: LoRA options do not apply to a text-only fit (it runs a grouped CV of its"
            " own); drop them, or drop text_only to train a LoRA judge"
        )
    if "shipped_data_weight" in request.model_fields_set and not request.include_shipped_data:
        raise _unprocessable("shipped_data_weight needs include_shipped_data: true (or drop shipped_data_weight)")
    if user_rows > settings.TEXT_FIT_MAX_ROWS:
        raise _unprocessable(
            f"{user_rows:,} labelled rows is over this server's limit for a text-only fit (TEXT_FIT_MAX_ROWS="
            f"{settings.TEXT_FIT_MAX_ROWS:,}); sample your rows or drop extra_datasets"
        )


def check_train_options(settings: Settings, request: TrainJobRequest) -> None:
    """422 for train options the worker would refuse or that would not fit its memory, before 202."""
    fit_options = sorted(set(TEXT_ONLY_FIELDS) & request.model_fields_set)
    if fit_options:
        raise _unprocessable(f"{', '.join(fit_options)}: only a text-only fit reads this; add text_only: true")
    tokens = request.batch_size * request.max_length
    if tokens > settings.TRAIN_MAX_BATCH_TOKENS:
        raise _unprocessable(
            f"batch_size × max_length = {request.batch_size} × {request.max_length} = {tokens} tokens per forward"
            f" pass is more than this server allows (TRAIN_MAX_BATCH_TOKENS={settings.TRAIN_MAX_BATCH_TOKENS});"
            " lower batch_size and raise grad_accum (the same effective batch), or lower max_length"
        )
    model = _require_base_model(settings, request.model, field="model")
    try:
        check_lora_options(
            model,
            target_modules=request.target_modules,
            lora_top_layers=request.lora_top_layers,
            max_length=request.max_length,
        )
    except ModelFolderError as exc:
        raise _unprocessable(str(exc)) from None


def _job_queue(workers) -> str:
    try:
        return workers.queue_for_jobs()
    except BrokerUnavailableError:
        # The exception names the Redis host: it goes to the gateway's log, the client gets what to do.
        log.warning("the broker does not answer", exc_info=True)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the job queue is unavailable (the broker at REDIS_URL does not answer), nothing was submitted."
            " Retry in a few seconds (with the same Idempotency-Key); if it persists, check that Redis is running",
            headers={"Retry-After": "5"},
        ) from None


def _read_job(jobs, job_id: str, tenant: Tenant) -> JobRecord:
    """The job, or 404 when it does not exist or is another tenant's (the same answer)."""
    try:
        record = jobs.read(job_id)
    except JobNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if not tenant.owns(record.tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(JobNotFoundError(job_id)))
    return record


def _enqueue_or_fail(jobs, record: JobRecord, send: Callable[[], list[str]]) -> JobRecord:
    """Send the job's tasks, then mark them sent in the record (the sweeper sends a record never marked)."""
    try:
        task_ids = send()
    except Exception as exc:
        log.warning("could not enqueue job %s", record.id, exc_info=True)
        jobs.fail(record.id, f"could not enqueue the job: the broker did not take it ({type(exc).__name__})")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="could not enqueue the job: the broker did not take it; nothing was submitted. Retry in a few"
            " seconds (with the same Idempotency-Key); if it persists, check that Redis is running",
            headers={"Retry-After": "5"},
        ) from None
    return jobs.mark_sent(record.id, task_ids=task_ids)


class JobSubmission:
    """What every create-job route needs to submit once: the tenant, the stores, the broker and the request's
    Idempotency-Key.

    A route checks its own request, then calls `once` with a submit function, or `whole_job` for a job that is one
    task (train, synth, leaderboard). Every record is stored through `create`, which makes it the tenant's.
    """

    def __init__(
        self,
        tenant: TenantDep,
        celery: CeleryDep,
        jobs: JobStoreDep,
        workers: WorkersDep,
        idempotency: IdempotencyDep,
        response: Response,
        settings: SettingsDep,
        _free_space: Annotated[None, FreeSpaceDep],
        idempotency_key: IdempotencyKey = None,
    ) -> None:
        self.tenant, self.settings = tenant, settings
        self.celery, self.jobs, self.workers = celery, jobs, workers
        self.idempotency, self.response, self.idempotency_key = idempotency, response, idempotency_key

    def create(self, record: JobRecord) -> JobRecord:
        """Store a new job record as the tenant's: the one place a job gets its owner, and where the tenant's cap
        of unfinished jobs (MAX_ACTIVE_JOBS_PER_TENANT) is held, counted from the index under a lock."""
        record.tenant = self.tenant.name
        cap = self.settings.MAX_ACTIVE_JOBS_PER_TENANT
        with self.jobs.active_lock(record.tenant):
            if len(self.jobs.active_ids(tenant=record.tenant)) >= cap:
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    detail=f"tenant {record.tenant} has {cap} unfinished jobs, the cap (MAX_ACTIVE_JOBS_PER_TENANT);"
                    " nothing was submitted. Retry once one finishes, or cancel one (DELETE /v1/jobs/{id})",
                    headers={"Retry-After": str(ACTIVE_CAP_RETRY_AFTER_S)},
                )
            self.jobs.create(record)
        log.info("job %s (%s) created by tenant %s", record.id, record.kind, record.tenant)
        return record

    def once(self, kind: str, body: dict, submit: SubmitJob) -> JobCreated:
        """Create the job, or, for an Idempotency-Key seen before with the same request, return its job (200)."""
        if self.idempotency_key is None:
            record = submit(lambda _job_id: None)
            return JobCreated(job_id=record.id, kind=record.kind, state=record.state)
        try:
            with self.idempotency.claim(self.idempotency_key, kind=kind, body=body, tenant=self.tenant.name) as claim:
                if claim.job_id is not None:
                    record = _read_job(self.jobs, claim.job_id, self.tenant)
                    self.response.status_code = status.HTTP_200_OK
                    self.response.headers["Idempotent-Replayed"] = "true"
                    return JobCreated(job_id=record.id, kind=record.kind, state=record.state)
                try:
                    record = submit(claim.remember)
                except HTTPException:
                    # Not accepted: a retry with this key must create it.
                    self.idempotency.forget(self.idempotency_key, tenant=self.tenant.name)
                    raise
        except IdempotencyKeyError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
        except IdempotencyConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
        return JobCreated(job_id=record.id, kind=record.kind, state=record.state)

    def whole_job(
        self,
        kind: str,
        request: BaseModel,
        *,
        check: Callable[[], None] | None = None,
        claim: Callable[[str], Callable[[], None]] | None = None,
    ) -> JobCreated:
        """Submit a one-task job once. `check()` runs inside the submit, so an Idempotency-Key replay returns its job
        before the check (e.g. an adapter name its own first submission took) can refuse it; `claim(job_id)` takes
        what the job will own just before the record is made and returns how to give it back should the job not be
        accepted after all."""
        params = request.model_dump()

        def submit(remember: Callable[[str], None]) -> JobRecord:
            if check is not None:
                check()
            record = JobRecord(
                id=new_id(), kind=kind, params=params, task_ids=[new_id()], queue=_job_queue(self.workers)
            )
            release = claim(record.id) if claim is not None else None
            try:
                self.create(record)
                remember(record.id)
                return _enqueue_or_fail(self.jobs, record, lambda: send_placeholder_job(self.celery, record))
            except BaseException:
                if release is not None:
                    release()
                raise

        return self.once(kind, request.model_dump(mode="json"), submit)


SubmissionDep = Annotated[JobSubmission, Depends(JobSubmission)]


@router.post(
    "/predict", status_code=status.HTTP_202_ACCEPTED, response_model=JobCreated, responses=CREATE_JOB_RESPONSES
)
def create_predict_job(
    request: PredictJobRequest,
    settings: SettingsDep,
    datasets: DatasetStoreDep,
    submission: SubmissionDep,
) -> JobCreated:
    """Judge every row of a dataset: cut into chunks of PREDICT_CHUNK_ROWS on the device class's shared queue (gpu,
    else cpu), which every worker of that class on every host pulls from."""

    def submit(remember: Callable[[str], None]) -> JobRecord:
        dataset = _require_dataset(datasets, request.dataset, submission.tenant)
        check_judge_files(settings, request, submission.tenant)
        if request.time_limit_s is not None and request.time_limit_s > settings.JOB_TIME_LIMIT_S:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"time_limit_s={request.time_limit_s} is more than this server allows"
                f" (JOB_TIME_LIMIT_S={settings.JOB_TIME_LIMIT_S}); ask for less or leave it out",
            )
        record = new_predict_record(
            new_id(), params=request.model_dump(), rows=dataset.rows, queue=_job_queue(submission.workers),
            chunk_rows=settings.PREDICT_CHUNK_ROWS,
        )  # fmt: skip
        submission.create(record)
        remember(record.id)
        return _enqueue_or_fail(submission.jobs, record, lambda: send_predict_job(submission.celery, record))

    return submission.once("predict", request.model_dump(mode="json"), submit)


def _adapter_name_claim(settings: Settings, name: str, tenant: Tenant) -> Callable[[str], Callable[[], None]]:
    """Claim adapters/<name>/ for a job id (409 when taken): atomic, so of concurrent submissions one gets it."""

    def claim(job_id: str) -> Callable[[], None]:
        try:
            claim_adapter_name(settings.SHARED_DIR, name, job_id, tenant=tenant.name)
        except AdapterNameTakenError as exc:
            detail = str(exc)
            # Adapter names are one namespace: another tenant's name is taken too, without naming its job.
            if not tenant.owns(claim_tenant(settings.SHARED_DIR / ADAPTERS_DIR_NAME / name)):
                detail = f"adapter name {name!r} is taken; choose another adapter_name"
            raise HTTPException(status.HTTP_409_CONFLICT, detail=detail) from None
        except UnsafePathError as exc:
            raise _unprocessable(f"adapter_name: {exc}") from None
        return lambda: release_adapter_name(settings.SHARED_DIR, name, job_id)

    return claim


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, response_model=JobCreated, responses=CREATE_JOB_RESPONSES)
def create_train_job(
    request: TrainJobRequest,
    settings: SettingsDep,
    datasets: DatasetStoreDep,
    submission: SubmissionDep,
) -> JobCreated:
    """Fine-tune a LoRA judge (3-way head) into adapters/<adapter_name or job id>/, or with `text_only` fit a text
    predictor there (workers/jobs/text_fit.py); GET /v1/adapters lists it.

    Everything the worker would fail on is checked first (labelled datasets, the base model and the LoRA options
    against its config and weights, batch × length against TRAIN_MAX_BATCH_TOKENS), then the adapter name is
    claimed (shared/adapter_claim.py): a bad request is a 4xx now, never a 202 for a job that fails later.
    """
    tenant = submission.tenant
    claim = _adapter_name_claim(settings, request.adapter_name, tenant) if request.adapter_name is not None else None

    def check() -> None:
        _require_labelled(datasets, "dataset", request.dataset, tenant)
        _require_labelled(datasets, "validation_dataset", request.validation_dataset, tenant)
        for extra in request.extra_datasets:
            _require_labelled(datasets, "extra_datasets", extra.dataset, tenant)
        if request.text_only:
            ids = [request.dataset] + [extra.dataset for extra in request.extra_datasets]
            rows = sum(read_own_dataset(datasets, dataset_id, tenant).rows for dataset_id in ids)
            check_text_fit_options(settings, request, user_rows=rows)
        else:
            check_train_options(settings, request)

    return submission.whole_job("train", request, check=check, claim=claim)


@router.post(
    "/leaderboard", status_code=status.HTTP_202_ACCEPTED, response_model=JobCreated, responses=CREATE_JOB_RESPONSES
)
def create_leaderboard_job(
    request: LeaderboardJobRequest, datasets: DatasetStoreDep, submission: SubmissionDep
) -> JobCreated:
    """Rank the models of a labelled dataset from its human votes: Bradley-Terry ratings on the Elo scale with
    bootstrap 95% intervals (leaderboard.csv, .json, .png and the pairwise win rates as artefacts).

    A predict job on a dataset with model names publishes its predicted leaderboard (and, with labels, this human
    one and their agreement) by itself.
    """
    dataset = _require_dataset(datasets, request.dataset, submission.tenant)
    if not dataset.labelled:
        raise _unprocessable(
            f"dataset {request.dataset} has no labels (winner_model_a, winner_model_b, winner_tie): a leaderboard job"
            " ranks human votes; for predictions, a predict job on a dataset with model_a and model_b publishes one"
        )
    if dataset.model_names is False:
        raise _unprocessable(
            f"dataset {request.dataset} has no model_a and model_b columns: add the two models' names to each row"
        )
    return submission.whole_job("leaderboard", request)


@router.post("/synth", status_code=status.HTTP_202_ACCEPTED, response_model=JobCreated, responses=CREATE_JOB_RESPONSES)
def create_synth_job(
    request: SynthJobRequest, settings: SettingsDep, datasets: DatasetStoreDep, submission: SubmissionDep
) -> JobCreated:
    """Label a dataset's pairs with a teacher LLM into synth/<job id>/ (pairs.csv, annotations.jsonl, metrics.json).

    Upload synth/<job id>/pairs.csv's content as a dataset to train on it (`extra_datasets` with a weight).
    """
    if settings.teacher_parallel_refusal:
        raise _unprocessable(settings.teacher_parallel_refusal)
    _require_dataset(datasets, request.dataset, submission.tenant)
    _require_base_model(settings, request.teacher_model, field="teacher_model")  # a 422 now, not a failed job later
    return submission.whole_job("synth", request)


@router.get("", response_model=list[JobRecord], responses=PAGE_HEADERS)
def read_jobs(
    jobs: JobStoreDep,
    tenant: TenantDep,
    request: Request,
    response: Response,
    kind: JobKind | None = None,
    state: JobState | None = None,
    limit: PageLimit = 50,
    after: PageAfter = None,
) -> list[JobRecord]:
    """The caller's jobs (the admin: everyone's), newest first, optionally filtered by kind and state; one page of
    `limit`. When more remain, the `X-Next-Cursor` header holds the `after` of the next page and `Link` its URL."""
    owner = None if tenant.admin else tenant.name
    page = jobs.list(kind=kind, state=state, limit=limit + 1, tenant=owner, after=after)
    response.headers.update(page_headers(request, page, limit=limit, key=lambda record: (record.created_at, record.id)))
    return page[:limit]


@router.get("/{job_id:job_id}", response_model=JobRecord, responses=ITEM_RESPONSES)
def read_job(job_id: JobId, jobs: JobStoreDep, tenant: TenantDep) -> JobRecord:
    return _read_job(jobs, job_id, tenant)


@router.post("/{job_id}/cancel", response_model=JobRecord, responses=ITEM_CHANGE_RESPONSES)
def cancel_job(job_id: JobId, jobs: JobStoreDep, celery: CeleryDep, tenant: TenantDep) -> JobRecord:
    """Cancel a queued or running job: queued tasks are dropped, running chunks stop at their next chunk."""
    record = _read_job(jobs, job_id, tenant)
    if record.terminal:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"job {job_id} is already {record.state}; nothing to cancel"
        )
    record = jobs.cancel(job_id)
    try:
        revoke(celery, record.task_ids)
    except Exception:
        pass  # the record says cancelled: workers check it before and during every step
    return record


@router.delete("/{job_id:job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ITEM_RESPONSES)
def delete_job(
    job_id: JobId, jobs: JobStoreDep, celery: CeleryDep, settings: SettingsDep, tenant: TenantDep
) -> Response:
    """Delete a job: cancel it if unfinished (its workers stop at their next batch: they find the record gone), then
    remove its record, its files and its Idempotency-Key. A train job's adapter goes too unless it finished (a
    finished adapter outlives its job: DELETE /v1/adapters/{name})."""
    record = _read_job(jobs, job_id, tenant)
    if not record.terminal:
        jobs.cancel(job_id)
        try:
            revoke(celery, record.task_ids)
        except Exception:
            log.warning("could not revoke the tasks of job %s; its workers stop when they find it gone", job_id)
    discard_unfinished_adapter(settings.SHARED_DIR, record)
    jobs.delete(job_id)
    log.info("job %s deleted by tenant %s", job_id, tenant.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse, responses=ITEM_RESPONSES)
def read_job_artifact(
    job_id: JobId,
    name: Annotated[str, Path(pattern=NAME_PATTERN, description="An artefact name from the job's `artifacts`.")],
    jobs: JobStoreDep,
    settings: SettingsDep,
    tenant: TenantDep,
) -> FileResponse:
    """Download one of the job's files (e.g. submission.csv, metrics.json)."""
    record = _read_job(jobs, job_id, tenant)
    if name not in record.artifacts:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"job {job_id} has no artefact {name!r}; it has {record.artifacts} (state: {record.state})",
        )
    path = resolve_inside(job_output_dir(settings.SHARED_DIR, job_id), name)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"artefact {name!r} is listed but missing on disk")
    return FileResponse(path, filename=name)
