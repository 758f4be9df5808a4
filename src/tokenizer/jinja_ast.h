// Syntax tree of the Jinja subset.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace dsi::tok::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using Body = std::vector<std::unique_ptr<Stmt>>;

enum class ExprKind : uint8_t {
  kLiteral, kName, kAttr, kItem, kSlice, kCall, kFilter, kTest, kNot, kNeg, kBinary, kCompare, kAnd, kOr, kCond,
  kList, kDict, kTuple
};

struct Expr {
  ExprKind kind;
  int line = 0;
  int depth = 1;                       // height of the subtree (bounded by the parser)
  Value literal;                       // kLiteral
  std::string name;                    // kName, kAttr (attribute), kFilter / kTest (name), kBinary / kCompare (op)
  std::vector<ExprPtr> args;           // operands, call / filter / test arguments, list items, dict keys+values
  std::vector<std::string> kw_names;   // keyword argument names for the last kw_names.size() entries of kw
  std::vector<ExprPtr> kw;             // keyword argument values
  bool negated = false;                // kTest: "is not"; kCompare "not in"
  bool has_slice_part[3] = {false, false, false};
};

enum class StmtKind : uint8_t { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kCallBlock, kBlock };

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;                    // kText; kSet / kSetBlock target name; kMacro name
  std::string attr;                    // kSet: namespace attribute ("ns.attr")
  std::vector<std::string> targets;    // kFor loop variables; kSet tuple targets; kMacro parameters
  std::vector<ExprPtr> exprs;          // kOutput value; kIf conditions; kFor iterable (+ filter); kSet value;
                                       // kMacro parameter defaults (nullptr when none)
  std::vector<Body> bodies;            // kIf: one per condition (+ else); kFor: body (+ else); kMacro / kSetBlock: body
  bool has_else = false;
};

struct Template {
  Body body;
};

}  // namespace dsi::tok::jinja
