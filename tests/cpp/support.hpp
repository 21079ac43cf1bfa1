// Shared helpers of the C++ tests: a fixture that spawns the C++ test worker,
// assertions on mf::Error, and a wait for observable state.
#pragma once

#include <multifrost.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <typeinfo>

#ifndef CPP_TEST_WORKER
#error "CPP_TEST_WORKER must name the test worker program"
#endif

namespace mft {

/// Spawns a fresh cpp_test_worker for each test.
class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override { parent = mf::Parent::spawn(CPP_TEST_WORKER); }
  void TearDown() override { parent.close(); }

  mf::Parent parent;
};

/// Runs `body`, expects it to throw mf::Error with `status`, returns what().
template <class F>
std::string error_of(mf_status status, F body) {
  try {
    body();
  } catch (const mf::Error& e) {
    EXPECT_EQ(e.status(), status) << "status " << e.status_name() << ": " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no mf::Error thrown (expected " << mf_status_name(status) << ")";
  return {};
}

/// Runs `body`, expects it to throw the mf::Error subclass E (with E's
/// status), returns what().
template <class E, class F>
std::string error_as(F body) {
  try {
    body();
  } catch (const mf::Error& e) {
    EXPECT_EQ(e.status(), E::code) << "status " << e.status_name() << ": " << e.what();
    EXPECT_NE(dynamic_cast<const E*>(&e), nullptr)
        << "thrown as " << typeid(e).name() << ", not as " << typeid(E).name() << ": " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "nothing thrown (expected " << typeid(E).name() << ")";
  return {};
}

/// Polls `ready` every 10 ms for up to 30 s (a hang guard, not a bound).
template <class F>
bool eventually(F ready) {
  for (int i = 0; i < 3000; i++) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return ready();
}

/// The integer value of `"key":<n>` in a flat JSON object, if present.
inline std::optional<long long> json_int(const std::string& json, const std::string& key) {
  std::smatch m;
  if (std::regex_search(json, m, std::regex("\"" + key + "\":\\s*(-?[0-9]+)"))) return std::stoll(m[1]);
  return std::nullopt;
}

}  // namespace mft
