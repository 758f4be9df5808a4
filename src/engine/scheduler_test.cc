#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

namespace dsi {
namespace {

constexpr int64_t kVocab = 64;

// The fake model: the next token depends only on the last token and its position, so a recompute after
// preemption, or a prefix-cache hit, must give the same tokens as an uninterrupted run.
int64_t fake_next(int64_t last_token, int64_t last_pos) { return (last_token * 31 + last_pos * 17 + 5) % kVocab; }

struct Expected {
  std::vector<int64_t> output;
  FinishReason reason = FinishReason::kNone;
};

// What a request must produce, computed without any scheduler.
Expected reference(const Request& r, int64_t max_model_len) {
  std::vector<int64_t> tokens = r.prompt_ids;
  Expected e;
  while (true) {
    const int64_t t = fake_next(tokens.back(), static_cast<int64_t>(tokens.size()) - 1);
    tokens.push_back(t);
    e.output.push_back(t);
    if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), t) != r.stop_token_ids.end()) {
      e.reason = FinishReason::kStop;
      return e;
    }
    if (static_cast<int64_t>(e.output.size()) >= r.max_tokens || static_cast<int64_t>(tokens.size()) >= max_model_len) {
      e.reason = FinishReason::kLength;
      return e;
    }
  }
}

Request make_request(int64_t id, std::vector<int64_t> prompt, int64_t max_tokens, std::vector<int64_t> stops = {}) {
  return Request{.id = id, .prompt_ids = std::move(prompt), .sampling = {}, .max_tokens = max_tokens,
                 .stop_token_ids = std::move(stops)};
}

std::vector<int64_t> tokens_from(int64_t n, int64_t first) {
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = (first + i) % kVocab;
  return t;
}

// Drives a Scheduler with the fake model and checks every plan.
class Harness {
 public:
  Harness(SchedulerConfig config, BlockAllocatorConfig alloc_config)
      : config_(config), alloc_(alloc_config), sched_(config, alloc_) {}

  Scheduler& sched() { return sched_; }
  BlockAllocator& alloc() { return alloc_; }

  void add(Request r) {
    requests_[r.id] = r;
    add_order_.push_back(r.id);
    ASSERT_TRUE(sched_.add(std::move(r)).ok());
  }

  StepPlan step() {
    std::set<int64_t> queued;
    for (const auto& [id, r] : requests_) {
      const Sequence* seq = sched_.find(id);
      if (seq != nullptr && seq->status != SequenceStatus::kRunning) queued.insert(id);
    }
    StepPlan plan = sched_.schedule();
    check_plan(plan);
    for (const auto* chunks : {&plan.prefills, &plan.decodes}) {
      for (const auto& c : *chunks) {
        if (queued.count(c.seq_id)) admissions_.push_back(c.seq_id);
      }
    }
    std::vector<SequenceOutput> outs;
    for (const auto* chunks : {&plan.decodes, &plan.prefills}) {
      for (const auto& c : *chunks) {
        if (c.samples) outs.push_back({c.seq_id, fake_next(c.token_ids.back(), c.start_pos + c.num_tokens - 1)});
      }
    }
    const auto deltas = sched_.update(outs);
    EXPECT_EQ(deltas.size(), outs.size());
    for (const auto& d : deltas) {
      EXPECT_FALSE(finished_.count(d.request_id)) << "request " << d.request_id << " reported after finishing";
      auto& out = outputs_[d.request_id];
      out.insert(out.end(), d.new_token_ids.begin(), d.new_token_ids.end());
      EXPECT_EQ(d.num_output_tokens, static_cast<int64_t>(out.size()));
      if (d.finished) {
        finished_[d.request_id] = d.finish_reason;
        EXPECT_EQ(sched_.find(d.request_id), nullptr);
      }
    }
    alloc_.check_invariants();
    ++num_steps_;
    return plan;
  }

  // Steps until nothing is left; false if that takes more than `max_steps` (starvation or livelock).
  bool run_to_completion(int64_t max_steps = 100000) {
    for (int64_t i = 0; i < max_steps && sched_.has_unfinished(); ++i) step();
    return !sched_.has_unfinished();
  }

  void expect_matches_reference(int64_t id) {
    const Expected e = reference(requests_.at(id), sched_.max_model_len());
    ASSERT_TRUE(finished_.count(id)) << "request " << id << " did not finish";
    EXPECT_EQ(outputs_[id], e.output) << "request " << id;
    EXPECT_EQ(finished_[id], e.reason) << "request " << id;
  }

  const std::vector<int64_t>& output(int64_t id) { return outputs_[id]; }
  const std::map<int64_t, FinishReason>& finished() const { return finished_; }
  // Request ids in the order they were first scheduled.
  const std::vector<int64_t>& first_seen() const { return first_seen_; }
  const std::vector<int64_t>& add_order() const { return add_order_; }
  // Request ids each time they went from the waiting queue to running (again after a preemption).
  const std::vector<int64_t>& admissions() const { return admissions_; }

 private:
  void check_plan(const StepPlan& plan) {
    EXPECT_LE(plan.num_batched_tokens(), config_.max_num_batched_tokens);
    EXPECT_LE(sched_.num_running(), config_.max_num_seqs);
    std::set<int64_t> ids;
    for (const auto* chunks : {&plan.decodes, &plan.prefills}) {
      for (const auto& c : *chunks) {
        EXPECT_TRUE(ids.insert(c.seq_id).second) << "sequence " << c.seq_id << " twice in one step";
        if (seen_.insert(c.seq_id).second) first_seen_.push_back(c.seq_id);
        const Sequence* seq = sched_.find(c.seq_id);
        ASSERT_NE(seq, nullptr);
        EXPECT_EQ(seq->status, SequenceStatus::kRunning);
        EXPECT_EQ(c.start_pos, seq->num_computed_tokens);
        ASSERT_EQ(static_cast<int64_t>(c.token_ids.size()), c.num_tokens);
        EXPECT_TRUE(std::equal(c.token_ids.begin(), c.token_ids.end(), seq->token_ids.begin() + c.start_pos));
        EXPECT_EQ(c.samples, c.start_pos + c.num_tokens == seq->num_tokens());
        const int64_t bs = alloc_.block_size();
        ASSERT_GE(static_cast<int64_t>(c.block_table.size()) * bs, c.start_pos + c.num_tokens);
        auto table = alloc_.block_table(c.seq_id);
        EXPECT_TRUE(std::equal(c.block_table.begin(), c.block_table.end(), table.begin(), table.end()));
        // Blocks this chunk writes are its own: never shared, never in the prefix cache.
        for (int64_t b = c.start_pos / bs; b <= (c.start_pos + c.num_tokens - 1) / bs; ++b) {
          EXPECT_EQ(alloc_.ref_count(c.block_table[b]), 1) << "sequence " << c.seq_id << " block index " << b;
          EXPECT_FALSE(alloc_.is_cached(c.block_table[b]));
        }
      }
    }
    for (const auto& c : plan.decodes) EXPECT_EQ(c.num_tokens, 1);
    for (int64_t id : plan.preempted) EXPECT_FALSE(ids.count(id)) << "preempted sequence " << id << " planned";
    alloc_.check_invariants();
  }

  SchedulerConfig config_;
  BlockAllocator alloc_;
  Scheduler sched_;
  std::map<int64_t, Request> requests_;
  std::map<int64_t, std::vector<int64_t>> outputs_;
  std::map<int64_t, FinishReason> finished_;
  std::vector<int64_t> add_order_, first_seen_, admissions_;
  std::set<int64_t> seen_;
  int64_t num_steps_ = 0;
};

TEST(Scheduler, PrefillThenDecodeUntilMaxTokens) {
  Harness h({.max_num_batched_tokens = 64, .max_num_seqs = 8, .max_model_len = 1024}, {.num_blocks = 64});
  h.add(make_request(1, tokens_from(10, 3), 5));
  StepPlan p = h.step();
  ASSERT_EQ(p.prefills.size(), 1u);
  EXPECT_TRUE(p.decodes.empty());
  EXPECT_EQ(p.prefills[0].start_pos, 0);
  EXPECT_EQ(p.prefills[0].num_tokens, 10);
  EXPECT_TRUE(p.prefills[0].samples);
  for (int64_t i = 0; i < 4; ++i) {
    p = h.step();
    ASSERT_EQ(p.decodes.size(), 1u);
    EXPECT_TRUE(p.prefills.empty());
    EXPECT_EQ(p.decodes[0].start_pos, 10 + i);
  }
  EXPECT_FALSE(h.sched().has_unfinished());
  h.expect_matches_reference(1);
  EXPECT_EQ(h.output(1).size(), 5u);
  EXPECT_EQ(h.alloc().num_used_blocks(), 0);
  EXPECT_TRUE(h.sched().schedule().empty());
}

TEST(Scheduler, ChunkedPrefillOfALongPrompt) {
  Harness h({.max_num_batched_tokens = 16, .max_num_seqs = 8, .max_model_len = 1024}, {.num_blocks = 64});
  h.add(make_request(1, tokens_from(50, 0), 3));
  const int64_t chunks[][2] = {{0, 16}, {16, 16}, {32, 16}, {48, 2}};
  for (const auto& [start, n] : chunks) {
    StepPlan p = h.step();
    ASSERT_EQ(p.prefills.size(), 1u);
    EXPECT_EQ(p.prefills[0].start_pos, start);
    EXPECT_EQ(p.prefills[0].num_tokens, n);
    EXPECT_EQ(p.prefills[0].samples, start + n == 50);
    EXPECT_EQ(h.output(1).size(), start + n == 50 ? 1u : 0u);
  }
  ASSERT_TRUE(h.run_to_completion());
  h.expect_matches_reference(1);
}

TEST(Scheduler, DecodesFirstThenPartialPrefillsThenNewRequests) {
  Harness h({.max_num_batched_tokens = 10, .max_num_seqs = 8, .max_model_len = 1024}, {.num_blocks = 64});
  h.add(make_request(1, tokens_from(4, 0), 20));
  h.step();
  h.add(make_request(2, tokens_from(30, 7), 4));
  h.add(make_request(3, tokens_from(5, 9), 4));
  // {decode of 1, prefill chunk (id, start, n)...}
  const std::vector<std::vector<int64_t>> expected = {{2, 0, 9}, {2, 9, 9}, {2, 18, 9}, {2, 27, 3, 3, 0, 5}};
  for (const auto& want : expected) {
    StepPlan p = h.step();
    ASSERT_EQ(p.decodes.size(), 1u);
    EXPECT_EQ(p.decodes[0].seq_id, 1);
    ASSERT_EQ(p.prefills.size() * 3, want.size());
    for (size_t i = 0; i < p.prefills.size(); ++i) {
      EXPECT_EQ(p.prefills[i].seq_id, want[3 * i]);
      EXPECT_EQ(p.prefills[i].start_pos, want[3 * i + 1]);
      EXPECT_EQ(p.prefills[i].num_tokens, want[3 * i + 2]);
    }
  }
  StepPlan p = h.step();  // all three decode together
  EXPECT_EQ(p.decodes.size(), 3u);
  ASSERT_TRUE(h.run_to_completion());
  for (int64_t id : {1, 2, 3}) h.expect_matches_reference(id);
}

TEST(Scheduler, FcfsAdmissionUnderTheSequenceLimit) {
  Harness h({.max_num_batched_tokens = 8, .max_num_seqs = 2, .max_model_len = 1024}, {.num_blocks = 64});
  for (int64_t id = 1; id <= 5; ++id) h.add(make_request(id, tokens_from(6, id), 3));
  StepPlan p = h.step();
  ASSERT_EQ(p.prefills.size(), 2u);  // 1 whole, then 2 chunks of 2 under the token budget
  EXPECT_EQ(p.prefills[1].seq_id, 2);
  EXPECT_EQ(p.prefills[1].num_tokens, 2);
  EXPECT_EQ(h.sched().num_waiting(), 3);
  ASSERT_TRUE(h.run_to_completion());
  EXPECT_EQ(h.first_seen(), h.add_order());
  for (int64_t id = 1; id <= 5; ++id) h.expect_matches_reference(id);
}

TEST(Scheduler, PreemptsTheNewestWhenBlocksRunOutAndItFinishesLater) {
  // 6 blocks of 4 tokens; each request grows to 20 tokens (5 blocks): they cannot both be resident.
  Harness h({.max_num_batched_tokens = 64, .max_num_seqs = 8, .max_model_len = 24}, {.num_blocks = 6, .block_size = 4});
  h.add(make_request(1, tokens_from(8, 1), 12));
  h.add(make_request(2, tokens_from(8, 40), 12));
  bool saw_preemption = false;
  while (h.sched().has_unfinished()) {
    StepPlan p = h.step();
    for (int64_t id : p.preempted) {
      EXPECT_EQ(id, 2);  // always the most recently admitted
      saw_preemption = true;
      EXPECT_EQ(h.sched().find(2)->status, SequenceStatus::kPreempted);
    }
  }
  EXPECT_TRUE(saw_preemption);
  EXPECT_GT(h.sched().num_preemptions_total(), 0);
  for (int64_t id : {1, 2}) {
    h.expect_matches_reference(id);
    EXPECT_EQ(h.output(id).size(), 12u);
  }
  EXPECT_EQ(h.alloc().num_used_blocks(), 0);
}

TEST(Scheduler, PreemptedSequenceGoesBackToTheFrontOfTheQueue) {
  // As above, with a short request 3 queued behind (max_num_seqs = 2). After 2 is preempted, 3 would fit, but
  // 2 is at the head of the queue: 3 waits for it (FCFS, no starvation of the preempted one).
  Harness h({.max_num_batched_tokens = 64, .max_num_seqs = 2, .max_model_len = 24}, {.num_blocks = 6, .block_size = 4});
  h.add(make_request(1, tokens_from(8, 1), 12));
  h.add(make_request(2, tokens_from(8, 40), 12));
  h.add(make_request(3, tokens_from(4, 20), 2));
  ASSERT_TRUE(h.run_to_completion());
  EXPECT_GT(h.sched().num_preemptions_total(), 0);
  const auto& a = h.admissions();
  ASSERT_GE(a.size(), 4u);
  EXPECT_EQ(std::vector<int64_t>(a.begin(), a.begin() + 4), (std::vector<int64_t>{1, 2, 2, 3}));
  for (int64_t id : {1, 2, 3}) h.expect_matches_reference(id);
}

TEST(Scheduler, PrefixCacheHitSkipsCachedTokensAndGivesTheSameOutput) {
  Harness h({.max_num_batched_tokens = 256, .max_num_seqs = 8, .max_model_len = 1024}, {.num_blocks = 64});
  const auto prompt = tokens_from(40, 5);
  h.add(make_request(1, prompt, 4));
  ASSERT_TRUE(h.run_to_completion());
  h.add(make_request(2, prompt, 4));
  StepPlan p = h.step();
  ASSERT_EQ(p.prefills.size(), 1u);
  EXPECT_EQ(p.prefills[0].start_pos, 32);  // two cached blocks of 16
  EXPECT_EQ(p.prefills[0].num_tokens, 8);
  EXPECT_EQ(h.sched().find(2)->num_cached_tokens, 32);
  ASSERT_TRUE(h.run_to_completion());
  EXPECT_EQ(h.output(2), h.output(1));
  h.expect_matches_reference(2);

  // A prompt of exactly two blocks still computes its last token: one block is reused, not two.
  h.add(make_request(3, std::vector<int64_t>(prompt.begin(), prompt.begin() + 32), 2));
  p = h.step();
  ASSERT_EQ(p.prefills.size(), 1u);
  EXPECT_EQ(p.prefills[0].start_pos, 16);
  EXPECT_EQ(p.prefills[0].num_tokens, 16);
  ASSERT_TRUE(h.run_to_completion());
  h.expect_matches_reference(3);
  EXPECT_EQ(h.alloc().prefix_cache_stats().num_hit_tokens, 32 + 16);
  EXPECT_EQ(h.alloc().num_used_blocks(), 0);
}

TEST(Scheduler, StopTokenAndContextLengthFinishRequests) {
  Harness h({.max_num_batched_tokens = 64, .max_num_seqs = 8, .max_model_len = 20}, {.num_blocks = 64});
  const auto prompt = tokens_from(6, 11);
  const int64_t third = reference(make_request(0, prompt, 3), 20).output[2];
  h.add(make_request(1, prompt, 100, {third}));
  h.add(make_request(2, tokens_from(15, 2), 100));  // capped by the context: 5 tokens
  ASSERT_TRUE(h.run_to_completion());
  h.expect_matches_reference(1);
  EXPECT_EQ(h.finished().at(1), FinishReason::kStop);
  EXPECT_LE(h.output(1).size(), 3u);
  EXPECT_EQ(h.output(1).back(), third);
  EXPECT_EQ(h.finished().at(2), FinishReason::kLength);
  EXPECT_EQ(h.output(2).size(), 5u);
}

TEST(Scheduler, RejectsRequestsThatCanNeverRun) {
  BlockAllocator alloc({.num_blocks = 4, .block_size = 16});  // 64 tokens
  Scheduler sched({.max_num_batched_tokens = 32, .max_num_seqs = 4, .max_model_len = 100}, alloc);
  EXPECT_EQ(sched.max_model_len(), 64);
  Status s = sched.add(make_request(1, tokens_from(65, 0), 4));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("65 tokens"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("KV cache holds only 64"), std::string::npos) << s.message();
  EXPECT_FALSE(sched.add(make_request(2, {}, 4)).ok());
  EXPECT_FALSE(sched.add(make_request(3, {1, 2}, 0)).ok());
  EXPECT_TRUE(sched.add(make_request(4, tokens_from(64, 0), 4)).ok());  // fills the cache: one token, then length
  EXPECT_EQ(sched.add(make_request(4, {1}, 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.num_waiting(), 1);
}

TEST(Scheduler, WholeCachePromptRunsAlone) {
  Harness h({.max_num_batched_tokens = 32, .max_num_seqs = 4, .max_model_len = 100}, {.num_blocks = 4});
  h.add(make_request(1, tokens_from(64, 0), 4));
  h.add(make_request(2, tokens_from(10, 3), 4));
  ASSERT_TRUE(h.run_to_completion());
  EXPECT_EQ(h.output(1).size(), 1u);
  EXPECT_EQ(h.finished().at(1), FinishReason::kLength);
  h.expect_matches_reference(2);
}

TEST(Scheduler, AbortFreesBlocksAnywhereInTheLifecycle) {
  BlockAllocator alloc({.num_blocks = 16, .block_size = 4});
  Scheduler sched({.max_num_batched_tokens = 64, .max_num_seqs = 2, .max_model_len = 64}, alloc);
  for (int64_t id = 1; id <= 3; ++id) ASSERT_TRUE(sched.add(make_request(id, tokens_from(10, id), 100)).ok());
  auto run = [&](const StepPlan& plan) {
    std::vector<SequenceOutput> outs;
    for (const auto* chunks : {&plan.decodes, &plan.prefills}) {
      for (const auto& c : *chunks) if (c.samples) outs.push_back({c.seq_id, 1});
    }
    return sched.update(outs);
  };
  run(sched.schedule());
  run(sched.schedule());
  EXPECT_EQ(sched.num_running(), 2);
  EXPECT_EQ(alloc.num_used_blocks(), 6);
  EXPECT_TRUE(sched.abort(1).ok());  // running
  EXPECT_EQ(alloc.num_used_blocks(), 3);
  EXPECT_EQ(sched.find(1), nullptr);
  EXPECT_TRUE(sched.abort(3).ok());  // waiting
  EXPECT_EQ(sched.abort(3).code(), StatusCode::kNotFound);
  EXPECT_EQ(sched.abort(99).code(), StatusCode::kNotFound);
  // Between schedule() and update(): the runner's token for it is ignored.
  StepPlan plan = sched.schedule();
  EXPECT_TRUE(sched.abort(2).ok());
  EXPECT_TRUE(run(plan).empty());
  EXPECT_FALSE(sched.has_unfinished());
  EXPECT_EQ(alloc.num_used_blocks(), 0);
  EXPECT_EQ(alloc.usage(), 0.0);
  alloc.check_invariants();
}

// Hundreds of random requests (shared prefixes, arrivals over time, some aborts) through a small cache.
void run_simulation(uint64_t seed, bool prefix_caching) {
  Harness h({.max_num_batched_tokens = 48, .max_num_seqs = 12, .max_model_len = 160},
            {.num_blocks = 40, .block_size = 8, .enable_prefix_caching = prefix_caching});
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> prefixes;
  for (int i = 0; i < 4; ++i) prefixes.push_back(tokens_from(64, 13 * i + 1));
  constexpr int64_t kNumRequests = 400;
  int64_t next_id = 0;
  std::set<int64_t> aborted;
  std::vector<int64_t> live;
  for (int64_t step = 0; step < 200000 && (next_id < kNumRequests || h.sched().has_unfinished()); ++step) {
    for (int64_t k = static_cast<int64_t>(rng() % 3); k > 0 && next_id < kNumRequests; --k) {
      std::vector<int64_t> prompt;
      if (rng() % 2) {
        const auto& prefix = prefixes[rng() % prefixes.size()];
        prompt.assign(prefix.begin(), prefix.begin() + static_cast<std::ptrdiff_t>(rng() % 48 + 1));
      }
      for (int64_t n = static_cast<int64_t>(rng() % 100) + 1; n > 0; --n) prompt.push_back(rng() % kVocab);
      std::vector<int64_t> stops;
      if (rng() % 2) stops.push_back(static_cast<int64_t>(rng() % kVocab));
      h.add(make_request(next_id, prompt, static_cast<int64_t>(rng() % 60) + 1, stops));
      live.push_back(next_id++);
    }
    if (!live.empty() && rng() % 40 == 0) {
      const int64_t id = live[rng() % live.size()];
      if (h.sched().abort(id).ok()) aborted.insert(id);
    }
    h.step();
  }
  EXPECT_FALSE(h.sched().has_unfinished()) << "requests starved";
  EXPECT_GT(h.sched().num_preemptions_total(), 0) << "the simulation should exercise preemption";
  EXPECT_GT(aborted.size(), 0u);
  for (int64_t id = 0; id < kNumRequests; ++id) {
    if (aborted.count(id)) {
      EXPECT_FALSE(h.finished().count(id)) << "aborted request " << id << " reported as finished";
    } else {
      h.expect_matches_reference(id);
    }
  }
  std::vector<int64_t> admitted_order;  // first scheduling follows add order (aborted-while-waiting left out)
  for (int64_t id : h.add_order()) {
    const auto& seen = h.first_seen();
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) admitted_order.push_back(id);
  }
  EXPECT_EQ(h.first_seen(), admitted_order);
  EXPECT_EQ(h.alloc().num_used_blocks(), 0);
  EXPECT_EQ(h.alloc().num_sequences(), 0);
  EXPECT_EQ(h.alloc().usage(), 0.0);
  if (prefix_caching) {
    EXPECT_GT(h.alloc().prefix_cache_stats().num_hit_tokens, 0);
  }
}

TEST(Scheduler, RandomSimulationEveryRequestFinishes) { run_simulation(1, true); }
TEST(Scheduler, RandomSimulationWithoutPrefixCaching) { run_simulation(2, false); }

}  // namespace
}  // namespace dsi
