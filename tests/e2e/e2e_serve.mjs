// End-to-end test of `dsinfer serve` with the official OpenAI node client (openai@6).
// Usage: node tests/e2e/e2e_serve.mjs <path to the dsinfer binary> [extra serve flags...]
// Starts the server on a free port with the demo model (random weights), runs every check, sends SIGTERM and
// expects a clean exit 0. Exits 1 if any check fails.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
let OpenAI;
try {
  OpenAI = createRequire(path.join(here, 'package.json'))('openai').OpenAI;
} catch (e) {
  console.error('e2e: the npm package openai is missing: run (cd tests/e2e && npm install)');
  process.exit(1);
}

const binary = process.argv[2];
if (!binary) {
  console.error('usage: node e2e_serve.mjs <dsinfer binary> [serve flags]');
  process.exit(2);
}
const API_KEY = 'e2e-key';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
function assertEq(a, b, msg) {
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new Error(`${msg}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
  }
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const server = spawn(binary, ['serve', '--port', String(port), '--api-key', API_KEY, ...process.argv.slice(3)], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
let serverExit = null;
const exited = new Promise((resolve) => server.on('exit', (code, signal) => {
  serverExit = { code, signal };
  resolve(serverExit);
}));

async function waitHealthy(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (serverExit) throw new Error(`server exited early: ${JSON.stringify(serverExit)}`);
    try {
      const r = await fetch(`${base}/health`);
      if (r.status === 200) return;
    } catch (e) { /* not listening yet */ }
    await sleep(250);
  }
  throw new Error('server did not become healthy in time');
}

async function metrics() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const get = (name) => {
    const m = text.match(new RegExp(`^${name.replace(/[:]/g, '\\:')}\\{[^}]*\\} (\\S+)$`, 'm'));
    return m ? Number(m[1]) : NaN;
  };
  return { text, get };
}

const client = new OpenAI({ apiKey: API_KEY, baseURL: `${base}/v1`, maxRetries: 0, timeout: 300000 });
let MODEL = '';
let MAX_MODEL_LEN = 0;

async function chat(params) {
  return client.chat.completions.create({ model: MODEL, ...params });
}
async function chatStreamText(params) {
  const stream = await chat({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let first = null;
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    if (first === null) first = chunk.choices[0].delta;
    text += chunk.choices[0].delta.content ?? '';
    text += chunk.choices[0].delta.reasoning_content ?? '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  return { text, first, finish, usage };
}
const fullText = (msg) => (msg.reasoning_content ?? '') + (msg.content ?? '');

const greedy = (content, max_tokens = 16) => ({
  messages: [{ role: 'user', content }], max_tokens, temperature: 0, ignore_eos: true,
});

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('models list names the demo model', async () => {
  const list = await client.models.list();
  assert(list.data.length === 1, 'one model');
  MODEL = list.data[0].id;
  MAX_MODEL_LEN = list.data[0].max_model_len;
  assert(String(list.data[0].dsinfer_note ?? list.data[0].owned_by).includes('random weights'), 'demo note');
  const v = await (await fetch(`${base}/version`)).json();
  assert(typeof v.version === 'string', '/version');
});

test('chat non-stream: shape and usage', async () => {
  const r = await chat({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 8 });
  assertEq(r.object, 'chat.completion', 'object');
  assertEq(r.choices[0].message.role, 'assistant', 'role');
  assert(['stop', 'length'].includes(r.choices[0].finish_reason), 'finish_reason');
  assert(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8, 'completion_tokens');
  assertEq(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens, 'total_tokens');
});

test('chat stream equals non-stream (greedy), role first, usage chunk', async () => {
  const ns = await chat(greedy('Tell me a story.'));
  const s = await chatStreamText(greedy('Tell me a story.'));
  assertEq(s.first.role, 'assistant', 'first delta has the role');
  assertEq(s.text, fullText(ns.choices[0].message), 'stream text == non-stream text');
  assertEq(s.finish, 'length', 'finish_reason');
  assertEq(s.usage.completion_tokens, 16, 'usage chunk');
});

test('completions: non-stream, stream, token-id prompt', async () => {
  const p = { model: MODEL, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, ignore_eos: true };
  const r = await client.completions.create(p);
  assertEq(r.object, 'text_completion', 'object');
  assertEq(r.usage.completion_tokens, 8, 'usage');
  let text = '';
  let usage = null;
  for await (const c of await client.completions.create({ ...p, stream: true, stream_options: { include_usage: true } })) {
    if (c.usage) usage = c.usage;
    if (c.choices.length) text += c.choices[0].text;
  }
  assertEq(text, r.choices[0].text, 'stream == non-stream');
  assertEq(usage.completion_tokens, 8, 'stream usage');
  const ids = await client.completions.create({ ...p, prompt: [1, 2, 3, 4] });
  assertEq(ids.usage.prompt_tokens, 4, 'token id prompt');
});

test('stop strings cut the output and are not emitted', async () => {
  const r = await chat(greedy('Count with me: one two three', 24));
  const t = fullText(r.choices[0].message);
  const chars = [...t];
  if (chars.length < 8) {
    console.log('  (output too short to pick a stop string; skipped)');
    return;
  }
  const stop = chars.slice(5, 8).join('');
  const expected = t.slice(0, t.indexOf(stop));
  const s = await chat({ ...greedy('Count with me: one two three', 24), stop: [stop] });
  assertEq(fullText(s.choices[0].message), expected, 'text before the stop string');
  assertEq(s.choices[0].finish_reason, 'stop', 'finish_reason');
});

test('seed reproducibility', async () => {
  const p = { messages: [{ role: 'user', content: 'Pick a number.' }], max_tokens: 16, temperature: 1.0,
              top_p: 0.95, seed: 1234, ignore_eos: true };
  const a = await chat(p);
  const b = await chat(p);
  assertEq(fullText(a.choices[0].message), fullText(b.choices[0].message), 'same seed, same text');
  const n = await chat({ ...p, n: 2 });
  assertEq(n.choices.length, 2, 'n=2');
  assertEq(fullText(n.choices[0].message), fullText(a.choices[0].message), 'choice 0 uses the seed itself');
});

test('logprobs (chat and completions)', async () => {
  const r = await chat({ ...greedy('Hi', 6), logprobs: true, top_logprobs: 3 });
  const lp = r.choices[0].logprobs.content;
  assertEq(lp.length, r.usage.completion_tokens, 'one entry per token');
  for (const e of lp) {
    assert(e.logprob <= 0 && Array.isArray(e.bytes) && e.top_logprobs.length === 3, 'entry shape');
    assert(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-4, 'greedy token is the top one');
  }
  const c = await client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 4, temperature: 0,
                                             ignore_eos: true, logprobs: 2 });
  const l = c.choices[0].logprobs;
  assertEq(l.tokens.length, 4, 'tokens');
  assertEq(l.token_logprobs.length, 4, 'token_logprobs');
  assertEq(l.text_offset.length, 4, 'text_offset');
  assertEq(Object.keys(l.top_logprobs[0]).length <= 2, true, 'top_logprobs');
});

test('errors: 400, 401, 404', async () => {
  const expectStatus = async (status, fn) => {
    try {
      await fn();
    } catch (e) {
      assertEq(e.status, status, `status (${e.message})`);
      assert(e.error && typeof e.error.message === 'string', 'OpenAI error body');
      return e;
    }
    throw new Error(`expected HTTP ${status}`);
  };
  await expectStatus(400, () => chat({ messages: [{ role: 'user', content: 'x' }], temperature: 5 }));
  await expectStatus(400, () => chat({ messages: [] }));
  await expectStatus(400, () => chat({ messages: [{ role: 'wizard', content: 'x' }] }));
  const long = 'hello '.repeat(300000);
  const e = await expectStatus(400, () => chat({ messages: [{ role: 'user', content: long }] }));
  assert(/maximum context length/.test(e.message), 'context length message');
  const bad = new OpenAI({ apiKey: 'wrong', baseURL: `${base}/v1`, maxRetries: 0 });
  await expectStatus(401, () => bad.models.list());
  await expectStatus(404, () => client.chat.completions.create({ model: 'no-such-model',
                                                                 messages: [{ role: 'user', content: 'x' }] }));
});

test('64 concurrent streaming requests all complete', async () => {
  const runs = [];
  for (let i = 0; i < 64; i++) {
    runs.push(chatStreamText({ messages: [{ role: 'user', content: `Request number ${i}` }], max_tokens: 12,
                               ignore_eos: true, temperature: i % 2 ? 0.8 : 0 }));
  }
  const results = await Promise.all(runs);
  for (const r of results) {
    assertEq(r.finish, 'length', 'finished');
    assertEq(r.usage.completion_tokens, 12, 'tokens');
  }
});

test('a greedy request gives the same tokens alone and inside 32 mixed requests', async () => {
  const p = greedy('The quick brown fox', 20);
  const alone = fullText((await chat(p)).choices[0].message);
  const batch = [];
  for (let i = 0; i < 31; i++) {
    batch.push(chat({ messages: [{ role: 'user', content: `Other prompt ${i} ${'x '.repeat(i * 3)}` }],
                      max_tokens: 8 + (i % 16), temperature: i % 3 ? 0.9 : 0, ignore_eos: true }));
  }
  batch.splice(16, 0, chat(p));
  const results = await Promise.all(batch);
  assertEq(fullText(results[16].choices[0].message), alone, 'batched == alone');
});

test('prefix cache: a hit gives the same output and shows in /metrics', async () => {
  const long = 'This is a long shared system prompt about prefix caching. '.repeat(20);
  const p = { messages: [{ role: 'system', content: long }, { role: 'user', content: 'Go.' }], max_tokens: 12,
              temperature: 0, ignore_eos: true };
  const before = await metrics();
  const miss = await chat(p);
  const hit = await chat(p);
  const after = await metrics();
  assertEq(fullText(hit.choices[0].message), fullText(miss.choices[0].message), 'hit output == miss output');
  const hits = after.get('dsinfer:prefix_cache_hits_total') - before.get('dsinfer:prefix_cache_hits_total');
  assert(hits > 0, `prefix_cache_hits_total grew (${hits})`);
  assert((hit.usage.prompt_tokens_details?.cached_tokens ?? 0) > 0, 'usage.prompt_tokens_details.cached_tokens');
});

test('KV cache usage returns to 0 after a client disconnects mid-stream', async () => {
  const stream = await chat({ messages: [{ role: 'user', content: 'Write forever.' }],
                              max_tokens: Math.max(64, Math.min(3000, MAX_MODEL_LEN - 64)),
                              ignore_eos: true, stream: true });
  let n = 0;
  for await (const chunk of stream) {
    if (++n >= 4) break;  // breaking out aborts the HTTP request
  }
  let m = await metrics();
  for (let i = 0; i < 100; i++) {
    if (m.get('dsinfer:kv_cache_usage_perc') === 0 && m.get('dsinfer:num_requests_running') === 0) break;
    await sleep(100);
    m = await metrics();
  }
  assertEq(m.get('dsinfer:num_requests_running'), 0, 'no running request');
  assertEq(m.get('dsinfer:kv_cache_usage_perc'), 0, 'KV cache empty');
  const health = await fetch(`${base}/health`);
  assertEq(health.status, 200, 'still healthy');
});

let failed = 0;
try {
  await waitHealthy(600000);
  for (const t of tests) {
    const t0 = Date.now();
    try {
      await t.fn();
      console.log(`PASS ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${t.name}: ${e.stack || e}`);
    }
  }
} catch (e) {
  failed++;
  console.log(`FAIL startup: ${e.message}`);
}

// Graceful shutdown: SIGTERM -> exit 0.
if (!serverExit) {
  server.kill('SIGTERM');
  const res = await Promise.race([exited, sleep(60000).then(() => null)]);
  if (!res) {
    failed++;
    console.log('FAIL shutdown: no exit within 60 s of SIGTERM');
    server.kill('SIGKILL');
  } else if (res.code !== 0) {
    failed++;
    console.log(`FAIL shutdown: exit ${JSON.stringify(res)}`);
  } else {
    console.log('PASS SIGTERM -> exit 0');
  }
}
console.log(failed ? `e2e: ${failed} failed` : 'e2e: all passed');
process.exit(failed ? 1 : 0);
