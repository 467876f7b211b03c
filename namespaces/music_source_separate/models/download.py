"""Writing model files into the store: streamed, hashed while written, verified, then renamed."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .layout import ModelStoreError

CHUNK_BYTES = 64 * 1024
PROGRESS_MIN_BYTES = 256 * 1024  # a report at most every 1 % or 256 KiB, whichever is larger
DEFAULT_TIMEOUT_SECONDS = 60.0  # per socket operation: a stalled server fails, a slow one does not
FILE_MODE = 0o644  # temporary files are private (0600); a finished layer is readable by the service user

Progress = Callable[[int, int], object]  # (bytes written so far, total bytes or 0 when unknown)


def download_file(url: str, dest_dir: Path, filename: str, checksum: str,
                  on_progress: Progress | None = None,
                  timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Path:
    """Download `url` to `dest_dir/filename`, kept only if its sha256 starts with `checksum`.

    `on_progress(0, total)` is called once the response headers arrived, then as bytes
    come in. On any failure nothing is left in `dest_dir` and ModelStoreError names the URL;
    an exception raised by `on_progress` aborts the download and propagates unchanged.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "sami-gateway"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else 0
            return save_verified(response, dest_dir, filename, checksum,
                                 total=total, on_progress=on_progress, origin=url)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response's socket
        raise ModelStoreError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ModelStoreError(f"cannot download {url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ModelStoreError(f"cannot download {url}: {exc!r}") from exc


def save_verified(source: BinaryIO, dest_dir: Path, filename: str, checksum: str, *,
                  total: int = 0, on_progress: Progress | None = None, origin: str = "") -> Path:
    """Copy `source` to `dest_dir/filename` atomically, only if its sha256 starts with `checksum`.

    `total` (when known) is the exact number of bytes expected: fewer is an interrupted
    transfer. Nothing is left behind on failure.
    """
    origin = origin or filename
    fd, part_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.part-")
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, done = _copy_hashing(source, out, total, on_progress)
            out.flush()
            os.fsync(out.fileno())
        if total and done != total:
            raise ModelStoreError(f"interrupted transfer of {origin}: received {done} of {total} bytes; "
                                  "the file was not kept")
        if not digest.startswith(checksum):
            raise ModelStoreError(f"checksum mismatch for {origin}: expected {checksum}, "
                                  f"got {digest[:max(len(checksum), 8)]}; the file was not kept")
        os.chmod(part, FILE_MODE)
        target = dest_dir / filename
        os.replace(part, target)
        return target
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _copy_hashing(source: BinaryIO, out: BinaryIO, total: int,
                  on_progress: Progress | None) -> tuple[str, int]:
    sha = hashlib.sha256()
    done = 0
    step = max(total // 100, PROGRESS_MIN_BYTES)
    reported = 0
    if on_progress is not None:
        on_progress(0, total)
    while block := source.read(CHUNK_BYTES):
        sha.update(block)
        out.write(block)
        done += len(block)
        if on_progress is not None and done - reported >= step:
            reported = done
            on_progress(done, total)
    if on_progress is not None and reported != done and (not total or done == total):
        on_progress(done, total)
    return sha.hexdigest(), done
