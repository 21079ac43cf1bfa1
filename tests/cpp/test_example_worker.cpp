// The example worker (examples/cpp/math_worker.cpp) in connect mode: started
// with a service id, found through the registry, stopped by SIGTERM.
#include "support.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>

#ifndef MATH_WORKER_CPP
#error "MATH_WORKER_CPP must name the example worker"
#endif

extern char** environ;

namespace {

using namespace std::chrono_literals;
using mft::error_of;

TEST(ExampleWorker, ConnectModeWithAServiceId) {
  std::string id = "cpp-example-" + std::to_string(::getpid());
  char program[] = MATH_WORKER_CPP;
  char* argv[] = {program, id.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, program, nullptr, nullptr, argv, environ), 0);

  {
    mf::Options options;
    options.connect_timeout = 10000ms;  // the worker may still be starting
    mf::Parent p = mf::Parent::connect(id, options);
    EXPECT_EQ(p.call<std::int64_t>("add", 40, 2), 42);
    EXPECT_EQ(p.call<std::int64_t>("factorial", 5), 120);
    std::string text = error_of(MF_ERR_REMOTE, [&] { p.call<std::int64_t>("factorial", -1); });
    EXPECT_EQ(text, "std::domain_error: factorial of a negative number");
    EXPECT_EQ(error_of(MF_ERR_REMOTE, [&] { p.call<std::int64_t>("add", 1); }),
              "TypeError: add(int64, int64): takes 2 arguments, got 1");
    EXPECT_EQ(p.call<mf::Json>("echo", mf::Json{R"({"k":[1,"✓",null,2.0]})"}).text, R"({"k":[1,"✓",null,2.0]})");
  }

  // A second worker with a live id (of another process) is refused.
  std::string text = error_of(MF_ERR_ALREADY_RUNNING, [&] { mf::Worker second(id); });
  EXPECT_NE(text.find("service '" + id + "' already running (pid " + std::to_string(pid)), std::string::npos) << text;

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;

  // Its registry entry went away with it.
  mf::Options quick;
  quick.connect_timeout = 300ms;
  error_of(MF_ERR_NOT_FOUND, [&] { mf::Parent::connect(id, quick); });
}

}  // namespace
