"""Veeva Vault's resumable upload sessions (file staging) against Ferry's Veeva
dialect, scripted with `requests` exactly as Vault's API reference writes the
calls (there is no Vault SDK for Python): `Authorization: {SESSION_ID}` with
no `Bearer`, a form-urlencoded create, parts as `PUT` with
`X-VaultAPI-FilePartNumber`, `Content-Length` and `Content-MD5` (hex), commit
as `POST`, then the job status. See docs/VEEVA.md.

Every committed file is checked by SHA-256 through the native API
(`GET /v1/spaces/{space}/files/{path}`). The expiry test starts a second,
private `ferry serve` with `FERRY_MAX_EXPIRY=2` (FERRY_BIN, or
target/debug/ferry) and is skipped when there is no binary.
"""

import base64
import hashlib
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

import ferrytus as ft
from ferrytus import MiB

VERSION = "v25.1"
PART = 5 * MiB  # Vault's smallest part but the last
MAX_PART = 50 * MiB


def api(url=None):
    return f"{url or ft.URL}/api/{VERSION}/services/file_staging"


def vault(token=None):
    """Vault's auth header: the session id alone, no scheme."""
    return {"Authorization": token or ft.TOKEN, "Accept": "application/json"}


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def data_of(n, seed):
    """n pseudo-random bytes (fast, deterministic)."""
    return hashlib.shake_256(f"veeva-{seed}".encode()).digest(n)


def create(path, size, overwrite=None, token=None, url=None):
    form = {"path": path, "size": str(size)}
    if overwrite is not None:
        form["overwrite"] = "true" if overwrite else "false"
    return requests.post(f"{api(url)}/upload", headers=vault(token), data=form, timeout=ft.TIMEOUT)


def create_ok(path, size, **kw):
    r = create(path, size, **kw)
    assert r.status_code == 200, f"create: {r.status_code} {r.text!r}"
    j = r.json()
    assert j["responseStatus"] == "SUCCESS", j
    return j["data"]


def put_part(sid, n, data, md5=True, token=None, url=None):
    """One part; `md5` True sends its MD5 (hex), a string sends that value."""
    h = vault(token)
    h.update({
        "Content-Type": "application/octet-stream",
        "Content-Length": str(len(data)),
        "X-VaultAPI-FilePartNumber": str(n),
    })
    if md5 is True:
        h["Content-MD5"] = md5_hex(data)
    elif md5:
        h["Content-MD5"] = md5
    return requests.put(f"{api(url)}/upload/{sid}", headers=h, data=data, timeout=120)


def part_ok(sid, n, data, **kw):
    r = put_part(sid, n, data, **kw)
    assert r.status_code == 200, f"part {n}: {r.status_code} {r.text!r}"
    j = r.json()
    assert j["responseStatus"] == "SUCCESS"
    assert j["data"] == {"size": len(data), "part_number": n, "part_content_md5": md5_hex(data)}
    return j["data"]


def get(path, token=None, url=None, **params):
    return requests.get(f"{api(url)}{path}", headers=vault(token), params=params or None, timeout=ft.TIMEOUT)


def failure(r, status, kind):
    """A Vault failure: the status, `responseStatus: FAILURE` and the type."""
    assert r.status_code == status, f"{r.status_code} {r.text!r}"
    j = r.json()
    assert j["responseStatus"] == "FAILURE", j
    assert j["errors"][0]["type"] == kind, j
    assert j["errors"][0]["message"], j
    return j


def vault_path(stem):
    return "/" + ft.unique(stem, folder="veeva")


# ---------------------------------------------------------- the flow


def test_documented_flow_three_parts_with_md5_a_replaced_part_list_commit_job():
    data = data_of(3 * PART - 12_345, 1)
    path = vault_path("flow")
    s = create_ok(path, len(data))
    assert s["path"] == path
    assert s["name"] == path.rsplit("/", 1)[1]
    assert s["size"] == len(data)
    assert (s["uploaded"], s["uploaded_parts"], s["overwrite"]) == (0, 0, False)
    assert s["owner"] == "alice"
    assert s["created_date"] == s["last_uploaded_date"]
    assert s["expiration_date"] > s["created_date"]
    sid = s["id"]

    parts = [data[:PART], data[PART : 2 * PART], data[2 * PART :]]
    part_ok(sid, 1, parts[0])
    # Part 2 first with other bytes, then sent again: the new bytes replace them.
    stale = data_of(PART, 99)
    part_ok(sid, 2, stale)
    part_ok(sid, 2, parts[1])
    # Content-MD5 as RFC 1864 writes it (base64) is accepted too.
    part_ok(sid, 3, parts[2], md5=base64.b64encode(hashlib.md5(parts[2]).digest()).decode())

    # List the parts, two per page, following next_page.
    r = get(f"/upload/{sid}/parts", limit=2)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["responseDetails"]["limit"] == 2 and j["responseDetails"]["size"] == 2
    listed = j["data"]
    nxt = j["responseDetails"]["next_page"]
    assert nxt.startswith(ft.URL) and "cursor=" in nxt
    r = requests.get(nxt, headers=vault(), timeout=ft.TIMEOUT)
    assert r.status_code == 200, r.text
    assert "next_page" not in r.json()["responseDetails"]
    listed += r.json()["data"]
    assert listed == [
        {"size": len(p), "part_number": i + 1, "part_content_md5": md5_hex(p)} for i, p in enumerate(parts)
    ]

    r = get(f"/upload/{sid}")
    assert r.status_code == 200
    d = r.json()["data"]
    assert (d["uploaded_parts"], d["uploaded"]) == (3, len(data))

    # Commit, then the job status.
    r = requests.post(f"{api()}/upload/{sid}", headers=vault(), timeout=120)
    assert r.status_code == 200, r.text
    job_id = r.json()["data"]["job_id"]
    r = requests.get(f"{ft.URL}/api/v23.2/services/jobs/{job_id}", headers=vault(), timeout=ft.TIMEOUT)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["responseStatus"] == "SUCCESS"
    jd = job["data"]
    assert (jd["id"], jd["status"], jd["method"], jd["created_by"]) == (job_id, "SUCCESS", "POST", "alice")
    assert {"rel": "self", "href": f"/api/v23.2/services/jobs/{job_id}", "method": "GET", "accept": "application/json"} in jd["links"]
    assert jd["run_start_date"] <= jd["run_end_date"]
    f = jd["file"]
    assert (f["space"], f["path"], f["size"]) == (ft.SPACE, path[1:], len(data))
    assert f["sha256"] == ft.sha256(data)
    assert ft.remote_sha256(path[1:]) == ft.sha256(data)


def test_a_one_part_file_and_overwrite():
    path = vault_path("small")
    sid = create_ok(path, 11)["id"]
    part_ok(sid, 1, b"first value")
    assert requests.post(f"{api()}/upload/{sid}", headers=vault(), timeout=60).status_code == 200
    # Without overwrite the commit is refused and the session stays.
    sid = create_ok(path, 11)["id"]
    part_ok(sid, 1, b"other value")
    failure(requests.post(f"{api()}/upload/{sid}", headers=vault(), timeout=60), 409, "OPERATION_NOT_ALLOWED")
    assert get(f"/upload/{sid}").json()["data"]["uploaded_parts"] == 1
    # With overwrite it replaces the file.
    s = create_ok(path, 11, overwrite=True)
    assert s["overwrite"] is True
    part_ok(s["id"], 1, b"third value")
    assert requests.post(f"{api()}/upload/{s['id']}", headers=vault(), timeout=60).status_code == 200
    assert ft.download(path[1:]).content == b"third value"


def test_abort_purges_the_session():
    sid = create_ok(vault_path("abort"), PART + 1)["id"]
    part_ok(sid, 1, data_of(PART, 2))
    r = requests.delete(f"{api()}/upload/{sid}", headers=vault(), timeout=ft.TIMEOUT)
    assert r.status_code == 200 and r.json() == {"responseStatus": "SUCCESS"}
    failure(get(f"/upload/{sid}"), 410, "OPERATION_NOT_ALLOWED")
    failure(put_part(sid, 2, b"x"), 410, "OPERATION_NOT_ALLOWED")
    failure(requests.get(f"{ft.URL}/api/{VERSION}/services/jobs/{sid}", headers=vault(), timeout=ft.TIMEOUT), 404, "MALFORMED_URL")
    assert sid not in [s["id"] for s in get("/upload").json()["data"]]


def test_list_sessions_admin_sees_everyones_a_user_only_their_own():
    bob = ft.new_user("veevabob")
    mine = create_ok(vault_path("mine"), 10)["id"]
    his = create_ok("/his.bin", 10, token=bob["token"])["id"]
    as_alice = get("/upload")
    assert as_alice.status_code == 200
    alice_ids = {s["id"] for s in as_alice.json()["data"]}
    assert mine in alice_ids and his not in alice_ids
    assert all(s["owner"] == "alice" for s in as_alice.json()["data"])
    bob_ids = {s["id"] for s in get("/upload", token=bob["token"]).json()["data"]}
    assert bob_ids == {his}
    admin_ids = {s["id"] for s in get("/upload", token=ft.ADMIN_TOKEN).json()["data"]}
    assert {mine, his} <= admin_ids


def test_an_admin_names_a_space_with_the_first_segment():
    name = f"a{uuid.uuid4().hex[:8]}.bin"
    s = create_ok(f"/{ft.SPACE}/{name}", 3, token=ft.ADMIN_TOKEN)
    part_ok(s["id"], 1, b"adm", token=ft.ADMIN_TOKEN)
    r = requests.post(f"{api()}/upload/{s['id']}", headers=vault(ft.ADMIN_TOKEN), timeout=60)
    assert r.status_code == 200, r.text
    r = requests.get(f"{ft.URL}/api/{VERSION}/services/jobs/{s['id']}", headers=vault(ft.ADMIN_TOKEN), timeout=60)
    assert r.json()["data"]["file"]["space"] == ft.SPACE
    assert ft.download(name).content == b"adm"


# ------------------------------------------------------------ errors


def test_wrong_or_missing_token_is_401_invalid_session_id():
    failure(get("/upload", token="fy_0000000000000000_00"), 401, "INVALID_SESSION_ID")
    r = requests.get(f"{api()}/upload", timeout=ft.TIMEOUT)
    failure(r, 401, "INVALID_SESSION_ID")
    failure(create("/x.bin", 1, token="nonsense"), 401, "INVALID_SESSION_ID")


def test_another_users_session_id_is_404_and_leaves_the_session_alone():
    bob = ft.new_user("veevabob")
    data = data_of(PART + 7, 3)
    sid = create_ok(vault_path("foreign"), len(data))["id"]
    part_ok(sid, 1, data[:PART])
    t = bob["token"]
    failure(get(f"/upload/{sid}", token=t), 404, "MALFORMED_URL")
    failure(get(f"/upload/{sid}/parts", token=t), 404, "MALFORMED_URL")
    failure(put_part(sid, 2, data[PART:], token=t), 404, "MALFORMED_URL")
    failure(requests.post(f"{api()}/upload/{sid}", headers=vault(t), timeout=60), 404, "MALFORMED_URL")
    failure(requests.delete(f"{api()}/upload/{sid}", headers=vault(t), timeout=60), 404, "MALFORMED_URL")
    failure(requests.get(f"{ft.URL}/api/{VERSION}/services/jobs/{sid}", headers=vault(t), timeout=60), 404, "MALFORMED_URL")
    d = get(f"/upload/{sid}").json()["data"]
    assert (d["uploaded_parts"], d["uploaded"]) == (1, PART)


def test_part_order_and_bad_ranges_are_refused_and_keep_what_was_there():
    data = data_of(2 * PART + 100, 4)
    sid = create_ok(vault_path("order"), len(data))["id"]
    # Part 2 before part 1.
    failure(put_part(sid, 2, data[PART : 2 * PART]), 409, "OPERATION_NOT_ALLOWED")
    # A first part under 5 MiB that is not the last.
    failure(put_part(sid, 1, data[: PART - 1]), 400, "INVALID_DATA")
    part_ok(sid, 1, data[:PART])
    # Part 3 before part 2; part 2 of another size than part 1; past the end.
    failure(put_part(sid, 3, data[2 * PART :]), 409, "OPERATION_NOT_ALLOWED")
    failure(put_part(sid, 2, data[PART : 2 * PART + 1]), 400, "INVALID_DATA")
    failure(put_part(sid, 9, b"x"), 409, "OPERATION_NOT_ALLOWED")
    # The part number header is required.
    r = requests.put(f"{api()}/upload/{sid}", headers=vault(), data=b"x", timeout=60)
    failure(r, 400, "PARAMETER_REQUIRED")
    # An MD5 that does not match: refused, nothing kept.
    failure(put_part(sid, 2, data[PART : 2 * PART], md5=md5_hex(b"no")), 422, "INVALID_DATA")
    # Commit with parts missing.
    failure(requests.post(f"{api()}/upload/{sid}", headers=vault(), timeout=60), 409, "OPERATION_NOT_ALLOWED")
    d = get(f"/upload/{sid}").json()["data"]
    assert (d["uploaded_parts"], d["uploaded"]) == (1, PART)
    part_ok(sid, 2, data[PART : 2 * PART])
    part_ok(sid, 3, data[2 * PART :])
    failure(put_part(sid, 4, b"x"), 400, "INVALID_DATA")  # past the end: 3 parts
    assert requests.post(f"{api()}/upload/{sid}", headers=vault(), timeout=60).status_code == 200


def test_oversize_part_is_413_and_the_client_reads_the_answer():
    sid = create_ok(vault_path("big"), 2 * MAX_PART)["id"]
    failure(put_part(sid, 1, b"\0" * (MAX_PART + 1), md5=False), 413, "INVALID_DATA")
    assert get(f"/upload/{sid}").json()["data"]["uploaded"] == 0


def test_bad_create_requests_and_routes():
    failure(create("/x.bin", "lots"), 400, "INVALID_DATA")
    failure(create("/../escape.bin", 1), 400, "INVALID_DATA")
    r = requests.post(f"{api()}/upload", headers=vault(), data={"path": "/x.bin"}, timeout=60)
    failure(r, 400, "PARAMETER_REQUIRED")
    failure(create("/x.bin", 2000 * MAX_PART + 1), 413, "EXCEEDS_FILE_MAX_SIZE")
    r = requests.get(f"{ft.URL}/api/25.1/services/file_staging/upload", headers=vault(), timeout=60)
    failure(r, 404, "MALFORMED_URL")
    r = requests.get(f"{ft.URL}/api/{VERSION}/services/elsewhere", headers=vault(), timeout=60)
    failure(r, 404, "MALFORMED_URL")


# ------------------------------------------------------------ expiry


def ferry_bin():
    b = os.environ.get("FERRY_BIN") or str(Path(__file__).resolve().parents[3] / "target" / "debug" / "ferry")
    return b if os.access(b, os.X_OK) else None


@pytest.fixture
def short_lived_server():
    """A private `ferry serve` whose sessions live 2 s; yields (url, token)."""
    binary = ferry_bin()
    if not binary:
        pytest.skip("no ferry binary (set FERRY_BIN or build target/debug/ferry)")
    admin = f"veeva-admin-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env.update({"FERRY_ADMIN_TOKEN": admin, "FERRY_MAX_EXPIRY": "2", "RUST_LOG": "warn"})
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            first = proc.stdout.readline().strip()
            assert first.startswith("Ferry listening on http://127.0.0.1:"), first
            url = first.removeprefix("Ferry listening on ")
            r = requests.post(f"{url}/v1/admin/users", headers={"Authorization": f"Bearer {admin}"},
                              json={"name": "alice"}, timeout=ft.TIMEOUT)
            assert r.status_code == 201, r.text
            yield url, r.json()["token"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_expired_session_is_410_and_disappears_from_the_list(short_lived_server):
    url, token = short_lived_server
    s = create_ok("/late.bin", 10, token=token, url=url)
    assert s["expiration_date"] > s["created_date"]
    time.sleep(2.5)
    j = failure(put_part(s["id"], 1, b"0123456789", token=token, url=url), 410, "OPERATION_NOT_ALLOWED")
    assert "expired" in j["errors"][0]["message"]
    failure(get(f"/upload/{s['id']}", token=token, url=url), 410, "OPERATION_NOT_ALLOWED")
    failure(requests.post(f"{api(url)}/upload/{s['id']}", headers=vault(token), timeout=60), 410, "OPERATION_NOT_ALLOWED")
    assert get("/upload", token=token, url=url).json()["data"] == []
