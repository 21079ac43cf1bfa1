// A math worker in C++: add, multiply, factorial and echo.
// Started by a parent (spawn mode): serve() reads COMLINK_ZMQ_PORT.
// With one argument, a service id or tcp:// endpoint, it serves in connect mode:
//   ./math_worker_cpp math-service &   then   mf::Parent::connect("math-service")
#include <multifrost.hpp>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace {

std::int64_t add(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw std::overflow_error("result does not fit in 64 bits");
  return r;
}

std::int64_t multiply(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::overflow_error("result does not fit in 64 bits");
  return r;
}

std::int64_t factorial(std::int64_t n) {
  // The caller sees "std::domain_error: factorial of a negative number".
  if (n < 0) throw std::domain_error("factorial of a negative number");
  if (n > 20) throw std::overflow_error("factorial above 20 does not fit in 64 bits");
  std::int64_t r = 1;
  for (std::int64_t i = 2; i <= n; i++) r *= i;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string service = argc > 1 && std::string(argv[1]) != "--worker" ? argv[1] : "";
  try {
    mf::Worker worker(service);  // "" = spawn mode
    worker.handle("add", add);
    worker.handle("multiply", multiply);
    worker.handle("factorial", factorial);
    // Any value back unchanged: a msgpack::object parameter is the raw value.
    worker.handle("echo", [](const msgpack::object& value) { return value; });
    worker.serve();  // until the parent closes us, a shutdown message, SIGINT or SIGTERM
    return 0;
  } catch (const mf::Error& e) {
    std::fprintf(stderr, "math_worker_cpp: %s\n", e.what());
    return 2;
  }
}
