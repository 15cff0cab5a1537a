"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"), user: $("user"), connect: $("connect"), disconnect: $("disconnect"),
    gateway: $("gateway"), events: $("events"), clock: $("clock"), seq: $("seq"), tickinfo: $("tickinfo"),
    n: $("n"), ask: $("ask"), clear: $("clear"), range: $("range"), answers: $("answers"),
    tokenrow: $("tokenrow"), token: $("token"), refresh: $("refresh"),
  };
  // The gateway renders this "bearer" when it requires a token (PROTOCOL.md, Authentication).
  const meta = document.querySelector('meta[name="wsgw-auth"]');
  const AUTH = meta !== null && meta.content === "bearer";
  const JWT_RE = /^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*$/;

  // PROTOCOL.md: 1–64 characters, each a letter or a digit (Unicode) or one of _ . -
  const USER_RE = /^[\p{L}\p{Nd}_.\-]{1,64}$/u;
  const BACKOFF_MIN = 1000, BACKOFF_MAX = 10000; // abnormal closes and failed handshakes
  const STABLE_MS = 10000;    // a connection that lived this long resets the backoff
  const MAX_ANSWERS = 200;    // older entries are dropped from the list
  const MAX_EVENTS = 5;       // connection history lines kept
  const LONG = 100, EDGE = 40; // results over LONG digits show EDGE digits at each end

  const CLOSE_NAMES = {
    1000: "normal closure", 1001: "going away", 1002: "protocol error", 1003: "unsupported data",
    1006: "abnormal closure", 1007: "invalid data", 1008: "policy violation", 1009: "message too big",
    1011: "internal error", 1012: "service restart", 1013: "try again later",
  };

  let ws = null;           // the current socket; events of older sockets are ignored
  let wanted = false;      // the user wants to be connected
  let user = "";           // the name to (re)connect with; the welcome's name once known
  let attempt = 0;         // consecutive failures, for the backoff
  let failures = 0;        // consecutive failed handshakes, for the status line
  let retryTimer = 0, countdownTimer = 0;
  let welcome = null, welcomedAt = 0;
  let nextID = 1;
  const pending = new Map(); // request id → {n, sent}
  let lastTick = null, ticks = 0, interval = 0;
  let maxN = 100000;
  let token = "";          // the token of the current session (authentication on); memory only

  function setStatus(text, cls) {
    el.status.textContent = text;
    el.status.className = cls;
    document.title = "wsgw · " + text;
  }

  function wsURL(name) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let u = scheme + "//" + location.host + "/ws";
    if (name !== "" && !AUTH) u += "?user=" + encodeURIComponent(name); // with a token, the token names the user
    return u;
  }

  function stopRetry() {
    clearTimeout(retryTimer); clearInterval(countdownTimer);
    retryTimer = countdownTimer = 0;
  }

  function updateButtons() {
    const open = ws !== null && ws.readyState === WebSocket.OPEN && welcome !== null;
    el.ask.disabled = !open;
    el.clock.classList.toggle("stale", !open); // the last tick stays, dimmed, while offline
    el.disconnect.disabled = !wanted;
    el.refresh.disabled = !open;
  }

  // connect starts a session with the name in the form, replacing any current one.
  function connect() {
    const name = AUTH ? "" : el.user.value.trim();
    if (name !== "" && !USER_RE.test(name)) {
      setStatus("invalid name: 1–64 letters, digits, '_', '.' or '-'", "bad");
      el.user.focus();
      return;
    }
    const tok = el.token.value.trim();
    if (AUTH && !JWT_RE.test(tok)) {
      setStatus("this gateway requires a token: paste a JWT (e.g. from `gateway token -user NAME`)", "bad");
      el.token.focus();
      return;
    }
    if (!AUTH) try { localStorage.setItem("wsgw.user", name); } catch (e) { /* storage disabled */ }
    drop();
    user = name;
    token = tok;
    wanted = true;
    attempt = failures = 0;
    open();
  }

  // disconnect ends the session: close with 1000 and no reconnect.
  function disconnect() {
    wanted = false;
    if (ws !== null || retryTimer) logEvent("disconnected by you");
    drop();
    setStatus("disconnected", "idle");
    el.gateway.textContent = "not connected";
    updateButtons();
  }

  // drop forgets the current socket (closing it with 1000) and any scheduled retry.
  function drop() {
    stopRetry();
    if (ws !== null) {
      const old = ws;
      ws = null;
      try { old.close(1000, "bye"); } catch (e) { /* already closed */ }
    }
    failPending("connection closed by you");
    welcome = null;
  }

  function open() {
    stopRetry();
    welcome = null;
    const url = wsURL(user);
    setStatus("connecting to " + url.replace(/\?.*$/, "") + " as " + (user || (AUTH ? "the token's user" : "a guest")) +
      (attempt > 0 ? " (attempt " + (attempt + 1) + ")" : "") + "…", "wait");
    let sock;
    try {
      // Browsers cannot set Authorization: the token is the second "subprotocol", and the
      // gateway answers with wsgw.bearer.
      sock = AUTH ? new WebSocket(url, ["wsgw.bearer", token]) : new WebSocket(url);
    } catch (e) {
      closed({ code: 1006, reason: "" }, "could not open: " + e.message);
      return;
    }
    ws = sock;
    updateButtons();
    sock.onmessage = (ev) => { if (sock === ws) receive(ev.data); };
    sock.onclose = (ev) => { if (sock === ws) { ws = null; closed(ev, ""); } };
  }

  function receive(data) {
    let f;
    try { f = JSON.parse(data); } catch (e) { return; }
    if (f === null || typeof f !== "object") return;
    switch (f.type) {
      case "welcome": onWelcome(f); break;
      case "time": onTime(f); break;
      case "fib": onFib(f); break;
      case "error": onError(f); break;
      case "refreshed": onRefreshed(f); break;
    }
  }

  function onWelcome(f) {
    welcome = f;
    welcomedAt = Date.now();
    failures = 0;
    user = String(f.user || user); // a guest keeps its assigned name across reconnects
    if (Number.isInteger(f.max_n) && f.max_n >= 0) {
      maxN = f.max_n;
      el.n.max = String(maxN);
      el.range.textContent = "0 ≤ n ≤ " + maxN;
    }
    setStatus("connected to " + f.gateway + " as " + user, "ok");
    logEvent("connected to " + f.gateway + " as " + user + " (" + f.conn_id + ")");
    showGateway();
    updateButtons();
  }

  function showGateway() {
    let text = "gateway " + welcome.gateway + " · conn " + welcome.conn_id + " · user " + user;
    if (Number.isInteger(welcome.exp) && welcome.exp > 0) text += " · token expires " + hms(new Date(welcome.exp * 1000));
    el.gateway.textContent = text;
  }

  // refresh sends the token in the field to the open connection, which keeps going until that
  // token's exp instead of the old one's.
  function refresh() {
    if (ws === null || ws.readyState !== WebSocket.OPEN || welcome === null) return;
    const tok = el.token.value.trim();
    if (!JWT_RE.test(tok)) { addLine("error: paste a JWT to refresh with", "", true); return; }
    token = tok; // also the one to reconnect with
    ws.send(JSON.stringify({ type: "refresh", token: tok }));
  }

  function onRefreshed(f) {
    if (welcome === null || !Number.isInteger(f.exp)) return;
    welcome.exp = f.exp;
    showGateway();
    logEvent("token refreshed: expires " + hms(new Date(f.exp * 1000)));
  }

  function pad(v, w) { return String(v).padStart(w || 2, "0"); }

  function hms(t) { return pad(t.getHours()) + ":" + pad(t.getMinutes()) + ":" + pad(t.getSeconds()); }

  function logEvent(text) {
    const li = document.createElement("li");
    li.append(span("at", hms(new Date())), text);
    el.events.prepend(li);
    while (el.events.children.length > MAX_EVENTS) el.events.lastElementChild.remove();
  }

  function onTime(f) {
    const t = new Date(f.time);
    if (isNaN(t.getTime())) return;
    el.clock.textContent = hms(t);
    el.clock.title = f.time;
    el.seq.textContent = String(f.seq);
    if (lastTick !== null && f.seq > lastTick.seq) {
      interval = (t - lastTick.t) / (f.seq - lastTick.seq);
    }
    let info = ++ticks + (ticks === 1 ? " tick" : " ticks") + " received";
    if (interval > 0) info += " · one every " + (interval >= 1000 ? (interval / 1000) + " s" : Math.round(interval) + " ms");
    if (lastTick !== null && f.seq > lastTick.seq + 1) info += " · " + (f.seq - lastTick.seq - 1) + " missed before seq " + f.seq;
    el.tickinfo.textContent = info;
    lastTick = { seq: f.seq, t: t };
  }

  // closed decides what a close means: a drain retries after its retry_ms, 1000, 1008 and 1009
  // stop, and anything else (1006 above all: a dropped connection or a failed handshake)
  // retries with exponential backoff and jitter.
  function closed(ev, detail) {
    const code = ev.code;
    const what = (CLOSE_NAMES[code] || "close") + ", " + code + (ev.reason ? ": " + ev.reason : "");
    const wasUp = welcome !== null;
    const lived = wasUp ? Date.now() - welcomedAt : 0;
    const gw = wasUp ? welcome.gateway : "the gateway";
    welcome = null;
    failPending("connection closed (" + code + ")");
    if (wasUp) el.gateway.textContent = "not connected (last: " + el.gateway.textContent + ")";
    updateButtons();
    if (!wanted) return;

    if (code === 4001) { // the token's exp passed: reconnecting with the same token is pointless
      wanted = false;
      updateButtons();
      logEvent(gw + " closed the connection: token expired (4001)");
      setStatus("disconnected: the token expired (4001); paste a new token and press Connect", "bad");
      return;
    }
    if (code === 1000 || code === 1008 || code === 1009) {
      wanted = false;
      updateButtons();
      logEvent(gw + " closed the connection (" + what + ")");
      setStatus("disconnected: " + gw + " closed the connection (" + what + "); not reconnecting, press Connect to try again", "bad");
      return;
    }
    if (code === 1001) {
      const ms = retryDelay(ev.reason);
      if (ms !== null) {
        attempt = 0;
        logEvent(gw + " is draining (1001): reconnecting in " + ms + " ms");
        scheduleRetry(ms, gw + " is draining");
        return;
      }
    }

    if (lived >= STABLE_MS) attempt = 0;
    const cap = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (attempt + 1));
    const lo = Math.max(BACKOFF_MIN, cap / 2);
    const delay = Math.round(lo + Math.random() * (cap - lo)); // in [cap/2, cap], at least 1 s
    attempt++;
    let why;
    if (detail) why = detail;
    else if (wasUp) why = "connection to " + gw + " lost (" + what + ")";
    else why = "could not connect (" + ++failures + (failures === 1 ? " failed attempt)" : " failed attempts in a row)") +
      (AUTH ? "; if it keeps failing, check the token" : "");
    logEvent(why + ": retrying in " + (delay / 1000).toFixed(1) + " s");
    scheduleRetry(delay, why);
  }

  // retryDelay reads the {"retry_ms":N} reason of a drain; null when it is not one.
  function retryDelay(reason) {
    try {
      const r = JSON.parse(reason);
      if (r && Number.isFinite(r.retry_ms) && r.retry_ms >= 0) return Math.min(r.retry_ms, 60000);
    } catch (e) { /* not JSON */ }
    return null;
  }

  function scheduleRetry(ms, why) {
    stopRetry();
    const retryAt = Date.now() + ms;
    const show = () => {
      const left = Math.max(0, retryAt - Date.now());
      const s = left < 1000 ? (left / 1000).toFixed(1) : String(Math.ceil(left / 1000));
      setStatus("disconnected, reconnecting in " + s + "s: " + why, "wait");
    };
    show();
    countdownTimer = setInterval(show, 200);
    retryTimer = setTimeout(() => { if (wanted) open(); }, ms);
  }

  // ask sends {"type":"fib","n":N,"id":"rK"}. The number is sent as typed when it is a JSON
  // number, so the gateway (not the page) decides what is valid: -1, 10.5 and 1e400 all get
  // the gateway's invalid_n.
  function ask() {
    if (ws === null || ws.readyState !== WebSocket.OPEN) return;
    const raw = el.n.value.trim();
    let lit;
    if (/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(raw)) lit = raw;
    else if (raw !== "" && Number.isFinite(Number(raw))) lit = JSON.stringify(Number(raw));
    else { addLine("error: type a number from 0 to " + maxN, "", true); return; }
    const id = "r" + nextID++;
    pending.set(id, { n: raw, sent: performance.now() });
    ws.send('{"type":"fib","n":' + lit + ',"id":' + JSON.stringify(id) + "}");
    el.n.select();
  }

  function elapsed(id) {
    const p = pending.get(id);
    if (!p) return "";
    pending.delete(id);
    const ms = performance.now() - p.sent;
    return ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
  }

  function onFib(f) {
    const took = elapsed(f.id);
    const result = String(f.result);
    const li = document.createElement("li");
    li.className = "fib";
    const head = "F(" + f.n + ") = ";
    if (result.length <= LONG) {
      li.append(head + result);
    } else {
      li.append(head + result.slice(0, EDGE) + "…" + result.slice(-EDGE));
      li.append(span("note", result.length + " digits"));
      const full = document.createElement("div");
      full.className = "full";
      full.hidden = true;
      full.textContent = result;
      const toggle = button("show all", () => {
        full.hidden = !full.hidden;
        toggle.textContent = full.hidden ? "show all" : "hide";
      });
      const copy = button("copy", () => copyText(result, full, copy));
      const actions = document.createElement("span");
      actions.className = "actions";
      actions.append(toggle, copy);
      li.append(actions, full);
    }
    if (took) li.append(span("note", took));
    push(li);
  }

  function onError(f) {
    const p = f.id ? pending.get(f.id) : undefined;
    const took = f.id ? elapsed(f.id) : "";
    let note = p ? "F(" + p.n + "), " + f.id : (f.id ? f.id : "");
    if (took) note += (note ? ", " : "") + took;
    addLine("error " + f.code + ": " + f.message, note, true);
  }

  function failPending(why) {
    for (const [id, p] of pending) addLine("error: no answer to F(" + p.n + "): " + why, id, true);
    pending.clear();
  }

  function addLine(text, note, isError) {
    const li = document.createElement("li");
    if (isError) li.className = "error";
    li.append(text);
    if (note) li.append(span("note", note));
    push(li);
  }

  function push(li) {
    el.answers.append(li);
    while (el.answers.children.length > MAX_ANSWERS) el.answers.firstElementChild.remove();
    el.answers.scrollTop = el.answers.scrollHeight;
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function button(text, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small";
    b.textContent = text;
    b.addEventListener("click", onclick);
    return b;
  }

  // copyText copies with the Clipboard API where the page is a secure context; elsewhere it
  // shows the whole value selected, for Ctrl+C.
  function copyText(text, full, btn) {
    const done = (label) => { btn.textContent = label; setTimeout(() => { btn.textContent = "copy"; }, 1500); };
    const fallback = () => {
      full.hidden = false;
      const sel = window.getSelection();
      sel.selectAllChildren(full);
      let ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { /* unsupported */ }
      done(ok ? "copied" : "selected: press Ctrl+C");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => done("copied"), fallback);
    } else {
      fallback();
    }
  }

  $("connform").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
  el.disconnect.addEventListener("click", disconnect);
  el.refresh.addEventListener("click", refresh);
  el.tokenrow.hidden = !AUTH;
  $("namerow").hidden = AUTH;
  $("fibform").addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  el.clear.addEventListener("click", () => { el.answers.replaceChildren(); });
  // Back online while waiting to retry: try now instead of at the end of the backoff.
  window.addEventListener("online", () => { if (wanted && retryTimer) open(); });

  try { el.user.value = localStorage.getItem("wsgw.user") || ""; } catch (e) { /* storage disabled */ }
  updateButtons();
})();
