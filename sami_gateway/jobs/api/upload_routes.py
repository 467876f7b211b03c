"""`POST /api/v1/uploads` and the signed `PUT` that fills an upload, streamed to storage."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from aiohttp import web

from ...errors import Code, error
from ...web.state import METRICS, QUOTAS
from ..blobs import BlobTooLarge, Written
from ..model import Upload
from ..service import new_id
from ..storage_quota import StorageUsage
from ..views import iso, upload_json
from .http import authorized, base_url, chunks, file_timeout, json_response, service


async def create_upload(request: web.Request) -> web.Response:
    """A new upload and the signed URL to PUT its bytes to."""
    auth = authorized(request)
    jobs = service(request)
    async with request.app[QUOTAS].charge(auth.appkey, auth.quota):
        now, upload_id = time.time(), new_id("upl")
        path, expires = jobs.signer.sign("PUT", f"/api/v1/uploads/{upload_id}", jobs.settings.signed_url_ttl, now)
        # The slot lives exactly as long as the URL says (`expires`, rounded up to a whole second).
        upload = Upload(upload_id, auth.appkey, now, float(expires), jobs.max_input_bytes)
        await jobs.store.create_upload(upload, jobs.storage_limits(auth.appkey))
    return json_response({"upload_id": upload.id, "upload_url": base_url(request) + path,
                          "expires_at": iso(expires), "max_bytes": upload.max_bytes}, 201)


async def put_upload(request: web.Request) -> web.Response:
    """The upload's bytes, under its signed URL (no token), at most once.

    The bytes go to a name of this PUT's own; the upload is claimed (the store's conditional update,
    with their size and hash), and only then moved into place. A PUT that loses the claim to another
    leaves no byte behind, so the stored file is always the one the upload's size and hash describe.
    """
    jobs = service(request)
    jobs.signer.check("PUT", request.path, request.query)
    upload = await jobs.store.get_upload(request.match_info["upload_id"])
    if upload is None:
        raise error(Code.JOB_NOT_FOUND, "no such upload")
    if upload.completed_at is not None:
        raise error(Code.CONFLICT, "this upload has already been PUT", {"Connection": "close"})
    too_large = error(Code.PAYLOAD_TOO_LARGE, f"an upload is at most {upload.max_bytes} bytes", {"Connection": "close"})
    if (request.content_length or 0) > upload.max_bytes:
        raise too_large
    if request.content_length:  # refused before the bytes arrive; the claim checks again with their size
        await jobs.check_room(upload.appkey, StorageUsage(request.content_length), unread_body=True)
    timeout = file_timeout(request, upload.max_bytes)
    private = f"{upload.key}.put-{uuid.uuid4().hex}"  # not an upload id: swept at start if a crash leaves it
    try:
        written = await jobs.blobs.put_stream(private, chunks(request.content, timeout), upload.max_bytes)
    except BlobTooLarge as exc:
        raise too_large from exc
    except TimeoutError as exc:
        raise error(Code.BODY_TIMEOUT, "the upload did not arrive in time", {"Connection": "close"}) from exc
    try:
        done = await _claim(request, upload, written)
    except BaseException:
        await jobs.blobs.delete_prefix(private)
        raise
    try:
        await jobs.blobs.move(private, upload.key)
    except BaseException:  # claimed, but its bytes are not in place: an upload no job can use is forgotten
        await jobs.store.delete_upload(upload.id)
        await jobs.blobs.delete_prefix(private)
        await jobs.blobs.delete_prefix(upload.key)
        raise
    request.app[METRICS].upload_bytes.inc(written.size)
    return json_response(upload_json(done))


async def _claim(request: web.Request, upload: Upload, written: Written) -> Upload:
    """The upload completed with `written`'s size and hash, if no other PUT completed it first (409)."""
    jobs = service(request)
    if written.size == 0:
        raise error(Code.EMPTY_DATA, "the upload is empty")
    now = time.time()
    done = replace(upload, expires_at=now + jobs.settings.upload_ttl, completed_at=now, size=written.size,
                   sha256=written.sha256)
    if not await jobs.store.complete_upload(done, jobs.storage_limits(upload.appkey)):
        raise error(Code.CONFLICT, "this upload has already been PUT")
    return done
