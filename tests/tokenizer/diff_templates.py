#!/usr/bin/python3
"""Differential test of dsinfer's Jinja subset against real Jinja2 (Debian python3-jinja2), configured as
transformers' apply_chat_template configures it. Renders the published chat templates in fixtures/templates on
generated conversations, plus feature templates on generated contexts; outputs must be equal (or both fail).
usage: diff_templates.py DRIVER [COUNT] [SEED]"""
import json
import os
import random
import subprocess
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


TEXTS = ["Hi", "2+2?", "多机部署", "  spaced  ", "line1\nline2\n", "tab\there", "quote ' and \"", "emoji 🤖",
         "<think>\nreason\n</think>\n\nanswer", "a</think>b", "", "{{ not a tag }}", "{% raw %}", "\\n literal",
         "Ünïcödé", "x" * 50, "</think>", "trailing\n\n"]


def rand_text(r):
    return "".join(r.choice(TEXTS) for _ in range(r.randint(1, 3)))


def rand_tool_call(r):
    args = json.dumps({"city": r.choice(["Beijing", "巴黎", "New \"York\""]), "n": r.randint(0, 9)}, ensure_ascii=False)
    fn = {"name": r.choice(["get_weather", "search", "calc"]), "arguments": args if r.random() < 0.7 else {"k": [1, 2]}}
    return {"type": "function", "function": fn}


def rand_messages(r):
    msgs = []
    if r.random() < 0.5:
        msgs.append({"role": "system", "content": rand_text(r)})
    for _ in range(r.randint(1, 5)):
        msgs.append({"role": "user", "content": rand_text(r)})
        k = r.random()
        if k < 0.25:
            msgs.append({"role": "assistant", "content": None,
                         "tool_calls": [rand_tool_call(r) for _ in range(r.randint(1, 3))]})
            for _ in range(r.randint(1, 2)):
                msgs.append({"role": "tool", "content": json.dumps({"temp": r.randint(-5, 30)})})
            if r.random() < 0.5:
                msgs.append({"role": "assistant", "content": rand_text(r)})
        elif k < 0.8:
            msgs.append({"role": "assistant", "content": rand_text(r)})
    return msgs


FEATURE_TEMPLATES = [
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.role | upper }}{% if not loop.last %}, {% endif %}{% endfor %}",
    "{{ messages | length }} {{ messages[0].content | trim | length }} {{ (messages | first).role }} {{ (messages | last).role }}",
    "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}",
    "{% for m in messages if m.role == 'user' %}[{{ m.content[:5] }}|{{ m.content[-3:] }}|{{ m.content[::2] }}]{% endfor %}",
    "{{ messages | tojson }}",
    "{{ messages[0] | tojson(indent=2) }}",
    "{% for m in messages %}{{ m.content.split('\\n') | join('/') if m.content is string else 'none' }};{% endfor %}",
    "{% for m in messages %}{{ m.content.strip() if m.content else '-' }}|{{ m.content.startswith('<think>') if m.content is string }}{% endfor %}",
    "{% for m in messages %}{% if m.tool_calls is defined %}{% for t in m.tool_calls %}{{ t.function.name }}({{ t.function.arguments | tojson }}){% endfor %}{% endif %}{% endfor %}",
    "{%- for m in messages -%}\n  {%- if m.role == 'user' -%}\n    U: {{ m.content }}\n  {%- elif m.role == 'assistant' %}\n    A: {{ m.content }}\n  {% else %}\n    O\n  {%- endif %}\n{% endfor %}",
    "{% for m in messages %}\n  {% if loop.first %}\nfirst {{ m.role }}\n  {% endif %}\n{{ m.role }}\n{% endfor %}\n",
    "{{ 'a' ~ 1 ~ none ~ true }} {{ 1 + 2 * 3 - 4 // 3 }} {{ 7 % 4 }} {{ 2 ** 8 }} {{ 10 / 4 }} {{ -3 // 2 }} {{ 1.5 + 1 }}",
    "{{ [1, 2, 3] | join(',') }} {{ {'a': 1}.items() | list }} {{ 'x' in ['x'] }} {{ 'k' not in {'k': 1} }} {{ none is none }}",
    "{% set x = messages | selectattr('role', 'equalto', 'user') | list %}{{ x | length }}{{ messages | map(attribute='role') | join(' ') }}",
    "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|{% for m in messages %}{% if m.role == 'user' %}{% continue %}{% endif %}{{ m.role[:1] }}{% endfor %}",
    "{% if add_generation_prompt is defined and add_generation_prompt %}G{% elif add_generation_prompt is defined %}g{% else %}-{% endif %}{{ bos_token | default('B') }}",
    "{{ messages[0].content | replace('\\n', '\\\\n') }} {{ messages[0].content | lower }} {{ messages[0].content | title }} {{ messages[0].role | capitalize }}",
    "{% macro fmt(m, sep=': ') %}{{ m.role }}{{ sep }}{{ m.content }}{% endmacro %}{% for m in messages %}{{ fmt(m) }}{{ fmt(m, sep='=') }}{% endfor %}",
    "{{ messages | selectattr('tool_calls', 'defined') | list | length }} {{ messages | rejectattr('content', 'none') | list | length }}",
    "{% for m in messages %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.previtem.role if loop.previtem is defined }} {% endfor %}",
    "{{ messages[0].content is string }} {{ messages[0].missing is defined }} {{ messages[0]['role'] == 'system' }} {{ (messages | length) is even }}",
    "{%- set sys = messages[0].content if messages[0].role == 'system' else '' -%}\n{{- sys -}}\n{%- for m in messages[1:] %} {{ m.role }}{% endfor %}",
    "{# comment #}\n  {%- for m in messages %}{{ m.role }}{%+ if true %} x{% endif %}\n{% endfor %}",
    "{{ messages | tojson(indent=1) | length }} {{ {'b': [1, {'c': none}], 'a': 1.25} | tojson }} {{ 'é\"\\\\' | tojson }}",
]


def main():
    driver = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    r = random.Random(seed)
    env = make_env()
    tdir = os.path.join(HERE, "fixtures", "templates")
    published = {n: open(os.path.join(tdir, n), encoding="utf-8").read() for n in sorted(os.listdir(tdir))}
    cases = []
    for i in range(count):
        ctx = {"messages": rand_messages(r), "bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
        if r.random() < 0.85:
            ctx["add_generation_prompt"] = r.random() < 0.5
        if r.random() < 0.2:
            ctx["tools"] = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        if i % 3 == 0:
            name = "feature-%d" % (i // 3 % len(FEATURE_TEMPLATES))
            text = FEATURE_TEMPLATES[i // 3 % len(FEATURE_TEMPLATES)]
        else:
            name = r.choice(sorted(published))
            text = published[name]
        cases.append((name, text, ctx))
    want = []
    for name, text, ctx in cases:
        try:
            want.append(("ok", env.from_string(text).render(**ctx)))
        except Exception as e:  # noqa: BLE001 - any Jinja2 failure counts as "error"
            want.append(("error", "%s: %s" % (type(e).__name__, e)))
    inp = "".join(json.dumps({"template": t, "context": c}, ensure_ascii=False) + "\n" for _, t, c in cases)
    res = subprocess.run([driver, "render"], input=inp.encode(), capture_output=True)
    if res.returncode != 0:
        print("FAIL: driver exited %d: %s" % (res.returncode, res.stderr.decode(errors="replace")))
        return 1
    lines = res.stdout.decode().splitlines()
    if len(lines) != len(cases):
        print("FAIL: driver returned %d lines for %d cases" % (len(lines), len(cases)))
        return 1
    bad = 0
    n_err = 0
    for (name, _, ctx), (kind, text), line in zip(cases, want, lines):
        got = json.loads(line)
        if kind == "error":
            n_err += 1
            ok = "error" in got
        else:
            ok = got.get("rendered") == text
        if not ok:
            bad += 1
            if bad <= 5:
                print("MISMATCH %s ctx=%s\n  jinja2 : %r\n  dsinfer: %r" % (name, json.dumps(ctx, ensure_ascii=False)[:400],
                                                                         text, got))
    print("templates: %d renders (%d expected errors), %d mismatches" % (len(cases), n_err, bad))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
