// Cancellation end to end: mf::Call::cancel on the parent, mf::Context in the
// worker's handlers (cpp_test_worker's sleep_ms and wait_cancel watch it,
// spin_ms ignores it, bump counts its runs), and what the caller sees.
#include "support.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mft::error_as;
using mft::eventually;
using mft::json_int;

/// A cpp_test_worker with `threads` handler threads.
mf::Parent spawn_threads(const char* threads, const mf::Options& options = {}) {
  return mf::Parent::spawn(CPP_TEST_WORKER, {"--concurrency", threads}, options);
}

/// A file name of this test run that does not exist yet.
std::string fresh_path(const char* name) {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("cpp-cancel-" + std::string(name) + "-" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  return path.string();
}

TEST(Cancel, CooperativeHandlerStopsAndFreesItsThread) {
  mf::Parent p = spawn_threads("1");
  std::string mark = fresh_path("cooperative");
  mf::Call<int> call = p.call_start_for<int>(120s, "sleep_marked", 60000, mark);
  EXPECT_NE(call.id(), 0u);
  // Cancelled once it runs (a call cancelled before would never run at all).
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(mark); })) << "sleep_marked never started";
  std::filesystem::remove(mark);
  auto cancelled_at = std::chrono::steady_clock::now();
  call.cancel();
  ASSERT_EQ(call.wait_for(0s), std::future_status::ready) << "cancel() ends the call before it returns";
  EXPECT_EQ(error_as<mf::CancelledError>([&] { call.get(); }), "call to 'sleep_marked' was cancelled");
  call.cancel();  // after the end: nothing happens
  p.cancel(call.id());

  // The one handler thread answers this only once sleep_marked stopped (the
  // 20 s limit is a hang guard for a handler that went on sleeping).
  EXPECT_EQ(p.call_for<int>(20s, "add", 1, 2), 3);
  auto seen = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - cancelled_at);
  std::printf("cancel to the next answer (the handler saw its cancel and stopped): %lld ms\n",
              static_cast<long long>(seen.count()));
  std::string stats = p.stats_json();
  EXPECT_EQ(json_int(stats, "cancels"), 1) << stats;
  EXPECT_EQ(json_int(stats, "escalations"), 0) << stats;
  EXPECT_NE(stats.find("\"circuit_state\":\"closed\""), std::string::npos) << stats;
}

TEST(Cancel, HandlerIgnoringItIsStoppedAfterTheGrace) {
  mf::Options options;
  options.cancel_grace = 300ms;
  options.shutdown_grace = 500ms;
  options.auto_restart = 1;
  // Two threads: the spinner's, and one that answers spins().
  mf::Parent p = spawn_threads("2", options);
  auto first_pid = p.call<std::int64_t>("pid");
  mf::Call<int> spin = p.call_start_for<int>(120s, "spin_ms", 60000);
  ASSERT_TRUE(eventually([&] { return p.call<int>("spins") == 1; })) << "spin_ms never started";
  spin.cancel();
  EXPECT_EQ(error_as<mf::CancelledError>([&] { spin.get(); }), "call to 'spin_ms' was cancelled");

  // A call in flight when the worker is stopped ends with the stop.
  auto other = p.call_async_for<int>(120s, "sleep_ms", 60000);
  std::string text = error_as<mf::WorkerExitedError>([&] { other.get(); });
  EXPECT_EQ(text.rfind("worker stopped: a handler of 'spin_ms' ran on ", 0), 0u) << text;

  // The restarted worker answers.
  auto second_pid = p.call_for<std::int64_t>(20s, "pid");
  EXPECT_NE(second_pid, first_pid);
  EXPECT_EQ(p.call<int>("add", 20, 22), 42);
  std::string stats = p.stats_json();
  EXPECT_EQ(json_int(stats, "escalations"), 1) << stats;
  EXPECT_EQ(json_int(stats, "restarts"), 1) << stats;
}

TEST(Cancel, CallCancelledBeforeItsHandlerStartsNeverRuns) {
  mf::Parent p = spawn_threads("1");
  // A holds the one thread until its cancel; B waits behind it. B's cancel
  // reaches the worker before A's, so before A can end and free the thread.
  mf::Call<bool> a = p.call_start_for<bool>(120s, "wait_cancel");
  mf::Call<int> b = p.call_start_for<int>(120s, "bump");
  b.cancel();
  a.cancel();
  EXPECT_EQ(error_as<mf::CancelledError>([&] { b.get(); }), "call to 'bump' was cancelled");
  EXPECT_EQ(error_as<mf::CancelledError>([&] { a.get(); }), "call to 'wait_cancel' was cancelled");
  EXPECT_EQ(p.call_for<int>(20s, "bumps"), 0) << "the cancelled bump ran";
  EXPECT_EQ(p.call_for<int>(20s, "bump"), 1);  // bump itself works
}

TEST(Cancel, CallOutOfTimeWhileQueuedNeverRuns) {
  mf::Parent p = spawn_threads("1");
  auto a = p.call_async_for<int>(120s, "sleep_ms", 1000);  // holds the one thread for 1 s
  auto b = p.call_async_for<int>(100ms, "bump");           // out of time while waiting for it
  error_as<mf::TimeoutError>([&] { b.get(); });
  EXPECT_EQ(a.get(), 1000);
  EXPECT_EQ(p.call_for<int>(20s, "bumps"), 0) << "the timed-out bump ran";
}

TEST(Cancel, ThousandCallsHalfCancelledEachEndOnce) {
  mf::Parent p = spawn_threads("4");
  constexpr int n = 1000;
  std::vector<mf::Call<int>> calls;
  calls.reserve(n);
  for (int i = 0; i < n; i++) calls.push_back(p.call_start_for<int>(120s, "sleep_ms", 1 + i % 3));
  std::vector<int> order(n);
  for (int i = 0; i < n; i++) order[static_cast<std::size_t>(i)] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(19));
  std::vector<bool> cancelled(n, false);
  for (int k = 0; k < n / 2; k++) cancelled[static_cast<std::size_t>(order[static_cast<std::size_t>(k)])] = true;
  // Cancels from another thread while this one takes the results.
  std::thread canceller([&] {
    for (int k = 0; k < n / 2; k++) calls[static_cast<std::size_t>(order[static_cast<std::size_t>(k)])].cancel();
  });
  int values = 0, cancels = 0;
  std::vector<std::string> wrong;
  for (int i = 0; i < n; i++) {
    auto& c = calls[static_cast<std::size_t>(i)];
    ASSERT_EQ(c.wait_for(60s), std::future_status::ready) << "call " << i << " never ended";
    try {
      int v = c.get();
      if (v != 1 + i % 3) wrong.push_back(std::to_string(i) + " returned " + std::to_string(v));
      values++;
    } catch (const mf::CancelledError&) {
      if (!cancelled[static_cast<std::size_t>(i)]) wrong.push_back(std::to_string(i) + " cancelled uncancelled");
      cancels++;
    } catch (const mf::Error& e) {
      wrong.push_back(std::to_string(i) + ": " + e.status_name() + " " + e.what());
    }
    EXPECT_FALSE(c.valid());  // its one outcome is taken
  }
  canceller.join();
  std::printf("%d of %d calls answered, %d cancelled in flight\n", values, n, cancels);
  EXPECT_EQ(wrong, std::vector<std::string>{});
  EXPECT_EQ(values + cancels, n);
  EXPECT_GT(cancels, 0) << "no cancel came before its call's answer";
  EXPECT_GE(values, n / 2);
  // The library counted what the futures delivered: none lost, none twice.
  std::string stats = p.stats_json();
  EXPECT_EQ(json_int(stats, "cancels"), cancels) << stats;
  EXPECT_EQ(json_int(stats, "in_flight"), 0) << stats;
  EXPECT_EQ(p.call_for<int>(20s, "add", 2, 2), 4);
}

TEST(Cancel, HungWorkerIsRestartedAndItsCallsFail) {
  mf::Options options;
  options.heartbeat = mf::Heartbeat{200ms, 1000ms, 2};
  options.auto_restart = 1;
  options.shutdown_grace = 500ms;
  mf::Parent p = spawn_threads("2", options);
  auto pid = p.call<std::int64_t>("pid");
  std::string mark = fresh_path("hung");
  auto in_flight = p.call_start_for<int>(120s, "sleep_marked", 60000, mark);
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(mark); })) << "sleep_marked never started";
  std::filesystem::remove(mark);
  ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGSTOP), 0);
  std::string text = error_as<mf::WorkerExitedError>([&] { in_flight.get(); });
  EXPECT_EQ(text.rfind("worker stopped: it missed 2 heartbeats in a row (hung)", 0), 0u) << text;
  EXPECT_NE(p.call_for<std::int64_t>(20s, "pid"), pid);
  std::string stats = p.stats_json();
  EXPECT_EQ(json_int(stats, "hangs"), 1) << stats;
  EXPECT_EQ(json_int(stats, "restarts"), 1) << stats;
}

TEST(Cancel, EmptyAndClosedCallsIgnoreCancel) {
  mf::Call<int> empty;
  EXPECT_FALSE(empty.valid());
  empty.cancel();  // nothing to cancel
  mf::Parent p = spawn_threads("1");
  mf::Call<int> pending = p.call_start_for<int>(120s, "sleep_ms", 60000);
  p.close();
  error_as<mf::ClosedError>([&] { pending.get(); });
  pending.cancel();  // the parent is gone: harmless
  p.cancel(pending.id());
  mf::Call<int> refused = p.call_start<int>("add", 1, 2);
  EXPECT_EQ(refused.id(), 0u);
  error_as<mf::ClosedError>([&] { refused.get(); });
}

TEST(Cancel, HandlerSeesTheCancelInProcess) {
  // A handler in this process: it reports what its Context said, through
  // on_cancel (run on the worker's driver thread) and cancelled().
  std::string id = "cpp-test-ctx-" + std::to_string(::getpid());
  mf::Worker w(id);
  std::promise<void> started;
  std::promise<bool> hook_ran;
  std::promise<bool> handler_saw;
  w.handle("watch", [&](mf::Context& ctx) {
    started.set_value();
    ctx.on_cancel([&] { hook_ran.set_value(true); });
    ctx.wait();
    handler_saw.set_value(ctx.cancelled());
    return 0;
  });
  w.set_handle_signals(false);
  std::thread serving([&] { w.serve(); });
  {
    mf::Parent p = mf::Parent::connect(id);
    mf::Call<int> call = p.call_start_for<int>(120s, "watch");
    ASSERT_EQ(started.get_future().wait_for(30s), std::future_status::ready);
    call.cancel();
    error_as<mf::CancelledError>([&] { call.get(); });
    auto ran = hook_ran.get_future();
    auto saw = handler_saw.get_future();
    ASSERT_EQ(ran.wait_for(30s), std::future_status::ready);
    ASSERT_EQ(saw.wait_for(30s), std::future_status::ready);
    EXPECT_TRUE(ran.get());
    EXPECT_TRUE(saw.get());
  }
  w.stop();
  serving.join();
}

}  // namespace
