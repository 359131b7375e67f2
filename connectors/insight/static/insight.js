/* Insight page: log in with the Rasa auth token, choose a period and a channel, read the
 * figures and their charts (Chart.js, vendored), download them as CSV or the not-understood
 * messages as NLU training data.
 *
 * The token lives in sessionStorage (this tab only, shared with the conversation viewer) and
 * travels in an Authorization header, never in a URL. Everything customers wrote is set as text
 * (textContent) or handed to Chart.js, which draws it on a canvas: nothing is parsed as HTML. */
(function () {
  "use strict";

  var TOKEN_KEY = "omni-viewer-token";
  var LABELS = { voice: "Voice", sms: "SMS", whatsapp: "WhatsApp", chat: "Chat" };
  var COLOURS = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#457b9d", "#8d99ae"];
  var charts = {};
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function show(loggedIn) {
    $("i-login").hidden = loggedIn;
    $("i-period").hidden = !loggedIn;
    $("i-logout").hidden = !loggedIn;
    if (!loggedIn) $("i-report").hidden = true;
  }

  function logOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("i-login-error").textContent = message || "";
    show(false);
  }

  function query() {
    return "from=" + encodeURIComponent($("i-from").value) +
      "&to=" + encodeURIComponent($("i-to").value) +
      "&channel=" + encodeURIComponent($("i-channel").value);
  }

  function get(path) {
    return fetch(path + "?" + query(), {
      headers: { Authorization: "Bearer " + token() },
      credentials: "omit",
      cache: "no-store",
    });
  }

  function percent(rate) {
    return typeof rate === "number" ? (Math.round(rate * 1000) / 10) + "%" : "—";
  }

  function seconds(value) { return typeof value === "number" ? "≤ " + value + " s" : "—"; }

  function chart(id, type, labels, datasets, options) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart($(id), {
      type: type,
      data: { labels: labels, datasets: datasets },
      options: Object.assign({ animation: false, responsive: true }, options || {}),
    });
  }

  function dataset(label, data, index) {
    return { label: label, data: data, backgroundColor: COLOURS[index % COLOURS.length],
      borderColor: COLOURS[index % COLOURS.length] };
  }

  function render(report) {
    var total = report.channel === "all" ? report.total : report.by_channel[report.channel];
    $("i-conversations").textContent = total.conversations;
    $("i-turns").textContent = total.turns;
    $("i-containment").textContent = total.contained + " (" + percent(total.containment_rate) + ")";
    $("i-handoffs").textContent = total.handed_off + " (" + percent(total.handoff_rate) + ")";
    $("i-fallback-rate").textContent = percent(total.fallback_rate) + " (" + total.fallbacks + " of " + total.turns + ")";
    $("i-handoffs-unavailable").textContent = total.handoffs_unavailable;
    $("i-agent-replies").textContent = total.agent_replies;
    $("i-barge-ins").textContent = total.barge_ins;
    var replies = total.reply_seconds;
    $("i-reply").textContent = [replies.p50, replies.p90, replies.p99].map(seconds).join(" / ");

    var days = report.per_day.map(function (d) { return d.day; });
    chart("i-chart-days", "line", days, ["conversations", "turns", "fallbacks", "handoffs"].map(function (name, i) {
      return dataset(name, report.per_day.map(function (d) { return d[name] || 0; }), i);
    }));
    var channels = report.channels;
    chart("i-chart-channels", "bar", channels.map(function (c) { return LABELS[c] || c; }),
      ["conversations", "contained", "handed_off", "fallbacks"].map(function (name, i) {
        return dataset(name, channels.map(function (c) { return report.by_channel[c][name]; }), i);
      }));
    var preceded = Object.keys(total.handoff_preceded_by);
    chart("i-chart-handoff", "bar", preceded,
      [dataset("hand-offs", preceded.map(function (k) { return total.handoff_preceded_by[k]; }), 1)],
      { indexAxis: "y" });
    var outcomes = Object.keys(total.call_outcomes);
    chart("i-chart-calls", "doughnut", outcomes, [{
      data: outcomes.map(function (k) { return total.call_outcomes[k]; }),
      backgroundColor: outcomes.map(function (_, i) { return COLOURS[i % COLOURS.length]; }),
    }]);
    var buckets = ["0.25", "0.5", "1", "2", "3", "5", "8", "13", "20", "30", "inf"];
    chart("i-chart-replies", "bar", buckets.map(function (b) { return b === "inf" ? "> 30" : "≤ " + b; }),
      [dataset("turns", buckets.map(function (b) { return replies.histogram[b] || 0; }), 2)]);

    var rows = $("i-not-understood");
    rows.replaceChildren();
    report.not_understood.forEach(function (item) {
      var tr = el("tr", "i-nu");
      tr.appendChild(el("td", "i-nu-text", item.text));
      tr.appendChild(el("td", "i-nu-count", item.count));
      tr.appendChild(el("td", "", item.suggested_intent));
      var links = el("td", "");
      item.conversations.forEach(function (cid) {
        var a = el("a", "", cid);
        a.href = "../viewer/#conversation_id=" + encodeURIComponent(cid);
        links.appendChild(a);
      });
      tr.appendChild(links);
      rows.appendChild(tr);
    });
    $("i-report").hidden = false;
  }

  function load() {
    return get("api/report").then(function (answer) {
      if (answer.status === 401) { logOut("The token was refused; log in again."); return; }
      return answer.json().then(function (data) {
        if (answer.status !== 200) { $("i-error").textContent = data.error || "Error " + answer.status; return; }
        $("i-error").textContent = "";
        render(data);
        document.body.dataset.loaded = reportStamp(data);
      });
    }).catch(function () { $("i-error").textContent = "The server could not be reached."; });
  }

  function reportStamp(data) { return data.days[0] + ".." + data.days[data.days.length - 1] + ":" + data.channel; }

  function download(path, fallbackName) {
    get(path).then(function (answer) {
      if (answer.status !== 200) { $("i-error").textContent = "Error " + answer.status; return; }
      var disposition = answer.headers.get("Content-Disposition") || "";
      var name = (/filename="([^"]+)"/.exec(disposition) || [null, fallbackName])[1];
      return answer.blob().then(function (blob) {
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = name;
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
      });
    });
  }

  function today(offset) {
    var d = new Date(Date.now() + offset * 86400000);
    return d.toISOString().slice(0, 10);
  }

  $("i-from").value = today(-6);
  $("i-to").value = today(0);

  $("i-login").addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("i-token").value.trim());
    $("i-token").value = "";
    get("api/report").then(function (answer) {
      if (answer.status === 401) logOut("The token was refused.");
      else { $("i-login-error").textContent = ""; show(true); load(); }
    }).catch(function () { logOut("The server could not be reached."); });
  });

  $("i-period").addEventListener("submit", function (event) { event.preventDefault(); load(); });
  $("i-csv").addEventListener("click", function () { download("api/report.csv", "insight.csv"); });
  $("i-training").addEventListener("click", function () { download("api/training.yml", "nlu_not_understood.yml"); });
  $("i-logout").addEventListener("click", function () { logOut(""); });

  show(Boolean(token()));
  if (token()) load();
})();
