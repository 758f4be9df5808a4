#include "tokenizer/bpe.h"

#include <algorithm>
#include <queue>

#include "tokenizer/utf8.h"

namespace dsi::tok {

namespace {
constexpr size_t kCacheMaxEntries = 1 << 18;
constexpr size_t kCacheMaxWordBytes = 256;
}  // namespace

BpeModel::BpeModel(BpeModel&& o) noexcept { *this = std::move(o); }

BpeModel& BpeModel::operator=(BpeModel&& o) noexcept {
  raw_vocab_ = std::move(o.raw_vocab_);
  text_vocab_ = std::move(o.text_vocab_);
  id_tokens_ = std::move(o.id_tokens_);
  id_bytes_ = std::move(o.id_bytes_);
  id_present_ = std::move(o.id_present_);
  merges_ = std::move(o.merges_);
  std::copy(std::begin(o.byte_ids_), std::end(o.byte_ids_), std::begin(byte_ids_));
  vocab_size_ = o.vocab_size_;
  ignore_merges_ = o.ignore_merges_;
  cache_ = std::move(o.cache_);
  return *this;
}

Result<BpeModel> BpeModel::build(const std::vector<std::pair<std::string, int32_t>>& vocab,
                                 const std::vector<std::pair<std::string, std::string>>& merges,
                                 bool ignore_merges) {
  BpeModel m;
  m.ignore_merges_ = ignore_merges;
  int32_t max_id = -1;
  for (const auto& [text, id] : vocab) {
    if (id < 0 || id > (1 << 24)) return Status::Corrupt(str_cat("vocab: token '", text, "' has bad id ", id));
    max_id = std::max(max_id, id);
  }
  m.id_tokens_.resize(max_id + 1);
  m.id_bytes_.resize(max_id + 1);
  m.id_present_.assign(max_id + 1, 0);
  m.text_vocab_.reserve(vocab.size() * 2);
  m.raw_vocab_.reserve(vocab.size() * 2);
  for (const auto& [text, id] : vocab) {
    m.id_tokens_[id] = text;
    m.id_present_[id] = 1;
    m.text_vocab_[text] = id;
    std::string raw;
    if (byte_level_decode(text, raw)) {
      m.raw_vocab_.emplace(raw, id);
      m.id_bytes_[id] = std::move(raw);
    } else {
      m.id_bytes_[id] = text;
    }
  }
  m.vocab_size_ = vocab.size();
  for (int b = 0; b < 256; ++b) {
    std::string one(1, static_cast<char>(b));
    auto it = m.raw_vocab_.find(one);
    m.byte_ids_[b] = it == m.raw_vocab_.end() ? -1 : it->second;
  }
  m.merges_.reserve(merges.size() * 2);
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    auto ia = m.text_vocab_.find(a);
    auto ib = m.text_vocab_.find(b);
    auto inew = m.text_vocab_.find(a + b);
    if (ia == m.text_vocab_.end() || ib == m.text_vocab_.end() || inew == m.text_vocab_.end()) {
      return Status::Corrupt(str_cat("merges: rank ", r, " ('", a, "' '", b, "') uses a token not in the vocab"));
    }
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                   static_cast<uint32_t>(ib->second);
    m.merges_[key] = MergeInfo{static_cast<int32_t>(r), inew->second};  // a repeated pair: the last rank wins, as in HF
  }
  return m;
}

bool BpeModel::id_to_bytes(int32_t id, std::string& out) const {
  if (id < 0 || id >= static_cast<int32_t>(id_present_.size()) || !id_present_[id]) return false;
  out += id_bytes_[id];
  return true;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_present_.size()) || !id_present_[id]) return nullptr;
  return &id_tokens_[id];
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view text) const {
  auto it = text_vocab_.find(text);
  if (it == text_vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::encode_word(std::string_view raw, std::vector<int32_t>& out) const {
  if (raw.empty()) return;
  if (raw.size() == 1) {
    int32_t id = byte_ids_[static_cast<uint8_t>(raw[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  if (ignore_merges_) {
    auto it = raw_vocab_.find(raw);
    if (it != raw_vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = raw.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(raw);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  merge_word(raw, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::string(raw), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

// The Hugging Face algorithm: a min-heap of (rank, position); pop the lowest rank (leftmost on ties), skip stale
// entries, merge, and push the new neighbours.
void BpeModel::merge_word(std::string_view raw, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Cand {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Sym> syms;
  syms.reserve(raw.size());
  for (char c : raw) {
    int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) continue;  // no unk token in byte-level vocabularies: such bytes are dropped, as HF does
    int32_t n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, n + 1, true});
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  std::vector<Cand> heap_storage;
  heap_storage.reserve(syms.size());
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>(),
                                                                        std::move(heap_storage));
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (const MergeInfo* m = find_merge(syms[i].id, syms[i + 1].id)) {
      heap.push({m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  while (!heap.empty()) {
    Cand top = heap.top();
    heap.pop();
    Sym& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    Sym& right = syms[left.next];
    const MergeInfo* m = find_merge(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeInfo* mp = find_merge(syms[left.prev].id, left.id)) heap.push({mp->rank, left.prev, mp->new_id});
    }
    if (left.next >= 0) {
      if (const MergeInfo* mn = find_merge(left.id, syms[left.next].id)) heap.push({mn->rank, top.pos, mn->new_id});
    }
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

}  // namespace dsi::tok
