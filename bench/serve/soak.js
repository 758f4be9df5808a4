#!/usr/bin/env node
// Soak run (by hand): N concurrent streaming chat requests against a running `dsinfer serve` for a fixed time.
// Checks every response is complete (finish_reason "length" with exactly --output-len tokens, ignore_eos) and
// samples the server's resident memory (/proc/PID/status VmRSS) every --sample-s seconds.
// Usage: node bench/serve/soak.js --pid PID [--base-url http://127.0.0.1:8000/v1] [--concurrency 256]
//          [--minutes 10] [--output-len 32] [--input-len 64] [--sample-s 30] [--out FILE]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { OpenAI } = require(path.join(__dirname, '..', '..', 'tests', 'e2e', 'node_modules', 'openai'));

const a = { baseUrl: 'http://127.0.0.1:8000/v1', concurrency: 256, minutes: 10, outputLen: 32, inputLen: 64,
            sampleS: 30, pid: 0, out: '' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  if (!(k in a)) throw new Error(`unknown flag ${argv[i]}`);
  a[k] = typeof a[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
}
if (!a.pid) throw new Error('--pid of the server is required (for its resident memory)');

const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${a.pid}/status`, 'utf8'))[1]);
const words = 'alpha beta gamma delta token cache expert router layer kernel stream batch'.split(' ');

async function main() {
  const client = new OpenAI({ apiKey: 'none', baseURL: a.baseUrl, maxRetries: 0, timeout: 600000 });
  const model = (await client.models.list()).data[0].id;
  const deadline = Date.now() + a.minutes * 60000;
  let ok = 0, incomplete = 0, failed = 0, n = 0;
  const samples = [{ t_s: 0, rss_mb: rssKb() / 1024 }];
  const t0 = Date.now();
  const sampler = setInterval(() => samples.push({ t_s: (Date.now() - t0) / 1000, rss_mb: rssKb() / 1024 }), a.sampleS * 1000);
  const worker = async () => {
    while (Date.now() < deadline) {
      const i = n++;
      const prompt = Array.from({ length: a.inputLen }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' ');
      try {
        const stream = await client.chat.completions.create({
          model, messages: [{ role: 'user', content: prompt }], max_tokens: a.outputLen, ignore_eos: true,
          stream: true, stream_options: { include_usage: true } });
        let finish = null, usage = null;
        for await (const c of stream) {
          if (c.usage) usage = c.usage;
          if (c.choices.length && c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
        }
        if (finish === 'length' && usage && usage.completion_tokens === a.outputLen) ok++;
        else incomplete++;
      } catch (e) {
        failed++;
        if (failed <= 5) console.error(`request failed: ${e.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: a.concurrency }, worker));
  clearInterval(sampler);
  samples.push({ t_s: (Date.now() - t0) / 1000, rss_mb: rssKb() / 1024 });
  const late = samples.filter((s) => s.t_s >= (a.minutes * 60) / 2).map((s) => s.rss_mb);
  const report = { date: new Date().toISOString(), model, concurrency: a.concurrency, minutes: a.minutes,
                   output_len: a.outputLen, requests_complete: ok, requests_incomplete: incomplete,
                   requests_failed: failed, rss_mb_first: samples[0].rss_mb,
                   rss_mb_second_half_min: Math.min(...late), rss_mb_second_half_max: Math.max(...late),
                   rss_mb_last: samples[samples.length - 1].rss_mb, samples };
  const text = JSON.stringify(report, null, 1);
  if (a.out) fs.writeFileSync(a.out, text + '\n');
  console.log(JSON.stringify({ ...report, samples: undefined }));
  process.exit(incomplete || failed ? 1 : 0);
}
main().catch((e) => { console.error(e); process.exit(2); });
