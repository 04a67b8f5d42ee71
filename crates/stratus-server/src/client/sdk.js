// The Stratus client SDK: an ES module the platform serves on every app's
// host at /_stratus/sdk.js. No build step:
//
//   import { createClient } from './_stratus/sdk.js';
//   const app = createClient();
//   await app.auth.signInAnonymously();
//   const todos = app.db.collection('todos');
//   await todos.add({ owner: app.auth.user.uid, title: 'milk', created_at: Date.now() });
//   const stop = todos.where('owner', '==', app.auth.user.uid).orderBy('created_at')
//     .watch((docs) => render(docs), (err) => show(err));
//
// Everything is plain HTTP and JSON under /_stratus/ (mini-programs and
// mobile apps call the same), with the session's access token in
// `Authorization: Bearer`. Sessions are kept in localStorage when there is
// one, and refreshed before their access token expires.

export class StratusError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'StratusError';
    this.status = status;
    this.code = code;
  }
}

const segment = (text) => encodeURIComponent(String(text));

function storage() {
  try {
    if (typeof localStorage !== 'undefined') return localStorage;
  } catch (_) { /* storage denied */ }
  const memory = new Map();
  return { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v), removeItem: (k) => memory.delete(k) };
}

class Auth {
  constructor(client, options) {
    this.client = client;
    this.store = options.storage || storage();
    this.key = `stratus.session:${client.url}`;
    this.listeners = new Set();
    this.session = null;
    try { this.session = JSON.parse(this.store.getItem(this.key)); } catch (_) { this.session = null; }
  }
  get user() { return this.session ? this.session.user : null; }
  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  keep(answer) {
    this.session = answer && {
      access_token: answer.access_token,
      refresh_token: answer.refresh_token,
      expires_at: Date.now() + answer.expires_in * 1000,
      user: answer.user,
    };
    if (this.session) this.store.setItem(this.key, JSON.stringify(this.session));
    else this.store.removeItem(this.key);
    for (const listener of this.listeners) listener(this.user);
    this.client.reconnect();
    return this.user;
  }
  async signInAnonymously() { return this.keep(await this.client.raw('POST', '/auth/anonymous', {})); }
  async signUp(email, password) { return this.keep(await this.client.raw('POST', '/auth/signup', { email, password })); }
  async signIn(email, password) { return this.keep(await this.client.raw('POST', '/auth/signin', { email, password })); }
  // A ticket one of the app's functions minted for a user id.
  async signInWithTicket(ticket) { return this.keep(await this.client.raw('POST', '/auth/ticket', { ticket })); }
  async signOut() {
    const session = this.session;
    this.keep(null);
    if (session) await this.client.raw('POST', '/auth/signout', { refresh_token: session.refresh_token }).catch(() => {});
  }
  // The access token to send, refreshed first when it is about to expire.
  async token() {
    if (!this.session) return null;
    if (Date.now() > this.session.expires_at - 60_000) await this.refresh();
    return this.session ? this.session.access_token : null;
  }
  async refresh() {
    if (!this.session) return;
    if (!this.refreshing) {
      const refresh_token = this.session.refresh_token;
      this.refreshing = this.client.raw('POST', '/auth/refresh', { refresh_token })
        .then((answer) => { this.keep(answer); })
        .catch((err) => { if (err.status === 401) this.keep(null); else throw err; })
        .finally(() => { this.refreshing = null; });
    }
    await this.refreshing;
  }
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

const versionQuery = (ifVersion) => (ifVersion === undefined || ifVersion === null ? '' : `?if_version=${Number(ifVersion)}`);

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

class DocumentRef {
  constructor(client, collection, id) {
    this.client = client;
    this.collection = collection;
    this.id = id;
  }
  get path() { return `/db/${segment(this.collection)}/${segment(this.id)}`; }
  async get() {
    try {
      return new Document(await this.client.request('GET', this.path));
    } catch (err) {
      if (err.code === 'no_such_document') return null;
      throw err;
    }
  }
  async set(data, { ifVersion } = {}) { return new Document(await this.client.request('PUT', this.path + versionQuery(ifVersion), data)); }
  // { set, unset, inc, push, pull, ifVersion }
  async update(changes) { return new Document(await this.client.request('PATCH', this.path, updateBody(changes))); }
  async delete({ ifVersion } = {}) { return (await this.client.request('DELETE', this.path + versionQuery(ifVersion))).deleted; }
}

// The order the server sorts in, for keeping watched results in order.
function compareValues(a, b) {
  const rank = (v) => (v === null ? 0 : typeof v === 'boolean' ? 1 : typeof v === 'number' ? 2 : typeof v === 'string' ? 3 : 4);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (typeof a === 'string') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'number' || typeof a === 'boolean') return Number(a) - Number(b);
  return 0;
}

const field = (data, path) => path.split('.').reduce((v, name) => (v && typeof v === 'object' ? v[name] : undefined), data);

class Query {
  constructor(client, collection, state = {}) {
    this.client = client;
    this.collection = collection;
    this.state = { where: [], order: [], ...state };
  }
  with(changes) { return new Query(this.client, this.collection, { ...this.state, ...changes }); }
  // where('done', '==', false), or a filter as the API takes it ({or: [...]}).
  where(fieldPath, op, value) {
    const condition = op === undefined ? fieldPath : [fieldPath, op, value];
    return this.with({ where: [...this.state.where, condition] });
  }
  orderBy(fieldPath, direction = 'asc') { return this.with({ order: [...this.state.order, [fieldPath, direction]] }); }
  limit(n) { return this.with({ limit: n }); }
  select(...fields) { return this.with({ select: fields }); }
  after(token) { return this.with({ after: token }); }
  body() {
    const s = this.state;
    const body = { where: s.where.length ? s.where : null, order_by: s.order.length ? s.order : null };
    if (s.limit !== undefined) body.limit = s.limit;
    if (s.select) body.select = s.select;
    if (s.after) body.after = s.after;
    return body;
  }
  // One page: an array of Document, with `.next` (the next page's token).
  async get() {
    const answer = await this.client.request('POST', `/db/${segment(this.collection)}/_query`, this.body());
    const page = answer.documents.map((d) => new Document(d));
    page.next = answer.next || null;
    return page;
  }
  async count() {
    const s = this.state;
    return (await this.client.request('POST', `/db/${segment(this.collection)}/_count`, { where: s.where.length ? s.where : null })).count;
  }
  compare(a, b) {
    for (const [path, direction] of this.state.order) {
      const by = compareValues(field(a.data, path) ?? null, field(b.data, path) ?? null);
      if (by !== 0) return direction === 'desc' ? -by : by;
    }
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  }
  // Calls onNext(documents, change) with the query's documents now, then
  // after every change (change: {type: 'snapshot'} or {type: 'added' |
  // 'modified' | 'removed', document}); onError(err) if the server refuses.
  // Returns a function that stops watching.
  watch(onNext, onError) { return this.client.watcher().subscribe(this, onNext, onError); }
}

class Collection extends Query {
  constructor(client, name) {
    super(client, name);
    this.name = name;
  }
  doc(id) { return new DocumentRef(this.client, this.name, id); }
  async add(data) { return new Document(await this.client.request('POST', `/db/${segment(this.name)}`, data)); }
}

// Optimistic transactions: reads record versions, writes commit together
// only if the documents read are still at those versions.
class Transaction {
  constructor(client) {
    this.client = client;
    this.reads = new Map();
    this.writes = [];
  }
  async get(collection, id) {
    const doc = await new DocumentRef(this.client, collection, id).get();
    this.reads.set(`${collection}/${id}`, doc ? doc.version : 0);
    return doc;
  }
  version(collection, id) {
    const v = this.reads.get(`${collection}/${id}`);
    return v === undefined ? null : v;
  }
  create(collection, data, id) { this.writes.push({ op: 'create', collection, id, data }); return this; }
  set(collection, id, data) { this.writes.push({ op: 'set', collection, id, data, if_version: this.version(collection, id) }); return this; }
  update(collection, id, changes) { this.writes.push({ op: 'update', collection, id, update: updateBody(changes), if_version: this.version(collection, id) }); return this; }
  delete(collection, id) { this.writes.push({ op: 'delete', collection, id, if_version: this.version(collection, id) }); return this; }
}

class Watcher {
  constructor(client) {
    this.client = client;
    this.subs = new Map();
    this.next = 1;
    this.socket = null;
    this.backoff = 250;
  }
  subscribe(query, onNext, onError) {
    const id = String(this.next++);
    const sub = { query, onNext, onError, docs: new Map() };
    this.subs.set(id, sub);
    this.open();
    if (this.socket && this.socket.readyState === 1) this.send(id, sub);
    return () => {
      this.subs.delete(id);
      if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify({ op: 'unsubscribe', id }));
    };
  }
  send(id, sub) {
    this.socket.send(JSON.stringify({ op: 'subscribe', id, collection: sub.query.collection, ...sub.query.body() }));
  }
  async open() {
    if (this.socket || this.opening) return;
    this.opening = true;
    let token = null;
    try { token = await this.client.auth.token(); } catch (_) { token = null; }
    this.opening = false;
    if (this.socket || this.subs.size === 0) return;
    const url = new URL(`${this.client.url}/_stratus/watch`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (token) url.searchParams.set('access_token', token);
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = 250;
      for (const [id, sub] of this.subs) this.send(id, sub);
    };
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.subs.size === 0) return;
      setTimeout(() => this.open(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10_000);
    };
  }
  reconnect() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
    if (this.subs.size) this.open();
  }
  receive(message) {
    const sub = this.subs.get(String(message.id));
    if (!sub) return;
    if (message.type === 'error') {
      this.subs.delete(String(message.id));
      const err = new StratusError(403, message.error.code, message.error.message);
      if (sub.onError) sub.onError(err);
      return;
    }
    let change;
    if (message.type === 'snapshot') {
      sub.docs = new Map(message.documents.map((d) => [d.id, new Document(d)]));
      change = { type: 'snapshot' };
    } else {
      const doc = new Document(message.document);
      if (message.change === 'removed') sub.docs.delete(doc.id);
      else sub.docs.set(doc.id, doc);
      change = { type: message.change, document: doc };
    }
    let docs = [...sub.docs.values()].sort((a, b) => sub.query.compare(a, b));
    const limit = sub.query.state.limit;
    if (limit !== undefined && docs.length > limit) {
      for (const dropped of docs.slice(limit)) sub.docs.delete(dropped.id);
      docs = docs.slice(0, limit);
    }
    sub.onNext(docs, change);
  }
}

class Client {
  constructor(options = {}) {
    // Where this module was served from: the app's host, or its path on
    // the platform's (`/APP/_stratus/sdk.js`).
    const served = import.meta.url.replace(/\/_stratus\/sdk\.js([?#].*)?$/, '');
    this.url = (options.url || served).replace(/\/$/, '');
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.auth = new Auth(this, options);
    const client = this;
    this.db = {
      collection: (name) => new Collection(client, name),
      async getAll(refs) {
        const answer = await client.request('POST', '/db/_get', { refs });
        return answer.documents.map((d) => (d ? new Document(d) : null));
      },
      // Writes that commit together or not at all: [{op, collection, id, data | update, if_version}].
      async commit(writes) {
        const answer = await client.request('POST', '/db/_transaction', { writes });
        return answer.changes.map((c) => (c.document ? new Document(c.document) : null));
      },
      // Runs fn(tx) and commits its writes, again (up to 5 times) when a
      // document it read changed meanwhile.
      async runTransaction(fn) {
        for (let attempt = 0; ; attempt++) {
          const tx = new Transaction(client);
          const result = await fn(tx);
          try {
            if (tx.writes.length) await this.commit(tx.writes);
            return result;
          } catch (err) {
            if (err.code !== 'version_conflict' || attempt >= 4) throw err;
          }
        }
      },
    };
    this.files = {
      async upload(bucket, key, data, { contentType } = {}) {
        const headers = contentType ? { 'content-type': contentType } : {};
        await client.request('PUT', `/files/${segment(bucket)}/${key.split('/').map(segment).join('/')}`, data, { raw: true, headers });
      },
      // The file as a Blob, or null when there is none.
      async download(bucket, key) {
        try {
          return await client.request('GET', `/files/${segment(bucket)}/${key.split('/').map(segment).join('/')}`, undefined, { blob: true });
        } catch (err) {
          if (err.status === 404) return null;
          throw err;
        }
      },
      async delete(bucket, key) {
        await client.request('DELETE', `/files/${segment(bucket)}/${key.split('/').map(segment).join('/')}`, undefined, { blob: true });
      },
    };
  }
  watcher() {
    if (!this.watching) this.watching = new Watcher(this);
    return this.watching;
  }
  reconnect() { if (this.watching) this.watching.reconnect(); }
  // Calls a function that declares `callable: true`; its result.
  async call(fn, data = {}) { return this.request('POST', `/call/${segment(fn)}`, data); }
  // A request with no session.
  async raw(method, path, body) { return this.send(method, path, body, {}, null); }
  // A request with the session's token, refreshed and sent again once if
  // the server says the token expired.
  async request(method, path, body, options = {}) {
    const token = await this.auth.token();
    try {
      return await this.send(method, path, body, options, token);
    } catch (err) {
      if (err.status === 401 && err.code === 'invalid_session' && this.auth.session && /expired/.test(err.message)) {
        await this.auth.refresh();
        return this.send(method, path, body, options, await this.auth.token());
      }
      throw err;
    }
  }
  async send(method, path, body, options, token) {
    const headers = { ...(options.headers || {}) };
    if (token) headers.authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      if (options.raw) payload = body;
      else {
        payload = JSON.stringify(body);
        headers['content-type'] = 'application/json';
      }
    }
    const response = await this.fetch(`${this.url}/_stratus${path}`, { method, headers, body: payload });
    if (!response.ok) {
      const text = await response.text();
      let error = null;
      try { error = JSON.parse(text).error; } catch (_) { error = null; }
      if (!error) {
        // S3's errors (files) are XML.
        const code = /<Code>([^<]*)<\/Code>/.exec(text);
        const message = /<Message>([^<]*)<\/Message>/.exec(text);
        error = { code: code ? code[1] : 'error', message: message ? message[1] : text };
      }
      throw new StratusError(response.status, error.code || 'error', error.message || '');
    }
    if (options.blob) return response.blob();
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
}

export function createClient(options) { return new Client(options); }
export { Document };
