"""`arena remote ...` (python -m arena_client): the gateway's jobs from a terminal or a script.

Exit status: 0 done; 1 a job that failed or was cancelled, or a server that could not be reached or did not cope;
2 a request to fix (bad input, or any 4xx), with the server's reason on one line of stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from arena_client.client import (
    DEFAULT_URL,
    ArenaClient,
    ArenaError,
    RetryPolicy,
    is_local,
    local_api_key,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_REQUEST = 0, 1, 2
BAR_WIDTH = 30


class ProgressBar:
    """A job's progress on stderr: one line redrawn in a terminal, a line per change otherwise (logs, CI)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last: tuple | None = None

    def __call__(self, record: dict) -> None:
        progress = record.get("progress") or {}
        done, total, state = progress.get("done", 0), progress.get("total", 0), record["state"]
        if (done, total, state) == self.last:
            return
        self.last = (done, total, state)
        filled = BAR_WIDTH * done // total if total else 0
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {state}"
        if self.tty:
            end = "\n" if state in ("succeeded", "failed", "cancelled") else ""
            self.stream.write(f"\r{line}\x1b[K{end}")
        else:
            self.stream.write(f"job {record['id']}: {line}\n")
        self.stream.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arena remote",
        description="Talk to an arena gateway over REST. ARENA_URL and ARENA_API_KEY set the gateway and key; on this"
        " machine's gateway the key `make up` wrote to var/run/api_key is used when neither is given.",
    )
    parser.add_argument("--url", default=None, help=f"the gateway (default: ARENA_URL, else {DEFAULT_URL})")
    parser.add_argument("--api-key", default=None, help="the key (default: ARENA_API_KEY)")
    parser.add_argument("--max-retries", type=int, default=8, help="retries of a 429/502/503/504 answer (default 8)")
    parser.add_argument(
        "--max-wait", type=float, default=300.0, help="seconds of Retry-After waits in all, per request (default 300)"
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between looks at a running job")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upload = commands.add_parser("upload", help="upload a CSV; prints the dataset id")
    upload.add_argument("file", type=Path)

    predict = commands.add_parser("predict", help="upload, predict, wait, download submission.csv")
    predict.add_argument("--input", type=Path, required=True, help="the CSV to judge (Kaggle test.csv columns)")
    predict.add_argument("--output", type=Path, default=Path("submission.csv"))
    predict.add_argument("--adapter", default=None, help="an adapter (GET /v1/adapters); default: the server's")
    predict.add_argument("--detach", action="store_true", help="print the job id and return without waiting")

    train = commands.add_parser("train", help="fit an adapter on a labelled CSV and wait for it")
    train.add_argument(
        "--text-only", action="store_true", required=True, help="a text predictor (the only kind this client fits)"
    )
    train.add_argument("--input", type=Path, required=True, help="a labelled CSV (winner_* columns)")
    train.add_argument("--adapter-name", required=True, help="the adapter's name, for predict --adapter")
    shipped = train.add_mutually_exclusive_group()
    shipped.add_argument(
        "--include-shipped-data", action="store_true", help="fit on the server's shipped rows too (its default)"
    )
    shipped.add_argument("--no-shipped-data", action="store_true", help="fit on your rows alone")
    train.add_argument("--detach", action="store_true", help="print the job id and return without waiting")

    board = commands.add_parser("leaderboard", help="rank a labelled CSV's models; downloads leaderboard.csv")
    board.add_argument("--input", type=Path, required=True, help="a labelled CSV with model_a and model_b")
    board.add_argument("--output", type=Path, default=Path("leaderboard.csv"))
    board.add_argument("--bootstrap", type=int, default=None, help="resampling rounds of the intervals")
    board.add_argument("--detach", action="store_true", help="print the job id and return without waiting")

    jobs = commands.add_parser("jobs", help="list jobs, newest first (every page)")
    jobs.add_argument("--state", default=None)
    jobs.add_argument("--kind", default=None)
    jobs.add_argument("--json", action="store_true", help="one JSON record per line instead of a table")

    for name, text in (
        ("wait", "wait for a job (again) until it ends; exit 1 unless it succeeded"),
        ("cancel", "cancel a queued or running job"),
        ("delete", "delete a job, its record and its files"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id")

    download = commands.add_parser("download", help="download one of a job's files")
    download.add_argument("job_id")
    download.add_argument("name", help="an artefact name (the job's `artifacts`), e.g. submission.csv")
    download.add_argument("--output", type=Path, default=None, help="default: NAME in this folder")
    return parser


def connection(args: argparse.Namespace, environ: dict[str, str]) -> tuple[str, str | None]:
    """The gateway and key: flags, then ARENA_URL/ARENA_API_KEY, then, for a local gateway, make up's key file."""
    url = args.url or environ.get("ARENA_URL") or DEFAULT_URL
    key = args.api_key or environ.get("ARENA_API_KEY")
    if key is None and is_local(url):
        key = local_api_key()
    return url, key


class Commands:
    """Each command: what it asks of the client, what it prints (results on stdout, the rest on stderr)."""

    def __init__(self, client: ArenaClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.client, self.args, self.out, self.err = client, args, out, err

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def follow(self, job_id: str) -> dict:
        self.say(f"job {job_id}: waiting (Ctrl-C stops waiting, not the job; `arena remote wait {job_id}` resumes)")
        record = self.client.wait(job_id, poll_s=self.args.poll, on_progress=ProgressBar(self.err))
        if record["state"] != "succeeded":
            self.say(f"job {job_id} {record['state']}: {record.get('error') or 'no reason recorded'}")
        return record

    def submit_and_follow(self, kind: str, body: dict, *, output_name: str | None = None) -> int:
        created = self.client.submit(kind, body)
        job_id = created["job_id"]
        print(job_id, file=self.out, flush=True)
        if self.args.detach:
            return EXIT_OK
        record = self.follow(job_id)
        if record["state"] != "succeeded":
            return EXIT_FAILED
        if output_name is not None:
            self.client.download(job_id, output_name, self.args.output)
            self.say(f"wrote {self.args.output}")
        return EXIT_OK

    def upload(self) -> int:
        print(self.client.upload(self.args.file)["id"], file=self.out)
        return EXIT_OK

    def _upload_input(self) -> dict:
        dataset = self.client.upload(self.args.input)
        self.say(f"uploaded {self.args.input} as dataset {dataset['id']} ({dataset['rows']} rows)")
        return dataset

    def predict(self) -> int:
        body: dict = {"dataset": self._upload_input()["id"]}
        if self.args.adapter:
            body["adapter"] = self.args.adapter
        return self.submit_and_follow("predict", body, output_name="submission.csv")

    def train(self) -> int:
        body: dict = {"dataset": self._upload_input()["id"], "text_only": True, "adapter_name": self.args.adapter_name}
        if self.args.include_shipped_data or self.args.no_shipped_data:
            body["include_shipped_data"] = bool(self.args.include_shipped_data)
        return self.submit_and_follow("train", body)

    def leaderboard(self) -> int:
        body: dict = {"dataset": self._upload_input()["id"]}
        if self.args.bootstrap is not None:
            body["bootstrap"] = self.args.bootstrap
        return self.submit_and_follow("leaderboard", body, output_name="leaderboard.csv")

    def jobs(self) -> int:
        for record in self.client.jobs(state=self.args.state, kind=self.args.kind):
            if self.args.json:
                print(json.dumps(record), file=self.out)
                continue
            progress = record.get("progress") or {}
            print(
                f"{record['id']}  {record['kind']:<11} {record['state']:<10} "
                f"{progress.get('done', 0)}/{progress.get('total', 0)}  {record['created_at']}",
                file=self.out,
            )
        return EXIT_OK

    def wait(self) -> int:
        return EXIT_OK if self.follow(self.args.job_id)["state"] == "succeeded" else EXIT_FAILED

    def cancel(self) -> int:
        print(self.client.cancel(self.args.job_id)["state"], file=self.out)
        return EXIT_OK

    def delete(self) -> int:
        self.client.delete(self.args.job_id)
        self.say(f"deleted job {self.args.job_id}")
        return EXIT_OK

    def download(self) -> int:
        output = self.args.output or Path(self.args.name)
        self.client.download(self.args.job_id, self.args.name, output)
        self.say(f"wrote {output}")
        return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    make_client: Callable[..., ArenaClient] = ArenaClient,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    args = build_parser().parse_args(argv)
    url, key = connection(args, dict(os.environ if environ is None else environ))
    for option in ("input", "file"):
        path = getattr(args, option, None)
        if path is not None and not path.is_file():
            print(f"arena remote: {path} is not a file; pass the CSV to send", file=err)
            return EXIT_BAD_REQUEST
    retry = RetryPolicy(max_retries=args.max_retries, max_wait_s=args.max_wait)
    try:
        with make_client(url, api_key=key, retry=retry) as client:
            return getattr(Commands(client, args, out, err), args.command)()
    except ArenaError as exc:
        hint = ""
        if exc.status == 401 and key is None:
            hint = " (no key was sent: set ARENA_API_KEY or pass --api-key)"
        print(f"arena remote {args.command}: {exc}{hint}", file=err)
        return EXIT_BAD_REQUEST if exc.client_error else EXIT_FAILED
    except KeyboardInterrupt:
        print("\narena remote: interrupted; a job already submitted goes on (arena remote wait JOB_ID)", file=err)
        return 130
