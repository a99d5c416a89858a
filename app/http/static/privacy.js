/* The privacy center (/privacy/{site}): a person's own consent, its history, withdrawal, and
   their access and erasure requests, with the subject token the site's banner holds.

   The banner opens this page with "#subject=…&token=…"; the fragment never reaches a server.
   It is moved to sessionStorage at once and cut from the address bar and history. */

(function () {
  "use strict";
  var main = document.querySelector("main");
  var site = main.dataset.site;
  var regulation = main.dataset.regulation;
  var KEY = "pixelgate-privacy:" + site;
  var api = "/v1/sites/" + encodeURIComponent(site);

  // Storage refused: the token lasts for this page only, and is cut from the address bar all
  // the same.
  var store = {
    get: function () {
      try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { return null; }
    },
    set: function (value) {
      try { sessionStorage.setItem(KEY, JSON.stringify(value)); } catch (e) { /* page only */ }
    },
    drop: function () { try { sessionStorage.removeItem(KEY); } catch (e) { /* page only */ } }
  };
  var given = new URLSearchParams(location.hash.slice(1));
  var who = null;
  if (given.get("subject") && given.get("token")) {
    history.replaceState(null, "", location.pathname);
    who = { subject: given.get("subject"), token: given.get("token") };
    store.set(who);
  }
  who = who || store.get();

  function $(id) { return document.getElementById(id); }

  function say(id, text) {
    $(id).textContent = text;
    $(id).hidden = !text;
  }

  function when(value) {
    return value ? new Date(value).toLocaleString() : "—";
  }

  function call(method, path, body) {
    return fetch(api + path, {
      method: method,
      headers: { "Content-Type": "application/json", "X-Subject-Token": who.token },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (answer) {
      if (!answer.ok) {
        return answer.json().catch(function () { return {}; }).then(function (problem) {
          var error = new Error(problem.detail || ("the server answered " + answer.status));
          error.status = answer.status;
          throw error;
        });
      }
      return answer.status === 204 ? null : answer.json();
    });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function showConsent(state) {
    var body = $("purposes");
    body.replaceChildren();
    Object.keys(state.purposes).forEach(function (name) {
      var purpose = state.purposes[name];
      var row = document.createElement("tr");
      cell(row, name);
      cell(row, purpose.allowed ? "allowed" : "not allowed");
      cell(row, when(purpose.updated_at));
      cell(row, when(purpose.expires_at));
      body.appendChild(row);
    });
  }

  function showHistory(history) {
    var body = $("history");
    body.replaceChildren();
    history.entries.forEach(function (entry) {
      var row = document.createElement("tr");
      cell(row, when(entry.recorded_at));
      cell(row, entry.action);
      cell(row, Object.keys(entry.purposes).map(function (name) {
        return name + ": " + (entry.purposes[name] ? "yes" : "no");
      }).join(", "));
      cell(row, entry.policy_version);
      cell(row, entry.source);
      body.appendChild(row);
    });
  }

  function load() {
    var subject = "/consent/" + encodeURIComponent(who.subject);
    return Promise.all([call("GET", subject), call("GET", subject + "/history")])
      .then(function (both) {
        showConsent(both[0]);
        showHistory(both[1]);
        $("signed-in").hidden = false;
      });
  }

  function failed(error) {
    say("error", error.message);
  }

  function busy(button, work) {
    button.disabled = true;
    say("error", "");
    return work().catch(failed).then(function () { button.disabled = false; });
  }

  // A request is processed by the server's dsar job, within minutes: its status is asked
  // every few seconds for a quarter of an hour, then the page says to come back.
  function awaitRequest(id, done, asked) {
    asked = asked || 0;
    return call("GET", "/dsar/" + id).then(function (request) {
      if (request.status === "completed" || request.status === "rejected") return done(request);
      if (asked >= 300) {
        throw new Error("Your request is still being processed. Open this page again later.");
      }
      return new Promise(function (resolve) { setTimeout(resolve, 3000); }).then(function () {
        return awaitRequest(id, done, asked + 1);
      });
    });
  }

  function file(type) {
    return call("POST", "/dsar", { type: type, subject: who.subject, regulation: regulation });
  }

  function withdraw() {
    return call("DELETE", "/consent/" + encodeURIComponent(who.subject)).then(function () {
      say("status", "Your consent is withdrawn: nothing more is recorded about you.");
      return load();
    });
  }

  function download() {
    return file("access").then(function (request) {
      say("status", "Your request is filed (due by " + when(request.due_at) + "). " +
                    "Your data will be offered here when it is ready.");
      return awaitRequest(request.id, function (done) {
        if (done.status !== "completed") throw new Error("Your request was " + done.status + ".");
        return fetch(api + "/dsar/" + done.id + "/export", {
          headers: { "X-Subject-Token": who.token }
        }).then(function (answer) {
          if (!answer.ok) throw new Error("The export could not be fetched.");
          return answer.blob();
        }).then(function (blob) {
          var link = $("export-link");
          link.href = URL.createObjectURL(blob);
          link.download = "my-data-" + site + ".json";
          link.hidden = false;
          say("status", "Your data is ready.");
          link.focus();
        });
      });
    });
  }

  function erase() {
    $("confirm-erase").close();
    return file("erasure").then(function (request) {
      say("status", "Erasure requested (due by " + when(request.due_at) + ").");
      function erased() {
        store.drop();
        $("signed-in").hidden = true;
        say("status", "Your data has been erased. This page holds nothing of you any more.");
      }
      // The erasure ends the token too: a 401 while asking means it is done.
      return awaitRequest(request.id, function (done) {
        if (done.status !== "completed") throw new Error("Your request was " + done.status + ".");
        erased();
      }).catch(function (error) {
        if (error.status !== 401) throw error;
        erased();
      });
    });
  }

  if (!who) {
    $("no-token").hidden = false;
    return;
  }
  $("withdraw").addEventListener("click", function (event) {
    busy(event.currentTarget, withdraw);
  });
  $("download").addEventListener("click", function (event) {
    busy(event.currentTarget, download);
  });
  $("erase").addEventListener("click", function () { $("confirm-erase").showModal(); });
  $("erase-cancel").addEventListener("click", function () { $("confirm-erase").close(); });
  $("erase-confirm").addEventListener("click", function (event) {
    busy($("erase"), erase);
    event.preventDefault();
  });
  load().catch(failed);
})();
