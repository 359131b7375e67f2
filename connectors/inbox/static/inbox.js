/* Support inbox: the queue of customers waiting for a person, one conversation at a time, and
 * the agent's replies, notes and hand-backs.
 *
 * The agent token comes from the sign-in link's fragment (#token=…, never sent to the server in
 * a URL) or is pasted; it lives in sessionStorage (this tab only) and travels in an
 * Authorization header and the socket's first frame. Everything shown is set as text
 * (textContent): no customer's words can put markup or script into this page. */
(function () {
  "use strict";

  var TOKEN_KEY = "omni-inbox-token";
  var LABELS = { voice: "Voice", sms: "SMS", whatsapp: "WhatsApp", chat: "Chat" };
  var STATES = { queued: "Waiting", claimed: "Claimed", handed_back: "Handed back to the bot", resolved: "Resolved", abandoned: "Abandoned", transferred: "Put through to the phone line" };
  var WHY = { requested: "the customer asked for a person", answer_while_waiting: "answered a question while the customer waits", withdrawn: "the customer withdrew the request", handed_back: "handed back", resolved: "resolved", given_up: "nobody claimed it in time", repaired: "state repaired" };
  var SHOWN = { user: 1, bot: 1, call_summary: 1, bot_state: 1, session: 1 };

  var $ = function (id) { return document.getElementById(id); };
  var me = null;
  var items = {};          // conversation id -> queue item
  var clockOffset = 0;     // server time - local time, seconds
  var current = null;      // the open conversation: {id, handoff, reach, keys, older}
  var socket = null;
  var watchWaiters = [];
  var reconnectDelay = 500;
  var pendingReply = null; // {id, text, channel}: resent with the same id after a failure
  var previewTimer = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function now() { return Date.now() / 1000 + clockOffset; }

  function ago(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  function when(timestamp) {
    if (typeof timestamp !== "number") return "";
    return new Date(timestamp * 1000).toLocaleTimeString();
  }

  function badge(channel) {
    if (!channel) return el("span", "i-badge", "channel unknown");
    return el("span", "i-badge i-badge-" + channel, LABELS[channel] || channel);
  }

  function api(path, body) {
    return fetch("api/" + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: JSON.stringify(body || {}),
      credentials: "omit",
      cache: "no-store",
    }).then(function (answer) {
      return answer.json().catch(function () { return {}; }).then(function (data) {
        if (answer.status === 401) signOut(data.error || "Sign in again.");
        return { status: answer.status, data: data };
      });
    });
  }

  // -- signing in -------------------------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    me = null;
    $("i-login-error").textContent = message || "";
    $("i-login").hidden = false;
    $("i-main").hidden = true;
    $("i-logout").hidden = true;
    $("i-me").textContent = "";
    $("i-connection").textContent = "Not signed in";
    $("i-token").focus();
  }

  function signIn() {
    api("me", {}).then(function (answer) {
      if (answer.status !== 200) {
        if (answer.status !== 401) $("i-login-error").textContent = answer.data.error || "The server could not be reached.";
        return;
      }
      me = answer.data.agent;
      $("i-me").textContent = me.name;
      $("i-login").hidden = true;
      $("i-main").hidden = false;
      $("i-logout").hidden = false;
      var owned = answer.data.owned_by;
      $("i-owned").hidden = !owned;
      $("i-owned").textContent = owned ? "Agents answer in " + owned + "; this inbox only shows conversations." : "";
      loadQueue();
      connect();
    }).catch(function () { $("i-login-error").textContent = "The server could not be reached."; });
  }

  // -- the queue --------------------------------------------------------------------------

  function loadQueue() {
    return api("queue", {}).then(function (answer) {
      if (answer.status !== 200) return;
      clockOffset = answer.data.now - Date.now() / 1000;
      items = {};
      answer.data.handoffs.forEach(function (item) { items[item.conversation_id] = item; });
      renderQueue();
    });
  }

  function isOpen(item) { return item.state === "queued" || item.state === "claimed"; }

  function ordered() {
    return Object.keys(items).map(function (id) { return items[id]; }).filter(isOpen).sort(function (a, b) {
      if (a.state !== b.state) return a.state === "queued" ? -1 : 1;
      return a.state === "queued" ? a.requested_at - b.requested_at : (a.claimed_at || 0) - (b.claimed_at || 0);
    });
  }

  function itemNode(item) {
    var li = el("li", "i-item" + (current && current.id === item.conversation_id ? " i-selected" : ""));
    li.dataset.conversation = item.conversation_id;
    var button = el("button");
    button.type = "button";
    var meta = el("span", "i-item-meta");
    meta.appendChild(badge(item.channel));
    var state = item.state === "claimed" && item.agent ? "Claimed by " + item.agent.name : "Waiting";
    meta.appendChild(el("span", "i-who", state));
    var wait = el("span", "i-wait");
    wait.dataset.since = String(item.state === "claimed" ? item.claimed_at || item.requested_at : item.requested_at);
    wait.dataset.prefix = item.state === "claimed" ? "claimed " : "waiting ";
    meta.appendChild(wait);
    button.appendChild(meta);
    var words = item.last_words || {};
    var said = el("span", "i-words", words.text ? "“" + words.text + "”" : "(no message)");
    button.appendChild(said);
    if (words.channel) said.prepend(badge(words.channel), document.createTextNode(" "));
    button.addEventListener("click", function () { open(item.conversation_id); });
    li.appendChild(button);
    return li;
  }

  function renderQueue() {
    var list = ordered();
    $("i-queue").replaceChildren.apply($("i-queue"), list.map(itemNode));
    $("i-empty").hidden = list.length > 0;
    var waiting = list.filter(function (item) { return item.state === "queued"; }).length;
    $("i-count").textContent = "(" + waiting + " waiting, " + (list.length - waiting) + " claimed)";
    tick();
  }

  function tick() {
    document.querySelectorAll(".i-wait").forEach(function (node) {
      node.textContent = node.dataset.prefix + ago(now() - Number(node.dataset.since)) + " ago";
    });
  }

  // -- the socket -------------------------------------------------------------------------

  function connect() {
    var url = location.href.replace(/^http/, "ws").replace(/[#?].*$/, "").replace(/\/?$/, "/") + "ws";
    var ws = new WebSocket(url);
    socket = ws;
    $("i-connection").textContent = "Connecting…";
    ws.onopen = function () { ws.send(JSON.stringify({ type: "auth", token: token() })); };
    ws.onmessage = function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      onFrame(frame);
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      if (event.code === 4401) { signOut(event.reason || "Sign in again."); return; }
      $("i-connection").textContent = "Reconnecting…";
      setTimeout(function () { if (token()) connect(); }, event.code === 1012 ? 100 : reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 10000);
    };
  }

  function watch(conversationId) {
    return new Promise(function (resolve) {
      if (!socket || socket.readyState !== WebSocket.OPEN) { resolve(); return; }
      watchWaiters.push({ id: conversationId || null, resolve: resolve });
      socket.send(JSON.stringify({ type: "watch", conversation_id: conversationId || null }));
      setTimeout(resolve, 3000);
    });
  }

  function onFrame(frame) {
    if (frame.type === "ready") {
      $("i-connection").textContent = "Live";
      reconnectDelay = 500;
      loadQueue();
      if (current) watch(current.id).then(function () { load(current.id); });
    } else if (frame.type === "watching") {
      watchWaiters = watchWaiters.filter(function (waiter) {
        if (waiter.id === frame.conversation_id) { waiter.resolve(); return false; }
        return true;
      });
    } else if (frame.type === "handoff") {
      items[frame.item.conversation_id] = frame.item;
      renderQueue();
      if (current && current.id === frame.item.conversation_id) showHandoff(frame.item);
    } else if (current && frame.conversation_id === current.id) {
      if (frame.type === "entry") {
        addEntry(frame.entry, false);
        lastUsed(frame.entry);
      }
      else if (frame.type === "note") addNote(frame.note);
      else if (frame.type === "message_status") showStatus(frame.message_id, frame.status);
    }
  }

  // -- one conversation ---------------------------------------------------------------------

  function open(conversationId) {
    current = { id: conversationId, handoff: null, keys: {}, reach: null, older: null, statuses: {} };
    pendingReply = null;
    $("i-text").value = "";
    $("i-preview").textContent = "";
    $("i-conversation").hidden = false;
    $("i-timeline").replaceChildren();
    $("i-notes").replaceChildren();
    $("i-title").textContent = "Conversation " + conversationId;
    renderQueue();
    watch(conversationId).then(function () { load(conversationId); });
  }

  function load(conversationId, before) {
    var body = { conversation_id: conversationId };
    if (before !== undefined) body.before = before;
    return api("conversation", body).then(function (answer) {
      if (!current || current.id !== conversationId) return;
      if (answer.status !== 200) { $("i-action-error").textContent = answer.data.error || "Error " + answer.status; return; }
      var data = answer.data;
      clockOffset = data.now - Date.now() / 1000;
      var entries = data.timeline.entries.filter(function (entry) { return SHOWN[entry.type]; });
      if (before === undefined) {
        current.keys = {};
        $("i-timeline").replaceChildren();
        entries.forEach(function (entry) { addEntry(entry, false); });
        $("i-notes").replaceChildren();
        data.notes.forEach(addNote);
        showReach(data.reach);
      } else {
        entries.slice().reverse().forEach(function (entry) { addEntry(entry, true); });
      }
      Object.keys(data.statuses).forEach(function (id) { showStatus(id, data.statuses[id]); });
      current.older = data.timeline.older_before;
      $("i-older").hidden = current.older === null;
      showHandoff(data.handoff);
    });
  }

  function showHandoff(handoff) {
    current.handoff = handoff;
    var state = STATES[handoff.state] || handoff.state;
    var text = state + " · asked on " + (LABELS[handoff.channel] || handoff.channel) + " " + ago(now() - handoff.requested_at) + " ago";
    if (handoff.state === "claimed" && handoff.agent) text = "Claimed by " + handoff.agent.name + " · " + text;
    if (handoff.closed_by && handoff.state !== "claimed" && handoff.state !== "queued") text += " · by " + handoff.closed_by.name;
    $("i-state").textContent = text;
    var open = handoff.state === "queued" || handoff.state === "claimed";
    var mine = handoff.state === "claimed" && handoff.agent && handoff.agent.id === me.id;
    var theirs = handoff.state === "claimed" && !mine;
    $("i-claim").hidden = !open || handoff.state === "claimed";
    $("i-take-over").hidden = !theirs;
    $("i-hand-back").disabled = !open || theirs;
    $("i-resolve").disabled = !open || theirs;
    $("i-send").disabled = !mine;
    $("i-text").disabled = !mine;
    $("i-text").placeholder = mine ? "Reply to the customer" : (open ? "Claim the conversation to reply" : "This hand-off is closed");
  }

  function showReach(reach) {
    current.reach = reach;
    var select = $("i-channel");
    select.replaceChildren();
    ["sms", "whatsapp", "chat"].forEach(function (channel) {
      var option = el("option", "", LABELS[channel]);
      option.value = channel;
      if (reach.available.indexOf(channel) < 0) {
        option.disabled = true;
        option.textContent = LABELS[channel] + " (" + (reach.unavailable[channel] || "unavailable") + ")";
      }
      if (channel === reach.default) option.textContent += " (last used)";
      select.appendChild(option);
    });
    if (reach.default) select.value = reach.default;
    schedulePreview();
  }

  // The reply goes where the customer last wrote, unless the agent already chose and typed.
  function lastUsed(entry) {
    var reach = current && current.reach;
    if (!reach || entry.type !== "user" || $("i-text").value) return;
    var channel = entry.channel === "voice" ? "sms" : entry.channel;
    if (reach.available.indexOf(channel) >= 0 && channel !== reach.default) {
      reach.default = channel;
      showReach(reach);
    }
  }

  function entryKey(entry) {
    if (entry.message_id) return "m:" + entry.message_id;
    return entry.type + ":" + entry.timestamp + ":" + (entry.text || (entry.rendered && (entry.rendered.text || entry.rendered.body || entry.rendered.speech)) || "");
  }

  function botText(entry) {
    var shown = entry.rendered || {};
    if (entry.channel === "voice") return shown.speech;
    if (entry.channel === "sms") return shown.body;
    if (entry.channel === "whatsapp") return (shown.bubbles || []).map(function (b) { return b.body; }).filter(Boolean).join("\n\n");
    return shown.text;
  }

  function entryNode(entry) {
    var agent = entry.type === "bot" && entry.agent;
    var li = el("li", "i-entry i-entry-" + (agent ? "agent" : entry.type));
    var meta = el("div", "i-meta");
    meta.appendChild(el("time", "", when(entry.timestamp)));
    li.appendChild(meta);
    if (entry.type === "user") {
      meta.prepend(el("span", "i-who", "Customer"));
      meta.appendChild(badge(entry.channel));
      li.appendChild(el("p", "i-text", entry.text));
    } else if (entry.type === "bot") {
      meta.prepend(el("span", "i-who", agent ? entry.agent + " (agent)" : "Bot"));
      meta.appendChild(badge(entry.delivered_on || entry.channel));
      li.appendChild(el("p", "i-text", botText(entry)));
      if (entry.channel === "sms" && entry.rendered) li.appendChild(el("p", "i-meta", entry.rendered.segments + " SMS segment(s), " + entry.rendered.encoding));
      if (entry.message_id) {
        var status = el("span", "i-status");
        status.dataset.message = entry.message_id;
        // A status can arrive before its message's entry (they come by separate channels).
        paintStatus(status, (current && current.statuses[entry.message_id]) || { state: "sending" });
        meta.appendChild(status);
      }
    } else if (entry.type === "call_summary") {
      meta.prepend(el("span", "i-who", "Call summary"));
      meta.appendChild(badge("voice"));
      li.appendChild(el("p", "i-text", entry.summary || "(no summary)"));
      if (entry.transcript) {
        var details = el("details");
        details.appendChild(el("summary", "", "Transcript"));
        details.appendChild(el("p", "i-text", entry.transcript));
        li.appendChild(details);
      }
    } else if (entry.type === "bot_state") {
      var why = WHY[entry.why] || entry.why || "";
      meta.prepend(el("span", "i-who", entry.paused ? "Bot stands aside" : "Bot is back"));
      li.appendChild(el("span", "", why + (entry.by ? " (" + entry.by + ")" : "")));
    } else {
      meta.prepend(el("span", "i-who", "New session"));
    }
    return li;
  }

  function addEntry(entry, atTop) {
    if (!SHOWN[entry.type] || !current) return;
    var key = entryKey(entry);
    if (current.keys[key]) return;
    current.keys[key] = true;
    var list = $("i-timeline");
    var node = entryNode(entry);
    if (atTop) list.prepend(node);
    else { list.appendChild(node); list.scrollTop = list.scrollHeight; }
  }

  var STATUS_LABELS = { sending: "sending…", sent: "sent", held: "waiting for the customer", not_sent: "not sent" };

  function paintStatus(node, status) {
    node.textContent = STATUS_LABELS[status.state] + (status.reason ? ": " + status.reason : "");
    node.className = "i-status i-status-" + status.state;
  }

  // A status only moves on: "sending" (the reply's 202, or a page loaded a moment before) never
  // replaces what the server already announced, whichever arrives last.
  function showStatus(messageId, status) {
    var known = current && current.statuses[messageId];
    if (status.state === "sending" && known && known.state !== "sending") return;
    if (current) current.statuses[messageId] = status;
    document.querySelectorAll('.i-status[data-message="' + CSS.escape(messageId) + '"]').forEach(function (node) {
      paintStatus(node, status);
    });
  }

  function addNote(note) {
    if (!current || document.querySelector('#i-notes [data-note="' + CSS.escape(note.id) + '"]')) return;
    var li = el("li");
    li.dataset.note = note.id;
    li.appendChild(el("span", "i-who", (note.by && note.by.name) || "?"));
    li.appendChild(document.createTextNode(" · " + when(note.at) + ": "));
    li.appendChild(el("span", "i-text", note.text));
    $("i-notes").appendChild(li);
  }

  // -- actions ------------------------------------------------------------------------------

  function act(path, extra) {
    if (!current) return;
    $("i-action-error").textContent = "";
    var body = Object.assign({ conversation_id: current.id }, extra || {});
    api(path, body).then(function (answer) {
      if (answer.status !== 200) { $("i-action-error").textContent = answer.data.error || "Error " + answer.status; return; }
      items[current.id] = Object.assign({}, items[current.id] || {}, answer.data.handoff);
      showHandoff(answer.data.handoff);
      renderQueue();
      if (path === "claim") $("i-text").focus();
    }).catch(function () { $("i-action-error").textContent = "The server could not be reached."; });
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 150);
  }

  function preview() {
    var text = $("i-text").value;
    var channel = $("i-channel").value;
    if (!text.trim() || !channel || !current) { $("i-preview").textContent = ""; return; }
    api("preview", { channel: channel, text: text, conversation_id: current.id }).then(function (answer) {
      if (answer.status !== 200 || $("i-text").value !== text) return;
      $("i-preview").textContent = previewText(channel, answer.data);
    });
  }

  // What the customer will get, and how it goes now (the server's plan for this conversation).
  function previewText(channel, data) {
    if (data.refused) return "Cannot be sent: " + data.refused + ".";
    var sms = data.parts && "By SMS: " + data.segments + " segment" + (data.segments === 1 ? "" : "s") + " (" + data.encoding + "), sent as “" + data.parts.map(function (p) { return p.body; }).join(" … ") + "”";
    if (channel === "sms") return sms;
    if (channel === "whatsapp") {
      if (data.route === "sms_fallback") return "WhatsApp's 24-hour window has shut and the customer also texts us, so it goes by SMS. " + sms;
      var shown = "“" + (data.bubbles || []).map(function (b) { return b.body; }).join(" … ") + "”";
      if (data.route === "held") return "On WhatsApp, sent as " + shown + " when the customer next writes there (their last WhatsApp message is over 24 hours old).";
      return "On WhatsApp, sent as " + shown + ".";
    }
    return "In the chat, shown as from " + me.name + ".";
  }

  function send(event) {
    event.preventDefault();
    if (!current) return;
    var text = $("i-text").value.trim();
    var channel = $("i-channel").value;
    if (!text) return;
    if (!pendingReply || pendingReply.text !== text || pendingReply.channel !== channel) pendingReply = { id: randomId(), text: text, channel: channel };
    var reply = pendingReply;
    $("i-reply-error").textContent = "";
    $("i-send").disabled = true;
    api("reply", { conversation_id: current.id, message_id: reply.id, channel: channel, text: text }).then(function (answer) {
      $("i-send").disabled = false;
      if (answer.status !== 202) { $("i-reply-error").textContent = answer.data.error || "Not sent (error " + answer.status + ")"; return; }
      pendingReply = null;
      $("i-text").value = "";
      $("i-preview").textContent = "";
      showStatus(reply.id, { state: "sending" });
    }).catch(function () {
      $("i-send").disabled = false;
      $("i-reply-error").textContent = "The server could not be reached; sending again sends it once.";
    });
  }

  function addNoteFromForm(event) {
    event.preventDefault();
    var text = $("i-note-text").value.trim();
    if (!text || !current) return;
    api("note", { conversation_id: current.id, note_id: randomId(), text: text }).then(function (answer) {
      if (answer.status !== 200) { $("i-action-error").textContent = answer.data.error || "Error " + answer.status; return; }
      $("i-note-text").value = "";
      addNote(answer.data.note);
    });
  }

  $("i-login").addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("i-token").value.trim());
    $("i-token").value = "";
    signIn();
  });
  $("i-logout").addEventListener("click", function () { signOut(""); });
  $("i-claim").addEventListener("click", function () { act("claim"); });
  $("i-take-over").addEventListener("click", function () { act("claim", { take_over: true }); });
  $("i-hand-back").addEventListener("click", function () { act("hand_back"); });
  $("i-resolve").addEventListener("click", function () { act("resolve"); });
  $("i-older").addEventListener("click", function () { if (current && current.older !== null) load(current.id, current.older); });
  $("i-reply").addEventListener("submit", send);
  $("i-text").addEventListener("input", schedulePreview);
  $("i-channel").addEventListener("change", schedulePreview);
  $("i-note").addEventListener("submit", addNoteFromForm);
  setInterval(tick, 1000);

  var fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (token()) signIn(); else signOut("");
})();
