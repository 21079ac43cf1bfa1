// Spawns a math worker (any implementation: C, C++, Python, ...), calls each
// of its functions and prints the results.
// Usage: math_parent_cpp [--no-private-link] <worker-program> [args...]
//        math_parent_cpp --connect <service-id-or-tcp-endpoint>
#include <multifrost.hpp>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const std::string first = argc > 1 ? argv[1] : "";
  const bool connect = argc == 3 && first == "--connect";
  mf::Options options;
  if (first == "--no-private-link") {
    options.private_link = false;  // every byte over ZeroMQ
    argv++;
    argc--;
  }
  if (argc < 2) {
    std::cerr << "usage: math_parent_cpp [--no-private-link] <worker-program> [args...]\n"
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
    return 0;
  } catch (const mf::Error& e) {
    std::cerr << "math_parent_cpp: " << e.status_name() << ": " << e.what() << "\n";
    return 1;
  }
}
