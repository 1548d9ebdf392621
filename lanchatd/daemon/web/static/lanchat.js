// lanchat's page: the room over one WebSocket at /ws, one text frame per line.
//
// The wire is the tagged line protocol (docs/protocol.md, "Telling lines apart", and message
// ids): every frame is "@tags line"; room events carry an id, replayed ones the "history"
// tag. The page sends its nickname as the first frame, or "/cap ids after=<id>" and then the
// nickname when it comes back, so the server replays exactly what it missed.
//
// The server's lines are recognised by the templates of its catalogue (catalog.json, made
// from lanchatd/core/catalog.py), in every language it may speak, never by how one
// translation begins. Everything other people wrote is put in the page as text
// (textContent), never as HTML.
"use strict";

(() => {
  // The page's own words; the server's lines come in the server's language already.
  const WORDS = {
    id: {
      nick_label: "Nama panggilan",
      join: "Masuk",
      message_label: "Pesan",
      send: "Kirim",
      online_count: "Online ({count})",
      log_label: "Percakapan",
      qr: "QR",
      qr_alt: "Kode QR alamat halaman ini",
      notify: "Notifikasi",
      connecting: "Menyambung\u2026",
      connected: "Tersambung sebagai {nick}",
      reconnecting: "Terputus; menyambung ulang dalam {seconds} detik\u2026",
      reconnecting_now: "Menyambung ulang\u2026",
      waiting: "{count} pesan menunggu dikirim",
      history: "riwayat",
      not_reconnecting: "Halaman ini tidak akan menyambung ulang.",
      removed: "Server mengeluarkan halaman ini.",
      left: "Anda sudah keluar.",
      unreachable: "Server tidak dapat dihubungi; coba lagi.",
      no_catalog: "Halaman tidak termuat lengkap; muat ulang halaman.",
    },
    en: {
      nick_label: "Nickname",
      join: "Join",
      message_label: "Message",
      send: "Send",
      online_count: "Online ({count})",
      log_label: "Conversation",
      qr: "QR",
      qr_alt: "QR code of this page's address",
      notify: "Notifications",
      connecting: "Connecting\u2026",
      connected: "Connected as {nick}",
      reconnecting: "Disconnected; reconnecting in {seconds} s\u2026",
      reconnecting_now: "Reconnecting\u2026",
      waiting: "{count} messages waiting to be sent",
      history: "history",
      not_reconnecting: "This page will not reconnect.",
      removed: "The server put this page out.",
      left: "You left the room.",
      unreachable: "The server cannot be reached; try again.",
      no_catalog: "The page did not load completely; reload it.",
    },
  };

  // Refusals that a page coming back may outwait: its old connection still holds the
  // nickname for a moment, or the server is busy. Any other refusal goes back to the form.
  const TRANSIENT = new Set([
    "nick_taken",
    "nick_lookalike",
    "nick_timeout",
    "server_full",
    "handshake_shed",
    "per_address",
  ]);
  // Close codes of a page put out by an administrator (kicked, banned; docs/web.md): a
  // second sign, should the line saying so not have arrived.
  const REMOVED_CODES = new Set([4001, 4003]);
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_ENTRIES = 2000; // older entries leave the page, as a terminal's scrollback
  const BASE_TITLE = document.title;

  const $ = (id) => document.getElementById(id);
  const page = {
    status: $("status"),
    joinForm: $("join"),
    nick: $("nick"),
    joinButton: $("join-button"),
    nickError: $("nick-error"),
    room: $("room"),
    log: $("log"),
    who: $("who"),
    whoTitle: $("who-title"),
    whoList: $("who-list"),
    whoToggle: $("who-toggle"),
    sendForm: $("send"),
    message: $("message"),
    qr: $("qr"),
    qrToggle: $("qr-toggle"),
    qrImage: $("qr-image"),
    qrCaption: $("qr-caption"),
    notify: $("notify"),
  };

  const state = {
    lang: initialLanguage(),
    catalog: null, // {templates: {key: [{lang, regex, names}]}, refusals: Set, removals: Set}
    nick: "",
    socket: null,
    joined: false, // this connection has been welcomed
    everJoined: false, // the page has been in the room: reconnects resume
    removed: "", // the server's kick or ban line: never reconnect
    leaving: false, // the user sent /quit
    lastServerLine: "", // a refusal arrives as the last server line before the close
    newestId: "",
    seenIds: new Set(),
    anchor: null, // our own join line: replayed entries go before it
    replaying: false, // between the welcome and the first live line
    attempt: 0,
    retryTimer: 0,
    outbox: [], // typed while away: sent once back in
    reconnecting: "", // the status while away, without the count of waiting messages
    unread: 0,
    whoPending: 0,
    online: new Set(),
  };

  function storage(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem(key) || "";
      window.localStorage.setItem(key, value);
    } catch {
      // Storage can be refused (private windows): the page works without it.
    }
    return "";
  }

  function initialLanguage() {
    const lang = storage("lanchat.lang") || document.documentElement.lang;
    return lang in WORDS ? lang : "id";
  }

  function word(key, fields = {}) {
    return WORDS[state.lang][key].replace(/\{(\w+)\}/g, (_, name) => String(fields[name]));
  }

  function applyLanguage(lang) {
    state.lang = lang;
    storage("lanchat.lang", lang);
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-word]")) {
      node.textContent = word(node.dataset.word);
    }
    page.log.setAttribute("aria-label", word("log_label"));
    page.qrImage.alt = word("qr_alt");
    showOnline();
  }

  // ---- the server's catalogue -------------------------------------------------------------

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // A template as a regular expression: literal text exact, each {field} any text.
  function compile(template) {
    const names = [];
    let source = "";
    let last = 0;
    for (const found of template.matchAll(/\{(\w+)(?::[^}]*)?\}/g)) {
      source += escapeRegExp(template.slice(last, found.index)) + "(.*)";
      names.push(found[1]);
      last = found.index + found[0].length;
    }
    source += escapeRegExp(template.slice(last));
    return { regex: new RegExp(`^${source}$`, "s"), names };
  }

  function loadCatalog(data) {
    const templates = {};
    for (const [lang, strings] of Object.entries(data.languages)) {
      for (const [key, template] of Object.entries(strings)) {
        (templates[key] ||= []).push({ lang, ...compile(template) });
      }
    }
    return { templates, refusals: new Set(data.refusals), removals: new Set(data.removals) };
  }

  // The language and fields if `line` is the catalogue's `key`, else null.
  function match(key, line) {
    for (const { lang, regex, names } of state.catalog.templates[key] || []) {
      const found = regex.exec(line);
      if (found) {
        const fields = {};
        names.forEach((name, index) => {
          fields[name] = found[index + 1];
        });
        return { lang, fields };
      }
    }
    return null;
  }

  // The refusal or removal key a server line is, or "".
  function refusalKey(line) {
    if (!line.startsWith("*")) return "";
    for (const key of [...state.catalog.removals, ...state.catalog.refusals]) {
      if (match(key, line)) return key;
    }
    return "";
  }

  // ---- lines ------------------------------------------------------------------------------

  function parseTags(frame) {
    const tags = {};
    if (!frame.startsWith("@")) return { tags, text: frame };
    const space = frame.indexOf(" ");
    const head = space < 0 ? frame.slice(1) : frame.slice(1, space);
    for (const item of head.split(";")) {
      const equals = item.indexOf("=");
      if (equals < 0) tags[item] = true;
      else tags[item.slice(0, equals)] = item.slice(equals + 1);
    }
    return { tags, text: space < 0 ? "" : frame.slice(space + 1) };
  }

  // Message ids are "<ms>-<seq>": compared as numbers, part by part.
  function newer(id, than) {
    if (!than) return true;
    const [ms, seq] = id.split("-").map(Number);
    const [thanMs, thanSeq] = than.split("-").map(Number);
    return ms > thanMs || (ms === thanMs && seq > thanSeq);
  }

  // Hue from the nickname's CRC-32, as lanchat colours nicknames: the same for everyone.
  const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });

  function hue(nick) {
    let crc = 0xffffffff;
    for (const byte of new TextEncoder().encode(nick.toLowerCase())) {
      crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
    }
    return ((crc ^ 0xffffffff) >>> 0) % 360;
  }

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text;
    return node;
  }

  function nickSpan(nick) {
    const node = span("nick", nick);
    node.style.setProperty("--hue", String(hue(nick)));
    return node;
  }

  // The longest nickname online that `text` starts with, followed by a space ("" if none):
  // nicknames may hold spaces, so an action's nickname ends where a known one does.
  function leadingNick(text) {
    let best = "";
    for (const nick of state.online) {
      if (nick.length > best.length && text.startsWith(`${nick} `)) best = nick;
    }
    return best;
  }

  // What a line is, and its parts to show (docs/protocol.md, "Telling lines apart").
  function describe(text) {
    if (text.startsWith("**")) {
      const key = refusalKey(text);
      return { kind: key || match("shutdown", text) ? "error" : "notice", parts: [text] };
    }
    if (text.startsWith("* ")) {
      const nick = leadingNick(text.slice(2));
      const rest = text.slice(2 + nick.length);
      return { kind: "action", nick, parts: nick ? ["* ", nickSpan(nick), rest] : [text] };
    }
    if (text.startsWith("*")) {
      const outgoing = text.startsWith("*-> ");
      const body = text.slice(outgoing ? 4 : 1);
      const end = body.indexOf("* ");
      if (end > 0) {
        const nick = body.slice(0, end);
        const open = outgoing ? "*-> " : "*";
        return {
          kind: "private",
          nick: outgoing ? "" : nick,
          parts: [
            span("direction", open),
            nickSpan(nick),
            span("direction", "*"),
            body.slice(end + 1),
          ],
        };
      }
      return { kind: "notice", parts: [text] };
    }
    const colon = text.indexOf(":");
    if (colon > 0 && text.slice(0, colon).trim()) {
      const nick = text.slice(0, colon);
      return { kind: "chat", nick, parts: [nickSpan(nick), text.slice(colon)] };
    }
    if (match("welcome", text)) return { kind: "welcome", parts: [text] };
    for (const [key, kind] of [
      ["joined", "join"],
      ["left", "leave"],
    ]) {
      const found = match(key, text);
      if (found) {
        const nick = found.fields.nick;
        return { kind, nick, parts: [nickSpan(nick), text.slice(nick.length)] };
      }
    }
    return { kind: "other", parts: [text] };
  }

  const CLOCK = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }; // 09:15, as history

  function clock(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return null;
    const node = document.createElement("time");
    node.dateTime = iso;
    node.textContent = when.toLocaleTimeString([], CLOCK);
    return node;
  }

  function entry(described, tags) {
    const node = document.createElement("div");
    node.className = `line line-${described.kind}`;
    if (tags.id) node.dataset.id = tags.id;
    const stamp = typeof tags.time === "string" ? clock(tags.time) : null;
    if (stamp) node.append(stamp, " ");
    if (tags.history) {
      node.classList.add("history");
      node.append(span("history-label", word("history")), " ");
    }
    node.append(...described.parts);
    return node;
  }

  function atBottom() {
    const log = page.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function show(node, before = null) {
    const follow = atBottom();
    page.log.insertBefore(node, before);
    while (page.log.childElementCount > MAX_ENTRIES) page.log.firstElementChild.remove();
    if (follow) page.log.scrollTop = page.log.scrollHeight;
  }

  // ---- who is online ----------------------------------------------------------------------

  function showOnline() {
    const nicks = [...state.online].sort((a, b) => a.localeCompare(b));
    page.whoList.replaceChildren(
      ...nicks.map((nick) => {
        const item = document.createElement("li");
        item.append(nickSpan(nick));
        return item;
      }),
    );
    const label = word("online_count", { count: nicks.length });
    page.whoTitle.textContent = label;
    page.whoToggle.textContent = label;
  }

  function askWho() {
    state.whoPending += 1;
    state.socket.send("/who");
  }

  // ---- receiving --------------------------------------------------------------------------

  function receive(frame) {
    const { tags, text } = parseTags(frame);
    const key = refusalKey(text);
    if (state.catalog.removals.has(key)) state.removed = text;
    const greeting = !state.joined;
    if (greeting && !receiveBeforeWelcome(text, key)) return;
    // Replayed entries come right after the welcome; later ones answer the user's /history.
    if (!tags.history && !greeting) state.replaying = false;
    const replayed = Boolean(tags.history) && state.replaying;
    if (typeof tags.id === "string" && (replayed || !tags.history)) {
      if (state.seenIds.has(tags.id)) return;
      state.seenIds.add(tags.id);
      if (newer(tags.id, state.newestId)) state.newestId = tags.id;
    }
    const who = match("who", text);
    if (who && !tags.history) {
      state.online = new Set(who.fields.nicks ? who.fields.nicks.split(", ") : []);
      showOnline();
      if (state.whoPending > 0) {
        state.whoPending -= 1;
        return;
      }
    }
    const described = describe(text);
    const node = entry(described, tags);
    if (tags.history) {
      show(node, replayed && state.anchor && state.anchor.isConnected ? state.anchor : null);
      return;
    }
    show(node);
    if (described.kind === "join" && described.nick === state.nick && !state.anchor) {
      state.anchor = node;
    }
    if (described.kind === "join") state.online.add(described.nick);
    if (described.kind === "leave") state.online.delete(described.nick);
    if (described.kind === "join" || described.kind === "leave") showOnline();
    attention(described, text);
  }

  // Before the welcome only the server's prompt, our own join line and a refusal can come.
  // Returns whether the line is shown as well.
  function receiveBeforeWelcome(text, key) {
    if (text === "NICK") return false;
    const welcome = match("welcome", text);
    if (welcome) {
      welcomed(welcome.lang);
      return true;
    }
    if (text.startsWith("*")) state.lastServerLine = text;
    return !key;
  }

  function welcomed(lang) {
    state.joined = true;
    state.replaying = true;
    state.everJoined = true;
    state.attempt = 0;
    storage("lanchat.nick", state.nick);
    if (lang !== state.lang) applyLanguage(lang);
    page.joinForm.hidden = true;
    page.room.hidden = false;
    page.sendForm.hidden = false;
    page.whoToggle.hidden = false;
    setStatus(word("connected", { nick: state.nick }));
    askWho();
    for (const line of state.outbox.splice(0)) state.socket.send(line);
    if (document.activeElement === page.nick || document.activeElement === document.body) {
      page.message.focus();
    }
  }

  // ---- connecting -------------------------------------------------------------------------

  function setStatus(text, mode = "") {
    page.status.textContent = text;
    page.status.className = mode ? `status ${mode}` : "status";
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${window.location.host}/ws`);
    state.socket = socket;
    state.joined = false;
    state.lastServerLine = "";
    state.anchor = null;
    state.whoPending = 0;
    if (state.everJoined) showReconnecting(word("reconnecting_now"));
    else setStatus(word("connecting"));
    socket.addEventListener("open", () => {
      if (state.newestId) socket.send(`/cap ids after=${state.newestId}`);
      socket.send(state.nick);
    });
    socket.addEventListener("message", (event) => {
      if (socket !== state.socket || typeof event.data !== "string") return;
      for (const line of event.data.split("\n")) {
        if (line) receive(line.replace(/\r$/, ""));
      }
    });
    socket.addEventListener("close", (event) => {
      if (socket === state.socket) closed(event.code);
    });
  }

  function closed(code) {
    const wasJoined = state.joined;
    state.socket = null;
    state.joined = false;
    if (REMOVED_CODES.has(code) && !state.removed) {
      state.removed = state.lastServerLine || word("removed");
    }
    if (state.removed) {
      stopped(state.removed);
      return;
    }
    if (state.leaving) {
      state.leaving = false;
      state.everJoined = false;
      backToForm(word("left"));
      return;
    }
    const refusal = wasJoined ? "" : refusalKey(state.lastServerLine);
    if (refusal && !(state.everJoined && TRANSIENT.has(refusal))) {
      state.everJoined = false;
      backToForm(state.lastServerLine);
      return;
    }
    if (!state.everJoined) {
      backToForm(word("unreachable"));
      return;
    }
    retryLater(refusal ? state.lastServerLine : "");
  }

  function retryLater(reason) {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt);
    const jittered = Math.round(delay * (0.8 + 0.4 * Math.random()));
    state.attempt += 1;
    const seconds = Math.max(1, Math.round(jittered / 1000));
    showReconnecting([word("reconnecting", { seconds }), reason].filter(Boolean).join(" "));
    state.retryTimer = setTimeout(connect, jittered);
  }

  // The "reconnecting" status, with how many typed messages wait to be sent.
  function showReconnecting(text) {
    state.reconnecting = text;
    const count = state.outbox.length;
    setStatus(count ? `${text} ${word("waiting", { count })}` : text, "reconnecting");
  }

  // Kicked or banned: say why, keep what was said, and never come back by ourselves.
  function stopped(line) {
    clearTimeout(state.retryTimer);
    setStatus(`${line} ${word("not_reconnecting")}`, "removed");
    page.sendForm.hidden = true;
    if (!state.everJoined) backToForm(line);
  }

  function backToForm(reason) {
    page.joinForm.hidden = false;
    page.sendForm.hidden = true;
    page.nickError.textContent = reason;
    if (!state.removed) setStatus("");
    page.nick.focus();
  }

  // A phone wakes, or the network comes back: try at once rather than when the timer says.
  function wake(event) {
    const visible = document.visibilityState === "visible";
    if (visible) clearUnread();
    if (event.type === "visibilitychange" && !visible) return;
    if (state.everJoined && !state.removed && !state.socket) {
      state.attempt = 0;
      connect();
    }
  }

  // ---- attention while hidden -------------------------------------------------------------

  function clearUnread() {
    state.unread = 0;
    document.title = BASE_TITLE;
  }

  function attention(described, text) {
    if (!document.hidden || !["chat", "action", "private"].includes(described.kind)) return;
    if (described.nick === state.nick) return;
    state.unread += 1;
    document.title = `(${state.unread}) ${BASE_TITLE}`;
    const allowed = "Notification" in window && Notification.permission === "granted";
    if (window.isSecureContext && allowed) {
      new Notification(BASE_TITLE, { body: text, tag: "lanchat" });
    }
  }

  function offerNotifications() {
    page.notify.hidden = !(
      window.isSecureContext &&
      "Notification" in window &&
      Notification.permission === "default"
    );
  }

  // ---- the user ---------------------------------------------------------------------------

  function join(event) {
    event.preventDefault();
    if (!state.catalog) return;
    if (state.socket) {
      const previous = state.socket;
      state.socket = null;
      previous.close();
    }
    state.nick = page.nick.value.trim();
    state.removed = "";
    state.newestId = "";
    state.seenIds.clear();
    state.online.clear();
    page.log.replaceChildren();
    page.nickError.textContent = "";
    connect();
  }

  function send(event) {
    event.preventDefault();
    const text = page.message.value;
    if (!text.trim()) return;
    page.message.value = "";
    if (text.trim() === "/quit") state.leaving = true;
    if (state.socket && state.joined) {
      state.socket.send(text);
    } else {
      state.outbox.push(text);
      if (state.everJoined) showReconnecting(state.reconnecting);
    }
  }

  function toggleWho() {
    const open = page.who.classList.toggle("open");
    page.whoToggle.setAttribute("aria-expanded", String(open));
  }

  function toggleQr() {
    const open = page.qr.hidden;
    if (open && !page.qrImage.getAttribute("src")) {
      page.qrImage.src = "/qr.svg";
      page.qrCaption.textContent = `${window.location.origin}/`;
    }
    page.qr.hidden = !open;
    page.qrToggle.setAttribute("aria-expanded", String(open));
  }

  // The body is as tall as the visible part of the page: the message input, its last row,
  // stays above an on-screen keyboard even where the keyboard does not resize the page.
  function fitVisualViewport() {
    const viewport = window.visualViewport;
    if (!viewport || Math.abs(viewport.scale - 1) > 0.01) {
      document.body.classList.remove("fit-visual");
      return;
    }
    const follow = atBottom();
    document.documentElement.style.setProperty("--visual-height", `${viewport.height}px`);
    document.body.classList.add("fit-visual");
    window.scrollTo(0, 0);
    if (follow) page.log.scrollTop = page.log.scrollHeight;
  }

  function start() {
    applyLanguage(state.lang);
    page.nick.value = storage("lanchat.nick");
    page.joinForm.addEventListener("submit", join);
    page.sendForm.addEventListener("submit", send);
    page.whoToggle.addEventListener("click", toggleWho);
    page.qrToggle.addEventListener("click", toggleQr);
    page.notify.addEventListener("click", () => {
      Notification.requestPermission().then(offerNotifications);
    });
    document.addEventListener("visibilitychange", wake);
    window.addEventListener("online", wake);
    window.addEventListener("pageshow", wake);
    if (window.visualViewport) {
      window.visualViewport.addEventListener("resize", fitVisualViewport);
      fitVisualViewport();
    }
    offerNotifications();
    fetch("/catalog.json")
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then((data) => {
        state.catalog = loadCatalog(data);
        page.joinButton.disabled = false;
      })
      .catch(() => {
        page.nickError.textContent = word("no_catalog");
      });
  }

  start();
})();
