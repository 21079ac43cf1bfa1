// Pools (mf::Options::workers) from C++: a pool of C test workers reached
// through every call form of the header, a killed worker restarted, and
// recycling (mf::Options::max_calls_per_worker) that loses no call.
#include "support.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#ifndef C_TEST_WORKER
#error "C_TEST_WORKER must name the C test worker program"
#endif

namespace {

using namespace std::chrono_literals;
using mft::error_as;
using mft::eventually;

/// One worker's entry of the stats (Parent::stats_json's "workers").
struct WorkerStats {
  std::int64_t pid = 0;
  std::int64_t in_flight = 0;
  std::uint64_t restarts = 0;
  std::uint64_t recycles = 0;
  bool healthy = false;
};

using Fields = std::map<std::string, mf::Json>;

Fields stats(const mf::Parent& p) { return mf::from_json<Fields>(mf::Json{p.stats_json()}); }

std::vector<WorkerStats> workers(const mf::Parent& p) {
  std::vector<WorkerStats> out;
  for (Fields& w : mf::from_json<std::vector<Fields>>(stats(p).at("workers"))) {
    WorkerStats s;
    s.pid = mf::from_json<std::int64_t>(w.at("pid"));
    s.in_flight = mf::from_json<std::int64_t>(w.at("in_flight"));
    s.restarts = mf::from_json<std::uint64_t>(w.at("restarts"));
    s.recycles = mf::from_json<std::uint64_t>(w.at("recycles"));
    s.healthy = mf::from_json<bool>(w.at("healthy"));
    out.push_back(s);
  }
  return out;
}

std::set<std::int64_t> pids(const mf::Parent& p) {
  std::set<std::int64_t> out;
  for (const WorkerStats& w : workers(p)) out.insert(w.pid);
  return out;
}

bool alive(std::int64_t pid) {
  struct stat st;
  return ::stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0;
}

bool each_in_flight(const mf::Parent& p, std::int64_t n) {
  auto ws = workers(p);
  return std::all_of(ws.begin(), ws.end(), [&](const WorkerStats& w) { return w.in_flight == n; });
}

class Pool : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(C_TEST_WORKER).empty()) GTEST_SKIP() << "the C test worker is not built";
  }

  static mf::Parent spawn(mf::Options o) { return mf::Parent::spawn(C_TEST_WORKER, {}, o); }
};

TEST_F(Pool, EveryCallFormReachesEveryWorker) {
  mf::Options o;
  o.workers = 3;
  mf::Parent p = spawn(o);
  const std::set<std::int64_t> all = pids(p);
  ASSERT_EQ(all.size(), 3u) << p.stats_json();
  for (const WorkerStats& w : workers(p)) {
    EXPECT_TRUE(w.healthy);
    EXPECT_TRUE(alive(w.pid));
  }

  // Blocking calls on an idle pool take turns.
  std::set<std::int64_t> seen;
  for (int i = 0; i < 9; i++) seen.insert(p.call<std::int64_t>("pid"));
  EXPECT_EQ(seen, all) << "call";
  seen.clear();
  for (int i = 0; i < 9; i++) seen.insert(p.call_for<std::int64_t>(20s, "pid"));
  EXPECT_EQ(seen, all) << "call_for";
  seen.clear();
  for (int i = 0; i < 9; i++) seen.insert(std::stoll(p.call_json("pid", "[]")));
  EXPECT_EQ(seen, all) << "call_json";

  // Futures started together.
  std::vector<std::future<std::int64_t>> futures;
  for (int i = 0; i < 30; i++) futures.push_back(p.call_async<std::int64_t>("pid"));
  seen.clear();
  for (auto& f : futures) seen.insert(f.get());
  EXPECT_EQ(seen, all) << "call_async";
  std::vector<mf::Call<std::int64_t>> calls;
  for (int i = 0; i < 30; i++) calls.push_back(p.call_start<std::int64_t>("pid"));
  seen.clear();
  for (auto& c : calls) seen.insert(c.get());
  EXPECT_EQ(seen, all) << "call_start";

  // Values, not only pids.
  EXPECT_EQ(p.call<int>("add", 2, 3), 5);
  EXPECT_EQ(p.call<std::string>("echo", "from C++"), "from C++");

  // Three unfinished streams: one in each worker (a stream's handler waits
  // in its yield once the parent holds its credit of items).
  {
    std::vector<mf::Stream<std::int64_t>> streams;
    for (int i = 0; i < 3; i++) streams.push_back(p.stream_for<std::int64_t>(20s, "count", 1000000));
    ASSERT_TRUE(eventually([&] { return each_in_flight(p, 1); })) << p.stats_json();
    for (auto& s : streams) {
      EXPECT_EQ(s.next(), std::optional<std::int64_t>(0));
      EXPECT_EQ(s.next(), std::optional<std::int64_t>(1));
      s.close();
    }
  }
  ASSERT_TRUE(eventually([&] { return each_in_flight(p, 0); })) << p.stats_json();
  std::vector<std::int64_t> items;
  for (std::int64_t x : p.stream<std::int64_t>("count", 4)) items.push_back(x);
  EXPECT_EQ(items, (std::vector<std::int64_t>{0, 1, 2, 3}));

  // A cancel reaches the worker that has the call: three calls, one in
  // each worker, cancelled; the workers stay (the handler stops on it).
  // (Closing the streams counted as cancels too.)
  const int cancels_before = mf::from_json<int>(stats(p).at("cancels"));
  std::vector<mf::Call<std::int64_t>> sleepers;
  for (int i = 0; i < 3; i++) sleepers.push_back(p.call_start_for<std::int64_t>(mf::no_timeout, "sleep_ms", 600000));
  ASSERT_TRUE(eventually([&] { return each_in_flight(p, 1); })) << p.stats_json();
  sleepers[1].cancel();
  p.cancel(sleepers[0].id());
  sleepers[2].cancel();
  for (auto& c : sleepers) error_as<mf::CancelledError>([&] { c.get(); });
  ASSERT_TRUE(eventually([&] { return each_in_flight(p, 0); })) << p.stats_json();
  Fields s = stats(p);
  EXPECT_EQ(mf::from_json<int>(s.at("cancels")) - cancels_before, 3);
  EXPECT_EQ(mf::from_json<int>(s.at("escalations")), 0);
  EXPECT_EQ(pids(p), all);

  p.close();
  for (std::int64_t pid : all) EXPECT_FALSE(alive(pid)) << "worker " << pid << " after close";
}

// Each worker holds two calls; killing one fails only its two, the others
// answer, and it is restarted in its place.
TEST_F(Pool, KilledWorkerFailsOnlyItsCallsAndIsRestarted) {
  mf::Options o;
  o.workers = 3;
  o.auto_restart = 3;
  mf::Parent p = spawn(o);
  const std::vector<WorkerStats> before = workers(p);
  std::vector<mf::Call<std::int64_t>> slow;
  for (int i = 0; i < 6; i++) slow.push_back(p.call_start_for<std::int64_t>(mf::no_timeout, "sleep_ms", 5000));
  ASSERT_TRUE(eventually([&] { return each_in_flight(p, 2); })) << p.stats_json();
  const std::int64_t killed = before[0].pid;
  ASSERT_EQ(::kill(static_cast<pid_t>(killed), SIGKILL), 0);
  // The killed worker's two calls end first; meanwhile the others answer.
  ASSERT_TRUE(eventually([&] {
    return std::count_if(slow.begin(), slow.end(),
                         [](const mf::Call<std::int64_t>& c) { return c.wait_for(0ms) == std::future_status::ready; }) >= 2;
  })) << p.stats_json();
  for (int i = 0; i < 10; i++) EXPECT_EQ(p.call<int>("add", i, 1), i + 1);

  int exited = 0, answered = 0;
  for (auto& c : slow) {
    try {
      if (c.get() == 5000) answered++;
    } catch (const mf::WorkerExitedError&) {
      exited++;
    }
  }
  EXPECT_EQ(exited, 2);
  EXPECT_EQ(answered, 4);

  ASSERT_TRUE(eventually([&] {
    WorkerStats w = workers(p)[0];
    return w.healthy && w.restarts == 1 && w.pid > 0 && w.pid != killed;
  })) << p.stats_json();
  const std::vector<WorkerStats> after = workers(p);
  EXPECT_EQ(after[1].pid, before[1].pid);
  EXPECT_EQ(after[2].pid, before[2].pid);
  EXPECT_FALSE(alive(killed));
  Fields s = stats(p);
  EXPECT_EQ(mf::from_json<int>(s.at("restarts")), 1);
  EXPECT_EQ(mf::from_json<std::string>(s.at("circuit_state")), "closed");
  std::set<std::int64_t> seen;
  for (int i = 0; i < 30; i++) seen.insert(p.call<std::int64_t>("pid"));
  EXPECT_EQ(seen, pids(p));
}

// Calls from several threads through a pool recycled every 5 calls: each
// answers its own token, and every worker is a new process afterwards.
TEST_F(Pool, RecyclingLosesNoCall) {
  mf::Options o;
  o.workers = 2;
  o.max_calls_per_worker = 5;
  mf::Parent p = spawn(o);
  const std::set<std::int64_t> before = pids(p);
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<std::string> wrong;
  for (int t = 0; t < 8; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; i++) {
        std::string token = "token-" + std::to_string(t) + "-" + std::to_string(i);
        std::string got;
        try {
          got = p.call<std::string>("echo", token);
        } catch (const mf::Error& e) {
          got = e.what();
        }
        if (got != token) {
          std::lock_guard<std::mutex> lock(mu);
          wrong.push_back(token + " -> " + got);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " calls lost, e.g. " << (wrong.empty() ? "" : wrong[0]);
  Fields s = stats(p);
  EXPECT_EQ(mf::from_json<int>(s.at("requests_success")), 80);
  EXPECT_EQ(mf::from_json<int>(s.at("requests_failed")), 0);
  EXPECT_GT(mf::from_json<int>(s.at("recycles")), 0);
  ASSERT_TRUE(eventually([&] {
    auto ws = workers(p);
    return std::all_of(ws.begin(), ws.end(), [&](const WorkerStats& w) {
      return w.healthy && w.recycles > 0 && w.pid > 0 && before.count(w.pid) == 0;
    });
  })) << p.stats_json();
  for (std::int64_t pid : before) EXPECT_FALSE(alive(pid)) << "recycled worker " << pid;
}

TEST_F(Pool, RefusedWorkerCounts) {
  mf::Options o;
  o.workers = 0;
  EXPECT_EQ(error_as<mf::InvalidArgumentError>([&] { spawn(o); }),
            "Options::workers: workers must be 1..=256, got 0");
  o.workers = 257;
  EXPECT_EQ(error_as<mf::InvalidArgumentError>([&] { spawn(o); }),
            "Options::workers: workers must be 1..=256, got 257");
  o.workers = 2;
  EXPECT_NE(error_as<mf::InvalidArgumentError>([&] { mf::Parent::connect("pool-test-service", o); })
                .find("a service id or an endpoint is one worker"),
            std::string::npos);
}

}  // namespace
