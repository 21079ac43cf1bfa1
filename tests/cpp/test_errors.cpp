// Failures reach the caller as mf::Error with the right status and text.
#include "support.hpp"

#include <unistd.h>

#include <chrono>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mft::error_as;
using mft::error_of;
using mft::WorkerTest;

class Errors : public WorkerTest {};

TEST_F(Errors, HandlerExceptionsBecomeRemoteErrors) {
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("fail"); }), "std::runtime_error: boom");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("fail_invalid", "bad"); }),
            "std::invalid_argument: bad");
  std::string custom = error_of(MF_ERR_REMOTE, [&] { parent.call<int>("fail_custom"); });
  EXPECT_NE(custom.find("CustomFailure: custom"), std::string::npos) << custom;
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("fail_typed"); }), "ValueError: bad value");
  std::string unknown = error_of(MF_ERR_REMOTE, [&] { parent.call<int>("fail_unknown"); });
  EXPECT_EQ(unknown.rfind("Error: unknown exception", 0), 0u) << unknown;
  // The worker keeps serving.
  EXPECT_EQ(parent.call<int>("add", 2, 3), 5);
}

TEST_F(Errors, ErrorCarriesStatusName) {
  try {
    parent.call<int>("fail");
    FAIL() << "no exception";
  } catch (const mf::Error& e) {
    EXPECT_STREQ(e.status_name(), "MF_ERR_REMOTE");
    const std::runtime_error& base = e;  // catchable as std::runtime_error too
    EXPECT_STREQ(base.what(), "std::runtime_error: boom");
  }
}

TEST_F(Errors, UnknownAndPrivateFunctions) {
  EXPECT_EQ(error_as<mf::NoSuchFunctionError>([&] { parent.call<int>("no_such_function"); }),
            "Function 'no_such_function' not found");
  EXPECT_EQ(error_as<mf::NoSuchFunctionError>([&] { parent.call_async<int>("no_such_function").get(); }),
            "Function 'no_such_function' not found");
  EXPECT_EQ(error_as<mf::RemoteError>([&] { parent.call<int>("_secret"); }), "Cannot call private method '_secret'");
}

TEST_F(Errors, TimeoutPerCall) {
  // The answer would take 6 s; a timeout on time takes 150 ms (4 s allows
  // for a busy machine).
  auto start = std::chrono::steady_clock::now();
  std::string text = error_of(MF_ERR_TIMEOUT, [&] { parent.call_for<int>(150ms, "sleep_ms", 6000); });
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, 4s) << "the timeout did not end the call early";
  EXPECT_FALSE(text.empty());
  // A later call is answered normally (the late reply is dropped).
  EXPECT_EQ(parent.call_for<int>(5s, "add", 1, 1), 2);
}

TEST(ErrorsOptions, DefaultTimeoutFromOptions) {
  mf::Options options;
  options.default_timeout = 150ms;
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  auto start = std::chrono::steady_clock::now();
  error_of(MF_ERR_TIMEOUT, [&] { p.call<int>("sleep_ms", 6000); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  error_of(MF_ERR_TIMEOUT, [&] { p.call_json("sleep_ms", "[6000]"); });
}

TEST_F(Errors, ResultTypeMismatchNamesBothTypes) {
  std::string text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<std::string>("add", 1, 2); });
  EXPECT_EQ(text, "result of add: expected string, got msgpack integer (3)");
  EXPECT_THROW(parent.call<std::string>("add", 1, 2), mf::TypeError);

  text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<int>("echo_str", "x"); });
  EXPECT_EQ(text, "result of echo_str: expected int32, got msgpack str (\"x\")");

  text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<std::vector<std::string>>("echo_vec", std::vector<int>{1, 2}); });
  EXPECT_EQ(text, "result of echo_vec[0]: expected string, got msgpack integer (1)");

  text = error_of(MF_ERR_PROTOCOL, [&] {
    parent.call<std::map<std::string, std::string>>("echo_map", std::map<std::string, std::int64_t>{{"k", 1}});
  });
  EXPECT_EQ(text, "result of echo_map[\"k\"]: expected string, got msgpack integer (1)");

  text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<bool>("echo_opt", nullptr); });
  EXPECT_EQ(text, "result of echo_opt: expected bool, got msgpack nil");

  text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<std::int8_t>("echo_int", 300); });
  EXPECT_EQ(text, "result of echo_int: expected int8, got msgpack integer (300), out of range");

  text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<std::uint32_t>("echo_int", -1); });
  EXPECT_EQ(text, "result of echo_int: expected uint32, got msgpack integer (-1), out of range");

  text = error_of(MF_ERR_PROTOCOL, [&] { parent.call<mf::Bytes>("echo_vec", std::vector<int>{}); });
  EXPECT_EQ(text, "result of echo_vec: expected bytes, got msgpack array (0 items)");
  // The parent is fine afterwards.
  EXPECT_EQ(parent.call<int>("add", 1, 2), 3);
}

TEST_F(Errors, WrongArgumentCountNamesFunctionAndTypes) {
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("add", 1); }),
            "TypeError: add(int32, int32): takes 2 arguments, got 1");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("add", 1, 2, 3); }),
            "TypeError: add(int32, int32): takes 2 arguments, got 3");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("add"); }),
            "TypeError: add(int32, int32): takes 2 arguments, got 0");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<std::string>("greet"); }),
            "TypeError: greet(string, optional<string>): takes 1 to 2 arguments, got 0");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call("nothing", 1); }),
            "TypeError: nothing(): takes 0 arguments, got 1");
  EXPECT_EQ(parent.call<int>("add", 20, 22), 42);  // still serving
}

TEST_F(Errors, WrongArgumentTypesNameFunctionAndTypes) {
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("add", 1, "x"); }),
            "TypeError: add(int32, int32): argument 2: expected int32, got msgpack str (\"x\")");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("add", 1.5, 2); }),
            "TypeError: add(int32, int32): argument 1: expected int32, got msgpack float64 (1.5)");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call<int>("add", 1, 5000000000LL); }),
            "TypeError: add(int32, int32): argument 2: expected int32, got msgpack integer (5000000000), out of range");
  EXPECT_EQ(error_of(MF_ERR_REMOTE,
                     [&] { parent.call("echo_map", std::map<std::string, std::string>{{"a", "b"}}); }),
            "TypeError: echo_map(map<string, int64>): argument 1[\"a\"]: expected int64, got msgpack str (\"b\")");
  EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { parent.call_json("echo_vec", "[[1, null]]"); }),
            "TypeError: echo_vec(vector<int32>): argument 1[1]: expected int32, got msgpack nil");
  EXPECT_EQ(parent.call<int>("add", 20, 22), 42);  // still serving
}

TEST_F(Errors, BadJsonFromAHandlerIsARemoteError) {
  std::string text = error_of(MF_ERR_REMOTE, [&] { parent.call<mf::Json>("bad_json"); });
  EXPECT_NE(text.find("invalid JSON"), std::string::npos) << text;
}

TEST_F(Errors, BadJsonArgumentsAreRefusedLocally) {
  error_of(MF_ERR_INVALID_ARGUMENT, [&] { parent.call_json("add", "[1,"); });
  error_of(MF_ERR_INVALID_ARGUMENT, [&] { parent.call<int>("echo_json", mf::Json{"{bad"}); });
  EXPECT_EQ(parent.call_json("add", "[1, 2]"), "3");
}

TEST(ErrorsSpawn, MissingProgramIsAnIoError) {
  std::string text = error_of(MF_ERR_IO, [] { mf::Parent::spawn("/nonexistent/cpp-worker"); });
  EXPECT_NE(text.find("/nonexistent/cpp-worker"), std::string::npos) << text;
}

TEST(ErrorsSpawn, RefusedOptionsNameTheField) {
  mf::Options options;
  options.default_timeout = 0ms;
  std::string text = error_of(MF_ERR_INVALID_ARGUMENT, [&] { mf::Parent::spawn(CPP_TEST_WORKER, {}, options); });
  EXPECT_EQ(text.rfind("Options::default_timeout: ", 0), 0u) << text;

  mf::Options empty_ns;
  empty_ns.ns = "";
  text = error_of(MF_ERR_INVALID_ARGUMENT, [&] { mf::Parent::spawn(CPP_TEST_WORKER, {}, empty_ns); });
  EXPECT_EQ(text.rfind("Options::ns: ", 0), 0u) << text;
}

// Each status is thrown as its own class, derived from mf::Error.
template <class E>
void expect_thrown_as(mf_status status, const char* name) {
  std::string text = error_as<E>([&] { mf::throw_error(status, "text of " + std::string(name)); });
  EXPECT_EQ(text, "text of " + std::string(name));
  EXPECT_STREQ(mf_status_name(E::code), name);
  static_assert(std::is_base_of_v<mf::Error, E>);
}

TEST(ErrorsClasses, EveryStatusHasItsClass) {
  expect_thrown_as<mf::InvalidArgumentError>(MF_ERR_INVALID_ARGUMENT, "MF_ERR_INVALID_ARGUMENT");
  expect_thrown_as<mf::TimeoutError>(MF_ERR_TIMEOUT, "MF_ERR_TIMEOUT");
  expect_thrown_as<mf::RemoteError>(MF_ERR_REMOTE, "MF_ERR_REMOTE");
  expect_thrown_as<mf::CircuitOpenError>(MF_ERR_CIRCUIT_OPEN, "MF_ERR_CIRCUIT_OPEN");
  expect_thrown_as<mf::WorkerExitedError>(MF_ERR_WORKER_EXITED, "MF_ERR_WORKER_EXITED");
  expect_thrown_as<mf::NotFoundError>(MF_ERR_NOT_FOUND, "MF_ERR_NOT_FOUND");
  expect_thrown_as<mf::AlreadyRunningError>(MF_ERR_ALREADY_RUNNING, "MF_ERR_ALREADY_RUNNING");
  expect_thrown_as<mf::ProtocolError>(MF_ERR_PROTOCOL, "MF_ERR_PROTOCOL");
  expect_thrown_as<mf::IoError>(MF_ERR_IO, "MF_ERR_IO");
  expect_thrown_as<mf::ClosedError>(MF_ERR_CLOSED, "MF_ERR_CLOSED");
  expect_thrown_as<mf::PanicError>(MF_ERR_PANIC, "MF_ERR_PANIC");
  expect_thrown_as<mf::CancelledError>(MF_ERR_CANCELLED, "MF_ERR_CANCELLED");
  expect_thrown_as<mf::NoSuchFunctionError>(MF_ERR_NO_SUCH_FUNCTION, "MF_ERR_NO_SUCH_FUNCTION");
  // A status newer than this header (the next one, 14) is still an mf::Error.
  const auto next = static_cast<mf_status>(MF_ERR_NO_SUCH_FUNCTION + 1);
  std::string text = error_of(next, [&] { mf::throw_error(next, "new"); });
  EXPECT_EQ(text, "new");
}

// The classes as real calls produce them (MF_ERR_PANIC has no real cause).
TEST(ErrorsClasses, RealCallsThrowTheirStatusClass) {
  mf::Options options;
  options.breaker = mf::Breaker{1, 60000ms, true};  // one error of the worker's opens it
  mf::Parent p = mf::Parent::spawn(CPP_TEST_WORKER, {}, options);
  EXPECT_EQ(error_as<mf::InvalidArgumentError>([&] { p.call_json("add", "[1,"); }).rfind("invalid JSON", 0), 0u);
  EXPECT_FALSE(error_as<mf::TimeoutError>([&] { p.call_for<int>(100ms, "sleep_ms", 6000); }).empty());
  EXPECT_EQ(error_as<mf::ProtocolError>([&] { p.call<std::string>("add", 1, 2); }),
            "result of add: expected string, got msgpack integer (3)");
  mf::Call<int> cancelled = p.call_start_for<int>(60s, "sleep_ms", 6000);
  cancelled.cancel();
  EXPECT_EQ(error_as<mf::CancelledError>([&] { cancelled.get(); }), "call to 'sleep_ms' was cancelled");
  // A missing function is the caller's mistake, never a breaker failure...
  EXPECT_EQ(error_as<mf::NoSuchFunctionError>([&] { p.call<int>("nope"); }), "Function 'nope' not found");
  EXPECT_EQ(p.call<int>("add", 1, 2), 3);
  // ...while, with remote errors counted, a handler's error opens it.
  EXPECT_EQ(error_as<mf::RemoteError>([&] { p.call<int>("fail"); }), "std::runtime_error: boom");
  EXPECT_FALSE(error_as<mf::CircuitOpenError>([&] { p.call<int>("add", 1, 2); }).empty());
  p.close();
  EXPECT_EQ(error_as<mf::ClosedError>([&] { p.call<int>("add", 1, 2); }), "the parent is closed");

  mf::Parent plain = mf::Parent::spawn(CPP_TEST_WORKER);
  EXPECT_EQ(error_as<mf::RemoteError>([&] { plain.call<int>("fail"); }), "std::runtime_error: boom");
  mf::Parent crashing = mf::Parent::spawn(CPP_TEST_WORKER);
  std::string exited = error_as<mf::WorkerExitedError>([&] { crashing.call("crash"); });
  EXPECT_NE(exited.find("SIGABRT"), std::string::npos) << exited;

  EXPECT_NE(error_as<mf::IoError>([] { mf::Parent::spawn("/nonexistent/cpp-worker"); }).find("/nonexistent"),
            std::string::npos);
  mf::Options quick;
  quick.connect_timeout = 200ms;
  EXPECT_NE(error_as<mf::NotFoundError>([&] { mf::Parent::connect("cpp-no-such-service", quick); })
                .find("cpp-no-such-service"),
            std::string::npos);
  std::string id = "cpp-test-twice-" + std::to_string(::getpid());
  mf::Worker first(id);
  EXPECT_EQ(error_as<mf::AlreadyRunningError>([&] { mf::Worker second(id); }).rfind("service '" + id + "' already running", 0),
            0u);
}

TEST(ErrorsConnect, UnknownServiceIsNotFound) {
  mf::Options options;
  options.connect_timeout = 200ms;
  std::string text = error_of(MF_ERR_NOT_FOUND, [&] { mf::Parent::connect("cpp-no-such-service", options); });
  EXPECT_NE(text.find("cpp-no-such-service"), std::string::npos) << text;
}

}  // namespace
