"""A client of draft-ietf-httpbis-resumable-upload-12 (interop version 9),
written from the draft's text: each test follows one of its procedures and
checks what the text requires of a server (MUST and SHOULD), quoting the
section it follows. Ferry's own choices (where the draft leaves room) are
marked as such.

Headers are parsed as Structured Fields (RFC 8941) with http_sfv, as the
draft asks: `Upload-Complete` is a Boolean, `Upload-Offset` and
`Upload-Length` Integers, `Upload-Limit` a Dictionary.
"""

import hashlib
import os
import socket
import time
from urllib.parse import quote, urlsplit

import http_sfv
import pytest
import requests

import ferrytus as ft

KiB = 1024
MiB = 1024 * KiB
VERSION = "9"
MISMATCH = "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
INCONSISTENT = "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"


# ------------------------------------------------------------- the client


def hdrs(**extra):
    """Every request: "The client MUST send a header field
    `Upload-Draft-Interop-Version` ... to its requests" (Appendix)."""
    h = {"Upload-Draft-Interop-Version": VERSION, **ft.auth()}
    h.update({k.replace("_", "-"): v for k, v in extra.items()})
    return h


def sf_bool(r, name):
    v = r.headers.get(name)
    assert v is not None, f"{r.status_code} answer without {name}: {dict(r.headers)}"
    item = http_sfv.Item()
    item.parse(v.encode())
    assert isinstance(item.value, bool), f"{name}: {v!r} is not an sf-boolean"
    return item.value


def sf_int(r, name):
    v = r.headers.get(name)
    assert v is not None, f"{r.status_code} answer without {name}: {dict(r.headers)}"
    item = http_sfv.Item()
    item.parse(v.encode())
    assert isinstance(item.value, int) and item.value >= 0, f"{name}: {v!r}"
    return item.value


def upload_limit(r):
    """Section "Upload Limit": a Dictionary; the known keys are Integers."""
    v = r.headers.get("Upload-Limit")
    assert v is not None, f"{r.status_code} answer without Upload-Limit"
    d = http_sfv.Dictionary()
    d.parse(v.encode())
    out = {k: m.value for k, m in d.items()}
    for key in ("max-size", "min-size", "max-append-size", "min-append-size", "max-age"):
        if key in out:
            assert isinstance(out[key], int) and out[key] >= 0, f"{key} in {v!r}"
    return out


def echoes_version(r):
    assert r.headers.get("Upload-Draft-Interop-Version") == VERSION, (
        f"answer does not echo interop version {VERSION}: {r.headers.get('Upload-Draft-Interop-Version')!r}"
    )


def creation_url(path):
    return f"{ft.TUS}?path={quote(path, safe='')}"


def create(path, body=b"", complete=False, **extra):
    """Section "Upload Creation": POST with Upload-Complete."""
    h = hdrs(Upload_Complete="?1" if complete else "?0", **extra)
    r = requests.post(creation_url(path), headers=h, data=body, timeout=ft.TIMEOUT)
    echoes_version(r)
    return r


def append(url, offset, body, complete, **extra):
    """Section "Upload Append": PATCH, application/partial-upload."""
    h = hdrs(
        Content_Type="application/partial-upload",
        Upload_Offset=str(offset),
        Upload_Complete="?1" if complete else "?0",
        **extra,
    )
    r = requests.patch(url, headers=h, data=body, timeout=ft.TIMEOUT)
    echoes_version(r)
    return r


def retrieve(url, method="HEAD"):
    """Section "Offset Retrieval": HEAD (RECOMMENDED) or GET."""
    r = requests.request(method, url, headers=hdrs(), timeout=ft.TIMEOUT, allow_redirects=False)
    echoes_version(r)
    return r


def problem(r):
    assert r.headers.get("Content-Type", "").startswith("application/problem+json"), r.headers
    return r.json()


def started(path, data, first):
    r = create(path, data[:first])
    assert r.status_code == 201, f"creation: {r.status_code} {r.text!r}"
    return ft.absolute(r.headers["Location"])


def chunked(data, piece=4 * KiB):
    """A body of unknown length: requests sends a generator chunked."""
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ tests


def test_v9_options_announces_upload_limit_without_accept_patch_being_required():
    # "When responding to an OPTIONS request without the Upload-Complete
    # header field ... the server MUST include the Upload-Limit header field"
    r = requests.options(ft.TUS, headers=hdrs(), timeout=ft.TIMEOUT)
    assert 200 <= r.status_code < 300, r.status_code
    echoes_version(r)
    lim = upload_limit(r)
    assert lim.get("max-size", 0) > 0 or lim.get("min-size") == 0, lim


def test_v9_careful_creation_head_get_append_mismatch_and_completion():
    data = os.urandom(2 * MiB + 321)
    dest = ft.unique("d12-steps")

    # Careful creation: an empty request with Upload-Complete: ?0.
    r = create(dest)
    assert r.status_code == 201, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is False
    assert "Location" in r.headers
    lim = upload_limit(r)
    url = ft.absolute(r.headers["Location"])

    # Offset retrieval, HEAD and GET: Upload-Offset, Upload-Complete,
    # Upload-Limit, no-store; never a redirect.
    for method in ("HEAD", "GET"):
        r = retrieve(url, method)
        assert 200 <= r.status_code < 300, f"{method}: {r.status_code}"
        assert sf_int(r, "Upload-Offset") == 0
        assert sf_bool(r, "Upload-Complete") is False
        upload_limit(r)
        assert "no-store" in r.headers.get("Cache-Control", ""), method

    # Appends no larger than max-append-size.
    step = min(lim.get("max-append-size", MiB), MiB)
    r = append(url, 0, data[:step], complete=False)
    assert 200 <= r.status_code < 300, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is False
    assert sf_int(retrieve(url), "Upload-Offset") == step

    # A wrong offset: "MUST reject the request with a 409 (Conflict) status
    # code and the Upload-Complete header field set to false".
    r = append(url, step + 4096, data[step + 4096 :], complete=True)
    assert r.status_code == 409, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is False
    p = problem(r)
    assert p["type"] == MISMATCH
    assert p["expected-offset"] == step and p["provided-offset"] == step + 4096
    offset = sf_int(retrieve(url), "Upload-Offset")
    assert offset == step

    # Completion: "the response MUST include the Upload-Complete header
    # field with a true value".
    r = append(url, offset, data[offset:], complete=True)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is True
    assert ft.remote_sha256(dest) == sha(data)

    r = retrieve(url)
    assert sf_bool(r, "Upload-Complete") is True
    assert sf_int(r, "Upload-Offset") == len(data)


def test_v9_completion_by_an_empty_append_and_a_lost_final_answer_is_replayed():
    data = os.urandom(100 * KiB)
    dest = ft.unique("d12-empty")
    url = started(dest, data, 40 * KiB)
    r = append(url, 40 * KiB, data[40 * KiB :], complete=False)
    assert r.status_code == 204, f"{r.status_code} {r.text!r}"

    # "the request has no content ... requires the full representation data
    # to have been processed during prior requests"
    r = append(url, len(data), b"", complete=True)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is True
    first = r.json()

    # The final answer was lost; the client appends again. "The server can
    # choose to replay the final response" (Ferry does): never the -11
    # 410 `completed-upload`, which -12 removed.
    r = append(url, len(data), b"", complete=True)
    assert r.status_code == 200, f"replay: {r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is True
    assert r.json() == first
    assert ft.remote_sha256(dest) == sha(data)


def test_v9_bytes_after_completion_are_refused_with_upload_complete_false():
    data = os.urandom(10 * KiB)
    dest = ft.unique("d12-after")
    r = create(dest, data, complete=True)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    url = ft.absolute(r.headers["Location"])

    # "Upload-Complete can be false in response to an invalid operation
    # performed on a completed upload."
    r = append(url, len(data), b"more", complete=True)
    assert 400 <= r.status_code < 500, r.status_code
    assert sf_bool(r, "Upload-Complete") is False
    assert problem(r)["type"] == INCONSISTENT
    assert ft.remote_sha256(dest) == sha(data)


@pytest.mark.parametrize("how", ["content-length", "chunked", "empty"])
def test_v9_one_request_upload_fixes_the_length(how):
    # "If the request includes the Upload-Complete field value set to true,
    # the request content is the remaining representation data. The
    # representation's length is then the sum of the current offset ... and
    # the request content's length".
    data = b"" if how == "empty" else os.urandom(300 * KiB + 5)
    dest = ft.unique(f"d12-one-{how}")
    body = chunked(data) if how == "chunked" else data
    r = create(dest, body, complete=True)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is True
    r = retrieve(ft.absolute(r.headers["Location"]))
    assert sf_int(r, "Upload-Length") == len(data)
    assert sf_bool(r, "Upload-Complete") is True
    assert ft.remote_sha256(dest) == sha(data)


def test_v9_a_completing_request_that_contradicts_the_length_is_inconsistent():
    # "If indicators (1) and (2) are both present in the same request, their
    # indicated lengths MUST match. The representation's length, if known,
    # MUST stay consistent across subsequent requests."
    dest = ft.unique("d12-len")
    r = create(dest, b"x" * 60, complete=True, Upload_Length="100")
    assert r.status_code == 400, f"(a) {r.status_code} {r.text!r}"
    assert problem(r)["type"] == INCONSISTENT
    assert sf_bool(r, "Upload-Complete") is False

    r = create(ft.unique("d12-len"), b"y" * 50, Upload_Length="100")
    url = ft.absolute(r.headers["Location"])
    for body in (b"z" * 10, chunked(b"z" * 10, 3)):
        r = append(url, 50, body, complete=True)
        assert r.status_code == 400, f"(b) {r.status_code} {r.text!r}"
        assert problem(r)["type"] == INCONSISTENT
        assert sf_bool(r, "Upload-Complete") is False
    r = append(url, sf_int(retrieve(url), "Upload-Offset"), b"", complete=False, Upload_Length="120")
    assert r.status_code == 400, f"(c) {r.status_code} {r.text!r}"
    assert problem(r)["type"] == INCONSISTENT
    assert sf_bool(r, "Upload-Complete") is False


def test_v9_too_large_answers_413_with_upload_limit_and_smaller_appends_then_succeed():
    lim = upload_limit(requests.options(ft.TUS, headers=hdrs(), timeout=ft.TIMEOUT))
    # Upload-Length over max-size.
    r = create(ft.unique("d12-huge"), Upload_Length=str(lim["max-size"] + 1))
    assert r.status_code == 413, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is False
    assert upload_limit(r)["max-size"] == lim["max-size"]
    # "When a request is rejected because limits were violated, the response
    # SHOULD include the Upload-Limit header field".
    if lim.get("max-append-size", 0) < 64 * MiB:
        big = os.urandom(lim["max-append-size"] + 1)
        r = create(ft.unique("d12-append-limit"), big)
        assert r.status_code == 413, f"{r.status_code} {r.text!r}"
        assert "max-append-size" in upload_limit(r)
        # The client retries "with a smaller size residing between
        # min-append-size and max-append-size".
        dest = ft.unique("d12-append-limit")
        step = lim["max-append-size"]
        url = started(dest, big, step)
        r = append(url, step, big[step:], complete=True)
        assert r.status_code == 200, f"{r.status_code} {r.text!r}"
        assert ft.remote_sha256(dest) == sha(big)


def test_v9_a_failure_after_the_whole_representation_says_upload_complete_true():
    # Processing the complete representation failed (Ferry: the destination
    # appeared meanwhile under conflict=fail). "The server SHOULD include
    # the Upload-Complete header field in the response to indicate whether
    # it is the result of processing the uploaded representation": ?1, so
    # the client does not resume (section "Retry": only 409 with ?0 is).
    dest = ft.unique("d12-exists")
    url = f"{creation_url(dest)}&conflict=fail"
    r = requests.post(url, headers=hdrs(Upload_Complete="?0"), data=b"a" * 1000, timeout=ft.TIMEOUT)
    assert r.status_code == 201, f"{r.status_code} {r.text!r}"
    upload = ft.absolute(r.headers["Location"])
    # Someone else puts a file at the destination meanwhile.
    put = requests.put(ft.file_url(dest), headers=ft.auth(), data=b"theirs", timeout=ft.TIMEOUT)
    assert put.status_code in (200, 201), f"{put.status_code} {put.text!r}"
    r = append(upload, 1000, b"a" * 24, complete=True)
    assert r.status_code == 409, f"{r.status_code} {r.text!r}"
    assert sf_bool(r, "Upload-Complete") is True
    assert ft.download(dest).content == b"theirs"


def test_v9_cancellation_then_the_upload_is_gone_and_no_file_appears():
    dest = ft.unique("d12-cancel")
    url = started(dest, os.urandom(8 * KiB), 8 * KiB)
    r = requests.delete(url, headers=hdrs(), timeout=ft.TIMEOUT, allow_redirects=False)
    echoes_version(r)
    assert 200 <= r.status_code < 300, r.status_code
    assert retrieve(url).status_code in (404, 410)
    r = append(url, 8 * KiB, b"late", complete=True)
    assert r.status_code in (404, 410), r.status_code
    assert sf_bool(r, "Upload-Complete") is False
    assert ft.download(dest).status_code == 404


def test_v9_a_stalled_append_does_not_block_offset_retrieval_or_resumption():
    # "Concurrency": a client that lost its connection retrieves the offset
    # and resumes while the old request may still be open on the server.
    data = os.urandom(256 * KiB)
    dest = ft.unique("d12-stall")
    url = started(dest, data, 16 * KiB)
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    head = (
        f"PATCH {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in hdrs().items())
        + "Content-Type: application/partial-upload\r\nUpload-Offset: 16384\r\n"
        + f"Upload-Complete: ?1\r\nContent-Length: {len(data) - 16 * KiB}\r\n\r\n"
    )
    s.sendall(head.encode() + data[16 * KiB : 48 * KiB])  # then it stalls
    # The case is a request the server is working on: an offset retrieval
    # that reaches it first answers 16384 before the append even starts,
    # and the append then moves the offset on (a 409 to the resumption is
    # right then, but not this case).
    time.sleep(0.3)
    try:
        offset = sf_int(retrieve(url), "Upload-Offset")
        assert 16 * KiB <= offset <= 48 * KiB
        r = append(url, offset, data[offset:], complete=True)
        assert r.status_code == 200, f"{r.status_code} {r.text!r}"
        assert ft.remote_sha256(dest) == sha(data)
    finally:
        s.close()


@pytest.mark.parametrize("version", ["10", "abc", ""])
def test_interop_versions_this_server_does_not_speak_are_refused(version):
    # Ferry's choice: a client of a later revision fails loudly (400) rather
    # than being served half-compatible answers.
    h = {**ft.auth(), "Upload-Draft-Interop-Version": version, "Upload-Complete": "?1"}
    r = requests.post(creation_url(ft.unique("d12-v")), headers=h, data=b"x", timeout=ft.TIMEOUT)
    assert r.status_code == 400, f"{r.status_code} {r.text!r}"
    assert "interop" in problem(r)["detail"]


def test_interop_8_is_still_served_as_draft_11():
    # The same lost-answer case under interop 8: -11's 410 completed-upload.
    data = os.urandom(4 * KiB)
    dest = ft.unique("d12-v8")
    h = {**ft.auth(), "Upload-Draft-Interop-Version": "8", "Upload-Complete": "?1"}
    r = requests.post(creation_url(dest), headers=h, data=data, timeout=ft.TIMEOUT)
    assert r.status_code == 200 and r.headers["Upload-Draft-Interop-Version"] == "8"
    url = ft.absolute(r.headers["Location"])
    h.update({"Content-Type": "application/partial-upload", "Upload-Offset": str(len(data))})
    r = requests.patch(url, headers=h, data=b"", timeout=ft.TIMEOUT)
    assert r.status_code == 410, f"{r.status_code} {r.text!r}"
    assert problem(r)["type"].endswith("#completed-upload")
