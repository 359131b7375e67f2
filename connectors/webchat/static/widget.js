/*
 * Acme Shop chat widget: plain JavaScript, no build step, nothing loaded from elsewhere.
 *
 * Host sites:   OmniChat.init({element: "#chat", token: "<JWT>"})   or   {tokenUrl: "/chat-token"}
 * Anonymous:    OmniChat.init({element: "#chat", anonymous: true})
 * Served page:  <script src="static/widget.js" data-omnichat-page="#omni-chat"> reads the
 *               token from the link's #token=... fragment (then removes it from the address bar).
 *
 * Speaks the JSON frames documented in docs/INTEGRATORS.md ("Web chat protocol").
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var DEFAULT_SERVER = script && script.src ? new URL("../", script.src).href : null;
  var KINDS = { call_summary: "Call summary", notification: "Notification" };
  // What a customer may attach (the server checks the bytes again and bounds the size).
  var ACCEPT = "image/jpeg,image/png,image/webp,image/gif,application/pdf";
  var MAX_ATTACHMENTS = 4;
  var MEDIA_LABELS = { image: "Photo", audio: "Voice note", video: "Video", document: "File", contact: "Contact", other: "File" };
  var HEARTBEAT_MS = 25000;
  var PONG_TIMEOUT_MS = 10000;
  var MAX_BACKOFF_MS = 30000;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") node.textContent = attrs[name];
      else if (name === "className") node.className = attrs[name];
      else node.setAttribute(name, attrs[name]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function clientId() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function formatTime(seconds) {
    var date = new Date(seconds * 1000);
    var sameDay = date.toDateString() === new Date().toDateString();
    var time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return sameDay ? time : date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  function Chat(options) {
    this.options = options;
    this.server = (options.serverUrl || DEFAULT_SERVER || location.href).replace(/\/?$/, "/");
    this.root = typeof options.element === "string" ? document.querySelector(options.element) : options.element;
    if (!this.root) throw new Error("OmniChat: element not found");
    this.token = options.token || null;
    this.pending = {};          // client id -> {frame, node} until acknowledged
    this.sent = {};             // client id -> {frame, node}, to offer "Send again" after an error
    this.before = null;         // history cursor for older messages
    this.channels = {};         // channel kind -> label, as the server's ready frame names them
    this.attempt = 0;
    this.stopped = false;
    this.build();
    this.connect();
  }

  Chat.prototype.build = function () {
    var uid = "omni-" + clientId().slice(0, 6);
    this.status = el("span", { className: "omni-status", role: "status", text: "Connecting…" });
    this.olderButton = el("button", { type: "button", className: "omni-older", text: "Show earlier messages" });
    this.olderButton.hidden = true;
    this.log = el("ol", {
      className: "omni-log", role: "log", "aria-live": "polite", "aria-relevant": "additions",
      "aria-label": "Conversation", tabindex: "0"
    });
    this.typing = el("div", { className: "omni-typing", role: "status", "aria-live": "polite" });
    this.input = el("textarea", { id: uid + "-input", rows: "1", maxlength: "4000", placeholder: "Type a message…", autocomplete: "off" });
    this.sendButton = el("button", { type: "submit", text: "Send" });
    this.fileInput = el("input", { type: "file", accept: ACCEPT, multiple: "multiple", className: "omni-visually-hidden", id: uid + "-file", tabindex: "-1" });
    this.attachButton = el("button", { type: "button", className: "omni-attach", "aria-label": "Attach a photo or PDF", title: "Attach a photo or PDF", text: "+" });
    this.form = el("form", { className: "omni-form" }, [
      el("label", { "for": uid + "-input", className: "omni-visually-hidden", text: "Message to the assistant" }),
      this.attachButton, this.fileInput, this.input, this.sendButton
    ]);
    var section = el("section", { className: "omni-chat", "aria-labelledby": uid + "-title" }, [
      el("header", { className: "omni-header" }, [
        el("h2", { id: uid + "-title", text: this.options.title || "Acme Shop assistant" }), this.status
      ]),
      this.olderButton, this.log, this.typing, this.form
    ]);
    this.root.appendChild(section);
    var self = this;
    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = self.input.value.trim();
      if (!text) return;
      self.input.value = "";
      self.sendUser({ type: "message", id: clientId(), text: text }, text);
    });
    this.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); self.form.requestSubmit(); }
    });
    this.olderButton.addEventListener("click", function () {
      if (self.before !== null) self.send({ type: "history", before: self.before });
    });
    this.attachButton.addEventListener("click", function () { self.fileInput.click(); });
    this.fileInput.addEventListener("change", function () {
      var files = Array.prototype.slice.call(self.fileInput.files || [], 0, MAX_ATTACHMENTS);
      self.fileInput.value = "";
      if (files.length) self.attach(files);
    });
  };

  // Files go first, each by POST /files with the chat token; then one message names them. The
  // server answers a refused file (too large, not a photo or PDF) with a reason, shown here.
  Chat.prototype.attach = function (files) {
    var self = this;
    var text = this.input.value.trim();
    this.input.value = "";
    this.getToken().then(function (token) {
      return Promise.all(files.map(function (file) {
        return fetch(self.server + "files", {
          method: "POST",
          headers: { "Authorization": "Bearer " + token, "Content-Type": "application/octet-stream", "X-File-Name": encodeURIComponent(file.name) },
          body: file,
          cache: "no-store"
        }).then(function (r) {
          return r.json().catch(function () { return {}; }).then(function (body) {
            if (!r.ok) throw new Error(file.name + ": " + (body.error || "not accepted (" + r.status + ")"));
            return body;
          });
        });
      }));
    }).then(function (uploaded) {
      var frame = { type: "message", id: clientId(), text: text, attachments: uploaded.map(function (m) { return m.upload_id; }) };
      self.sendUser(frame, text, uploaded);
    }).catch(function (error) {
      if (text) self.input.value = text;
      self.system("Not sent: " + error.message);
    });
  };

  // A file of this conversation, read with the chat token (never a public URL).
  Chat.prototype.fetchFile = function (url) {
    var self = this;
    return this.getToken().then(function (token) {
      return fetch(new URL(url, self.server).href, { headers: { "Authorization": "Bearer " + token }, cache: "no-store" });
    }).then(function (r) {
      if (!r.ok) throw new Error("file " + r.status);
      return r.blob();
    });
  };

  Chat.prototype.renderMedia = function (item) {
    var self = this;
    var label = (MEDIA_LABELS[item.kind] || "File") + (item.name ? ": " + item.name : "");
    if (!item.url) return el("span", { className: "omni-media", text: label });
    if (item.kind === "image") {
      var img = el("img", { className: "omni-image", alt: label });
      this.fetchFile(item.url).then(function (blob) { img.src = URL.createObjectURL(blob); })
        .catch(function () { img.replaceWith(el("span", { className: "omni-media", text: label })); });
      return img;
    }
    var open = el("button", { type: "button", className: "omni-media", text: label });
    open.addEventListener("click", function () {
      self.fetchFile(item.url).then(function (blob) {
        var link = el("a", { href: URL.createObjectURL(blob), download: item.name || "file" });
        link.click();
      }).catch(function (error) { self.system("Could not open the file: " + error.message); });
    });
    return open;
  };

  Chat.prototype.setStatus = function (text) { this.status.textContent = text; };

  Chat.prototype.getToken = function () {
    var self = this;
    if (this.token) return Promise.resolve(this.token);
    if (this.options.tokenUrl) {
      return fetch(this.options.tokenUrl, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { if (!r.ok) throw new Error("token " + r.status); return r.json(); })
        .then(function (body) { self.token = body.token; return self.token; });
    }
    if (this.options.anonymous) {
      var key = "omnichat.anonymous." + this.server;
      var saved = JSON.parse(localStorage.getItem(key) || "null");
      if (saved && saved.expires_at > Date.now() / 1000 + 60) return Promise.resolve(saved.token);
      return fetch(this.server + "session", { method: "POST", cache: "no-store" })
        .then(function (r) {
          if (r.status === 403) { self.fatal("Please sign in on the shop's site to chat."); throw new Error("anonymous chat disabled"); }
          if (!r.ok) throw new Error("session " + r.status);
          return r.json();
        })
        .then(function (body) { localStorage.setItem(key, JSON.stringify(body)); return body.token; });
    }
    this.fatal("This chat link has no sign-in token.");
    return Promise.reject(new Error("no token"));
  };

  Chat.prototype.connect = function () {
    var self = this;
    if (this.stopped) return;
    this.setStatus(this.attempt ? "Reconnecting…" : "Connecting…");
    this.getToken().then(function (token) {
      var ws = new WebSocket(self.server.replace(/^http/, "ws") + "ws");
      self.ws = ws;
      ws.onopen = function () {
        var auth = { type: "auth", token: token };
        // The customer's own zone: what the shop sends first waits for their morning.
        try { auth.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || undefined; } catch (e) { /* none */ }
        ws.send(JSON.stringify(auth));
      };
      ws.onmessage = function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        self.handle(frame);
      };
      ws.onclose = function (event) { self.closed(ws, event); };
    }).catch(function (error) {
      if (!self.stopped) self.retry();
      if (window.console) console.warn("OmniChat:", error.message);
    });
  };

  Chat.prototype.closed = function (ws, event) {
    if (ws !== this.ws) return;
    clearInterval(this.heartbeat);
    clearTimeout(this.pongTimer);
    this.typing.textContent = "";
    if (event.code === 4401 && (this.options.tokenUrl || this.options.anonymous)) {
      this.token = null;   // fetch a fresh one
      if (this.options.anonymous) localStorage.removeItem("omnichat.anonymous." + this.server);
    } else if (event.code === 4429) {
      this.fatal("This chat is already open in too many windows. Close one, then reload this page.");
      return;
    } else if (event.code === 4401 || event.code === 4403) {
      this.fatal(event.code === 4401 && /expired/.test(event.reason)
        ? "This chat link has expired. Please open the chat again from the shop's site."
        : "The chat could not sign you in (" + (event.reason || "refused") + ").");
      return;
    }
    this.retry();
  };

  Chat.prototype.retry = function () {
    var self = this;
    var delay = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, this.attempt)) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.setStatus("Offline — reconnecting in " + Math.round(delay / 1000) + " s");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(function () { self.connect(); }, delay);
  };

  Chat.prototype.fatal = function (message) {
    this.stopped = true;
    this.setStatus("Disconnected");
    this.system(message);
    this.input.disabled = true;
    this.sendButton.disabled = true;
  };

  Chat.prototype.send = function (frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(frame)); return true; }
    return false;
  };

  Chat.prototype.startHeartbeat = function () {
    var self = this;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(function () {
      if (!self.send({ type: "ping" })) return;
      clearTimeout(self.pongTimer);
      self.pongTimer = setTimeout(function () { if (self.ws) self.ws.close(4000, "no pong"); }, PONG_TIMEOUT_MS);
    }, HEARTBEAT_MS);
  };

  Chat.prototype.handle = function (frame) {
    switch (frame.type) {
      case "ready":
        this.attempt = 0;
        this.channels = frame.channels || {};
        Array.prototype.forEach.call(this.log.querySelectorAll(".omni-meta"), this.label, this);
        this.setStatus("Connected");
        this.startHeartbeat();
        break;
      case "history":
        this.showHistory(frame);
        if (frame.initial) {
          // Resend what was never acknowledged: the server dedupes by id, so this is safe.
          for (var id in this.pending) this.send(this.pending[id].frame);
        }
        break;
      case "message":
        this.showMessage(frame.message, false);
        break;
      case "ack":
        this.acknowledged(frame.id);
        break;
      case "typing":
        this.typing.textContent = frame.on ? "The assistant is typing…" : "";
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      case "error":
        this.showError(frame);
        break;
    }
  };

  Chat.prototype.showHistory = function (frame) {
    var self = this;
    if (frame.initial) {
      Array.prototype.slice.call(this.log.children).forEach(function (node) {
        if (!node.classList.contains("omni-pending")) node.remove();
      });
    }
    var anchor = this.log.firstChild;   // history goes above anything shown already
    var height = this.log.scrollHeight;
    // Screen readers announce new messages, not a replayed page of history.
    var log = this.log;
    log.setAttribute("aria-live", "off");
    frame.messages.forEach(function (message) {
      var local = message.client_message_id && self.pending[message.client_message_id];
      if (local) {
        // Stored before the socket dropped: the history copy replaces the pending bubble.
        delete self.pending[message.client_message_id];
        if (anchor === local.node) anchor = local.node.nextSibling;
        local.node.remove();
      }
      var node = self.renderMessage(message);
      if (node) self.log.insertBefore(node, anchor);
    });
    setTimeout(function () { log.setAttribute("aria-live", "polite"); }, 0);
    this.before = frame.before;
    this.olderButton.hidden = frame.before === null;
    if (frame.initial) this.scrollDown();
    else this.log.scrollTop += this.log.scrollHeight - height;
  };

  Chat.prototype.showMessage = function (message) {
    if (message.client_message_id && this.log.querySelector('[data-client-id="' + CSS.escape(message.client_message_id) + '"]')) return;
    var node = this.renderMessage(message);
    if (!node) return;
    this.log.appendChild(node);
    this.scrollDown();
  };

  Chat.prototype.renderMessage = function (message) {
    if (this.log.querySelector('[data-id="' + CSS.escape(message.id) + '"]')) return null;
    var self = this;
    var node = el("li", { className: "omni-msg omni-" + message.role + (message.kind ? " omni-kind-" + message.kind : "") });
    node.dataset.id = message.id;
    if (message.client_message_id) node.dataset.clientId = message.client_message_id;
    node.appendChild(this.meta(message.role, message.channel, message.timestamp, message.kind, message.agent_name));
    var bubble = el("div", { className: "omni-bubble" });
    // A person from the support team writes like the bot does: HTML the server escaped.
    if ((message.role === "bot" || message.role === "agent") && message.html) bubble.innerHTML = message.html;
    else bubble.textContent = message.text || "";
    if (message.text || message.html) node.appendChild(bubble);
    (message.media || []).forEach(function (item) { node.appendChild(self.renderMedia(item)); });
    if (message.image) node.appendChild(el("img", { className: "omni-image", src: message.image, alt: "Image from the assistant", loading: "lazy" }));
    // A file the assistant sends: a link, and only to a web address (never javascript: or data:).
    if (message.attachment && /^https?:\/\//i.test(message.attachment)) {
      node.appendChild(el("a", { className: "omni-attachment", href: message.attachment, target: "_blank", rel: "noopener noreferrer", text: message.attachment }));
    }
    if (message.buttons && message.buttons.length) {
      var group = el("div", { className: "omni-buttons", role: "group", "aria-label": "Suggested replies" });
      message.buttons.forEach(function (button) {
        if (button.url) {
          group.appendChild(el("a", { className: "omni-link-button", href: button.url, target: "_blank", rel: "noopener noreferrer", text: button.title }));
          return;
        }
        var b = el("button", { type: "button", text: button.title });
        b.addEventListener("click", function () {
          if (b.getAttribute("aria-disabled") === "true") return;
          Array.prototype.forEach.call(group.children, function (other) { other.setAttribute("aria-disabled", "true"); });
          self.sendUser({ type: "button", id: clientId(), payload: button.payload, title: button.title }, button.title);
          self.input.focus();
        });
        group.appendChild(b);
      });
      node.appendChild(group);
    }
    if (message.custom && this.options.onCustom) this.options.onCustom(message.custom, node);
    return node;
  };

  Chat.prototype.meta = function (role, channel, timestamp, kind, agentName) {
    var meta = el("div", { className: "omni-meta" }, [el("span", { className: "omni-visually-hidden" })]);
    meta.dataset.who = role === "user" ? "You" : role === "agent" ? agentName + " from our support team" : "Assistant";
    if (channel) meta.dataset.channel = channel;
    this.label(meta);
    // A person's reply shows who wrote it (set as text: a name is never markup).
    if (role === "agent") meta.appendChild(el("span", { className: "omni-agent", text: agentName + " · support team" }));
    if (kind && KINDS[kind]) meta.appendChild(el("span", { className: "omni-kind", text: KINDS[kind] }));
    if (timestamp) meta.appendChild(el("time", { datetime: new Date(timestamp * 1000).toISOString(), text: formatTime(timestamp) }));
    return meta;
  };

  // Who said it, and the channel badge. The labels come in the server's ready frame (the one
  // place they are written); a message shown before it (typed offline) is labelled once it comes.
  Chat.prototype.label = function (meta) {
    var channel = meta.dataset.channel;
    var label = channel && Object.prototype.hasOwnProperty.call(this.channels, channel) ? this.channels[channel] : "";
    meta.firstChild.textContent = meta.dataset.who + (label ? " via " + label : "") + ":";
    if (label && !meta.querySelector(".omni-badge")) {
      meta.insertBefore(el("span", { className: "omni-badge omni-badge-" + channel, "aria-hidden": "true", text: label }), meta.firstChild.nextSibling);
    }
  };

  Chat.prototype.sendUser = function (frame, shown, media) {
    var node = this.renderMessage({ id: "local:" + frame.id, role: "user", channel: "chat", text: shown, media: media, timestamp: Date.now() / 1000, client_message_id: frame.id });
    node.classList.add("omni-pending");
    this.log.appendChild(node);
    this.scrollDown();
    this.pending[frame.id] = this.sent[frame.id] = { frame: frame, node: node };
    this.send(frame); // if offline, the reconnect resends it
  };

  Chat.prototype.acknowledged = function (id) {
    var entry = this.pending[id];
    if (!entry) return;
    delete this.pending[id];
    entry.node.classList.remove("omni-pending", "omni-failed");
    var note = entry.node.querySelector(".omni-note");
    if (note) note.remove();
  };

  Chat.prototype.showError = function (frame) {
    var self = this;
    var entry = frame.id && this.sent[frame.id];
    var node = frame.id && this.log.querySelector('[data-client-id="' + CSS.escape(frame.id) + '"]');
    if (frame.code === "rate_limited" && entry) {
      setTimeout(function () { self.send(entry.frame); }, Math.ceil(frame.retry_after * 1000));
      return;
    }
    if (node) {
      delete this.pending[frame.id];
      node.classList.remove("omni-pending");
      node.classList.add("omni-failed");
      var note = el("div", { className: "omni-note", role: "alert", text: "Not processed: " + frame.message });
      node.appendChild(note);
      if (frame.retry && entry) {
        var again = el("button", { type: "button", text: "Send again" });
        again.addEventListener("click", function () {
          note.remove(); again.remove(); node.classList.remove("omni-failed"); node.classList.add("omni-pending");
          self.pending[frame.id] = entry; self.send(entry.frame);
        });
        node.appendChild(again);
      }
      return;
    }
    this.system(frame.message);
  };

  Chat.prototype.system = function (text) {
    this.log.appendChild(el("li", { className: "omni-system", role: "alert", text: text }));
    this.scrollDown();
  };

  Chat.prototype.scrollDown = function () { this.log.scrollTop = this.log.scrollHeight; };

  window.OmniChat = {
    init: function (options) { return new Chat(options || {}); }
  };

  // The page served at /webhooks/webchat/: token from the fragment, kept for reloads in this tab.
  if (script && script.dataset.omnichatPage) {
    var match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem("omnichat.token", decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    var token = sessionStorage.getItem("omnichat.token");
    var start = function () {
      window.OmniChat.init(token ? { element: script.dataset.omnichatPage, token: token }
                                 : { element: script.dataset.omnichatPage, anonymous: true });
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
