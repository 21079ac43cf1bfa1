// The C++ wrapper benchmark: what a caller of include/multifrost.hpp sees.
//
// Cases (against build/benches/bench_worker, the same raw-msgpack worker as
// the C API suite):
//   call_seq   p.call<std::int64_t>("add", 1, 2) one after the other   (µs/call)
//
// Every call checks its result; a wrong result or a failed call prints
// "bench_cpp: FAILED: ..." and exits 1. The results are one JSON object on
// stdout (format in benches/README.md); progress goes to stderr.
//
//   bench_cpp [--worker build/benches/bench_worker] [--scale F]
#include <multifrost.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifndef BENCH_WORKER
#define BENCH_WORKER "build/benches/bench_worker"
#endif

namespace {

using clock_type = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "bench_cpp: FAILED: %s\n", msg.c_str());
  std::exit(1);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2.0;
}

double us_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string worker = BENCH_WORKER;
  double scale = 1.0;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--worker") && i + 1 < argc) {
      worker = argv[++i];
    } else if (!std::strcmp(argv[i], "--scale") && i + 1 < argc) {
      scale = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--help")) {
      std::puts("usage: bench_cpp [--worker build/benches/bench_worker] [--scale F]");
      return 0;
    } else {
      std::fprintf(stderr, "bench_cpp: unknown argument %s (try --help)\n", argv[i]);
      return 2;
    }
  }
  if (!(scale > 0)) {
    std::fprintf(stderr, "bench_cpp: --scale must be > 0\n");
    return 2;
  }

  try {
    mf::Parent p = mf::Parent::spawn(worker);
    std::fprintf(stderr, "bench_cpp: call_seq\n");
    const std::size_t warmup = 300;
    const std::size_t n = std::max<std::size_t>(10, static_cast<std::size_t>(5000 * scale + 0.5));
    std::vector<double> lat;
    lat.reserve(n);
    clock_type::time_point start;
    for (std::size_t i = 0; i < warmup + n; i++) {
      if (i == warmup) start = clock_type::now();
      auto t = clock_type::now();
      std::int64_t v = p.call<std::int64_t>("add", 1, 2);
      if (v != 3) fail("add(1, 2) #" + std::to_string(i) + " returned " + std::to_string(v));
      if (i >= warmup) lat.push_back(us_since(t));
    }
    double mean = us_since(start) / static_cast<double>(n);
    p.close();
    std::printf(
        "{\"suite\": \"cpp\", \"metrics\": {"
        "\"call_seq_p50_us\": {\"value\": %.3f, \"unit\": \"us\", \"better\": \"lower\", "
        "\"label\": \"p.call<int64_t> add(1, 2) sequential (median)\"}, "
        "\"call_seq_mean_us\": {\"value\": %.3f, \"unit\": \"us\", \"better\": \"lower\", "
        "\"label\": \"p.call<int64_t> add(1, 2) sequential (mean)\"}}, "
        "\"info\": {\"call_seq_calls\": %zu, \"version\": \"%s\"}}\n",
        median(lat), mean, n, mf_version());
    return 0;
  } catch (const mf::Error& e) {
    fail(std::string(e.status_name()) + ": " + e.what());
  }
}
