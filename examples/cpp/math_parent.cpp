// Spawns a math worker (any implementation: C, C++, Python, ...), calls each
// of its functions and prints the results. With --workers N, a pool of N
// copies of the worker, and a line naming their pids.
// Usage: math_parent_cpp [--no-private-link] [--workers N] <worker-program> [args...]
//        math_parent_cpp --connect <service-id-or-tcp-endpoint>
#include <multifrost.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const bool connect = argc == 3 && std::string(argv[1]) == "--connect";
  mf::Options options;
  for (bool more = !connect; more && argc > 1;) {
    const std::string flag = argv[1];
    if (flag == "--no-private-link") {
      options.private_link = false;  // every byte over ZeroMQ
      argv++;
      argc--;
    } else if (flag == "--workers" && argc > 2) {
      try {
        // Beyond uint32 stays out of range (the library refuses it and says why).
        options.workers = static_cast<std::uint32_t>(std::min<unsigned long>(std::stoul(argv[2]), UINT32_MAX));
      } catch (const std::exception&) {
        std::cerr << "--workers takes a number, not " << argv[2] << "\n";
        return 2;
      }
      argv += 2;
      argc -= 2;
    } else {
      more = false;
    }
  }
  if (argc < 2) {
    std::cerr << "usage: math_parent_cpp [--no-private-link] [--workers N] <worker-program> [args...]\n"
                 "       math_parent_cpp --connect <service-id-or-tcp-endpoint>\n";
    return 2;
  }
  try {
    // Returns once the worker answered; closed (worker stopped and reaped) at the end of the scope.
    mf::Parent p = connect ? mf::Parent::connect(argv[2], options)
                           : mf::Parent::spawn(argv[1], std::vector<std::string>(argv + 2, argv + argc), options);

    std::cout << "add(1, 2) = " << p.call<std::int64_t>("add", 1, 2) << "\n";
    std::cout << "multiply(6, 7) = " << p.call<std::int64_t>("multiply", 6, 7) << "\n";
    std::cout << "factorial(10) = " << p.call<std::int64_t>("factorial", 10) << "\n";
    try {
      p.call<std::int64_t>("factorial", -1);
      std::cerr << "factorial(-1) unexpectedly succeeded\n";
      return 1;
    } catch (const mf::Error& e) {
      if (e.status() != MF_ERR_REMOTE) throw;
      std::cout << "factorial(-1) failed: " << e.what() << "\n";  // the worker's error text
    }
    std::cout << "echo(\"héllo ✓\") = \"" << p.call<std::string>("echo", "héllo ✓") << "\"\n";
    // The stats JSON's "transport": "link" over the private link, else "zmq".
    const std::string stats = p.stats_json(), key = "\"transport\":\"";
    const std::size_t at = stats.find(key) + key.size();
    std::cout << "transport: " << stats.substr(at, stats.find('"', at) - at) << "\n";
    if (options.workers) {
      // One entry per worker of the pool, each with its pid.
      using Fields = std::map<std::string, mf::Json>;
      auto workers = mf::from_json<std::vector<Fields>>(mf::from_json<Fields>(mf::Json{stats}).at("workers"));
      std::cout << "pool: " << workers.size() << " workers, pids";
      for (Fields& w : workers) std::cout << " " << mf::from_json<std::int64_t>(w.at("pid"));
      std::cout << "\n";
    }
    return 0;
  } catch (const mf::Error& e) {
    std::cerr << "math_parent_cpp: " << e.status_name() << ": " << e.what() << "\n";
    return 1;
  }
}
