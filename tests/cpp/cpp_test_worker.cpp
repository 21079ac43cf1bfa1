// The worker the C++ tests spawn: one echo per value type, plus functions
// that fail, sleep, spin, count, stream or return special values. Written with
// mf::Worker only. Spawn mode by default; with an argument (a service id or
// tcp:// endpoint) it serves in connect mode. `--concurrency N` sets its
// handler threads (default 4).
#include <multifrost.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

namespace {

template <class T>
T echo(T v) {
  return v;
}

// An exception type of our own, to show its name in the error text.
struct CustomFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string service;
    // Several handler threads by default: a test's sleeping call must not
    // hold up the next test step.
    std::uint32_t threads = 4;
    for (int i = 1; i < argc; i++) {
      std::string arg = argv[i];
      if (arg == "--concurrency" && i + 1 < argc)
        threads = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
      else
        service = arg;
    }
    mf::Worker w(service);
    w.set_concurrency(threads);

    w.handle("echo_bool", echo<bool>);
    w.handle("echo_i8", echo<std::int8_t>);
    w.handle("echo_i16", echo<std::int16_t>);
    w.handle("echo_i32", echo<std::int32_t>);
    w.handle("echo_int", echo<std::int64_t>);
    w.handle("echo_u8", echo<std::uint8_t>);
    w.handle("echo_u16", echo<std::uint16_t>);
    w.handle("echo_u32", echo<std::uint32_t>);
    w.handle("echo_u64", echo<std::uint64_t>);
    w.handle("echo_double", echo<double>);
    w.handle("echo_float", echo<float>);
    w.handle("echo_str", [](const std::string& s) { return s; });
    w.handle("echo_bytes", echo<mf::Bytes>);
    w.handle("echo_vec", [](std::vector<int> v) { return v; });
    w.handle("echo_vec_str", echo<std::vector<std::string>>);
    w.handle("echo_nested", echo<std::vector<std::vector<std::int64_t>>>);
    w.handle("echo_map", [](const std::map<std::string, std::int64_t>& m) { return m; });
    w.handle("echo_map_vec", echo<std::map<std::string, std::vector<double>>>);
    w.handle("echo_opt", [](std::optional<std::string> s) { return s; });
    w.handle("echo_vec_opt", echo<std::vector<std::optional<std::int64_t>>>);
    w.handle("echo_tuple", echo<std::tuple<int, std::string, bool>>);
    w.handle("echo_json", [](const mf::Json& j) { return j; });
    // Any value, unconverted (raw msgpack): bin stays bin, ext stays ext.
    w.handle("echo_any", [](const msgpack::object& o) { return o; });

    w.handle("add", [](int a, int b) { return a + b; });
    w.handle("len", [](std::string_view s) { return s.size(); });
    w.handle("greet", [](const std::string& name, std::optional<std::string> greeting) {
      return greeting.value_or("hello") + ", " + name;
    });
    w.handle("nothing", [] {});
    w.handle("pid", [] { return static_cast<std::int64_t>(::getpid()); });
    w.handle("make_json", [] { return mf::Json{R"({"a":[1,2.5,null],"b":"x"})"}; });
    w.handle("bad_json", [] { return mf::Json{"{not json"}; });
    // Cooperative: stops early when its call is cancelled (or times out).
    w.handle("sleep_ms", [](mf::Context& ctx, int ms) {
      if (ctx.wait_for(std::chrono::milliseconds(ms)))
        throw mf::HandlerError("CancelledError", "sleep_ms stopped on its cancel");
      return ms;
    });
    // sleep_ms that first creates the file `mark`, so a test knows it runs.
    w.handle("sleep_marked", [](mf::Context& ctx, int ms, const std::string& mark) {
      if (std::FILE* f = std::fopen(mark.c_str(), "w")) std::fclose(f);
      if (ctx.wait_for(std::chrono::milliseconds(ms)))
        throw mf::HandlerError("CancelledError", "sleep_marked stopped on its cancel");
      return ms;
    });
    // Waits for its cancel, however long that takes (give it a timeout).
    w.handle("wait_cancel", [](mf::Context& ctx) {
      ctx.wait();
      return ctx.cancelled();
    });
    // Ignores any cancel: busy for `ms`; spins() says how many started.
    static std::atomic<int> spins{0};
    w.handle("spin_ms", [](int ms) {
      spins++;
      auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
      while (std::chrono::steady_clock::now() < end) {
      }
      return ms;
    });
    w.handle("spins", [] { return spins.load(); });
    // A side effect a test can look for: bump() counts its runs, bumps() tells.
    static std::atomic<int> bumps{0};
    w.handle("bump", [] { return ++bumps; });
    w.handle("bumps", [] { return bumps.load(); });
    w.handle("crash", [] { std::abort(); });

    // Streams. count(n) yields 0..n-1 and returns nothing; counted() tells
    // [items yielded, streams closed on it] (a yield that threw
    // mf::CancelledError counts a closed stream).
    static std::atomic<int> yielded{0}, streams_closed{0};
    w.handle("count", [](mf::Context& ctx, int n) {
      try {
        for (int i = 0; i < n; i++) {
          ctx.yield(i);
          yielded++;
        }
      } catch (const mf::CancelledError&) {
        streams_closed++;
        throw;
      }
    });
    w.handle("counted", [] { return std::vector<int>{yielded.load(), streams_closed.load()}; });
    // Yields "a0".."a{n-1}", then fails.
    w.handle("count_then_fail", [](mf::Context& ctx, int n) -> int {
      for (int i = 0; i < n; i++) ctx.yield("a" + std::to_string(i));
      throw mf::HandlerError("ValueError", "failed after " + std::to_string(n) + " items");
    });

    w.handle("fail", []() -> int { throw std::runtime_error("boom"); });
    w.handle("fail_invalid", [](const std::string& what) -> int { throw std::invalid_argument(what); });
    w.handle("fail_custom", []() -> int { throw CustomFailure("custom"); });
    w.handle("fail_typed", []() -> int { throw mf::HandlerError("ValueError", "bad value"); });
    w.handle("fail_unknown", []() -> int { throw 42; });

    // JSON in, JSON out: the sum of a JSON array of integers.
    w.handle_json("sum_json", [](std::string_view args) {
      auto numbers = mf::from_json<std::tuple<std::vector<std::int64_t>>>(mf::Json{std::string(args)});
      std::int64_t sum = 0;
      for (auto n : std::get<0>(numbers)) sum += n;
      return std::to_string(sum);
    });

    w.serve();
    return 0;
  } catch (const mf::Error& e) {
    std::fprintf(stderr, "cpp_test_worker: %s (%s)\n", e.what(), e.status_name());
    return 2;
  }
}
