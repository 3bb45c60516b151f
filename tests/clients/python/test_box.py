"""Box's official Python SDK (`box-sdk-gen`) against Ferry's Box dialect:
chunked uploads (upload sessions) under `/api/2.0/files/upload_sessions…`,
folders and files under `/2.0/…`; folder `"0"` is the caller's home space.

The SDK is pointed at Ferry the documented way: `BaseUrls(base_url=…,
upload_url=… + "/api", oauth_2_url=…)` in its `NetworkSession`, with a
`BoxDeveloperTokenAuth` carrying the Ferry token (no OAuth). Its HTTP client
is a `BoxNetworkClient` on a `requests.Session` that ignores proxy settings
(127.0.0.1 only) and records every status it sees (`Box.wire`), so a test can
assert the status of a call the SDK hides (204 of an abort, 201 of a commit).
Everything else (retries on 202 + Retry-After, 429, 5xx; the developer token
"refresh" on 401) is the SDK as shipped.

Every uploaded file is checked through the native API (`/v1/spaces/…/files/…`).
Where the SDK cannot say something (no token, a body that is not JSON), the
test speaks Box's wire protocol with `requests`.

Not covered here: an expired session (sessions live 7 days on the shared
server; a Rust black-box test covers expiry).

Box's chunked upload API wants files of at least 20 MB, so every session
here is for at least 20 MiB even when a test sends one part only.
"""

import base64
import hashlib
import io
import os
import uuid
from datetime import datetime, timezone

import pytest
import requests
from box_sdk_gen import (
    BaseUrls,
    BoxAPIError,
    BoxClient,
    BoxDeveloperTokenAuth,
    BoxSDKError,
    NetworkSession,
)
from box_sdk_gen.managers.folders import CreateFolderParent
from box_sdk_gen.networking.box_network_client import BoxNetworkClient

import ferrytus as ft
from ferrytus import MiB

PART = 8 * MiB  # the part size Ferry's Box dialect hands out (Box's own, too)
BOX_MIN = 20 * MiB  # Box: chunked uploads are for files of 20 MB and more
TIB = 1024 * 1024 * MiB
SERVER_MAX = 5 * TIB  # the suite's server runs with the default limits
API = ft.URL + "/2.0"  # base_url + /2.0: folders, files
UPLOAD = ft.URL + "/api/2.0"  # upload_url + /2.0: upload sessions


# ------------------------------------------------------------------ the SDK


class RecordingNetworkClient(BoxNetworkClient):
    """The SDK's own network client; remembers (method, url, status) of every
    exchange, retries included."""

    def __init__(self):
        session = requests.Session()
        session.trust_env = False  # 127.0.0.1 only, never through a proxy
        super().__init__(requests_session=session)
        self.wire = []

    def _make_request(self, request):
        response = super()._make_request(request)
        r = response.network_response
        self.wire.append((request.method, request.url, r.status_code if r is not None else None))
        return response


class Box:
    """A BoxClient on Ferry. `client` is the SDK, `wire` what it exchanged."""

    def __init__(self, token=None, base_url=None, upload_url=None):
        self.net = RecordingNetworkClient()
        urls = BaseUrls(
            base_url=base_url or ft.URL,
            upload_url=upload_url or ft.URL + "/api",
            oauth_2_url=ft.URL + "/oauth2",
        )
        session = NetworkSession(network_client=self.net, base_urls=urls)
        self.client = BoxClient(BoxDeveloperTokenAuth(token=token or ft.TOKEN), network_session=session)
        self.up = self.client.chunked_uploads

    @property
    def wire(self):
        return self.net.wire

    def last(self, method=None):
        rows = [w for w in self.wire if method is None or w[0] == method]
        assert rows, f"no {method or ''} exchange recorded"
        return rows[-1]


@pytest.fixture
def box():
    return Box()


# ------------------------------------------------------------------ helpers


def sha1_b64(data):
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def sha1_hex(data):
    return hashlib.sha1(data).hexdigest()


def digest(data):
    return "sha=" + sha1_b64(data)


def crange(start, size, total):
    return f"bytes {start}-{start + size - 1}/{total}"


def name(stem, ext="bin"):
    return f"box-{stem}-{uuid.uuid4().hex[:10]}.{ext}" if ext else f"box-{stem}-{uuid.uuid4().hex[:10]}"


def new_folder(b, stem="folder", parent="0"):
    """A fresh folder through the SDK; returns (Folder, its name)."""
    n = name(stem, ext=None)
    folder = b.client.folders.create_folder(n, CreateFolderParent(id=parent))
    assert b.last("POST")[2] == 201, b.last("POST")
    assert folder.id and isinstance(folder.id, str), folder
    assert folder.name == n
    return folder, n


def parts_of(data, part_size=PART):
    """(index, offset, bytes) of every part Box expects for `data`."""
    return [(i, off, data[off:off + part_size]) for i, off in enumerate(range(0, len(data), part_size))]


def check_session(s, size, part_size=PART):
    assert s.id and isinstance(s.id, str), s
    assert s.type == "upload_session", s.type
    assert s.part_size == part_size, s.part_size
    assert s.total_parts == -(-size // part_size), (s.total_parts, size)
    assert s.num_parts_processed == 0, s.num_parts_processed
    assert isinstance(s.session_expires_at, datetime), s.session_expires_at
    assert s.session_expires_at > datetime.now(timezone.utc)
    e = s.session_endpoints
    assert e is not None
    for url in (e.upload_part, e.commit, e.abort, e.list_parts, e.status):
        assert isinstance(url, str) and url.startswith(ft.URL + "/"), f"not an absolute Ferry URL: {url!r}"
        assert s.id in url, url
    assert e.commit.rstrip("/").endswith("/commit"), e.commit
    assert e.list_parts.rstrip("/").endswith("/parts"), e.list_parts
    return s


def create_session(b, folder_id, size, file_name):
    s = b.up.create_file_upload_session(folder_id, size, file_name)
    assert b.last("POST")[2] == 201, b.last("POST")
    return check_session(s, size)


def put_part(b, s, offset, chunk, total, by_url=True, digest_value=None, content_range=None):
    """One part through the SDK: to session_endpoints.upload_part (by_url) or
    to upload_url + /2.0/files/upload_sessions/{id}. Returns the UploadPart
    after checking the answer the way upload_big_file does."""
    d = digest_value or digest(chunk)
    r = content_range or crange(offset, len(chunk), total)
    if by_url:
        up = b.up.upload_file_part_by_url(s.session_endpoints.upload_part, io.BytesIO(chunk), d, r)
    else:
        up = b.up.upload_file_part(s.id, io.BytesIO(chunk), d, r)
    assert b.last("PUT")[2] == 200, b.last("PUT")
    part = up.part
    assert part is not None, up
    assert part.part_id and isinstance(part.part_id, str), part
    assert part.offset == offset, part.offset
    assert part.size == len(chunk), part.size
    assert part.sha_1 == sha1_hex(chunk), part.sha_1
    return part


def listed(b, s, by_url=True, **page):
    if by_url:
        return b.up.get_file_upload_session_parts_by_url(s.session_endpoints.list_parts, **page)
    return b.up.get_file_upload_session_parts(s.id, **page)


def listed_offsets(b, s, by_url=True):
    p = listed(b, s, by_url)
    entries = p.entries or []
    assert p.total_count == len(entries), (p.total_count, len(entries))
    return sorted(e.offset for e in entries)


def commit(b, s, parts, data, by_url=True, digest_value=None):
    """Commit through the SDK (which retries 202 + Retry-After itself);
    returns the one File of the 201's `entries`."""
    d = digest_value or digest(data)
    parts = sorted(parts, key=lambda p: p.offset)
    if by_url:
        files = b.up.create_file_upload_session_commit_by_url(s.session_endpoints.commit, parts, d)
    else:
        files = b.up.create_file_upload_session_commit(s.id, parts, d)
    method, url, status = b.last("POST")
    assert status == 201, b.last("POST")
    assert files is not None and files.entries, files
    assert len(files.entries) == 1, files.entries
    return files.entries[0]


def upload_all(b, s, data, by_url=True):
    parts = [put_part(b, s, off, chunk, len(data), by_url) for _, off, chunk in parts_of(data, s.part_size)]
    return commit(b, s, parts, data, by_url)


def check_file(f, file_name, data, parent_id):
    assert f.id and isinstance(f.id, str), f
    assert f.type == "file", f.type
    assert f.name == file_name, f.name
    assert f.size == len(data), f.size
    assert f.sha_1 == sha1_hex(data), f.sha_1
    assert f.parent is not None and f.parent.id == parent_id, f.parent


def native_path(folder_name, file_name):
    return f"{folder_name}/{file_name}" if folder_name else file_name


def box_error(e, status, code=None):
    """A BoxAPIError whose body is Box's ClientError."""
    assert isinstance(e, BoxAPIError), repr(e)
    info = e.response_info
    assert info.status_code == status, f"wanted {status} {code or ''}: {info.status_code} {info.raw_body!r}"
    client_error_shape(info.body, status, info.raw_body)
    if code is not None:
        assert info.code == code, f"wanted code {code!r}: {info.raw_body!r}"
    return info.body


def raw_error(r, status, code=None):
    """A requests.Response carrying Box's ClientError."""
    assert r.status_code == status, f"wanted {status} {code or ''}: {r.status_code} {r.text!r}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers.get("Content-Type")
    body = r.json()
    client_error_shape(body, status, r.text)
    if code is not None:
        assert body["code"] == code, r.text
    return body


def client_error_shape(body, status, raw):
    assert isinstance(body, dict), raw
    assert body.get("type") == "error", raw
    assert body.get("status") == status, raw
    assert isinstance(body.get("code"), str) and body["code"], raw
    assert isinstance(body.get("message"), str), raw
    assert isinstance(body.get("request_id"), str), raw


def about_the_digest(code):
    c = code.lower()
    return "digest" in c or "sha" in c or "checksum" in c or "hash" in c


def raw_put(url, chunk, content_range, token=None, digest_value=None):
    h = {
        **ft.auth(token),
        "Content-Type": "application/octet-stream",
        "digest": digest_value or digest(chunk),
        "content-range": content_range,
    }
    return requests.put(url, data=chunk, headers=h, timeout=ft.TIMEOUT)


def raw_status(s, token=None):
    return requests.get(s.session_endpoints.status, headers=ft.auth(token), timeout=ft.TIMEOUT)


# ------------------------------------------------------------------- tests


def test_upload_big_file_25mib_into_a_new_folder_lands_with_its_sha1(box):
    data = os.urandom(25 * MiB)
    folder, folder_name = new_folder(box)
    file_name = name("big")

    f = box.up.upload_big_file(io.BytesIO(data), file_name, len(data), folder.id)

    check_file(f, file_name, data, folder.id)
    steps = [(m, s) for m, _, s in box.wire[1:]]  # after the folder's POST
    assert steps[0] == ("POST", 201), steps  # create session
    assert steps[1:5] == [("PUT", 200)] * 4, steps  # 8 + 8 + 8 + 1 MiB
    assert steps[5] == ("GET", 200), steps  # list parts
    commits = steps[6:]
    assert commits and commits[-1] == ("POST", 201), steps
    assert all(c == ("POST", 202) for c in commits[:-1]), steps  # 202 + Retry-After, retried
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(data)

    # The same file through Box's own read routes.
    same = box.client.files.get_file_by_id(f.id)
    check_file(same, file_name, data, folder.id)
    got = box.client.downloads.download_file(f.id)
    assert got is not None
    assert hashlib.sha256(got.read()).hexdigest() == ft.sha256(data)
    items = box.client.folders.get_folder_items(folder.id)
    assert [(e.type, e.id, e.name) for e in items.entries] == [("file", f.id, file_name)], items.entries
    again = box.client.folders.get_folder_by_id(folder.id)
    assert (again.id, again.name) == (folder.id, folder_name)


def test_creating_an_empty_folder_again_answers_the_same_folder(box):
    # Ferry's folders are implicit (a folder exists while a file lies under
    # it), so an empty folder is not recorded: creating it again answers the
    # same id, where Box would say 409. docs/BOX.md lists this difference.
    folder, folder_name = new_folder(box)
    again = box.client.folders.create_folder(folder_name, CreateFolderParent(id="0"))
    assert again.id == folder.id
    # A same-named folder one level down is another folder.
    inner = box.client.folders.create_folder(folder_name, CreateFolderParent(id=folder.id))
    assert inner.id != folder.id and inner.parent is not None and inner.parent.id == folder.id


def test_create_folder_named_like_a_folder_holding_a_file_is_409_item_name_in_use(box):
    folder, folder_name = new_folder(box, "full")
    data = os.urandom(BOX_MIN)
    box.up.upload_big_file(io.BytesIO(data), name("content"), len(data), folder.id)
    with pytest.raises(BoxAPIError) as e:
        box.client.folders.create_folder(folder_name, CreateFolderParent(id="0"))
    box_error(e.value, 409, "item_name_in_use")


def test_create_folder_named_like_a_file_is_409_item_name_in_use(box):
    data = os.urandom(BOX_MIN)
    file_name = name("file-not-folder")
    box.up.upload_big_file(io.BytesIO(data), file_name, len(data), "0")
    with pytest.raises(BoxAPIError) as e:
        box.client.folders.create_folder(file_name, CreateFolderParent(id="0"))
    box_error(e.value, 409, "item_name_in_use")


def test_per_call_resume_parts_1_and_3_then_list_then_the_rest_then_commit(box):
    data = os.urandom(3 * PART + 123_457)  # 4 parts, the last short
    folder, folder_name = new_folder(box, "resume")
    file_name = name("resume")
    s = create_session(box, folder.id, len(data), file_name)
    all_parts = parts_of(data)
    assert len(all_parts) == 4 == s.total_parts

    # Parts 1 and 3 (offsets 0 and 2*PART), one by URL, one by id.
    put_part(box, s, all_parts[0][1], all_parts[0][2], len(data), by_url=True)
    put_part(box, s, all_parts[2][1], all_parts[2][2], len(data), by_url=False)

    # A client resuming knows only the session: it asks what is there.
    status = box.up.get_file_upload_session_by_id(s.id)
    assert status.id == s.id and status.num_parts_processed == 2, status
    assert status.total_parts == 4 and status.part_size == PART
    assert box.up.get_file_upload_session_by_url(s.session_endpoints.status).num_parts_processed == 2
    have = listed_offsets(box, s, by_url=True)
    assert have == [0, 2 * PART], have
    assert listed_offsets(box, s, by_url=False) == have
    missing = [(off, chunk) for _, off, chunk in all_parts if off not in have]
    assert [off for off, _ in missing] == [PART, 3 * PART]
    for off, chunk in missing:
        put_part(box, s, off, chunk, len(data))

    # The listing pages with offset/limit (item offsets, not bytes).
    page = listed(box, s, offset=1, limit=2)
    assert page.total_count == 4 and page.offset == 1 and page.limit == 2, page
    assert len(page.entries) == 2, page.entries
    whole = listed(box, s)
    assert whole.total_count == 4 and len(whole.entries) == 4
    by_offset = {e.offset: e for e in whole.entries}
    assert sorted(by_offset) == [0, PART, 2 * PART, 3 * PART]
    for _, off, chunk in all_parts:
        e = by_offset[off]
        assert (e.size, e.sha_1) == (len(chunk), sha1_hex(chunk)), e
        assert e.part_id
    assert {e.offset for e in page.entries} <= set(by_offset)

    # Commit with what the listing says, as a resuming client would.
    f = commit(box, s, whole.entries, data, by_url=False)
    check_file(f, file_name, data, folder.id)
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(data)


@pytest.mark.parametrize("by_url", [True, False], ids=["session-endpoint", "by-id"])
def test_bad_part_digest_is_400_about_the_digest_and_the_part_is_not_kept(box, by_url):
    data = os.urandom(2 * PART + 5 * MiB)
    folder, folder_name = new_folder(box, "digest")
    file_name = name("digest")
    s = create_session(box, folder.id, len(data), file_name)
    (_, o0, p0), (_, o1, p1), (_, o2, p2) = parts_of(data)

    wrong = digest(p0[:-1] + bytes([p0[-1] ^ 1]))
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, o0, p0, len(data), by_url=by_url, digest_value=wrong)
    body = box_error(e.value, 400)
    assert about_the_digest(body["code"]), f"a 400 whose code is not about the digest: {body}"
    assert listed_offsets(box, s) == [], "a part whose digest did not match was kept"
    assert box.up.get_file_upload_session_by_id(s.id).num_parts_processed == 0

    # Not base64 of 20 bytes at all: refused the same way.
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, o1, p1, len(data), by_url=by_url, digest_value="sha=not-a-digest")
    assert e.value.response_info.status_code == 400, e.value.response_info.raw_body
    client_error_shape(e.value.response_info.body, 400, e.value.response_info.raw_body)

    # The right digest now: accepted, and the upload finishes.
    parts = [put_part(box, s, o, p, len(data), by_url=by_url) for o, p in ((o0, p0), (o1, p1), (o2, p2))]
    assert listed_offsets(box, s) == [0, PART, 2 * PART]
    f = commit(box, s, parts, data, by_url=by_url)
    check_file(f, file_name, data, folder.id)
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(data)


def test_missing_part_digest_is_refused_with_a_client_error(box):
    data = os.urandom(BOX_MIN)
    s = create_session(box, "0", len(data), name("no-digest"))
    chunk = data[:PART]
    r = requests.put(
        s.session_endpoints.upload_part,
        data=chunk,
        headers={**ft.auth(), "Content-Type": "application/octet-stream", "content-range": crange(0, PART, len(data))},
        timeout=ft.TIMEOUT,
    )
    assert r.status_code == 400, f"{r.status_code} {r.text!r}"
    raw_error(r, 400)
    assert listed_offsets(box, s) == []


def test_resent_or_overlapping_part_is_409_range_overlaps_existing_part(box):
    data = os.urandom(2 * PART + 5 * MiB)
    s = create_session(box, "0", len(data), name("overlap"))
    (_, o0, p0), (_, o1, p1), (_, o2, p2) = parts_of(data)
    first = put_part(box, s, o0, p0, len(data))

    # The same part again (a client retrying after a lost answer).
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, o0, p0, len(data))
    box_error(e.value, 409, "range_overlaps_existing_part")

    # Other bytes for the same range: parts are immutable.
    other = os.urandom(PART)
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, o0, other, len(data), by_url=False)
    box_error(e.value, 409, "range_overlaps_existing_part")

    whole = listed(box, s)
    assert whole.total_count == 1 and len(whole.entries) == 1, whole
    kept = whole.entries[0]
    assert (kept.offset, kept.size, kept.sha_1, kept.part_id) == (0, PART, sha1_hex(p0), first.part_id)

    # The last part, then once more: 409 too.
    put_part(box, s, o2, p2, len(data))
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, o2, p2, len(data))
    box_error(e.value, 409, "range_overlaps_existing_part")
    assert listed_offsets(box, s) == [0, 2 * PART]


def test_abort_is_204_then_status_parts_upload_and_commit_are_404(box):
    data = os.urandom(BOX_MIN + 1)
    folder, folder_name = new_folder(box, "abort")
    file_name = name("abort")
    s = create_session(box, folder.id, len(data), file_name)
    p = put_part(box, s, 0, data[:PART], len(data))

    box.up.delete_file_upload_session_by_url(s.session_endpoints.abort)
    assert box.last("DELETE")[2] == 204, box.last("DELETE")

    with pytest.raises(BoxAPIError) as e:
        box.up.get_file_upload_session_by_id(s.id)
    box_error(e.value, 404)
    with pytest.raises(BoxAPIError) as e:
        box.up.get_file_upload_session_by_url(s.session_endpoints.status)
    box_error(e.value, 404)
    with pytest.raises(BoxAPIError) as e:
        listed(box, s)
    box_error(e.value, 404)
    with pytest.raises(BoxAPIError) as e:
        listed(box, s, by_url=False)
    box_error(e.value, 404)
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, PART, data[PART:2 * PART], len(data))
    box_error(e.value, 404)
    with pytest.raises(BoxAPIError) as e:
        commit(box, s, [p], data)
    box_error(e.value, 404)
    with pytest.raises(BoxAPIError) as e:
        box.up.delete_file_upload_session_by_id(s.id)
    box_error(e.value, 404)
    assert ft.download(native_path(folder_name, file_name)).status_code == 404


def test_abort_by_id_is_204(box):
    s = create_session(box, "0", BOX_MIN, name("abort-id"))
    box.up.delete_file_upload_session_by_id(s.id)
    assert box.last("DELETE")[2] == 204, box.last("DELETE")
    raw_error(raw_status(s), 404)


def test_new_version_through_files_id_upload_sessions_replaces_the_bytes(box):
    old = os.urandom(BOX_MIN + 777)
    new = os.urandom(3 * PART + 4242)
    file_name = name("version")
    # Into the root folder "0": the file sits at the top of the home space.
    f1 = box.up.upload_big_file(io.BytesIO(old), file_name, len(old), "0")
    check_file(f1, file_name, old, "0")
    assert ft.remote_sha256(file_name) == ft.sha256(old)

    s = box.up.create_file_upload_session_for_existing_file(f1.id, len(new))
    assert box.last("POST")[2] == 201, box.last("POST")
    check_session(s, len(new))
    f2 = upload_all(box, s, new)

    check_file(f2, file_name, new, "0")
    assert ft.remote_sha256(file_name) == ft.sha256(new)
    # Box: a new version is the same file, under the same id; a client that
    # kept the id reads the new bytes through it and can version it again.
    assert f2.id == f1.id, f"the new version has a new file id: {f1.id} -> {f2.id}"
    again = box.client.files.get_file_by_id(f1.id)
    check_file(again, file_name, new, "0")


def test_new_version_session_for_an_unknown_file_is_404(box):
    with pytest.raises(BoxAPIError) as e:
        box.up.create_file_upload_session_for_existing_file("999999999999", BOX_MIN)
    box_error(e.value, 404)


def test_name_clash_at_commit_is_409_item_name_in_use_and_the_session_stays(box):
    a, b = os.urandom(BOX_MIN + 1), os.urandom(BOX_MIN + 2)
    folder, folder_name = new_folder(box, "clash")
    file_name = name("clash")
    # Both sessions exist before either file does: the clash can only be at commit.
    sa = create_session(box, folder.id, len(a), file_name)
    sb = create_session(box, folder.id, len(b), file_name)
    pa = [put_part(box, sa, off, chunk, len(a)) for _, off, chunk in parts_of(a)]
    pb = [put_part(box, sb, off, chunk, len(b)) for _, off, chunk in parts_of(b)]
    fa = commit(box, sa, pa, a)
    check_file(fa, file_name, a, folder.id)

    with pytest.raises(BoxAPIError) as e:
        commit(box, sb, pb, b)
    body = box_error(e.value, 409, "item_name_in_use")
    conflicts = (body.get("context_info") or {}).get("conflicts")
    if conflicts is not None:  # Box names the item in the way; optional here
        items = conflicts if isinstance(conflicts, list) else [conflicts]
        assert any(str(c.get("id")) == fa.id for c in items), body

    # The refused session is still there, its parts too; the file is a's.
    st = box.up.get_file_upload_session_by_id(sb.id)
    assert st.id == sb.id and st.num_parts_processed == len(pb), st
    assert listed_offsets(box, sb) == [p.offset for p in pb]
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(a)
    box.up.delete_file_upload_session_by_id(sb.id)
    assert box.last("DELETE")[2] == 204


def test_session_for_a_name_already_taken_is_409_at_create_or_at_commit(box):
    """Box documents 409 at create ("the file already exists"); the contract
    allows the clash to surface at commit instead. Either way: a 409
    item_name_in_use ClientError, and the old file untouched."""
    old, new = os.urandom(BOX_MIN), os.urandom(BOX_MIN + 3)
    folder, folder_name = new_folder(box, "taken")
    file_name = name("taken")
    box.up.upload_big_file(io.BytesIO(old), file_name, len(old), folder.id)
    try:
        s = box.up.create_file_upload_session(folder.id, len(new), file_name)
    except BoxAPIError as e:
        box_error(e, 409, "item_name_in_use")
    else:
        check_session(s, len(new))
        parts = [put_part(box, s, off, chunk, len(new)) for _, off, chunk in parts_of(new)]
        with pytest.raises(BoxAPIError) as e:
            commit(box, s, parts, new)
        box_error(e.value, 409, "item_name_in_use")
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(old)


def test_wrong_whole_file_digest_at_commit_is_refused_and_the_session_is_kept(box):
    data = os.urandom(BOX_MIN + 99)
    folder, folder_name = new_folder(box, "commit-digest")
    file_name = name("commit-digest")
    s = create_session(box, folder.id, len(data), file_name)
    parts = [put_part(box, s, off, chunk, len(data)) for _, off, chunk in parts_of(data)]

    wrong = digest(data + b"x")
    with pytest.raises(BoxAPIError) as e:
        commit(box, s, parts, data, digest_value=wrong)
    status = e.value.response_info.status_code
    assert status in (400, 422), f"{status} {e.value.response_info.raw_body!r}"
    body = box_error(e.value, status)
    assert about_the_digest(body["code"]), f"code is not about the digest: {body}"
    assert ft.download(native_path(folder_name, file_name)).status_code == 404, "visible after a refused commit"

    st = box.up.get_file_upload_session_by_id(s.id)
    assert st.num_parts_processed == len(parts), st
    f = commit(box, s, parts, data)
    check_file(f, file_name, data, folder.id)
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(data)


def test_wrong_or_missing_token_is_401_in_boxs_error_format():
    bad = Box(token="not-a-ferry-token")
    with pytest.raises(BoxSDKError) as e:
        bad.up.create_file_upload_session("0", BOX_MIN, name("bad-token"))
    # A 401 makes the SDK try to refresh its developer token, which it cannot.
    assert bad.wire and bad.wire[-1][2] == 401, bad.wire
    assert "Developer token" in e.value.message, e.value.message
    with pytest.raises(BoxSDKError):
        bad.client.folders.get_folder_by_id("0")
    assert bad.wire[-1][2] == 401, bad.wire

    body = {"folder_id": "0", "file_size": BOX_MIN, "file_name": name("no-token")}
    for url in (UPLOAD + "/files/upload_sessions", API + "/files/upload_sessions"):
        raw_error(requests.post(url, json=body, timeout=ft.TIMEOUT), 401)
        raw_error(requests.post(url, json=body, headers=ft.auth("nope"), timeout=ft.TIMEOUT), 401)
    raw_error(requests.get(API + "/folders/0", headers=ft.auth("nope"), timeout=ft.TIMEOUT), 401)
    raw_error(requests.get(API + "/folders/0", timeout=ft.TIMEOUT), 401)


def test_another_users_session_is_404_not_found_and_left_alone(box):
    bob = ft.new_user("boxbob")
    theirs = Box(token=bob["token"])
    data = os.urandom(BOX_MIN)
    s = create_session(box, "0", len(data), name("alices"))
    p0 = put_part(box, s, 0, data[:PART], len(data))

    calls = {
        "status": lambda: theirs.up.get_file_upload_session_by_id(s.id),
        "status-url": lambda: theirs.up.get_file_upload_session_by_url(s.session_endpoints.status),
        "parts": lambda: theirs.up.get_file_upload_session_parts(s.id),
        "put": lambda: theirs.up.upload_file_part_by_url(
            s.session_endpoints.upload_part, io.BytesIO(data[PART:2 * PART]), digest(data[PART:2 * PART]),
            crange(PART, PART, len(data))),
        "commit": lambda: theirs.up.create_file_upload_session_commit(s.id, [p0], digest(data)),
        "abort": lambda: theirs.up.delete_file_upload_session_by_id(s.id),
    }
    for what, call in calls.items():
        with pytest.raises(BoxAPIError) as e:
            call()
        try:
            box_error(e.value, 404, "not_found")
        except AssertionError as err:
            raise AssertionError(f"bob's {what} on alice's session: {err}") from None

    # Alice's session is as she left it.
    st = box.up.get_file_upload_session_by_id(s.id)
    assert st.num_parts_processed == 1, st
    assert listed_offsets(box, s) == [0]

    # Bob cannot upload into alice's folders either.
    folder, _ = new_folder(box, "not-bobs")
    with pytest.raises(BoxAPIError) as e:
        theirs.up.create_file_upload_session(folder.id, BOX_MIN, name("bob"))
    assert e.value.response_info.status_code in (403, 404), e.value.response_info.raw_body
    client_error_shape(e.value.response_info.body, e.value.response_info.status_code, e.value.response_info.raw_body)


TOTAL = 2 * PART + 5 * MiB  # 21 MiB: parts at 0, PART, 2*PART (5 MiB)
BAD_RANGES = {
    # name: (start, size, total in content-range)
    "misaligned-start": (1 * MiB, PART, TOTAL),
    "short-part-not-last": (0, 1 * MiB, TOTAL),
    "part-bigger-than-part-size": (0, PART + 1, TOTAL),
    "last-part-not-reaching-the-end": (2 * PART, 4 * MiB, TOTAL),
    "total-other-than-file-size": (0, PART, TOTAL + PART),
}


@pytest.mark.parametrize("case", list(BAD_RANGES))
def test_content_range_not_matching_the_session_is_416(box, case):
    start, size, total = BAD_RANGES[case]
    s = create_session(box, "0", TOTAL, name(f"416-{case}"))
    chunk = os.urandom(size)
    with pytest.raises(BoxAPIError) as e:
        put_part(box, s, start, chunk, total)
    box_error(e.value, 416)
    assert listed_offsets(box, s) == [], "a refused part was kept"
    # The session still takes a good part.
    good = os.urandom(PART)
    put_part(box, s, 0, good, TOTAL)


@pytest.mark.parametrize("bad", ["bytes 0-99", "bytes a-b/c", "items 0-8388607/22020096", "bytes 99-0/22020096"])
def test_malformed_content_range_is_a_4xx_client_error(box, bad):
    s = create_session(box, "0", TOTAL, name("bad-range"))
    r = raw_put(s.session_endpoints.upload_part, os.urandom(100), bad)
    assert r.status_code in (400, 416), f"{bad!r}: {r.status_code} {r.text!r}"
    raw_error(r, r.status_code)
    assert listed_offsets(box, s) == []


def test_file_size_over_the_server_limit_is_refused_at_create(box):
    with pytest.raises(BoxAPIError) as e:
        box.up.create_file_upload_session("0", SERVER_MAX + 1, name("huge"))
    status = e.value.response_info.status_code
    assert status in (400, 403, 413), f"{status} {e.value.response_info.raw_body!r}"
    box_error(e.value, status)


@pytest.mark.parametrize("size", [0, -1], ids=["zero", "negative"])
def test_file_size_that_is_no_size_is_400(box, size):
    with pytest.raises(BoxAPIError) as e:
        box.up.create_file_upload_session("0", size, name("no-size"))
    box_error(e.value, 400)


def test_create_into_an_unknown_folder_is_400_invalid_folder_id_or_404(box):
    """Box documents both: 400 `invalid_folder_id` ("folder_id is not
    valid") and 404 (the folder is not found or not the caller's)."""
    with pytest.raises(BoxAPIError) as e:
        box.up.create_file_upload_session("999999999999", BOX_MIN, name("nowhere"))
    info = e.value.response_info
    assert (info.status_code, info.code) in ((400, "invalid_folder_id"), (404, "not_found")), info.raw_body
    box_error(e.value, info.status_code)


@pytest.mark.parametrize(
    "base_url, upload_url",
    [(ft.URL + "/api", ft.URL), (ft.URL, ft.URL + "/api")],
    ids=["api-prefix-on-folders", "no-api-prefix-on-uploads"],
)
def test_every_route_answers_with_and_without_the_api_prefix(base_url, upload_url):
    b = Box(base_url=base_url, upload_url=upload_url)
    data = os.urandom(BOX_MIN + 11)
    folder, folder_name = new_folder(b, "prefix")
    file_name = name("prefix")
    s = b.up.create_file_upload_session(folder.id, len(data), file_name)
    check_session(s, len(data))
    parts = [put_part(b, s, off, chunk, len(data), by_url=False) for _, off, chunk in parts_of(data)]
    assert listed_offsets(b, s, by_url=False) == [p.offset for p in parts]
    assert b.up.get_file_upload_session_by_id(s.id).num_parts_processed == len(parts)
    f = commit(b, s, parts, data, by_url=False)
    check_file(f, file_name, data, folder.id)
    assert b.client.files.get_file_by_id(f.id).sha_1 == sha1_hex(data)
    assert ft.remote_sha256(native_path(folder_name, file_name)) == ft.sha256(data)
    for m, url, _ in b.wire:
        assert url.startswith(base_url + "/2.0/") or url.startswith(upload_url + "/2.0/"), url
