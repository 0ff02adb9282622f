/*! pincapi stand-in for Pinterest's core.js (demo and tests): records every pintrk call, sends nothing. */
/*
 * Takes over window.pintrk the way core.js does (drains the base code's queue, then answers
 * calls directly) and records each call in window.__pintrkStub.calls and, so that a test can
 * read a whole visit across pages, in sessionStorage under "pincapi_stub_calls".
 */
(function (window) {
  'use strict';
  var KEY = 'pincapi_stub_calls';
  var stub = window.__pintrkStub = window.__pintrkStub || { calls: [] };

  function record(args) {
    var call;
    try {
      call = JSON.parse(JSON.stringify({ method: args[0], args: Array.prototype.slice.call(args, 1) }));
    } catch (e) {
      call = { method: String(args[0]), args: [] };
    }
    call.page = window.location.pathname;
    stub.calls.push(call);
    try {
      var all = JSON.parse(window.sessionStorage.getItem(KEY) || '[]');
      all.push(call);
      window.sessionStorage.setItem(KEY, JSON.stringify(all));
    } catch (e) { /* storage off: the in-page record still works */ }
    try {
      if (window.console && console.info) console.info('[Pinterest Tag stub]', call.method, call.args);
    } catch (e) { /* ignore */ }
  }

  var queued = (window.pintrk && window.pintrk.queue) || [];
  var pintrk = function () {
    record(arguments);
  };
  pintrk.queue = [];
  pintrk.version = '3.0';
  pintrk.stub = true;
  window.pintrk = pintrk;
  for (var i = 0; i < queued.length; i++) record(queued[i]);
  stub.loaded = true;
})(window);
