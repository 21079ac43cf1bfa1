// The worker the C++ tests spawn: one echo per value type, plus functions
// that fail, sleep or return special values. Written with mf::Worker only.
// Spawn mode by default; with an argument (a service id or tcp:// endpoint)
// it serves in connect mode.
#include <multifrost.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
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
    mf::Worker w(argc > 1 ? argv[1] : "");
    // Several handler threads: a test's sleeping call must not hold up the next test step.
    w.set_concurrency(4);

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
    w.handle("sleep_ms", [](int ms) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return ms;
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
