// Runs the Shopify custom pixel rendered by `pincapi shopify pixel` for real, in a `vm` context
// with stand-ins for Shopify's custom pixel API (`analytics`, `browser`, `init`,
// `customerPrivacy`; a scenario event named `visitorConsentCollected` goes to its subscribers)
// and the page
// (`window`, `document`, `navigator`), feeds it the scenario's events, and prints what it did
// as JSON: the Pinterest Tag calls (`pintrk` queue), the scripts it loaded, the beacons and
// fetches it sent to the collector (parsed as `body`, and as sent as `raw`, so a test can check
// the exact text, e.g. that an amount is the string "19.90" and not the number 19.9), and any
// error that escaped a handler.
//
// Usage: node pixel_harness.js PIXEL.js SCENARIO.json
// SCENARIO: {"init": {...}, "cookies": {"_epik": "..."}, "crypto": true|false, "beacon": true|false,
//            "events": [{"name": "checkout_completed", "event": {...}}]}
"use strict";

const fs = require("fs");
const vm = require("vm");
const nodeCrypto = require("crypto");

async function main() {
  const [pixelPath, scenarioPath] = process.argv.slice(2);
  const code = fs.readFileSync(pixelPath, "utf8");
  const scenario = JSON.parse(fs.readFileSync(scenarioPath, "utf8"));

  const subscribers = {};
  const privacySubscribers = {};
  const scripts = [];
  const beacons = [];
  const fetches = [];
  const errors = [];
  const cookies = scenario.cookies || {};
  const firstScript = {
    parentNode: {
      insertBefore(node) {
        scripts.push(node.src);
      },
    },
  };
  const ctx = {
    analytics: {
      subscribe(name, cb) {
        (subscribers[name] = subscribers[name] || []).push(cb);
      },
    },
    browser: {
      cookie: {
        get(name) {
          return Promise.resolve(cookies[name] || "");
        },
        set(name, value) {
          cookies[name] = value;
          return Promise.resolve(value);
        },
      },
    },
    customerPrivacy: {
      subscribe(name, cb) {
        (privacySubscribers[name] = privacySubscribers[name] || []).push(cb);
      },
    },
    init: scenario.init || { data: {} },
    document: {
      createElement(tag) {
        return { tagName: tag };
      },
      getElementsByTagName(tag) {
        return tag === "script" ? [firstScript] : [];
      },
      head: {
        appendChild(node) {
          scripts.push(node.src);
        },
      },
    },
    navigator: {},
    fetch(url, options) {
      fetches.push({ url, body: JSON.parse(options.body), raw: options.body, keepalive: options.keepalive });
      return Promise.resolve({ ok: true });
    },
  };
  if (scenario.beacon !== false) {
    ctx.navigator.sendBeacon = (url, body) => {
      if (typeof body !== "string") throw new Error("the beacon body must be a string");
      beacons.push({ url, body: JSON.parse(body), raw: body });
      return true;
    };
  }
  if (scenario.crypto !== false) {
    ctx.crypto = { randomUUID: () => nodeCrypto.randomUUID() };
  }
  ctx.window = ctx;
  vm.createContext(ctx);
  vm.runInContext(code, ctx, { filename: "pixel.js" });

  for (const { name, event } of scenario.events || []) {
    for (const cb of subscribers[name] || privacySubscribers[name] || []) {
      try {
        await cb(event);
      } catch (e) {
        errors.push(`${name}: ${e && e.message}`);
      }
    }
  }
  const out = {
    subscribed: Object.keys(subscribers),
    pintrk: ctx.pintrk ? ctx.pintrk.queue : null,
    scripts,
    beacons,
    fetches,
    cookies,
    errors,
  };
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e));
  process.exit(1);
});
