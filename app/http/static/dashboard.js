/* The dashboard (/dashboard/{site}): the site's reports for a person holding a read key.

   The key is typed into a password field and kept in sessionStorage for this tab only; it is
   sent as a bearer header, never in a URL. Charts are uPlot (vendored under /static/uplot/). */

(function () {
  "use strict";
  var main = document.querySelector("main");
  var site = main.dataset.site;
  var KEY = "pixelgate-dashboard:" + site;
  var api = "/v1/sites/" + encodeURIComponent(site);
  // The key's field has no name and the form posts: should this script fail, a sign-in
  // sends nothing, and never the key in a URL. Storage refused: the key lasts for the page.
  var store = {
    get: function () { try { return sessionStorage.getItem(KEY); } catch (e) { return null; } },
    set: function (value) { try { sessionStorage.setItem(KEY, value); } catch (e) { /* page */ } },
    drop: function () { try { sessionStorage.removeItem(KEY); } catch (e) { /* page */ } }
  };
  var key = store.get();
  var scope = null;  // of the key: read or admin
  var charts = {};

  function $(id) { return document.getElementById(id); }

  function say(id, text) {
    $(id).textContent = text;
    $(id).hidden = !text;
  }

  function isoDay(date) { return date.toISOString().slice(0, 10); }

  function range() {
    return { from: $("from").value, to: $("to").value };
  }

  function query(params) {
    var found = new URLSearchParams();
    Object.keys(params).forEach(function (name) {
      if (params[name] !== undefined && params[name] !== "") found.set(name, params[name]);
    });
    return found.toString();
  }

  function call(path, params, csv) {
    return fetch(api + path + (params ? "?" + query(params) : ""), {
      headers: { Authorization: "Bearer " + key, Accept: csv ? "text/csv" : "application/json" }
    }).then(function (answer) {
      if (!answer.ok) {
        return answer.json().catch(function () { return {}; }).then(function (problem) {
          var error = new Error(problem.detail || ("the server answered " + answer.status));
          error.status = answer.status;
          throw error;
        });
      }
      return csv ? answer.blob() : answer.json();
    });
  }

  function cells(row, values, header) {
    values.forEach(function (value) {
      var cell = document.createElement(header ? "th" : "td");
      if (header) cell.scope = "col";
      cell.textContent = value === null || value === undefined ? "—" : String(value);
      row.appendChild(cell);
    });
  }

  function table(id, header, rows) {
    var node = $(id);
    node.replaceChildren();
    var head = document.createElement("thead");
    var line = document.createElement("tr");
    cells(line, header, true);
    head.appendChild(line);
    var body = document.createElement("tbody");
    rows.forEach(function (values) {
      var row = document.createElement("tr");
      cells(row, values, false);
      body.appendChild(row);
    });
    node.appendChild(head);
    node.appendChild(body);
  }

  function money(revenue) {
    return Object.keys(revenue || {}).map(function (c) { return revenue[c] + " " + c; })
      .join(", ") || "—";
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "—" : (rate * 100).toFixed(1) + " %";
  }

  function chart(id, label, xs, series, bars) {
    var box = $(id);
    if (charts[id]) charts[id].destroy();
    box.replaceChildren();
    var colours = ["#1d4ed8", "#b45309"];
    var options = {
      width: Math.max(box.clientWidth, 300), height: 240,
      scales: { x: { time: !bars } },
      series: [{ label: bars ? "hour" : "day" }].concat(series.map(function (s, i) {
        return { label: s.label, stroke: colours[i], width: 2,
                 fill: bars ? colours[i] : undefined,
                 paths: bars ? uPlot.paths.bars({ size: [0.7] }) : undefined };
      })),
      axes: [{}, {}]
    };
    charts[id] = new uPlot(options, [xs].concat(series.map(function (s) { return s.values; })), box);
    box.setAttribute("aria-label", label);
  }

  function summary(found) {
    var figures = [
      ["Hits", found.hits], ["People", found.subjects + (found.subjects_estimated ? " (est.)" : "")],
      ["Anonymous hits", found.anonymous_hits], ["Conversions", found.conversions],
      ["Revenue", money(found.revenue)]
    ];
    var list = $("summary");
    list.replaceChildren();
    figures.forEach(function (pair) {
      var item = document.createElement("div");
      var term = document.createElement("dt");
      var value = document.createElement("dd");
      term.textContent = pair[0];
      value.textContent = String(pair[1]);
      item.appendChild(term);
      item.appendChild(value);
      list.appendChild(item);
    });
  }

  function breakdown(id, by) {
    return call("/reports/breakdown", Object.assign({ by: by, limit: 10 }, range()))
      .then(function (found) {
        var rows = found.rows.map(function (r) { return [r.key, r.hits, r.subjects]; });
        if (found.other.hits) rows.push(["(other)", found.other.hits, found.other.subjects]);
        table(id, [by, "hits", "people"], rows);
        return found;
      });
  }

  function timeseries() {
    return call("/reports/timeseries", Object.assign({ interval: "day" }, range()))
      .then(function (found) {
        var xs = found.points.map(function (p) { return Date.parse(p.t) / 1000; });
        chart("timeseries-chart", "Hits and people per day", xs, [
          { label: "hits", values: found.points.map(function (p) { return p.hits; }) },
          { label: "people", values: found.points.map(function (p) { return p.subjects; }) }
        ]);
      });
  }

  function campaign(name) {
    $("campaign-csv").disabled = !name;
    if (!name) {  // no campaign in the period: nothing of another period's is left shown
      table("campaign-table", ["figure", "value"], []);
      if (charts["opens-chart"]) charts["opens-chart"].destroy();
      delete charts["opens-chart"];
      $("opens-chart").replaceChildren();
      return Promise.resolve();
    }
    return call("/reports/campaigns/" + encodeURIComponent(name), range()).then(function (r) {
      if ($("campaign").value !== name) return;  // another was chosen meanwhile
      table("campaign-table", ["figure", "value"], [
        ["sends", r.sends], ["opens", r.opens], ["unique opens", r.unique_opens],
        ["open rate", percent(r.open_rate)], ["machine opens", r.machine_opens],
        ["clicks", r.clicks], ["unique clicks", r.unique_clicks],
        ["click-to-open rate", percent(r.click_to_open_rate)],
        ["conversions", r.conversions], ["revenue", money(r.revenue)]
      ]);
      var hours = [];
      for (var h = 0; h < 24; h++) hours.push(h);
      chart("opens-chart", "Human opens by hour of the day (UTC)", hours,
            [{ label: "opens", values: r.opens_by_hour }], true);
    });
  }

  function campaigns(found) {
    var select = $("campaign");
    var chosen = select.value;
    select.replaceChildren();
    found.rows.filter(function (r) { return r.key; }).forEach(function (r) {
      var option = document.createElement("option");
      option.value = option.textContent = r.key;
      select.appendChild(option);
    });
    if (chosen && Array.prototype.some.call(select.options, function (o) { return o.value === chosen; })) {
      select.value = chosen;
    }
    return campaign(select.value);
  }

  function influencers() {
    return call("/reports/influencers", range()).then(function (found) {
      var rows = found.rows.concat(found.other ? [found.other] : []);
      table("influencers", ["influencer", "clicks", "visits", "conversions", "revenue",
                            "visits per click", "conversions per click"],
            rows.map(function (r) {
              return [r.influencer, r.clicks, r.visits, r.conversions, money(r.revenue),
                      percent(r.visit_rate), percent(r.conversion_rate)];
            }));
    });
  }

  function audiences() {
    return call("/reports/audiences").then(function (found) {
      table("audiences", ["audience", "members", "no consent", "GPC", "opted out"],
            found.audiences.map(function (a) {
              return [a.name, a.members, a.excluded.no_consent, a.excluded.gpc, a.excluded.opt_out];
            }));
    });
  }

  function consentRates() {
    return call("/reports/consent").then(function (found) {
      table("consent", ["purpose", "allowed", "not allowed", "rate"],
            found.purposes.map(function (p) {
              if (found.suppressed) return [p.purpose, "withheld", "withheld", "—"];
              return [p.purpose, p.granted, p.not_granted, percent(p.rate)];
            }));
    });
  }

  function requests() {
    if (scope !== "admin") return Promise.resolve();  // requests are for admins
    return call("/dsar").then(function (found) {
      var open = found.requests.filter(function (r) {
        return r.status === "pending" || r.status === "in_progress";
      });
      $("requests-section").hidden = false;
      table("requests", ["request", "type", "status", "received", "due", "overdue"],
            open.map(function (r) {
              return [r.id, r.type, r.status, r.received_at.slice(0, 10),
                      r.due_at.slice(0, 10), r.overdue ? "overdue" : "no"];
            }));
    });
  }

  function refresh() {
    say("error", "");
    return Promise.all([
      call("/reports/summary", range()).then(summary),
      timeseries(),
      breakdown("pages", "page"),
      breakdown("sources", "utm_source"),
      breakdown("campaigns", "campaign").then(campaigns),
      breakdown("devices", "device"),
      influencers(),
      audiences(),
      consentRates(),
      requests()
    ]).catch(function (error) { say("error", error.message); });
  }

  function signedIn() {
    return call("/key").then(function (found) {
      scope = found.scope;
      store.set(key);
      $("sign-in").hidden = true;
      $("reports").hidden = false;
      return refresh();
    });
  }

  var today = new Date();
  $("to").value = isoDay(today);
  $("from").value = isoDay(new Date(today.getTime() - 29 * 86400000));

  $("sign-in").addEventListener("submit", function (event) {
    event.preventDefault();
    key = $("key").value;
    signedIn().then(function () {
      $("key").value = "";
      say("sign-in-error", "");
    }).catch(function (error) {
      key = null;
      say("sign-in-error", error.status === 401 || error.status === 403
        ? "This key does not open the reports of " + site + "."
        : error.message);
    });
  });
  $("sign-out").addEventListener("click", function () {
    store.drop();
    location.reload();
  });
  $("range").addEventListener("submit", function (event) {
    event.preventDefault();
    refresh();
  });
  $("campaign").addEventListener("change", function () {
    campaign($("campaign").value).catch(function (error) { say("error", error.message); });
  });
  document.querySelectorAll("button[data-csv]").forEach(function (button) {
    button.addEventListener("click", function () {
      var params = Object.assign(JSON.parse(button.dataset.params || "{}"), range());
      var path = button.dataset.csv === "campaign"
        ? "/reports/campaigns/" + encodeURIComponent($("campaign").value) : button.dataset.csv;
      call(path, params, true).then(function (blob) {
        var link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = button.dataset.file + ".csv";
        document.body.appendChild(link);
        link.click();
        link.remove();
      }).catch(function (error) { say("error", error.message); });
    });
  });
  if (key) {
    signedIn().catch(function () {  // revoked since: sign in again
      store.drop();
      key = null;
    });
  }
})();
