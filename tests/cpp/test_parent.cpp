// mf::Parent as an object: move semantics, closing, threads, async calls,
// JSON calls, stats and options.
#include "support.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mft::error_of;
using mft::json_int;
using mft::WorkerTest;

static_assert(!std::is_copy_constructible_v<mf::Parent> && !std::is_copy_assignable_v<mf::Parent>);
static_assert(std::is_nothrow_move_constructible_v<mf::Parent> && std::is_nothrow_move_assignable_v<mf::Parent>);
static_assert(!std::is_copy_constructible_v<mf::Worker> && std::is_nothrow_move_constructible_v<mf::Worker>);

/// True while a process with this pid exists (a reaped child does not).
bool alive(long long pid) { return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH; }

long long worker_pid(const mf::Parent& p) {
  auto pid = json_int(p.stats_json(), "worker_pid");
  EXPECT_TRUE(pid.has_value());
  return pid.value_or(0);
}

void expect_closed(mf::Parent& p) {
  EXPECT_FALSE(p.is_open());
  EXPECT_FALSE(static_cast<bool>(p));
  error_of(MF_ERR_CLOSED, [&] { p.call<int>("add", 1, 2); });
  error_of(MF_ERR_CLOSED, [&] { p.call_for<int>(1s, "add", 1, 2); });
  error_of(MF_ERR_CLOSED, [&] { p.call_json("add", "[1, 2]"); });
  error_of(MF_ERR_CLOSED, [&] { p.stats_json(); });
  auto f = p.call_async<int>("add", 1, 2);
  error_of(MF_ERR_CLOSED, [&] { f.get(); });
}

class ParentTest : public WorkerTest {};

TEST_F(ParentTest, MovedFromParentIsClosed) {
  mf::Parent moved(std::move(parent));
  EXPECT_EQ(moved.call<int>("add", 1, 2), 3);
  expect_closed(parent);
}

TEST_F(ParentTest, DefaultConstructedParentIsClosed) {
  mf::Parent empty;
  expect_closed(empty);
  empty.close();  // idempotent, no-op
}

TEST_F(ParentTest, MoveAssignClosesTheOldOne) {
  mf::Parent other = mf::Parent::spawn(CPP_TEST_WORKER);
  long long old_pid = worker_pid(parent);
  long long other_pid = worker_pid(other);
  ASSERT_NE(old_pid, other_pid);
  ASSERT_TRUE(alive(old_pid));

  parent = std::move(other);
  EXPECT_FALSE(alive(old_pid)) << "the old worker was not stopped and reaped";
  EXPECT_EQ(worker_pid(parent), other_pid);
  EXPECT_EQ(parent.call<std::int64_t>("pid"), other_pid);
  expect_closed(other);

  parent = std::move(parent);  // self-move keeps it open
  EXPECT_EQ(parent.call<int>("add", 2, 2), 4);
}

TEST_F(ParentTest, CloseStopsTheWorkerAndIsIdempotent) {
  long long pid = worker_pid(parent);
  parent.close();
  EXPECT_FALSE(alive(pid));
  parent.close();
  expect_closed(parent);
}

TEST_F(ParentTest, DestructorClosesTheWorker) {
  long long pid = 0;
  {
    mf::Parent scoped = mf::Parent::spawn(CPP_TEST_WORKER);
    pid = worker_pid(scoped);
    ASSERT_TRUE(alive(pid));
  }
  EXPECT_FALSE(alive(pid));
}

TEST_F(ParentTest, EightThreadsCallAtOnce) {
  constexpr int threads = 8, calls = 200;
  std::atomic<int> correct{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < calls; i++) {
        try {
          if (parent.call<int>("add", t * 1000, i) == t * 1000 + i)
            correct++;
          else
            wrong++;
        } catch (const mf::Error&) {
          wrong++;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(correct.load(), threads * calls);
  EXPECT_EQ(wrong.load(), 0);
  std::string stats = parent.stats_json();
  EXPECT_GE(json_int(stats, "requests_total").value_or(0), threads * calls) << stats;
  EXPECT_EQ(json_int(stats, "requests_failed"), 0) << stats;
}

TEST_F(ParentTest, AsyncCallsDeliverResultsAndErrors) {
  std::vector<std::future<int>> futures;
  for (int i = 0; i < 100; i++) futures.push_back(parent.call_async<int>("add", i, i));
  for (int i = 0; i < 100; i++) EXPECT_EQ(futures[static_cast<std::size_t>(i)].get(), 2 * i);

  auto failing = parent.call_async<int>("fail");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { failing.get(); }), "std::runtime_error: boom");
  auto mismatched = parent.call_async<std::string>("add", 1, 2);
  EXPECT_EQ(error_of(MF_ERR_PROTOCOL, [&] { mismatched.get(); }),
            "result of add: expected string, got msgpack integer (3)");
  auto timed_out = parent.call_async_for<int>(100ms, "sleep_ms", 3000);
  error_of(MF_ERR_TIMEOUT, [&] { timed_out.get(); });
  auto nothing = parent.call_async("nothing");
  EXPECT_NO_THROW(nothing.get());
  auto text = parent.call_async<std::vector<std::string>>("echo_vec_str", std::vector<std::string>{"a", "b"});
  EXPECT_EQ(text.get(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(ParentTest, ClosingEndsPendingCallsWithClosed) {
  // The handlers would answer after 30 s: the bound below tells the close
  // ending the calls from their answers, with room for a busy machine.
  auto pending = parent.call_async<int>("sleep_ms", 30000);
  std::string blocked_status;
  std::thread blocked([&] {
    try {
      parent.call_for<int>(60s, "sleep_ms", 30000);
    } catch (const mf::Error& e) {
      blocked_status = e.status_name();
    }
  });
  for (int i = 0; i < 1000 && json_int(parent.stats_json(), "in_flight") != 2; i++) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(json_int(parent.stats_json(), "in_flight"), 2) << "both calls in flight before the close";
  auto start = std::chrono::steady_clock::now();
  parent.close();  // while a call is in flight on another thread
  blocked.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
  EXPECT_EQ(blocked_status, "MF_ERR_CLOSED");
  ASSERT_EQ(pending.wait_for(1s), std::future_status::ready);
  error_of(MF_ERR_CLOSED, [&] { pending.get(); });
}

TEST_F(ParentTest, CloseMayRaceCallsBeingStarted) {
  // Four threads start calls without pause while this one closes: every
  // call returns its result or throws MF_ERR_CLOSED, none touches a freed
  // handle (the sanitizer build runs this too).
  std::atomic<bool> go{false};
  std::atomic<int> answered{0};
  std::vector<std::string> failures(4);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; t++) {
    callers.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0;; i++) {
        try {
          int sum = t % 2 ? parent.call<int>("add", i, 1) : parent.call_async<int>("add", i, 1).get();
          if (sum != i + 1) {
            failures[t] = "add(" + std::to_string(i) + ", 1) returned " + std::to_string(sum);
            return;
          }
          answered++;
        } catch (const mf::Error& e) {
          if (e.status() != MF_ERR_CLOSED) failures[t] = e.what();
          return;
        }
      }
    });
  }
  go = true;
  while (answered.load() < 200) std::this_thread::yield();
  parent.close();
  for (auto& c : callers) c.join();
  for (int t = 0; t < 4; t++) EXPECT_EQ(failures[t], "") << "caller " << t;
  expect_closed(parent);
}

TEST_F(ParentTest, CallJson) {
  EXPECT_EQ(parent.call_json("add", "[1, 2]"), "3");
  EXPECT_EQ(parent.call_json("echo_str", R"(["héllo ✓"])"), R"("héllo ✓")");
  EXPECT_EQ(parent.call_json("echo_map", R"([{"a": 1, "b": -2}])"), R"({"a":1,"b":-2})");
  EXPECT_EQ(parent.call_json("sum_json", "[[1, 2, 3, 4]]"), "10");
  EXPECT_EQ(parent.call_json("echo_int", "[-9007199254740993]"), "-9007199254740993");
  EXPECT_EQ(parent.call_json("nothing", "[]"), "null");
  EXPECT_EQ(parent.call_json("add", "[1, 2]", 2s), "3");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call_json("fail", "[]"); }), "std::runtime_error: boom");
  error_of(MF_ERR_INVALID_ARGUMENT, [&] { parent.call_json("add", "not json"); });
  error_of(MF_ERR_INVALID_ARGUMENT, [&] { parent.call_json(std::string("a\0b", 3), "[]"); });
}

TEST_F(ParentTest, StatsJson) {
  for (int i = 0; i < 5; i++) parent.call<int>("add", i, 1);
  EXPECT_THROW(parent.call<int>("fail"), mf::Error);
  std::string stats = parent.stats_json();
  ASSERT_FALSE(stats.empty());
  EXPECT_EQ(stats.front(), '{');
  EXPECT_EQ(stats.back(), '}');
  EXPECT_EQ(json_int(stats, "requests_total"), 6) << stats;
  EXPECT_EQ(json_int(stats, "requests_success"), 5) << stats;
  EXPECT_EQ(json_int(stats, "remote_errors"), 1) << stats;
  EXPECT_EQ(json_int(stats, "in_flight"), 0) << stats;
  EXPECT_GT(json_int(stats, "worker_pid").value_or(0), 0) << stats;
  for (const char* key : {"latency_p50_ms", "latency_p99_ms", "heartbeat_rtt_last_ms", "restarts"})
    EXPECT_NE(stats.find(std::string("\"") + key + "\""), std::string::npos) << key << " missing: " << stats;
  EXPECT_NE(stats.find("\"circuit_state\":\"closed\""), std::string::npos) << stats;
  // The stats are mf::Json-convertible too.
  auto parsed = mf::from_json<std::map<std::string, mf::Json>>(mf::Json{stats});
  EXPECT_EQ(parsed.at("requests_total").text, "6");
}

TEST(ParentOptions, NamespaceIsSentWithEveryCall) {
  mf::Options options;
  options.ns = "elsewhere";  // the worker serves "default" and drops these calls
  options.default_timeout = 200ms;
  options.heartbeat = mf::Heartbeat{1000ms, 500ms, 3};
  options.breaker = mf::Breaker{100, 1000ms, false};
  options.name = "cpp-ns-worker";
  options.shutdown_grace = 500ms;
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  error_of(MF_ERR_TIMEOUT, [&] { p.call<int>("add", 1, 2); });
}

TEST(ParentOptions, BreakerOpensAfterFailures) {
  mf::Options options;
  options.breaker = mf::Breaker{2, 60000ms, true};  // remote errors count
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  error_of(MF_ERR_REMOTE, [&] { p.call<int>("fail"); });
  error_of(MF_ERR_REMOTE, [&] { p.call<int>("fail"); });
  error_of(MF_ERR_CIRCUIT_OPEN, [&] { p.call<int>("add", 1, 2); });
  EXPECT_NE(p.stats_json().find("\"circuit_state\":\"open\""), std::string::npos);
}

TEST(ParentOptions, HeartbeatOff) {
  mf::Options options;
  options.heartbeat = mf::Heartbeat::off();
  options.start_timeout = 5000ms;
  options.connect_timeout = 1000ms;
  options.auto_restart = 0;
  options.bind_host = "127.0.0.1";
  options.max_message_size = 1 << 20;
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  EXPECT_EQ(p.call<int>("add", 1, 2), 3);
}

TEST(ParentOptions, StatsSayLinkByDefaultAndZmqWithPrivateLinkOff) {
  {
    mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER);
    EXPECT_NE(p.stats_json().find("\"transport\":\"link\""), std::string::npos) << p.stats_json();
    EXPECT_EQ(p.call<int>("add", 1, 2), 3);
  }
  mf::Options options;
  options.private_link = false;
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  EXPECT_NE(p.stats_json().find("\"transport\":\"zmq\""), std::string::npos) << p.stats_json();
  EXPECT_EQ(p.call<int>("add", 1, 2), 3);
}

TEST(ParentVersion, MatchesTheHeader) {
  EXPECT_EQ(std::string(mf::version()), std::to_string(MF_VERSION_MAJOR) + "." + std::to_string(MF_VERSION_MINOR) +
                                            "." + std::to_string(MF_VERSION_PATCH));
}

}  // namespace
