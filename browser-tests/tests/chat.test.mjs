// The Gradio chat in a real browser: a message goes Gradio → Envoy → plugin → a simulated vLLM
// pod, the reply streams in, and the second turn of the conversation lands on the same pod.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { decisionLog, env, eventually, launch, screenshot } from "./browser.mjs";

let browser, page;
const pageErrors = [];

before(async () => {
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(env.chatUrl());
  await page.waitForSelector("#chat-input textarea", { timeout: 60000 });
});

after(async () => {
  await browser?.close();
});

async function send(text, turn) {
  await page.fill("#chat-input textarea", text);
  await page.press("#chat-input textarea", "Enter");
  // The route line names the turn once its reply has finished streaming.
  const line = await eventually(`the reply to turn ${turn}`, async () => {
    const t = await page.textContent("#route-info");
    return t.includes(`turn ${turn}: served by`) ? t : undefined;
  }, 60000);
  const pod = line.match(/served by (\S+)/)[1];
  const bubbles = await page.$$eval("#chatbot .message", (ms) => ms.map((m) => m.textContent.trim()));
  return { line, pod, bubbles };
}

test("a message streams a reply from a pool pod, and the next turn stays on that pod", async () => {
  // A first message with some context, as people paste into a chat: long enough (about 20 KV
  // blocks) that the prefix the next turn shares outweighs the load signals of an idle pool.
  const notes = [
    "I ride to work every day, about twelve kilometres each way, through a coastal city where it rains most of the winter.",
    "The bike is a steel touring frame with a nine-speed derailleur drivetrain and a chain that is about a year old.",
    "I store it on a balcony under a cover, and I wipe the chain with a rag once a week, but never degrease it.",
    "Last month the chain started to squeak after rides in the rain, and a few links now show orange spots of rust.",
    "I have a bottle of wet lube, a bottle of dry lube, some degreaser, an old toothbrush and a chain checker tool.",
    "The shop told me the chain is not yet stretched past 0.5 percent, so I would like to keep it as long as I can.",
    "I do not have a garage or a workshop, only the balcony and a bucket, and I would rather not spend much money.",
    "In summer the roads are dusty and sandy near the beach, and in winter the city spreads salt when it freezes.",
    "Please keep in mind that I am not very experienced with bike maintenance and do not own a work stand.",
  ].join(" ");
  const first = await send(`${notes} How do I keep my bicycle chain from rusting?`, 1);
  assert.ok(env.pool().includes(first.pod), `turn 1 served by ${first.pod}, a pool member`);
  assert.ok(first.bubbles.length >= 2, `a user and an assistant message: ${JSON.stringify(first.bubbles)}`);
  assert.ok(first.bubbles.at(-1).length > 0, "the reply has text");
  assert.match(first.line, /cached \d+\/\d+ prompt tokens/);
  await screenshot(page, "chat-turn-1");

  const second = await send("And how often should I oil it?", 2);
  if (second.pod !== first.pod) {
    // Say why: the decision Envoy's filter made for each turn, every scorer for every pod.
    const chats = decisionLog().filter((l) => l.path === "/v1/chat/completions").slice(-2);
    console.log(`# decisions of both turns: ${JSON.stringify(chats.map((l) => l.decision))}`);
  }
  assert.equal(second.pod, first.pod, "the follow-up turn shares the prefix and lands on the same pod");
  const [, cached] = second.line.match(/cached (\d+)\//);
  assert.ok(Number(cached) > 0, `the pod found the first turn cached: ${second.line}`);
  const history = await page.textContent("#route-history");
  assert.ok(history.includes(first.pod), history);
  assert.deepEqual(pageErrors, []);
  await screenshot(page, "chat-turn-2");

  // What Envoy itself logged: both turns went upstream to that pod.
  const served = await eventually("both turns in Envoy's decision log", () => {
    const chats = decisionLog().filter((l) => l.path === "/v1/chat/completions" && l.status === 200);
    return chats.length >= 2 ? chats.slice(-2).map((l) => l.upstream) : undefined;
  });
  assert.deepEqual(served, [first.pod, first.pod]);
});
