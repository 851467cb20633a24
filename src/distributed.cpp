// Data-parallel training on c10d (see include/distill/train/distributed.hpp): the Gloo/NCCL
// process group, its collectives and the heartbeat monitor. The only translation unit of
// distill that includes c10d and Gloo.

#include "distill/train/distributed.hpp"

#if !defined(DISTILL_NO_C10D) && __has_include(<gloo/algorithm.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#define DISTILL_HAS_C10D 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO  // the c10d headers hide Gloo without it; Debian's libtorch is built with Gloo
#endif
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#else
#define DISTILL_HAS_C10D 0
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>

#include <fmt/format.h>

namespace distill::train {

namespace {
std::shared_ptr<ProcessGroup>& world_slot() {
  static std::shared_ptr<ProcessGroup> group;
  return group;
}
}  // namespace

std::shared_ptr<ProcessGroup> ProcessGroup::world() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto& group = world_slot();
  if (!group)
    if (auto options = DistributedOptions::from_environment()) group = std::make_shared<ProcessGroup>(*options);
  return group;
}

std::shared_ptr<ProcessGroup> ProcessGroup::world_if_joined() { return world_slot(); }

#if DISTILL_HAS_C10D
namespace detail {
// What the Gloo and NCCL groups derive from: c10d::ProcessGroup in libtorch 1.x, c10d::Backend in 2.x.
using Collectives =
    std::conditional_t<std::is_base_of_v<c10d::Backend, c10d::ProcessGroupGloo>, c10d::Backend, c10d::ProcessGroup>;
using WorkHandle = decltype(std::declval<Collectives&>().barrier());

// Indices of `tensors` grouped into flat buckets (one dtype and device each), visited in
// order or in reverse: the first bucket holds at most `first_cap` bytes, the others `cap`.
std::vector<std::vector<size_t>> make_buckets(const std::vector<torch::Tensor>& tensors, bool reverse, int64_t first_cap,
                                              int64_t cap) {
  std::vector<std::vector<size_t>> buckets;
  int64_t bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const size_t k = reverse ? tensors.size() - 1 - i : i;
    const auto& t = tensors[k];
    const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
    const bool fits = !buckets.empty() && bytes + size <= (buckets.size() == 1 ? first_cap : cap) &&
                      tensors[buckets.back().front()].scalar_type() == t.scalar_type() &&
                      tensors[buckets.back().front()].device() == t.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(k);
    bytes += size;
  }
  return buckets;
}
}  // namespace detail

struct ProcessGroup::Impl {
  explicit Impl(DistributedOptions options) : o_(std::move(options)) {
    using std::chrono::milliseconds;
    const auto join = milliseconds(static_cast<int64_t>(o_.join_timeout() * 1000));
    try {
      store_ = connect(/*server=*/o_.rank() == 0 && !o_.agent_store(), join);
      monitor_store_ = connect(/*server=*/false, join);
    } catch (const std::exception& e) {
      distill::fail(where(), ": could not join the store at ", o_.master_addr(), ":", o_.master_port(), " within ",
                    o_.join_timeout(), " s (", o_.rank() == 0 ? "not every worker came" : "is rank 0 running?",
                    "): ", first_line(e.what()));
    }
    const auto collective_timeout = milliseconds(static_cast<int64_t>(o_.collective_timeout() * 1000));
    try {
      auto options = c10d::ProcessGroupGloo::Options::create(collective_timeout);
      options->devices = gloo_devices();
      gloo_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
          c10::make_intrusive<c10d::PrefixStore>("distill/gloo", store_), o_.rank(), o_.world_size(), options);
#ifdef USE_C10D_NCCL
      // CUDA tensors go through NCCL where libtorch has it (not verified: no GPU in CI).
      if (torch::cuda::is_available()) {
        auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
        nccl_options->timeout = collective_timeout;
        nccl_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
            c10::make_intrusive<c10d::PrefixStore>("distill/nccl", store_), o_.rank(), o_.world_size(), nccl_options);
      }
#endif
    } catch (const std::exception& e) {
      distill::fail(where(), ": could not connect the process group: ", first_line(e.what()));
    }
    monitor_ = std::thread([this] { monitor(); });
    barrier("joining");
  }

  ~Impl() { stop_monitor(); }

  std::string where() const { return "rank " + std::to_string(o_.rank()) + " of " + std::to_string(o_.world_size()); }

  /// Overwrites `tensors` (in place, on every rank) with rank 0's values.
  void broadcast(const std::vector<torch::Tensor>& tensors, const std::string& what) {
    coalesced(
        tensors, what, [&](std::vector<torch::Tensor>& flat) { return on(flat[0]).broadcast(flat); },
        [](torch::Tensor& tensor, const torch::Tensor& slice) { tensor.copy_(slice.view_as(tensor)); });
  }

  /// Sums `tensor` over the ranks, in place.
  void all_reduce_sum(torch::Tensor& tensor, const std::string& what) {
    std::vector<torch::Tensor> one{tensor};
    wait(what, [&] { return on(tensor).allreduce(one); });
  }

  /// Every rank's `tensor` (same shape on all), indexed by rank.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor, const std::string& what) {
    std::vector<torch::Tensor> in{tensor.contiguous()};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int64_t r = 0; r < o_.world_size(); ++r) out[0].push_back(torch::empty_like(in[0]));
    wait(what, [&] { return on(tensor).allgather(out, in); });
    return out[0];
  }

  void barrier(const std::string& what) {
    wait(what, [&] { return gloo_->barrier(); });
  }

  /// Leaves the run cleanly: marks this rank done (so the others do not take its silence
  /// for a failure), stops the heartbeat and waits until every rank got here, so that rank 0's
  /// store outlives everyone's use of it.
  void finish() {
    if (finished_) return;
    try {
      store_->set(key("done", o_.rank()), bytes("done"));
    } catch (const std::exception&) {  // the barrier below will say what went wrong
    }
    stop_monitor();
    barrier("finishing");
    finished_ = true;
  }

  /// Tells the other ranks why this rank stops (they name it in their own error).
  void report_failure(const std::string& why) noexcept { report_failure(*store_, why); }

  c10::intrusive_ptr<c10d::Store> connect(bool server, std::chrono::milliseconds timeout) const {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(o_.master_port());
    options.isServer = server;
    options.numWorkers = c10::nullopt;  // joining is checked by the barrier below
    options.waitWorkers = false;
    options.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(o_.master_addr(), options);
    return store;
  }

  std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices() const {
    std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
    if (const char* names = std::getenv("GLOO_SOCKET_IFNAME")) {
      std::string list = names;
      for (size_t start = 0; start <= list.size();) {
        const size_t comma = std::min(list.find(',', start), list.size());
        if (comma > start)
          devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(list.substr(start, comma - start)));
        start = comma + 1;
      }
    } else if (o_.master_addr() == "127.0.0.1" || o_.master_addr() == "localhost") {
      devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));  // all workers on this machine
    } else {
      devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    return devices;
  }

  void report_failure(c10d::Store& store, const std::string& why) noexcept {
    try {
      store.set(key("failed", o_.rank()), bytes(why));
    } catch (...) {  // the store is gone: the others learn of it from the lost connection
    }
  }

  // The group for a tensor: NCCL for CUDA tensors where available, Gloo otherwise.
  detail::Collectives& on(const torch::Tensor& tensor) { return tensor.is_cuda() && nccl_ ? *nccl_ : *gloo_; }

  static std::string key(const char* kind, int64_t rank) {
    return std::string("distill/") + kind + "/" + std::to_string(rank);
  }
  static std::vector<uint8_t> bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
  static std::string first_line(const std::string& s) {
    const auto end = s.find('\n');
    return end == std::string::npos ? s : s.substr(0, end);
  }

  // A collective's failure, explained in terms of ranks.
  Error failure(const std::string& what, const std::exception& e) {
    return Error(where() + ": " + what + " failed: " + diagnose() + " (c10d: " + first_line(e.what()) + ")");
  }

  // Runs one collective and waits for it.
  template <class Launch>
  void wait(const std::string& what, Launch launch) {
    try {
      launch()->wait();
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
  }

  // Flattens `tensors` into buckets of at most bucket_bytes (one dtype and device each), runs
  // `launch` on all buckets at once, waits, and hands each tensor its slice back through `restore`.
  template <class Launch, class Restore>
  void coalesced(const std::vector<torch::Tensor>& tensors, const std::string& what, Launch launch, Restore restore) {
    torch::NoGradGuard no_grad;
    const auto buckets = detail::make_buckets(tensors, /*reverse=*/false, o_.bucket_bytes(), o_.bucket_bytes());
    std::vector<std::vector<torch::Tensor>> flats;
    for (const auto& bucket : buckets) {
      std::vector<torch::Tensor> parts;
      for (size_t i : bucket) parts.push_back(tensors[i].reshape({-1}));
      flats.push_back({torch::cat(parts)});
    }
    std::vector<detail::WorkHandle> works;
    try {
      for (auto& flat : flats) works.push_back(launch(flat));
      for (auto& work : works) work->wait();
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
    for (size_t b = 0; b < buckets.size(); ++b) {
      int64_t offset = 0;
      for (size_t i : buckets[b]) {
        auto& t = const_cast<torch::Tensor&>(tensors[i]);
        restore(t, flats[b][0].narrow(0, offset, t.numel()));
        offset += t.numel();
      }
    }
  }

  // Which peer is to blame, from what the store knows: an error a rank reported, a rank whose
  // heartbeat stopped, or the store itself (rank 0) gone.
  std::string diagnose() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3) + 3 * kBeat;
    std::string why;
    while (why.empty()) {
      try {
        why = peer_failures();
      } catch (const std::exception&) {
        if (o_.rank() != 0 || o_.agent_store())
          return "rank 0 is unreachable (its store at " + o_.master_addr() + ":" + std::to_string(o_.master_port()) +
                 " does not answer: it died or its machine is down)";
      }
      if (!why.empty() || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(kBeat);
    }
    return why.empty() ? "no peer reported an error and all heartbeats continue" : why;
  }

  // Reported failures, or else ranks silent for 3 heartbeats; "" when none.
  std::string peer_failures() {
    std::string reported, silent;
    for (int64_t r = 0; r < o_.world_size(); ++r) {
      if (r == o_.rank()) continue;
      if (store_->check({key("failed", r)})) {
        const auto message = store_->get(key("failed", r));
        reported += (reported.empty() ? "" : "; ") +
                    ("rank " + std::to_string(r) + " failed: " + std::string(message.begin(), message.end()));
      }
    }
    if (!reported.empty()) return reported;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(beats_mutex_);
    for (const auto& [r, seen] : last_beat_) {
      const double quiet = std::chrono::duration<double>(now - seen.second).count();
      if (quiet >= 3 * std::chrono::duration<double>(kBeat).count())
        silent += (silent.empty() ? "" : "; ") +
                  fmt::format(
                      "rank {} stopped without reporting an error (no heartbeat for {:.1f} s: killed, crashed, "
                      "or its machine is down)",
                      r, quiet);
    }
    return silent;
  }

  // The heartbeat thread: counts this rank's beat up and watches the others'. A peer silent
  // for `timeout` seconds (hung, or its machine unreachable) or a store unreachable for as long
  // ends this process, since a worker blocked inside a collective cannot be woken otherwise.
  void monitor() {
    auto unreachable_since = std::chrono::steady_clock::now();
    bool reachable = true;
    std::unique_lock<std::mutex> lock(stop_mutex_);
    while (!stop_) {
      const auto now = std::chrono::steady_clock::now();
      std::string fatal;
      try {
        monitor_store_->add(key("beat", o_.rank()), 1);
        for (int64_t r = 0; r < o_.world_size(); ++r) {
          if (r == o_.rank()) continue;
          const auto k = key("beat", r);
          const int64_t beat = monitor_store_->check({k}) ? monitor_store_->add(k, 0) : 0;
          std::lock_guard<std::mutex> beats(beats_mutex_);
          auto& seen = last_beat_[r];
          if (seen.second.time_since_epoch().count() == 0 || beat != seen.first) seen = {beat, now};
          const double quiet = std::chrono::duration<double>(now - seen.second).count();
          if (quiet > o_.timeout() && !monitor_store_->check({key("done", r)}) &&
              !monitor_store_->check({key("failed", r)}))
            fatal =
                fmt::format("rank {} sent no heartbeat for {:.0f} s (hung, or its machine is unreachable)", r, quiet);
        }
        reachable = true;
      } catch (const std::exception& e) {
        if (reachable) unreachable_since = now;
        reachable = false;
        const double quiet = std::chrono::duration<double>(now - unreachable_since).count();
        if (quiet > o_.timeout())
          fatal = fmt::format("the store at {}:{} (rank 0) has not answered for {:.0f} s: {}", o_.master_addr(),
                              o_.master_port(), quiet, first_line(e.what()));
      }
      if (!fatal.empty()) {
        report_failure(*monitor_store_, "stopped because " + fatal);
        std::fprintf(stderr, "distill: %s: stopping: %s\n", where().c_str(), fatal.c_str());
        std::fflush(stderr);
        std::_Exit(1);
      }
      stopped_.wait_for(lock, kBeat, [this] { return stop_; });
    }
  }

  void stop_monitor() {
    {
      std::lock_guard<std::mutex> lock(stop_mutex_);
      stop_ = true;
    }
    stopped_.notify_all();
    if (monitor_.joinable()) monitor_.join();
  }

  static constexpr std::chrono::milliseconds kBeat{500};

  DistributedOptions o_;
  c10::intrusive_ptr<c10d::Store> store_, monitor_store_;
  c10::intrusive_ptr<detail::Collectives> gloo_, nccl_;
  std::thread monitor_;
  std::mutex stop_mutex_, beats_mutex_;
  std::condition_variable stopped_;
  bool stop_ = false, finished_ = false;
  std::map<int64_t, std::pair<int64_t, std::chrono::steady_clock::time_point>> last_beat_;
};

// The reducer's buckets and their progress through one step. Also what average_gradients
// uses (never armed: every bucket leaves in finish).
struct GradientReducer::State {
  State(ProcessGroup::Impl& group, std::vector<torch::Tensor> parameters) : impl(group), params(std::move(parameters)) {
    // Reverse order, the first bucket small: backward produces the last layers' gradients first.
    buckets = detail::make_buckets(params, /*reverse=*/true, std::min(impl.o_.first_bucket_bytes(), impl.o_.bucket_bytes()),
                                   impl.o_.bucket_bytes());
    bucket_of.resize(params.size());
    for (size_t b = 0; b < buckets.size(); ++b)
      for (size_t k : buckets[b]) bucket_of[k] = b;
    reset();
  }

  void reset() {
    missing.clear();
    for (const auto& b : buckets) missing.push_back(static_cast<int64_t>(b.size()));
    ready.assign(params.size(), 0);
    flats.assign(buckets.size(), torch::Tensor());
    works.assign(buckets.size(), detail::WorkHandle());
    next = 0;
    error.clear();
  }

  // The hook: parameter k's gradient is accumulated for this backward.
  void on_ready(size_t k) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;
    if (ready[k]) {  // a second backward in the same step: its bucket may have left already
      twice = true;
      return;
    }
    ready[k] = 1;
    --missing[bucket_of[k]];
    while (next < buckets.size() && missing[next] == 0 && error.empty()) launch(next++);
  }

  void launch(size_t b) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> parts;
    for (size_t k : buckets[b]) {
      const auto& g = params[k].grad();
      parts.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({params[k].numel()}, params[k].options()));
    }
    flats[b] = torch::cat(parts);
    std::vector<torch::Tensor> one{flats[b]};
    try {
      works[b] = impl.on(flats[b]).allreduce(one);
    } catch (const std::exception& e) {
      error = e.what();  // rethrown by finish, where the rank's diagnosis can be given
    }
  }

  void finish(torch::Tensor* summed) {
    std::lock_guard<std::mutex> lock(mutex);
    const bool was_armed = armed;
    armed = false;
    early = was_armed ? static_cast<int64_t>(next) : 0;
    const std::string what = "gradient all-reduce";
    if (twice) {
      twice = false;
      reset();
      distill::fail(impl.where(), ": a parameter's gradient was accumulated twice in one step after GradientReducer::arm "
                    "(arm only before the backward that ends the step)");
    }
    torch::NoGradGuard no_grad;
    while (next < buckets.size() && error.empty()) launch(next++);
    // Which gradients exist on how many ranks, and `summed`, in one more collective.
    std::vector<float> present;
    for (const auto& p : params) present.push_back(p.grad().defined() ? 1.0f : 0.0f);
    auto counts = torch::tensor(present);
    if (summed) counts = torch::cat({counts, summed->detach().reshape({-1}).to(torch::kFloat).cpu()});
    counts = counts.to(params.empty() ? torch::Device(torch::kCPU) : params.front().device());
    try {
      if (!error.empty()) throw std::runtime_error(error);
      std::vector<torch::Tensor> one{counts};
      auto work = impl.on(counts).allreduce(one);
      for (auto& w : works) w->wait();
      work->wait();
    } catch (const std::exception& e) {
      reset();
      throw impl.failure(what, e);
    }
    const auto host = counts.cpu();
    const float* n = host.data_ptr<float>();
    const double scale = 1.0 / static_cast<double>(impl.o_.world_size());
    for (size_t b = 0; b < buckets.size(); ++b) {
      int64_t offset = 0;
      for (size_t k : buckets[b]) {
        auto& p = params[k];
        auto slice = flats[b].narrow(0, offset, p.numel()).view_as(p);
        offset += p.numel();
        if (n[k] == 0) continue;  // missing on every rank: stays missing
        if (p.grad().defined()) p.mutable_grad().copy_(slice).mul_(scale);
        else p.mutable_grad() = slice.mul(scale);
      }
    }
    if (summed) summed->copy_(host.narrow(0, static_cast<int64_t>(params.size()), summed->numel()).view_as(*summed));
    reset();
  }

  ProcessGroup::Impl& impl;
  std::shared_ptr<ProcessGroup> keep;  // the group outlives the reducer's hooks
  std::vector<torch::Tensor> params;
  std::vector<std::vector<size_t>> buckets;  // parameter indices, in the order they leave
  std::vector<size_t> bucket_of;
  std::vector<int64_t> missing;  // per bucket: gradients not yet in during this backward
  std::vector<char> ready;
  std::vector<torch::Tensor> flats;
  std::vector<detail::WorkHandle> works;
  size_t next = 0;  // the next bucket to leave (in order, the same on every rank)
  bool armed = false, twice = false;
  int64_t early = 0;
  std::string error;
  std::mutex mutex;
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks;
};

namespace {
// Calls back when a leaf's gradient has been accumulated (a post hook of its AccumulateGrad node).
struct AccumulatedHook : torch::autograd::FunctionPostHook {
  AccumulatedHook(std::weak_ptr<GradientReducer::State> state, size_t k) : state(std::move(state)), k(k) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    if (auto s = state.lock()) s->on_ready(k);
    return outputs;
  }
  std::weak_ptr<GradientReducer::State> state;
  size_t k;
};
}  // namespace

GradientReducer::GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<torch::Tensor> parameters) {
  if (!group) distill::fail("GradientReducer: no process group (a single process needs no reducer)");
  state_ = std::make_shared<State>(*group->impl_, std::move(parameters));
  state_->keep = std::move(group);
  if (!state_->impl.o_.overlap()) return;
  for (size_t k = 0; k < state_->params.size(); ++k) {
    const auto& p = state_->params[k];
    if (!p.requires_grad() || !p.is_leaf()) continue;  // never ready: leaves in finish
    auto accumulator = torch::autograd::impl::grad_accumulator(p);
    if (!accumulator) continue;
    const auto key = accumulator->add_post_hook(std::make_unique<AccumulatedHook>(state_, k));
    state_->hooks.emplace_back(std::move(accumulator), key);
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [node, key] : state_->hooks) node->del_post_hook(key);
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->armed = !state_->hooks.empty();
}

void GradientReducer::finish(torch::Tensor* summed) { state_->finish(summed); }

std::pair<int64_t, int64_t> GradientReducer::sent_early() const {
  return {state_->early, static_cast<int64_t>(state_->buckets.size())};
}

ProcessGroup::ProcessGroup(DistributedOptions options)
    : options_(options), impl_(std::make_unique<Impl>(std::move(options))) {}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, const std::string& what) {
  impl_->broadcast(tensors, what);
}
void ProcessGroup::average_gradients(const std::vector<torch::Tensor>& parameters) {
  if (!parameters.empty()) GradientReducer::State(*impl_, parameters).finish(nullptr);
}
void ProcessGroup::all_reduce_sum(torch::Tensor& tensor, const std::string& what) {
  impl_->all_reduce_sum(tensor, what);
}
std::vector<torch::Tensor> ProcessGroup::all_gather(const torch::Tensor& tensor, const std::string& what) {
  return impl_->all_gather(tensor, what);
}
void ProcessGroup::barrier(const std::string& what) { impl_->barrier(what); }
void ProcessGroup::finish() { impl_->finish(); }
void ProcessGroup::report_failure(const std::string& why) noexcept { impl_->report_failure(why); }
#else
// Built without c10d (no Gloo headers): a single process works as before; a run with
// WORLD_SIZE > 1 is refused when it would join.
struct ProcessGroup::Impl {};
ProcessGroup::ProcessGroup(DistributedOptions options) : options_(std::move(options)) {
  distill::fail("data parallel: WORLD_SIZE=", options_.world_size(), " but this build of distill has no c10d ",
                "(Gloo's headers were not found when it was compiled; Debian: libgloo-dev)");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::broadcast(const std::vector<torch::Tensor>&, const std::string&) {}
void ProcessGroup::average_gradients(const std::vector<torch::Tensor>&) {}
struct GradientReducer::State {};
GradientReducer::GradientReducer(std::shared_ptr<ProcessGroup>, std::vector<torch::Tensor>) {
  distill::fail("GradientReducer: this build of distill has no c10d");
}
GradientReducer::~GradientReducer() = default;
void GradientReducer::arm() {}
void GradientReducer::finish(torch::Tensor*) {}
std::pair<int64_t, int64_t> GradientReducer::sent_early() const { return {0, 0}; }
void ProcessGroup::all_reduce_sum(torch::Tensor&, const std::string&) {}
std::vector<torch::Tensor> ProcessGroup::all_gather(const torch::Tensor& tensor, const std::string&) {
  return {tensor};
}
void ProcessGroup::barrier(const std::string&) {}
void ProcessGroup::finish() {}
void ProcessGroup::report_failure(const std::string&) noexcept {}
#endif

}  // namespace distill::train
