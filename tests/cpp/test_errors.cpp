// Failures reach the caller as mf::Error with the right status and text.
#include "support.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
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
  std::string missing = error_of(MF_ERR_REMOTE, [&] { parent.call<int>("no_such_function"); });
  EXPECT_NE(missing.find("not found"), std::string::npos) << missing;
  std::string priv = error_of(MF_ERR_REMOTE, [&] { parent.call<int>("_secret"); });
  EXPECT_NE(priv.find("Cannot call private method"), std::string::npos) << priv;
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

TEST(ErrorsConnect, UnknownServiceIsNotFound) {
  mf::Options options;
  options.connect_timeout = 200ms;
  std::string text = error_of(MF_ERR_NOT_FOUND, [&] { mf::Parent::connect("cpp-no-such-service", options); });
  EXPECT_NE(text.find("cpp-no-such-service"), std::string::npos) << text;
}

}  // namespace
