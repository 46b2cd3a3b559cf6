// h2trace diagnostics page: polls one or more diagnostics endpoints
// (?endpoints=host:port,host:port; default: the one serving this page) and
// shows their requests in flight, each request's state history, a waterfall
// of recent requests per connection and the state profile.
// Plain browser JavaScript, no library, no build step.  Everything from the
// endpoints is written with textContent, never parsed as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const INTERVAL = Math.min(Math.max(Number(params.get('interval')) || 1000, 200), 60000);
  const ROW_H = 24;          // px, as --row in style.css
  const OVERSCAN = 8;        // rows drawn above and below the visible ones
  const WF_MAX_BARS = 400;   // the waterfall draws the newest bars only
  const WF_MAX_LANES = 24;   // connections shown: the most recently active
  const WF_MAX_SUB = 6;      // rows per lane; more overlapping requests share the last
  const FETCH_TIMEOUT = 5000;

  // ---- states and phases ---------------------------------------------------
  // A state's phase (the waterfall's colours): the client's dns / connect /
  // tls / wait / receive, plus queue (no connection or stream slot yet), send
  // (a server writing its response, a client its request) and cancel.
  const PHASE = {
    queued: 'queue', wait_stream: 'queue', retrying: 'queue',
    dns: 'dns', connecting: 'connect', tls: 'tls',
    sending: 'send', wait_continue: 'wait', wait_response: 'wait',
    receiving: 'receive', flow_blocked: 'receive',
    read_headers: 'receive', read_body: 'receive', handler: 'wait',
    writing: 'send', srv_flow_blocked: 'send', canceling: 'cancel',
  };
  const PHASES = ['queue', 'dns', 'connect', 'tls', 'wait', 'receive', 'send', 'cancel'];
  const PHASE_TEXT = {
    queue: 'queue', dns: 'dns', connect: 'connect', tls: 'tls', wait: 'wait (server: handler)',
    receive: 'receive (server: read request)', send: 'send (server: write response)', cancel: 'canceling',
  };
  const STATE_ORDER = Object.keys(PHASE);
  const phaseOf = (state) => PHASE[state] || 'earlier';
  // A finished request (recent ring, or looked up by id) has an outcome.
  const finished = (r) => r.outcome !== undefined;

  // ---- formatting ----------------------------------------------------------
  function fmtUs(us) {
    if (us == null || !isFinite(us)) return '';
    if (us < 1000) return (us / 1000).toFixed(us < 100 ? 2 : 1) + ' ms';
    if (us < 1e6) return Math.round(us / 1000) + ' ms';
    if (us < 60e6) return (us / 1e6).toFixed(us < 10e6 ? 2 : 1) + ' s';
    const s = Math.floor(us / 1e6);
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
  }
  function fmtBytes(n) {
    if (!n) return '0';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  // ---- endpoints -----------------------------------------------------------
  function parseEndpoints(spec) {
    if (!spec) return [{ base: location.origin, label: location.host, self: true }];
    return spec.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
      let u;
      try {
        u = new URL(/^https?:\/\//i.test(s) ? s : 'http://' + s);
      } catch (e) {
        return { base: null, label: s, bad: 'not host:port or a URL' };
      }
      return { base: u.origin, label: u.host, self: u.origin === location.origin };
    });
  }
  const eps = parseEndpoints(params.get('endpoints')).map((e, i) => Object.assign(e, {
    idx: i, ok: false, err: e.bad || null, rows: [], recent: [], conns: new Map(),
    profile: null, offset: 0, polls: 0,
  }));

  // A failed fetch() says nothing about why; say what it most likely is.
  function whyFailed(ep, e) {
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'no answer within ' + FETCH_TIMEOUT / 1000 + ' s';
    if (e.http) return e.message;
    if (ep.self) return 'no answer (is the process still running?)';
    return 'no answer, or it refused this page: an endpoint on another origin must list ' + location.origin +
      ' in its CORS origins (h2t_diag_config.cors_origins, --diag-cors; is the process running?)';
  }

  async function getJson(ep, path) {
    const res = await fetch(ep.base + path, { cache: 'no-store', signal: AbortSignal.timeout(FETCH_TIMEOUT) });
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON: say HTTP status below */ }
    if (!res.ok) {
      const err = new Error('HTTP ' + res.status + (body && body.error ? ': ' + body.error : ''));
      err.http = res.status;
      throw err;
    }
    return body;
  }

  // Server clocks are each process's monotonic clock (microseconds): map them
  // to this page's clock with the server time of the latest answer.
  function setClock(ep, serverUs, sentAt) {
    const now = Date.now();
    ep.offset = (sentAt + now) / 2 - serverUs / 1000;
  }
  const localMs = (ep, us) => us / 1000 + ep.offset;

  // ---- polling -------------------------------------------------------------
  let paused = false;
  let tick = 0;
  async function pollOne(ep) {
    if (!ep.base) return;
    const sent = Date.now();
    const slow = tick % 2 === 0; // recent, connections, profile: every other poll
    try {
      const reqs = await getJson(ep, '/debug/requests');
      setClock(ep, reqs.server_time_us, sent);
      ep.rows = reqs.requests;
      ep.fetchedAt = Date.now();
      if (slow || !ep.polls) {
        const [recent, conns, profile] = await Promise.all([
          getJson(ep, '/debug/recent'), getJson(ep, '/debug/connections'), getJson(ep, '/debug/profile')]);
        ep.recent = recent.recent;
        ep.conns = new Map(conns.connections.map((k) => [k.id, k]));
        ep.profile = profile;
        wfDirty = profDirty = true;
      }
      ep.ok = true;
      ep.err = null;
      ep.polls++;
    } catch (e) {
      ep.ok = false;
      ep.err = whyFailed(ep, e);
      ep.rows = [];
    }
  }

  async function poll() {
    if (!paused) {
      await Promise.all(eps.map(pollOne));
      tick++;
      ingest();
      await refreshDetail();
    }
    setTimeout(poll, INTERVAL);
  }

  // ---- the table's data ----------------------------------------------------
  let all = [];          // every endpoint's rows
  let view = [];         // all, filtered and sorted
  let viewDirty = true;
  let sortKey = 'age_us', sortDir = -1;
  let filterTerms = [];
  let selected = null;   // {ep, id}
  let armed = null, armedUntil = 0; // the cancel button waiting for a second click

  function ingest() {
    const out = [];
    for (const ep of eps) {
      for (const r of ep.rows) {
        r.ep = ep.idx;
        r.key = ep.idx + ':' + r.id;
        out.push(r);
      }
    }
    all = out;
    viewDirty = true;
    renderChips();
    schedule();
  }

  const COLS = [
    { key: 'ep', title: 'endpoint', get: (r) => eps[r.ep].label },
    { key: 'id', title: 'id', num: true },
    { key: 'kind', title: 'kind' },
    { key: 'method', title: 'method' },
    { key: 'authority', title: 'authority' },
    { key: 'path', title: 'path' },
    { key: 'state', title: 'state', get: (r) => r.state_text },
    { key: 'age_us', title: 'age', num: true, fmt: fmtUs },
    { key: 'state_age_us', title: 'in state', num: true, fmt: fmtUs },
    { key: 'conn', title: 'conn', num: true, fmt: (v, r) => (v ? '#' + v + (r.stream ? '/' + r.stream : '') : '') },
    { key: 'status', title: 'status' },
    { key: 'http_status', title: 'http', num: true, fmt: (v) => (v ? String(v) : '') },
    { key: 'bytes_in', title: 'in / out', num: true, fmt: (v, r) => fmtBytes(r.bytes_in) + ' / ' + fmtBytes(r.bytes_out) },
    { key: 'cancel', title: '', nosort: true },
  ];
  const FILTER_FIELDS = {
    ep: (r) => eps[r.ep].label, endpoint: (r) => eps[r.ep].label, id: (r) => String(r.id), kind: (r) => r.kind,
    method: (r) => r.method, authority: (r) => r.authority, host: (r) => r.authority, path: (r) => r.path,
    state: (r) => r.state + ' ' + r.state_text, conn: (r) => String(r.conn), stream: (r) => String(r.stream),
    status: (r) => r.status, http: (r) => String(r.http_status),
    // one W3C trace id links a request's rows across every service it went through
    trace: (r) => r.trace_id || '',
  };
  function rowText(r) {
    return (eps[r.ep].label + ' ' + r.id + ' ' + r.kind + ' ' + r.method + ' ' + r.authority + ' ' + r.path + ' ' +
      r.state + ' ' + r.state_text + ' #' + r.conn + ' ' + r.status + ' ' + r.http_status + ' ' +
      (r.trace_id || '')).toLowerCase();
  }
  function parseFilter(s) {
    return s.toLowerCase().split(/\s+/).filter(Boolean).map((t) => {
      const m = /^(\w+):(.*)$/.exec(t);
      if (m && FILTER_FIELDS[m[1]]) return { field: FILTER_FIELDS[m[1]], v: m[2] };
      return { v: t };
    });
  }
  function matches(r) {
    for (const t of filterTerms) {
      if (t.field) {
        if (!String(t.field(r)).toLowerCase().includes(t.v)) return false;
      } else {
        if (r._t === undefined) r._t = rowText(r);
        if (!r._t.includes(t.v)) return false;
      }
    }
    return true;
  }
  function buildView() {
    const rows = filterTerms.length ? all.filter(matches) : all.slice();
    const col = COLS.find((c) => c.key === sortKey);
    const get = col.get || ((r) => r[sortKey]);
    const d = sortDir;
    rows.sort((a, b) => {
      const x = get(a), y = get(b);
      if (x < y) return -d;
      if (x > y) return d;
      return a.ep - b.ep || a.id - b.id;
    });
    view = rows;
    viewDirty = false;
  }

  // ---- the table: only the visible rows exist ----------------------------
  const vt = $('vt'), vtspace = $('vtspace'), thead = $('thead');
  const pool = [];
  function makeHead() {
    thead.className = 'thead cols';
    for (const c of COLS) {
      const h = el('div', c.nosort ? 'nosort' : '', c.title);
      h.dataset.key = c.key;
      if (c.num) h.style.textAlign = 'right';
      thead.appendChild(h);
    }
    thead.addEventListener('click', (ev) => {
      const key = ev.target.dataset && ev.target.dataset.key;
      const col = COLS.find((c) => c.key === key);
      if (!col || col.nosort) return;
      if (sortKey === key) sortDir = -sortDir;
      else { sortKey = key; sortDir = col.num ? -1 : 1; }
      viewDirty = true;
      schedule();
    });
  }
  function makeRow() {
    const row = el('div', 'row cols');
    for (const c of COLS) {
      const cell = el('div', c.num ? 'num' : '');
      if (c.key === 'cancel') cell.appendChild(el('button', 'cancel', 'cancel'));
      if (c.key === 'state') cell.appendChild(el('span', 'st'));
      row.appendChild(cell);
    }
    vt.appendChild(row);
    return row;
  }
  function fillRow(row, r, i) {
    row.style.transform = 'translateY(' + i * ROW_H + 'px)';
    if (row._key === r.key && row._r === r && row._armed === (armed === r.key) && row._sel === isSel(r)) return;
    row._key = r.key;
    row._r = r;
    row.dataset.key = r.key;
    row.dataset.id = r.id;
    row.dataset.ep = eps[r.ep].label;
    const cells = row.children;
    for (let k = 0; k < COLS.length; k++) {
      const c = COLS[k];
      const cell = cells[k];
      if (c.key === 'cancel') {
        const b = cell.firstChild;
        const canceling = r.state === 'canceling' || r.canceled;
        b.disabled = canceling;
        b.textContent = canceling ? 'canceling' : armed === r.key ? 'sure?' : 'cancel';
        b.className = 'cancel' + (armed === r.key ? ' armed' : '');
        b.title = canceling ? 'being canceled' : 'reset this request with CANCEL (needs the endpoint token)';
        continue;
      }
      if (c.key === 'state') {
        const s = cell.firstChild;
        s.textContent = r.state_text;
        s.className = 'st ph-' + phaseOf(r.state);
        continue;
      }
      const v = c.get ? c.get(r) : r[c.key];
      const t = c.fmt ? c.fmt(v, r) : v == null ? '' : String(v);
      if (cell.textContent !== t) cell.textContent = t;
      if (c.key === 'path' || c.key === 'status' || c.key === 'authority') cell.title = t;
    }
    row._armed = armed === r.key;
    row._sel = isSel(r);
    row.classList.toggle('sel', row._sel);
  }
  const isSel = (r) => !!selected && selected.ep === r.ep && selected.id === r.id;

  function renderTable() {
    if (viewDirty) {
      buildView();
      for (const h of thead.children) {
        h.classList.toggle('asc', h.dataset.key === sortKey && sortDir > 0);
        h.classList.toggle('desc', h.dataset.key === sortKey && sortDir < 0);
      }
    }
    $('count').textContent = view.length === all.length ? String(all.length) : view.length + ' of ' + all.length;
    vtspace.style.height = view.length * ROW_H + 'px';
    $('vtempty').hidden = view.length > 0;
    $('vtempty').textContent = all.length ? 'no request matches the filter' : 'no request in flight';
    const top = vtTop, h = vtHeight;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(view.length, Math.ceil((top + h) / ROW_H) + OVERSCAN);
    const need = last - first;
    while (pool.length < need) pool.push(makeRow());
    for (let i = 0; i < pool.length; i++) {
      const row = pool[i];
      if (i < need) {
        row.hidden = false;
        fillRow(row, view[first + i], first + i);
      } else if (!row.hidden) {
        row.hidden = true;
        row._key = null;
      }
    }
  }

  // ---- render loop ---------------------------------------------------------
  // Each render is timed (performance.measure "h2tui-render", and
  // h2tui.renders) so that a test can hold the page to its budget.
  let pending = false;
  const stats = { renders: [], parts: [] };
  function schedule() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(render);
    }
  }
  function render() {
    pending = false;
    const t0 = performance.now();
    const sorted = viewDirty;
    renderTable();
    const ta = performance.now();
    // the waterfall and the profile get a frame of their own
    const wf = wfDirty && !sorted;
    if (wf) renderWaterfall();
    const tb = performance.now();
    const prof = profDirty && !sorted && !wf;
    if (prof) renderProfile();
    if (wfDirty || profDirty) schedule();
    const t1 = performance.now();
    performance.measure('h2tui-render', { start: t0, end: t1 });
    stats.renders.push(t1 - t0);
    stats.parts.push({ table: ta - t0, sorted, waterfall: wf ? tb - ta : 0, profile: prof ? t1 - tb : 0 });
    if (stats.parts.length > 5000) stats.parts.splice(0, 1000);
    if (stats.renders.length > 5000) stats.renders.splice(0, 1000);
  }

  // ---- endpoints bar and messages -----------------------------------------
  function renderChips() {
    const box = $('endpoints');
    box.textContent = '';
    const bad = [];
    for (const ep of eps) {
      const c = el('span', 'chip ' + (ep.ok ? 'ok' : ep.err ? 'err' : ''));
      c.dataset.ep = ep.label;
      c.textContent = ep.label + (ep.ok ? ' · ' + ep.rows.length + ' in flight' : ep.err ? ' · unreachable' : ' · …');
      c.title = ep.err || (ep.base + ' answered');
      box.appendChild(c);
      if (ep.err) bad.push(ep.label + ': ' + ep.err);
    }
    const b = $('banner');
    b.hidden = !bad.length;
    b.textContent = bad.join('\n');
  }
  let toastTimer = 0;
  function toast(msg, isErr) {
    const t = $('toast');
    t.textContent = msg;
    t.className = 'toast' + (isErr ? ' err' : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, isErr ? 10000 : 4000);
  }

  // ---- cancel --------------------------------------------------------------
  const tokKey = (ep) => 'h2trace-diag-token ' + ep.base;
  function askToken(ep) {
    const dlg = $('tokdlg'), input = $('tokin');
    $('tokep').textContent = ep.label;
    input.value = '';
    dlg.showModal();
    input.focus();
    return new Promise((resolve) => {
      const done = (v) => {
        $('tokok').onclick = $('tokcancel').onclick = input.onkeydown = dlg.oncancel = null;
        dlg.close();
        resolve(v);
      };
      $('tokok').onclick = () => done(input.value.trim() || null);
      $('tokcancel').onclick = () => done(null);
      dlg.oncancel = () => done(null);
      input.onkeydown = (ev) => { if (ev.key === 'Enter') done(input.value.trim() || null); };
    });
  }
  async function cancelRequest(r) {
    const ep = eps[r.ep];
    let tok = sessionStorage.getItem(tokKey(ep));
    for (let attempt = 0; attempt < 2; attempt++) {
      if (!tok) tok = await askToken(ep);
      if (!tok) return;
      let res;
      try {
        res = await fetch(ep.base + '/debug/requests/' + r.id + '/cancel?reason=' + encodeURIComponent('web page'), {
          method: 'POST', headers: { Authorization: 'Bearer ' + tok }, cache: 'no-store',
          signal: AbortSignal.timeout(FETCH_TIMEOUT),
        });
      } catch (e) {
        toast(ep.self
          ? 'Cancel of #' + r.id + ': no answer from ' + ep.label
          : ep.label + ' refused a cancel from this page: it does not list ' + location.origin +
            ' in its CORS origins (h2t_diag_config.cors_origins, --diag-cors). Open ' + ep.base +
            '/debug/ui to cancel its requests.', true);
        return;
      }
      let body = {};
      try { body = await res.json(); } catch (e) { /* keep {} */ }
      if (res.ok) {
        sessionStorage.setItem(tokKey(ep), tok);
        r.state = 'canceling';
        r.state_text = 'canceling';
        r.canceled = true;
        toast('Request #' + r.id + ' on ' + ep.label + ' is being canceled');
        viewDirty = true;
        schedule();
        return;
      }
      if (res.status === 401 || (res.status === 403 && body.error === 'wrong token')) {
        sessionStorage.removeItem(tokKey(ep));
        tok = null;
        if (attempt === 0) continue; // ask again
        toast('Wrong token for ' + ep.label, true);
        return;
      }
      const what = { 404: 'it already finished', 409: 'it is already being canceled' }[res.status];
      toast('Cancel of #' + r.id + ' on ' + ep.label + ': ' + (what || body.error || 'HTTP ' + res.status), true);
      return;
    }
  }

  vt.addEventListener('click', (ev) => {
    const row = ev.target.closest('.row');
    if (!row || !row._r) return;
    const r = row._r;
    if (ev.target.closest('button.cancel')) {
      // two clicks: a cancel is not undone
      if (armed === r.key && performance.now() < armedUntil) {
        armed = null;
        cancelRequest(r);
      } else {
        armed = r.key;
        armedUntil = performance.now() + 4000;
        setTimeout(() => { if (armed === r.key) { armed = null; schedule(); } }, 4000);
      }
      schedule();
      return;
    }
    select(r.ep, r.id, r);
  });
  // kept from events, so that a render never waits for a layout
  let vtTop = 0, vtHeight = 400;
  vt.addEventListener('scroll', () => { vtTop = vt.scrollTop; schedule(); }, { passive: true });
  new ResizeObserver((es) => { vtHeight = es[0].contentRect.height; schedule(); }).observe(vt);

  // ---- one request: its history --------------------------------------------
  let detailData = null;
  function select(epIdx, id, known) {
    selected = { ep: epIdx, id: id };
    detailData = known || null;
    for (const row of pool) row._key = null; // redraw the selection mark
    renderDetail();
    refreshDetail();
    wfDirty = true;
    schedule();
  }
  async function refreshDetail() {
    if (!selected) return;
    const ep = eps[selected.ep];
    const want = selected;
    try {
      const d = await getJson(ep, '/debug/requests/' + want.id);
      if (selected !== want) return;
      setClock(ep, d.server_time_us, Date.now());
      detailData = d;
      detailData.gone = false;
    } catch (e) {
      if (selected !== want || !detailData) return;
      detailData.gone = true; // no longer in flight nor in the recent ring
    }
    renderDetail();
  }
  function renderDetail() {
    const box = $('detail');
    box.textContent = '';
    const d = detailData;
    if (!d) {
      box.appendChild(el('p', 'hint', 'loading…'));
      return;
    }
    const ep = eps[selected.ep];
    box.appendChild(el('h3', '', d.method + ' ' + d.scheme + '://' + d.authority + d.path));
    const dl = el('dl');
    const add = (k, v, cls) => {
      if (v === '' || v == null) return;
      dl.appendChild(el('dt', '', k));
      dl.appendChild(el('dd', cls || '', v));
    };
    add('request', '#' + d.id + ' on ' + ep.label + ' (' + d.kind + ')');
    add('state', finished(d) ? 'finished' : d.state_text + ' for ' + fmtUs(d.state_age_us));
    if (finished(d)) {
      const how = d.canceled ? 'canceled' : d.outcome;
      add('outcome', how + (d.error ? ' — ' + d.error_name + ': ' + d.error_text : ''),
        d.error ? 'outcome-error' : 'outcome-ok');
      add('took', fmtUs(d.end_us - d.start_us));
    } else {
      add('age', fmtUs(d.age_us));
    }
    if (d.canceled) add('cancel reason', d.cancel_reason);
    add('connection', d.conn ? '#' + d.conn + (d.stream ? ', stream ' + d.stream : '') : 'none yet');
    add('http status', d.http_status ? String(d.http_status) : '');
    add('status', d.status);
    add('bytes', 'in ' + fmtBytes(d.bytes_in) + ', out ' + fmtBytes(d.bytes_out));
    if (d.trace_id) {
      add('trace', d.trace_id);
      add('span', d.span_id + (d.parent_span_id ? ' (parent ' + d.parent_span_id + ')' : ''));
      // every request of this trace, on every polled endpoint
      const link = el('a', '', 'show this trace everywhere');
      link.href = '#';
      link.addEventListener('click', (e) => {
        e.preventDefault();
        $('filter').value = 'trace:' + d.trace_id;
        $('filter').dispatchEvent(new Event('input'));
      });
      dl.appendChild(el('dt', '', ''));
      const dd = el('dd', '');
      dd.appendChild(link);
      dl.appendChild(dd);
    }
    if (d.gone) add('note', 'no longer kept by the endpoint; last known data');
    box.appendChild(dl);
    if (!d.history) {
      box.appendChild(el('p', 'hint', 'history: loading…'));
      return;
    }
    box.appendChild(el('h3', '', 'State history' + (d.history_dropped ? ' (' + d.history_dropped + ' older steps dropped)' : '')));
    const t = el('table', 'hist');
    const total = d.history.reduce((s, h) => s + h.duration_us, 0) || 1;
    for (const h of d.history) {
      const tr = el('tr');
      tr.appendChild(el('td', 'num', '+' + fmtUs(h.entered_us - d.start_us)));
      const st = el('td');
      st.appendChild(el('span', 'st ph-' + phaseOf(h.state), h.state_text));
      if (h.reason) st.appendChild(document.createTextNode(' ' + h.reason));
      tr.appendChild(st);
      tr.appendChild(el('td', 'num', fmtUs(h.duration_us)));
      const bar = el('td');
      bar.style.width = '35%';
      const b = el('div', 'hbar ph-' + phaseOf(h.state));
      b.style.width = Math.max(0.5, (100 * h.duration_us) / total).toFixed(2) + '%';
      bar.appendChild(b);
      tr.appendChild(bar);
      t.appendChild(tr);
    }
    box.appendChild(t);
  }

  // ---- waterfall -----------------------------------------------------------
  let wfDirty = true;
  let profDirty = true;
  const legend = $('legend');
  for (const p of PHASES) {
    const s = el('span');
    s.appendChild(el('i', 'ph-' + p));
    s.appendChild(document.createTextNode(PHASE_TEXT[p]));
    legend.appendChild(s);
  }
  $('wfspan').addEventListener('change', () => { wfDirty = true; schedule(); });
  const css = getComputedStyle(document.documentElement);
  const COLOR = {};
  for (const c of PHASES.concat(['earlier', 'bad'])) COLOR[c] = css.getPropertyValue('--' + c).trim();
  COLOR.life = '#c7ccd6';
  let wfWidth = 1000;
  new ResizeObserver((es) => {
    const w = Math.round(es[0].contentRect.width);
    if (w !== wfWidth) { wfWidth = w; wfDirty = true; schedule(); }
  }).observe($('wf'));

  // A request as phase segments [phase, fromMs, toMs] on this page's clock.
  function segments(ep, r, nowMs) {
    const start = localMs(ep, r.start_us);
    const end = finished(r) ? localMs(ep, r.end_us) : nowMs;
    const segs = [];
    if (r.history && r.history.length) {
      if (r.history_dropped) segs.push(['earlier', start, localMs(ep, r.history[0].entered_us)]);
      for (const h of r.history) {
        if (h.state === 'done') continue;
        const a = localMs(ep, h.entered_us);
        segs.push([phaseOf(h.state), a, a + h.duration_us / 1000]);
      }
    } else {
      // in flight: the list has no history, only the current state
      const since = end - r.state_age_us / 1000;
      if (since > start) segs.push(['earlier', start, since]);
      segs.push([phaseOf(r.state), since, end]);
    }
    return { start, end, segs };
  }

  function renderWaterfall() {
    wfDirty = false;
    const tw0 = performance.now();
    const box = $('wf');
    box.textContent = '';
    const nowMs = Date.now();
    let bars = [];
    for (const ep of eps) {
      if (!ep.ok) continue;
      for (const r of ep.recent) if (r.conn) bars.push({ ep, r, live: false });
      // of many requests in flight, only the newest can be drawn: find the
      // start time that keeps WF_MAX_BARS of them without sorting them all
      let from = -Infinity;
      if (ep.rows.length > WF_MAX_BARS) {
        const starts = Float64Array.from(ep.rows, (r) => r.start_us).sort();
        from = starts[starts.length - WF_MAX_BARS];
      }
      for (const r of ep.rows) if (r.conn && r.start_us >= from) bars.push({ ep, r, live: true });
    }
    if (!bars.length) {
      box.appendChild(el('p', 'empty', 'No request with a connection yet.'));
      return;
    }
    for (const b of bars) b.start = localMs(b.ep, b.r.start_us);
    bars.sort((a, b) => b.start - a.start);
    const span = Number($('wfspan').value) * 1000;
    if (span) bars = bars.filter((b) => b.live || localMs(b.ep, b.r.end_us) >= nowMs - span);
    const dropped = bars.length > WF_MAX_BARS ? bars.length - WF_MAX_BARS : 0;
    bars = bars.slice(0, WF_MAX_BARS);
    for (const b of bars) b.s = segments(b.ep, b.r, nowMs);
    const tw1 = performance.now();
    if (!bars.length) {
      box.appendChild(el('p', 'empty', 'No request in this window.'));
      return;
    }
    let t0 = span ? nowMs - span : Math.min(...bars.map((b) => b.s.start));
    const t1 = Math.max(nowMs, ...bars.map((b) => b.s.end));
    if (t1 - t0 < 1) t0 = t1 - 1;

    // one lane per (endpoint, connection), in the order connections started
    const lanes = new Map();
    for (const b of bars) {
      const k = b.ep.idx + ':' + b.r.conn;
      let l = lanes.get(k);
      if (!l) lanes.set(k, (l = { ep: b.ep, conn: b.r.conn, kind: b.r.kind, bars: [], first: Infinity, last: 0 }));
      l.bars.push(b);
      l.first = Math.min(l.first, b.s.start);
      l.last = Math.max(l.last, b.s.end);
    }
    // the most recently active connections, in the order they started
    let order = [...lanes.values()];
    const lanesDropped = Math.max(0, order.length - WF_MAX_LANES);
    if (lanesDropped) order = order.sort((a, b) => b.last - a.last).slice(0, WF_MAX_LANES);
    order.sort((a, b) => a.first - b.first);

    const axis = el('div', 'wf-axis');
    axis.appendChild(el('div', 'wf-label sub', order.length + ' connection' + (order.length > 1 ? 's' : '') +
      (lanesDropped ? ' (of ' + lanes.size + ')' : '') + (dropped ? ', newest ' + WF_MAX_BARS + ' requests' : '')));
    const at = el('div', 'track');
    for (let i = 0; i <= 4; i++) {
      const t = el('span', 'tick', i === 4 ? 'now' : '-' + fmtUs((t1 - (t0 + ((t1 - t0) * i) / 4)) * 1000));
      t.style.left = i * 25 + '%';
      if (i === 0) t.style.transform = 'none';
      if (i === 4) t.style.transform = 'translateX(-100%)';
      at.appendChild(t);
    }
    axis.appendChild(at);
    box.appendChild(axis);

    const W = Math.max(100, wfWidth - 238); // the track column, as in style.css
    const dpr = window.devicePixelRatio || 1;
    const x = (t) => ((t - t0) / (t1 - t0)) * W;
    const used = new Set();
    for (const l of order) {
      // multiplexed requests overlap: stack them in sub-rows
      l.bars.sort((a, b) => a.s.start - b.s.start);
      const rowsEnd = [];
      for (const b of l.bars) {
        let i = rowsEnd.findIndex((e) => e <= b.s.start);
        if (i < 0 && rowsEnd.length < WF_MAX_SUB) { i = rowsEnd.length; rowsEnd.push(0); }
        if (i < 0) i = WF_MAX_SUB - 1;
        rowsEnd[i] = b.s.end;
        b.sub = i;
      }
      const key = l.ep.idx + ':' + l.conn;
      used.add(key);
      const P = lanePool.get(key) || makeLane(key);
      const k = l.ep.conns.get(l.conn);
      P.lane.dataset.ep = l.ep.label;
      P.lane.dataset.conn = l.conn;
      P.lane.dataset.bars = l.bars.length;
      P.lane.dataset.phases = [...new Set(l.bars.flatMap((b) => b.s.segs.map((g) => g[0])))].join(' ');
      P.name.textContent = (eps.length > 1 ? l.ep.label + ' · ' : '') + 'conn #' + l.conn;
      const n = l.bars.length;
      let more = l.kind + ' · ' + n + ' request' + (n > 1 ? 's' : '');
      if (k) {
        more = l.kind + ' · ' + (k.peer || '') + ' · ' + k.requests + ' carried';
        if (k.kind === 'client') more += ', reused ' + k.reuses + '×';
      } else if (n > 1) {
        more += ' (closed)';
      }
      P.more.textContent = more;
      P.label.title = P.name.textContent + '\n' + more;

      // the bars: a canvas per lane, kept from one render to the next
      // (hundreds of bars as elements, or new canvases each time, cost more
      // than a render may take)
      const H = Math.max(28, rowsEnd.length * 14 + 2);
      const cv = P.cv;
      if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(H * dpr)) {
        cv.width = Math.round(W * dpr);
        cv.height = Math.round(H * dpr);
        cv.style.width = W + 'px';
        cv.style.height = H + 'px';
      }
      const g = P.g;
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, W, H);
      g.fillStyle = COLOR.life;
      g.fillRect(x(l.first), 6, Math.max(1, x(l.last) - x(l.first)), 2);
      const hits = [];
      for (const b of l.bars) {
        const y = b.sub * 14 + 1;
        const x0 = x(Math.max(b.s.start, t0));
        const x1 = Math.max(x0 + 2, x(b.s.end));
        for (const [ph, a, z] of b.s.segs) {
          const sa = x(Math.max(a, t0)), sz = x(z);
          if (sz <= sa) continue;
          g.fillStyle = COLOR[ph] || COLOR.earlier;
          g.fillRect(sa, y, sz - sa, 12);
        }
        const sel = selected && selected.ep === b.ep.idx && selected.id === b.r.id;
        if (sel || b.live || b.r.error) {
          g.strokeStyle = sel ? '#1d2330' : b.r.error ? COLOR.bad : COLOR.receive;
          g.lineWidth = sel ? 2 : 1;
          g.strokeRect(x0 + 0.5, y + 0.5, x1 - x0 - 1, 11);
        }
        hits.push([x0, x1, y, b]);
      }
      P.hits = hits;
      box.appendChild(P.lane);
    }
    for (const [key, P] of lanePool) if (!used.has(key)) lanePool.delete(key);
    stats.wf = stats.wf || []; // [ms choosing the bars, ms drawing, lanes]
    stats.wf.push([tw1 - tw0, performance.now() - tw1, order.length]);
    if (stats.wf.length > 1000) stats.wf.splice(0, 500);
  }
  const lanePool = new Map();
  function makeLane(key) {
    const P = { lane: el('div', 'wf-lane'), label: el('div', 'wf-label'), name: el('b'), more: el('span', 'sub'),
      cv: el('canvas', 'wf-track'), hits: [] };
    P.g = P.cv.getContext('2d');
    P.label.appendChild(P.name);
    P.label.appendChild(P.more);
    P.lane.appendChild(P.label);
    P.lane.appendChild(P.cv);
    const hit = (ev) => {
      const r = P.cv.getBoundingClientRect();
      const px = ev.clientX - r.left, py = ev.clientY - r.top;
      let best = null;
      for (const h of P.hits) {
        if (py >= h[2] && py < h[2] + 13 && px >= h[0] - 2 && px <= h[1] + 2) best = h[3];
      }
      return best;
    };
    P.cv.addEventListener('mousemove', (ev) => {
      const b = hit(ev);
      P.cv.title = b ? barText(b) : '';
      P.cv.style.cursor = b ? 'pointer' : '';
    });
    P.cv.addEventListener('click', (ev) => {
      const b = hit(ev);
      if (b) select(b.ep.idx, b.r.id, b.live ? null : b.r);
    });
    lanePool.set(key, P);
    return P;
  }
  function barText(b) {
    const r = b.r, dur = b.s.end - b.s.start;
    const parts = b.s.segs.filter((g) => g[2] > g[1]).map((g) => g[0] + ' ' + fmtUs((g[2] - g[1]) * 1000));
    return r.method + ' ' + r.path + ' (#' + r.id + ', stream ' + r.stream + ')\n' +
      (b.live ? 'in flight, ' : r.canceled ? 'canceled, ' : r.error ? (r.error_name || 'error') + ', ' : '') +
      fmtUs(dur * 1000) + ': ' + parts.join(', ');
  }

  // ---- state profile -------------------------------------------------------
  function profileGroup(title, row) {
    const g = el('div', 'pgroup');
    const h = el('h3', '', title);
    h.appendChild(el('span', 'sub', ' ' + row.requests + ' requests, ' + row.errors + ' errors, mean ' + fmtUs(row.mean_us)));
    g.appendChild(h);
    const states = Object.keys(row.states).sort((a, b) => STATE_ORDER.indexOf(a) - STATE_ORDER.indexOf(b));
    const maxShare = Math.max(0.0001, ...states.map((s) => row.states[s].share));
    for (const s of states) {
      const st = row.states[s];
      const pr = el('div', 'prow');
      pr.dataset.state = s;
      pr.appendChild(el('span', '', s.replace(/_/g, ' ')));
      const track = el('div', 'track');
      const fill = el('div', 'fill ph-' + phaseOf(s));
      fill.style.width = ((100 * st.share) / maxShare).toFixed(2) + '%';
      track.appendChild(fill);
      track.title = (100 * st.share).toFixed(1) + '% of the time, ' + st.requests + ' requests, total ' + fmtUs(st.total_us);
      pr.appendChild(track);
      pr.appendChild(el('span', 'num', (100 * st.share).toFixed(1) + '% · mean ' + fmtUs(st.mean_us)));
      g.appendChild(pr);
    }
    return g;
  }
  function renderProfile() {
    profDirty = false;
    const box = $('profile');
    box.textContent = '';
    const more = [];
    for (const ep of eps) {
      if (!ep.profile) continue;
      const pre = eps.length > 1 ? ep.label + ' · ' : '';
      for (const row of ep.profile.overall) {
        if (row.requests) box.appendChild(profileGroup(pre + row.kind + ' requests', row));
      }
      for (const row of ep.profile.by_authority) {
        if (row.requests) more.push(profileGroup(pre + row.kind + ' · ' + (row.authority || '(none)'), row));
      }
    }
    if (!box.children.length) box.appendChild(el('p', 'hint', 'No finished request yet.'));
    if (more.length) {
      const d = el('details');
      d.appendChild(el('summary', '', 'per authority (' + more.length + ')'));
      const inner = el('div');
      for (const g of more) inner.appendChild(g);
      d.appendChild(inner);
      box.appendChild(d);
    }
  }

  // ---- controls ------------------------------------------------------------
  let filterTimer = 0;
  $('filter').addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      filterTerms = parseFilter($('filter').value);
      viewDirty = true;
      vt.scrollTop = vtTop = 0;
      schedule();
    }, 60);
  });
  $('pause').addEventListener('click', () => {
    paused = !paused;
    $('pause').textContent = paused ? 'resume' : 'pause';
  });
  $('forget').addEventListener('click', () => {
    for (const ep of eps) sessionStorage.removeItem(tokKey(ep));
    toast('Tokens forgotten');
  });

  // For tests and the curious: the render times and the page's state.
  window.h2tui = {
    stats,
    endpoints: eps,
    get rows() { return all.length; },
    get visible() { return view.length; },
  };

  makeHead();
  renderChips();
  schedule();
  poll();
})();
