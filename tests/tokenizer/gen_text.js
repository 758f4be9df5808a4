// Seeded generator of adversarial tokenizer inputs: mixed scripts, emoji (ZWJ, flags, skin tones), digit runs,
// whitespace runs, special-token text (whole and broken), code, contractions, combining marks.
'use strict';

function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

const RANGES = [
  [0x41, 0x5a], [0x61, 0x7a], [0x61, 0x7a], [0x30, 0x39], [0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e],
  [0xc0, 0x24f], [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x5ff], [0x600, 0x6ff], [0x900, 0x97f], [0xe00, 0xe7f],
  [0x1100, 0x11ff], [0x3040, 0x309f], [0x30a0, 0x30ff], [0x4e00, 0x9fa5], [0x4e00, 0x9fff], [0xac00, 0xd7a3],
  [0xff01, 0xff5e], [0x2000, 0x206f], [0x2190, 0x22ff], [0x2500, 0x257f], [0x3000, 0x303f], [0x1f300, 0x1f64f],
  [0x1f680, 0x1f6d7], [0x1f900, 0x1f9ff], [0x20000, 0x2a6df], [0x300, 0x36f], [0x1d400, 0x1d7ff], [0xe000, 0xe0ff],
  [0x80, 0xbf], [0x2e80, 0x2fdf], [0x31f0, 0x31ff], [0xa960, 0xa97f], [0x10a0, 0x10ff],
];
const WORDS = ['the', 'The', ' and', 'hello', 'world', 'DeepSeek', 'tokenizer', '部署', '多机', '显存', '昇腾', 'テキスト',
  'ひらがな', 'カタカナ', 'Привет', 'мир', 'γειά', 'مرحبا', 'नमस्ते', 'สวัสดี', '안녕하세요', 'naïve', 'café', 'Ünïcödé',
  "it's", "I'LL", "we've", "don't", "'S", "'re", "'D", 'x**2', '==', '!=', '->', '=>', '::', '...', '—', '–', '«»',
  '¿Qué?', '¡Hola!', 'ﬁ', 'Å', 'e\u0301', 'n\u0303', '한국어', '\u200b', '\u200d', '\ufeff', '\u00ad', 'ǅ', 'ß', 'İ'];
// Unicode 15.0 additions (emoji 15.0, Kawi, CJK Ext H, Nag Mundari, Kaktovik): PCRE2 10.42 lacks them.
const U15 = ['\u{1F6DC}', '\u{1FA77}', '\u{1FAE8}', '\u{1FABB}', '\u{11F04}\u{11F34}', '\u{31350}\u{31351}',
  '\u{1E4D0}\u{1E4EC}', '\u{1D2C1}', '\u{11B00}', '\u{1E030}', 'x\u{0ECE}'];
const EMOJI = ['🤖', '🚀', '👩‍💻', '👨‍👩‍👧', '🇨🇳', '🇺🇸', '👍🏽', '❤️', '☕', '🏳️‍🌈', '😀', '🧑🏿‍🚀', '✨', '1️⃣', '©️'];
const SPACES = [' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \n', '\n ', '\u00a0', '\u3000', '\u2028', '\u2003',
  '\v', '\f', '    ', '\t\t', ' \t ', '\r', '\u0085'];
const CODE = ['def f(x):\n    return x**2  # comment\n', 'for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n',
  'const x = {"a": [1, 2, 3], "b": null};', '<div class="x">Hi</div>', 'SELECT * FROM t WHERE id = 42;',
  '#include <vector>\nint main() { return 0; }\n', '$ ls -la | grep "*.cc" && echo $?', '```python\nprint("hi")\n```',
  'fn main() -> Result<(), Box<dyn Error>> {}', 'if a>=b and not c: pass', '// TODO(x): fix\r\n', 'λx. x + 1'];

function make_gen(seed, specials) {
  const r = rng(seed);
  const pick = (a) => a[Math.floor(r() * a.length)];
  const int = (n) => Math.floor(r() * n);
  const cp = () => {
    const [a, b] = pick(RANGES);
    let c = a + int(b - a + 1);
    if (c >= 0xd800 && c <= 0xdfff) c = 0x41;
    return String.fromCodePoint(c);
  };
  const part = () => {
    const k = int(14);
    switch (k) {
      case 0: case 1: { let s = ''; const n = 1 + int(12); for (let i = 0; i < n; ++i) s += cp(); return s; }
      case 2: case 3: return pick(WORDS);
      case 4: return r() < 0.2 ? pick(U15) : pick(EMOJI);
      case 5: return pick(SPACES);
      case 6: { let s = ''; const n = 1 + int(3); for (let i = 0; i < n; ++i) s += pick(SPACES); return s; }
      case 7: { let s = ''; const n = 1 + int(14); for (let i = 0; i < n; ++i) s += String(int(10)); return s; }
      case 8: if (specials.length) {
        const t = pick(specials);
        const v = int(4);
        if (v === 0) return t.slice(0, 1 + int(Math.max(1, t.length - 1)));  // broken special token
        if (v === 1) return ' ' + t + ' ';
        return t;
      } return 'x';
      case 9: return pick(CODE);
      case 10: return ' ' + pick(WORDS);
      case 11: { const w = pick(WORDS); return r() < 0.5 ? w.toUpperCase() : w; }
      case 12: return String.fromCharCode(0x21 + int(94)).repeat(1 + int(4));
      default: return pick(['.', ',', '!', '?', '。', '，', '：', '、', '"', "'", '(', ')', '-', '_', '/', '\\']);
    }
  };
  return (max_parts) => {
    const n = int(max_parts + 1);
    let s = '';
    for (let i = 0; i < n; ++i) s += part();
    return s;
  };
}

module.exports = { make_gen, rng };
