"""`sami-gateway jobs submit | list | get | cancel | delete | download | models`: the Jobs API through the Python SDK.

Loaded by every `sami-gateway` command line: the SDK (and httpx) is imported only inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from sami_client import Job, SamiClient

Flags = dict[str, Any]
Action = Callable[["SamiClient", Flags], int]

FORMATS = ("wav", "flac", "mp3", "aac", "m4a")
BAR_WIDTH = 30  # characters of the progress bar
POLL_SECONDS = 2.0  # one long poll while a progress bar is shown: the bar moves at least this often
FAILED = 1  # exit status when the gateway refused, or a job did not succeed


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `jobs` and its actions to `sami-gateway`."""
    jobs = subparsers.add_parser("jobs", help="submit, follow and fetch jobs on a running gateway",
                                 description="The Jobs API of a running gateway, through the Python SDK.")
    _connection_flags(jobs, None)
    actions = jobs.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, argparse.SUPPRESS)  # accepted before or after the action

    def add(name: str, help_text: str, action: Action) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=help_text,
                                                             description=help_text)
        parser.set_defaults(func=_with_client(action))
        return parser

    _submit_flags(add("submit", "submit audio files or URLs as jobs (and wait, and download)", _submit))
    listing = add("list", "this appkey's jobs, newest first (JSON)", _list)
    listing.add_argument("--status", help="comma-separated: queued,processing,succeeded,failed,cancelled")
    listing.add_argument("--limit", type=int, help="jobs per page")
    listing.add_argument("--cursor", help="the next_cursor of the previous page")
    listing.add_argument("--all", action="store_true", help="every page")
    get = add("get", "one job (JSON)", _get)
    get.add_argument("id", metavar="ID")
    get.add_argument("--wait", type=float, metavar="S", help="long poll: answer when it ends, or after S s (≤ 60)")
    add("cancel", "cancel a queued or processing job (JSON)", _cancel).add_argument("id", metavar="ID")
    add("delete", "delete a job, its input and its results", _delete).add_argument("id", metavar="ID")
    add("models", "the models a job may name, with their stems, and the output options (JSON)", _models)
    download = add("download", "write a job's result files and results.json into a folder", _download)
    download.add_argument("id", metavar="ID")
    download.add_argument("-o", "--out", help="folder (default: ./ID)")


def _connection_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--url", default=default, help="the gateway (default: env SAMI_URL, else http://127.0.0.1:8080)")
    parser.add_argument("--token", default=default, help="its token (default: env SAMI_TOKEN)")


def _submit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="a local audio file, or an http(s) URL to fetch")
    parser.add_argument("-m", "--model", help="model (default: the gateway's, htdemucs)")
    parser.add_argument("--stems", help="comma-separated stems, e.g. vocals,no_vocals (default: every source)")
    parser.add_argument("--format", choices=FORMATS, help="output format (default wav)")
    parser.add_argument("--name", help="the job's name (default: the file's name)")
    parser.add_argument("--webhook-url", dest="webhook_url", help="where the gateway POSTs the job's end")
    parser.add_argument("--wait", action="store_true", help="wait for the jobs, with a progress bar on stderr")
    parser.add_argument("-o", "--out", help="download each job's results into OUT/<track>/ (implies --wait)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for each job (default: no limit)")


def _with_client(action: Action) -> Callable[[Flags], int]:
    """The handler: a client for --url/--token, then `action`; the gateway's refusals exit 1."""
    def handler(flags: Flags) -> int:
        try:
            from sami_client import SamiClient, SamiClientError
        except ImportError:
            print("sami-gateway: `jobs` needs the Python SDK: pip install ./sdk/python", file=sys.stderr)
            return 2
        flags.pop("action", None)
        try:
            with SamiClient(flags.pop("url", None), flags.pop("token", None)) as client:
                return action(client, flags)
        except SamiClientError as exc:
            print(f"sami-gateway: {exc}", file=sys.stderr)
            return FAILED
        except ValueError as exc:
            print(f"sami-gateway: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a FILE that cannot be read, a folder that cannot be written
            print(f"sami-gateway: {exc}", file=sys.stderr)
            return FAILED
        except KeyboardInterrupt:
            print("sami-gateway: interrupted (the jobs go on; `jobs cancel ID` stops one)", file=sys.stderr)
            return 130
    return handler


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


class ProgressBar:
    """`label [#####.....]  42% processing` on a terminal (redrawn in place); elsewhere a line per change."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self._last: tuple[str, int] | None = None

    def update(self, job: Job) -> None:
        percent = int(max(0.0, min(100.0, job.progress)))
        filled = BAR_WIDTH * percent // 100
        line = f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}% {job.status}"
        if self.interactive:
            self.stream.write("\r" + line.ljust(len(line) + 12))
        elif self._last is None or self._last[0] != job.status or percent // 10 != self._last[1] // 10:
            self.stream.write(line + "\n")
        self._last = (job.status, percent)
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()


def _source_path(source: str) -> Path:
    return Path(urlsplit(source).path if source.startswith(("http://", "https://")) else source)


def track_name(source: str) -> str:
    """A folder name for an input: the file's name without its extension (a URL's last path segment)."""
    return _source_path(source).stem or "track"


def _submit(client: SamiClient, flags: Flags) -> int:
    sources: Sequence[str] = flags["files"]
    jobs = [client.submit(source, model=flags["model"], stems=flags["stems"], output=flags["format"],
                          name=flags["name"] or _source_path(source).name or None,
                          webhook_url=flags["webhook_url"])
            for source in sources]
    if not (flags["wait"] or flags["out"]):
        _print_json(jobs[0].raw if len(jobs) == 1 else [job.raw for job in jobs])
        return 0
    folders = _folders(sources, flags["out"])
    failed = 0
    for source, job, folder in zip(sources, jobs, folders, strict=True):
        bar = ProgressBar(track_name(source))
        try:
            done = client.wait(job, timeout=flags["timeout"], poll=POLL_SECONDS, on_progress=bar.update)
        finally:
            bar.close()
        failed += _report(client, done, folder)
    return FAILED if failed else 0


def _folders(sources: Sequence[str], out: str | None) -> list[Path | None]:
    """OUT/<track>/ per input (a repeated track name gets -2, -3, ...), or None when nothing is downloaded."""
    if out is None:
        return [None] * len(sources)
    seen: dict[str, int] = {}
    folders: list[Path | None] = []
    for source in sources:
        name = track_name(source)
        seen[name] = seen.get(name, 0) + 1
        folders.append(Path(out) / (name if seen[name] == 1 else f"{name}-{seen[name]}"))
    return folders


def _report(client: SamiClient, job: Job, folder: Path | None) -> int:
    """One line per job on stdout: id, status, and where its results went or why it failed; 1 if it failed."""
    if not job.succeeded:
        reason = f"{job.error.status_text}: {job.error.message}" if job.error else ""
        print(f"{job.id}\t{job.status}\t{reason}".rstrip())
        return 1
    if folder is None:
        print(f"{job.id}\t{job.status}")
        return 0
    client.download(job, folder)
    print(f"{job.id}\t{job.status}\t{folder}")
    return 0


def _list(client: SamiClient, flags: Flags) -> int:
    if flags["all"]:
        _print_json({"jobs": [job.raw for job in client.iter_jobs(flags["status"], flags["limit"])],
                     "next_cursor": None})
        return 0
    page = client.list(flags["status"], flags["limit"], flags["cursor"])
    _print_json({"jobs": [job.raw for job in page.jobs], "next_cursor": page.next_cursor})
    return 0


def _get(client: SamiClient, flags: Flags) -> int:
    _print_json(client.get(flags["id"], wait=flags["wait"]).raw)
    return 0


def _cancel(client: SamiClient, flags: Flags) -> int:
    _print_json(client.cancel(flags["id"]).raw)
    return 0


def _delete(client: SamiClient, flags: Flags) -> int:
    client.delete(flags["id"])
    print(f"deleted {flags['id']}", file=sys.stderr)
    return 0


def _models(client: SamiClient, flags: Flags) -> int:
    _print_json(client.models().raw)
    return 0


def _download(client: SamiClient, flags: Flags) -> int:
    folder = Path(flags["out"] or flags["id"])
    for path in client.download(flags["id"], folder).values():
        print(path)
    print(folder / "results.json")
    return 0
