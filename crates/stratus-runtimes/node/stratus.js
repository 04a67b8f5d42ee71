'use strict';
// The Stratus SDK for functions: the app's documents and files.
//
//   const { db, files } = require('stratus');
//   const todo = await db.collection('todos').add({ title: 'milk', done: false });
//   await db.collection('todos').doc(todo.id).update({ set: { done: true } });
//   const page = await db.collection('todos').where('done', '==', false)
//     .orderBy('created_at', 'desc').limit(20).get();
//   await files.put('uploads', 'notes/a.txt', 'hello');
//
// It calls the platform API (STRATUS_API_URL) with the function's own token
// (STRATUS_API_TOKEN): full access to its app's collections and buckets, no
// security rules. Connections are kept open by Node's fetch.

class StratusError extends Error {
  constructor(status, code, message) {
    super(`${message} (${code}, HTTP ${status})`);
    this.status = status;
    this.code = code;
  }
}

const segment = (text) => encodeURIComponent(String(text));

async function request(method, path, { json, raw, headers, bytes } = {}) {
  const app = process.env.STRATUS_APP;
  const sent = { authorization: `Bearer ${process.env.STRATUS_API_TOKEN}`, ...(headers || {}) };
  let body = raw;
  if (json !== undefined) {
    body = JSON.stringify(json);
    sent['content-type'] = 'application/json';
  }
  let response;
  for (let attempt = 0, delay = 50; ; attempt++, delay *= 2) {
    response = await fetch(`${process.env.STRATUS_API_URL}/v1/apps/${app}${path}`, { method, headers: sent, body });
    // The app's instances hold their share of connections: wait a little.
    if (response.status !== 429 || attempt >= 5) break;
    await response.arrayBuffer();
    await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
  }
  if (response.status >= 400) {
    const text = await response.text();
    let error;
    try { error = JSON.parse(text).error; } catch { error = null; }
    if (error) throw new StratusError(response.status, error.code || 'error', error.message || '');
    throw new StratusError(response.status, 'error', text);
  }
  if (bytes) return Buffer.from(await response.arrayBuffer());
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

class Document {
  constructor(raw) {
    this.id = raw.id;
    this.version = raw.version;
    this.data = raw.data;
    this.created_ms = raw.created_ms;
    this.updated_ms = raw.updated_ms;
  }
}

function updateBody({ set, unset, inc, push, pull, ifVersion } = {}) {
  const body = {};
  if (set) body.set = set;
  if (unset) body.unset = unset;
  if (inc) body.inc = inc;
  if (push) body.push = push;
  if (pull) body.pull = pull;
  if (ifVersion !== undefined) body.if_version = ifVersion;
  return body;
}

const versionQuery = (ifVersion) => (ifVersion === undefined ? '' : `?if_version=${Number(ifVersion)}`);

class DocumentRef {
  constructor(collection, id) {
    this.collection = collection;
    this.id = id;
  }
  get path() { return `/db/${this.collection}/${segment(this.id)}`; }
  // The document, or null when there is none.
  async get() {
    try {
      return new Document(await request('GET', this.path));
    } catch (err) {
      if (err.code === 'no_such_document') return null;
      throw err;
    }
  }
  async set(data, { ifVersion } = {}) {
    return new Document(await request('PUT', this.path + versionQuery(ifVersion), { json: data }));
  }
  async create(data) {
    const [doc] = await commit([{ op: 'create', collection: this.collection, id: this.id, data }]);
    return doc;
  }
  // `{ set: {'a.b': 1}, unset: ['c'], inc: {n: 1}, push: {tags: ['x']}, pull: {tags: ['y']}, ifVersion }`
  async update(changes) {
    return new Document(await request('PATCH', this.path, { json: updateBody(changes) }));
  }
  async delete({ ifVersion } = {}) {
    return (await request('DELETE', this.path + versionQuery(ifVersion))).deleted;
  }
}

class Query {
  constructor(collection, state = {}) {
    this.collection = collection;
    this.state = { where: [], order: [], ...state };
  }
  with(changes) { return new Query(this.collection, { ...this.state, ...changes }); }
  where(field, op, value) {
    const condition = op === undefined ? field : [field, op, value];
    return this.with({ where: [...this.state.where, condition] });
  }
  orderBy(field, direction = 'asc') { return this.with({ order: [...this.state.order, [field, direction]] }); }
  limit(n) { return this.with({ limit: n }); }
  select(...fields) { return this.with({ select: fields }); }
  after(token) { return this.with({ after: token }); }
  allowScan(allow = true) { return this.with({ allowScan: allow }); }
  body() {
    const s = this.state;
    const body = { where: s.where.length ? s.where : null, order_by: s.order.length ? s.order : null };
    if (s.limit !== undefined) body.limit = s.limit;
    if (s.select) body.select = s.select;
    if (s.after) body.after = s.after;
    if (s.allowScan) body.allow_scan = true;
    return body;
  }
  // One page: an array of Document with `.next`, the next page's token.
  async get() {
    const answer = await request('POST', `/db/${this.collection}/_query`, { json: this.body() });
    const page = answer.documents.map((d) => new Document(d));
    page.next = answer.next || null;
    return page;
  }
  // Every document the query selects, page after page.
  async *stream() {
    let query = this;
    for (;;) {
      const page = await query.get();
      yield* page;
      if (!page.next) return;
      query = query.after(page.next);
    }
  }
  async count() {
    const s = this.state;
    const answer = await request('POST', `/db/${this.collection}/_count`, {
      json: { where: s.where.length ? s.where : null, allow_scan: !!s.allowScan },
    });
    return answer.count;
  }
  // `measures: { n: 'count', total: 'sum:amount' }`
  async aggregate(measures, groupBy) {
    const s = this.state;
    const json = { where: s.where.length ? s.where : null, measures, allow_scan: !!s.allowScan };
    if (groupBy) json.group_by = groupBy;
    return (await request('POST', `/db/${this.collection}/_aggregate`, { json })).groups;
  }
}

class Collection extends Query {
  constructor(name) {
    super(name);
    this.name = name;
  }
  doc(id) { return new DocumentRef(this.name, id); }
  async add(data) { return new Document(await request('POST', `/db/${this.name}`, { json: data })); }
}

async function commit(writes) {
  const answer = await request('POST', '/db/_transaction', { json: { writes } });
  return answer.changes.map((c) => (c.document ? new Document(c.document) : null));
}

// Writes that commit together, or not at all.
class Batch {
  constructor() { this.writes = []; }
  create(collection, data, id) {
    const write = { op: 'create', collection, data };
    if (id !== undefined) write.id = id;
    this.writes.push(write);
    return this;
  }
  set(collection, id, data, { ifVersion } = {}) {
    this.writes.push({ op: 'set', collection, id, data, if_version: ifVersion ?? null });
    return this;
  }
  update(collection, id, changes = {}) {
    const { ifVersion, ...rest } = changes;
    this.writes.push({ op: 'update', collection, id, update: updateBody(rest), if_version: ifVersion ?? null });
    return this;
  }
  delete(collection, id, { ifVersion } = {}) {
    this.writes.push({ op: 'delete', collection, id, if_version: ifVersion ?? null });
    return this;
  }
  commit() { return commit(this.writes); }
}

const db = {
  collection: (name) => new Collection(name),
  batch: () => new Batch(),
  // Several documents as of one moment: [['todos', 'a'], ...] gives a Document or null each.
  async getAll(refs) {
    const answer = await request('POST', '/db/_get', { json: { refs } });
    return answer.documents.map((d) => (d ? new Document(d) : null));
  },
  async collections() { return (await request('GET', '/db')).collections; },
};

const objectPath = (bucket, key) => `/buckets/${segment(bucket)}/objects/${key.split('/').map(segment).join('/')}`;

const files = {
  async put(bucket, key, data, { contentType } = {}) {
    const headers = contentType ? { 'content-type': contentType } : {};
    await request('PUT', objectPath(bucket, key), { raw: data, headers, bytes: true });
  },
  // The object's bytes (a Buffer), or null when there is none.
  async get(bucket, key) {
    try {
      return await request('GET', objectPath(bucket, key), { bytes: true });
    } catch (err) {
      if (err.status === 404 && ['NoSuchKey', 'not_found'].includes(err.code)) return null;
      throw err;
    }
  },
  async delete(bucket, key) { await request('DELETE', objectPath(bucket, key), { bytes: true }); },
  async list(bucket, prefix = '') {
    const objects = [];
    let after = null;
    for (;;) {
      const query = `?prefix=${segment(prefix)}${after ? `&after=${segment(after)}` : ''}`;
      const answer = await request('GET', `/buckets/${segment(bucket)}/objects${query}`);
      objects.push(...answer.objects);
      if (!answer.next) return objects;
      after = answer.next;
    }
  },
  async url(bucket, key, { expires = 3600, method = 'GET' } = {}) {
    const json = { key, method, expires_secs: expires };
    return (await request('POST', `/buckets/${segment(bucket)}/presign`, { json })).url;
  },
};

// Custom sign-in: a ticket vouching for user `uid` (with `claims`, which
// rules read as `auth.claims`) that a client exchanges for a session.
const auth = {
  async ticket(uid, claims = {}, { ttl = 300 } = {}) {
    return (await request('POST', '/auth/tickets', { json: { uid, claims, ttl_secs: ttl } })).ticket;
  },
};

module.exports = { db, files, auth, StratusError, Document };
