// The decision view in a real browser: the live pool, a typed request scheduled by the Rust core
// compiled to wasm, an error for a malformed body, and real gateway traffic with its decisions.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { env, eventually, launch, screenshot } from "./browser.mjs";

const MODEL = process.env.WIS_MODEL || "Qwen/Qwen3-0.6B";
let browser, page;
const pageErrors = [];

before(async () => {
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(env.viewUrl());
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30000 });
});

after(async () => {
  await browser?.close();
});

const primaryOf = () => page.getAttribute("#decision", "data-primary");

test("the view shows every pod of the live pool, read from the scraper", async () => {
  const rows = await page.$$eval("#pool-table tbody tr", (trs) => trs.map((tr) => tr.dataset.address));
  assert.deepEqual([...rows].sort(), [...env.pool()].sort());
  assert.match(await page.textContent("#status"), /endpoints from the scraper/);
  const health = await page.$$eval("#pool-table tbody tr td:nth-child(2)", (tds) => tds.map((t) => t.textContent));
  assert.deepEqual(health, env.pool().map(() => "healthy"));
  assert.deepEqual(pageErrors, []);
  await screenshot(page, "decision-view-pool");
});

test("a typed request is scheduled in the page: each scorer's score for each pod, the winner and the fallbacks", async () => {
  await page.click("#schedule-btn");
  const primary = await primaryOf();
  assert.ok(env.pool().includes(primary), `winner ${primary} is a pool member`);
  const header = await page.$$eval("#decision-table thead th", (ths) => ths.map((t) => t.textContent));
  assert.ok(header.includes("prefix-cache-scorer ×3"), header.join(" | "));
  assert.ok(header.includes("queue-scorer ×2"), header.join(" | "));
  assert.ok(header.includes("kv-cache-utilization-scorer ×2"), header.join(" | "));
  const rows = await page.$$eval("#decision-table tbody tr", (trs) => trs.map((t) => [t.dataset.address, t.className]));
  assert.equal(rows.length, env.pool().length);
  assert.deepEqual(rows[0], [primary, "winner"]);
  assert.ok(rows.filter(([, c]) => c === "fallback").length >= 1, JSON.stringify(rows));

  // The next turn of the same conversation: the page remembered where the first went.
  const body = JSON.parse(await page.inputValue("#whatif-body"));
  body.messages.push({ role: "assistant", content: "Use a fine whetstone at the original bevel angle." });
  body.messages.push({ role: "user", content: "And how often should I oil them?" });
  await page.fill("#whatif-body", JSON.stringify(body, null, 2));
  await page.click("#schedule-btn");
  assert.equal(await primaryOf(), primary, "the follow-up turn goes where its prefix is");
  const summary = await page.textContent("#decision .summary");
  const [, predicted] = summary.match(/predicted prefix (\d+)\/\d+ blocks/);
  assert.ok(Number(predicted) > 0, summary);
  await screenshot(page, "decision-view-typed-request");
});

test("a malformed body gets the filter's own error, not a decision", async () => {
  await page.fill("#whatif-body", '{"model": "x", "messages": ');
  await page.click("#schedule-btn");
  assert.equal(await primaryOf(), "");
  assert.match(await page.textContent("#decision .error"), /not valid JSON/);
});

test("requests through the gateway appear with the decision Envoy's filter made, and the charts plot them", async () => {
  const system = "You are a terse assistant for a bicycle repair shop. ".repeat(30);
  // Tagged in the query string (the filter ignores it; Envoy's log keeps it) to tell them apart.
  const path = "/v1/chat/completions?from=decision-view-test";
  for (let i = 0; i < 6; i++) {
    const resp = await fetch(`${env.gatewayUrl()}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, max_tokens: 8,
        messages: [{ role: "system", content: system }, { role: "user", content: `Question ${i}` }] }),
    });
    assert.equal(resp.status, 200, await resp.text());
  }
  const decided = await eventually("six gateway decisions in the table", async () => {
    const rows = await page.$$eval("#recent-table tbody tr", (trs) =>
      trs.map((t) => [t.children[2]?.textContent, t.dataset.primary]));
    const primaries = rows.filter(([p, primary]) => p === path && primary).map(([, primary]) => primary);
    return primaries.length >= 6 ? primaries : undefined;
  });
  for (const p of decided) assert.ok(env.pool().includes(p), `${p} is a pool member`);
  // The shared system prompt keeps them together after the first.
  assert.equal(new Set(decided.slice(0, 5)).size, 1, `one pod for one shared prefix: ${decided}`);

  await page.click(`#recent-table tbody tr:has(td:text-is("${path}"))`);
  assert.equal(await primaryOf(), decided[0]);
  assert.match(await page.textContent("#decision-source"), /gateway request/);
  const rows = await page.$$eval("#decision-table tbody tr", (trs) => trs.length);
  assert.equal(rows, env.pool().length);

  const legend = await eventually("the routing chart's legend names every pod", async () => {
    const text = await page.textContent("#routing-legend");
    return env.pool().every((p) => text.includes(p)) ? text : undefined;
  });
  assert.match(legend, /\/s/);
  const decisions = await eventually("the pool table counts the decisions", async () => {
    const cells = await page.$$eval("#pool-table tbody tr td:last-child", (tds) => tds.map((t) => Number(t.textContent) || 0));
    const total = cells.reduce((a, b) => a + b, 0);
    return total >= 6 ? total : undefined;
  });
  assert.ok(decisions >= 6);
  assert.deepEqual(pageErrors, []);
  await screenshot(page, "decision-view-gateway-traffic");
});
