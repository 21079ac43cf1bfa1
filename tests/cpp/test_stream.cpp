// Streams end to end: mf::Parent::stream and mf::Stream on the parent,
// mf::Context::yield in cpp_test_worker's count (counted() tells how many
// items it yielded and how many of its streams were closed), and the C test
// worker's count for a parent of another language's worker.
#include "support.hpp"

#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#ifndef C_TEST_WORKER
#error "C_TEST_WORKER must name the C test worker program"
#endif

namespace {

using namespace std::chrono_literals;
using mft::error_as;
using mft::eventually;
using mft::json_int;

static_assert(!std::is_copy_constructible_v<mf::Stream<int>>, "a stream is move-only");
static_assert(std::is_nothrow_move_constructible_v<mf::Stream<int>>, "a stream moves");

/// The worker's [items yielded, streams closed].
std::vector<int> counted(mf::Parent& p) { return p.call_for<std::vector<int>>(20s, "counted"); }

class Stream : public mft::WorkerTest {};

TEST_F(Stream, ItemsArriveInOrderAndTheStreamEnds) {
  std::vector<int> seen;
  for (const int& x : parent.stream<int>("count", 5)) seen.push_back(x);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4}));

  // next(): the items, then std::nullopt, also when asked again.
  mf::Stream<int> s = parent.stream_for<int>(20s, "count", 2);
  EXPECT_TRUE(s.is_open());
  EXPECT_EQ(s.next(), std::optional<int>(0));
  EXPECT_EQ(s.next(), std::optional<int>(1));
  EXPECT_FALSE(s.ended());
  EXPECT_EQ(s.next(), std::nullopt);
  EXPECT_TRUE(s.ended());
  EXPECT_EQ(s.next(), std::nullopt);

  // A stream with no item: the loop body never runs.
  int runs = 0;
  for (int x : parent.stream<int>("count", 0)) runs += 1 + x;
  EXPECT_EQ(runs, 0);

  // Moved: the new one reads on, the old one is closed.
  mf::Stream<int> a = parent.stream<int>("count", 3);
  EXPECT_EQ(a.next(), std::optional<int>(0));
  mf::Stream<int> b = std::move(a);
  EXPECT_FALSE(a.is_open());
  error_as<mf::ClosedError>([&] { a.next(); });
  EXPECT_EQ(b.next(), std::optional<int>(1));
  EXPECT_EQ(b.next(), std::optional<int>(2));
  EXPECT_EQ(b.next(), std::nullopt);
  b.close();
  b.close();
  EXPECT_EQ(error_as<mf::ClosedError>([&] { b.next(); }), "the stream is closed");

  EXPECT_EQ(counted(parent), (std::vector<int>{10, 0}));
  std::string stats = parent.stats_json();
  EXPECT_EQ(json_int(stats, "streams_open"), 0) << stats;
  EXPECT_EQ(json_int(stats, "stream_items"), 10) << stats;
}

TEST_F(Stream, AnErrorAfterSomeItemsComesAfterThem) {
  mf::Stream<std::string> s = parent.stream<std::string>("count_then_fail", 3);
  std::vector<std::string> seen;
  std::string error = error_as<mf::RemoteError>([&] {
    for (const std::string& x : s) seen.push_back(x);
  });
  EXPECT_EQ(seen, (std::vector<std::string>{"a0", "a1", "a2"}));
  EXPECT_EQ(error, "ValueError: failed after 3 items");
  EXPECT_TRUE(s.ended());
  EXPECT_EQ(s.next(), std::nullopt);

  // An item of the wrong type names the item; the stream goes on.
  mf::Stream<int> wrong = parent.stream<int>("count_then_fail", 1);
  std::string why = error_as<mf::TypeError>([&] { wrong.next(); });
  EXPECT_NE(why.find("item of count_then_fail"), std::string::npos) << why;
  error_as<mf::RemoteError>([&] { wrong.next(); });

  // The handler's own argument errors, and an unknown function.
  error_as<mf::RemoteError>([&] { parent.stream<int>("count", "x").next(); });
  error_as<mf::NoSuchFunctionError>([&] { parent.stream<int>("no_such", 1).next(); });
}

TEST_F(Stream, ClosingHalfwayStopsTheHandler) {
  std::vector<int> seen;
  for (int x : parent.stream_for<int>(20s, "count", 1000000)) {
    seen.push_back(x);
    if (x == 2) break;  // the stream's destructor closes it
  }
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2}));
  ASSERT_TRUE(eventually([&] { return counted(parent)[1] == 1; })) << "the handler never saw its stream closed";
  // It stopped within its credit (16) of what was taken.
  int yielded = counted(parent)[0];
  EXPECT_GE(yielded, 3);
  EXPECT_LE(yielded, 3 + 16);

  // An explicit close() does the same.
  mf::Stream<int> s = parent.stream_for<int>(20s, "count", 1000000);
  EXPECT_EQ(s.next(), std::optional<int>(0));
  s.close();
  EXPECT_FALSE(s.is_open());
  ASSERT_TRUE(eventually([&] { return counted(parent)[1] == 2; }));
  EXPECT_EQ(parent.call_for<int>(20s, "add", 1, 2), 3) << "the worker serves on";
  std::string stats = parent.stats_json();
  EXPECT_EQ(json_int(stats, "streams_open"), 0) << stats;
}

TEST_F(Stream, AWorkerThatDiesMidStreamEndsItWithWorkerExited) {
  mf::Stream<int> s = parent.stream_for<int>(20s, "count", 1000000);
  EXPECT_EQ(s.next(), std::optional<int>(0));
  // The worker aborts on another handler thread while count runs.
  error_as<mf::WorkerExitedError>([&] { parent.call_for<void>(20s, "crash"); });
  int more = 0;
  error_as<mf::WorkerExitedError>([&] {
    for (int x : s) EXPECT_EQ(x, ++more) << "in order";
  });
  EXPECT_TRUE(s.ended());
}

TEST_F(Stream, APlainCallOfAYieldingHandlerGetsTheList) {
  EXPECT_EQ(parent.call<std::vector<int>>("count", 4), (std::vector<int>{0, 1, 2, 3}));
  // No item yielded: the handler's own return value (nothing: nil), not an empty list.
  EXPECT_EQ(parent.call<std::optional<std::vector<int>>>("count", 0), std::nullopt);
  EXPECT_EQ(counted(parent), (std::vector<int>{4, 0}));
  EXPECT_EQ(error_as<mf::RemoteError>([&] { parent.call<std::vector<std::string>>("count_then_fail", 2); }),
            "ValueError: failed after 2 items");
}

TEST(StreamCredit, ASlowConsumerKeepsTheWorkerWaiting) {
  mf::Options options;
  options.stream_credit = 4;
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  mf::Stream<int> s = p.stream_for<int>(20s, "count", 100);
  // Nothing taken: the worker sends its 4 items and waits in yield.
  ASSERT_TRUE(eventually([&] { return counted(p)[0] == 4; })) << "yielded " << counted(p)[0];
  std::this_thread::sleep_for(200ms);  // time to run ahead, were it able to
  EXPECT_EQ(counted(p)[0], 4) << "no item beyond the credit";
  // Taking half the window grants that much again.
  EXPECT_EQ(s.next(), std::optional<int>(0));
  EXPECT_EQ(s.next(), std::optional<int>(1));
  ASSERT_TRUE(eventually([&] { return counted(p)[0] == 6; })) << "yielded " << counted(p)[0];
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(counted(p)[0], 6);
  // The rest, in order, never more than 4 ahead of what was taken.
  int expect = 2;
  for (int x : s) {
    EXPECT_EQ(x, expect++);
    EXPECT_LE(counted(p)[0], expect + 4);
  }
  EXPECT_EQ(expect, 100);
  mf::Options bad;
  bad.stream_credit = 0;
  EXPECT_NE(error_as<mf::InvalidArgumentError>([&] { mf::Parent::spawn(CPP_TEST_WORKER, {}, bad); })
                .find("Options::stream_credit"),
            std::string::npos);
}

TEST(StreamCrossLanguage, FromTheCWorkersCount) {
  if (std::string(C_TEST_WORKER).empty()) GTEST_SKIP() << "the C test worker is not built";
  mf::Parent p = mf::Parent::spawn(C_TEST_WORKER);
  std::vector<std::int64_t> seen;
  for (std::int64_t x : p.stream<std::int64_t>("count", 5)) seen.push_back(x);
  EXPECT_EQ(seen, (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  // Closed halfway: the C handler sees it too.
  for (std::int64_t x : p.stream_for<std::int64_t>(20s, "count", 1000000))
    if (x == 1) break;
  ASSERT_TRUE(eventually([&] { return p.call_for<std::vector<int>>(20s, "counted")[1] == 1; }));
  EXPECT_EQ(p.call<std::vector<int>>("count", 3), (std::vector<int>{0, 1, 2}));
}

}  // namespace
