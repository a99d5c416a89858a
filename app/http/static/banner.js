/* pixelgate's consent banner (SPEC 4.10). Served by GET /v1/sites/{site}/banner.js, which
   calls pixelgateBanner(config) with the site's purposes, texts and URLs. No framework.

   Nothing is stored on the device and no hit is sent before a choice. A grant asks the server
   to mint the visitor id; only then is it kept (localStorage, first party), with its subject
   token. A refusal is kept without an id. Withdrawal deletes the consent and the id. */

function pixelgateBanner(config, script) {
  "use strict";
  var KEY = "pixelgate:" + config.site;
  var nonce = (script && script.nonce) || "";
  var gpc = navigator.globalPrivacyControl === true;
  var lang = pickLanguage();
  var texts = config.texts[lang];
  var saved = load();
  var host, root, dialog, switches = {};

  function pickLanguage() {
    var wanted = (navigator.languages && navigator.languages.length) ? navigator.languages
      : [navigator.language || "en"];
    for (var i = 0; i < wanted.length; i++) {
      var code = String(wanted[i]).toLowerCase().split("-")[0];
      if (config.texts[code]) return code;
    }
    return "en";
  }

  function load() {
    try {
      var value = JSON.parse(window.localStorage.getItem(KEY) || "null");
      return value && typeof value === "object" ? value : null;
    } catch (e) {
      return null;
    }
  }

  function keep(value) {
    saved = value;
    try {
      window.localStorage.setItem(KEY, JSON.stringify(value));
    } catch (e) { /* storage refused: the choice lasts for this page only */ }
  }

  function allowed(kind) {
    if (!saved || !saved.subject || !saved.purposes) return false;
    // As the server decides: the kind's purposes, else those of "*"; a kind of none is not sent.
    var needs = Object.prototype.hasOwnProperty.call(config.kinds, kind) ? config.kinds[kind]
      : (config.kinds["*"] || []);
    if (!needs.length) return false;
    for (var i = 0; i < needs.length; i++) {
      if (saved.purposes[needs[i]] !== true) return false;
    }
    return true;
  }

  function send(kind, fields) {
    if (!allowed(kind)) return false;
    var query = new URLSearchParams({ k: kind, u: saved.subject });
    Object.keys(fields).forEach(function (name) {
      if (fields[name] !== undefined && fields[name] !== null) query.set(name, String(fields[name]));
    });
    var image = new Image(1, 1);
    image.referrerPolicy = "no-referrer";
    image.src = config.pixel + "?" + query.toString();
    return true;
  }

  function pageview() {
    var fields = { p: location.pathname };
    if (document.referrer) fields.r = document.referrer;
    new URLSearchParams(location.search).forEach(function (value, name) {
      if (/^utm_(source|medium|campaign|content|term)$/.test(name)) fields[name] = value;
    });
    return send("pageview", fields);
  }

  // window.pixelgate.track("conversion", {value: "19.90", currency: "EUR", campaign: "x"})
  function track(kind, options) {
    options = options || {};
    var fields = { p: options.page || location.pathname };
    if (options.value !== undefined) fields.v = options.value;
    if (options.currency !== undefined) fields.cur = options.currency;
    if (options.campaign !== undefined) fields.c = options.campaign;
    return send(String(kind), fields);
  }

  function request(method, path, body, token) {
    var headers = { "Content-Type": "application/json" };
    if (token) headers["X-Subject-Token"] = token;
    return fetch(config.api + path, {
      method: method, headers: headers, credentials: "omit", mode: "cors",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (answer) {
      if (!answer.ok) {
        var error = new Error("pixelgate: the consent service answered " + answer.status);
        error.status = answer.status;
        throw error;
      }
      return answer.status === 204 ? null : answer.json();
    });
  }

  // The id is dead once its token is refused (erased, or the token too old): a new one is asked.
  function dead(error) { return error.status === 401 || error.status === 403; }

  function choose(purposes) {
    var any = Object.keys(purposes).some(function (name) { return purposes[name]; });
    if (!any) return refuse();
    var had = saved && saved.subject ? saved : null;
    function give(holder) {
      var body = { purposes: purposes, source: "banner" };
      if (holder) body.subject = holder.subject;
      return request("POST", "/consent", body, holder && holder.token);
    }
    return give(had).catch(function (error) {
      if (!had || !dead(error)) throw error;
      had = null;
      return give(null);
    }).then(function (answer) {
      keep({ subject: had ? had.subject : answer.subject, token: answer.subject_token,
             purposes: answer.purposes, expires_at: answer.expires_at,
             policy: config.policy, at: new Date().toISOString() });
      if (!had) pageview();
      render();
    });
  }

  // The id is forgotten first: a withdrawal the server cannot take (the id already erased, the
  // network down) still leaves nothing on the device.
  function refuse() {
    var had = saved && saved.subject ? saved : null;
    keep({ refused: true, policy: config.policy, at: new Date().toISOString() });
    if (!had) {
      render();
      return Promise.resolve();
    }
    return request("DELETE", "/consent/" + encodeURIComponent(had.subject), undefined, had.token)
      .catch(function (error) { if (!dead(error)) throw error; })
      .then(function () { render(); });
  }

  // A choice made under another policy version, or a consent past its expiry, is asked again;
  // once a day the server is asked whether the id still lives (an erasure, a withdrawal made
  // in the privacy center).
  function current() {
    if (!saved) return Promise.resolve();
    var expired = saved.expires_at && Date.parse(saved.expires_at) <= Date.now();
    if (saved.policy !== config.policy || expired) {
      forget();
      return Promise.resolve();
    }
    if (!saved.subject || Date.now() - Date.parse(saved.checked || saved.at) < 86400000) {
      return Promise.resolve();
    }
    var path = "/consent/" + encodeURIComponent(saved.subject);
    return request("GET", path, undefined, saved.token).then(function (state) {
      var purposes = {};
      Object.keys(state.purposes).forEach(function (name) {
        purposes[name] = state.purposes[name].allowed;
      });
      keep(Object.assign({}, saved, { purposes: purposes, checked: new Date().toISOString() }));
    }).catch(function (error) {
      if (dead(error)) forget();
    });
  }

  function forget() {
    saved = null;
    try {
      window.localStorage.removeItem(KEY);
    } catch (e) { /* nothing was kept */ }
  }

  function every(value) {
    var purposes = {};
    config.purposes.forEach(function (purpose) {
      purposes[purpose.name] = value && !(gpc && purpose.gpc);
    });
    return purposes;
  }

  function element(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === "text") node.textContent = attributes[name];
      else node.setAttribute(name, attributes[name]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function button(label, kind, action) {
    var node = element("button", { type: "button", "class": kind, text: label });
    node.addEventListener("click", function () {
      var buttons = root.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      Promise.resolve(action()).catch(function (error) {
        root.querySelector(".error").textContent = texts.failed;
        if (window.console) console.warn(error);
      }).then(function () {
        buttons.forEach(function (b) { b.disabled = false; });
      });
    });
    return node;
  }

  function purposeRow(purpose) {
    var id = "pixelgate-" + purpose.name;
    var input = element("input", { type: "checkbox", role: "switch", id: id,
                                   "aria-describedby": id + "-about" });
    var current = saved && saved.purposes ? saved.purposes[purpose.name] : false;
    input.checked = Boolean(current) && !(gpc && purpose.gpc);
    if (gpc && purpose.gpc) input.disabled = true;
    switches[purpose.name] = input;
    return element("div", { "class": "purpose" }, [
      input,
      element("label", { "for": id, text: purpose.title[lang] || purpose.name }),
      element("p", { id: id + "-about", text: purpose.description })
    ]);
  }

  function build() {
    host = element("div", { id: "pixelgate-consent" });
    root = host.attachShadow({ mode: "open" });
    var style = element("style", { text: config.css });
    if (nonce) style.setAttribute("nonce", nonce);
    root.appendChild(style);
    var links = [element("a", { href: config.notice, target: "_blank", rel: "noopener",
                                text: texts.notice })];
    if (saved && saved.subject && saved.token) {
      var fragment = new URLSearchParams({ subject: saved.subject, token: saved.token });
      links.push(element("a", { href: config.privacy + "#" + fragment.toString(),
                                target: "_blank", rel: "noopener", text: texts.your_data }));
    }
    dialog = element("dialog", { lang: lang, "aria-labelledby": "pixelgate-title",
                                 "aria-describedby": "pixelgate-intro" }, [
      element("h2", { id: "pixelgate-title", text: texts.title }),
      element("p", { id: "pixelgate-intro", text: texts.intro.split("{site}").join(config.name) }),
      gpc ? element("p", { "class": "gpc", role: "status", text: texts.gpc }) : null,
      element("div", { "class": "purposes" }, config.purposes.map(purposeRow)),
      element("p", { "class": "links" }, links),
      element("div", { "class": "choices" }, [
        button(texts.reject_all, "choice", function () { return refuse(); }),
        button(texts.accept_all, "choice", function () { return choose(every(true)); })
      ]),
      button(texts.save, "save", function () {
        var purposes = {};
        Object.keys(switches).forEach(function (name) { purposes[name] = switches[name].checked; });
        return choose(purposes);
      }),
      element("p", { "class": "error", role: "alert" })
    ]);
    // Escape closes it without choosing; the button below opens it again.
    dialog.addEventListener("close", function () { reopen.hidden = false; });
    var reopen = element("button", { type: "button", "class": "reopen", text: texts.reopen });
    reopen.addEventListener("click", function () { render(true); });
    root.appendChild(dialog);
    root.appendChild(reopen);
    document.body.appendChild(host);
    return reopen;
  }

  function render(open) {
    if (host) host.remove();
    switches = {};
    var reopen = build();
    if (open || !saved) {
      reopen.hidden = true;
      dialog.showModal();
    }
  }

  window.pixelgate = { track: track, open: function () { render(true); } };

  function start() {
    current().then(function () {
      render(false);
      if (saved && saved.subject) pageview();
    });
  }
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
}
