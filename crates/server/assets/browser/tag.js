/*! pincapi tag.js: the Pinterest Tag, plus a first-party copy of every event for the pincapi collector. */
/*
 * On a page it replaces Pinterest's base code: once loaded it loads the Pinterest Tag with this
 * gateway's Tag id (unless a base code is already there). Page API, where calls made before the
 * script loads are queued by the snippet and replayed:
 *
 *   window.pincapi = window.pincapi || function () { (pincapi.q = pincapi.q || []).push(arguments); };
 *   pincapi('load', { em: 'buyer@example.com' });   // enhanced match, when the email is known
 *   pincapi('track', 'add_to_cart', { value: 24.00, currency: 'USD', order_quantity: 1,
 *                                     line_items: [{ product_id: '8001', product_price: 24.00 }] });
 *   pincapi('consent', false);                        // the visitor refused: no Tag, opt_out events
 *   <script async src="https://<gateway>/tag.js"></script>
 *
 * EVENT is a Conversions API name (page_visit, add_to_cart, checkout, ...); DATA is the Tag's
 * event data. Each event gets an event_id: random per action, and for a purchase (checkout with
 * an order_id) one derived from the order id, so the Tag's copy, this collector copy and the
 * server's copy are one event at Pinterest:
 *   - a Shopify order id, digits ('820982911946154508') or a Shopify GID
 *     ('gid://shopify/Order/820982911946154508'): "order-" + the digits, the rule the server
 *     uses for the Shopify order webhook;
 *   - any other order id: "order-" + the whole trimmed id ('US-1001' -> 'order-US-1001'), so
 *     different orders ('US-1001', 'CA-1001', '1001-R2') never share an event_id.
 * (The collector checks the same rule: pincapi_core::tag::purchase_event_id.)
 * Nothing here throws into the page.
 */
(function (window, document) {
  'use strict';

  var CONFIG = __PINCAPI_CONFIG__;

  var previous = window.pincapi;
  // Included twice: the first copy stays in charge.
  if (previous && previous.loaded) return;

  var state = {
    // true: go; false: refused; null: waiting for pincapi('consent', ...).
    consent: CONFIG.require_consent ? null : true,
    waiting: [],
    em: null,
    tagLoaded: false,
    // Pinterest's core.js failed to load (ad blocker, network): events reach Pinterest only
    // through the collector.
    tagFailed: false
  };
  var base = scriptOrigin();
  var collectorUrl = CONFIG.collector || (base ? base + '/collect' : null);

  function pincapi() {
    try {
      return handle(Array.prototype.slice.call(arguments));
    } catch (e) {
      warn('ignored a call that failed', e);
    }
  }
  pincapi.loaded = true;
  pincapi.version = '1';
  window.pincapi = pincapi;

  try {
    var queued = (previous && previous.q) || [];
    // Answers given before we loaded settle how we start, whatever their place in the queue
    // (the last one wins): consent covers every queued event, and a known email goes into
    // the Tag's load call for enhanced match.
    for (var i = 0; i < queued.length; i++) {
      var call = queued[i] || [];
      if (call[0] === 'consent') state.consent = call[1] !== false;
      if ((call[0] === 'load' || call[0] === 'set') && call[1]) setEmail(call[1].em);
    }
    if (state.consent === true) {
      captureEpik();
      // Like Pinterest's base code, on every page: the Tag is loaded whether or not an
      // event fires here.
      loadTag();
    }
    for (var j = 0; j < queued.length; j++) pincapi.apply(window, queued[j]);
  } catch (e) {
    warn('could not start', e);
  }

  function handle(args) {
    var command = args[0];
    if (command === 'track') return track(args[1], args[2]);
    if (command === 'load' || command === 'set') {
      // The Tag is loaded at start; a later email still reaches the collector.
      if (args[1]) setEmail(args[1].em);
      loadTag();
      return;
    }
    if (command === 'consent') return setConsent(args[1] !== false);
    warn('unknown command ' + command);
  }

  function setEmail(em) {
    if (typeof em === 'string' && em.replace(/\s/g, '') !== '') state.em = em.trim();
  }

  function setConsent(granted) {
    state.consent = granted;
    if (granted) {
      captureEpik();
      loadTag();
    }
    var waiting = state.waiting;
    state.waiting = [];
    for (var i = 0; i < waiting.length; i++) send(waiting[i]);
  }

  /* Loads the Pinterest base code once, with the configured Tag id and enhanced match. */
  function loadTag() {
    if (state.consent !== true || state.tagLoaded || !CONFIG.tag_id) return;
    state.tagLoaded = true;
    if (window.pintrk) {
      // Another base code (a theme snippet or an app) is already here. Loading a second Tag
      // would count every event twice; use the one that is there.
      warn('a Pinterest base code is already on this page; pincapi uses it instead of loading a second');
      return;
    }
    var pintrk = function () {
      pintrk.queue.push(Array.prototype.slice.call(arguments));
    };
    pintrk.queue = [];
    pintrk.version = '3.0';
    window.pintrk = pintrk;
    var script = document.createElement('script');
    script.async = true;
    script.src = resolve(CONFIG.tag_script_url);
    script.onerror = function () {
      state.tagFailed = true;
    };
    var first = document.getElementsByTagName('script')[0];
    if (first && first.parentNode) first.parentNode.insertBefore(script, first);
    else (document.head || document.documentElement).appendChild(script);
    callTag(state.em ? ['load', CONFIG.tag_id, { em: state.em }] : ['load', CONFIG.tag_id]);
    callTag(['page']);
  }

  function track(name, data) {
    var eventName = capiName(name);
    if (!eventName) {
      warn('unknown event ' + name + '; use a Conversions API name such as page_visit or add_to_cart');
      return;
    }
    var copy = {};
    if (data && typeof data === 'object') {
      for (var k in data) {
        if (Object.prototype.hasOwnProperty.call(data, k) && k !== 'event_id') copy[k] = data[k];
      }
    }
    var ev = {
      event_name: eventName,
      event_id: eventId(eventName, copy),
      event_time: Math.floor(new Date().getTime() / 1000),
      event_source_url: String(window.location.href).split('#')[0],
      data: copy
    };
    if (state.consent === null) state.waiting.push(ev);
    else send(ev);
    return ev.event_id;
  }

  function send(ev) {
    var tagName = CONFIG.event_names[ev.event_name];
    var viaTag = state.consent === true && !!CONFIG.tag_id && !!tagName;
    if (viaTag) {
      loadTag();
      var tagData = {};
      for (var k in ev.data) tagData[k] = ev.data[k];
      tagData.event_id = ev.event_id;
      callTag(['track', tagName, tagData]);
    }
    var body = {
      event_name: ev.event_name,
      event_id: ev.event_id,
      event_time: ev.event_time,
      event_source_url: ev.event_source_url,
      data: ev.data,
      source: viaTag && !state.tagFailed ? 'tag_mirror' : 'collector'
    };
    if (state.consent === true) {
      if (state.em) body.em = state.em;
      var epik = readEpik();
      if (epik) body.epik = epik;
    } else {
      body.opt_out = true;
    }
    beacon(body);
  }

  function callTag(args) {
    try {
      if (typeof window.pintrk === 'function') window.pintrk.apply(window, args);
    } catch (e) {
      warn('the Pinterest Tag failed', e);
    }
  }

  /* sendBeacon survives the page unloading; a text/plain body needs no CORS preflight. */
  function beacon(body) {
    if (!collectorUrl) return;
    var text;
    try {
      text = JSON.stringify(body);
    } catch (e) {
      warn('event data cannot be sent (not JSON)', e);
      return;
    }
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(collectorUrl, text)) return;
    } catch (e) { /* fall through to fetch */ }
    try {
      if (window.fetch) {
        window.fetch(collectorUrl, {
          method: 'POST',
          body: text,
          keepalive: true,
          credentials: 'include',
          headers: { 'Content-Type': 'text/plain;charset=UTF-8' }
        })['catch'](function () {});
      }
    } catch (e) {
      warn('could not send to the collector', e);
    }
  }

  function capiName(name) {
    if (typeof name !== 'string') return null;
    var n = name.replace(/\s/g, '');
    if (Object.prototype.hasOwnProperty.call(CONFIG.event_names, n)) return n;
    var lower = n.toLowerCase();
    for (var capi in CONFIG.event_names) {
      if (CONFIG.event_names[capi] === lower) return capi;
    }
    return null;
  }

  /* A purchase's id is derived from its order (see the header), so the server's copy matches;
   * anything else is random per action, never written into the HTML, where a page cache would
   * hand it to every visitor. */
  function eventId(eventName, data) {
    if (eventName === 'checkout' && data.order_id != null) {
      var id = String(data.order_id).trim();
      var m = id.match(/^(?:gid:\/\/shopify\/[A-Za-z]+\/)?(\d+)$/);
      var derived = 'order-' + (m ? m[1] : id);
      if (id !== '' && derived.length <= 256 && !/[\u0000-\u001f\u007f-\u009f]/.test(derived)) return derived;
      warn('order_id is empty or unusable; this purchase cannot be de-duplicated with the server\'s copy');
    }
    return randomId();
  }

  function randomId() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    var bytes = [];
    if (c && c.getRandomValues) {
      var a = new Uint8Array(16);
      c.getRandomValues(a);
      for (var i = 0; i < a.length; i++) bytes.push(a[i]);
    } else {
      for (var j = 0; j < 16; j++) bytes.push(Math.floor(Math.random() * 256));
    }
    var hex = '';
    for (var k = 0; k < bytes.length; k++) hex += (bytes[k] < 16 ? '0' : '') + bytes[k].toString(16);
    return hex;
  }

  /* The click id: epik on this page's URL, else the first-party _epik cookie. */
  function readEpik() {
    return epikFromUrl() || readCookie('_epik');
  }

  /* Keeps the landing page's epik for the rest of the visit (checkout is pages away). */
  function captureEpik() {
    try {
      var epik = epikFromUrl();
      if (!epik) return;
      var cookie = '_epik=' + epik + '; Max-Age=' + CONFIG.epik_cookie_days * 86400 + '; Path=/; SameSite=Lax';
      if (CONFIG.cookie_domain) cookie += '; Domain=' + CONFIG.cookie_domain;
      if (window.location.protocol === 'https:') cookie += '; Secure';
      document.cookie = cookie;
    } catch (e) {
      warn('could not keep the click id', e);
    }
  }

  /* Read by hand: URLSearchParams would turn a '+' in the id into a space. */
  function epikFromUrl() {
    var q = String(window.location.search || '').replace(/^\?/, '').split('&');
    for (var i = 0; i < q.length; i++) {
      var eq = q[i].indexOf('=');
      if (eq > 0 && q[i].slice(0, eq) === 'epik') {
        var v;
        try {
          v = decodeURIComponent(q[i].slice(eq + 1));
        } catch (e) {
          return null;
        }
        return cookieSafe(v) ? v : null;
      }
    }
    return null;
  }

  function readCookie(name) {
    var parts = String(document.cookie || '').split(';');
    for (var i = 0; i < parts.length; i++) {
      var p = parts[i].replace(/^\s+/, '');
      if (p.indexOf(name + '=') === 0) {
        var v = p.slice(name.length + 1);
        return v && cookieSafe(v) ? v : null;
      }
    }
    return null;
  }

  function cookieSafe(v) {
    return /^[A-Za-z0-9._~+\/=-]{1,512}$/.test(v);
  }

  function scriptOrigin() {
    try {
      var s = document.currentScript;
      if (s && s.src) return new URL(s.src, window.location.href).origin;
    } catch (e) { /* no origin: collector needs CONFIG.collector */ }
    return null;
  }

  function resolve(url) {
    try {
      return new URL(url, (base || window.location.origin) + '/').href;
    } catch (e) {
      return url;
    }
  }

  function warn(message, error) {
    try {
      if (window.console && console.warn) console.warn('pincapi: ' + message, error || '');
    } catch (e) { /* nothing left to do */ }
  }
})(window, document);
