"""Shared helpers for the Python client tests (not a test module).

Everything comes from the environment that tests/clients/run.sh exports:
FERRY_URL, FERRY_TOKEN, FERRY_ADMIN_TOKEN, FERRY_SPACE, FERRY_DATA_DIR.
"""

import base64
import hashlib
import os
import uuid
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urljoin

import requests

URL = os.environ.get("FERRY_URL", "").rstrip("/")
TOKEN = os.environ.get("FERRY_TOKEN", "")
ADMIN_TOKEN = os.environ.get("FERRY_ADMIN_TOKEN", "")
SPACE = os.environ.get("FERRY_SPACE", "")
TUS = URL + "/tus/"

# Every request has a timeout: a hung server fails a test, never the suite.
TIMEOUT = 30

KiB = 1024
MiB = 1024 * KiB


def configured():
    return bool(URL and TOKEN and SPACE)


def auth(token=None):
    return {"Authorization": f"Bearer {token or TOKEN}"}


def tus_headers(token=None, **extra):
    """tus 1.0 request headers: Tus-Resumable + bearer auth + extra."""
    h = {"Tus-Resumable": "1.0.0", **auth(token)}
    h.update(extra)
    return h


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode("ascii")


def metadata(**kv):
    """An Upload-Metadata value: `key b64(value)` pairs."""
    return ",".join(f"{k} {b64(v)}" for k, v in kv.items())


def unique(stem, ext="bin", folder="py"):
    """A fresh destination path, so tests never collide with each other."""
    return f"{folder}/{stem}-{uuid.uuid4().hex[:10]}.{ext}"


def absolute(location):
    return urljoin(TUS, location)


def create(length=None, defer=False, meta=None, token=None, data=None, headers=None):
    """POST /tus/; returns the response (its .upload_url set when 201)."""
    h = tus_headers(token)
    if defer:
        h["Upload-Defer-Length"] = "1"
    elif length is not None:
        h["Upload-Length"] = str(length)
    if meta:
        h["Upload-Metadata"] = metadata(**meta)
    if data is not None:
        h["Content-Type"] = "application/offset+octet-stream"
    if headers:
        h.update(headers)
    r = requests.post(TUS, headers=h, data=data, timeout=TIMEOUT)
    r.upload_url = absolute(r.headers["Location"]) if "Location" in r.headers else None
    return r


def create_ok(length=None, **kw):
    r = create(length, **kw)
    assert r.status_code == 201, f"creation: {r.status_code} {r.text!r}"
    assert r.upload_url, "creation answered without a Location"
    return r.upload_url


def head(url, token=None, **extra):
    return requests.head(url, headers=tus_headers(token, **extra), timeout=TIMEOUT)


def offset_of(url):
    r = head(url)
    assert r.status_code == 200, f"HEAD {url}: {r.status_code}"
    return int(r.headers["Upload-Offset"])


def patch(url, offset, data, token=None, content_type="application/offset+octet-stream", **extra):
    h = tus_headers(token, **extra)
    h["Upload-Offset"] = str(offset)
    if content_type is not None:
        h["Content-Type"] = content_type
    return requests.patch(url, headers=h, data=data, timeout=TIMEOUT)


def patch_ok(url, offset, data, **kw):
    r = patch(url, offset, data, **kw)
    assert r.status_code == 204, f"PATCH at {offset}: {r.status_code} {r.text!r}"
    assert int(r.headers["Upload-Offset"]) == offset + len(data)
    return r


def file_url(path, space=None):
    return f"{URL}/v1/spaces/{quote(space or SPACE, safe='')}/files/{quote(path, safe='/')}"


def download(path, space=None, token=None):
    return requests.get(file_url(path, space), headers=auth(token), timeout=120)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remote_sha256(path, space=None):
    """SHA-256 of the file as the native API serves it."""
    h = hashlib.sha256()
    with requests.get(file_url(path, space), headers=auth(), stream=True, timeout=120) as r:
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:200]!r}"
        for block in r.iter_content(1 << 20):
            h.update(block)
    return h.hexdigest()


def http_date(value):
    return parsedate_to_datetime(value)


def new_user(prefix="bob"):
    """A second user via the admin API: returns its JSON (name, token, home_space)."""
    assert ADMIN_TOKEN, "FERRY_ADMIN_TOKEN is not set"
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    r = requests.post(
        f"{URL}/v1/admin/users",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"name": name},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, f"admin: create user {name}: {r.status_code} {r.text!r}"
    return r.json()
