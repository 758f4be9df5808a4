// Continuous batching over a paged KV cache: which tokens of which sequences the next model step computes.
// Pure host code: no tensors, no model (see docs/ARCHITECTURE.md, "One step of the engine").
//
// The engine loop:   plan = scheduler.schedule();  outputs = runner.run(plan);  deltas = scheduler.update(outputs);
//
// Policy (vLLM v1 style), per step, under max_num_batched_tokens tokens and max_num_seqs running sequences:
//   1. running sequences, oldest admission first: decodes (one token each), then the one sequence that may be
//      part-way through its prefill (only the newest can be: admission stops when the budget runs out);
//   2. if nothing was preempted in this step: waiting sequences, strictly FCFS (stop at the first that does not
//      fit). Admission looks up the prefix cache and skips the cached tokens, but always computes at least the
//      last known token, whose logits give the next token.
//   Prompts longer than the remaining budget are prefilled in chunks over several steps (chunked prefill).
//   When a running sequence needs a block and none is free, the most recently admitted running sequence is
//   preempted (blocks freed, moved to the FRONT of the waiting queue, recomputed from its prompt and outputs
//   later; its computed full blocks stay in the prefix cache, so the recompute is mostly a cache hit). The oldest
//   running sequence is never preempted by another, so every request finishes: no starvation.
// KV progress is committed in update(): a chunk's tokens count as computed, and its full blocks enter the prefix
// cache, only after the step that computed them ran.
//
// Thread use: engine thread only. Other threads hand requests and aborts to the engine thread through a queue.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/status.h"
#include "engine/block_allocator.h"
#include "engine/request.h"

namespace dsi {

struct SchedulerConfig {
  int64_t max_num_batched_tokens = 2048;  // token budget of one step (prefill chunks + decodes)
  int64_t max_num_seqs = 256;             // most running sequences
  int64_t max_model_len = 4096;           // prompt + output tokens; clamped to the KV cache capacity
};

// The tokens of one sequence computed in this step, at positions start_pos .. start_pos + num_tokens - 1.
struct ScheduledChunk {
  int64_t seq_id = 0;
  int64_t start_pos = 0;            // tokens already in the KV cache
  int64_t num_tokens = 0;
  bool samples = false;             // ends at the sequence's last token: the runner samples one token for it
  std::vector<int64_t> token_ids;   // [num_tokens]
  std::vector<BlockId> block_table; // covers at least start_pos + num_tokens slots
};

struct StepPlan {
  std::vector<ScheduledChunk> prefills;  // prompt chunks (and recomputes after preemption)
  std::vector<ScheduledChunk> decodes;   // one token each
  std::vector<int64_t> preempted;        // sequences preempted while planning this step

  bool empty() const { return prefills.empty() && decodes.empty(); }
  int64_t num_batched_tokens() const;
};

// One token sampled for a sequence whose chunk had `samples` set.
struct SequenceOutput {
  int64_t seq_id = 0;
  int64_t token_id = 0;
};

// What changed for one request in a step: new output tokens and, at the end, why it finished.
struct RequestDelta {
  int64_t request_id = 0;
  std::vector<int64_t> new_token_ids;  // includes a stop token that finished the request
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_prompt_tokens = 0;
  int64_t num_output_tokens = 0;       // so far
  int64_t num_cached_tokens = 0;       // prefix-cache hit at the latest admission
};

class Scheduler {
 public:
  // Borrows `allocator`, which must outlive the scheduler and have no sequences of its own.
  Scheduler(SchedulerConfig config, BlockAllocator& allocator);

  // Queues a request. InvalidArgument if the id is in use, the prompt is empty or longer than the context
  // (max_model_len, at most the KV cache capacity), or max_tokens < 1.
  Status add(Request request);
  // Cancels a waiting or running request and frees its blocks. NotFound if the scheduler does not hold it (never
  // added, or already finished and reported). Safe between schedule() and update().
  Status abort(int64_t request_id);

  // Plans the next step. After a non-empty plan, call update() exactly once before the next schedule().
  StepPlan schedule();
  // Commits the planned step: computed tokens, prefix-cache registration, one sampled token for each chunk with
  // `samples` (an output for a request aborted since schedule() is ignored). Finished requests (stop token,
  // max_tokens, context length) free their blocks and leave the scheduler. Returns one delta per request that
  // got a token, in the order of `outputs`.
  std::vector<RequestDelta> update(std::span<const SequenceOutput> outputs);

  // nullptr once the request finished or was aborted.
  const Sequence* find(int64_t request_id) const;
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int64_t num_preemptions_total() const { return num_preemptions_total_; }
  int64_t max_model_len() const { return max_model_len_; }
  const BlockAllocator& allocator() const { return allocator_; }

 private:
  // The step being planned: token budget left and the plan so far.
  struct Planning;
  struct PendingChunk {
    int64_t seq_id = 0;
    int64_t start_pos = 0;
    int64_t num_tokens = 0;
    bool samples = false;
  };

  // Schedules up to `budget` tokens of running sequence `seq`, preempting newer sequences for blocks if needed.
  // Returns false if `seq` itself had to be preempted.
  bool schedule_running(Sequence* seq, Planning& p);
  // Admits the head of the waiting queue if its first chunk fits; false otherwise.
  bool admit_waiting(Planning& p);
  void add_chunk(Sequence* seq, int64_t num_new, Planning& p);
  void preempt(Sequence* seq, Planning& p);
  void finish(Sequence* seq, FinishReason reason);
  // Sequences whose remaining work is a single decode token.
  bool is_decode(const Sequence& seq) const;

  SchedulerConfig config_;
  int64_t max_model_len_;
  BlockAllocator& allocator_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs_;  // waiting and running, by id
  std::deque<Sequence*> waiting_;  // front: next to admit (preempted sequences are pushed here)
  std::vector<Sequence*> running_; // in admission order: back is the newest, the first to be preempted
  std::vector<PendingChunk> pending_;       // chunks of the planned step, until update()
  std::unordered_set<int64_t> aborted_in_step_;  // aborted between schedule() and update()
  bool step_pending_ = false;
  int64_t num_preemptions_total_ = 0;
};

}  // namespace dsi
