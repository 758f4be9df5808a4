#!/usr/bin/env node
// Serving benchmark against a running `dsinfer serve` (or any OpenAI-compatible server), with the official
// OpenAI node client from tests/e2e/node_modules ((cd tests/e2e && npm install)).
//
// Usage: node bench/serve/bench_serve.js [--base-url http://127.0.0.1:8000/v1] [--api-key KEY]
//          [--num-requests 200] (--concurrency 32 | --request-rate 8) [--input-len 256] [--output-len 128]
//          [--seed 0] [--out bench/results/serve-<date>.json]
// Fixed concurrency keeps N requests in flight; a request rate sends Poisson arrivals. Prompts are random words
// of about --input-len tokens; every request streams exactly --output-len tokens (ignore_eos). Reports request
// throughput, output tokens/s, TTFT and TPOT p50/p99 (ms), and writes them as JSON.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const repo = path.resolve(__dirname, '..', '..');
let OpenAI;
try {
  OpenAI = require(path.join(repo, 'tests', 'e2e', 'node_modules', 'openai')).OpenAI;
} catch (e) {
  console.error('bench_serve: the npm package openai is missing: run (cd tests/e2e && npm install)');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { baseUrl: 'http://127.0.0.1:8000/v1', apiKey: 'none', numRequests: 200, concurrency: 0,
              requestRate: 0, inputLen: 256, outputLen: 128, seed: 0, out: '', model: '' };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(k in a)) throw new Error(`unknown flag ${argv[i]}`);
    a[k] = typeof a[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!a.concurrency && !a.requestRate) a.concurrency = 32;
  return a;
}

// Small deterministic PRNG (mulberry32) so runs are comparable.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ('time person year way day thing man world life hand part child eye woman place work week case point ' +
  'government company number group problem fact model engine token cache batch layer expert router river stone ' +
  'music light paper window garden ocean mountain signal vector matrix kernel thread memory').split(' ');

function randomPrompt(rand, len) {
  const w = [];
  for (let i = 0; i < len; i++) w.push(WORDS[Math.floor(rand() * WORDS.length)]);
  return w.join(' ');
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

async function oneRequest(client, model, prompt, outputLen) {
  const t0 = performance.now();
  let ttft = null;
  let last = t0;
  let tokens = 0;
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: prompt }], max_tokens: outputLen, temperature: 0,
    ignore_eos: true, stream: true, stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    const d = chunk.choices[0].delta;
    if ((d.content ?? '') !== '' || (d.reasoning_content ?? '') !== '') {
      const now = performance.now();
      if (ttft === null) ttft = now - t0;
      last = now;
    }
  }
  tokens = usage ? usage.completion_tokens : outputLen;
  const e2e = performance.now() - t0;
  const tpot = tokens > 1 && ttft !== null ? (last - t0 - ttft) / (tokens - 1) : null;
  return { ttft, tpot, e2e, tokens, promptTokens: usage ? usage.prompt_tokens : null };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const client = new OpenAI({ apiKey: a.apiKey, baseURL: a.baseUrl, maxRetries: 0, timeout: 3600000 });
  const model = a.model || (await client.models.list()).data[0].id;
  const rand = rng(a.seed);
  const prompts = Array.from({ length: a.numRequests }, () => randomPrompt(rand, a.inputLen));
  const results = [];
  let failures = 0;
  const run = (p) => oneRequest(client, model, p, a.outputLen).then((r) => results.push(r)).catch((e) => {
    failures++;
    if (failures <= 5) console.error(`request failed: ${e.message}`);
  });

  const t0 = performance.now();
  if (a.concurrency) {
    let next = 0;
    const worker = async () => {
      while (next < prompts.length) await run(prompts[next++]);
    };
    await Promise.all(Array.from({ length: a.concurrency }, worker));
  } else {
    const inflight = [];
    for (const p of prompts) {
      inflight.push(run(p));
      await new Promise((r) => setTimeout(r, (-Math.log(1 - rand()) / a.requestRate) * 1000));  // Poisson
    }
    await Promise.all(inflight);
  }
  const seconds = (performance.now() - t0) / 1000;

  const sorted = (k) => results.map((r) => r[k]).filter((v) => v !== null).sort((x, y) => x - y);
  const ttft = sorted('ttft');
  const tpot = sorted('tpot');
  const e2e = sorted('e2e');
  const outputTokens = results.reduce((s, r) => s + r.tokens, 0);
  const report = {
    date: new Date().toISOString(),
    base_url: a.baseUrl,
    model,
    mode: a.concurrency ? { concurrency: a.concurrency } : { request_rate: a.requestRate },
    num_requests: a.numRequests,
    completed: results.length,
    failed: failures,
    input_len_words: a.inputLen,
    output_len: a.outputLen,
    duration_s: seconds,
    request_throughput_per_s: results.length / seconds,
    output_tokens_per_s: outputTokens / seconds,
    ttft_ms: { p50: percentile(ttft, 50), p99: percentile(ttft, 99), mean: ttft.reduce((s, v) => s + v, 0) / (ttft.length || 1) },
    tpot_ms: { p50: percentile(tpot, 50), p99: percentile(tpot, 99), mean: tpot.reduce((s, v) => s + v, 0) / (tpot.length || 1) },
    e2e_ms: { p50: percentile(e2e, 50), p99: percentile(e2e, 99) },
  };
  const out = a.out || path.join(repo, 'bench', 'results', `serve-${report.date.slice(0, 19).replace(/:/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  console.log(JSON.stringify(report, null, 2));
  console.error(`bench_serve: wrote ${out}`);
  process.exit(failures ? 1 : 0);
}

main().catch((e) => {
  console.error(`bench_serve: ${e.stack || e}`);
  process.exit(1);
});
