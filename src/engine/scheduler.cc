#include "engine/scheduler.h"

#include <algorithm>
#include <utility>

namespace dsi {

int64_t StepPlan::num_batched_tokens() const {
  int64_t n = 0;
  for (const auto& c : prefills) n += c.num_tokens;
  for (const auto& c : decodes) n += c.num_tokens;
  return n;
}

struct Scheduler::Planning {
  int64_t budget = 0;
  StepPlan plan;
};

Scheduler::Scheduler(SchedulerConfig config, BlockAllocator& allocator)
    : config_(config), max_model_len_(0), allocator_(allocator) {
  DSI_CHECK(config.max_num_batched_tokens > 0, "max_num_batched_tokens = ", config.max_num_batched_tokens);
  DSI_CHECK(config.max_num_seqs > 0, "max_num_seqs = ", config.max_num_seqs);
  DSI_CHECK(config.max_model_len > 0, "max_model_len = ", config.max_model_len);
  DSI_CHECK(allocator.num_sequences() == 0, "the allocator already holds sequences");
  max_model_len_ = std::min(config.max_model_len, allocator.capacity_tokens());
}

Status Scheduler::add(Request request) {
  const int64_t id = request.id;
  if (seqs_.count(id)) return Status::InvalidArgument(str_cat("request id ", id, " is already in use"));
  if (request.prompt_ids.empty()) return Status::InvalidArgument(str_cat("request ", id, ": the prompt is empty"));
  if (request.max_tokens < 1) {
    return Status::InvalidArgument(
        str_cat("request ", id, ": max_tokens must be at least 1, got ", request.max_tokens));
  }
  const int64_t num_prompt = static_cast<int64_t>(request.prompt_ids.size());
  if (num_prompt > max_model_len_) {
    std::string why = str_cat("request ", id, ": the prompt has ", num_prompt,
                              " tokens, more than the context length of ", max_model_len_, " tokens");
    if (max_model_len_ < config_.max_model_len) {
      why += str_cat(" (max_model_len is ", config_.max_model_len, " but the KV cache holds only ",
                     allocator_.capacity_tokens(), " tokens)");
    }
    return Status::InvalidArgument(why);
  }
  auto seq = std::make_unique<Sequence>(std::move(request));
  waiting_.push_back(seq.get());
  seqs_.emplace(id, std::move(seq));
  return Status::Ok();
}

Status Scheduler::abort(int64_t request_id) {
  auto it = seqs_.find(request_id);
  if (it == seqs_.end()) return Status::NotFound(str_cat("request ", request_id, " is not queued or running"));
  Sequence* seq = it->second.get();
  if (seq->status == SequenceStatus::kRunning) {
    allocator_.free_sequence(request_id);
    running_.erase(std::find(running_.begin(), running_.end(), seq));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
  }
  if (step_pending_) {
    std::erase_if(pending_, [&](const PendingChunk& c) { return c.seq_id == request_id; });
    aborted_in_step_.insert(request_id);
  }
  seqs_.erase(it);
  return Status::Ok();
}

const Sequence* Scheduler::find(int64_t request_id) const {
  auto it = seqs_.find(request_id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

bool Scheduler::is_decode(const Sequence& seq) const {
  return seq.num_tokens() - seq.num_computed_tokens == 1 && seq.num_computed_tokens >= seq.num_prompt_tokens();
}

StepPlan Scheduler::schedule() {
  DSI_CHECK(!step_pending_, "schedule() called again before update() of the previous step");
  Planning p{.budget = config_.max_num_batched_tokens, .plan = {}};
  // 1. Running sequences, oldest admission first. A preemption removes the newest running sequence (the back),
  // so the indices before i stay valid; when `seq` preempts itself it was the back, and nothing follows.
  for (size_t i = 0; i < running_.size() && p.budget > 0; ++i) {
    // Admission stops when the budget runs out, so only the newest can be part-way through its prefill: the
    // decodes before it come first.
    DSI_CHECK(is_decode(*running_[i]) || i + 1 == running_.size(), "sequence ", running_[i]->id(),
              " is part-way through its prefill but not the newest running sequence");
    if (!schedule_running(running_[i], p)) break;
  }
  // 2. New (and preempted) requests, strictly FCFS. Not after a preemption: the cache is full.
  if (p.plan.preempted.empty()) {
    while (!waiting_.empty() && p.budget > 0 && num_running() < config_.max_num_seqs && admit_waiting(p)) {
    }
  }
  pending_.clear();
  for (const auto* chunks : {&p.plan.decodes, &p.plan.prefills}) {
    for (const auto& c : *chunks) pending_.push_back({c.seq_id, c.start_pos, c.num_tokens, c.samples});
  }
  step_pending_ = !p.plan.empty();
  return std::move(p.plan);
}

bool Scheduler::schedule_running(Sequence* seq, Planning& p) {
  const int64_t remaining = seq->num_tokens() - seq->num_computed_tokens;
  DSI_CHECK(remaining > 0, "running sequence ", seq->id(), " has nothing to compute");
  const int64_t num_new = std::min(remaining, p.budget);
  while (!allocator_.reserve(seq->id(), seq->num_computed_tokens + num_new)) {
    Sequence* victim = running_.back();
    preempt(victim, p);
    if (victim == seq) return false;
  }
  add_chunk(seq, num_new, p);
  return true;
}

bool Scheduler::admit_waiting(Planning& p) {
  Sequence* seq = waiting_.front();
  // At least the last token is computed: its logits give the next token.
  const int64_t num_cached = allocator_.begin_sequence(seq->id(), seq->token_ids, seq->num_tokens() - 1);
  const int64_t num_new = std::min(seq->num_tokens() - num_cached, p.budget);
  if (!allocator_.reserve(seq->id(), num_cached + num_new)) {
    allocator_.cancel_sequence(seq->id());
    return false;
  }
  waiting_.pop_front();
  seq->status = SequenceStatus::kRunning;
  seq->num_computed_tokens = num_cached;
  // A prefix-cache hit is reported once, for the prompt: a recompute after preemption finds its own blocks.
  if (seq->num_preemptions == 0) seq->num_cached_tokens = std::min(num_cached, seq->num_prompt_tokens());
  running_.push_back(seq);
  add_chunk(seq, num_new, p);
  return true;
}

void Scheduler::add_chunk(Sequence* seq, int64_t num_new, Planning& p) {
  const int64_t start = seq->num_computed_tokens;
  DSI_CHECK(num_new > 0 && num_new <= p.budget && start + num_new <= seq->num_tokens());
  DSI_CHECK(allocator_.num_slots(seq->id()) >= start + num_new);
  ScheduledChunk c;
  c.seq_id = seq->id();
  c.start_pos = start;
  c.num_tokens = num_new;
  c.samples = start + num_new == seq->num_tokens();
  c.token_ids.assign(seq->token_ids.begin() + start, seq->token_ids.begin() + start + num_new);
  auto table = allocator_.block_table(seq->id());
  c.block_table.assign(table.begin(), table.end());
  (is_decode(*seq) ? p.plan.decodes : p.plan.prefills).push_back(std::move(c));
  p.budget -= num_new;
}

void Scheduler::preempt(Sequence* seq, Planning& p) {
  DSI_CHECK(seq->status == SequenceStatus::kRunning);
  // Victims are newer than every sequence planned so far (running_ is walked oldest first).
  for (const auto* chunks : {&p.plan.decodes, &p.plan.prefills}) {
    for (const auto& c : *chunks) DSI_CHECK(c.seq_id != seq->id(), "preempting planned sequence ", seq->id());
  }
  allocator_.free_sequence(seq->id());
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  seq->status = SequenceStatus::kPreempted;
  seq->num_computed_tokens = 0;
  ++seq->num_preemptions;
  ++num_preemptions_total_;
  waiting_.push_front(seq);
  p.plan.preempted.push_back(seq->id());
}

void Scheduler::finish(Sequence* seq, FinishReason reason) {
  const int64_t id = seq->id();  // a copy: erase() below destroys the sequence holding it
  allocator_.free_sequence(id);
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  seq->status = SequenceStatus::kFinished;
  seq->finish_reason = reason;
  seqs_.erase(id);  // destroys *seq
}

std::vector<RequestDelta> Scheduler::update(std::span<const SequenceOutput> outputs) {
  DSI_CHECK(step_pending_ || outputs.empty(), "update() with outputs but no planned step");
  step_pending_ = false;
  size_t num_expected = 0;
  for (const PendingChunk& c : pending_) {
    auto it = seqs_.find(c.seq_id);
    DSI_CHECK(it != seqs_.end(), "planned sequence ", c.seq_id, " vanished");
    Sequence* seq = it->second.get();
    DSI_CHECK(seq->status == SequenceStatus::kRunning && c.start_pos == seq->num_computed_tokens,
              "sequence ", c.seq_id, " changed since schedule()");
    seq->num_computed_tokens += c.num_tokens;
    allocator_.cache_full_blocks(seq->id(), seq->token_ids, seq->num_computed_tokens);
    if (c.samples) {
      seq->awaiting_token = true;
      ++num_expected;
    }
  }
  pending_.clear();

  std::vector<RequestDelta> deltas;
  size_t num_received = 0;
  for (const SequenceOutput& out : outputs) {
    auto it = seqs_.find(out.seq_id);
    if (aborted_in_step_.count(out.seq_id) && (it == seqs_.end() || !it->second->awaiting_token)) continue;
    DSI_CHECK(it != seqs_.end() && it->second->awaiting_token, "a token for sequence ", out.seq_id,
              ", which was not planned to sample (or got two)");
    Sequence* seq = it->second.get();
    seq->awaiting_token = false;
    ++num_received;
    seq->token_ids.push_back(out.token_id);

    FinishReason reason = FinishReason::kNone;
    const auto& stops = seq->request.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), out.token_id) != stops.end()) {
      reason = FinishReason::kStop;
    } else if (seq->num_output_tokens() >= seq->request.max_tokens || seq->num_tokens() >= max_model_len_) {
      reason = FinishReason::kLength;
    }
    deltas.push_back({.request_id = seq->id(),
                      .new_token_ids = {out.token_id},
                      .finished = reason != FinishReason::kNone,
                      .finish_reason = reason,
                      .num_prompt_tokens = seq->num_prompt_tokens(),
                      .num_output_tokens = seq->num_output_tokens(),
                      .num_cached_tokens = seq->num_cached_tokens});
    if (reason != FinishReason::kNone) finish(seq, reason);
  }
  DSI_CHECK(num_received == num_expected, "expected ", num_expected, " sampled tokens, got ", num_received);
  aborted_in_step_.clear();
  return deltas;
}

}  // namespace dsi
