/* Conversation viewer: log in with the Rasa auth token, find a conversation, read its timeline.
 *
 * The token lives in sessionStorage (this tab only) and travels in an Authorization header,
 * never in a URL. Everything shown is set as text (textContent); the chat HTML the server
 * rendered is parsed inertly and rebuilt from a short list of tags, so no event text can put
 * markup or script into the page. */
(function () {
  "use strict";

  var TOKEN_KEY = "omni-viewer-token";
  var API = "api/timeline";
  var LABELS = { voice: "Voice", sms: "SMS", whatsapp: "WhatsApp", chat: "Chat" };
  var MEDIA_LABELS = { image: "Photo", audio: "Voice note", video: "Video", document: "File", contact: "Contact", other: "File" };
  var SAFE_TAGS = { P: 1, BR: 1, STRONG: 1, EM: 1, B: 1, I: 1, CODE: 1, UL: 1, OL: 1, LI: 1, A: 1 };
  var SAFE_LINK = /^(https?:|mailto:|tel:)/i;

  var $ = function (id) { return document.getElementById(id); };
  var current = null; // the search whose timeline is shown: {key: value}
  var currentConversation = null; // its conversation id (media requests name it)

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function show(loggedIn) {
    $("v-login").hidden = loggedIn;
    $("v-search").hidden = !loggedIn;
    $("v-logout").hidden = !loggedIn;
    $("v-recent").hidden = !loggedIn;
    if (!loggedIn) {
      $("v-result").hidden = true;
      $("v-recent-items").hidden = true;
    }
    (loggedIn ? $("v-value") : $("v-token")).focus();
  }

  function logOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("v-login-error").textContent = message || "";
    show(false);
  }

  function post(body, path) {
    return fetch(path || API, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    }).then(function (answer) {
      return answer.json().catch(function () { return {}; }).then(function (data) {
        return { status: answer.status, data: data };
      });
    });
  }

  function when(timestamp) {
    if (typeof timestamp !== "number") return "";
    return new Date(timestamp * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function badge(channel) {
    if (!channel) return el("span", "v-badge", "channel unknown");
    return el("span", "v-badge v-badge-" + channel, LABELS[channel] || channel);
  }

  /* The server's chat HTML, rebuilt from text nodes and a few harmless tags. */
  function safeHtml(html) {
    var parsed = new DOMParser().parseFromString("<body>" + html, "text/html").body;
    var out = el("div", "v-html");
    function copy(from, to) {
      from.childNodes.forEach(function (node) {
        if (node.nodeType === Node.TEXT_NODE) {
          to.appendChild(document.createTextNode(node.nodeValue));
        } else if (node.nodeType === Node.ELEMENT_NODE && SAFE_TAGS[node.tagName]) {
          var copyNode = document.createElement(node.tagName.toLowerCase());
          if (node.tagName === "A") {
            var href = node.getAttribute("href") || "";
            if (SAFE_LINK.test(href)) {
              copyNode.setAttribute("href", href);
              copyNode.setAttribute("rel", "noopener noreferrer");
              copyNode.setAttribute("target", "_blank");
            }
          }
          copy(node, copyNode);
          to.appendChild(copyNode);
        } else if (node.nodeType === Node.ELEMENT_NODE) {
          copy(node, to);
        }
      });
    }
    copy(parsed, out);
    return out;
  }

  function percent(confidence) {
    return typeof confidence === "number" ? " (" + Math.round(confidence * 100) + "%)" : "";
  }

  /* A customer's picture or file, fetched through the API with the token, shown from a blob. */
  function mediaNode(entry, index, item) {
    var label = (MEDIA_LABELS[item.kind] || "File") + " (" + (item.content_type || "unknown type") +
      (typeof item.size === "number" ? ", " + Math.round(item.size / 1024) + " KB" : "") + ")" +
      (item.name ? ": " + item.name : "");
    var box = el("div", "v-media");
    box.appendChild(el("span", "", label));
    if (item.refused) { box.appendChild(el("span", "v-error", " refused: not a type we take")); return box; }
    var open = el("button", "v-media-open", item.kind === "image" ? "Show" : "Download");
    open.type = "button";
    open.addEventListener("click", function () {
      open.disabled = true;
      fetch("api/media", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
        body: JSON.stringify({ conversation_id: currentConversation, index: entry.index, item: index }),
        credentials: "omit",
        cache: "no-store",
      }).then(function (answer) {
        if (!answer.ok) return answer.json().catch(function () { return {}; }).then(function (data) {
          throw new Error(data.error || "error " + answer.status);
        });
        return answer.blob();
      }).then(function (blob) {
        var url = URL.createObjectURL(blob);
        if (item.kind === "image") {
          var img = el("img", "v-image");
          img.alt = label;
          img.src = url;
          box.replaceChild(img, open);
        } else {
          var link = el("a", "", "Save " + (item.name || "file"));
          link.href = url;
          link.download = item.name || "file";
          box.replaceChild(link, open);
          link.click();
        }
      }).catch(function (error) {
        open.disabled = false;
        box.appendChild(el("span", "v-error", " " + error.message));
      });
    });
    box.appendChild(open);
    return box;
  }

  function userBody(entry, li) {
    if (entry.text) li.appendChild(el("p", "v-text", entry.text));
    (entry.media || []).forEach(function (item, index) { li.appendChild(mediaNode(entry, index, item)); });
    if (entry.location) {
      var place = entry.location;
      li.appendChild(el("p", "v-text", "Location: " + place.latitude + ", " + place.longitude +
        (place.label ? " · " + place.label : "") + (place.address ? " · " + place.address : "")));
    }
    var nlu = el("p", "v-nlu", "Intent: " + (entry.intent || "none") + percent(entry.confidence));
    (entry.entities || []).forEach(function (entity) {
      nlu.appendChild(document.createTextNode(" · " + entity.entity + "=" + entity.value));
    });
    li.appendChild(nlu);
    if (entry.barge_in) {
      var heard = typeof entry.barge_in.heard_ratio === "number"
        ? Math.round(entry.barge_in.heard_ratio * 100) + "% heard" : "";
      li.appendChild(el("p", "v-nlu", "Barged in after hearing: “" + entry.barge_in.heard_text + "” " + heard));
    }
  }

  function botBody(entry, li) {
    var shown = entry.rendered || {};
    if (entry.channel === "voice") {
      li.appendChild(el("p", "v-text", "Said: " + shown.speech));
    } else if (entry.channel === "sms") {
      li.appendChild(el("p", "v-text", shown.body));
      li.appendChild(el("p", "v-nlu", shown.segments + " segment(s), " + shown.encoding));
    } else if (entry.channel === "whatsapp") {
      (shown.bubbles || []).forEach(function (bubble) {
        if (bubble.body) li.appendChild(el("p", "v-text", bubble.body));
        (bubble.media || []).forEach(function (url) { li.appendChild(el("p", "v-nlu", "[media] " + url)); });
        if (bubble.options) {
          var options = el("ul", "v-buttons");
          bubble.options.forEach(function (title) { options.appendChild(el("li", "", title)); });
          li.appendChild(options);
        }
      });
    } else if (entry.channel === "chat") {
      li.appendChild(safeHtml(shown.html || ""));
      if (shown.buttons) {
        var list = el("ul", "v-buttons");
        shown.buttons.forEach(function (button) {
          list.appendChild(el("li", "", button.title + (button.url ? " → " + button.url : "")));
        });
        li.appendChild(list);
      }
    } else {
      li.appendChild(el("p", "v-text", shown.text));
    }
    if (entry.delivered_on) li.appendChild(el("p", "v-nlu", "Delivered by " + (LABELS[entry.delivered_on] || entry.delivered_on)));
  }

  /* Twilio's delivery and read receipts of what answered the turn. */
  function deliveryBadge(delivery) {
    var failed = delivery.status === "failed" || delivery.status === "undelivered";
    var text = delivery.status + (delivery.error_code ? " (error " + delivery.error_code + ")" : "");
    return el("span", "v-badge v-delivery" + (failed ? " v-delivery-failed" : ""), text);
  }

  var RENDER = {
    user: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", "Customer"));
      meta.appendChild(badge(entry.channel));
      if (entry.barge_in) meta.appendChild(el("span", "v-badge v-badge-barge", "Barge-in"));
      userBody(entry, li);
    },
    bot: function (entry, li, meta) {
      // A person from the support team wrote it during a hand-off: shown as theirs.
      meta.prepend(el("span", "v-who", entry.agent ? entry.agent + " (support team)" : "Bot"));
      meta.appendChild(badge(entry.channel));
      if (entry.delivery) meta.appendChild(deliveryBadge(entry.delivery));
      botBody(entry, li);
    },
    call_summary: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", "Call summary"));
      meta.appendChild(badge("voice"));
      li.appendChild(el("p", "v-text", entry.summary || "(no summary)"));
      var facts = [];
      if (entry.ended_reason) facts.push("ended: " + entry.ended_reason);
      if (typeof entry.duration_seconds === "number") facts.push(Math.round(entry.duration_seconds) + " s");
      if (facts.length) li.appendChild(el("p", "v-nlu", facts.join(" · ")));
    },
    action: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", "Action"));
      li.appendChild(el("span", "", entry.name + (entry.policy ? " — " + entry.policy : "") + percent(entry.confidence)));
    },
    slot: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", "Slot"));
      if (entry.barge_in) meta.appendChild(el("span", "v-badge v-badge-barge", "Barge-in slot"));
      li.appendChild(el("span", "v-text", entry.name + " = " + (entry.value === null ? "null" : entry.value)));
    },
    session: function (entry, li, meta) { meta.prepend(el("span", "v-who", "New session")); },
    bot_state: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", entry.paused ? "Bot stands aside (hand-off)" : "Bot is back"));
      li.appendChild(el("span", "", (entry.why || "") + (entry.by ? " — " + entry.by : "")));
    },
    form: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", "Form"));
      li.appendChild(el("span", "", entry.name ? entry.name + " active" : "form ended"));
    },
    event: function (entry, li, meta) {
      meta.prepend(el("span", "v-who", "Event"));
      li.appendChild(el("span", "", entry.event));
    },
  };

  function entryNode(entry) {
    var li = el("li", "v-entry v-entry-" + entry.type);
    var meta = el("div", "v-meta");
    meta.appendChild(el("time", "", when(entry.timestamp)));
    li.appendChild(meta);
    (RENDER[entry.type] || RENDER.event)(entry, li, meta);
    return li;
  }

  function showProfile(data) {
    var profile = data.profile || {};
    var rows = [
      ["Phone", profile.phone || "—"],
      ["Site user", profile.user_id || "—"],
      ["Channels seen", Object.keys(profile.channels_seen || {}).join(", ") || "—"],
      ["Opted out of texts", profile.sms_opted_out ? "yes" : "no"],
      ["Refund requests", (profile.refund_requests || []).map(function (request) {
        return request.order + " (" + request.photos + " photo" + (request.photos === 1 ? "" : "s") + ")";
      }).join(", ") || "—"],
      ["Events", data.total_events],
    ];
    var list = $("v-profile");
    list.replaceChildren();
    rows.forEach(function (row) {
      list.appendChild(el("dt", "", row[0]));
      list.appendChild(el("dd", "", row[1]));
    });
  }

  // Notifications and callbacks: text only (textContent), as every customer-derived value here.
  function outboundRow(item, withConversation) {
    var row = el("tr", "v-outbound-" + item.status);
    var slots = Object.keys(item.slots || {}).map(function (name) {
      return name + "=" + item.slots[name];
    }).join(", ");
    if (withConversation) {
      var cell = el("td");
      var open = el("button", "v-link", item.conversation_id);
      open.type = "button";
      open.addEventListener("click", function () {
        current = { conversation_id: item.conversation_id };
        load(current);
      });
      cell.appendChild(open);
      row.appendChild(cell);
    }
    [
      item.kind,
      (item.response || "") + (slots ? " (" + slots + ")" : ""),
      item.status,
      item.channel || "—",
      // A callback's call: how it went ("answered", "completed", or why it failed).
      [item.reason, item.call && item.call !== item.reason ? "call " + item.call : ""]
        .filter(Boolean).join("; ") || "—",
      item.due ? when(item.due) : "—",
      when(item.updated),
    ].forEach(function (text) { row.appendChild(el("td", "", text)); });
    return row;
  }

  function showOutbound(items) {
    var body = $("v-outbound").tBodies[0];
    body.replaceChildren();
    (items || []).forEach(function (item) { body.appendChild(outboundRow(item, false)); });
    $("v-outbound-section").hidden = !(items && items.length);
  }

  function showRecent() {
    var body = { limit: 100 };
    if ($("v-recent-status").value) body.status = $("v-recent-status").value;
    fetch("api/outbound", {
      method: "POST",
      headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (answer) {
      return answer.json().catch(function () { return {}; }).then(function (data) {
        if (answer.status === 401) { logOut("The token was refused; log in again."); return; }
        if (answer.status !== 200) {
          $("v-recent-error").textContent = data.error || "Error " + answer.status;
          return;
        }
        $("v-recent-error").textContent = "";
        var rows = $("v-recent-items").tBodies[0];
        rows.replaceChildren();
        data.items.forEach(function (item) { rows.appendChild(outboundRow(item, true)); });
        $("v-recent-items").hidden = false;
        $("v-recent-refusals").textContent = data.refusals.length
          ? "Refused for a customer nobody knows: " + data.refusals.length +
            " lately (latest " + when(data.refusals[0].at) + ")."
          : "";
      });
    }).catch(function () { $("v-recent-error").textContent = "The server could not be reached."; });
  }

  function load(search, before) {
    var body = Object.assign({}, search);
    if (before !== undefined) body.before = before;
    return post(body).then(function (answer) {
      if (answer.status === 401) { logOut("The token was refused; log in again."); return; }
      if (answer.status !== 200) {
        $("v-search-error").textContent = answer.data.error || "Error " + answer.status;
        if (before === undefined) $("v-result").hidden = true;
        return;
      }
      var data = answer.data;
      $("v-search-error").textContent = "";
      $("v-cid").textContent = data.conversation_id;
      currentConversation = data.conversation_id;
      showProfile(data);
      if (before === undefined) showOutbound(data.outbound);
      var timeline = $("v-timeline");
      var nodes = data.entries.map(entryNode);
      if (before === undefined) timeline.replaceChildren.apply(timeline, nodes);
      else timeline.prepend.apply(timeline, nodes);
      var older = $("v-older");
      older.hidden = data.older_before === null;
      older.dataset.before = data.older_before === null ? "" : String(data.older_before);
      $("v-result").hidden = false;
    }).catch(function () {
      $("v-search-error").textContent = "The server could not be reached.";
    });
  }

  $("v-login").addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("v-token").value.trim());
    $("v-token").value = "";
    // An empty query is refused (400) only once the token is accepted.
    post({}).then(function (answer) {
      if (answer.status === 401) logOut("The token was refused.");
      else { $("v-login-error").textContent = ""; show(true); }
    }).catch(function () { logOut("The server could not be reached."); });
  });

  $("v-search").addEventListener("submit", function (event) {
    event.preventDefault();
    current = {};
    current[$("v-by").value] = $("v-value").value.trim();
    load(current);
  });

  $("v-older").addEventListener("click", function () {
    if (current && this.dataset.before) load(current, Number(this.dataset.before));
  });

  $("v-logout").addEventListener("click", function () { logOut(""); });
  $("v-recent-show").addEventListener("click", showRecent);

  /* Erasure: forgets the shown conversation's customer everywhere, after a confirmation; the
   * receipt is shown (and a second erasure says nothing was left). */
  $("v-erase").addEventListener("click", function () {
    var cid = $("v-cid").textContent;
    if (!cid || !window.confirm("Forget this customer everywhere (conversation " + cid + ")? This cannot be undone.")) return;
    post({ conversation_id: cid }, "api/erase").then(function (answer) {
      if (answer.status === 401) { logOut("The token was refused; log in again."); return; }
      if (answer.status !== 200) {
        $("v-erase-receipt").textContent = answer.data.error || "Error " + answer.status;
        return;
      }
      var receipt = answer.data;
      $("v-erase-receipt").textContent = receipt.erased
        ? "Erased. Receipt " + receipt.receipt_id + ": " + receipt.keys_deleted + " records deleted."
        : "Nothing was left to erase. Receipt " + receipt.receipt_id + ".";
      $("v-timeline").replaceChildren();
    }).catch(function () {
      $("v-erase-receipt").textContent = "The server could not be reached.";
    });
  });

  show(Boolean(token()));

  /* A link from the insight page: #conversation_id=c_… opens that conversation. */
  var linked = /^#conversation_id=([A-Za-z0-9_.:@+-]{1,128})$/.exec(window.location.hash);
  if (linked && token()) {
    current = { conversation_id: linked[1] };
    load(current);
  }
})();
