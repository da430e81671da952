// Shared helpers: headless Debian Chromium through playwright-core, and the stack's addresses
// (browser-tests/run.py starts the stack and passes them in the environment).
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through browser-tests/test.sh`);
  return value;
}

export const env = {
  chatUrl: () => need("WIS_CHAT_URL"),
  viewUrl: () => need("WIS_VIEW_URL"),
  gatewayUrl: () => need("WIS_GATEWAY_URL"),
  pool: () => need("WIS_POOL").split(","),
  decisionLog: () => need("WIS_DECISION_LOG"),
};

const ARTIFACTS = process.env.WIS_ARTIFACTS || join(process.cwd(), "artifacts");

// Flags for a root user on a machine with no internet: no sandbox, no GPU, and no background
// connections (they are refused here and slow the browser down).
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];

export async function launch() {
  return chromium.launch({ executablePath: need("WIS_CHROMIUM"), headless: true, args: FLAGS });
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

// Lines of Envoy's JSON decision log (one object per request).
export function decisionLog() {
  let text = "";
  try { text = readFileSync(env.decisionLog(), "utf8"); } catch { return []; }
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

// Polls `check` (a function returning a value or undefined) until it returns something.
export async function eventually(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try { last = await check(); } catch (e) { last = undefined; if (Date.now() > deadline) throw e; }
    if (last !== undefined && last !== null && last !== false) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
