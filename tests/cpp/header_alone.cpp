// multifrost.hpp on its own, included twice, instantiating the templates
// with every value type: built with extra warnings (see CMakeLists.txt).
#include <multifrost.hpp>
#include <multifrost.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace {

struct Everything {
  bool b;
  std::int8_t i8;
  std::uint64_t u64;
  double d;
  float f;
  std::string s;
  mf::Bytes bytes;
  std::vector<int> v;
  std::map<std::string, std::optional<double>> m;
  std::unordered_map<std::string, int> u;
  std::tuple<int, std::string> t;
  std::pair<bool, mf::Json> p;
};

[[maybe_unused]] void instantiate(mf::Parent& parent, mf::Worker& worker, const Everything& e) {
  parent.call<bool>("f", e.b, e.i8, e.u64, e.d, e.f, e.s, e.bytes, e.v, e.m, e.u, e.t, e.p, "text", nullptr);
  parent.call<std::int8_t>("f");
  parent.call<std::uint64_t>("f");
  parent.call<double>("f");
  parent.call<float>("f");
  parent.call<std::string>("f");
  parent.call<mf::Bytes>("f");
  parent.call<std::vector<int>>("f");
  parent.call<std::map<std::string, std::optional<double>>>("f");
  parent.call<std::unordered_map<std::string, int>>("f");
  parent.call<std::tuple<int, std::string>>("f");
  parent.call<std::pair<bool, mf::Json>>("f");
  parent.call<msgpack::object_handle>("f");
  parent.call("f");
  (void)parent.call_async<std::vector<std::string>>("f", 1);
  (void)parent.call_async("f");
  worker.handle("a", [](bool, std::int8_t, std::uint64_t, double, float, const std::string&, std::string_view,
                        const mf::Bytes&, std::vector<int>, const std::map<std::string, std::optional<double>>&,
                        std::unordered_map<std::string, int>, std::tuple<int, std::string>, std::pair<bool, mf::Json>,
                        const msgpack::object&, std::optional<int>) { return Everything{}.m; });
  worker.handle("b", [](int x) noexcept { return x; });
  worker.handle("refs", [](std::string& s, std::vector<int>&& v, const std::vector<bool>& bits) {
    s += std::to_string(v.size() + bits.size());
    return s;
  });
  worker.handle("mutable", [n = 0](int by) mutable { return n += by; });
  parent.call<std::vector<bool>>("f", std::vector<bool>{true, false}, mf::Json{"[]"});
  worker.handle("c", [] {});
  worker.handle("d", +[](int x) { return x; });
  std::function<std::string(const std::string&)> fn = [](const std::string& s) { return s; };
  worker.handle("e", fn);
  worker.handle_json("j", [](std::string_view args) { return std::string(args); });
  mf::Call<int> started = parent.call_start<int>("f", 1);
  started.cancel();
  parent.cancel(started.id());
  (void)started.wait_for(std::chrono::milliseconds(1));
  (void)started.get();
  mf::Call<void> nothing = parent.call_start_for(std::chrono::milliseconds(5), "f");
  mf::Call<void> moved = std::move(nothing);
  moved.wait();
  worker.handle("ctx", [](mf::Context& ctx, int n) {
    ctx.on_cancel([] {});
    return ctx.wait_for(std::chrono::milliseconds(n)) || ctx.cancelled();
  });
  worker.handle("cctx", [](const mf::Context& ctx) { return ctx.cancelled(); });
  worker.handle("wait", [](mf::Context& ctx) { ctx.wait(); });
  worker.handle("yield", [](mf::Context& ctx, int n) {
    ctx.yield(n);
    ctx.yield(std::string("text"));
    ctx.yield(Everything{}.m);
    return n;
  });
  for (const int& x : parent.stream<int>("s", 1, "a")) (void)x;
  mf::Stream<msgpack::object_handle> raw = parent.stream_for<msgpack::object_handle>(mf::no_timeout, "s");
  mf::Stream<msgpack::object_handle> raw2;
  raw2 = std::move(raw);
  (void)raw2.next();
  for (auto it = raw2.begin(); it != raw2.end(); ++it) (void)it->get();
  raw2.close();
  mf::Stream<std::vector<std::string>> strings = parent.stream<std::vector<std::string>>("s");
  (void)strings.ended();
  (void)strings.is_open();
  (void)strings.native_handle();
  (void)mf::to_json(e.v);
  (void)mf::from_json<std::vector<int>>(mf::Json{"[]"});
}

}  // namespace
