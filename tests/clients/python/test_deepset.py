"""deepset's official Python SDK (`deepset-cloud-sdk`) against Ferry's deepset
dialect: upload sessions under `/api/v1/workspaces/{workspace}/upload_sessions…`
and the presigned POST form their `aws_prefixed_request_config` points at
(Ferry's own `/deepset/objects`, whose policy Ferry signs and verifies).

The SDK is pointed at Ferry the documented way: `CommonConfig(api_key=<Ferry
token>, api_url=<FERRY_URL>/api/v1)`. The workspace is the user's home space.
Uploads go through `FilesService.upload_file_paths(..., blocking=True)`: the
SDK creates a session (it uses sessions for more than 20 paths), POSTs every
file and `.meta.json` companion (up to 120 at a time), closes the session and
polls its status until `finished_files + failed_files` covers every file.
Every file is then checked through the native API (`/v1/spaces/…/files/…`
for the bytes, `/v1/sessions/{id}` for the metadata the companion became).
Where the SDK cannot ask something (an expiry, a tampered form), the test
builds the SDK's own objects and sends the form with the SDK's S3 client.
"""

import asyncio
import base64
import json
import time
import uuid

import aiohttp
import pytest
import requests
from deepset_cloud_sdk._api.config import CommonConfig
from deepset_cloud_sdk._api.deepset_cloud_api import DeepsetCloudAPI
from deepset_cloud_sdk._api.upload_sessions import (
    AWSPrefixedRequestConfig,
    FailedToSendUploadSessionRequest,
    UploadSession,
    UploadSessionsAPI,
    WriteMode,
)
from deepset_cloud_sdk._s3.upload import S3
from deepset_cloud_sdk._service.files_service import FilesService

import ferrytus as ft

API = ft.URL + "/api/v1"


def config(token=None):
    return CommonConfig(api_key=token or ft.TOKEN, api_url=API)


def upload_paths(paths, write_mode=WriteMode.KEEP, token=None, workspace=None):
    """The SDK's upload of file paths, blocking until ingestion is done."""

    async def go():
        async with FilesService.factory(config(token)) as service:
            return await service.upload_file_paths(
                workspace_name=workspace or ft.SPACE,
                file_paths=paths,
                write_mode=write_mode,
                blocking=True,
                timeout_s=300,
                show_progress=False,
            )

    return asyncio.run(go())


def sessions_url(workspace=None):
    return f"{API}/workspaces/{workspace or ft.SPACE}/upload_sessions"


def latest_session(token=None, workspace=None):
    r = requests.get(
        sessions_url(workspace), params={"limit": 1}, headers=ft.auth(token), timeout=ft.TIMEOUT
    )
    assert r.status_code == 200, r.text
    return r.json()["data"][0]


def session_status(session_id, token=None, workspace=None):
    r = requests.get(f"{sessions_url(workspace)}/{session_id}", headers=ft.auth(token), timeout=ft.TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["ingestion_status"]


def native_session(session_id, token=None):
    """The same session through the native API (its id without dashes)."""
    sid = str(session_id).replace("-", "")
    r = requests.get(f"{ft.URL}/v1/sessions/{sid}", headers=ft.auth(token), timeout=ft.TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def write_files(tmp_path, names, content, meta=None):
    paths = []
    for name in names:
        p = tmp_path / name
        p.write_bytes(content(name))
        paths.append(p)
        if meta is not None:
            m = tmp_path / (name + ".meta.json")
            m.write_text(json.dumps(meta(name)))
            paths.append(m)
    return paths


def upload_session_from(body):
    """The SDK's UploadSession from a create answer (as its API builds it)."""
    return UploadSession(
        session_id=uuid.UUID(body["session_id"]),
        documentation_url=body["documentation_url"],
        expires_at=body["expires_at"],
        aws_prefixed_request_config=AWSPrefixedRequestConfig(
            fields=dict(body["aws_prefixed_request_config"]["fields"]),
            url=body["aws_prefixed_request_config"]["url"],
        ),
    )


def sdk_post(session, name, content):
    """One file through the SDK's S3 client (one attempt); its result."""

    async def go():
        async with S3(concurrency=4, max_attempts=1) as s3:
            async with aiohttp.ClientSession(connector=s3.connector) as client:
                return await s3.upload_from_memory(name, session, content, client)

    return asyncio.run(go())


def create_raw(body=None, token=None, workspace=None):
    return requests.post(sessions_url(workspace), json=body or {}, headers=ft.auth(token), timeout=ft.TIMEOUT)


# ------------------------------------------------------------------ tests


def test_sdk_uploads_300_files_with_meta_and_all_land(tmp_path):
    tag = uuid.uuid4().hex[:8]
    names = [f"ds-{tag}-{i:03}.txt" for i in range(300)]
    paths = write_files(
        tmp_path,
        names,
        content=lambda n: f"document {n}\n".encode() * 3,
        meta=lambda n: {"source": "sdk", "name": n},
    )
    summary = upload_paths(paths)
    assert summary.failed_upload_count == 0, summary.failed
    assert summary.successful_upload_count == 600  # 300 files + 300 companions

    session = latest_session()
    assert session["status"] == "CLOSED"
    assert session["write_mode"] == "KEEP"
    assert session_status(session["session_id"]) == {"failed_files": 0, "finished_files": 300}

    for name in names:
        r = ft.download(name)
        assert r.status_code == 200, f"{name}: {r.status_code}"
        assert r.content == f"document {name}\n".encode() * 3
        assert ft.download(name + ".meta.json").status_code == 404, "a companion is no file"
    files = {
        u["file"]["path"]: u["file"]
        for u in native_session(session["session_id"])["uploads"]
        if u.get("file")
    }
    assert sorted(files) == sorted(names)
    for name in names:
        assert files[name]["metadata"] == {"source": "sdk", "name": name}

    # The session's files, paged, with their ingestion status.
    r = requests.get(
        f"{sessions_url()}/{session['session_id']}/files",
        params={"limit": 100, "page_number": 3, "ingestion_status": "FINISHED"},
        headers=ft.auth(),
        timeout=ft.TIMEOUT,
    )
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 300 and page["has_more"] is False
    assert len(page["data"]) == 100


def test_a_fail_mode_session_that_clashes_keeps_the_existing_files(tmp_path):
    tag = uuid.uuid4().hex[:8]
    first = [f"clash-{tag}-{i:02}.txt" for i in range(25)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    upload_paths(write_files(tmp_path / "a", first, content=lambda n: b"original"))
    # Five names again plus twenty new ones, in FAIL mode.
    second = first[:5] + [f"new-{tag}-{i:02}.txt" for i in range(20)]
    summary = upload_paths(
        write_files(tmp_path / "b", second, content=lambda n: b"second"), write_mode=WriteMode.FAIL
    )
    assert summary.failed_upload_count == 0  # every POST was taken; ingestion decides
    session = latest_session()
    assert session["write_mode"] == "FAIL"
    assert session_status(session["session_id"]) == {"failed_files": 5, "finished_files": 20}
    for name in first:
        assert ft.download(name).content == b"original", name
    for name in second[5:]:
        assert ft.download(name).content == b"second", name
    r = requests.get(
        f"{sessions_url()}/{session['session_id']}/files",
        params={"ingestion_status": "FAILED", "limit": 100},
        headers=ft.auth(),
        timeout=ft.TIMEOUT,
    )
    assert sorted(f["name"] for f in r.json()["data"]) == sorted(first[:5])


def test_the_open_session_limit_answers_406():
    assert ft.ADMIN_TOKEN
    name = f"dslimit{uuid.uuid4().hex[:8]}"
    r = requests.post(
        f"{ft.URL}/v1/admin/users",
        headers=ft.auth(ft.ADMIN_TOKEN),
        json={"name": name, "max_open_sessions": 2},
        timeout=ft.TIMEOUT,
    )
    assert r.status_code == 201, r.text
    token, home = r.json()["token"], r.json()["home_space"]

    async def go():
        async with DeepsetCloudAPI.factory(config(token)) as api:
            sessions = UploadSessionsAPI(api)
            opened = [await sessions.create(workspace_name=home) for _ in range(2)]
            with pytest.raises(FailedToSendUploadSessionRequest, match="406"):
                await sessions.create(workspace_name=home)
            await sessions.close(workspace_name=home, session_id=opened[0].session_id)
            await sessions.create(workspace_name=home)  # room again
            listed = await sessions.list(workspace_name=home, limit=10)
            return listed

    listed = asyncio.run(go())
    assert listed.total == 3
    assert sorted(s.status.value for s in listed.data) == ["CLOSED", "OPEN", "OPEN"]
    r = create_raw(token=token, workspace=home)
    assert r.status_code == 406
    assert "maximum number of upload sessions" in r.json()["detail"]


def test_a_tampered_policy_is_refused_with_403():
    r = create_raw()
    assert r.status_code == 201, r.text
    session = upload_session_from(r.json())
    fields = session.aws_prefixed_request_config.fields
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if not (isinstance(c, list) and c[0] == "content-length-range")]
    fields["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
    result = sdk_post(session, "tampered.txt", b"x")
    assert not result.success
    assert getattr(result.exception, "status", None) == 403, result.exception

    # The untouched form still works, and the SDK closes the session.
    good = upload_session_from(r.json())
    assert sdk_post(good, "untampered-" + uuid.uuid4().hex[:8] + ".txt", b"fine").success

    async def close():
        async with DeepsetCloudAPI.factory(config()) as api:
            await UploadSessionsAPI(api).close(workspace_name=ft.SPACE, session_id=good.session_id)

    asyncio.run(close())
    assert session_status(good.session_id) == {"failed_files": 0, "finished_files": 1}


def test_an_expired_form_is_refused_with_403():
    r = create_raw({"expires_in_seconds": 1})
    assert r.status_code == 201, r.text
    session = upload_session_from(r.json())
    time.sleep(1.5)
    result = sdk_post(session, "late.txt", b"too late")
    assert not result.success
    assert getattr(result.exception, "status", None) == 403, result.exception
    # The SDK keeps only the status; the same form by hand shows S3's error.
    cfg = session.aws_prefixed_request_config
    r = requests.post(cfg.url, data=cfg.fields, files={"file": ("late.txt", b"too late")}, timeout=ft.TIMEOUT)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text and "Policy expired" in r.text, r.text


def test_validation_errors_are_422_in_fastapi_shape():
    r = create_raw({"write_mode": "SOMETIMES", "expires_in_seconds": 0})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"][:2] for d in detail] == [["body", "write_mode"], ["body", "expires_in_seconds"]]
    assert all({"loc", "msg", "type"} <= set(d) for d in detail)
