// The engine loop: schedule -> forward -> sample -> update, on one thread that owns the model, the KV cache, the
// scheduler and every request's decoding state. Other threads talk to it through `incoming_` / `aborts_`
// (under mu_) and read results from RequestHandles.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/log.h"
#include "engine/engine.h"
#include "engine/histogram.h"
#include "engine/scheduler.h"
#include "engine/stop_matcher.h"
#include "model/model.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace dsi {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class HandleImpl final : public RequestHandle {
 public:
  explicit HandleImpl(int64_t id) : id_(id) {}
  int64_t id() const override { return id_; }
  bool next(GenerationDelta* out, std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (done_) return false;
    if (!cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); })) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    if (out->finished) done_ = true;
    return true;
  }
  void push(GenerationDelta d) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(d));
    cv_.notify_one();
  }

 private:
  const int64_t id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationDelta> queue_;
  bool done_ = false;
};

// Decoding state of one request; engine thread only.
struct Active {
  std::shared_ptr<HandleImpl> handle;
  GenerationRequest request;
  Sampler sampler;
  tok::StreamDecoder decoder;
  StopMatcher stop;
  Clock::time_point arrival, first_token;
  bool has_first_token = false;
  std::vector<TokenLogprob> pending_logprobs;  // sampled this step, attached to the next delta
};

struct Incoming {
  int64_t id;
  GenerationRequest request;
  std::shared_ptr<HandleImpl> handle;
  Clock::time_point arrival;
};

TokenLogprob logprobs_of(const float* logits, int64_t vocab, int64_t id, int top_n) {
  const float max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  const double log_z = static_cast<double>(max) + std::log(sum);
  TokenLogprob lp;
  lp.id = static_cast<int32_t>(id);
  lp.logprob = static_cast<float>(logits[id] - log_z);
  if (top_n > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) ids[i] = static_cast<int32_t>(i);
    const auto n = std::min<int64_t>(top_n, vocab);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                      [&](int32_t a, int32_t b) {
                        // NaN ranks last, so the order stays strict and weak.
                        const float la = std::isnan(logits[a]) ? -INFINITY : logits[a];
                        const float lb = std::isnan(logits[b]) ? -INFINITY : logits[b];
                        return la > lb || (la == lb && a < b);
                      });
    for (int64_t i = 0; i < n; ++i) lp.top.push_back({ids[i], static_cast<float>(logits[ids[i]] - log_z)});
  }
  return lp;
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineConfig& config, std::unique_ptr<Model> model, std::unique_ptr<tok::Tokenizer> tokenizer,
             int64_t num_blocks, int64_t max_model_len)
      : config_(config),
        model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        cache_(model_->kv_layout(), config.block_size, num_blocks),
        allocator_({.num_blocks = num_blocks, .block_size = config.block_size,
                    .enable_prefix_caching = config.enable_prefix_caching}),
        scheduler_({.max_num_batched_tokens = config.max_num_batched_tokens, .max_num_seqs = config.max_num_seqs,
                    .max_model_len = max_model_len},
                   allocator_) {
    max_model_len_ = scheduler_.max_model_len();
    stats_.kv_cache_tokens = allocator_.capacity_tokens();
    loop_ = std::thread([this] { loop(); });
  }
  ~EngineImpl() override { shutdown(std::chrono::milliseconds(0)); }

  Result<std::shared_ptr<RequestHandle>> submit(GenerationRequest request) override {
    const int64_t vocab = model_->config().vocab_size;
    const auto n = static_cast<int64_t>(request.prompt_ids.size());
    if (n == 0) return Status::InvalidArgument("the prompt is empty");
    for (int32_t id : request.prompt_ids) {
      if (id < 0 || id >= vocab) return Status::InvalidArgument(str_cat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
    if (request.max_tokens < 1) return Status::InvalidArgument("max_tokens must be at least 1");
    if (request.max_tokens > max_model_len_ - n) {  // (n + max_tokens could overflow)
      return Status::InvalidArgument(str_cat("this model's maximum context length is ", max_model_len_,
                                             " tokens, but ", n + request.max_tokens, " were requested (", n,
                                             " in the prompt, ", request.max_tokens,
                                             " for the completion); shorten the prompt or lower max_tokens"));
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return Status::Unavailable("the server is shutting down");
    const int64_t id = next_id_++;
    auto handle = std::make_shared<HandleImpl>(id);
    incoming_.push_back({id, std::move(request), handle, Clock::now()});
    cv_.notify_one();
    return std::shared_ptr<RequestHandle>(handle);
  }

  void abort(int64_t request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(request_id);
    cv_.notify_one();
  }

  EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

  void shutdown(std::chrono::milliseconds grace) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopping_) {
        accepting_ = false;
        stopping_ = true;
        deadline_ = Clock::now() + grace;
      }
      cv_.notify_one();
    }
    std::lock_guard<std::mutex> join_lock(join_mu_);
    if (loop_.joinable()) loop_.join();
  }

  const ModelConfig& model_config() const override { return model_->config(); }
  const tok::Tokenizer& tokenizer() const override { return *tokenizer_; }
  int64_t max_model_len() const override { return max_model_len_; }

 private:
  void loop();
  void admit(Incoming& in);
  void run_step();
  void deliver(const RequestDelta& d);
  void finish_now(int64_t id, const std::string& reason, const std::string& error);
  void publish_stats();
  // Queues a delta; flush_outbox() hands them out after the step's stats are published, so a client that sees
  // its final delta also sees the stats that include it (e.g. KV usage back to zero).
  void post(const std::shared_ptr<HandleImpl>& h, GenerationDelta d) { outbox_.emplace_back(h, std::move(d)); }
  void flush_outbox() {
    for (auto& [h, d] : outbox_) h->push(std::move(d));
    outbox_.clear();
  }

  EngineConfig config_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<tok::Tokenizer> tokenizer_;
  KvCache cache_;
  BlockAllocator allocator_;
  Scheduler scheduler_;
  int64_t max_model_len_ = 0;
  std::unordered_map<int64_t, Active> active_;  // engine thread only
  std::vector<std::pair<std::shared_ptr<HandleImpl>, GenerationDelta>> outbox_;  // engine thread only

  std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  std::deque<Incoming> incoming_;
  std::vector<int64_t> aborts_;
  int64_t next_id_ = 1;
  bool accepting_ = true;
  bool stopping_ = false;
  Clock::time_point deadline_;

  mutable std::mutex stats_mu_;
  EngineStats stats_;
  Histogram ttft_{Histogram::latency_buckets()}, tpot_{Histogram::latency_buckets()}, e2e_{Histogram::latency_buckets()};
  uint64_t prompt_tokens_total_ = 0, generation_tokens_total_ = 0, finished_total_ = 0;

  std::mutex join_mu_;
  std::thread loop_;
};

void EngineImpl::loop() {
  for (;;) {
    std::deque<Incoming> incoming;
    std::vector<int64_t> aborts;
    bool stopping;
    Clock::time_point deadline;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !incoming_.empty() || !aborts_.empty() || stopping_ || scheduler_.has_unfinished(); });
      incoming.swap(incoming_);
      aborts.swap(aborts_);
      stopping = stopping_;
      deadline = deadline_;
    }
    for (Incoming& in : incoming) admit(in);
    for (int64_t id : aborts) {
      if (active_.count(id)) finish_now(id, "abort", "");
    }
    if (stopping && Clock::now() >= deadline) {
      std::vector<int64_t> ids;
      for (auto& [id, a] : active_) ids.push_back(id);
      for (int64_t id : ids) finish_now(id, "abort", "");
    }
    if (scheduler_.has_unfinished()) run_step();
    publish_stats();
    flush_outbox();
    if (stopping && !scheduler_.has_unfinished()) break;
  }
}

void EngineImpl::admit(Incoming& in) {
  Request r;
  r.id = in.id;
  r.prompt_ids.assign(in.request.prompt_ids.begin(), in.request.prompt_ids.end());
  r.sampling = in.request.sampling;
  r.max_tokens = in.request.max_tokens;
  for (int32_t id : in.request.stop_token_ids) r.stop_token_ids.push_back(id);
  if (!in.request.ignore_eos) {
    for (int64_t eos : model_->config().eos_token_ids) r.stop_token_ids.push_back(eos);
  }
  Status s = scheduler_.add(std::move(r));
  if (!s.ok()) {
    GenerationDelta d;
    d.finished = true;
    d.finish_reason = "error";
    d.error = s.message();
    post(in.handle, std::move(d));
    return;
  }
  const uint64_t seed = in.request.seed.value_or(static_cast<uint64_t>(in.id) * 0x9E3779B97F4A7C15ull);
  active_.emplace(in.id, Active{in.handle, in.request, Sampler(seed), tok::StreamDecoder(*tokenizer_, true),
                                StopMatcher(in.request.stop), in.arrival, {}, false, {}});
}

void EngineImpl::finish_now(int64_t id, const std::string& reason, const std::string& error) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  (void)scheduler_.abort(id);  // NotFound when the scheduler already let it go
  GenerationDelta d;
  d.finished = true;
  d.finish_reason = reason;
  d.error = error;
  post(it->second.handle, std::move(d));
  e2e_.observe(seconds(Clock::now() - it->second.arrival));
  ++finished_total_;
  active_.erase(it);
}

void EngineImpl::run_step() {
  StepPlan plan = scheduler_.schedule();
  if (plan.empty()) {
    // Nothing fits right now (every waiting prompt needs more blocks than are free); wait for aborts.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return;
  }
  ForwardBatch batch;
  std::vector<const ScheduledChunk*> chunks;
  for (const auto* list : {&plan.prefills, &plan.decodes}) {
    for (const ScheduledChunk& c : *list) {
      batch.add_chunk(std::vector<int32_t>(c.block_table.begin(), c.block_table.end()), c.start_pos, c.token_ids);
      chunks.push_back(&c);
    }
  }
  const auto fail = [&](const Status& st) {
    log_warn("engine: forward failed: ", st.to_string());
    for (const ScheduledChunk* c : chunks) finish_now(c->seq_id, "error", st.to_string());
    (void)scheduler_.update({});
  };
  // A runner that samples on the device saves the [rows, vocab] logits download and the host sort of each row;
  // penalties and logprobs still need the host logits. Each sequence's Sampler draws its random number in the
  // same order on both paths (one per non-greedy sample), so seeded outputs do not depend on the path.
  bool on_device = model_->samples_on_device();
  for (const ScheduledChunk* c : chunks) {
    if (!c->samples) continue;
    const Active& a = active_.at(c->seq_id);
    if (has_penalties(a.request.sampling) || a.request.top_logprobs >= 0) on_device = false;
  }
  std::vector<SequenceOutput> outputs;
  if (on_device) {
    std::vector<RowSampling> rows(chunks.size());  // greedy by default: rows that do not sample are ignored
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (!chunks[i]->samples) continue;
      Active& a = active_.at(chunks[i]->seq_id);
      rows[i].params = sample_params(a.request.sampling);
      if (!is_greedy(rows[i].params)) rows[i].u01 = a.sampler.next_uniform();
    }
    auto ids = model_->forward_sampled(batch, cache_, rows);
    if (!ids.ok()) return fail(ids.status());
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (chunks[i]->samples) outputs.push_back({chunks[i]->seq_id, (*ids)[i]});
    }
    for (const RequestDelta& d : scheduler_.update(outputs)) deliver(d);
    return;
  }
  auto logits = model_->forward(batch, cache_);
  if (!logits.ok()) return fail(logits.status());
  const int64_t vocab = model_->config().vocab_size;
  std::vector<float> row;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ScheduledChunk& c = *chunks[i];
    if (!c.samples) continue;
    Active& a = active_.at(c.seq_id);
    const Sequence* seq = scheduler_.find(c.seq_id);
    const float* raw = logits->data<float>() + i * vocab;
    row.assign(raw, raw + vocab);
    apply_penalties(row.data(), vocab, seq->request.prompt_ids, seq->output_ids(), a.request.sampling);
    const int64_t token = a.sampler.sample(row.data(), vocab, a.request.sampling);
    // Logprobs of the model's own distribution (before penalties and temperature), as vLLM reports by default.
    if (a.request.top_logprobs >= 0) a.pending_logprobs.push_back(logprobs_of(raw, vocab, token, a.request.top_logprobs));
    outputs.push_back({c.seq_id, token});
  }
  model_->recycle_logits(std::move(*logits));
  for (const RequestDelta& d : scheduler_.update(outputs)) deliver(d);
}

void EngineImpl::deliver(const RequestDelta& d) {
  auto it = active_.find(d.request_id);
  if (it == active_.end()) return;
  Active& a = it->second;
  const auto now = Clock::now();
  if (!a.has_first_token && !d.new_token_ids.empty()) {
    a.has_first_token = true;
    a.first_token = now;
    ttft_.observe(seconds(now - a.arrival));
    prompt_tokens_total_ += static_cast<uint64_t>(d.num_prompt_tokens);
  }
  GenerationDelta g;
  g.prompt_tokens = d.num_prompt_tokens;
  g.completion_tokens = d.num_output_tokens;
  g.cached_tokens = d.num_cached_tokens;
  g.logprobs = std::move(a.pending_logprobs);
  a.pending_logprobs.clear();
  generation_tokens_total_ += d.new_token_ids.size();
  for (int64_t id : d.new_token_ids) {
    g.token_ids.push_back(static_cast<int32_t>(id));
    auto piece = a.decoder.push(static_cast<int32_t>(id));
    if (piece.ok()) g.text += a.stop.push(*piece);
  }
  bool finished = d.finished;
  std::string reason = finish_reason_name(d.finish_reason);
  if (a.stop.stopped() && !finished) {
    (void)scheduler_.abort(d.request_id);  // a stop string ended it: free the blocks now
    finished = true;
    reason = "stop";
  }
  if (finished) {
    g.text += a.stop.push(a.decoder.finish());
    g.text += a.stop.flush();
    g.finished = true;
    g.finish_reason = a.stop.stopped() ? "stop" : reason;
    if (d.num_output_tokens > 1) tpot_.observe(seconds(now - a.first_token) / static_cast<double>(d.num_output_tokens - 1));
    e2e_.observe(seconds(now - a.arrival));
    ++finished_total_;
    post(a.handle, std::move(g));
    active_.erase(it);
    return;
  }
  post(a.handle, std::move(g));
}

void EngineImpl::publish_stats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.num_running = scheduler_.num_running();
  stats_.num_waiting = scheduler_.num_waiting();
  stats_.kv_cache_usage = allocator_.usage();
  const PrefixCacheStats& p = allocator_.prefix_cache_stats();
  stats_.prefix_cache_queries = static_cast<uint64_t>(p.num_queried_tokens);
  stats_.prefix_cache_hits = static_cast<uint64_t>(p.num_hit_tokens);
  stats_.prompt_tokens_total = prompt_tokens_total_;
  stats_.generation_tokens_total = generation_tokens_total_;
  stats_.requests_finished_total = finished_total_;
  stats_.preemptions_total = static_cast<uint64_t>(scheduler_.num_preemptions_total());
  stats_.time_to_first_token_s = ttft_.snapshot();
  stats_.time_per_output_token_s = tpot_.snapshot();
  stats_.e2e_request_latency_s = e2e_.snapshot();
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config, std::unique_ptr<Model> model,
                                               std::unique_ptr<tok::Tokenizer> tokenizer) {
  if (!model || !tokenizer) return Status::InvalidArgument("engine: a model and a tokenizer are required");
  if (config.block_size < 1) return Status::InvalidArgument("block_size must be at least 1");
  const KvLayout layout = model->kv_layout();
  const double bytes_per_block = static_cast<double>(config.block_size) *
                                 static_cast<double>(layout.k_width + layout.v_width) *
                                 static_cast<double>(layout.num_layers) * static_cast<double>(layout.elem_bytes);
  const auto num_blocks = static_cast<int64_t>(config.kv_cache_gb * 1073741824.0 / bytes_per_block);
  if (num_blocks < 1) {
    return Status::InvalidArgument(str_cat("--kv-cache-gb ", config.kv_cache_gb, " holds no block of ",
                                           config.block_size, " tokens (", bytes_per_block, " bytes); raise it"));
  }
  const int64_t model_len = model->config().max_position_embeddings > 0 ? model->config().max_position_embeddings : 4096;
  const int64_t max_model_len = config.max_model_len > 0 ? std::min(config.max_model_len, model_len) : model_len;
  log_info("engine: KV cache ", num_blocks, " blocks x ", config.block_size, " tokens = ", num_blocks * config.block_size,
           " tokens (", config.kv_cache_gb, " GiB); max_model_len ", std::min(max_model_len, num_blocks * config.block_size));
  return std::unique_ptr<Engine>(
      new EngineImpl(config, std::move(model), std::move(tokenizer), num_blocks, max_model_len));
}

}  // namespace dsi
