"""Microsoft's Graph SDK for Python (`msgraph-sdk` + `msgraph-core`) against
Ferry's Microsoft Graph dialect: `createUploadSession` under `/v1.0`, a drive
is a Ferry space, `me/drive` is the caller's home space.

The SDK is pointed at Ferry the documented way: a `GraphRequestAdapter` whose
`base_url` is set *before* `GraphServiceClient` is built (the client only
fills in graph.microsoft.com when the adapter has none). Auth is kiota's
`BaseBearerTokenAuthenticationProvider` with a token provider for 127.0.0.1
(plain http is fine: only kiota-authentication-azure's provider insists on
https). The upload URL is on the same host, so the SDK sends the bearer token
on its PUTs to it as well; the raw requests below send none, proving the URL
is pre-authenticated.

Every file is checked through the native API (`/v1/spaces/…/files/…`).

msgraph-core 1.5.2's `LargeFileUploadTask` is used two ways:
- as shipped (`upload()`, `resume()`): its loop needs `nextExpectedRanges` of
  the form `start-end` and always PUTs the final range once more after the
  201 (msgraph-sdk-python-core#718), which a closed session refuses; `shipped`
  below tolerates only that last refusal;
- fragment by fragment (`put_fragment`): the task's own request building and
  parsing (`next_chunk`/`last_chunk`) for ranges the test picks, multiples of
  320 KiB as Graph requires.
"""

import asyncio
import http.client
import io
import json
import os
import time
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
import requests
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.drives.item.items.item.create_upload_session.create_upload_session_request_builder import (
    CreateUploadSessionRequestBuilder,
)
from msgraph.generated.models.drive_item import DriveItem
from msgraph.generated.models.drive_item_uploadable_properties import DriveItemUploadableProperties
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import options as GRAPH_ADAPTER_OPTIONS
from msgraph_core import GraphClientFactory
from msgraph_core.models import LargeFileUploadSession
from msgraph_core.tasks.large_file_upload import LargeFileUploadTask

import ferrytus as ft
from ferrytus import KiB, MiB

GRAPH = ft.URL + "/v1.0"
FRAG = 320 * KiB  # Graph: every fragment but the last is a multiple of this
TIB = 1024 * 1024 * MiB
SERVER_MAX = 5 * TIB  # the suite's server runs with the default limits


# ------------------------------------------------------------------ the SDK


class FerryToken(AccessTokenProvider):
    """The bearer token for 127.0.0.1, nothing for any other host."""

    def __init__(self, token):
        self.token = token
        self.hosts = AllowedHostsValidator(["127.0.0.1"])

    async def get_authorization_token(self, uri, additional_authentication_context={}):
        return self.token if self.hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self):
        return self.hosts


class Exchange:
    def __init__(self, response):
        self.method = response.request.method
        self.url = str(response.request.url)
        self.request_headers = dict(response.request.headers)
        self.status = response.status_code
        self.content = response.content

    def json(self):
        return json.loads(self.content)

    def __repr__(self):
        return f"{self.method} {self.url} -> {self.status} {self.content[:200]!r}"


class Graph:
    """One GraphServiceClient on Ferry, for one event loop (`async with`).
    `wire` lists every exchange the SDK had, answers included."""

    def __init__(self, token=None):
        self.wire = []
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(120, connect=10),
            trust_env=False,  # 127.0.0.1 only, never through a proxy
            event_hooks={"response": [self._record]},
        )
        # The middleware GraphRequestAdapter installs when it makes its own client.
        self.http = GraphClientFactory.create_with_default_middleware(client=http, options=GRAPH_ADAPTER_OPTIONS)
        auth = BaseBearerTokenAuthenticationProvider(FerryToken(token or ft.TOKEN))
        self.adapter = GraphRequestAdapter(auth, client=self.http)
        self.adapter.base_url = GRAPH  # before the client is built
        self.client = GraphServiceClient(request_adapter=self.adapter)
        assert self.client.request_adapter.base_url == GRAPH

    async def _record(self, response):
        await response.aread()
        self.wire.append(Exchange(response))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.http.aclose()

    def puts(self):
        return [x for x in self.wire if x.method == "PUT"]


def run(coro):
    return asyncio.run(coro)


def run_in(g, coro):
    return g.loop.run_until_complete(coro)


class LoopGraph(Graph):
    """A Graph whose event loop stays open across the sync steps of a test."""

    def __init__(self, token=None):
        self.loop = asyncio.new_event_loop()
        super().__init__(token)

    def close(self):
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def loop_graph():
    g = LoopGraph()
    yield g
    g.close()


def session_body(conflict=None, size=None, name=None, defer=None):
    """createUploadSession's body as the SDK models it; deferCommit is not in
    the model, so it rides in additional_data like the conflict behaviour."""
    extra = {}
    if conflict is not None:
        extra["@microsoft.graph.conflictBehavior"] = conflict
    item = DriveItemUploadableProperties(file_size=size, name=name, additional_data=extra)
    body = CreateUploadSessionPostRequestBody(item=item)
    if defer is not None:
        body.additional_data = {"deferCommit": defer}
    return body


async def create_session(g, path, space=None, **kw):
    """The SDK's own form: drives/{space}/items/root:/{path}:/createUploadSession
    (the item id travels percent-encoded in one segment)."""
    builder = g.client.drives.by_drive_id(space or ft.SPACE).items.by_drive_item_id(f"root:/{path}:")
    return await builder.create_upload_session.post(session_body(**kw))


async def create_session_at(g, url, **kw):
    """Any other createUploadSession URL, through the SDK's with_url route."""
    return await CreateUploadSessionRequestBuilder(g.adapter, url).post(session_body(**kw))


def sdk_task(g, session, data, chunk=5 * MiB):
    return LargeFileUploadTask(session, g.adapter, io.BytesIO(data), parsable_factory=DriveItem, max_chunk_size=chunk)


async def put_fragment(task, start, end, last=False):
    """One PUT of bytes start..end exactly as LargeFileUploadTask builds it
    (Content-Range, Content-Length, application/octet-stream). `last` parses
    the answer as a DriveItem, otherwise as a LargeFileUploadSession."""
    assert 0 < end - start + 1 <= task.max_chunk_size
    task.stream.seek(start)
    task.next_range = f"{start}-{end}"
    if last:
        return await task.last_chunk(task.stream)
    return await task.next_chunk(task.stream)


async def put_all(task, size, frag=FRAG, last=True):
    """The whole stream in `frag` fragments; returns the last answer."""
    answer = None
    for start in range(0, size, frag):
        end = min(start + frag, size) - 1
        answer = await put_fragment(task, start, end, last=last and end == size - 1)
    return answer


async def sdk_request(g, method, url, factory=None):
    """A bare request to the upload URL through the SDK's adapter, with Graph's
    error mapping (so a failure raises ODataError)."""
    info = RequestInformation()
    info.http_method = method
    info.url = url
    errors = {"XXX": ODataError}
    if factory is None:
        return await g.adapter.send_no_response_content_async(info, errors)
    return await g.adapter.send_async(info, factory, errors)


async def shipped(g, call):
    """Runs LargeFileUploadTask.upload()/resume() as msgraph-core ships it and
    returns the DriveItem of the PUT that completed the file.

    Tolerated: the extra PUT of the final range that upload() always sends
    after the file completed (msgraph-sdk-python-core#718). Ferry answers a
    completing fragment sent again as its first answer (the same driveItem:
    a client whose answer was lost learns its file), and the ones before
    this rule refused it (any 4xx, upload() raises APIError). Either way it
    is the very same range, and no second file is made."""
    begin = len(g.wire)
    try:
        await call
    except ValueError as e:
        ranges = [x.json().get("nextExpectedRanges") for x in g.wire if x.status in (200, 202) and x.content[:1] == b"{"]
        pytest.fail(
            "msgraph-core's LargeFileUploadTask could not use Ferry's nextExpectedRanges "
            f"(as answered so far: {ranges}): it splits each range on '-' and needs "
            f"'start-end' with the end (Graph's documented format), not open 'start-': {e!r}"
        )
    except APIError as e:
        mine = g.wire[begin:]
        done = [i for i, x in enumerate(mine) if x.method == "PUT" and x.status in (200, 201)]
        last = mine[-1] if mine else None
        if not (done and last.method == "PUT" and done[-1] < len(mine) - 1 and 400 <= e.response_status_code < 500):
            raise AssertionError(f"upload failed: {e!r}; last exchanges: {mine[-4:]}") from e
        assert last.request_headers["content-range"] == mine[done[-1]].request_headers["content-range"], last
    done = [x for x in g.wire[begin:] if x.method == "PUT" and x.status in (200, 201)]
    assert 1 <= len(done) <= 2, f"completions: {done}"
    if len(done) == 2:
        first, again = done
        assert again.request_headers["content-range"] == first.request_headers["content-range"], done
        assert json.loads(again.content)["id"] == json.loads(first.content)["id"], done
    return parse(done[0].content, DriveItem)


def parse(content, factory):
    return JsonParseNodeFactory().get_root_parse_node("application/json", content).get_object_value(factory)


# -------------------------------------------------------- raw HTTP (no auth)


def raw_put(url, data, start, total, content_range=None, headers=None):
    """PUT to the upload URL with no Authorization: it is pre-authenticated."""
    h = {"Content-Type": "application/octet-stream"}
    if content_range is not False:
        h["Content-Range"] = content_range or f"bytes {start}-{start + len(data) - 1}/{total}"
    h.update(headers or {})
    return requests.put(url, data=data, headers=h, timeout=ft.TIMEOUT)


def raw_put_ok(url, data, start, total):
    r = raw_put(url, data, start, total)
    assert r.status_code == 202, f"PUT {start}+{len(data)}/{total}: {r.status_code} {r.text!r}"
    return r.json()


def status(url):
    return requests.get(url, timeout=ft.TIMEOUT)


def status_ok(url):
    r = status(url)
    assert r.status_code == 200, f"GET uploadUrl: {r.status_code} {r.text!r}"
    j = r.json()
    assert future(j["expirationDateTime"])
    return j


def graph_error(r, code_status, code):
    """Graph's error body: {"error": {"code", "message"}} as JSON."""
    assert r.status_code == code_status, f"wanted {code_status} {code}: {r.status_code} {r.text!r}"
    assert_graph_error_shape(r)
    assert r.json()["error"]["code"] == code, r.text


def assert_graph_error_shape(r):
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers.get("Content-Type")
    j = r.json()
    assert isinstance(j.get("error"), dict), r.text
    assert isinstance(j["error"].get("code"), str) and j["error"]["code"], r.text
    assert isinstance(j["error"].get("message"), str), r.text


def odata(e, code_status, code):
    assert isinstance(e, ODataError), repr(e)
    assert e.response_status_code == code_status, f"{e.response_status_code} {e.error and e.error.code}"
    assert e.error is not None and e.error.code == code, e.error
    assert isinstance(e.error.message, str)


def iso(value):
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def future(value):
    return iso(value) > datetime.now(timezone.utc)


def ranges_of(ranges, total):
    """nextExpectedRanges as (first, last) pairs; 'a-' means a..total-1."""
    out = []
    for item in ranges:
        a, dash, b = item.partition("-")
        assert dash and a.isdigit() and (b == "" or b.isdigit()), item
        out.append((int(a), int(b) if b else total - 1))
    return out


def stable_status(url, tries=25):
    """The status once two reads agree (an aborted PUT may still be settling)."""
    last = status_ok(url)
    for _ in range(tries):
        time.sleep(0.2)
        now = status_ok(url)
        if now["nextExpectedRanges"] == last["nextExpectedRanges"]:
            return now
        last = now
    return last


def dropped_fragment(url, data, start, end, sent):
    """A PUT announcing bytes start..end whose connection dies after `sent` bytes."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=ft.TIMEOUT)
    try:
        conn.putrequest("PUT", u.path + (f"?{u.query}" if u.query else ""), skip_accept_encoding=True)
        conn.putheader("Content-Range", f"bytes {start}-{end}/{len(data)}")
        conn.putheader("Content-Length", str(end - start + 1))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        conn.send(data[start:start + sent])
    finally:
        conn.close()


def check_item(item, dest, data, name=None):
    """The driveItem of a finished upload: name, size, SHA-256 (uppercase hex,
    as Graph writes its hashes), dates and where it sits."""
    folder, _, base = dest.rpartition("/")
    assert item.id
    assert item.name == (name or base)
    assert item.size == len(data)
    assert item.file is not None and item.file.hashes is not None, item
    assert item.file.hashes.sha256_hash == ft.sha256(data).upper()
    assert item.created_date_time is not None and item.last_modified_date_time is not None
    assert item.parent_reference is not None and item.parent_reference.drive_id == ft.SPACE
    assert isinstance(item.parent_reference.path, str)
    if folder:
        assert item.parent_reference.path.rstrip("/").endswith("/" + folder), item.parent_reference.path


def unique(stem):
    return ft.unique(stem, folder="graph")


async def upload_small(g, dest, data, conflict=None):
    """A whole small upload with the SDK (FRAG fragments); returns the DriveItem."""
    session = await create_session(g, dest, conflict=conflict, size=len(data))
    return await put_all(sdk_task(g, session, data), len(data))


# ------------------------------------------------------------------- tests


def test_sdk_large_file_upload_task_30mib_in_5mib_chunks_lands_with_its_sha256():
    data = os.urandom(30 * MiB)
    dest = unique("sdk-30mib")

    async def go():
        async with Graph() as g:
            session = await create_session(g, dest, conflict="fail", size=len(data))
            assert session.upload_url.startswith(ft.URL + "/"), session.upload_url
            assert session.next_expected_ranges == ["0-"]
            assert session.expiration_date_time > datetime.now(timezone.utc)
            progress = []
            task = sdk_task(g, session, data, chunk=5 * MiB)  # 16 x 320 KiB
            item = await shipped(g, task.upload(progress.append))
            return item, progress, g

    item, progress, g = run(go())
    check_item(item, dest, data)
    assert len(progress) >= 6
    created = g.wire[0]
    assert created.method == "POST" and created.status == 200
    assert "/items/root%3A%2F" in created.url, created.url  # the SDK's encoded item id
    assert ft.remote_sha256(dest) == ft.sha256(data)


def session_with_a_dropped_fragment(g, data):
    """5 MiB sent, then a 5 MiB PUT whose connection dies after 1 MiB.
    Returns (dest, upload URL, status once settled)."""
    dest = unique("dropped")
    url = run_in(g, create_session(g, dest, conflict="fail", size=len(data))).upload_url
    raw_put_ok(url, data[:5 * MiB], 0, len(data))
    dropped_fragment(url, data, 5 * MiB, 10 * MiB - 1, sent=1 * MiB)
    st = stable_status(url)
    ranges = ranges_of(st["nextExpectedRanges"], len(data))
    assert len(ranges) == 1, st
    first, last = ranges[0]
    # Graph drops a broken fragment; keeping what arrived is fine as well.
    assert 5 * MiB <= first <= 6 * MiB and last == len(data) - 1, st
    return dest, url, st


def test_sdk_task_resume_continues_from_next_expected_ranges_after_a_dropped_fragment(loop_graph):
    g = loop_graph
    data = os.urandom(20 * MiB + 777)
    dest, url, _ = session_with_a_dropped_fragment(g, data)

    async def resume():
        session = await sdk_request(g, Method.GET, url, LargeFileUploadSession)
        assert session.next_expected_ranges, session
        session.upload_url = url  # the status answer has none
        return await shipped(g, sdk_task(g, session, data, chunk=5 * MiB).resume())

    item = run_in(g, resume())
    check_item(item, dest, data)
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_sdk_fragments_from_next_expected_ranges_finish_an_upload_after_a_dropped_fragment(loop_graph):
    g = loop_graph
    data = os.urandom(20 * MiB + 777)
    dest, url, st = session_with_a_dropped_fragment(g, data)
    first, _ = ranges_of(st["nextExpectedRanges"], len(data))[0]

    async def finish():
        session = await sdk_request(g, Method.GET, url, LargeFileUploadSession)
        session.upload_url = url
        task = sdk_task(g, session, data, chunk=16 * FRAG)
        start, answer = first, None
        while start < len(data):
            end = min(start + 16 * FRAG, len(data)) - 1
            answer = await put_fragment(task, start, end, last=end == len(data) - 1)
            if end < len(data) - 1:
                assert ranges_of(answer.next_expected_ranges, len(data)) == [(end + 1, len(data) - 1)], answer
            start = end + 1
        return answer

    item = run_in(g, finish())
    check_item(item, dest, data)
    assert ft.remote_sha256(dest) == ft.sha256(data)


@pytest.mark.parametrize("form", ["sdk-items-encoded", "me-drive-root", "drives-space-root", "me-drive-items-root"])
def test_create_upload_session_url_forms_land_where_they_say(form):
    data = os.urandom(2 * FRAG + 1234)
    dest = unique(f"form-{form}")
    if form == "me-drive-items-root":
        dest = dest.rpartition("/")[2]  # parent `root`: a name, no folder

    async def go():
        async with Graph() as g:
            p = quote(dest, safe="/")
            if form == "sdk-items-encoded":
                session = await create_session(g, dest)
            elif form == "me-drive-root":
                session = await create_session_at(g, f"{GRAPH}/me/drive/root:/{p}:/createUploadSession")
            elif form == "drives-space-root":
                session = await create_session_at(g, f"{GRAPH}/drives/{quote(ft.SPACE, safe='')}/root:/{p}:/createUploadSession")
            else:
                session = await create_session_at(g, f"{GRAPH}/me/drive/items/root:/{p}:/createUploadSession")
            assert g.wire[0].status == 200
            assert session.next_expected_ranges == ["0-"]
            return await put_all(sdk_task(g, session, data), len(data))

    item = run(go())
    check_item(item, dest, data)
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_defer_commit_last_fragment_is_202_and_post_to_the_upload_url_commits():
    data = os.urandom(3 * FRAG + 99)
    dest = unique("defer")

    async def go():
        async with Graph() as g:
            session = await create_session(g, dest, size=len(data), defer=True)
            last = await put_all(sdk_task(g, session, data), len(data), last=False)
            assert g.puts()[-1].status == 202, g.puts()[-1]
            assert not last.next_expected_ranges, last.next_expected_ranges
            assert ft.download(dest).status_code == 404, "visible before the commit"
            item = await sdk_request(g, Method.POST, session.upload_url, DriveItem)
            commit = g.wire[-1]
            assert commit.method == "POST" and commit.status == 201, commit
            return item

    item = run(go())
    check_item(item, dest, data)
    assert ft.remote_sha256(dest) == ft.sha256(data)


@pytest.mark.parametrize("conflict", ["fail", None], ids=["fail", "default"])
def test_conflict_fail_is_409_name_already_exists_and_keeps_the_old_file(conflict):
    old, new = os.urandom(FRAG + 10), os.urandom(2 * FRAG + 20)
    dest = unique("conflict-fail")

    async def go():
        async with Graph() as g:
            await upload_small(g, dest, old)
            session = await create_session(g, dest, conflict=conflict)
            assert g.wire[-1].status == 200, "the conflict is for the end of the upload"
            await put_fragment(sdk_task(g, session, new), 0, 2 * FRAG - 1)
            return session.upload_url

    url = run(go())
    r = raw_put(url, new[2 * FRAG:], 2 * FRAG, len(new))
    graph_error(r, 409, "nameAlreadyExists")
    assert ft.remote_sha256(dest) == ft.sha256(old)


def test_conflict_replace_overwrites_the_file():
    old, new = os.urandom(FRAG + 10), os.urandom(2 * FRAG + 20)
    dest = unique("conflict-replace")

    async def go():
        async with Graph() as g:
            await upload_small(g, dest, old)
            return await upload_small(g, dest, new, conflict="replace")

    item = run(go())
    check_item(item, dest, new)
    assert ft.remote_sha256(dest) == ft.sha256(new)


def test_conflict_rename_lands_as_name_1_next_to_the_old_file():
    old, new = os.urandom(FRAG + 10), os.urandom(2 * FRAG + 20)
    dest = unique("conflict-rename")
    folder, _, base = dest.rpartition("/")
    stem, _, ext = base.rpartition(".")
    renamed = f"{folder}/{stem} (1).{ext}"

    async def go():
        async with Graph() as g:
            await upload_small(g, dest, old)
            return await upload_small(g, dest, new, conflict="rename")

    item = run(go())
    check_item(item, renamed, new)
    assert ft.remote_sha256(renamed) == ft.sha256(new)
    assert ft.remote_sha256(dest) == ft.sha256(old)


def test_sdk_cancel_deletes_the_session_then_status_is_404_item_not_found():
    data = os.urandom(3 * FRAG)
    dest = unique("cancel")

    async def go():
        async with Graph() as g:
            session = await create_session(g, dest)
            task = sdk_task(g, session, data)
            await put_fragment(task, 0, FRAG - 1)
            try:
                await task.cancel()
            except TypeError:
                # msgraph-core 1.5.2's cancel() calls kiota-http's
                # send_no_response_content_async without its error_map:
                # send the same DELETE through the adapter.
                await sdk_request(g, Method.DELETE, session.upload_url)
            delete = g.wire[-1]
            assert delete.method == "DELETE" and delete.status == 204, delete
            return session.upload_url

    url = run(go())
    graph_error(status(url), 404, "itemNotFound")
    graph_error(raw_put(url, data[FRAG:2 * FRAG], FRAG, len(data)), 404, "itemNotFound")
    assert ft.download(dest).status_code == 404


def test_upload_url_is_pre_authenticated_status_put_delete_without_authorization():
    data = os.urandom(2 * FRAG + 5)
    dest = unique("no-auth")

    async def go():
        async with Graph() as g:
            return (await create_session(g, dest)).upload_url

    url = run(go())
    j = status_ok(url)
    assert j["nextExpectedRanges"] == ["0-"], j
    j = raw_put_ok(url, data[:FRAG], 0, len(data))
    assert future(j["expirationDateTime"])
    assert ranges_of(j["nextExpectedRanges"], len(data)) == [(FRAG, len(data) - 1)], j
    assert ranges_of(status_ok(url)["nextExpectedRanges"], len(data)) == [(FRAG, len(data) - 1)]
    r = raw_put(url, data[FRAG:], FRAG, len(data))
    assert r.status_code == 201, f"last PUT: {r.status_code} {r.text!r}"
    item = parse(r.content, DriveItem)
    check_item(item, dest, data)
    assert ft.remote_sha256(dest) == ft.sha256(data)

    url2 = run(go())
    assert requests.delete(url2, timeout=ft.TIMEOUT).status_code == 204
    graph_error(status(url2), 404, "itemNotFound")


def test_fragment_already_received_is_416_invalid_range_and_changes_nothing():
    data = os.urandom(3 * FRAG)
    dest = unique("416")

    async def go():
        async with Graph() as g:
            return (await create_session(g, dest)).upload_url

    url = run(go())
    raw_put_ok(url, data[:2 * FRAG], 0, len(data))
    graph_error(raw_put(url, data[:FRAG], 0, len(data)), 416, "invalidRange")
    graph_error(raw_put(url, data[FRAG:3 * FRAG], FRAG, len(data)), 416, "invalidRange")
    assert ranges_of(status_ok(url)["nextExpectedRanges"], len(data)) == [(2 * FRAG, len(data) - 1)]
    r = raw_put(url, data[2 * FRAG:], 2 * FRAG, len(data))
    assert r.status_code == 201, r.text
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_out_of_order_fragment_leaves_two_next_expected_ranges_then_the_gap_fills():
    data = os.urandom(4 * FRAG)
    total = len(data)
    dest = unique("gap")

    async def go():
        async with Graph() as g:
            return (await create_session(g, dest)).upload_url

    url = run(go())
    raw_put_ok(url, data[:FRAG], 0, total)
    j = raw_put_ok(url, data[2 * FRAG:3 * FRAG], 2 * FRAG, total)
    assert ranges_of(j["nextExpectedRanges"], total) == [(FRAG, 2 * FRAG - 1), (3 * FRAG, total - 1)], j
    assert j["nextExpectedRanges"][0] == f"{FRAG}-{2 * FRAG - 1}"
    j = raw_put_ok(url, data[FRAG:2 * FRAG], FRAG, total)
    assert ranges_of(j["nextExpectedRanges"], total) == [(3 * FRAG, total - 1)], j
    r = raw_put(url, data[3 * FRAG:], 3 * FRAG, total)
    assert r.status_code == 201, r.text
    assert ft.remote_sha256(dest) == ft.sha256(data)


def test_wrong_token_is_401_unauthenticated_through_the_sdk():
    async def go():
        async with Graph(token="not-a-ferry-token") as g:
            with pytest.raises(ODataError) as e:
                await create_session(g, unique("bad-token"))
            return e.value

    odata(run(go()), 401, "unauthenticated")
    r = requests.post(f"{GRAPH}/me/drive/root:/graph/x.bin:/createUploadSession", timeout=ft.TIMEOUT)
    graph_error(r, 401, "unauthenticated")
    r = requests.post(
        f"{GRAPH}/me/drive/root:/graph/x.bin:/createUploadSession", headers=ft.auth("nope"), json={}, timeout=ft.TIMEOUT
    )
    graph_error(r, 401, "unauthenticated")


def _forge(url):
    """The upload URL with the last character of its signature changed: the
    query's last value when there is a query, else the path's last segment."""
    u = urlsplit(url)
    if u.query:
        q = u.query
        c = q[-1]
        return urlunsplit(u._replace(query=q[:-1] + ("A" if c != "A" else "B")))
    p = u.path
    return urlunsplit(u._replace(path=p[:-1] + ("A" if p[-1] != "A" else "B")))


def _splice(url_a, url_b):
    """url_a's session with url_b's signature: b's query on a's path, or, for
    a signature in the path, a's path with b's last segment."""
    a, b = urlsplit(url_a), urlsplit(url_b)
    if a.query and b.query:
        return urlunsplit(a._replace(query=b.query))
    head = a.path.rpartition("/")[0]
    return urlunsplit(a._replace(path=head + "/" + b.path.rpartition("/")[2]))


def test_forged_or_foreign_upload_url_signature_is_404_item_not_found():
    bob = ft.new_user("graphbob")
    data = os.urandom(FRAG)

    async def make(token, space, dest):
        async with Graph(token=token) as g:
            return (await create_session(g, dest, space=space)).upload_url

    alice_url = run(make(ft.TOKEN, ft.SPACE, unique("forge-a")))
    bob_url = run(make(bob["token"], bob["home_space"], unique("forge-b")))
    for bad in (_forge(alice_url), _splice(bob_url, alice_url), _splice(alice_url, bob_url)):
        assert bad not in (alice_url, bob_url), bad
        graph_error(status(bad), 404, "itemNotFound")
        graph_error(raw_put(bad, data, 0, len(data)), 404, "itemNotFound")
        graph_error(requests.delete(bad, timeout=ft.TIMEOUT), 404, "itemNotFound")
    # Nothing above touched the real sessions.
    assert status_ok(alice_url)["nextExpectedRanges"] == ["0-"]
    assert status_ok(bob_url)["nextExpectedRanges"] == ["0-"]


def test_another_users_drive_is_refused_with_a_graph_error():
    bob = ft.new_user("graphbob")

    async def go():
        async with Graph(token=bob["token"]) as g:
            with pytest.raises(ODataError) as e:
                await create_session(g, unique("not-bobs"), space=ft.SPACE)
            return e.value

    e = run(go())
    assert e.response_status_code in (403, 404), e.response_status_code
    assert e.error is not None and e.error.code, e.error


BAD_RANGES = {
    "missing": (False, 100),
    "no-total": ("bytes 0-99", 100),
    "not-numbers": ("bytes a-b/c", 100),
    "other-unit": ("items 0-99/1000", 100),
    "end-before-start": ("bytes 99-0/1000", 100),
    "end-past-total": ("bytes 0-99/50", 100),
}


@pytest.mark.parametrize("case", list(BAD_RANGES))
def test_bad_content_range_is_400_invalid_request(case):
    content_range, body_len = BAD_RANGES[case]

    async def go():
        async with Graph() as g:
            return (await create_session(g, unique("bad-range"))).upload_url

    url = run(go())
    r = raw_put(url, os.urandom(body_len), 0, 1000, content_range=content_range)
    if case in ("missing", "no-total", "not-numbers", "other-unit"):
        graph_error(r, 400, "invalidRequest")
    else:
        assert r.status_code in (400, 416), f"{r.status_code} {r.text!r}"
        assert_graph_error_shape(r)
    assert status_ok(url)["nextExpectedRanges"] == ["0-"], "a refused PUT wrote something"


def test_put_whose_body_is_shorter_than_its_content_range_is_400_and_stores_nothing():
    async def go():
        async with Graph() as g:
            return (await create_session(g, unique("short-body"))).upload_url

    url = run(go())
    r = raw_put(url, os.urandom(50), 0, 1000, content_range="bytes 0-99/1000")
    graph_error(r, 400, "invalidRequest")
    # A whole request was refused: none of it counts (unlike a dropped connection).
    assert status_ok(url)["nextExpectedRanges"] == ["0-"]


def test_content_range_total_changing_between_fragments_is_refused():
    data = os.urandom(2 * FRAG)

    async def go():
        async with Graph() as g:
            return (await create_session(g, unique("total-moves"))).upload_url

    url = run(go())
    raw_put_ok(url, data[:FRAG], 0, len(data))
    r = raw_put(url, data[FRAG:], FRAG, len(data) + 1)
    assert (r.status_code, r.json()["error"]["code"]) in ((400, "invalidRequest"), (416, "invalidRange")), r.text
    assert_graph_error_shape(r)
    assert ranges_of(status_ok(url)["nextExpectedRanges"], len(data)) == [(FRAG, len(data) - 1)]


def test_size_over_the_server_max_is_a_graph_4xx():
    async def create_big():
        async with Graph() as g:
            with pytest.raises(ODataError) as e:
                await create_session(g, unique("huge"), size=SERVER_MAX + 1)
            return e.value

    e = run(create_big())
    assert e.response_status_code in (400, 413, 507), e.response_status_code
    assert e.error is not None and e.error.code, e.error

    async def create():
        async with Graph() as g:
            return (await create_session(g, unique("huge-range"))).upload_url

    url = run(create())
    r = raw_put(url, os.urandom(100), 0, SERVER_MAX + 1)
    assert r.status_code in (400, 413), f"{r.status_code} {r.text!r}"
    assert_graph_error_shape(r)


@pytest.mark.parametrize("bad", ["graph/../../escape.bin", "../escape.bin"])
def test_dotdot_in_the_path_is_400_invalid_request(bad):
    async def go():
        async with Graph() as g:
            with pytest.raises(ODataError) as e:
                await create_session(g, bad)
            return e.value

    odata(run(go()), 400, "invalidRequest")


def test_malformed_body_is_400_invalid_request():
    r = requests.post(
        f"{GRAPH}/me/drive/root:/{quote(unique('bad-body'))}:/createUploadSession",
        headers={**ft.auth(), "Content-Type": "application/json"},
        data=b'{"item": ',
        timeout=ft.TIMEOUT,
    )
    graph_error(r, 400, "invalidRequest")
