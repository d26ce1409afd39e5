// keel's web console: one page, no framework, no build step.
//
// Everything the page shows comes from keel's HTTP API with the token the
// person typed in (kept in sessionStorage, sent only as an Authorization
// header). Model text, tool results and skill errors are attacker-
// controlled, so the page is built from elements and text nodes only:
// nothing here assigns HTML from a string (the server's CSP makes any such
// assignment throw, through Trusted Types). The markdown renderer below
// creates elements for the few constructs it knows and puts every piece of
// text in a text node.
//
// Streams (`/v1/events`, `/v1/runs/{id}/events`) are read with fetch and a
// ReadableStream, because EventSource cannot send the token; the parser
// follows the SSE spec (id/event/data, comments, CR/LF/CRLF) and a stream
// that breaks reconnects with Last-Event-ID, with a growing delay, so the
// console picks up where it was after keel restarts.

'use strict';

const TOKEN_KEY = 'keel.token';
/** The session open last, to come back to after a reload. */
const SESSION_KEY = 'keel.session';
/** Longest SSE line or event kept; a stream past this is broken off. */
const MAX_SSE_BUFFER = 4 * 1024 * 1024;
/** Longest text the markdown renderer parses; longer text shows as is. */
const MAX_MARKDOWN = 200_000;
/** Deepest nesting of markdown blocks and inline spans. */
const MAX_DEPTH = 8;
/** Reconnect delays grow from the first to the last, then stay. */
const BACKOFF_MS = [300, 700, 1500, 3000, 5000];
/** Run event streams open at once (see nextRun). */
const MAX_RUN_STREAMS = 3;
/** Entries kept in the skills page's live feed. */
const MAX_ACTIVITY = 50;

const $ = (sel, root = document) => root.querySelector(sel);

// ---------------------------------------------------------------------------
// DOM helpers: the only way this file makes elements.

/**
 * `h('a', {class: 'x', onclick: f}, 'text', child)`: an element with
 * attributes (fixed names from this file), listeners, and children (strings
 * become text nodes).
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'href') throw new Error('links are made by link() only');
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A link to an http(s) URL, or null for anything else. */
function link(url, ...children) {
  const href = safeUrl(url);
  if (!href) return null;
  const a = document.createElement('a');
  a.href = href;
  a.target = '_blank';
  a.rel = 'noopener noreferrer';
  append(a, children.length ? children : [href]);
  return a;
}

/** The URL if it is absolute http or https; null otherwise. */
function safeUrl(raw) {
  let u;
  try {
    u = new URL(String(raw).trim());
  } catch {
    return null;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
}

function clear(el) {
  el.replaceChildren();
  return el;
}

function json(v) {
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

function timeText(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

function toast(message, kind = 'error') {
  const el = h('div', {
    class: `toast toast-${kind}`,
    role: kind === 'error' ? 'alert' : 'status',
    title: 'click to dismiss',
    onclick: () => el.remove(),
  }, message);
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 9000 : 5000);
}

// ---------------------------------------------------------------------------
// Markdown: a small, safe subset. Blocks: fenced code, headings, lists
// (nested by indentation), block quotes, rules, paragraphs. Inline: code,
// bold, italic, strike-through, links (http and https only) and bare URLs.
// Every search for a closing delimiter is bounded or remembered, so hostile
// text cannot make rendering quadratic.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+.#-]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$/;
const RULE = /^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;

function renderMarkdown(src, depth = 0) {
  const frag = document.createDocumentFragment();
  const text = String(src ?? '');
  if (text.length > MAX_MARKDOWN || depth > MAX_DEPTH) {
    frag.append(h('p', { class: 'plain' }, text));
    return frag;
  }
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  const startsBlock = (l) =>
    FENCE.test(l) || HEADING.test(l) || RULE.test(l) || QUOTE.test(l) || ITEM.test(l);
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length) {
        const t = lines[i].trim();
        if (t.length >= fence.length && t === fence[0].repeat(t.length)) {
          i++;
          break;
        }
        body.push(lines[i]);
        i++;
      }
      const code = h('code', {}, body.join('\n'));
      frag.append(h('pre', { class: 'code', dataset: m[2] ? { lang: m[2] } : undefined }, code));
    } else if ((m = HEADING.exec(line))) {
      const level = Math.min(6, m[1].length + 2);
      frag.append(inline(h(`h${level}`), m[2], depth));
      i++;
    } else if (RULE.test(line)) {
      frag.append(h('hr'));
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      const q = h('blockquote');
      q.append(renderMarkdown(inner.join('\n'), depth + 1));
      frag.append(q);
    } else if ((m = ITEM.exec(line))) {
      i = list(lines, i, frag, depth);
    } else {
      const para = [line.trim()];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
        para.push(lines[i].trim());
        i++;
      }
      const p = h('p');
      para.forEach((l, k) => {
        if (k) p.append(h('br'));
        inline(p, l, depth);
      });
      frag.append(p);
    }
  }
  return frag;
}

/** A list starting at `lines[i]`; returns the index after it. */
function list(lines, i, out, depth) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const el = h(ordered ? 'ol' : 'ul');
  if (ordered) {
    const start = parseInt(first[2], 10);
    if (start !== 1 && Number.isFinite(start)) el.setAttribute('start', String(start));
  }
  let tight = true;
  const items = [];
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered) break;
    // The item's own lines: its first, then lines indented past its marker
    // (nested lists, continuations), blank lines inside included.
    const indent = m[1].length + m[2].length + 1;
    const body = [m[3]];
    i++;
    while (i < lines.length) {
      const l = lines[i];
      if (!l.trim()) {
        const next = lines[i + 1];
        if (next !== undefined && next.trim() && leading(next) >= indent) {
          body.push('');
          tight = false;
          i++;
          continue;
        }
        break;
      }
      if (leading(l) >= Math.min(indent, 2)) {
        body.push(l.slice(Math.min(leading(l), indent)));
        i++;
        continue;
      }
      // A lazy continuation of the item's paragraph.
      if (!ITEM.exec(l) && !FENCE.test(l) && !HEADING.test(l) && !QUOTE.test(l) && !RULE.test(l)) {
        body.push(l.trim());
        i++;
        continue;
      }
      break;
    }
    items.push(body);
    // A blank line between items makes a loose list; the list goes on if
    // another item of the same kind follows.
    if (i < lines.length - 1 && !lines[i].trim()) {
      const n = ITEM.exec(lines[i + 1]);
      if (n && /\d/.test(n[2]) === ordered) {
        tight = false;
        i++;
      }
    }
  }
  for (const body of items) {
    const li = h('li');
    const rendered = renderMarkdown(body.join('\n'), depth + 1);
    // A tight item's single paragraph is its text, not a <p>.
    if (tight && rendered.firstChild && rendered.firstChild.nodeName === 'P') {
      const p = rendered.firstChild;
      rendered.removeChild(p);
      li.append(...p.childNodes);
    }
    li.append(rendered);
    el.append(li);
  }
  out.append(el);
  return i;
}

function leading(l) {
  return l.length - l.trimStart().length;
}

const PUNCT = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';
/** How far a link's label and URL may reach. */
const LINK_REACH = 2000;

/**
 * A search for closing delimiters over one text. Each delimiter has one
 * test of where it may close, so the answer for a position holds for every
 * position up to it: the outer scan only moves forward, and the text is
 * read about once per delimiter however hostile it is.
 */
function closers(text) {
  const memo = new Map();
  return (delim, from, ok) => {
    const m = memo.get(delim);
    if (m && m.from <= from && (m.j < 0 || m.j >= from)) return m.j;
    let j = text.indexOf(delim, from);
    while (j >= 0 && !ok(j)) j = text.indexOf(delim, j + 1);
    memo.set(delim, { from, j });
    return j;
  };
}

const WORD = /[\p{L}\p{N}]/u;
const SPACE = /\s/;

/** Appends `text`'s inline markdown to `el`; returns `el`. */
function inline(el, text, depth) {
  if (depth > MAX_DEPTH) {
    el.append(text);
    return el;
  }
  const find = closers(text);
  let plain = '';
  const flush = () => {
    if (plain) el.append(plain);
    plain = '';
  };
  const runAt = (k, c) => {
    let n = 0;
    while (text[k + n] === c) n++;
    return n;
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length && PUNCT.includes(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      const n = runAt(i, '`');
      const ticks = '`'.repeat(n);
      // The closer is a run of exactly n backticks.
      const j = find(ticks, i + n, (k) => text[k - 1] !== '`' && text[k + n] !== '`');
      if (j >= 0) {
        flush();
        let code = text.slice(i + n, j);
        if (code.length > 2 && code.startsWith(' ') && code.endsWith(' ')) code = code.slice(1, -1);
        el.append(h('code', {}, code));
        i = j + n;
      } else {
        plain += ticks;
        i += n;
      }
      continue;
    }
    if (c === '*' || c === '_' || c === '~') {
      const n = runAt(i, c);
      // `*a*`, `**a**`, `~~a~~`; longer runs (`***`, a line of stars) are
      // text, and so is `_` inside a word (snake_case).
      const usable = (c === '~' ? n === 2 : n <= 2)
        && text[i + n] !== undefined && !SPACE.test(text[i + n])
        && !(c === '_' && WORD.test(text[i - 1] ?? ''));
      if (usable) {
        const delim = c.repeat(n);
        const j = find(delim, i + n + 1, (k) =>
          text[k - 1] !== c && text[k + n] !== c && !SPACE.test(text[k - 1])
          && !(c === '_' && WORD.test(text[k + n] ?? '')));
        if (j >= 0) {
          flush();
          const tag = c === '~' ? 'del' : n === 2 ? 'strong' : 'em';
          el.append(inline(h(tag), text.slice(i + n, j), depth + 1));
          i = j + n;
          continue;
        }
      }
      plain += c.repeat(n);
      i += n;
      continue;
    }
    if (c === '[') {
      const end = find(']', i + 1, () => true);
      if (end > 0 && end - i < LINK_REACH && text[end + 1] === '(') {
        const close = find(')', end + 2, () => true);
        if (close > 0 && close - end < LINK_REACH) {
          const label = text.slice(i + 1, end);
          const url = text.slice(end + 2, close).trim().split(/\s+/)[0] ?? '';
          const a = link(url);
          if (a) {
            a.replaceChildren();
            inline(a, label || url, depth + 1);
            flush();
            el.append(a);
            i = close + 1;
            continue;
          }
        }
      }
      plain += c;
      i++;
      continue;
    }
    if ((c === 'h' || c === 'H') && /^https?:\/\//i.test(text.slice(i, i + 8)) && !WORD.test(text[i - 1] ?? '')) {
      const m = /^https?:\/\/[^\s<>"'`]+/i.exec(text.slice(i, i + LINK_REACH));
      let url = m ? m[0] : '';
      // Trailing punctuation ends the sentence, not the URL.
      while (url && /[.,;:!?)\]]$/.test(url)) url = url.slice(0, -1);
      const a = url && link(url, url);
      if (a) {
        flush();
        el.append(a);
        i += url.length;
        continue;
      }
    }
    plain += c;
    i++;
  }
  flush();
  return el;
}

// ---------------------------------------------------------------------------
// The API.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const auth = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
};

function headers(extra) {
  return { Authorization: `Bearer ${auth.token}`, ...extra };
}

/** A JSON request; throws ApiError with the server's message. */
async function api(method, path, body, { signal, token } = {}) {
  const init = {
    method,
    headers: token !== undefined ? { Authorization: `Bearer ${token}` } : headers(),
    cache: 'no-store',
    signal,
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `cannot reach keel (${e.message}); is \`keel serve\` running?`);
  }
  const text = await r.text().catch(() => '');
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const err = data && data.error;
    const e = new ApiError(
      r.status,
      (err && err.code) || `http_${r.status}`,
      (err && err.message) || `${method} ${path} answered HTTP ${r.status}`,
    );
    if (r.status === 401 && token === undefined) signedOut('keel refused the token (was it rotated?). Sign in again.');
    throw e;
  }
  return data;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

/**
 * Parses a `text/event-stream` body, calling `onEvent({id, event, data})`
 * for each event and `onId(id)` whenever the last event id changes.
 * Resolves when the body ends.
 */
async function readSse(body, onEvent, onId) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data = [];
  const line = (l) => {
    if (l === '') {
      if (data.length) onEvent({ event: event || 'message', data: data.join('\n') });
      event = '';
      data = [];
      return;
    }
    if (l[0] === ':') return; // a comment: keep-alive
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) onId(value);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let start = 0;
      for (let k = 0; k < buf.length; k++) {
        const ch = buf[k];
        if (ch !== '\n' && ch !== '\r') continue;
        // A CR at the very end may be half of a CRLF: wait for more.
        if (ch === '\r' && k === buf.length - 1) break;
        line(buf.slice(start, k));
        if (ch === '\r' && buf[k + 1] === '\n') k++;
        start = k + 1;
      }
      buf = buf.slice(start);
      if (buf.length > MAX_SSE_BUFFER) throw new Error('an event stream line is too long');
    }
  } finally {
    reader.releaseLock?.();
  }
}

/**
 * An event stream that reconnects: after an error or an end it waits
 * (BACKOFF_MS) and opens it again with Last-Event-ID, until `close()` or
 * until `opts.isDone()` says nothing more will come.
 */
class EventStream {
  constructor(path, opts) {
    this.path = path;
    this.opts = opts;
    this.lastId = opts.lastId || '';
    this.ctrl = new AbortController();
    this.closed = false;
    this.run();
  }

  close() {
    this.closed = true;
    this.ctrl.abort();
  }

  async run() {
    let attempt = 0;
    const { onEvent, onState = () => {}, isDone = () => false } = this.opts;
    while (!this.closed) {
      let failure = null;
      try {
        const extra = this.lastId ? { 'Last-Event-ID': this.lastId } : {};
        const r = await fetch(this.path, {
          headers: headers({ Accept: 'text/event-stream', ...extra }),
          cache: 'no-store',
          signal: this.ctrl.signal,
        });
        if (r.status === 401) {
          signedOut('keel refused the token (was it rotated?). Sign in again.');
          return;
        }
        if (r.status === 404) {
          const body = await r.json().catch(() => null);
          onState('gone', body?.error?.message || `${this.path}: not found`);
          return;
        }
        if (!r.ok || !r.body) {
          const body = await r.json().catch(() => null);
          throw new Error(body?.error?.message || `HTTP ${r.status}`);
        }
        attempt = 0;
        onState('open');
        await readSse(r.body, (e) => {
          let data = e.data;
          try {
            data = JSON.parse(e.data);
          } catch {
            // Not JSON: handed on as text.
          }
          onEvent(e.event, data, this.lastId);
        }, (id) => {
          this.lastId = id;
        });
      } catch (e) {
        if (this.closed || e.name === 'AbortError') return;
        failure = e;
      }
      if (this.closed || isDone()) return;
      const wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
      attempt++;
      onState('reconnecting', failure ? failure.message : 'the stream ended');
      await pause(wait + Math.floor(Math.random() * 200), this.ctrl.signal);
    }
  }
}

// ---------------------------------------------------------------------------
// State and sign-in.

const state = {
  view: 'chat',
  sessions: [],
  sessionId: null,
  approvals: [],
  skills: null,
  tools: null,
  /** Run views of the shown session, by run id. */
  runs: new Map(),
  /** Runs waiting for a stream of their own, oldest first. */
  runQueue: [],
  /** Approval cards in the chat, by approval id: functions to mark them. */
  approvalCards: new Map(),
  ops: null,
  opsConnected: false,
  everConnected: false,
  replayUntil: 0,
  /** Failures in the last skills listing (null before the first). */
  failureKeys: null,
  newChat: false,
  sending: false,
  activity: [],
};

function signedOut(message) {
  auth.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SESSION_KEY);
  state.ops?.close();
  state.ops = null;
  state.runQueue = [];
  for (const r of [...state.runs.values()]) r.close();
  state.runs.clear();
  state.failureKeys = null;
  $('#app').hidden = true;
  $('#login').hidden = false;
  const err = $('#login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('#token').value = '';
  $('#token').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const err = $('#login-error');
  const token = $('#token').value.trim();
  if (!token) {
    err.textContent = 'Paste the token first: `keel token` prints it.';
    err.hidden = false;
    return;
  }
  const button = $('#login-button');
  button.disabled = true;
  try {
    await api('GET', '/v1/sessions', undefined, { token });
  } catch (e) {
    err.textContent =
      e.status === 401
        ? 'That token is not right. `keel token` prints the current one (on the machine keel runs on).'
        : e.message;
    err.hidden = false;
    button.disabled = false;
    return;
  }
  button.disabled = false;
  err.hidden = true;
  auth.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
}

function start() {
  $('#login').hidden = true;
  $('#app').hidden = false;
  connectOperatorStream();
  refreshSessions();
  refreshApprovals();
  refreshSkills();
  route();
}

// ---------------------------------------------------------------------------
// Navigation: #/chat, #/chat/SESSION, #/skills, #/tools, #/audit. (The
// fragment is never sent to the server.)

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const view = ['chat', 'skills', 'tools', 'audit'].includes(parts[0]) ? parts[0] : 'chat';
  state.view = view;
  for (const v of ['chat', 'skills', 'tools', 'audit']) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('.tabs a')) a.classList.toggle('active', a.dataset.view === view);
  if (view === 'chat') {
    let id = parts[1] ? decodeURIComponent(parts[1]) : null;
    // Back to Chat from another page: the session that was open.
    const last = state.sessionId || sessionStorage.getItem(SESSION_KEY);
    if (!id && !state.newChat && last) {
      id = last;
      history.replaceState(null, '', `#/chat/${encodeURIComponent(id)}`);
    }
    state.newChat = false;
    if (id !== state.sessionId || !$('#transcript').children.length) openSession(id);
    $('#input').focus();
  } else if (view === 'skills') {
    refreshSkills();
  } else if (view === 'tools') {
    refreshTools();
  } else if (view === 'audit') {
    refreshAudit();
  }
}

// ---------------------------------------------------------------------------
// The operator stream: live skills, approvals, runs.

function setConn(s, detail) {
  const el = $('#conn');
  el.dataset.state = s;
  $('#conn-text').textContent =
    s === 'open' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : s === 'gone' ? 'offline' : 'connecting…';
  el.title = detail || '';
}

function connectOperatorStream() {
  state.ops?.close();
  state.ops = new EventStream('/v1/events', {
    onState: (s, detail) => {
      const wasDown = !state.opsConnected;
      state.opsConnected = s === 'open';
      setConn(s, detail);
      // Back after a restart or an outage: what we show may be stale.
      if (s === 'open' && wasDown && state.everConnected) {
        refreshSessions();
        refreshApprovals();
        refreshSkills();
        if (state.view === 'tools') refreshTools();
        if (state.view === 'audit') refreshAudit();
      }
      if (s === 'open') {
        state.everConnected = true;
        // What the server replays at once on connecting is history.
        state.replayUntil = performance.now() + 500;
      }
    },
    onEvent: operatorEvent,
  });
}

let skillsTimer = null;
function operatorEvent(name, data) {
  if (name.startsWith('skill.') || name.startsWith('config.')) {
    addActivity(name, data);
    // A reload sends an event per skill: one listing for them all.
    if (!skillsTimer) {
      skillsTimer = setTimeout(() => {
        skillsTimer = null;
        refreshSkills();
      }, 100);
    }
    // Skill failures are toasted from the listing (renderSkills), which
    // knows whether they still stand; a config failure only from the live
    // part of the stream, not from the history replayed on connecting.
    if (name === 'config.failed' && performance.now() > state.replayUntil) {
      toast(`keel.toml was not applied — ${data.error || ''}`);
    }
  } else if (name.startsWith('approval.')) {
    refreshApprovals();
    if (name === 'approval.answered') markApproval(data.id, data.answer);
  } else if (name === 'run.started' || name === 'run.finished') {
    refreshSessionsSoon();
    if (state.view === 'audit' && name === 'run.finished') refreshAudit();
  }
}

function addActivity(name, data) {
  let text;
  if (name === 'skill.loaded') text = `${data.skill} loaded`;
  else if (name === 'skill.unloaded') text = `${data.skill} unloaded`;
  else if (name === 'skill.failed') {
    const where = data.file ? `${shortPath(data.file)}${data.line ? `:${data.line}` : ''}` : shortPath(data.origin || '');
    text = `${where}: ${data.message || data.error}${data.kept ? ` (still serving ${data.kept})` : ''}`;
  } else if (name === 'config.reloaded') text = `keel.toml applied${data.summary ? `: ${typeof data.summary === 'string' ? data.summary : json(data.summary)}` : ''}`;
  else if (name === 'config.failed') text = `keel.toml not applied: ${data.error}`;
  else text = json(data);
  state.activity.unshift({ at: Date.now(), name, text });
  state.activity.length = Math.min(state.activity.length, MAX_ACTIVITY);
  renderActivity();
}

function renderActivity() {
  const ul = clear($('#activity'));
  if (!state.activity.length) {
    ul.append(h('li', { class: 'muted' }, 'Edits to skills and keel.toml show here as keel picks them up.'));
    return;
  }
  for (const a of state.activity) {
    const bad = a.name.endsWith('.failed');
    ul.append(h('li', { class: bad ? 'bad' : '' }, h('time', {}, timeText(a.at)), h('span', { class: 'event-name' }, a.name), h('span', {}, a.text)));
  }
}

// ---------------------------------------------------------------------------
// Sessions.

// At most one refresh waits at a time, and it is not put off by later
// events (a busy stream would otherwise postpone it for ever).
let sessionsTimer = null;
function refreshSessionsSoon() {
  if (sessionsTimer) return;
  sessionsTimer = setTimeout(() => {
    sessionsTimer = null;
    refreshSessions();
  }, 150);
}

async function refreshSessions() {
  try {
    const r = await api('GET', '/v1/sessions');
    state.sessions = r.sessions || [];
  } catch (e) {
    if (e.status !== 401) toast(`cannot list sessions: ${e.message}`);
    return;
  }
  renderSessions();
}

function renderSessions() {
  const ul = clear($('#session-list'));
  if (!state.sessions.length) {
    ul.append(h('li', { class: 'muted empty' }, 'No conversations yet.'));
  }
  for (const s of state.sessions) {
    const active = s.id === state.sessionId;
    const li = h(
      'li',
      { class: active ? 'active' : '', dataset: { session: s.id } },
      h(
        'button',
        { type: 'button', class: 'session', onclick: () => { location.hash = `#/chat/${encodeURIComponent(s.id)}`; } },
        h('span', { class: 'title' }, s.title || 'untitled'),
        h('span', { class: 'meta' }, timeText(s.last_active_ms), s.last_state ? h('span', { class: `chip chip-${s.last_state}` }, s.last_state) : null),
      ),
    );
    ul.append(li);
  }
}

async function openSession(id) {
  state.runQueue = [];
  for (const r of [...state.runs.values()]) r.close();
  state.runs.clear();
  state.approvalCards.clear();
  state.sessionId = id;
  if (id) sessionStorage.setItem(SESSION_KEY, id);
  else sessionStorage.removeItem(SESSION_KEY);
  renderSessions();
  const t = clear($('#transcript'));
  if (!id) {
    t.append(emptyChat());
    return;
  }
  t.append(h('p', { class: 'muted center' }, 'Loading…'));
  let session;
  let messages;
  try {
    [session, messages] = await Promise.all([
      api('GET', `/v1/sessions/${encodeURIComponent(id)}`),
      api('GET', `/v1/sessions/${encodeURIComponent(id)}/messages`),
    ]);
  } catch (e) {
    if (state.sessionId !== id) return;
    if (e.status === 404) sessionStorage.removeItem(SESSION_KEY);
    clear(t).append(h('div', { class: 'error-box' }, e.message));
    return;
  }
  if (state.sessionId !== id) return;
  clear(t);
  const runs = session.runs || [];
  // A run still going is shown from its event stream (from the start), so
  // only its user message comes from the transcript.
  const live = runs.filter((r) => !['done', 'failed', 'cancelled'].includes(r.state)).map((r) => r.id);
  const shown = (messages.messages || []).filter((m) => !live.includes(m.run_id) || m.kind === 'user');
  renderHistory(t, shown);
  for (const runId of live) followRun(runId);
  if (!t.hasChildNodes()) t.append(emptyChat());
  scrollDown(true);
}

function emptyChat() {
  return h(
    'div',
    { class: 'empty-chat' },
    h('h2', {}, 'What should keel do?'),
    h('p', { class: 'muted' }, 'Answers stream in as they are written; tool calls and the approvals they need show as they happen.'),
  );
}

/** Past messages: user text, answers, tool calls with their results. */
function renderHistory(t, messages) {
  const calls = new Map();
  let turn = null;
  for (const m of messages) {
    if (m.kind === 'user') {
      t.append(userMessage(m.content));
      turn = null;
      continue;
    }
    if (!turn) {
      turn = h('div', { class: 'turn' });
      t.append(turn);
    }
    if (m.kind === 'assistant') {
      if (m.content) turn.append(h('div', { class: 'md' }, renderMarkdown(m.content)));
      let list = [];
      try {
        list = m.tool_calls ? JSON.parse(m.tool_calls) : [];
      } catch {
        list = [];
      }
      for (const c of Array.isArray(list) ? list : []) {
        let args = c.arguments;
        try {
          args = JSON.parse(c.arguments);
        } catch {
          // Shown as the text it is.
        }
        const card = toolCard(c.name, args);
        calls.set(c.id, card);
        turn.append(card.el);
      }
    } else if (m.kind === 'tool') {
      const card = calls.get(m.call_id);
      if (card) card.result(!m.is_error, m.content, m.elapsed_ms);
      else {
        const c = toolCard(m.name || 'tool', undefined);
        c.result(!m.is_error, m.content, m.elapsed_ms);
        turn.append(c.el);
      }
    } else if (m.kind === 'summary') {
      turn.append(h('div', { class: 'note' }, 'Earlier messages were summarised to fit the context.'));
    }
  }
}

function userMessage(text) {
  return h('div', { class: 'msg-user' }, h('div', { class: 'bubble' }, text));
}

/** Arguments on one line when they fit, else indented. */
function argsText(args) {
  if (typeof args === 'string') return args;
  const line = JSON.stringify(args) ?? String(args);
  return line.length <= 100 ? line : json(args);
}

/** A tool call's card; `result()` fills in how it went. */
function toolCard(name, args) {
  const status = h('span', { class: 'chip chip-running' }, 'running…');
  const ms = h('span', { class: 'ms' });
  const result = h('pre', { class: 'tool-result', hidden: true });
  const el = h(
    'div',
    { class: 'tool', dataset: { tool: name } },
    h('div', { class: 'tool-head' }, h('span', { class: 'tool-icon', 'aria-hidden': 'true' }, '⚙'), h('span', { class: 'tool-name' }, name), status, ms),
    args === undefined ? null : h('pre', { class: 'tool-args' }, argsText(args)),
    result,
  );
  return {
    el,
    result(ok, summary, elapsed) {
      status.className = `chip ${ok ? 'chip-done' : 'chip-failed'}`;
      status.textContent = ok ? 'ok' : 'error';
      if (elapsed !== undefined && elapsed !== null) ms.textContent = `${elapsed} ms`;
      if (summary !== undefined && summary !== null && summary !== '') {
        result.hidden = false;
        result.textContent = typeof summary === 'string' ? summary : json(summary);
      }
    },
  };
}

function scrollDown(force) {
  const t = $('#transcript');
  const near = t.scrollHeight - t.scrollTop - t.clientHeight < 160;
  if (force || near) t.scrollTop = t.scrollHeight;
}

// ---------------------------------------------------------------------------
// Sending and following a run.

function oneLine(text) {
  const line = text.split('\n').find((l) => l.trim()) || '';
  const t = line.trim();
  return t.length > 60 ? `${t.slice(0, 60)}…` : t;
}

async function send(ev) {
  ev?.preventDefault();
  const input = $('#input');
  const text = input.value;
  if (!text.trim() || state.sending) return;
  state.sending = true;
  const button = $('#send');
  button.disabled = true;
  try {
    let id = state.sessionId;
    if (!id) {
      const s = await api('POST', '/v1/sessions', { title: oneLine(text) });
      id = s.id;
      state.sessionId = id;
      sessionStorage.setItem(SESSION_KEY, id);
      // Not a navigation: the (empty) transcript stays.
      history.replaceState(null, '', `#/chat/${encodeURIComponent(id)}`);
      clear($('#transcript'));
    }
    const r = await api('POST', `/v1/sessions/${encodeURIComponent(id)}/messages`, { text });
    input.value = '';
    autosize();
    if (state.sessionId !== id) return;
    $('#transcript').querySelector('.empty-chat')?.remove();
    $('#transcript').append(userMessage(text));
    followRun(r.run_id);
    scrollDown(true);
    refreshSessionsSoon();
  } catch (e) {
    toast(`not sent: ${e.message}`);
  } finally {
    state.sending = false;
    button.disabled = false;
    input.focus();
  }
}

/** A run's live view: its events in order, as they come. */
function followRun(runId) {
  const status = h('span', { class: 'chip chip-queued' }, 'queued');
  const cancel = h('button', { type: 'button', class: 'ghost small', onclick: () => cancelRun(runId, cancel) }, 'Cancel');
  const foot = h('div', { class: 'run-foot' }, status, h('span', { class: 'reconnect', hidden: true }), cancel);
  const body = h('div', { class: 'run-body' });
  const el = h('div', { class: 'turn run', dataset: { run: runId } }, body, foot);
  $('#transcript').append(el);
  const calls = new Map();
  let text = null; // { el, src }
  let frame = 0;
  let finished = false;
  const paint = () => {
    frame = 0;
    if (text) text.el.replaceChildren(renderMarkdown(text.src));
    scrollDown(false);
  };
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(paint);
  };
  const endText = () => {
    if (frame) {
      cancelAnimationFrame(frame);
      paint();
    }
    text = null;
  };
  const setState = (s) => {
    status.className = `chip chip-${s}`;
    status.textContent = s.replace('_', ' ');
  };
  const onEvent = (name, data) => {
    if (name === 'state') {
      setState(data.state);
    } else if (name === 'text') {
      if (!text) {
        text = { el: h('div', { class: 'md' }), src: '' };
        body.append(text.el);
      }
      text.src += data.delta ?? '';
      schedule();
    } else if (name === 'tool_call') {
      endText();
      const card = toolCard(data.name, data.args);
      calls.set(data.id, card);
      body.append(card.el);
      scrollDown(false);
    } else if (name === 'tool_result') {
      const card = calls.get(data.id);
      if (card) card.result(data.ok, data.summary, data.ms);
    } else if (name === 'approval') {
      endText();
      body.append(approvalCard(data, 'inline'));
      scrollDown(false);
    } else if (name === 'compacted') {
      body.append(h('div', { class: 'note' }, `Earlier messages were summarised to fit the context (${data.messages} messages).`));
    } else if (name === 'compaction_failed') {
      body.append(h('div', { class: 'note' }, `Could not summarise earlier messages: ${data.reason}`));
    } else if (name === 'stream_cut') {
      body.append(h('div', { class: 'note' }, `The model's stream was cut: ${data.reason}`));
    } else if (name === 'done') {
      finished = true;
      const hadText = body.querySelector('.md');
      endText();
      if (!hadText && data.answer) body.append(h('div', { class: 'md' }, renderMarkdown(data.answer)));
      setState(data.state);
      if (data.state !== 'done' && data.error) body.append(h('div', { class: 'error-box' }, data.error));
      const u = data.usage;
      if (u && (u.input_tokens || u.output_tokens)) {
        foot.append(h('span', { class: 'muted usage' }, `${u.input_tokens ?? 0} in · ${u.output_tokens ?? 0} out tokens`));
      }
      cancel.remove();
      foot.querySelector('.reconnect').hidden = true;
      el.classList.add('finished');
      follower.close();
      refreshSessionsSoon();
    }
  };
  const open = () => new EventStream(`/v1/runs/${encodeURIComponent(runId)}/events`, {
    onEvent,
    isDone: () => finished,
    onState: (s, detail) => {
      const r = foot.querySelector('.reconnect');
      if (s === 'reconnecting') {
        r.hidden = false;
        r.textContent = 'reconnecting…';
        r.title = detail || '';
      } else if (s === 'gone') {
        r.hidden = false;
        r.textContent = detail || 'this run is gone';
      } else {
        r.hidden = true;
      }
    },
  });
  // data-stream: queued (waiting for a connection), open, closed.
  el.dataset.stream = 'queued';
  const follower = {
    stream: null,
    open() {
      el.dataset.stream = 'open';
      this.stream = open();
    },
    close() {
      el.dataset.stream = 'closed';
      this.stream?.close();
      if (state.runs.get(runId) === this) state.runs.delete(runId);
      const i = state.runQueue.indexOf(this);
      if (i >= 0) state.runQueue.splice(i, 1);
      nextRun();
    },
  };
  state.runs.set(runId, follower);
  state.runQueue.push(follower);
  nextRun();
}

/**
 * Opens queued run streams while fewer than MAX_RUN_STREAMS are open. A
 * browser keeps about six connections to one server; each stream holds
 * one, and the API calls need some left. Runs of a session go one at a
 * time anyway, so a queued run's stream misses nothing by waiting.
 */
function nextRun() {
  let open = 0;
  for (const f of state.runs.values()) if (f.stream) open++;
  while (open < MAX_RUN_STREAMS && state.runQueue.length) {
    state.runQueue.shift().open();
    open++;
  }
}

async function cancelRun(runId, button) {
  button.disabled = true;
  try {
    await api('POST', `/v1/runs/${encodeURIComponent(runId)}/cancel`, {});
  } catch (e) {
    toast(`cannot cancel: ${e.message}`);
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Approvals: the same card in the chat and in the pending list.

function approvalCard(a, where) {
  const buttons = h('div', { class: 'buttons' });
  const outcome = h('span', { class: 'outcome' });
  const err = h('div', { class: 'error', role: 'alert', hidden: true });
  const el = h(
    'div',
    { class: `approval approval-${where}`, dataset: { approval: a.id } },
    h(
      'div',
      { class: 'approval-text' },
      h('strong', {}, a.skill || '?'),
      a.tool ? ` (${a.tool})` : '',
      ' asks for ',
      h('code', {}, a.capability || '?'),
      a.target ? [' on ', h('code', {}, a.target)] : '',
    ),
    buttons,
    outcome,
    err,
  );
  const mark = (answer) => {
    buttons.hidden = true;
    outcome.textContent = `answered: ${answer}`;
    el.classList.add('answered', `answered-${answer}`);
  };
  for (const [answer, label, cls] of [['yes', 'Yes', 'primary'], ['no', 'No', 'danger'], ['always', 'Always', 'ghost']]) {
    if (answer === 'always' && a.rule === '') continue; // no rule names the target alone
    buttons.append(
      h('button', {
        type: 'button',
        class: cls,
        dataset: { answer },
        onclick: async (ev) => {
          const b = ev.currentTarget;
          for (const x of buttons.querySelectorAll('button')) x.disabled = true;
          err.hidden = true;
          try {
            await api('POST', `/v1/approvals/${encodeURIComponent(a.id)}`, { answer });
            markApproval(a.id, answer);
            refreshApprovals();
          } catch (e) {
            err.textContent = e.message;
            err.hidden = false;
            for (const x of buttons.querySelectorAll('button')) x.disabled = false;
            b.focus();
          }
        },
      }, label),
    );
  }
  const list = state.approvalCards.get(a.id) || [];
  list.push(mark);
  state.approvalCards.set(a.id, list);
  return el;
}

function markApproval(id, answer) {
  for (const mark of state.approvalCards.get(id) || []) mark(answer);
}

async function refreshApprovals() {
  let r;
  try {
    r = await api('GET', '/v1/approvals');
  } catch (e) {
    if (e.status !== 401) toast(`cannot list approvals: ${e.message}`);
    return;
  }
  state.approvals = r.approvals || [];
  const ul = clear($('#pending-list'));
  for (const a of state.approvals) ul.append(h('li', {}, approvalCard(a, 'pending')));
  $('#pending').hidden = !state.approvals.length;
  const badge = $('#approvals-badge');
  badge.hidden = !state.approvals.length;
  badge.textContent = String(state.approvals.length);
}

// ---------------------------------------------------------------------------
// Skills.

/** `file:line: message` split like the server's `located()`. */
function located(error) {
  const s = String(error ?? '');
  const cut = s.indexOf(': ');
  if (cut > 0) {
    const head = s.slice(0, cut);
    const colon = head.lastIndexOf(':');
    if (colon > 0 && /^\d+$/.test(head.slice(colon + 1))) {
      return { file: head.slice(0, colon), line: Number(head.slice(colon + 1)), message: s.slice(cut + 2) };
    }
  }
  return { file: null, line: null, message: s };
}

/** A path shortened to what follows `skills/` (or its last two parts). */
function shortPath(p) {
  const s = String(p ?? '');
  const i = s.lastIndexOf('/skills/');
  if (i >= 0) return s.slice(i + 1);
  return s.split('/').slice(-2).join('/');
}

async function refreshSkills() {
  let r;
  try {
    r = await api('GET', '/v1/skills');
  } catch (e) {
    if (e.status !== 401) {
      clear($('#skill-list')).append(h('div', { class: 'error-box' }, `cannot list skills: ${e.message}`));
    }
    return;
  }
  state.skills = r;
  renderSkills();
}

function renderSkills() {
  const r = state.skills;
  if (!r) return;
  const skills = r.skills || [];
  const failures = r.failures || [];
  const claimants = r.claimants || [];
  const byName = new Map();
  const entry = (name) => {
    if (!byName.has(name)) byName.set(name, { name, skill: null, failures: [] });
    return byName.get(name);
  };
  for (const s of skills) entry(s.name).skill = s;
  // Disabled skills, wherever the listing puts them.
  for (const d of Array.isArray(r.disabled) ? r.disabled : []) {
    const name = typeof d === 'string' ? d : d && d.name;
    if (!name) continue;
    const e = entry(name);
    e.skill = { ...(typeof d === 'object' ? d : {}), ...(e.skill || {}), name, disabled: true };
  }
  for (const f of failures) {
    // By name where the manifest got that far, else by where it is.
    const name = f.skill ? f.skill.split('@')[0] : shortPath(f.origin?.path || '?');
    entry(name).failures.push(f);
  }
  // Toast the failures that are new since the last listing: they stand
  // now, unlike events replayed from before the page was opened.
  const keys = new Set(failures.map((f) => `${f.origin?.path}\n${f.error}`));
  if (state.failureKeys) {
    for (const f of failures) {
      if (state.failureKeys.has(`${f.origin?.path}\n${f.error}`)) continue;
      const l = located(f.error);
      const where = l.file ? `${shortPath(l.file)}:${l.line}: ` : '';
      toast(`${f.skill || shortPath(f.origin?.path)} failed to load — ${where}${l.message}`);
    }
  }
  state.failureKeys = keys;
  const list = clear($('#skill-list'));
  const names = [...byName.keys()].sort();
  const failed = [...byName.values()].filter((e) => e.failures.length).length;
  $('#skills-summary').textContent = `${skills.length} loaded${failed ? `, ${failed} with errors` : ''}`;
  const badge = $('#failures-badge');
  badge.hidden = !failed;
  badge.textContent = String(failed);
  if (!names.length) list.append(h('p', { class: 'muted' }, 'No skills. Put a skill folder in skills/ and it shows here.'));
  for (const name of names) list.append(skillCard(byName.get(name)));
  for (const c of claimants) {
    list.append(h('div', { class: 'card skill held' }, h('div', { class: 'card-head' }, h('h3', {}, c.name), h('span', { class: 'chip chip-waiting_permission' }, 'held back')), h('p', {}, c.reason)));
  }
}

function skillState(e) {
  const s = e.skill;
  // `keel skills --json` marks each skill `"enabled": true|false`.
  if (s && (s.enabled === false || s.disabled === true || s.state === 'disabled')) return 'disabled';
  if (e.failures.length && !s) return 'failed';
  if (e.failures.length) return 'error';
  return 'loaded';
}

function skillCard(e) {
  const s = e.skill;
  const st = skillState(e);
  const chipClass = { loaded: 'done', failed: 'failed', error: 'failed', disabled: 'cancelled' }[st];
  const errors = e.failures.map((f) => {
    const l = located(f.error);
    return h(
      'div',
      { class: 'skill-error' },
      l.file ? h('code', { class: 'where' }, `${shortPath(l.file)}:${l.line}`) : null,
      h('span', { class: 'message' }, l.message),
    );
  });
  const actions = h('div', { class: 'buttons' });
  const err = h('div', { class: 'error', role: 'alert', hidden: true });
  const act = (label, path, cls) =>
    h('button', {
      type: 'button',
      class: `${cls} small`,
      dataset: { action: label.toLowerCase() },
      onclick: async (ev) => {
        const b = ev.currentTarget;
        b.disabled = true;
        err.hidden = true;
        try {
          await api('POST', `/v1/skills/${encodeURIComponent(e.name)}/${path}`, {});
          toast(`${e.name}: ${label.toLowerCase()} done`, 'ok');
          refreshSkills();
        } catch (x) {
          err.textContent = `${label} failed: ${x.status === 404 || x.status === 405 ? `this keel has no ${path} yet (HTTP ${x.status}: ${x.message})` : x.message}`;
          err.hidden = false;
        } finally {
          b.disabled = false;
        }
      },
    }, label);
  actions.append(act('Reload', 'reload', 'ghost'));
  actions.append(st === 'disabled' ? act('Enable', 'enable', 'primary') : act('Disable', 'disable', 'ghost'));
  const caps = s?.capabilities || [];
  const pending = s?.pending_capabilities || [];
  return h(
    'div',
    { class: `card skill state-${st}`, dataset: { skill: e.name, state: st } },
    h(
      'div',
      { class: 'card-head' },
      h('h3', {}, e.name),
      s?.version ? h('span', { class: 'version' }, s.version) : null,
      s?.kind ? h('span', { class: 'muted small-text' }, typeof s.kind === 'string' ? s.kind : json(s.kind)) : null,
      h('div', { class: 'spacer' }),
      h('span', { class: `chip chip-${chipClass} skill-state` }, st),
    ),
    s?.description ? h('p', { class: 'desc' }, s.description) : null,
    errors.length ? h('div', { class: 'skill-errors' }, errors) : null,
    st === 'error' ? h('p', { class: 'muted small-text' }, 'The last version that loaded keeps serving until the files are fixed.') : null,
    s?.tools?.length ? h('div', { class: 'kv' }, h('span', { class: 'k' }, 'tools'), h('span', { class: 'v' }, s.tools.map((t) => h('code', {}, t)))) : null,
    caps.length ? h('div', { class: 'kv' }, h('span', { class: 'k' }, 'capabilities'), h('span', { class: 'v' }, caps.map((c) => h('code', { class: pending.includes(c) ? 'pending' : '' }, c)))) : null,
    s?.dependencies && Object.keys(s.dependencies).length
      ? h('div', { class: 'kv' }, h('span', { class: 'k' }, 'needs'), h('span', { class: 'v' }, Object.entries(s.dependencies).map(([k, v]) => h('code', {}, `${k} ${v}`))))
      : null,
    actions,
    err,
  );
}

// ---------------------------------------------------------------------------
// Tools.

async function refreshTools() {
  let r;
  try {
    r = await api('GET', '/v1/tools');
  } catch (e) {
    if (e.status !== 401) clear($('#tool-list')).append(h('li', { class: 'error' }, `cannot list tools: ${e.message}`));
    return;
  }
  state.tools = Array.isArray(r) ? r : [];
  const ul = clear($('#tool-list'));
  $('#tools-summary').textContent = `${state.tools.length} tools`;
  for (const t of state.tools) {
    ul.append(
      h('li', { dataset: { tool: t.name }, class: state.tool === t.name ? 'active' : '' },
        h('button', { type: 'button', onclick: () => showTool(t.name) },
          h('span', { class: 'tool-name' }, t.name),
          h('span', { class: 'muted small-text' }, t.skill === 'keel' ? 'built in' : t.skill))),
    );
  }
  if (state.tool && state.tools.some((t) => t.name === state.tool)) showTool(state.tool);
}

/** Arguments to start from: each property with a value of its type. */
function skeleton(schema) {
  const out = {};
  const props = (schema && schema.properties) || {};
  for (const [k, p] of Object.entries(props)) {
    const type = Array.isArray(p.type) ? p.type[0] : p.type;
    out[k] = p.default !== undefined ? p.default
      : type === 'string' ? ''
      : type === 'integer' || type === 'number' ? 0
      : type === 'boolean' ? false
      : type === 'array' ? []
      : type === 'object' ? {}
      : null;
  }
  return out;
}

function showTool(name) {
  const t = (state.tools || []).find((x) => x.name === name);
  if (!t) return;
  state.tool = name;
  for (const li of document.querySelectorAll('#tool-list li')) li.classList.toggle('active', li.dataset.tool === name);
  const args = h('textarea', { class: 'args', rows: 8, spellcheck: 'false', 'aria-label': 'Arguments (JSON)' });
  args.value = json(skeleton(t.parameters));
  const out = h('pre', { class: 'call-result', hidden: true });
  const err = h('div', { class: 'error-box', role: 'alert', hidden: true });
  const call = h('button', { type: 'submit', class: 'primary' }, 'Call');
  const form = h(
    'form',
    {
      class: 'call-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        err.hidden = true;
        out.hidden = true;
        let parsed;
        try {
          parsed = JSON.parse(args.value || '{}');
        } catch (x) {
          err.textContent = `The arguments are not JSON: ${x.message}`;
          err.hidden = false;
          return;
        }
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
          err.textContent = 'The arguments must be a JSON object, like {"text": "hi"}.';
          err.hidden = false;
          return;
        }
        call.disabled = true;
        call.textContent = 'Calling… (an approval may be waiting in Chat)';
        try {
          const r = await api('POST', `/v1/tools/${encodeURIComponent(name)}/call`, { args: parsed });
          out.textContent = `${json(r.result)}\n\n— ok in ${r.ms} ms`;
          out.hidden = false;
        } catch (x) {
          err.textContent = x.message;
          err.hidden = false;
        } finally {
          call.disabled = false;
          call.textContent = 'Call';
        }
      },
    },
    h('label', {}, 'Arguments (JSON)', args),
    h('div', { class: 'buttons' }, call),
  );
  clear($('#tool-detail')).append(
    h('h2', {}, h('code', {}, t.name)),
    h('p', { class: 'desc' }, t.description || ''),
    h('p', { class: 'muted small-text' }, t.skill === 'keel' ? 'built into keel' : `from ${t.skill}; runs under that skill's grants`),
    h('h3', {}, 'Parameters'),
    h('pre', { class: 'schema' }, json(t.parameters || {})),
    form,
    err,
    out,
  );
}

// ---------------------------------------------------------------------------
// Audit.

/** `allow`, `ask:approved` look good; `deny`, `ask:denied`, `ask:timeout` bad. */
function decisionClass(decision) {
  const d = String(decision);
  if (/^allow|approved|always/.test(d)) return 'chip-done';
  if (/deny|denied|refused|timeout|expired|no$/.test(d)) return 'chip-failed';
  return 'chip-waiting_permission';
}

async function refreshAudit() {
  const limit = $('#audit-limit').value;
  let rows;
  try {
    rows = await api('GET', `/v1/audit?limit=${encodeURIComponent(limit)}`);
  } catch (e) {
    if (e.status !== 401) toast(`cannot read the audit log: ${e.message}`);
    return;
  }
  const tb = clear($('#audit-rows'));
  if (!Array.isArray(rows) || !rows.length) {
    tb.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'The audit log is empty.')));
    return;
  }
  for (const r of rows) {
    tb.append(
      h('tr', { class: `decision-${r.decision}` },
        h('td', { class: 'nowrap' }, timeText(r.at_ms)),
        h('td', {}, h('span', { class: `chip ${decisionClass(r.decision)}` }, r.decision)),
        h('td', {}, `${r.skill}@${r.version}`),
        h('td', {}, r.tool),
        h('td', {}, h('code', {}, r.capability)),
        h('td', { class: 'target' }, r.target),
        h('td', { class: 'reason' }, r.reason)),
    );
  }
}

// ---------------------------------------------------------------------------
// The composer and wiring.

function autosize() {
  const input = $('#input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

function init() {
  $('#login-form').addEventListener('submit', signIn);
  $('#logout').addEventListener('click', () => signedOut(''));
  $('#composer').addEventListener('submit', send);
  const input = $('#input');
  input.addEventListener('keydown', (ev) => {
    // Enter sends; Shift+Enter (and Enter while composing an IME word) is
    // a new line.
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  input.addEventListener('input', autosize);
  $('#new-chat').addEventListener('click', () => {
    state.newChat = true;
    if (location.hash === '#/chat') route();
    else location.hash = '#/chat';
  });
  $('#skills-refresh').addEventListener('click', refreshSkills);
  $('#tools-refresh').addEventListener('click', refreshTools);
  $('#audit-refresh').addEventListener('click', refreshAudit);
  $('#audit-limit').addEventListener('change', refreshAudit);
  window.addEventListener('hashchange', () => {
    if (auth.token) route();
  });
  renderActivity();
  if (auth.token) start();
  else signedOut('');
}

// The markdown renderer, for tests that want to feed it text directly.
window.keelConsole = Object.freeze({ renderMarkdown });

init();
