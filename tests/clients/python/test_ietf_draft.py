"""A scripted client of the IETF "Resumable Uploads for HTTP" draft against
Ferry's /tus/ mount (interop version 8; contract: docs/TUS.md).

Every request carries `Upload-Draft-Interop-Version: 8` and no
`Tus-Resumable`; the destination is given in the creation URL's query.
"""

import json
import os
from urllib.parse import quote

import requests

import ferrytus as ft
from ferrytus import KiB, MiB

INTEROP = "8"
PROBLEM = "https://iana.org/assignments/http-problem-types#"


def draft_headers(**extra):
    h = {"Upload-Draft-Interop-Version": INTEROP, **ft.auth()}
    h.update(extra)
    return h


def creation_url(path):
    return f"{ft.TUS}?path={quote(path, safe='')}"


def create(path, body, complete, length=None, **extra):
    h = draft_headers(**{"Upload-Complete": "?1" if complete else "?0"}, **extra)
    if length is not None:
        h["Upload-Length"] = str(length)
    return requests.post(creation_url(path) if path else ft.TUS, headers=h, data=body, timeout=ft.TIMEOUT)


def append(url, offset, body, complete):
    h = draft_headers(**{
        "Content-Type": "application/partial-upload",
        "Upload-Offset": str(offset),
        "Upload-Complete": "?1" if complete else "?0",
    })
    return requests.patch(url, headers=h, data=body, timeout=ft.TIMEOUT)


def head(url):
    return requests.head(url, headers=draft_headers(), timeout=ft.TIMEOUT)


def problem(r):
    assert r.headers.get("Content-Type", "").startswith("application/problem+json"), r.headers.get("Content-Type")
    return json.loads(r.content)


def limits(r):
    """Upload-Limit: max-size=…, max-append-size=…, max-age=… as a dict."""
    out = {}
    for item in r.headers["Upload-Limit"].split(","):
        k, _, v = item.strip().partition("=")
        out[k] = v
    return out


def test_draft_create_head_append_complete_then_the_file_is_downloadable():
    data = os.urandom(3 * MiB + 123)
    dest = ft.unique("draft-steps")

    r = create(dest, data[:MiB], complete=False)
    assert r.status_code == 201, f"creation: {r.status_code} {r.text!r}"
    assert "Location" in r.headers
    assert r.headers["Upload-Offset"] == str(MiB)
    assert int(limits(r)["max-size"]) > 0
    url = ft.absolute(r.headers["Location"])

    r = head(url)
    assert r.status_code == 204, f"HEAD: {r.status_code}"
    assert r.headers["Upload-Offset"] == str(MiB)
    assert r.headers["Upload-Complete"] == "?0"
    assert "no-store" in r.headers.get("Cache-Control", "")
    assert "Upload-Limit" in r.headers

    r = append(url, MiB, data[MiB : 2 * MiB], complete=False)
    assert r.status_code == 204, f"append: {r.status_code} {r.text!r}"
    assert r.headers["Upload-Offset"] == str(2 * MiB)
    assert head(url).headers["Upload-Offset"] == str(2 * MiB)

    r = append(url, 2 * MiB, data[2 * MiB :], complete=True)
    assert r.status_code == 200, f"completion: {r.status_code} {r.text!r}"
    info = r.json()
    assert isinstance(info, dict)
    if "sha256" in info:
        assert info["sha256"] == ft.sha256(data)
    assert ft.remote_sha256(dest) == ft.sha256(data)


def _completed_upload():
    data = os.urandom(10 * KiB)
    dest = ft.unique("draft-done")
    r = create(dest, data[:KiB], complete=False, length=len(data))
    assert r.status_code == 201, f"{r.status_code} {r.text!r}"
    url = ft.absolute(r.headers["Location"])
    assert head(url).headers.get("Upload-Length") == str(len(data))
    r = append(url, KiB, data[KiB:], complete=True)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    assert ft.remote_sha256(dest) == ft.sha256(data)
    return url, data


def test_draft_head_after_completion_says_upload_complete():
    url, data = _completed_upload()
    r = head(url)
    assert r.status_code == 204, f"HEAD after completion: {r.status_code}"
    assert r.headers["Upload-Offset"] == str(len(data))
    assert r.headers["Upload-Complete"] == "?1", "HEAD on a completed upload"


def test_draft_append_of_bytes_to_a_completed_upload_is_400_inconsistent_length():
    # draft -09 section 4.4: bytes past a completed upload are an
    # inconsistent length; the file stays as it was.
    url, data = _completed_upload()
    r = append(url, len(data), b"more", complete=True)
    assert r.status_code == 400, f"append after completion: {r.status_code}"
    assert problem(r)["type"] == PROBLEM + "inconsistent-upload-length", r.text


def test_draft_empty_append_to_a_completed_upload_is_410_completed_upload():
    url, data = _completed_upload()
    r = append(url, len(data), b"", complete=True)
    assert r.status_code == 410, f"empty append after completion: {r.status_code}"
    assert problem(r)["type"] == PROBLEM + "completed-upload", r.text


def test_draft_offset_mismatch_is_409_problem_with_expected_and_provided_offset():
    data = os.urandom(64 * KiB)
    dest = ft.unique("draft-409")
    r = create(dest, data[: 16 * KiB], complete=False)
    assert r.status_code == 201
    url = ft.absolute(r.headers["Location"])

    r = append(url, 20 * KiB, data[20 * KiB :], complete=True)
    assert r.status_code == 409, f"{r.status_code} {r.text!r}"
    p = problem(r)
    assert p["type"] == PROBLEM + "mismatching-upload-offset"
    assert int(p["expected-offset"]) == 16 * KiB
    assert int(p["provided-offset"]) == 20 * KiB
    assert head(url).headers["Upload-Offset"] == str(16 * KiB)

    r = append(url, 16 * KiB, data[16 * KiB :], complete=True)
    assert r.status_code == 200
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_draft_inconsistent_length_is_400():
    r = create(ft.unique("draft-len"), b"x" * 50, complete=False, length=100)
    assert r.status_code == 201
    url = ft.absolute(r.headers["Location"])
    r = append(url, 50, b"y" * 10, complete=True)  # 60 bytes, 100 announced
    assert r.status_code == 400, f"{r.status_code} {r.text!r}"
    assert problem(r)["type"] == PROBLEM + "inconsistent-upload-length"


def test_draft_cancel_with_delete_then_the_upload_is_gone():
    r = create(ft.unique("draft-cancel"), os.urandom(8 * KiB), complete=False)
    assert r.status_code == 201
    url = ft.absolute(r.headers["Location"])
    r = requests.delete(url, headers=draft_headers(), timeout=ft.TIMEOUT)
    assert r.status_code == 204, f"{r.status_code} {r.text!r}"
    assert head(url).status_code in (404, 410)


def test_draft_one_request_upload_with_upload_complete_true():
    data = os.urandom(MiB + 7)
    dest = ft.unique("draft-one")
    r = create(dest, data, complete=True)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    assert "Location" in r.headers
    assert isinstance(r.json(), dict)
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_draft_destination_from_content_disposition():
    data = os.urandom(5 * KiB)
    name = ft.unique("draft-cd").split("/", 1)[1]
    r = create(None, data, complete=True, **{"Content-Disposition": f'attachment; filename="{name}"'})
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    got = ft.download(name)
    assert got.status_code == 200 and got.content == data


def test_draft_path_with_dotdot_is_400():
    r = create("py/../../escape.bin", b"x", complete=True)
    assert r.status_code == 400, f"{r.status_code} {r.text!r}"


def test_draft_length_over_max_size_is_413_with_upload_limit():
    max_size = int(requests.options(ft.TUS, timeout=ft.TIMEOUT).headers["Tus-Max-Size"])
    r = create(ft.unique("draft-huge"), b"x", complete=False, length=max_size + 1)
    assert r.status_code == 413, f"{r.status_code} {r.text!r}"
    assert "Upload-Limit" in r.headers, "413 without Upload-Limit"
    assert int(limits(r)["max-size"]) == max_size
