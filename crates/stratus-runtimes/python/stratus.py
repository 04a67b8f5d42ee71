"""The Stratus SDK for functions: the app's documents and files.

    from stratus import db, files, auth

    todo = db.collection("todos").add({"title": "milk", "done": False})
    db.collection("todos").doc(todo.id).update(set={"done": True})
    page = db.collection("todos").where("done", "==", False).order_by("created_at", "desc").limit(20).get()
    files.put("uploads", "notes/a.txt", b"hello")

It calls the platform API (STRATUS_API_URL) with the function's own token
(STRATUS_API_TOKEN): full access to its app's collections and buckets, no
security rules. Only the standard library is used; connections are kept
open, one per thread.
"""

import json
import os
import random
import threading
import time
import urllib.parse
import http.client

__all__ = ["db", "files", "auth", "StratusError", "Document", "Page"]


class StratusError(Exception):
    """An answer the platform API gave instead of what was asked:
    `status` (HTTP), `code` (stable, such as `version_conflict`) and the
    message, which says what to do."""

    def __init__(self, status, code, message):
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


_local = threading.local()
# Tries of one request the platform API refuses for too many connections.
_ATTEMPTS = 6


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is None:
        url = urllib.parse.urlsplit(os.environ["STRATUS_API_URL"])
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname, url.port, timeout=60)
        _local.conn = conn
    return conn


def _request(method, path, body=None, raw=None, headers=None, want_bytes=False):
    """Sends one request to the app's part of the platform API; answers
    its JSON (or bytes), None for a 404 when `want_bytes` is None."""
    app = os.environ["STRATUS_APP"]
    target = urllib.parse.quote(f"/v1/apps/{app}{path}", safe="/?&=%")
    sent = {"Authorization": "Bearer " + os.environ["STRATUS_API_TOKEN"]}
    if headers:
        sent.update(headers)
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    delay = 0.05
    for attempt in range(_ATTEMPTS):
        conn = _connection()
        try:
            conn.request(method, target, body=data, headers=sent)
            response = conn.getresponse()
            payload = response.read()
        except (ConnectionError, http.client.HTTPException, OSError):
            # A kept connection the server closed: again on a new one.
            conn.close()
            _local.conn = None
            if attempt >= 1:
                raise
            continue
        if response.status == 429 and attempt + 1 < _ATTEMPTS:
            # The app's instances hold their share of connections: this
            # one gives its own back and waits a little.
            conn.close()
            _local.conn = None
            time.sleep(delay * (0.5 + random.random()))
            delay *= 2
            continue
        break
    if response.status >= 400:
        try:
            error = json.loads(payload)["error"]
            raise StratusError(response.status, error.get("code", "error"), error.get("message", ""))
        except (ValueError, KeyError, TypeError):
            raise StratusError(response.status, "error", payload.decode(errors="replace")) from None
    if want_bytes:
        return payload, response
    return json.loads(payload) if payload else None


def _segment(text):
    return urllib.parse.quote(str(text), safe="")


class Document:
    """A stored document: `id`, `version`, `data` (its fields),
    `created_ms` and `updated_ms`; `doc["field"]` reads a field."""

    __slots__ = ("id", "version", "data", "created_ms", "updated_ms")

    def __init__(self, raw):
        self.id = raw["id"]
        self.version = raw["version"]
        self.data = raw["data"]
        self.created_ms = raw.get("created_ms")
        self.updated_ms = raw.get("updated_ms")

    def __getitem__(self, field):
        return self.data[field]

    def get(self, field, default=None):
        return self.data.get(field, default)

    def __repr__(self):
        return f"Document(id={self.id!r}, version={self.version}, data={self.data!r})"

    def __eq__(self, other):
        return isinstance(other, Document) and (self.id, self.version, self.data) == (other.id, other.version, other.data)


class Page(list):
    """One page of a query's documents; `next` is the token of the next
    page (None on the last)."""

    def __init__(self, documents, next_token):
        super().__init__(documents)
        self.next = next_token


def _update(set=None, unset=None, inc=None, push=None, pull=None):
    update = {}
    for name, value in (("set", set), ("unset", unset), ("inc", inc), ("push", push), ("pull", pull)):
        if value:
            update[name] = list(value) if name == "unset" else value
    return update


class DocumentRef:
    def __init__(self, collection, id):
        self.collection = collection
        self.id = id

    def _path(self):
        return f"/db/{self.collection}/{_segment(self.id)}"

    def get(self):
        """The document, or None when there is none."""
        try:
            return Document(_request("GET", self._path()))
        except StratusError as err:
            if err.code == "no_such_document":
                return None
            raise

    def set(self, data, if_version=None):
        """Creates or replaces the document; with `if_version`, only if it
        is at that version (0: only if it is new)."""
        query = "" if if_version is None else f"?if_version={int(if_version)}"
        return Document(_request("PUT", self._path() + query, body=data))

    def create(self, data):
        """Creates the document; StratusError `document_exists` if it is there."""
        return _commit([{"op": "create", "collection": self.collection, "id": self.id, "data": data}])[0]

    def update(self, set=None, unset=None, inc=None, push=None, pull=None, if_version=None):
        """Changes fields: `set={"a.b": 1}`, `unset=["c"]`, `inc={"n": 1}`,
        `push={"tags": ["x"]}`, `pull={"tags": ["y"]}`."""
        body = _update(set, unset, inc, push, pull)
        if if_version is not None:
            body["if_version"] = int(if_version)
        return Document(_request("PATCH", self._path(), body=body))

    def delete(self, if_version=None):
        """Deletes the document; whether it was there."""
        query = "" if if_version is None else f"?if_version={int(if_version)}"
        return _request("DELETE", self._path() + query)["deleted"]


class Query:
    def __init__(self, collection, where=(), order=(), limit=None, select=None, after=None, allow_scan=False):
        self.collection = collection
        self._where = list(where)
        self._order = list(order)
        self._limit = limit
        self._select = select
        self._after = after
        self._allow_scan = allow_scan

    def _with(self, **changes):
        fields = dict(
            where=self._where, order=self._order, limit=self._limit, select=self._select,
            after=self._after, allow_scan=self._allow_scan,
        )
        fields.update(changes)
        return Query(self.collection, **fields)

    def where(self, field, op=None, value=None):
        """Adds a condition: `where("done", "==", False)`, or a filter as
        the API takes it (`{"or": [...]}`)."""
        condition = field if op is None else [field, op, value]
        return self._with(where=self._where + [condition])

    def order_by(self, field, direction="asc"):
        return self._with(order=self._order + [[field, direction]])

    def limit(self, n):
        return self._with(limit=n)

    def select(self, *fields):
        return self._with(select=list(fields))

    def after(self, token):
        return self._with(after=token)

    def allow_scan(self, allow=True):
        return self._with(allow_scan=allow)

    def _body(self):
        body = {"where": self._where or None, "order_by": self._order or None}
        if self._limit is not None:
            body["limit"] = self._limit
        if self._select is not None:
            body["select"] = self._select
        if self._after is not None:
            body["after"] = self._after
        if self._allow_scan:
            body["allow_scan"] = True
        return body

    def get(self):
        """One page (a list of Document with `.next`)."""
        answer = _request("POST", f"/db/{self.collection}/_query", body=self._body())
        return Page([Document(d) for d in answer["documents"]], answer.get("next"))

    def stream(self):
        """Every document the query selects, page after page."""
        query = self
        while True:
            page = query.get()
            yield from page
            if not page.next:
                return
            query = query.after(page.next)

    def count(self):
        body = {"where": self._where or None, "allow_scan": self._allow_scan}
        return _request("POST", f"/db/{self.collection}/_count", body=body)["count"]

    def aggregate(self, measures, group_by=None):
        """`measures={"n": "count", "total": "sum:amount"}`; a list of
        groups, each with `key` (when grouped) and the measures."""
        body = {"where": self._where or None, "measures": measures, "allow_scan": self._allow_scan}
        if group_by:
            body["group_by"] = group_by
        return _request("POST", f"/db/{self.collection}/_aggregate", body=body)["groups"]


class Collection(Query):
    def __init__(self, name):
        super().__init__(name)
        self.name = name

    def doc(self, id):
        return DocumentRef(self.name, id)

    def add(self, data):
        """Creates a document with a new id."""
        return Document(_request("POST", f"/db/{self.name}", body=data))


def _commit(writes, triggers=True):
    answer = _request("POST", "/db/_transaction" + ("" if triggers else "?triggers=false"), body={"writes": writes})
    return [Document(c["document"]) if "document" in c else None for c in answer["changes"]]


class Batch:
    """Writes that commit together, or not at all:

        with db.batch() as b:
            b.update("accounts", "a", inc={"balance": -5}, if_version=3)
            b.update("accounts", "b", inc={"balance": 5})
    """

    def __init__(self):
        self.writes = []
        self.result = None

    def create(self, collection, data, id=None):
        write = {"op": "create", "collection": collection, "data": data}
        if id is not None:
            write["id"] = id
        self.writes.append(write)
        return self

    def set(self, collection, id, data, if_version=None):
        self.writes.append({"op": "set", "collection": collection, "id": id, "data": data, "if_version": if_version})
        return self

    def update(self, collection, id, set=None, unset=None, inc=None, push=None, pull=None, if_version=None):
        update = _update(set, unset, inc, push, pull)
        self.writes.append({"op": "update", "collection": collection, "id": id, "update": update, "if_version": if_version})
        return self

    def delete(self, collection, id, if_version=None):
        self.writes.append({"op": "delete", "collection": collection, "id": id, "if_version": if_version})
        return self

    def commit(self):
        self.result = _commit(self.writes)
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.commit()
        return False


class _Db:
    def collection(self, name):
        return Collection(name)

    def batch(self):
        return Batch()

    def get_all(self, refs):
        """Several documents, as of one moment: `[("todos", "a"), ...]`
        gives a Document or None for each."""
        answer = _request("POST", "/db/_get", body={"refs": [list(r) for r in refs]})
        return [Document(d) if d else None for d in answer["documents"]]

    def collections(self):
        return _request("GET", "/db")["collections"]


class _Files:
    """The app's buckets (by their names in the manifest)."""

    def _path(self, bucket, key):
        return f"/buckets/{_segment(bucket)}/objects/" + "/".join(_segment(p) for p in key.split("/"))

    def put(self, bucket, key, data, content_type=None):
        if isinstance(data, str):
            data = data.encode()
        headers = {"Content-Type": content_type} if content_type else {}
        _request("PUT", self._path(bucket, key), raw=data, headers=headers, want_bytes=True)

    def get(self, bucket, key):
        """The object's bytes, or None when there is none."""
        try:
            payload, _ = _request("GET", self._path(bucket, key), want_bytes=True)
            return payload
        except StratusError as err:
            if err.status == 404 and err.code in ("NoSuchKey", "no_such_key", "not_found"):
                return None
            raise

    def delete(self, bucket, key):
        _request("DELETE", self._path(bucket, key), want_bytes=True)

    def list(self, bucket, prefix=""):
        """Every object under `prefix`: dicts of key, size, etag, modified_ms."""
        objects, after = [], None
        while True:
            query = "?prefix=" + _segment(prefix) + ("&after=" + _segment(after) if after else "")
            answer = _request("GET", f"/buckets/{_segment(bucket)}/objects" + query)
            objects.extend(answer["objects"])
            after = answer.get("next")
            if not after:
                return objects

    def url(self, bucket, key, expires=3600, method="GET"):
        """A URL that reads (or, with method="PUT", writes) the object with
        no credential until it expires."""
        body = {"key": key, "method": method, "expires_secs": int(expires)}
        return _request("POST", f"/buckets/{_segment(bucket)}/presign", body=body)["url"]


class _Auth:
    """Custom sign-in: the app vouches for its own users."""

    def ticket(self, uid, claims=None, ttl=300):
        """A ticket for user `uid` (with `claims`, a dict rules read as
        `auth.claims`), which a client exchanges for a session within
        `ttl` seconds (`signInWithTicket` in the client SDK)."""
        body = {"uid": uid, "claims": claims or {}, "ttl_secs": int(ttl)}
        return _request("POST", "/auth/tickets", body=body)["ticket"]


db = _Db()
files = _Files()
auth = _Auth()
