// Runs tag.js as `GET /tag.js` serves it, in a `vm` context with a stand-in page (`window`,
// `document`, `navigator.sendBeacon`), makes the scenario's `pincapi(...)` calls and prints
// what it did as JSON: what each call returned (a track call returns its event_id), the
// Pinterest Tag calls (`pintrk` queue) and the beacons sent to the collector (parsed as `body`,
// as sent as `raw`).
//
// Usage: node tag_harness.js TAG.js SCENARIO.json
// SCENARIO: {"href": "https://shop.example/thank-you?x=1", "calls": [["track", "checkout", {...}], ...]}
"use strict";

const fs = require("fs");
const vm = require("vm");
const nodeCrypto = require("crypto");

const [tagPath, scenarioPath] = process.argv.slice(2);
const code = fs.readFileSync(tagPath, "utf8");
const scenario = JSON.parse(fs.readFileSync(scenarioPath, "utf8"));
const href = new URL(scenario.href || "https://shop.example/");
const beacons = [];
const warnings = [];
const firstScript = { parentNode: { insertBefore() {} } };
const ctx = {
  location: { href: href.href, search: href.search, protocol: href.protocol, origin: href.origin },
  document: {
    cookie: "",
    currentScript: null,
    createElement(tag) {
      return { tagName: tag };
    },
    getElementsByTagName(tag) {
      return tag === "script" ? [firstScript] : [];
    },
  },
  navigator: {
    sendBeacon(url, body) {
      beacons.push({ url, body: JSON.parse(body), raw: body });
      return true;
    },
  },
  crypto: { randomUUID: () => nodeCrypto.randomUUID() },
  console: { warn: (...a) => warnings.push(a.join(" ")) },
  URL,
};
ctx.window = ctx;
vm.createContext(ctx);
vm.runInContext(code, ctx, { filename: "tag.js" });
const returned = (scenario.calls || []).map((args) => {
  const r = ctx.pincapi.apply(ctx, args);
  return r === undefined ? null : r;
});
process.stdout.write(
  JSON.stringify({ returned, pintrk: ctx.pintrk ? ctx.pintrk.queue : null, beacons, warnings })
);
