#include "tokenizer/jinja_eval.h"

#include <cmath>

namespace dsi::tok::jinja {

void Evaluator::fail(int line, const std::string& msg) {
  if (err_.ok()) err_ = Status::InvalidArgument(str_cat("template line ", line, ": ", msg));
}

bool Evaluator::step(int line, int64_t n) {
  steps_ += n;
  if (steps_ > limits_.max_steps) {
    fail(line, str_cat("render exceeded ", limits_.max_steps, " steps"));
    return false;
  }
  return !failed();
}

void Evaluator::append(std::string& out, const std::string& s, int line) {
  if (out.size() + s.size() > limits_.max_output_bytes) {
    fail(line, str_cat("rendered output exceeds ", limits_.max_output_bytes, " bytes"));
    return;
  }
  out += s;
}

Result<std::string> Evaluator::render(const Template& tmpl, const std::vector<std::pair<std::string, Value>>& globals) {
  frames_.clear();
  frames_.push_back(builtin_globals());
  frames_.push_back(globals);
  frames_.emplace_back();
  std::string out;
  exec_body(tmpl.body, out);
  if (!err_.ok()) return err_;
  return out;
}

Value Evaluator::lookup(const std::string& name) const {
  for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
    for (const auto& [k, v] : *f) {
      if (k == name) return v;
    }
  }
  return Value::undefined(name);
}

void Evaluator::assign(const std::string& name, Value v) {
  auto& f = frames_.back();
  for (auto& [k, old] : f) {
    if (k == name) {
      old = std::move(v);
      return;
    }
  }
  f.emplace_back(name, std::move(v));
}

Evaluator::Flow Evaluator::exec_body(const Body& body, std::string& out) {
  for (const auto& s : body) {
    Flow f = exec(*s, out);
    if (failed()) return Flow::kNormal;
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Evaluator::Flow Evaluator::exec(const Stmt& s, std::string& out) {
  if (!step(s.line)) return Flow::kNormal;
  switch (s.kind) {
    case StmtKind::kText:
      append(out, s.text, s.line);
      break;
    case StmtKind::kOutput: {
      Value v = eval(*s.exprs[0]);
      if (!failed()) append(out, to_str(v), s.line);
      break;
    }
    case StmtKind::kIf:
      for (size_t k = 0; k < s.exprs.size(); ++k) {
        Value c = eval(*s.exprs[k]);
        if (failed()) return Flow::kNormal;
        if (truthy(c)) return exec_body(s.bodies[k], out);
      }
      if (s.has_else) return exec_body(s.bodies.back(), out);
      break;
    case StmtKind::kFor:
      exec_for(s, out);
      break;
    case StmtKind::kSet:
    case StmtKind::kSetBlock:
      exec_set(s, out);
      break;
    case StmtKind::kMacro:
      assign(s.text, make_macro(s));
      break;
    case StmtKind::kBreak: return Flow::kBreak;
    case StmtKind::kContinue: return Flow::kContinue;
    case StmtKind::kBlock: return exec_body(s.bodies[0], out);
    case StmtKind::kCallBlock:
      fail(s.line, "unsupported construct: '{% call %}'");
      break;
  }
  return Flow::kNormal;
}

void Evaluator::exec_set(const Stmt& s, std::string& out) {
  Value v;
  if (s.kind == StmtKind::kSetBlock) {
    std::string captured;
    frames_.emplace_back();
    exec_body(s.bodies[0], captured);
    frames_.pop_back();
    v = Value::string(std::move(captured));
  } else {
    v = eval(*s.exprs[0]);
  }
  if (failed()) return;
  if (!s.attr.empty()) {
    Value ns = lookup(s.text);
    if (!ns.is_object() || !ns.obj->is_namespace) {
      fail(s.line, str_cat("cannot assign attribute '", s.attr, "' on '", s.text, "': not a namespace()"));
      return;
    }
    ns.obj->set(s.attr, std::move(v));
  } else if (!s.targets.empty()) {
    if (!v.is_array() || v.arr->size() != s.targets.size()) {
      fail(s.line, str_cat("cannot unpack into ", s.targets.size(), " names in 'set'"));
      return;
    }
    for (size_t k = 0; k < s.targets.size(); ++k) assign(s.targets[k], (*v.arr)[k]);
  } else {
    assign(s.text, std::move(v));
  }
}

void Evaluator::exec_for(const Stmt& s, std::string& out) {
  Value seq = eval(*s.exprs[0]);
  if (failed()) return;
  Array items;
  if (seq.is_array()) {
    items = *seq.arr;
  } else if (seq.is_object() && !seq.obj->is_namespace) {
    for (const auto& kv : seq.obj->items) items.push_back(Value::string(kv.first));
  } else if (seq.is_string()) {
    for (char32_t c : to_u32(seq.s)) items.push_back(Value::string(from_u32(std::u32string(1, c))));
  } else if (!seq.is_undefined()) {
    fail(s.line, str_cat("'", kind_name(seq.kind), "' object is not iterable in '{% for %}'"));
    return;
  }
  frames_.emplace_back();
  auto bind = [&](const Value& item) {
    if (s.targets.size() == 1) {
      assign(s.targets[0], item);
    } else if (item.is_array() && item.arr->size() == s.targets.size()) {
      for (size_t k = 0; k < s.targets.size(); ++k) assign(s.targets[k], (*item.arr)[k]);
    } else {
      fail(s.line, str_cat("cannot unpack a loop item into ", s.targets.size(), " names"));
    }
  };
  if (s.exprs.size() > 1) {  // {% for x in xs if cond %}: filter first, so loop.* counts the kept items
    Array kept;
    for (const auto& it : items) {
      bind(it);
      Value c = eval(*s.exprs[1]);
      if (failed()) break;
      if (truthy(c)) kept.push_back(it);
    }
    items.swap(kept);
  }
  size_t n = items.size();
  for (size_t k = 0; k < n && !failed(); ++k) {
    if (!step(s.line)) break;
    bind(items[k]);
    Value loop = Value::object();
    auto& o = *loop.obj;
    o.set("index", Value::integer(static_cast<int64_t>(k + 1)));
    o.set("index0", Value::integer(static_cast<int64_t>(k)));
    o.set("revindex", Value::integer(static_cast<int64_t>(n - k)));
    o.set("revindex0", Value::integer(static_cast<int64_t>(n - k - 1)));
    o.set("first", Value::boolean(k == 0));
    o.set("last", Value::boolean(k + 1 == n));
    o.set("length", Value::integer(static_cast<int64_t>(n)));
    o.set("depth", Value::integer(1));
    o.set("depth0", Value::integer(0));
    o.set("previtem", k > 0 ? items[k - 1] : Value::undefined("previtem"));
    o.set("nextitem", k + 1 < n ? items[k + 1] : Value::undefined("nextitem"));
    Value cycle;
    cycle.kind = Kind::kCallable;
    cycle.fn = std::make_shared<Callable>();
    cycle.fn->name = "loop.cycle";
    cycle.fn->call = [k](Evaluator& ev, Array& args, KwArgs&) -> Value {
      if (args.empty()) {
        ev.fail(0, "loop.cycle() needs at least one argument");
        return {};
      }
      return args[k % args.size()];
    };
    o.set("cycle", cycle);
    assign("loop", loop);
    Flow f = exec_body(s.bodies[0], out);
    if (f == Flow::kBreak) break;
  }
  frames_.pop_back();
  if (!failed() && n == 0 && s.has_else) exec_body(s.bodies[1], out);
}

Value Evaluator::make_macro(const Stmt& s) {
  Value v;
  v.kind = Kind::kCallable;
  v.fn = std::make_shared<Callable>();
  v.fn->name = s.text;
  const Stmt* def = &s;
  v.fn->call = [def](Evaluator& ev, Array& args, KwArgs& kw) -> Value {
    if (args.size() > def->targets.size()) {
      ev.fail(def->line, str_cat("macro '", def->text, "' takes ", def->targets.size(), " arguments, got ", args.size()));
      return {};
    }
    ev.frames_.emplace_back();
    for (size_t k = 0; k < def->targets.size(); ++k) {
      Value a;
      bool set = false;
      if (k < args.size()) {
        a = args[k];
        set = true;
      }
      for (auto& [n, x] : kw) {
        if (n == def->targets[k]) {
          a = x;
          set = true;
        }
      }
      if (!set) a = def->exprs[k] ? ev.eval(*def->exprs[k]) : Value::undefined(def->targets[k]);
      ev.assign(def->targets[k], a);
    }
    std::string out;
    ev.exec_body(def->bodies[0], out);
    ev.frames_.pop_back();
    return Value::string(std::move(out));
  };
  return v;
}

Value Evaluator::call(const Value& fn, Array& args, KwArgs& kw, int line) {
  if (fn.kind != Kind::kCallable) {
    fail(line, fn.is_undefined() ? str_cat("'", fn.s, "' is undefined (called as a function)")
                                 : str_cat("'", kind_name(fn.kind), "' object is not callable"));
    return {};
  }
  if (++call_depth_ > limits_.max_call_depth) {
    fail(line, str_cat("call depth exceeds ", limits_.max_call_depth));
    --call_depth_;
    return {};
  }
  Value r = fn.fn->call(*this, args, kw);
  --call_depth_;
  if (failed() && err_.message().find("template line 0:") != std::string::npos) {
    err_ = Status::InvalidArgument(str_cat("template line ", line, ": ", err_.message().substr(17)));
  }
  return r;
}

}  // namespace dsi::tok::jinja
