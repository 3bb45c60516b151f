"""UCloud's upload protocols against Ferry, as a scripted client speaks them
(there is no packaged UCloud upload SDK): `requests` for the bulk create
(`POST /api/files/upload`) and CHUNKED, the `websockets` library for the
single-file WebSocket and the folder WebSocket (UCloud's WEBSOCKET_V2
binary messages, built here with `struct`).

Every uploaded byte is checked through the native API
(`/v1/spaces/…/files/…`).

The proof:
- one 50 MiB file over CHUNKED, interrupted mid-chunk and resumed (the
  interrupted chunk is re-sent whole at its offset, as UCloud clients do);
- one 50 MiB file over the single-file WebSocket, the connection dropped
  without a close and resumed at the last acknowledged offset;
- a folder of 500 files in nested directories over the folder WebSocket on
  4 parallel connections, interrupted (sockets dropped), then resumed with
  a new createUpload (MERGE_RENAME into the folder, which already held
  files of its own): files already there are SKIPped, the rest sent;
- each protocol's errors in its own format: `{"why","errorCode"}` for HTTP,
  close codes `4000 + status` on the WebSockets; an expired session on a
  private server started with `FERRY_MAX_EXPIRY=2`.
"""

import json
import os
import random
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import ferrytus as ft
from ferrytus import MiB

HTTP = requests.Session()
HTTP.trust_env = False  # 127.0.0.1 only, never through a proxy

OK, CHUNK, SKIP, LISTING, FILES_COMPLETED, CLOSE = 0, 2, 3, 4, 5, 6


# --------------------------------------------------------------- helpers


def create(items, token=None):
    return HTTP.post(
        ft.URL + "/api/files/upload",
        headers=ft.auth(token),
        json={"items": items},
        timeout=ft.TIMEOUT,
    )


def create_one(path, kind="FILE", protocols=("CHUNKED",), policy="RENAME", token=None):
    r = create(
        [
            {
                "id": f"/{ft.SPACE}/{path}",
                "type": kind,
                "supportedProtocols": list(protocols),
                "conflictPolicy": policy,
            }
        ],
        token,
    )
    assert r.status_code == 200, f"createUpload: {r.status_code} {r.text}"
    return r.json()["responses"][0]


def chunk(endpoint, token, offset, data, total=None):
    h = {"Chunked-Upload-Token": token, "Chunked-Upload-Offset": str(offset)}
    if total is not None:
        h["Chunked-Upload-Total-Size"] = str(total)
    return HTTP.post(endpoint, headers=h, data=data, timeout=120)


def ucloud_error(r, status, code):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["errorCode"] == code, body
    assert body["why"], body


def close_code(ws):
    """Reads until the server closes; its close code."""
    try:
        while True:
            ws.recv(timeout=30)
    except Exception:
        pass
    rcvd = ws.protocol.close_rcvd
    return rcvd.code if rcvd else None


def remote_ok(path, data):
    assert ft.remote_sha256(path) == ft.sha256(data), path


def drop(ws):
    """Cuts the TCP connection with no close handshake (a lost network)."""
    try:
        ws.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    ws.socket.close()


# ---------------------------------------------------------------- CHUNKED


def interrupted_post(endpoint, headers, data, cut):
    """Sends a chunk's headers and only `cut` bytes of its body, then
    drops the connection."""
    u = urllib.parse.urlparse(endpoint)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    head = f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: {len(data)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s.sendall(head.encode())
    s.sendall(data[:cut])
    time.sleep(0.3)
    s.close()


def test_chunked_50_mib_interrupted_and_resumed():
    data = os.urandom(50 * MiB)
    path = ft.unique("chunked", folder="ucloud")
    r = create_one(path, protocols=["CHUNKED"])
    assert r["protocol"] == "CHUNKED"
    endpoint, token = r["endpoint"], r["token"]
    size = 16_000_000  # the web client's chunk size
    offset = 0
    interrupted = False
    while offset < len(data):
        piece = data[offset : offset + size]
        if not interrupted and offset >= 16_000_000:
            # The network fails half-way through this chunk.
            interrupted = True
            interrupted_post(
                endpoint,
                {
                    "Chunked-Upload-Token": token,
                    "Chunked-Upload-Offset": str(offset),
                    "Chunked-Upload-Total-Size": str(len(data)),
                },
                piece,
                len(piece) // 2,
            )
            assert ft.download(path).status_code == 404, "not visible before the last byte"
        # Re-sent whole at its offset (acknowledged bytes are kept; what the
        # dead request left is replaced only once this one is complete).
        resp = chunk(endpoint, token, offset, piece, total=len(data))
        assert resp.status_code == 200, f"chunk at {offset}: {resp.status_code} {resp.text}"
        offset += len(piece)
    assert interrupted
    remote_ok(path, data)


# ------------------------------------------------------- single-file WS


def ws_upload(endpoint, data, start, stop_after=None):
    """Sends data[start:] in 1 MiB frames; with stop_after, drops the
    connection after that many bytes once an acknowledgement came. Returns
    the last acknowledged offset."""
    acked = start
    with connect(endpoint, max_size=None, compression=None, open_timeout=30) as ws:
        ws.send(f"{start} {len(data)}")
        ws.send("ping")
        sent = start
        frame = 1 * MiB
        while sent < len(data):
            ws.send(data[sent : sent + frame])
            sent += frame
            if stop_after is not None and sent - start >= stop_after:
                break
        while True:
            m = ws.recv(timeout=60)
            if m == "pong":
                continue
            acked = int(m)
            if stop_after is not None and acked > start:
                drop(ws)
                return acked
            if acked == len(data):
                ws.close()
                return acked


def test_websocket_single_file_dropped_and_resumed():
    data = os.urandom(50 * MiB)
    path = ft.unique("ws", folder="ucloud")
    r = create_one(path, protocols=["CHUNKED", "WEBSOCKET"])
    assert r["protocol"] == "WEBSOCKET"
    assert r["endpoint"].startswith("ws://")
    acked = ws_upload(r["endpoint"], data, 0, stop_after=24 * MiB)
    assert 0 < acked < len(data)
    assert ft.download(path).status_code == 404
    # Resume at the last acknowledged offset.
    assert ws_upload(r["endpoint"], data, acked) == len(data)
    remote_ok(path, data)


# ------------------------------------------------------------- folder WS


def listing_frame(entries):
    out = [bytes([LISTING])]
    for fid, path, size, mtime in entries:
        p = path.encode()
        out.append(struct.pack(">iqqI", fid, size, mtime, len(p)) + p)
    return b"".join(out)


def parse_answers(frame):
    """(opcode, value) pairs of a server frame."""
    out = []
    for i in range(0, len(frame), 5):
        op, val = struct.unpack(">bi", frame[i : i + 5])
        out.append((op, val))
    return out


class FolderConn:
    """One folder-WebSocket connection working through a list of files."""

    def __init__(self, endpoint, files, interrupt_after=None):
        self.endpoint = endpoint
        self.files = files  # {id: (path, bytes, mtime)}
        self.interrupt_after = interrupt_after
        self.ok, self.skip = [], []
        self.completed = 0
        self.sent_whole = []
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the test
            self.error = e

    def _run(self):
        ws = connect(self.endpoint, max_size=None, compression=None, open_timeout=30)
        ids = sorted(self.files)
        # Listings in frames of 100 entries.
        for i in range(0, len(ids), 100):
            batch = ids[i : i + 100]
            ws.send(
                listing_frame(
                    [(f, self.files[f][0], len(self.files[f][1]), self.files[f][2]) for f in batch]
                )
            )
        ws.send("ping")
        while True:
            m = ws.recv(timeout=60)
            if isinstance(m, str):
                assert m == "pong", m
                continue
            for op, val in parse_answers(m):
                if op == OK:
                    self.ok.append(val)
                    path, data, _ = self.files[val]
                    if self.interrupt_after is not None and len(self.sent_whole) >= self.interrupt_after:
                        # Half a file, then the network is gone.
                        ws.send(struct.pack(">bi", CHUNK, val) + data[: len(data) // 2])
                        time.sleep(0.2)
                        drop(ws)
                        return
                    for j in range(0, max(len(data), 1), 64 * 1024):
                        if data:
                            ws.send(struct.pack(">bi", CHUNK, val) + data[j : j + 64 * 1024])
                    self.sent_whole.append(val)
                elif op == SKIP:
                    self.skip.append(val)
                elif op == FILES_COMPLETED:
                    self.completed = val
                else:
                    raise AssertionError(f"opcode {op} from the server")
            if self.completed == len(self.files):
                ws.send(bytes([CLOSE]))
                assert close_code(ws) == 1000
                return


def run_parallel(endpoint, parts, interrupt_after=None):
    conns = [FolderConn(endpoint, p, interrupt_after) for p in parts]
    threads = [threading.Thread(target=c.run) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "a folder connection hung"
    for c in conns:
        assert c.error is None, repr(c.error)
    return conns


def test_folder_500_files_4_connections_interrupted_resumed_merge_rename():
    rng = random.Random(500)
    folder = f"ucloud/tree-{uuid.uuid4().hex[:8]}"
    # The folder exists already, with a file of its own where one of ours goes.
    own = b"not from the folder upload"
    r = create_one(f"{folder}/d0/f0.bin")
    assert chunk(r["endpoint"], r["token"], 0, own, total=len(own)).status_code == 200

    files = {}
    for i in range(500):
        path = f"d{i % 5}/e{i % 7}/f{i}.bin" if i else "d0/f0.bin"
        size = 0 if i == 1 else rng.choice([rng.randrange(1, 4096), rng.randrange(4096, 200_000)])
        if i == 2:
            size = 3 * MiB
        files[i] = (path, rng.randbytes(size), 1_700_000_000_000 + i)
    parts = [{i: files[i] for i in files if i % 4 == k} for k in range(4)]

    # First attempt: each connection sends 40 files whole, half of one more,
    # then loses its network.
    r = create_one(folder, kind="FOLDER", protocols=["WEBSOCKET"], policy="MERGE_RENAME")
    assert r["protocol"] == "WEBSOCKET"
    whole = set(x for c in run_parallel(r["endpoint"], parts, interrupt_after=40) for x in c.sent_whole)

    def placed(i):
        # f0.bin met the folder's own file: MERGE_RENAME renamed ours.
        path = files[i][0]
        return "d0/f0 (1).bin" if i == 0 else path

    def committed():
        found = set()
        for i, (path, data, _) in files.items():
            got = ft.download(f"{folder}/{placed(i)}")
            if got.status_code == 200:
                assert got.content == data, path
                found.add(i)
        return found

    # The server finishes writing (and commits) every file whose bytes all
    # arrived before the drop; the half-sent ones wait for the resume.
    present = committed()
    for _ in range(20):
        time.sleep(0.5)
        again = committed()
        if again == present:
            break
        present = again
    assert len(whole) == 160
    assert whole <= present, sorted(whole - present)[:20]
    assert len(present) < 500, len(present)
    assert ft.download(f"{folder}/d0/f0.bin").content == own

    # Resume: a new createUpload, MERGE_RENAME into the (now fuller) folder.
    r = create_one(folder, kind="FOLDER", protocols=["WEBSOCKET"], policy="MERGE_RENAME")
    conns = run_parallel(r["endpoint"], parts)
    skipped = set(x for c in conns for x in c.skip)
    assert skipped == present, sorted(skipped ^ present)[:20]
    sent = set(x for c in conns for x in c.ok)
    assert sent | skipped == set(files)
    for i, (path, data, _) in files.items():
        remote_ok(f"{folder}/{placed(i)}", data)
    assert ft.download(f"{folder}/d0/f0.bin").content == own
    assert ft.download(f"{folder}/d0/f0 (2).bin").status_code == 404


# ----------------------------------------------------------------- errors


def test_create_errors():
    r = HTTP.post(ft.URL + "/api/files/upload", json={"items": []}, timeout=ft.TIMEOUT)
    ucloud_error(r, 401, "UNAUTHENTICATED")
    bob = ft.new_user()
    r = create(
        [{"id": f"/{ft.SPACE}/x", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"}],
        token=bob["token"],
    )
    assert r.status_code in (403, 404), r.text
    assert r.json()["errorCode"] in ("PERMISSION_DENIED", "NOT_FOUND")
    r = create([{"id": f"/{ft.SPACE}/d", "type": "FOLDER", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"}])
    ucloud_error(r, 400, "BAD_REQUEST")
    path = ft.unique("reject", folder="ucloud")
    up = create_one(path)
    assert chunk(up["endpoint"], up["token"], 0, b"x", total=1).status_code == 200
    r = create([{"id": f"/{ft.SPACE}/{path}", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "REJECT"}])
    ucloud_error(r, 409, "ALREADY_EXISTS")


def test_chunked_errors():
    path = ft.unique("cerr", folder="ucloud")
    r = create_one(path)
    endpoint, token = r["endpoint"], r["token"]
    assert chunk(endpoint, token, 0, b"a" * 10, total=30).status_code == 200
    # Bad tokens: missing, malformed, forged (a foreign session's id with a
    # signature that is not its own), another user's.
    ucloud_error(HTTP.post(endpoint, headers={"Chunked-Upload-Offset": "0"}, data=b"x"), 400, "INVALID_TOKEN")
    ucloud_error(chunk(endpoint, "garbage", -1, b"x"), 400, "INVALID_TOKEN")
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    ucloud_error(chunk(endpoint, forged, -1, b"x"), 404, "NOT_FOUND")
    bob = ft.new_user()
    theirs = HTTP.post(
        ft.URL + "/api/files/upload",
        headers=ft.auth(bob["token"]),
        json={"items": [{"id": f"/{bob['home_space']}/b.bin", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"}]},
        timeout=ft.TIMEOUT,
    ).json()["responses"][0]["token"]
    upload_id = theirs.split(".")[0]
    ucloud_error(chunk(endpoint, upload_id + "." + token.split(".")[1], -1, b"x"), 404, "NOT_FOUND")
    # Bad offsets.
    ucloud_error(chunk(endpoint, token, -2, b"x"), 400, "BAD_OFFSET")
    ucloud_error(chunk(endpoint, token, 11, b"x"), 409, "BAD_OFFSET")
    ucloud_error(chunk(endpoint, token, 10, b"x" * 21), 400, "BAD_OFFSET")
    # Oversize.
    ucloud_error(chunk(endpoint, token, 10, b"\0" * 32_000_001), 413, "CHUNK_TOO_LARGE")
    # Nothing acknowledged was lost.
    assert chunk(endpoint, token, -1, b"b" * 20).status_code == 200
    assert ft.download(path).content == b"a" * 10 + b"b" * 20


def test_websocket_errors():
    r = create_one(ft.unique("wserr", folder="ucloud"), protocols=["WEBSOCKET"])
    base, _ = r["endpoint"].split("?", 1)
    with pytest.raises(InvalidStatus) as e:
        connect(base + "?token=garbage", open_timeout=30)
    assert e.value.response.status_code == 400
    assert json.loads(e.value.response.body)["errorCode"] == "INVALID_TOKEN"
    with pytest.raises(InvalidStatus) as e:
        connect(base + "?token=u" + "0" * 32 + "." + "0" * 64, open_timeout=30)
    assert e.value.response.status_code == 404
    # A start past the received bytes; a bad first frame.
    with connect(r["endpoint"], open_timeout=30) as ws:
        ws.send("5 10")
        assert close_code(ws) == 4409
    with connect(r["endpoint"], open_timeout=30) as ws:
        ws.send(b"\x00\x01")
        assert close_code(ws) == 4400
    # The folder socket: a CHUNK for a file never listed; a climbing path.
    f = create_one(f"ucloud/ferr-{uuid.uuid4().hex[:8]}", kind="FOLDER", protocols=["WEBSOCKET"])
    with connect(f["endpoint"], open_timeout=30) as ws:
        ws.send(struct.pack(">bi", CHUNK, 9) + b"zz")
        assert close_code(ws) == 4400
    with connect(f["endpoint"], open_timeout=30) as ws:
        ws.send(listing_frame([(1, "../up.txt", 1, 0)]))
        assert close_code(ws) == 4400
    # A file's token on the folder endpoint.
    fbase = f["endpoint"].split("?", 1)[0]
    with pytest.raises(InvalidStatus) as e:
        connect(fbase + "?token=" + r["token"], open_timeout=30)
    assert e.value.response.status_code == 400


# ------------------------------------------------- expiry (private server)


@pytest.fixture
def short_lived_server(tmp_path):
    """A second `ferry serve` whose sessions expire 2 s after their last write."""
    binary = os.environ.get("FERRY_BIN")
    if not binary:
        pytest.skip("FERRY_BIN unset (tests/clients/run.sh exports it)")
    admin = uuid.uuid4().hex
    env = dict(os.environ, FERRY_ADMIN_TOKEN=admin, FERRY_MAX_EXPIRY="2", FERRY_REAP_INTERVAL="1", RUST_LOG="warn")
    for k in ("FERRY_CONFIG", "FERRY_PUBLIC_URL", "FERRY_LISTEN"):
        env.pop(k, None)
    p = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = p.stdout.readline().strip()
        assert first.startswith("Ferry listening on "), first
        url = first.removeprefix("Ferry listening on ")
        u = HTTP.post(url + "/v1/admin/users", headers={"Authorization": f"Bearer {admin}"}, json={"name": "carol"}, timeout=30)
        assert u.status_code == 201, u.text
        yield url, u.json()["token"]
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_expired_sessions(short_lived_server):
    url, token = short_lived_server
    items = [
        {"id": "/carol/a.bin", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"},
        {"id": "/carol/b.bin", "type": "FILE", "supportedProtocols": ["WEBSOCKET"], "conflictPolicy": "RENAME"},
        {"id": "/carol/c", "type": "FOLDER", "supportedProtocols": ["WEBSOCKET"], "conflictPolicy": "RENAME"},
    ]
    r = HTTP.post(url + "/api/files/upload", headers={"Authorization": f"Bearer {token}"}, json={"items": items}, timeout=30)
    assert r.status_code == 200, r.text
    a, b, c = r.json()["responses"]
    assert chunk(a["endpoint"], a["token"], 0, b"early").status_code == 200
    time.sleep(3.2)
    ucloud_error(chunk(a["endpoint"], a["token"], -1, b"late"), 404, "SESSION_EXPIRED")
    for ep in (b["endpoint"], c["endpoint"]):
        with pytest.raises(InvalidStatus) as e:
            connect(ep, open_timeout=30)
        assert e.value.response.status_code == 404
        assert json.loads(e.value.response.body)["errorCode"] == "SESSION_EXPIRED"
