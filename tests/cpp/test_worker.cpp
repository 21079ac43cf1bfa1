// mf::Worker in this process (connect mode), called by an mf::Parent.
#include "support.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <future>
#include <memory>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mft::error_of;

/// A service id no other test (or test run) uses at the same time.
std::string service_id(const char* name) { return std::string("cpp-test-") + name + "-" + std::to_string(::getpid()); }

/// Serves `w` on a thread until the object goes away.
class Serving {
 public:
  explicit Serving(mf::Worker& w) : w_(w) {
    w_.set_handle_signals(false);  // the test program keeps its own signal handling
    thread_ = std::thread([this] {
      try {
        w_.serve();
      } catch (const mf::Error& e) {
        error_ = e.what();
      }
    });
  }
  ~Serving() {
    w_.stop();
    thread_.join();
    EXPECT_EQ(error_, "");
  }

 private:
  mf::Worker& w_;
  std::thread thread_;
  std::string error_;
};

TEST(WorkerInProcess, HandlersWithStateServeAConnectedParent) {
  std::string id = service_id("state");
  mf::Worker w(id);
  std::atomic<int> calls{0};
  w.handle("count", [&calls](int by) { return calls += by; });
  w.handle("hello", [](const std::string& who) { return "hello " + who; });
  Serving serving(w);

  mf::Options options;
  options.connect_timeout = 5000ms;
  mf::Parent p = mf::Parent::connect(id, options);
  EXPECT_EQ(p.call<int>("count", 2), 2);
  EXPECT_EQ(p.call<int>("count", 3), 5);
  EXPECT_EQ(p.call<std::string>("hello", "C++"), "hello C++");
  EXPECT_EQ(calls.load(), 5);
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { p.call<int>("count"); }), "TypeError: count(int32): takes 1 argument, got 0");
  // A second parent reaches the same worker.
  mf::Parent q = mf::Parent::connect(id, options);
  EXPECT_EQ(q.call<int>("count", 1), 6);
}

TEST(WorkerInProcess, StopEndsServeFromAnotherThread) {
  mf::Worker w(service_id("stop"));
  std::atomic<bool> returned{false};
  std::thread t([&] {
    w.set_handle_signals(false);
    w.serve();
    returned = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(returned.load());
  w.stop();
  t.join();
  EXPECT_TRUE(returned.load());
}

TEST(WorkerInProcess, StopBeforeServe) {
  mf::Worker w(service_id("early"));
  w.stop();
  w.set_handle_signals(false);
  w.serve();  // returns at once
  SUCCEED();
}

TEST(WorkerInProcess, MovedFromWorkerIsClosed) {
  mf::Worker a(service_id("move"));
  mf::Worker b(std::move(a));
  EXPECT_EQ(a.native_handle(), nullptr);
  EXPECT_NE(b.native_handle(), nullptr);
  error_of(MF_ERR_CLOSED, [&] { a.handle("f", [] { return 1; }); });
  error_of(MF_ERR_CLOSED, [&] { a.serve(); });
  error_of(MF_ERR_CLOSED, [&] { a.stop(); });
  // The handlers moved with the worker.
  b.handle("f", [] { return 1; });
  mf::Worker c(service_id("move-target"));
  c = std::move(b);  // releases c's own worker and takes b's
  Serving serving(c);
  mf::Parent p = mf::Parent::connect(service_id("move"));
  EXPECT_EQ(p.call<int>("f"), 1);
}

/// A worker of concurrency 4 in namespace "math" whose "gather"(n) waits
/// (up to 5 s) until n calls have run at once and returns the most that did:
/// calls run one at a time would each see 1. It counts its calls.
class Gathering {
 public:
  explicit Gathering(const std::string& id) : w(id) {
    w.set_concurrency(4);
    w.set_namespace("math");
    w.handle("gather", [this](int n) {
      std::unique_lock<std::mutex> lock(m_);
      calls_++;
      most_ = std::max(most_, ++running_);
      cv_.notify_all();
      cv_.wait_for(lock, 5s, [&] { return most_ >= n; });
      running_--;
      return most_;
    });
  }
  int calls() {
    std::lock_guard<std::mutex> lock(m_);
    return calls_;
  }

  mf::Worker w;

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int running_ = 0, most_ = 0, calls_ = 0;
};

/// `n` calls of gather(n) at once through `p`: what each returned.
std::vector<int> gather(mf::Parent& p, int n) {
  std::vector<std::future<int>> futures;
  for (int i = 0; i < n; i++) futures.push_back(p.call_async<int>("gather", n));
  std::vector<int> seen;
  for (auto& f : futures) seen.push_back(f.get());
  return seen;
}

TEST(WorkerInProcess, ConcurrencyAndNamespace) {
  std::string id = service_id("conc");
  Gathering g(id);
  Serving serving(g.w);
  mf::Options options;
  options.ns = "math";
  mf::Parent p = mf::Parent::connect(id, options);
  EXPECT_EQ(gather(p, 2), std::vector<int>(2, 2)) << "the two calls did not run at once";

  // Namespace "default": this worker drops the call; its handler never runs.
  mf::Options other;
  other.default_timeout = 1000ms;
  mf::Parent q = mf::Parent::connect(id, other);
  error_of(MF_ERR_TIMEOUT, [&] { q.call<int>("gather", 1); });
  // The worker is still there for its own namespace, and counted only those calls.
  EXPECT_EQ(p.call<int>("gather", 1), 2);
  EXPECT_EQ(g.calls(), 3);
}

// Concurrency 4 runs four handlers at once and every answer arrives (the
// worker's one driver always reads its socket; handlers run on the pool).
TEST(WorkerInProcess, FourHandlersRunAtOnce) {
  std::string id = service_id("conc4");
  Gathering g(id);
  Serving serving(g.w);
  mf::Options options;
  options.ns = "math";
  mf::Parent p = mf::Parent::connect(id, options);
  EXPECT_EQ(gather(p, 4), std::vector<int>(4, 4)) << "the four calls did not run at once";
}

TEST(WorkerInProcess, DestroyingTheWorkerWhileAHandlerRunsIsSafe) {
  // serve() returns after a grace period even while a handler still runs; the
  // handler (and what it captured) must outlive the Worker object.
  std::string id = service_id("busy");
  auto finished = std::make_shared<std::atomic<int>>(0);
  {
    auto w = std::make_unique<mf::Worker>(id);
    std::string captured(1000, 'x');
    auto started = std::make_shared<std::atomic<bool>>(false);
    w->handle("slow", [captured, finished, started](int ms) {
      started->store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      finished->store(static_cast<int>(captured.size()));
      return static_cast<int>(captured.size());
    });
    w->set_handle_signals(false);
    std::thread serving([&] { w->serve(); });
    mf::Parent p = mf::Parent::connect(id);
    auto pending = p.call_async<int>("slow", 1800);
    for (int i = 0; i < 1000 && !started->load(); i++) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(started->load()) << "the call never started running";
    w->stop();
    serving.join();  // returns after the library's grace, the handler still sleeping
    w.reset();       // destroys the Worker while the handler runs
    EXPECT_EQ(finished->load(), 0);
  }
  for (int i = 0; i < 100 && finished->load() == 0; i++) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(finished->load(), 1000);
}

TEST(WorkerInProcess, SpawnModeWithoutAParentFailsClearly) {
  ::unsetenv("COMLINK_ZMQ_PORT");
  mf::Worker w;  // spawn mode
  w.set_handle_signals(false);
  std::string text = error_of(MF_ERR_INVALID_ARGUMENT, [&] { w.serve(); });
  EXPECT_NE(text.find("COMLINK_ZMQ_PORT"), std::string::npos) << text;
}

}  // namespace
