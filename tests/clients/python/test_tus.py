"""Ferry's tus 1.0 endpoint driven by tuspy and by hand-written requests.

Contract: docs/TUS.md. Run by tests/clients/run.sh against a live server.
"""

import hashlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest
import requests
from tusclient import client
from tusclient.storage.filestorage import FileStorage

import ferrytus as ft
from ferrytus import MiB, KiB

HERE = os.path.dirname(os.path.abspath(__file__))
EXTENSIONS = {
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "checksum-trailer",
    "termination",
    "concatenation",
}


def gone(status):
    return status in (404, 410)


# --------------------------------------------------------------------------
# tuspy: a 50 MiB upload whose client is SIGKILLed half-way, then resumed
# --------------------------------------------------------------------------


def _lines(stream, q):
    for line in stream:
        q.put(line.rstrip("\n"))
    q.put(None)


def test_tuspy_resumes_a_50mib_upload_after_the_client_is_sigkilled(tmp_path):
    size, chunk = 50 * MiB, 5 * MiB
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    storage = str(tmp_path / "tus-urls.json")
    dest = ft.unique("big")

    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_tuspy_child.py"), ft.TUS, ft.TOKEN, str(src), storage, dest],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out = queue.Queue()
        threading.Thread(target=_lines, args=(child.stdout, out), daemon=True).start()
        first = out.get(timeout=60)
        assert first and first.startswith("URL "), f"child said {first!r}"
        upload_url = first.split(" ", 1)[1]

        # Watch the server's offset; SIGKILL the client once 15 MiB are in.
        deadline = time.monotonic() + 120
        seen = 0
        while True:
            assert time.monotonic() < deadline, f"server offset stuck at {seen}"
            assert child.poll() is None, f"client exited ({child.returncode}) before the kill, offset {seen}"
            r = ft.head(upload_url)
            assert r.status_code == 200, f"HEAD: {r.status_code} {r.text!r}"
            seen = int(r.headers["Upload-Offset"])
            if seen >= 15 * MiB:
                break
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    before = ft.offset_of(upload_url)
    print(f"client SIGKILLed with the server at {seen} bytes; server offset after the kill {before}")
    assert 0 < before < size, f"server offset after the kill: {before}"
    assert before >= seen

    # A new client, same URL storage and fingerprint: tuspy finds the URL and
    # asks the server where to go on.
    c = client.TusClient(ft.TUS, headers=ft.auth())
    uploader = c.uploader(
        file_path=str(src),
        chunk_size=chunk,
        metadata={"filename": os.path.basename(dest), "path": dest},
        store_url=True,
        url_storage=FileStorage(storage),
        upload_checksum=True,
    )
    assert uploader.url == upload_url, "tuspy did not find the stored upload URL"
    assert uploader.offset == before, f"resumed at {uploader.offset}, server had {before}"
    uploader.upload()
    assert uploader.offset == size

    assert ft.remote_sha256(dest) == ft.sha256_file(src)


# --------------------------------------------------------------------------
# checksum extension
# --------------------------------------------------------------------------


def _checksum(algo, data):
    return f"{algo} {ft.b64(hashlib.new(algo, data).digest())}"


def test_checksum_mismatch_is_460_and_good_sha1_sha256_md5_are_accepted():
    parts = [os.urandom(64 * KiB) for _ in range(3)]
    data = b"".join(parts)
    dest = ft.unique("checksum")
    url = ft.create_ok(len(data), meta={"path": dest})

    wrong = _checksum("sha1", b"not these bytes")
    r = ft.patch(url, 0, parts[0], **{"Upload-Checksum": wrong})
    assert r.status_code == 460, f"wrong sha1: {r.status_code} {r.text!r}"
    assert ft.offset_of(url) == 0, "a chunk with a bad checksum moved the offset"

    off = 0
    for algo, part in zip(("sha1", "sha256", "md5"), parts):
        r = ft.patch(url, off, part, **{"Upload-Checksum": _checksum(algo, part)})
        assert r.status_code == 204, f"good {algo}: {r.status_code} {r.text!r}"
        off += len(part)
        assert int(r.headers["Upload-Offset"]) == off

    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_checksum_with_unknown_algorithm_is_400():
    data = os.urandom(4 * KiB)
    url = ft.create_ok(len(data), meta={"path": ft.unique("crc32")})
    r = ft.patch(url, 0, data, **{"Upload-Checksum": f"crc32 {ft.b64(b'1234')}"})
    assert r.status_code == 400, f"crc32: {r.status_code} {r.text!r}"
    assert ft.offset_of(url) == 0


# --------------------------------------------------------------------------
# protocol edge cases
# --------------------------------------------------------------------------


def test_options_lists_version_extensions_max_size_and_checksum_algorithms():
    r = requests.options(ft.TUS, timeout=ft.TIMEOUT)  # no auth needed
    assert r.status_code in (200, 204), r.status_code
    assert r.headers.get("Tus-Resumable") == "1.0.0"
    assert "1.0.0" in [v.strip() for v in r.headers["Tus-Version"].split(",")]
    ext = {v.strip() for v in r.headers["Tus-Extension"].split(",")}
    assert EXTENSIONS <= ext, f"missing extensions: {EXTENSIONS - ext}"
    algos = {v.strip() for v in r.headers["Tus-Checksum-Algorithm"].split(",")}
    assert {"sha1", "sha256", "md5"} <= algos
    assert int(r.headers["Tus-Max-Size"]) > 0


def test_options_on_an_upload_url_answers_too():
    url = ft.create_ok(10, meta={"path": ft.unique("options")})
    r = requests.options(url, timeout=ft.TIMEOUT)
    assert r.status_code in (200, 204), r.status_code
    assert "1.0.0" in r.headers.get("Tus-Version", "")


@pytest.mark.parametrize("version", [None, "0.2.2"], ids=["missing", "wrong"])
@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH"])
def test_tus_resumable_missing_or_wrong_is_412(method, version):
    data = b"x" * 10
    url = ft.create_ok(len(data), meta={"path": ft.unique("412")})
    h = ft.auth()
    if version:
        h["Tus-Resumable"] = version
    if method == "POST":
        h["Upload-Length"] = "10"
        r = requests.post(ft.TUS, headers=h, timeout=ft.TIMEOUT)
    elif method == "HEAD":
        r = requests.head(url, headers=h, timeout=ft.TIMEOUT)
    else:
        h.update({"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        r = requests.patch(url, headers=h, data=data, timeout=ft.TIMEOUT)
    assert r.status_code == 412, f"{method} with Tus-Resumable={version}: {r.status_code}"
    assert "1.0.0" in r.headers.get("Tus-Version", ""), "412 without Tus-Version"
    assert ft.offset_of(url) == 0


def test_patch_with_wrong_content_type_is_415():
    data = os.urandom(1000)
    url = ft.create_ok(len(data), meta={"path": ft.unique("415")})
    r = ft.patch(url, 0, data, content_type="application/octet-stream")
    assert r.status_code == 415, f"{r.status_code} {r.text!r}"
    assert ft.offset_of(url) == 0


def test_patch_at_wrong_offset_is_409_and_writes_nothing():
    data = os.urandom(3000)
    dest = ft.unique("409")
    url = ft.create_ok(len(data), meta={"path": dest})
    ft.patch_ok(url, 0, data[:1000])
    for bad in (0, 500, 2000):
        r = ft.patch(url, bad, data[bad : bad + 1000])
        assert r.status_code == 409, f"PATCH at {bad} (server at 1000): {r.status_code}"
        assert r.headers.get("Tus-Resumable") == "1.0.0"
        assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
        assert ft.offset_of(url) == 1000
    ft.patch_ok(url, 1000, data[1000:])
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_head_reports_offset_length_metadata_and_no_store():
    data = os.urandom(2000)
    dest = ft.unique("head")
    url = ft.create_ok(len(data), meta={"path": dest, "filename": "head.bin"})
    ft.patch_ok(url, 0, data[:700])
    r = ft.head(url)
    assert r.status_code == 200
    assert r.headers.get("Tus-Resumable") == "1.0.0"
    assert r.headers["Upload-Offset"] == "700"
    assert r.headers["Upload-Length"] == "2000"
    assert "no-store" in r.headers.get("Cache-Control", "")
    got = dict(p.strip().split(" ", 1) for p in r.headers["Upload-Metadata"].split(","))
    assert got["path"] == ft.b64(dest)


def test_creation_defer_length_then_length_on_a_later_patch():
    data = os.urandom(300 * KiB)
    dest = ft.unique("defer")
    url = ft.create_ok(defer=True, meta={"path": dest})
    r = ft.head(url)
    assert r.status_code == 200
    assert r.headers.get("Upload-Defer-Length") == "1"
    assert "Upload-Length" not in r.headers
    ft.patch_ok(url, 0, data[: 100 * KiB])
    ft.patch_ok(url, 100 * KiB, data[100 * KiB : 200 * KiB], **{"Upload-Length": str(len(data))})
    r = ft.head(url)
    assert r.headers.get("Upload-Length") == str(len(data))
    assert "Upload-Defer-Length" not in r.headers
    ft.patch_ok(url, 200 * KiB, data[200 * KiB :])
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_creation_with_upload_whole_file_in_the_post():
    data = os.urandom(200 * KiB)
    dest = ft.unique("cwu-whole")
    r = ft.create(len(data), meta={"path": dest}, data=data)
    assert r.status_code == 201, f"{r.status_code} {r.text!r}"
    assert r.headers.get("Upload-Offset") == str(len(data))
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_creation_with_upload_first_bytes_then_patch():
    data = os.urandom(200 * KiB)
    dest = ft.unique("cwu-part")
    r = ft.create(len(data), meta={"path": dest}, data=data[: 50 * KiB])
    assert r.status_code == 201, f"{r.status_code} {r.text!r}"
    assert r.headers.get("Upload-Offset") == str(50 * KiB)
    assert ft.offset_of(r.upload_url) == 50 * KiB
    ft.patch_ok(r.upload_url, 50 * KiB, data[50 * KiB :])
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_termination_delete_is_204_then_upload_is_gone():
    data = os.urandom(10 * KiB)
    url = ft.create_ok(len(data), meta={"path": ft.unique("delete")})
    ft.patch_ok(url, 0, data[:4 * KiB])
    r = requests.delete(url, headers=ft.tus_headers(), timeout=ft.TIMEOUT)
    assert r.status_code == 204, f"{r.status_code} {r.text!r}"
    assert gone(ft.head(url).status_code)
    assert gone(ft.patch(url, 4 * KiB, data[4 * KiB :]).status_code)


def test_expiration_upload_expires_on_post_and_head():
    url_r = ft.create(100, meta={"path": ft.unique("expires")})
    assert url_r.status_code == 201
    now = datetime.now(timezone.utc)
    exp = ft.http_date(url_r.headers["Upload-Expires"])
    assert exp > now, f"Upload-Expires {exp} is not in the future"
    r = ft.head(url_r.upload_url)
    assert ft.http_date(r.headers["Upload-Expires"]) > now


def test_another_users_upload_url_is_404():
    data = os.urandom(1000)
    url = ft.create_ok(len(data), meta={"path": ft.unique("mine")})
    bob = ft.new_user()["token"]
    assert ft.head(url, token=bob).status_code == 404
    assert ft.patch(url, 0, data, token=bob).status_code == 404
    r = requests.delete(url, headers=ft.tus_headers(bob), timeout=ft.TIMEOUT)
    assert r.status_code == 404
    assert ft.offset_of(url) == 0  # untouched for its owner


def test_no_token_is_401():
    url = ft.create_ok(10, meta={"path": ft.unique("anon")})
    r = requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=ft.TIMEOUT)
    assert r.status_code == 401, r.status_code
    r = requests.post(ft.TUS, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"}, timeout=ft.TIMEOUT)
    assert r.status_code == 401, r.status_code


def test_path_metadata_lands_the_file_in_a_subfolder():
    data = os.urandom(5000)
    dest = ft.unique("deep", folder="py/sub/deeper")
    url = ft.create_ok(len(data), meta={"path": dest, "filename": "ignored.bin"})
    ft.patch_ok(url, 0, data)
    got = ft.download(dest)
    assert got.status_code == 200
    assert got.content == data
    assert ft.download(dest.rsplit("/", 1)[0] + "/ignored.bin").status_code == 404


def test_filename_alone_lands_in_the_home_space_root():
    data = os.urandom(3000)
    name = ft.unique("named", folder="x").split("/", 1)[1]
    url = ft.create_ok(len(data), meta={"filename": name})
    ft.patch_ok(url, 0, data)
    got = ft.download(name)
    assert got.status_code == 200 and got.content == data


def test_filetype_metadata_sets_the_content_type():
    data = b"a,b\n1,2\n"
    dest = ft.unique("typed", ext="csv")
    url = ft.create_ok(len(data), meta={"path": dest, "filetype": "text/csv"})
    ft.patch_ok(url, 0, data)
    got = ft.download(dest)
    assert got.status_code == 200 and got.content == data
    assert got.headers["Content-Type"].startswith("text/csv"), got.headers["Content-Type"]


def test_x_http_method_override_patch_on_a_post():
    data = os.urandom(2000)
    dest = ft.unique("override")
    url = ft.create_ok(len(data), meta={"path": dest})
    h = ft.tus_headers(**{
        "X-HTTP-Method-Override": "PATCH",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    })
    r = requests.post(url, headers=h, data=data, timeout=ft.TIMEOUT)
    assert r.status_code == 204, f"{r.status_code} {r.text!r}"
    assert r.headers["Upload-Offset"] == str(len(data))
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_x_http_method_override_head_on_a_post():
    url = ft.create_ok(100, meta={"path": ft.unique("override-head")})
    ft.patch_ok(url, 0, b"z" * 40)
    r = requests.post(url, headers=ft.tus_headers(**{"X-HTTP-Method-Override": "HEAD"}), timeout=ft.TIMEOUT)
    assert r.status_code == 200, f"{r.status_code} {r.text!r}"
    assert r.headers.get("Upload-Offset") == "40"


def test_x_http_method_override_delete_on_a_post():
    url = ft.create_ok(100, meta={"path": ft.unique("override-del")})
    r = requests.post(url, headers=ft.tus_headers(**{"X-HTTP-Method-Override": "DELETE"}), timeout=ft.TIMEOUT)
    assert r.status_code == 204, f"{r.status_code} {r.text!r}"
    assert gone(ft.head(url).status_code)


@pytest.mark.parametrize("bad", ["py/../../escape.bin", "../escape.bin", "py/a/../b.bin"])
def test_path_with_dotdot_is_400_at_creation(bad):
    r = ft.create(10, meta={"path": bad})
    assert r.status_code == 400, f"path {bad!r}: {r.status_code}"
    assert r.headers.get("Tus-Resumable") == "1.0.0"


def test_upload_length_over_tus_max_size_is_413():
    r = requests.options(ft.TUS, timeout=ft.TIMEOUT)
    max_size = int(r.headers["Tus-Max-Size"])
    r = ft.create(max_size + 1, meta={"path": ft.unique("huge")})
    assert r.status_code == 413, f"Upload-Length {max_size + 1}: {r.status_code}"


def test_concatenation_final_is_one_file_and_refuses_patch():
    a, b = os.urandom(100 * KiB), os.urandom(77 * KiB)
    urls = []
    for part in (a, b):
        u = ft.create_ok(len(part), headers={"Upload-Concat": "partial"})
        ft.patch_ok(u, 0, part)
        assert ft.head(u).headers.get("Upload-Concat") == "partial"
        urls.append(u)
    dest = ft.unique("concat")
    r = ft.create(meta={"path": dest}, headers={"Upload-Concat": "final;" + " ".join(urls)})
    assert r.status_code == 201, f"final: {r.status_code} {r.text!r}"
    assert ft.remote_sha256(dest) == ft.sha256(a + b)
    final = r.upload_url
    assert ft.patch(final, len(a) + len(b), b"x").status_code == 403
    r = ft.head(final)
    assert r.status_code == 200, f"HEAD final: {r.status_code}"
    assert r.headers.get("Upload-Concat", "").startswith("final;"), r.headers.get("Upload-Concat")


def test_conflict_fail_answers_409_on_the_completing_patch():
    dest = ft.unique("conflict")
    first, second = os.urandom(1000), os.urandom(1000)
    url_a = ft.create_ok(len(first), meta={"path": dest})
    url_b = ft.create_ok(len(second), meta={"path": dest, "conflict": "fail"})  # no file yet
    ft.patch_ok(url_a, 0, first)
    r = ft.patch(url_b, 0, second)
    assert r.status_code == 409, f"completing PATCH onto an existing file: {r.status_code} {r.text!r}"
    assert ft.download(dest).content == first


def test_conflict_replace_overwrites_and_default_rename_keeps_both():
    dest = ft.unique("conflict2")
    a, b, c = os.urandom(1000), os.urandom(1000), os.urandom(1000)
    ft.patch_ok(ft.create_ok(len(a), meta={"path": dest}), 0, a)
    ft.patch_ok(ft.create_ok(len(b), meta={"path": dest, "conflict": "replace"}), 0, b)
    assert ft.download(dest).content == b
    ft.patch_ok(ft.create_ok(len(c), meta={"path": dest}), 0, c)  # default: rename
    assert ft.download(dest).content == b


# --------------------------------------------------------------------------
# checksum-trailer: the checksum arrives after the body, as an HTTP trailer
# --------------------------------------------------------------------------


def _raw_chunked_patch(url, offset, body, trailer):
    """PATCH with a chunked body and `Upload-Checksum` as a trailer; returns the status."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        head = (
            f"PATCH {u.path} HTTP/1.1\r\n"
            f"Host: {u.netloc}\r\n"
            "Tus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {ft.TOKEN}\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\n"
            "Trailer: Upload-Checksum\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        )
        msg = head.encode()
        for i in range(0, len(body), 16 * KiB):
            piece = body[i : i + 16 * KiB]
            msg += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        msg += f"0\r\nUpload-Checksum: {trailer}\r\n\r\n".encode()
        s.sendall(msg)
        answer = b""
        while b"\r\n" not in answer:
            got = s.recv(4096)
            if not got:
                break
            answer += got
    return int(answer.split(b" ", 2)[1])


# FERRY_CLUSTER=1 (tests/clients/run.sh): the server is behind nginx, which
# passes the `Trailer` header on and drops the trailer itself.
BEHIND_NGINX = os.environ.get("FERRY_CLUSTER") == "1"


@pytest.mark.skipif(BEHIND_NGINX, reason="nginx drops trailers: the next case")
def test_checksum_trailer_mismatch_is_460_and_match_is_204():
    data = os.urandom(100 * KiB)
    dest = ft.unique("trailer")
    url = ft.create_ok(len(data), meta={"path": dest})
    status = _raw_chunked_patch(url, 0, data[: 50 * KiB], _checksum("sha256", b"other bytes"))
    assert status == 460, f"wrong trailer checksum: {status}"
    assert ft.offset_of(url) == 0
    status = _raw_chunked_patch(url, 0, data[: 50 * KiB], _checksum("sha256", data[: 50 * KiB]))
    assert status == 204, f"right trailer checksum: {status}"
    assert ft.offset_of(url) == 50 * KiB
    ft.patch_ok(url, 50 * KiB, data[50 * KiB :])
    assert ft.remote_sha256(dest) == ft.sha256(data)


@pytest.mark.skipif(not BEHIND_NGINX, reason="only behind nginx (FERRY_CLUSTER=1)")
def test_checksum_trailer_a_balancer_drops_is_refused_not_ignored():
    # The check the client asked for cannot be made: the PATCH is refused
    # whatever its trailer said, and nothing of it is kept.
    data = os.urandom(100 * KiB)
    dest = ft.unique("trailer-dropped")
    url = ft.create_ok(len(data), meta={"path": dest})
    for trailer in (_checksum("sha256", b"other bytes"), _checksum("sha256", data)):
        status = _raw_chunked_patch(url, 0, data, trailer)
        assert status == 400, f"a trailer nginx dropped: {status}"
        assert ft.offset_of(url) == 0
    # Sent as a header instead, the checksum passes through and is checked.
    r = requests.patch(
        url,
        data=data,
        headers=ft.tus_headers(
            **{
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": _checksum("sha256", data),
            }
        ),
        timeout=ft.TIMEOUT,
    )
    assert r.status_code == 204, r.text
    assert ft.remote_sha256(dest) == ft.sha256(data)


# --------------------------------------------------------------------------
# lock hand-over: a PATCH whose client went quiet does not block the next one
# --------------------------------------------------------------------------


def _stalled_patch(url, first, sent, stop, result):
    """PATCH with a chunked body: `first`, then nothing (never finished)."""
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        head = (
            f"PATCH {u.path} HTTP/1.1\r\n"
            f"Host: {u.netloc}\r\n"
            "Tus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {ft.TOKEN}\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            "Upload-Offset: 0\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        s.sendall(head.encode() + f"{len(first):x}\r\n".encode() + first + b"\r\n")
        sent.set()
        # Stall. Whatever the server says to this request, keep it.
        s.settimeout(0.5)
        buf = b""
        while not stop.is_set() and b"\r\n" not in buf:
            try:
                got = s.recv(4096)
            except socket.timeout:
                continue
            if not got:
                break
            buf += got
        result["answer"] = buf
    except Exception as e:  # reported by the test
        result["error"] = repr(e)
        sent.set()
    finally:
        s.close()


def test_lock_hand_over_head_answers_at_once_while_a_patch_stalls():
    data = os.urandom(4 * MiB)
    dest = ft.unique("handover")
    url = ft.create_ok(len(data), meta={"path": dest})

    sent, stop, result = threading.Event(), threading.Event(), {}
    t = threading.Thread(target=_stalled_patch, args=(url, data[:MiB], sent, stop, result), daemon=True)
    t.start()
    try:
        assert sent.wait(10), "the stalled PATCH could not be sent"
        assert "error" not in result, result.get("error")
        time.sleep(1.0)

        started = time.monotonic()
        try:
            r = requests.head(url, headers=ft.tus_headers(), timeout=2.5)
        except requests.exceptions.Timeout:
            pytest.fail("HEAD waited for the stalled PATCH (no lock hand-over within 2.5 s)")
        took = time.monotonic() - started
        assert r.status_code == 200, f"HEAD during a stalled PATCH: {r.status_code} {r.text!r}"
        assert took < 2.5, f"HEAD took {took:.2f} s"
        durable = int(r.headers["Upload-Offset"])
        print(f"HEAD answered in {took:.2f} s with Upload-Offset {durable} (1 MiB sent)")
        assert 0 <= durable <= MiB, f"offset {durable} after 1 MiB sent"

        ft.patch_ok(url, durable, data[durable:])
        assert ft.remote_sha256(dest) == ft.sha256(data)
    finally:
        stop.set()
        t.join(10)

    # The stopped request, still listening, is told 409.
    answer = result.get("answer", b"")
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    assert status_line.startswith("HTTP/1.1 409"), f"the stopped PATCH got {status_line!r}"
