/*
 * multifrost.hpp — the C++17 interface to libmultifrost.
 *
 * Header-only RAII over the C API in multifrost.h: every spawn/connect,
 * heartbeat, breaker, restart and registry decision stays in the library;
 * this file only turns C++ values into MessagePack (with msgpack-cxx), C
 * handles into move-only objects and statuses into exceptions.
 *
 *   mf::Parent p = mf::Parent::spawn("./math_worker");
 *   int sum = p.call<int>("add", 1, 2);                       // 3
 *
 *   mf::Worker w;                                             // spawn mode
 *   w.handle("add", [](int a, int b) { return a + b; });
 *   w.serve();
 *
 *   mf::Call<int> c = p.call_start<int>("crunch", 1000000);  // cancellable
 *   c.cancel();                                               // c.get() throws mf::CancelledError
 *   w.handle("crunch", [](mf::Context& ctx, int n) {          // the handler sees it
 *     int i = 0;
 *     while (i < n && !ctx.cancelled()) i++;
 *     return i;
 *   });
 *
 *   for (int x : p.stream<int>("count", 5)) use(x);            // a stream: 0 1 2 3 4
 *   w.handle("count", [](mf::Context& ctx, int n) {           // the handler yields
 *     for (int i = 0; i < n; i++) ctx.yield(i);                // throws mf::CancelledError
 *   });                                                        // once the caller closed it
 *
 * Errors: every failure throws a subclass of mf::Error named after its
 * status (mf::TimeoutError, mf::RemoteError, mf::CancelledError,
 * mf::NoSuchFunctionError, …); status() is the library's mf_status and
 * what() the library's text (for MF_ERR_REMOTE: the worker's error text,
 * e.g. "ValueError: factorial of a negative number").
 *
 * Values (arguments, results, handler parameters and returns):
 *
 *   C++                                  msgpack
 *   bool                                 bool
 *   any integer type (int8..uint64)      integer (range-checked when read)
 *   float, double                        float32, float64, also when integral
 *                                        (integers are accepted when reading)
 *   std::string (std::string_view,       str
 *     const char* when writing)
 *   mf::Bytes (std::vector<std::byte>)   bin
 *   std::vector<T>                       array
 *   std::map / std::unordered_map<K, V>  map
 *   std::optional<T>                     nil or T
 *   std::tuple<T...>, std::pair<A, B>    array of that length
 *   std::nullptr_t                       nil
 *   mf::Json                             any value, as JSON text (the escape hatch)
 *   msgpack::object                      any value, raw (handler parameters and
 *                                        returns only: it points into the call's
 *                                        buffer); msgpack::object_handle as a result
 *
 * Needs msgpack-cxx (header-only; Debian/Ubuntu: libmsgpack-cxx-dev), with or
 * without MSGPACK_NO_BOOST.
 */
#ifndef MULTIFROST_HPP
#define MULTIFROST_HPP

#include <multifrost.h>

#include <msgpack.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#if __has_include(<charconv>)
#include <charconv>
#endif
#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define MF_HPP_HAVE_CXXABI 1
#endif

namespace mf {

// ---------------------------------------------------------------------------
// Errors

/// Every failure of this API. status() is the library's mf_status; what() is
/// the library's error text, read on the failing thread right after the
/// failing call (for MF_ERR_REMOTE exactly the worker's text, e.g.
/// "ValueError: factorial of a negative number"). What is thrown is always
/// the subclass named after its status (mf::TimeoutError for MF_ERR_TIMEOUT,
/// mf::CancelledError for MF_ERR_CANCELLED, …), so a caller catches one kind
/// of failure by class, or every failure as mf::Error.
class Error : public std::runtime_error {
 public:
  Error(mf_status status, const std::string& message) : std::runtime_error(message), status_(status) {}

  /// The library status (never MF_OK).
  mf_status status() const noexcept { return status_; }

  /// The status as text, e.g. "MF_ERR_TIMEOUT".
  const char* status_name() const noexcept { return mf_status_name(status_); }

 private:
  mf_status status_;
};

/// The mf::Error subclass of one status; `code` is that status.
template <mf_status S>
class StatusError : public Error {
 public:
  static constexpr mf_status code = S;
  explicit StatusError(const std::string& message) : Error(S, message) {}
};

/// A NULL pointer, bad UTF-8 or JSON, or a value out of range (e.g. an option).
class InvalidArgumentError : public StatusError<MF_ERR_INVALID_ARGUMENT> {
 public:
  using StatusError::StatusError;
};
/// The call (or the wait at spawn/connect) ran out of time.
class TimeoutError : public StatusError<MF_ERR_TIMEOUT> {
 public:
  using StatusError::StatusError;
};
/// The worker's handler failed; what() is its text, e.g. "ValueError: bad value".
class RemoteError : public StatusError<MF_ERR_REMOTE> {
 public:
  using StatusError::StatusError;
};
/// The circuit breaker is open: the call was refused without being sent.
class CircuitOpenError : public StatusError<MF_ERR_CIRCUIT_OPEN> {
 public:
  using StatusError::StatusError;
};
/// The spawned worker exited or was stopped; what() says why.
class WorkerExitedError : public StatusError<MF_ERR_WORKER_EXITED> {
 public:
  using StatusError::StatusError;
};
/// The service id is not in the registry.
class NotFoundError : public StatusError<MF_ERR_NOT_FOUND> {
 public:
  using StatusError::StatusError;
};
/// A worker with this service id is already running.
class AlreadyRunningError : public StatusError<MF_ERR_ALREADY_RUNNING> {
 public:
  using StatusError::StatusError;
};
/// The peer broke the protocol, or a value could not be read (see mf::TypeError).
class ProtocolError : public StatusError<MF_ERR_PROTOCOL> {
 public:
  using StatusError::StatusError;
};
/// An operating-system or socket failure, e.g. a program that cannot be started.
class IoError : public StatusError<MF_ERR_IO> {
 public:
  using StatusError::StatusError;
};
/// The parent or worker was closed (also: calls in flight when it was).
class ClosedError : public StatusError<MF_ERR_CLOSED> {
 public:
  using StatusError::StatusError;
};
/// An internal error caught at the C boundary; the library stays usable.
class PanicError : public StatusError<MF_ERR_PANIC> {
 public:
  using StatusError::StatusError;
};
/// The caller cancelled the call (mf::Call::cancel, Parent::cancel), e.g.
/// "call to 'sleep_ms' was cancelled".
class CancelledError : public StatusError<MF_ERR_CANCELLED> {
 public:
  using StatusError::StatusError;
};
/// The worker has no function of that name: "Function 'nope' not found".
class NoSuchFunctionError : public StatusError<MF_ERR_NO_SUCH_FUNCTION> {
 public:
  using StatusError::StatusError;
};

/// A value that does not have the C++ type it is read as (a call's result,
/// or a JSON conversion). status() is MF_ERR_PROTOCOL; what() names the
/// place, the expected C++ type and the actual msgpack type, e.g.
/// "result of add: expected string, got msgpack integer (3)".
class TypeError : public ProtocolError {
 public:
  explicit TypeError(const std::string& message) : ProtocolError(message) {}
};

/// Throws the mf::Error subclass of `status` (plain mf::Error for a status
/// this header does not know) with `message`.
[[noreturn]] inline void throw_error(mf_status status, const std::string& message) {
  switch (status) {
    case MF_ERR_INVALID_ARGUMENT: throw InvalidArgumentError(message);
    case MF_ERR_TIMEOUT: throw TimeoutError(message);
    case MF_ERR_REMOTE: throw RemoteError(message);
    case MF_ERR_CIRCUIT_OPEN: throw CircuitOpenError(message);
    case MF_ERR_WORKER_EXITED: throw WorkerExitedError(message);
    case MF_ERR_NOT_FOUND: throw NotFoundError(message);
    case MF_ERR_ALREADY_RUNNING: throw AlreadyRunningError(message);
    case MF_ERR_PROTOCOL: throw ProtocolError(message);
    case MF_ERR_IO: throw IoError(message);
    case MF_ERR_CLOSED: throw ClosedError(message);
    case MF_ERR_PANIC: throw PanicError(message);
    case MF_ERR_CANCELLED: throw CancelledError(message);
    case MF_ERR_NO_SUCH_FUNCTION: throw NoSuchFunctionError(message);
    case MF_OK: break;
  }
  throw Error(status, message);
}

/// Throw this from a handler to choose the error type the caller sees:
/// HandlerError("ValueError", "bad input") reaches the caller as
/// "ValueError: bad input" (the convention of other implementations).
/// Any other exception e reaches it as "<demangled type of e>: e.what()",
/// e.g. "std::invalid_argument: bad input".
class HandlerError : public std::runtime_error {
 public:
  HandlerError(std::string type, const std::string& message)
      : std::runtime_error(message), type_(std::move(type)) {}

  /// The error type shown before the colon.
  const std::string& type() const noexcept { return type_; }

 private:
  std::string type_;
};

// ---------------------------------------------------------------------------
// A handler's view of its call

namespace detail {
struct ContextOf;
}

/// What a handler learns about its call beyond the arguments: whether the
/// caller cancelled it (mf::Call::cancel, or its timeout, which cancels it
/// too). A handler takes it by declaring `mf::Context&` as its first
/// parameter; callers pass only the other arguments:
///
///   w.handle("crunch", [](mf::Context& ctx, int n) {
///     for (int i = 0; i < n && !ctx.cancelled(); i++) step(i);
///     return n;
///   });
///
/// A cancelled handler should stop early; whatever it then returns or
/// throws is dropped by the parent, whose call has already ended with
/// mf::CancelledError. A spawned worker whose handler runs on past the
/// parent's Options::cancel_grace is stopped (and restarted with
/// auto-restart). Valid only while the handler runs; usable from any thread
/// until then.
class Context {
 public:
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  /// Whether the caller cancelled this call.
  bool cancelled() const noexcept { return mf_reply_cancelled(reply_); }

  /// Waits until the call is cancelled or `timeout` has passed, whichever
  /// comes first; whether it was cancelled. A cooperative sleep.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    hook();
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait_for(lock, timeout, [&] { return cancelled_; });
    return cancelled_;
  }

  /// Waits until the call is cancelled (only a cancel or the call's timeout
  /// ends it: give such a call a timeout).
  void wait() {
    hook();
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return cancelled_; });
  }

  /// Sends `value` as the next item of the stream the caller reads
  /// (Parent::stream), encoded as a result is; the handler's return value
  /// (or exception) then ends the stream. Waits while the caller already
  /// has all the items it may be sent ahead (Options::stream_credit).
  /// Throws mf::CancelledError once the caller closed the stream or
  /// cancelled the call: let it leave the handler (the caller no longer
  /// listens to the answer) or catch it to clean up, and return. A caller
  /// that asked for no stream (Parent::call) gets the yielded items as one
  /// array instead of the return value. From the handler's own thread.
  template <class T>
  void yield(const T& value);

  /// Runs `fn` once when the call is cancelled: at once on this thread if it
  /// already is, otherwise on the worker's driver thread when the cancel
  /// arrives, and never once the handler has returned. It is the place to
  /// wake whatever the handler waits on (close a socket, notify a condition
  /// variable); it must return quickly (the worker reads no message while it
  /// runs) and must not call this Context. Exceptions from it are dropped.
  /// A later on_cancel replaces the function.
  void on_cancel(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(m_);
      if (!cancelled_) {
        on_cancel_ = std::move(fn);
        fn = nullptr;
      }
    }
    hook();
    if (fn) run(fn);
  }

 private:
  friend struct detail::ContextOf;

  explicit Context(mf_reply* reply) noexcept : reply_(reply) {}

  /// Asks the library for the cancel, once (it runs on_cancelled at once
  /// when the call is cancelled already, so never under m_).
  void hook() {
    std::call_once(hooked_, [this] { mf_reply_on_cancel(reply_, &Context::on_cancelled, this); });
  }

  static void run(const std::function<void()>& fn) noexcept {
    try {
      fn();
    } catch (...) {
    }
  }

  /// The library's cancel callback. It never runs once the reply is answered
  /// and an answer waits for it, so this Context, which lives until its
  /// reply is answered, is alive while it runs.
  static void on_cancelled(void* user) noexcept {
    auto* self = static_cast<Context*>(user);
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(self->m_);
      self->cancelled_ = true;
      fn.swap(self->on_cancel_);
    }
    self->cv_.notify_all();
    if (fn) run(fn);
  }

  mf_reply* reply_;
  std::once_flag hooked_;
  std::mutex m_;
  std::condition_variable cv_;
  bool cancelled_ = false;               // the hook ran (guarded by m_)
  std::function<void()> on_cancel_;      // guarded by m_
};

// ---------------------------------------------------------------------------
// Value types of the escape hatches

/// JSON text standing for any value. As an argument or return value it is
/// converted to msgpack; as a result or handler parameter it receives the
/// value as JSON text. The mapping is the library's (see mf_call_json):
/// integers exact over int64 ∪ uint64 (larger ones are refused), other
/// numbers float64, bin → base64 string, NaN/±Infinity → null, non-string map
/// keys → their JSON text, ext → refused. Bad JSON throws mf::Error with
/// MF_ERR_INVALID_ARGUMENT.
struct Json {
  std::string text;

  friend bool operator==(const Json& a, const Json& b) { return a.text == b.text; }
  friend bool operator!=(const Json& a, const Json& b) { return a.text != b.text; }
};

/// Bytes, carried as msgpack bin.
using Bytes = std::vector<std::byte>;

/// Pass as a timeout to use the parent's default (Options::default_timeout).
inline constexpr std::chrono::milliseconds default_timeout{0};
/// Pass as a timeout to wait without a limit.
inline constexpr std::chrono::milliseconds no_timeout{-1};

/// The library version, "MAJOR.MINOR.PATCH".
inline const char* version() noexcept { return mf_version(); }

// ---------------------------------------------------------------------------
// Options

/// Heartbeat settings (see mf_options_set_heartbeat).
struct Heartbeat {
  std::chrono::milliseconds interval{5000};  ///< 0 = no heartbeats
  std::chrono::milliseconds timeout{3000};   ///< wait for each echo
  std::uint32_t max_misses = 3;              ///< misses in a row that count as one failure

  /// No heartbeats at all.
  static Heartbeat off() { return Heartbeat{std::chrono::milliseconds{0}, std::chrono::milliseconds{3000}, 3}; }
};

/// Circuit-breaker settings (see mf_options_set_breaker).
struct Breaker {
  std::uint32_t threshold = 5;                ///< consecutive failures that open it
  std::chrono::milliseconds cooldown{5000};  ///< open → one probe call after this
  bool counts_remote_errors = false;          ///< whether handler errors are failures
};

/// Settings of a parent; every field left empty keeps the library default
/// (shown in brackets). Applied through mf_options_set_*; a value the library
/// refuses makes spawn/connect throw mf::Error(MF_ERR_INVALID_ARGUMENT) naming
/// the field.
struct Options {
  std::optional<std::chrono::milliseconds> default_timeout;  ///< calls with timeout 0 [30 s]
  std::optional<std::string> ns;                  ///< namespace sent with every call ["default"]
  std::optional<Heartbeat> heartbeat;             ///< [5000 / 3000 / 3]
  std::optional<Breaker> breaker;                 ///< [5 failures / 5000 ms / remote errors not counted]
  std::optional<std::uint32_t> auto_restart;      ///< restarts of an exited spawned worker [0]
  std::optional<std::chrono::milliseconds> start_timeout;    ///< spawn's wait for the first answer [10 s]
  std::optional<std::chrono::milliseconds> connect_timeout;  ///< connect's wait for the service [5 s]
  std::optional<std::chrono::milliseconds> shutdown_grace;   ///< SIGTERM → SIGKILL on close [2 s]
  std::optional<std::string> name;                ///< the worker's name in logs [program file name]
  std::optional<std::string> bind_host;           ///< spawn-mode interface ["127.0.0.1"]
  std::optional<std::int64_t> max_message_size;   ///< bytes accepted from the worker [64 MiB]
  std::optional<bool> private_link;               ///< offer a spawned worker the private link [true]
  /// How long the handler of a cancelled or timed-out call may run on before
  /// its spawned worker is stopped (and restarted with auto_restart); 0 = never [2 s]
  std::optional<std::chrono::milliseconds> cancel_grace;
  /// How many items of a stream (Parent::stream) the worker may send ahead
  /// of those taken; it then waits in mf::Context::yield [16]
  std::optional<std::uint32_t> stream_credit;
  /// How many copies of the program spawn() runs, 1..=256: a pool behind
  /// this one Parent. Every call form goes to the worker with the fewest
  /// calls in flight; each worker is supervised on its own (a crash fails
  /// only the calls that were in it; auto_restart restarts it); the breaker
  /// judges the pool as a whole. connect() refuses more than 1 [1]
  std::optional<std::uint32_t> workers;
  /// After this many calls a spawned worker is recycled: it takes no new
  /// call, its calls in flight finish, and a new process replaces it; no
  /// call fails for it [0 = never]
  std::optional<std::uint64_t> max_calls_per_worker;
};

// ---------------------------------------------------------------------------
// Implementation details (not part of the API)

namespace detail {

/// msgpack-cxx's packer, plus floats that stay floats: msgpack-cxx 4.x
/// writes an integral double (2.0, -0.0) as an integer, which a peer then
/// reads as an int; float32/float64 below always write the float format.
class Packer : public msgpack::packer<msgpack::sbuffer> {
 public:
  explicit Packer(msgpack::sbuffer& buf) : msgpack::packer<msgpack::sbuffer>(buf), buf_(buf) {}

  void float64(double d) {
    std::uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    char b[9];
    b[0] = static_cast<char>(0xcb);
    for (int i = 0; i < 8; i++) b[1 + i] = static_cast<char>((bits >> (56 - 8 * i)) & 0xff);
    buf_.write(b, sizeof b);
  }

  void float32(float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    char b[5];
    b[0] = static_cast<char>(0xca);
    for (int i = 0; i < 4; i++) b[1 + i] = static_cast<char>((bits >> (24 - 8 * i)) & 0xff);
    buf_.write(b, sizeof b);
  }

 private:
  msgpack::sbuffer& buf_;
};

/// Throws the mf::Error subclass of status `s` (not MF_OK) with the calling
/// thread's mf_last_error(). Must run right after the failing call, on the
/// same thread.
[[noreturn]] inline void throw_last_error(mf_status s, std::string_view prefix = {}) {
  std::string text = mf_last_error();
  if (text.empty()) text = mf_status_name(s);
  if (!prefix.empty()) text = std::string(prefix) + ": " + text;
  throw_error(s, text);
}

inline void check(mf_status s, std::string_view prefix = {}) {
  if (s != MF_OK) throw_last_error(s, prefix);
}

/// A NUL-terminated copy, refusing embedded NULs (C would cut the text there).
inline std::string c_text(std::string_view s, const char* what) {
  if (s.find('\0') != std::string_view::npos)
    throw InvalidArgumentError( std::string(what) + " contains a NUL byte");
  return std::string(s);
}

template <class>
struct always_false : std::false_type {};

/// A length as msgpack writes it (at most 2^32 - 1).
inline std::uint32_t len32(std::size_t n) {
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw InvalidArgumentError( "value too large for msgpack (" + std::to_string(n) + " items or bytes)");
  return static_cast<std::uint32_t>(n);
}

// --- UTF-8 and JSON text ---------------------------------------------------

/// Length of the valid UTF-8 sequence at s[i], or 0 if it is not valid.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n;
  std::uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; k++) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  static const std::uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

inline bool utf8_valid(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// `s` with every invalid UTF-8 byte replaced by U+FFFD (error texts must be UTF-8).
inline std::string utf8_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i += 1;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Appends `s` (valid UTF-8) as a JSON string literal.
inline void append_json_string(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

/// The shortest text that reads back as `d`, always with a fraction or an
/// exponent so it stays a float; NaN and ±Infinity become null.
inline void append_json_double(std::string& out, double d) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[40];
  std::size_t len = 0;
#if defined(__cpp_lib_to_chars)
  len = static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, d).ptr - buf);
#else
  for (int precision = 1; precision <= 17; precision++) {
    len = static_cast<std::size_t>(std::snprintf(buf, sizeof buf, "%.*g", precision, d));
    if (std::strtod(buf, nullptr) == d) break;
  }
#endif
  std::string_view text(buf, len);
  std::size_t e = text.find_first_of("eE");
  if (e == std::string_view::npos) {
    out += text;
    if (text.find('.') == std::string_view::npos) out += ".0";
    return;
  }
  // The exponent as the library writes it: "1.5e-7", "1e+300" (not "1.5e-07").
  std::size_t digits = e + 1;
  out += text.substr(0, digits);
  if (digits < len && (text[digits] == '+' || text[digits] == '-')) out += text[digits++];  // always written
  while (digits + 1 < len && text[digits] == '0') digits++;
  out += text.substr(digits);
}

inline void append_base64(std::string& out, const unsigned char* p, std::size_t n) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < n; i += 3) {
    std::uint32_t v = static_cast<std::uint32_t>(p[i]) << 16;
    if (i + 1 < n) v |= static_cast<std::uint32_t>(p[i + 1]) << 8;
    if (i + 2 < n) v |= p[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
    out += i + 2 < n ? alphabet[v & 63] : '=';
  }
}

/// Nesting refused by the protocol (PROTOCOL.md §7).
inline constexpr int max_depth = 100;

/// One msgpack value as JSON text (the library's mapping, see mf::Json).
inline void append_json(std::string& out, const msgpack::object& o, int depth = 0) {
  if (depth > max_depth) throw TypeError("value nests deeper than 100 levels");
  switch (o.type) {
    case msgpack::type::NIL: out += "null"; break;
    case msgpack::type::BOOLEAN: out += o.via.boolean ? "true" : "false"; break;
    case msgpack::type::POSITIVE_INTEGER: out += std::to_string(o.via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: out += std::to_string(o.via.i64); break;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: append_json_double(out, o.via.f64); break;
    case msgpack::type::STR: {
      std::string_view s(o.via.str.size ? o.via.str.ptr : "", o.via.str.size);
      if (!utf8_valid(s)) throw TypeError("a msgpack str that is not UTF-8 has no JSON form");
      append_json_string(out, s);
      break;
    }
    case msgpack::type::BIN:
      out += '"';
      append_base64(out, reinterpret_cast<const unsigned char*>(o.via.bin.ptr), o.via.bin.size);
      out += '"';
      break;
    case msgpack::type::ARRAY:
      out += '[';
      for (std::uint32_t i = 0; i < o.via.array.size; i++) {
        if (i) out += ',';
        append_json(out, o.via.array.ptr[i], depth + 1);
      }
      out += ']';
      break;
    case msgpack::type::MAP:
      out += '{';
      for (std::uint32_t i = 0; i < o.via.map.size; i++) {
        if (i) out += ',';
        const msgpack::object& key = o.via.map.ptr[i].key;
        if (key.type == msgpack::type::STR) {
          append_json(out, key, depth + 1);
        } else {
          std::string text;
          append_json(text, key, depth + 1);
          append_json_string(out, text);
        }
        out += ':';
        append_json(out, o.via.map.ptr[i].val, depth + 1);
      }
      out += '}';
      break;
    default: throw TypeError("a msgpack ext value has no JSON form");
  }
}

/// Writes a msgpack::object tree as it is (floats stay floats, see Packer).
inline void pack_object(Packer& pk, const msgpack::object& o, int depth = 0) {
  if (depth > max_depth) throw InvalidArgumentError( "value nests deeper than 100 levels");
  switch (o.type) {
    case msgpack::type::NIL: pk.pack_nil(); break;
    case msgpack::type::BOOLEAN: o.via.boolean ? pk.pack_true() : pk.pack_false(); break;
    case msgpack::type::POSITIVE_INTEGER: pk.pack_uint64(o.via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: pk.pack_int64(o.via.i64); break;
    case msgpack::type::FLOAT32: pk.float32(static_cast<float>(o.via.f64)); break;
    case msgpack::type::FLOAT64: pk.float64(o.via.f64); break;
    case msgpack::type::STR:
      pk.pack_str(o.via.str.size);
      if (o.via.str.size) pk.pack_str_body(o.via.str.ptr, o.via.str.size);
      break;
    case msgpack::type::BIN:
      pk.pack_bin(o.via.bin.size);
      if (o.via.bin.size) pk.pack_bin_body(o.via.bin.ptr, o.via.bin.size);
      break;
    case msgpack::type::EXT:
      pk.pack_ext(o.via.ext.size, o.via.ext.type());
      if (o.via.ext.size) pk.pack_ext_body(o.via.ext.data(), o.via.ext.size);
      break;
    case msgpack::type::ARRAY:
      pk.pack_array(o.via.array.size);
      for (std::uint32_t i = 0; i < o.via.array.size; i++) pack_object(pk, o.via.array.ptr[i], depth + 1);
      break;
    case msgpack::type::MAP:
      pk.pack_map(o.via.map.size);
      for (std::uint32_t i = 0; i < o.via.map.size; i++) {
        pack_object(pk, o.via.map.ptr[i].key, depth + 1);
        pack_object(pk, o.via.map.ptr[i].val, depth + 1);
      }
      break;
    default: throw InvalidArgumentError( "unknown msgpack object type");
  }
}

/// Parses JSON text into a msgpack::object whose storage lives in `zone`.
class JsonParser {
 public:
  JsonParser(std::string_view text, msgpack::zone& zone) : s_(text), zone_(zone) {}

  msgpack::object parse() {
    if (!utf8_valid(s_)) fail("the text is not UTF-8");
    msgpack::object o = value(0);
    skip_space();
    if (i_ != s_.size()) fail("trailing characters");
    return o;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw InvalidArgumentError( "invalid JSON: " + what + " at offset " + std::to_string(i_));
  }

  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) i_++;
  }

  bool eat(char c) {
    skip_space();
    if (i_ < s_.size() && s_[i_] == c) {
      i_++;
      return true;
    }
    return false;
  }

  void expect_word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) fail("unexpected character");
    i_ += w.size();
  }

  msgpack::object value(int depth) {
    if (depth > max_depth) fail("nesting exceeds the depth limit of 100");
    skip_space();
    if (i_ >= s_.size()) fail("unexpected end");
    msgpack::object o;
    switch (s_[i_]) {
      case 'n': expect_word("null"); o.type = msgpack::type::NIL; return o;
      case 't': expect_word("true"); return msgpack::object(true);
      case 'f': expect_word("false"); return msgpack::object(false);
      case '"': return text_object(parse_string());
      case '[': {
        i_++;
        std::vector<msgpack::object> items;
        if (!eat(']')) {
          do items.push_back(value(depth + 1));
          while (eat(','));
          if (!eat(']')) fail("expected ',' or ']'");
        }
        o.type = msgpack::type::ARRAY;
        o.via.array.size = static_cast<std::uint32_t>(items.size());
        o.via.array.ptr = items.empty() ? nullptr : allocate<msgpack::object>(items.size());
        std::copy(items.begin(), items.end(), o.via.array.ptr);
        return o;
      }
      case '{': {
        i_++;
        std::vector<msgpack::object_kv> entries;
        if (!eat('}')) {
          do {
            skip_space();
            if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
            msgpack::object_kv kv;
            kv.key = text_object(parse_string());
            if (!eat(':')) fail("expected ':'");
            kv.val = value(depth + 1);
            entries.push_back(kv);
          } while (eat(','));
          if (!eat('}')) fail("expected ',' or '}'");
        }
        o.type = msgpack::type::MAP;
        o.via.map.size = static_cast<std::uint32_t>(entries.size());
        o.via.map.ptr = entries.empty() ? nullptr : allocate<msgpack::object_kv>(entries.size());
        std::copy(entries.begin(), entries.end(), o.via.map.ptr);
        return o;
      }
      default: return number();
    }
  }

  template <class T>
  T* allocate(std::size_t n) {
    return static_cast<T*>(zone_.allocate_align(sizeof(T) * n, MSGPACK_ZONE_ALIGNOF(T)));
  }

  msgpack::object text_object(const std::string& s) {
    msgpack::object o;
    o.type = msgpack::type::STR;
    o.via.str.size = static_cast<std::uint32_t>(s.size());
    char* p = s.empty() ? nullptr : static_cast<char*>(zone_.allocate_no_align(s.size()));
    if (p) std::memcpy(p, s.data(), s.size());
    o.via.str.ptr = p;
    return o;
  }

  unsigned hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }

  std::string parse_string() {
    i_++;  // the opening quote
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated string");
      switch (s_[i_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(i_, 2) != "\\u") fail("lone surrogate in \\u escape");
            i_ += 2;
            std::uint32_t low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("lone surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("lone surrogate in \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  msgpack::object number() {
    std::size_t start = i_;
    auto digits = [&] {
      std::size_t from = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') i_++;
      return i_ - from;
    };
    bool negative = i_ < s_.size() && s_[i_] == '-';
    if (negative) i_++;
    std::size_t int_start = i_;
    std::size_t n = digits();
    if (n == 0) fail("unexpected character");
    if (n > 1 && s_[int_start] == '0') fail("leading zero");
    bool is_float = false;
    if (i_ < s_.size() && s_[i_] == '.') {
      i_++;
      if (digits() == 0) fail("digits expected after '.'");
      is_float = true;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      i_++;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) i_++;
      if (digits() == 0) fail("digits expected in exponent");
      is_float = true;
    }
    std::string text(s_.substr(start, i_ - start));
    msgpack::object o;
    if (!is_float) {
      errno = 0;
      if (negative) {
        long long v = std::strtoll(text.c_str(), nullptr, 10);
        if (errno == 0) return msgpack::object(static_cast<std::int64_t>(v));
      } else {
        unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
        if (errno == 0) return msgpack::object(static_cast<std::uint64_t>(v));
      }
      i_ = start;
      fail("integer " + text + " is outside the 64-bit range msgpack can carry");
    }
    double d = 0;
    bool ok;
#if defined(__cpp_lib_to_chars)
    ok = std::from_chars(text.data(), text.data() + text.size(), d).ec == std::errc();
#else
    errno = 0;
    d = std::strtod(text.c_str(), nullptr);
    ok = errno != ERANGE || d == 0;
#endif
    if (!ok || !std::isfinite(d)) {
      i_ = start;
      fail("number " + text + " is not a finite float64");
    }
    o.type = msgpack::type::FLOAT64;
    o.via.f64 = d;
    return o;
  }

  std::string_view s_;
  msgpack::zone& zone_;
  std::size_t i_ = 0;
};

// --- where a value sits, for error messages ---------------------------------

struct Path {
  std::string_view root;  ///< "result of add", "argument 2"; empty in child nodes
  const Path* parent = nullptr;
  const msgpack::object* key = nullptr;  ///< map key, else an index
  std::size_t index = 0;

  std::string str() const {
    if (!parent) return std::string(root);
    std::string s = parent->str();
    if (!key) return s + "[" + std::to_string(index) + "]";
    if (key->type == msgpack::type::STR)
      return s + "[\"" + utf8_repair(std::string_view(key->via.str.ptr, key->via.str.size)) + "\"]";
    std::string k;
    try {
      append_json(k, *key);
    } catch (...) {
      k = "?";
    }
    return s + "[" + k + "]";
  }
};

inline Path at(const Path& parent, std::size_t index) { return Path{{}, &parent, nullptr, index}; }
inline Path at(const Path& parent, const msgpack::object& key) { return Path{{}, &parent, &key, 0}; }

/// "integer (3)", "str (\"abc\")", "array (2 items)"…: the actual msgpack value.
inline std::string describe(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return o.via.boolean ? "bool (true)" : "bool (false)";
    case msgpack::type::POSITIVE_INTEGER: return "integer (" + std::to_string(o.via.u64) + ")";
    case msgpack::type::NEGATIVE_INTEGER: return "integer (" + std::to_string(o.via.i64) + ")";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: {
      std::string s = o.type == msgpack::type::FLOAT32 ? "float32 (" : "float64 (";
      if (std::isnan(o.via.f64))
        s += "nan";
      else if (std::isinf(o.via.f64))
        s += o.via.f64 > 0 ? "inf" : "-inf";
      else
        append_json_double(s, o.via.f64);
      return s + ")";
    }
    case msgpack::type::STR: {
      std::string_view s(o.via.str.size ? o.via.str.ptr : "", o.via.str.size);
      std::string shown = utf8_repair(s.substr(0, 40));
      return "str (\"" + shown + (s.size() > 40 ? "…" : "") + "\")";
    }
    case msgpack::type::BIN: return "bin (" + std::to_string(o.via.bin.size) + " bytes)";
    case msgpack::type::ARRAY: return "array (" + std::to_string(o.via.array.size) + " items)";
    case msgpack::type::MAP: return "map (" + std::to_string(o.via.map.size) + " entries)";
    default: return "ext (type " + std::to_string(static_cast<int>(o.via.ext.type())) + ")";
  }
}

[[noreturn]] inline void mismatch(const Path& path, const std::string& expected, const msgpack::object& o,
                                  const char* note = nullptr) {
  std::string msg = path.str() + ": expected " + expected + ", got msgpack " + describe(o);
  if (note) msg += note;
  throw TypeError(msg);
}

// --- the codec: one specialisation per C++ type ------------------------------
//
// Codec<T>::name()                 the type as error messages show it
// Codec<T>::pack(pk, value)        writes one msgpack value
// Codec<T>::unpack(object, path)   reads one, or throws TypeError
// Codec<T>::optional               true when a missing argument may be empty

template <class T, class = void>
struct Codec {
  static_assert(always_false<T>::value,
                "multifrost.hpp: no msgpack mapping for this type. Supported: bool, integers, float, double, "
                "std::string (std::string_view, const char*), mf::Bytes, mf::Json, std::vector, std::map, "
                "std::unordered_map, std::optional, std::tuple, std::pair, std::nullptr_t, msgpack::object");
};

template <>
struct Codec<bool> {
  static std::string name() { return "bool"; }
  static void pack(Packer& pk, bool v) { v ? pk.pack_true() : pk.pack_false(); }
  static bool unpack(const msgpack::object& o, const Path& p) {
    if (o.type != msgpack::type::BOOLEAN) mismatch(p, name(), o);
    return o.via.boolean;
  }
};

template <class T>
struct Codec<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static std::string name() { return (std::is_signed_v<T> ? "int" : "uint") + std::to_string(sizeof(T) * 8); }
  static void pack(Packer& pk, T v) {
    if constexpr (std::is_signed_v<T>)
      pk.pack_int64(static_cast<std::int64_t>(v));
    else
      pk.pack_uint64(static_cast<std::uint64_t>(v));
  }
  static T unpack(const msgpack::object& o, const Path& p) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
      if (o.via.u64 <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(o.via.u64);
    } else if (o.type == msgpack::type::NEGATIVE_INTEGER) {
      if constexpr (std::is_signed_v<T>)
        if (o.via.i64 >= static_cast<std::int64_t>(std::numeric_limits<T>::min())) return static_cast<T>(o.via.i64);
    } else {
      mismatch(p, name(), o);
    }
    mismatch(p, name(), o, ", out of range");
  }
};

template <class T>
struct Codec<T, std::enable_if_t<std::is_same_v<T, float> || std::is_same_v<T, double>>> {
  static std::string name() { return std::is_same_v<T, float> ? "float32" : "float64"; }
  static void pack(Packer& pk, T v) {
    if constexpr (std::is_same_v<T, float>)
      pk.float32(v);
    else
      pk.float64(v);
  }
  static T unpack(const msgpack::object& o, const Path& p) {
    switch (o.type) {
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64: return static_cast<T>(o.via.f64);
      case msgpack::type::POSITIVE_INTEGER: return static_cast<T>(o.via.u64);
      case msgpack::type::NEGATIVE_INTEGER: return static_cast<T>(o.via.i64);
      default: mismatch(p, name(), o);
    }
  }
};

inline void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(len32(s.size()));
  if (!s.empty()) pk.pack_str_body(s.data(), len32(s.size()));
}

inline std::string_view str_view(const msgpack::object& o, const Path& p, const std::string& name) {
  if (o.type != msgpack::type::STR) mismatch(p, name, o);
  return o.via.str.size ? std::string_view(o.via.str.ptr, o.via.str.size) : std::string_view();
}

template <>
struct Codec<std::string> {
  static std::string name() { return "string"; }
  static void pack(Packer& pk, const std::string& v) { pack_str(pk, v); }
  static std::string unpack(const msgpack::object& o, const Path& p) { return std::string(str_view(o, p, name())); }
};

/// Reading a string_view points into the message: valid only during a handler.
template <>
struct Codec<std::string_view> {
  static std::string name() { return "string"; }
  static void pack(Packer& pk, std::string_view v) { pack_str(pk, v); }
  static std::string_view unpack(const msgpack::object& o, const Path& p) { return str_view(o, p, name()); }
};

template <class T>
struct Codec<T, std::enable_if_t<std::is_same_v<T, const char*> || std::is_same_v<T, char*>>> {
  static std::string name() { return "string"; }
  static void pack(Packer& pk, const char* v) {
    if (v)
      pack_str(pk, v);
    else
      pk.pack_nil();
  }
};

template <>
struct Codec<std::nullptr_t> {
  static std::string name() { return "nil"; }
  static void pack(Packer& pk, std::nullptr_t) { pk.pack_nil(); }
  static std::nullptr_t unpack(const msgpack::object& o, const Path& p) {
    if (o.type != msgpack::type::NIL) mismatch(p, name(), o);
    return nullptr;
  }
};

template <>
struct Codec<Bytes> {
  static std::string name() { return "bytes"; }
  static void pack(Packer& pk, const Bytes& v) {
    pk.pack_bin(len32(v.size()));
    if (!v.empty()) pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), len32(v.size()));
  }
  static Bytes unpack(const msgpack::object& o, const Path& p) {
    if (o.type != msgpack::type::BIN) mismatch(p, name(), o);
    const auto* b = reinterpret_cast<const std::byte*>(o.via.bin.ptr);
    return o.via.bin.size ? Bytes(b, b + o.via.bin.size) : Bytes();
  }
};

template <>
struct Codec<Json> {
  static std::string name() { return "json"; }
  static void pack(Packer& pk, const Json& v) {
    msgpack::zone zone;
    pack_object(pk, JsonParser(v.text, zone).parse());
  }
  static Json unpack(const msgpack::object& o, const Path& p) {
    Json j;
    try {
      append_json(j.text, o);
    } catch (const Error& e) {
      throw TypeError(p.str() + ": " + e.what());
    }
    return j;
  }
};

/// Any value, unconverted. Read, it points into the message: valid only
/// during a handler (use msgpack::object_handle for a call's result).
template <>
struct Codec<msgpack::object> {
  static std::string name() { return "any"; }
  static void pack(Packer& pk, const msgpack::object& v) { pack_object(pk, v); }
  static msgpack::object unpack(const msgpack::object& o, const Path&) { return o; }
};

template <class T>
struct Codec<std::optional<T>> {
  static constexpr bool optional = true;
  static std::string name() { return "optional<" + Codec<T>::name() + ">"; }
  static void pack(Packer& pk, const std::optional<T>& v) {
    if (v)
      Codec<T>::pack(pk, *v);
    else
      pk.pack_nil();
  }
  static std::optional<T> unpack(const msgpack::object& o, const Path& p) {
    if (o.type == msgpack::type::NIL) return std::nullopt;
    return Codec<T>::unpack(o, p);
  }
};

inline void expect_array(const msgpack::object& o, const Path& p, const std::string& name) {
  if (o.type != msgpack::type::ARRAY) mismatch(p, name, o);
}

template <class T, class A>
struct Codec<std::vector<T, A>, std::enable_if_t<!std::is_same_v<T, std::byte>>> {
  static std::string name() { return "vector<" + Codec<T>::name() + ">"; }
  static void pack(Packer& pk, const std::vector<T, A>& v) {
    pk.pack_array(len32(v.size()));
    for (const auto& x : v) Codec<T>::pack(pk, x);
  }
  static std::vector<T, A> unpack(const msgpack::object& o, const Path& p) {
    expect_array(o, p, name());
    std::vector<T, A> v;
    v.reserve(o.via.array.size);
    for (std::uint32_t i = 0; i < o.via.array.size; i++) v.push_back(Codec<T>::unpack(o.via.array.ptr[i], at(p, i)));
    return v;
  }
};

template <class M, class K, class V>
struct MapCodec {
  static std::string name() { return "map<" + Codec<K>::name() + ", " + Codec<V>::name() + ">"; }
  static void pack(Packer& pk, const M& m) {
    pk.pack_map(len32(m.size()));
    for (const auto& kv : m) {
      Codec<K>::pack(pk, kv.first);
      Codec<V>::pack(pk, kv.second);
    }
  }
  static M unpack(const msgpack::object& o, const Path& p) {
    if (o.type != msgpack::type::MAP) mismatch(p, name(), o);
    M m;
    for (std::uint32_t i = 0; i < o.via.map.size; i++) {
      const msgpack::object_kv& kv = o.via.map.ptr[i];
      Path key_path = at(p, kv.key);
      K key = Codec<K>::unpack(kv.key, key_path);
      m.insert_or_assign(std::move(key), Codec<V>::unpack(kv.val, key_path));
    }
    return m;
  }
};

template <class K, class V, class C, class A>
struct Codec<std::map<K, V, C, A>> : MapCodec<std::map<K, V, C, A>, K, V> {};
template <class K, class V, class H, class E, class A>
struct Codec<std::unordered_map<K, V, H, E, A>> : MapCodec<std::unordered_map<K, V, H, E, A>, K, V> {};

template <class... T>
struct Codec<std::tuple<T...>> {
  static std::string name() {
    std::string s = "tuple<";
    std::size_t i = 0;
    ((s += (i++ ? ", " : "") + Codec<T>::name()), ...);
    return s + ">";
  }
  static void pack(Packer& pk, const std::tuple<T...>& v) {
    pk.pack_array(sizeof...(T));
    std::apply([&](const auto&... x) { (Codec<std::decay_t<decltype(x)>>::pack(pk, x), ...); }, v);
  }
  static std::tuple<T...> unpack(const msgpack::object& o, const Path& p) {
    expect_array(o, p, name());
    if (o.via.array.size != sizeof...(T)) mismatch(p, name(), o);
    return unpack_items(o, p, std::index_sequence_for<T...>{});
  }
  template <std::size_t... I>
  static std::tuple<T...> unpack_items(const msgpack::object& o, const Path& p, std::index_sequence<I...>) {
    return std::tuple<T...>{Codec<T>::unpack(o.via.array.ptr[I], at(p, I))...};
  }
};

template <class A, class B>
struct Codec<std::pair<A, B>> {
  static std::string name() { return "pair<" + Codec<A>::name() + ", " + Codec<B>::name() + ">"; }
  static void pack(Packer& pk, const std::pair<A, B>& v) { Codec<std::tuple<A, B>>::pack(pk, std::tuple<A, B>(v)); }
  static std::pair<A, B> unpack(const msgpack::object& o, const Path& p) {
    expect_array(o, p, name());
    if (o.via.array.size != 2) mismatch(p, name(), o);
    A a = Codec<A>::unpack(o.via.array.ptr[0], at(p, 0));
    return std::pair<A, B>(std::move(a), Codec<B>::unpack(o.via.array.ptr[1], at(p, 1)));
  }
};

template <class T, class = void>
struct is_optional_param : std::false_type {};
template <class T>
struct is_optional_param<T, std::void_t<decltype(Codec<T>::optional)>> : std::bool_constant<Codec<T>::optional> {};

template <class T>
using value_t = std::decay_t<T>;

template <class... A>
msgpack::sbuffer pack_args(const A&... args) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  pk.pack_array(sizeof...(A));
  (Codec<value_t<A>>::pack(pk, args), ...);
  return buf;
}

/// Keeps references into the buffer instead of copying str/bin/ext (the
/// buffer outlives every use of the unpacked object).
inline bool reference_everything(msgpack::type::object_type, std::size_t, void*) { return true; }

inline msgpack::object_handle unpack_one(const std::uint8_t* data, std::size_t len, bool copy) {
  try {
    std::size_t offset = 0;
    msgpack::object_handle oh = msgpack::unpack(reinterpret_cast<const char*>(data), len, offset,
                                                copy ? nullptr : &reference_everything, nullptr);
    if (offset != len) throw ProtocolError( "invalid msgpack: trailing bytes");
    return oh;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ProtocolError( std::string("invalid msgpack: ") + e.what());
  }
}

template <class R>
constexpr void check_result_type() {
  static_assert(!std::is_reference_v<R> && !std::is_const_v<R>, "mf: the result type must be a plain value type");
  static_assert(!std::is_same_v<R, msgpack::object>,
                "mf: a msgpack::object result would dangle; use msgpack::object_handle");
  static_assert(!std::is_same_v<R, std::string_view>, "mf: a string_view result would dangle; use std::string");
}

/// The typed result of `function` from its msgpack bytes.
template <class R>
R decode_result(const std::uint8_t* data, std::size_t len, const std::string& function) {
  if constexpr (std::is_void_v<R>) {
    (void)data, (void)len, (void)function;
  } else if constexpr (std::is_same_v<R, msgpack::object_handle>) {
    (void)function;
    return unpack_one(data, len, true);
  } else {
    msgpack::object_handle oh = unpack_one(data, len, false);
    std::string root = "result of " + function;
    return Codec<R>::unpack(oh.get(), Path{root});
  }
}

/// A library buffer, freed when this goes out of scope.
struct Buffer {
  mf_buffer b{nullptr, 0};
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { mf_buffer_free(b); }
};

/// A library string, freed when this goes out of scope.
struct CString {
  char* s = nullptr;
  CString() = default;
  explicit CString(char* p) : s(p) {}
  CString(const CString&) = delete;
  CString& operator=(const CString&) = delete;
  ~CString() { mf_string_free(s); }
  std::string str() const { return s ? std::string(s) : std::string(); }
};

struct OptionsDeleter {
  void operator()(mf_options* o) const noexcept { mf_options_free(o); }
};
using OptionsPtr = std::unique_ptr<mf_options, OptionsDeleter>;

inline std::uint32_t u32_ms(std::chrono::milliseconds ms, const char* field) {
  if (ms.count() < 0 || ms.count() > std::numeric_limits<std::uint32_t>::max())
    throw InvalidArgumentError( std::string("Options::") + field + ": out of range");
  return static_cast<std::uint32_t>(ms.count());
}

inline OptionsPtr make_options(const Options& o) {
  OptionsPtr opts(mf_options_new());
  mf_options* p = opts.get();
  if (o.default_timeout)
    check(mf_options_set_default_timeout(p, o.default_timeout->count()), "Options::default_timeout");
  if (o.ns) check(mf_options_set_namespace(p, c_text(*o.ns, "Options::ns").c_str()), "Options::ns");
  if (o.heartbeat)
    check(mf_options_set_heartbeat(p, u32_ms(o.heartbeat->interval, "heartbeat"),
                                   u32_ms(o.heartbeat->timeout, "heartbeat"), o.heartbeat->max_misses),
          "Options::heartbeat");
  if (o.breaker) {
    check(mf_options_set_breaker(p, o.breaker->threshold, u32_ms(o.breaker->cooldown, "breaker")),
          "Options::breaker");
    check(mf_options_set_breaker_counts_remote_errors(p, o.breaker->counts_remote_errors), "Options::breaker");
  }
  if (o.auto_restart) check(mf_options_set_auto_restart(p, *o.auto_restart), "Options::auto_restart");
  if (o.start_timeout) check(mf_options_set_start_timeout(p, o.start_timeout->count()), "Options::start_timeout");
  if (o.connect_timeout)
    check(mf_options_set_connect_timeout(p, o.connect_timeout->count()), "Options::connect_timeout");
  if (o.shutdown_grace)
    check(mf_options_set_shutdown_grace(p, o.shutdown_grace->count()), "Options::shutdown_grace");
  if (o.name) check(mf_options_set_name(p, c_text(*o.name, "Options::name").c_str()), "Options::name");
  if (o.bind_host)
    check(mf_options_set_bind_host(p, c_text(*o.bind_host, "Options::bind_host").c_str()), "Options::bind_host");
  if (o.max_message_size) check(mf_options_set_max_message_size(p, *o.max_message_size), "Options::max_message_size");
  if (o.private_link) check(mf_options_set_private_link(p, *o.private_link), "Options::private_link");
  if (o.cancel_grace) check(mf_options_set_cancel_grace(p, o.cancel_grace->count()), "Options::cancel_grace");
  if (o.stream_credit) check(mf_options_set_stream_credit(p, *o.stream_credit), "Options::stream_credit");
  if (o.workers) check(mf_options_set_workers(p, *o.workers), "Options::workers");
  if (o.max_calls_per_worker)
    check(mf_options_set_max_calls_per_worker(p, *o.max_calls_per_worker), "Options::max_calls_per_worker");
  return opts;
}

/// One mf_call_async in flight: the promise its completion fulfils.
template <class R>
struct AsyncCall {
  std::promise<R> promise;
  std::string function;

  static void complete(void* user, mf_status status, const std::uint8_t* result, std::size_t len,
                       const char* error_message) noexcept {
    std::unique_ptr<AsyncCall> self(static_cast<AsyncCall*>(user));
    try {
      if (status != MF_OK)
        throw_error(status, error_message && *error_message ? error_message : mf_status_name(status));
      if constexpr (std::is_void_v<R>)
        self->promise.set_value();
      else
        self->promise.set_value(decode_result<R>(result, len, self->function));
    } catch (...) {
      try {
        self->promise.set_exception(std::current_exception());
      } catch (...) {
      }
    }
  }
};

// --- handlers ---------------------------------------------------------------

template <class T>
struct callable : callable<decltype(&T::operator())> {};
template <class R, class... A>
struct callable<R (*)(A...)> {
  using result = R;
  using params = std::tuple<A...>;
};
template <class R, class... A>
struct callable<R (*)(A...) noexcept> : callable<R (*)(A...)> {};
template <class R, class C, class... A>
struct callable<R (C::*)(A...)> : callable<R (*)(A...)> {};
template <class R, class C, class... A>
struct callable<R (C::*)(A...) const> : callable<R (*)(A...)> {};
template <class R, class C, class... A>
struct callable<R (C::*)(A...) noexcept> : callable<R (*)(A...)> {};
template <class R, class C, class... A>
struct callable<R (C::*)(A...) const noexcept> : callable<R (*)(A...)> {};

/// The arguments did not fit the handler; becomes "TypeError: <signature>: <why>".
struct BadArguments {
  std::string why;
};

/// Makes the Context of one call (its constructor is private to users).
struct ContextOf {
  static Context make(mf_reply* reply) noexcept { return Context(reply); }
};

/// A handler as the C trampoline sees it.
struct HandlerTable;

struct HandlerBase {
  virtual ~HandlerBase() = default;
  /// Runs the handler on the call's argument array and writes its result.
  virtual void invoke(Context& ctx, const msgpack::object& args, msgpack::sbuffer& out) = 0;
  std::string signature;  ///< "add(int32, int32)"
  HandlerTable* table = nullptr;
};

/// A worker's handlers (the C user_data points at them). Reference-counted:
/// the Worker holds one reference and every running call another, because
/// mf_serve may return (and the Worker be destroyed) while a handler still
/// runs on a library thread; the last one out frees the table.
struct HandlerTable {
  std::atomic<std::size_t> refs{1};
  std::vector<std::unique_ptr<HandlerBase>> handlers;

  void acquire() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  /// Keeps the table alive for one call.
  struct Hold {
    explicit Hold(HandlerTable* t) noexcept : table(t) { table->acquire(); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { table->release(); }
    HandlerTable* table;
  };
};

/// Whether a handler's parameter list starts with mf::Context& (or const
/// mf::Context&), which is then not one of the call's arguments.
template <class Params>
struct takes_context : std::false_type {};
template <class First, class... Rest>
struct takes_context<std::tuple<First, Rest...>>
    : std::bool_constant<std::is_lvalue_reference_v<First> &&
                         std::is_same_v<std::remove_cv_t<std::remove_reference_t<First>>, Context>> {};

/// The call's arguments among a handler's parameters: all of them, or all
/// but a leading mf::Context&.
template <class Params, bool skip_first>
struct argument_params {
  using type = Params;
};
template <class First, class... Rest>
struct argument_params<std::tuple<First, Rest...>, true> {
  using type = std::tuple<Rest...>;
};

template <class F>
struct Handler final : HandlerBase {
  using traits = callable<F>;
  using R = typename traits::result;
  static constexpr bool with_context = takes_context<typename traits::params>::value;
  using Params = typename argument_params<typename traits::params, with_context>::type;
  static constexpr std::size_t arity = std::tuple_size_v<Params>;

  Handler(const std::string& name, F f) : fn(std::move(f)) {
    signature = name + "(" + param_names(std::make_index_sequence<arity>{}) + ")";
  }

  template <std::size_t... I>
  static std::string param_names(std::index_sequence<I...>) {
    std::string s;
    ((s += (I ? ", " : "") + Codec<value_t<std::tuple_element_t<I, Params>>>::name()), ...);
    return s;
  }

  /// How many arguments a call must pass: trailing std::optional parameters may be left out.
  template <std::size_t... I>
  static constexpr std::size_t required(std::index_sequence<I...>) {
    std::size_t n = 0;
    ((n = is_optional_param<value_t<std::tuple_element_t<I, Params>>>::value ? n : I + 1), ...);
    return n;
  }

  template <std::size_t I>
  static value_t<std::tuple_element_t<I, Params>> argument(const msgpack::object& args) {
    using T = value_t<std::tuple_element_t<I, Params>>;
    if constexpr (is_optional_param<T>::value)
      if (I >= args.via.array.size) return T{};
    std::string root = "argument " + std::to_string(I + 1);
    return Codec<T>::unpack(args.via.array.ptr[I], Path{root});
  }

  /// fn(ctx, args...) or fn(args...).
  template <class... V>
  decltype(auto) run(Context& ctx, V&&... values) {
    if constexpr (with_context) {
      return fn(ctx, std::forward<V>(values)...);
    } else {
      (void)ctx;
      return fn(std::forward<V>(values)...);
    }
  }

  template <std::size_t... I>
  void call(Context& ctx, const msgpack::object& args, msgpack::sbuffer& out, std::index_sequence<I...>) {
    (void)args;  // unused when the handler takes no parameters
    using Values = std::tuple<value_t<std::tuple_element_t<I, Params>>...>;
    std::optional<Values> values;
    try {
      values.emplace(argument<I>(args)...);
    } catch (const TypeError& e) {
      throw BadArguments{e.what()};
    }
    Packer pk(out);
    if constexpr (std::is_void_v<R>) {
      run(ctx, std::forward<std::tuple_element_t<I, Params>>(std::get<I>(*values))...);
      pk.pack_nil();
    } else {
      Codec<value_t<R>>::pack(pk, run(ctx, std::forward<std::tuple_element_t<I, Params>>(std::get<I>(*values))...));
    }
  }

  void invoke(Context& ctx, const msgpack::object& args, msgpack::sbuffer& out) override {
    if (args.type != msgpack::type::ARRAY) throw BadArguments{"arguments are not an array"};
    constexpr std::size_t min = required(std::make_index_sequence<arity>{});
    std::size_t n = args.via.array.size;
    if (n < min || n > arity) {
      std::string want = min == arity ? std::to_string(arity) : std::to_string(min) + " to " + std::to_string(arity);
      throw BadArguments{"takes " + want + (arity == 1 && min == 1 ? " argument" : " arguments") + ", got " +
                         std::to_string(n)};
    }
    call(ctx, args, out, std::make_index_sequence<arity>{});
  }

  F fn;
};

/// The demangled dynamic type of an exception, "Error" when unknown.
inline std::string exception_type(const std::exception& e) {
#if defined(MF_HPP_HAVE_CXXABI)
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
  if (status == 0 && name) {
    std::string s(name);
    std::free(name);
    // The same name with every standard library: "std::__1::domain_error" → "std::domain_error".
    for (const char* inline_ns : {"__1::", "__cxx11::"})
      for (std::size_t at; (at = s.find(inline_ns)) != std::string::npos;) s.erase(at, std::strlen(inline_ns));
    return s;
  }
  std::free(name);
#else
  (void)e;
#endif
  return "Error";
}

/// Answers with an error, making sure the text is acceptable to the library.
inline void reply_error(mf_reply* reply, std::string_view text) noexcept {
  try {
    std::string msg = utf8_repair(text);
    std::replace(msg.begin(), msg.end(), '\0', ' ');
    if (mf_reply_error(reply, msg.c_str()) == MF_OK) return;
  } catch (...) {
  }
  mf_reply_error(reply, "Error: the handler failed");
}

/// The text a caller sees for the exception being handled.
inline std::string current_exception_text() {
  try {
    throw;
  } catch (const HandlerError& e) {
    return e.type() + ": " + e.what();
  } catch (const std::exception& e) {
    return exception_type(e) + ": " + e.what();
  } catch (...) {
    return "Error: unknown exception (not derived from std::exception)";
  }
}

/// Answers with the exception being handled; call only inside a catch block.
inline void reply_current_exception(mf_reply* reply) noexcept {
  std::string text;
  try {
    text = current_exception_text();
  } catch (...) {
    text = "Error: the handler failed";
  }
  reply_error(reply, text);
}

inline void handler_trampoline(void* user, const std::uint8_t* args, std::size_t len, mf_reply* reply) noexcept {
  auto* h = static_cast<HandlerBase*>(user);
  HandlerTable::Hold hold(h->table);
  Context ctx = ContextOf::make(reply);  // outlives the answer (see Context::on_cancelled)
  try {
    msgpack::object_handle oh = unpack_one(args, len, false);
    msgpack::sbuffer out;
    h->invoke(ctx, oh.get(), out);
    if (mf_reply_ok(reply, reinterpret_cast<const std::uint8_t*>(out.data()), out.size()) != MF_OK)
      reply_error(reply, "Error: " + h->signature + ": the result could not be sent: " + mf_last_error());
  } catch (const BadArguments& e) {
    reply_error(reply, "TypeError: " + h->signature + ": " + e.why);
  } catch (...) {
    reply_current_exception(reply);
  }
}

using JsonFunction = std::function<std::string(std::string_view)>;

struct JsonHandler final : HandlerBase {
  explicit JsonHandler(JsonFunction f) : fn(std::move(f)) {}
  void invoke(Context&, const msgpack::object&, msgpack::sbuffer&) override {}
  JsonFunction fn;
};

inline void json_trampoline(void* user, const char* args_json, mf_reply* reply) noexcept {
  auto* h = static_cast<JsonHandler*>(user);
  HandlerTable::Hold hold(h->table);
  try {
    std::string result = h->fn(args_json ? args_json : "[]");
    if (mf_reply_json(reply, result.c_str()) != MF_OK)
      reply_error(reply, "Error: " + h->signature + " returned invalid JSON: " + mf_last_error());
  } catch (...) {
    reply_current_exception(reply);
  }
}

}  // namespace detail

template <class T>
void Context::yield(const T& value) {
  msgpack::sbuffer out;
  detail::Packer pk(out);
  detail::Codec<detail::value_t<T>>::pack(pk, value);
  detail::check(mf_reply_yield(reply_, reinterpret_cast<const std::uint8_t*>(out.data()), out.size()));
}

// ---------------------------------------------------------------------------
// Parent

/// A call started with Parent::call_start: the future of its result, and the
/// means to cancel it. Move-only. get() returns the result or throws the
/// call's mf::Error, exactly once; a cancelled call throws mf::CancelledError
/// ("call to 'NAME' was cancelled"). cancel() may run on any thread, also
/// while another waits in get(), and any number of times. Destroying a Call
/// does not cancel it (as with call_async, the call runs to its end).
template <class R>
class Call {
 public:
  /// An empty call: not valid(), cancel() does nothing.
  Call() noexcept = default;
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
  Call(Call&& other) noexcept
      : future_(std::move(other.future_)), p_(std::exchange(other.p_, nullptr)), id_(std::exchange(other.id_, 0)) {}
  Call& operator=(Call&& other) noexcept {
    if (this != &other) {
      mf_parent_release(p_);
      future_ = std::move(other.future_);
      p_ = std::exchange(other.p_, nullptr);
      id_ = std::exchange(other.id_, 0);
    }
    return *this;
  }
  ~Call() { mf_parent_release(p_); }

  /// Ends the call at once with mf::CancelledError if it is still in flight
  /// (get() then throws it) and tells the worker, whose handler can stop
  /// (mf::Context). A call that already ended, also through a closed
  /// parent, keeps its outcome. Never throws.
  void cancel() noexcept {
    if (p_) mf_cancel(p_, id_);
  }

  /// Waits for the result; throws the call's mf::Error. Once only (as std::future).
  R get() { return future_.get(); }

  /// Waits until the call has ended.
  void wait() const { future_.wait(); }

  /// Waits up to `timeout` for the call to end.
  template <class Rep, class Period>
  std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return future_.wait_for(timeout);
  }

  /// False for an empty or moved-from Call, and after get().
  bool valid() const noexcept { return future_.valid(); }

  /// The call's id (mf_call_start; never 0 for a started call), for Parent::cancel.
  std::uint64_t id() const noexcept { return id_; }

  /// The future itself, e.g. to move into code that takes a std::future.
  std::future<R>& future() noexcept { return future_; }

 private:
  friend class Parent;

  std::future<R> future_;
  mf_parent* p_ = nullptr;  // a reference of its own (mf_parent_retain), for cancel()
  std::uint64_t id_ = 0;
};

/// A stream opened with Parent::stream: the items the worker's handler
/// yields (mf::Context::yield), in order, each decoded as a T. Move-only.
/// Read it with range-for or next():
///
///   mf::Stream<int> s = p.stream<int>("count", 5);
///   for (int x : s) use(x);  // 0 1 2 3 4, then the loop ends
///
/// An error of the call (the handler threw, the worker exited, a timeout
/// between items, …) is thrown as its mf::Error after the items that came
/// before it. Leaving the loop early and destroying or close()-ing the
/// stream cancels an unfinished one: the handler's next yield throws
/// mf::CancelledError. Reading waits on the calling thread, at most the
/// stream's timeout for each item. Not thread-safe: one thread at a time
/// uses a stream (close() included).
template <class T>
class Stream {
 public:
  static_assert(!std::is_void_v<T>, "mf: a stream's items need a type");

  /// Range-for's iterator (an input iterator): ++ takes the next item.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = const T&;

    iterator() noexcept = default;
    const T& operator*() const { return *stream_->item_; }
    const T* operator->() const { return &*stream_->item_; }
    iterator& operator++() {
      if (!stream_->advance()) stream_ = nullptr;
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.stream_ == b.stream_; }
    friend bool operator!=(const iterator& a, const iterator& b) noexcept { return a.stream_ != b.stream_; }

   private:
    friend class Stream;
    explicit iterator(Stream* stream) noexcept : stream_(stream) {}
    Stream* stream_ = nullptr;  // nullptr: the end
  };

  /// An empty, closed stream.
  Stream() noexcept = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& other) noexcept
      : s_(std::exchange(other.s_, nullptr)),
        function_(std::move(other.function_)),
        item_(std::move(other.item_)),
        ended_(std::exchange(other.ended_, true)) {}
  /// Closes this stream, then takes over `other`'s.
  Stream& operator=(Stream&& other) noexcept {
    if (this != &other) {
      close();
      s_ = std::exchange(other.s_, nullptr);
      function_ = std::move(other.function_);
      item_ = std::move(other.item_);
      ended_ = std::exchange(other.ended_, true);
    }
    return *this;
  }
  /// close().
  ~Stream() { close(); }

  /// Waits for the next item and takes it; std::nullopt once the stream
  /// ended (also on every later call). Throws the call's mf::Error after
  /// the items before it (then the stream has ended), mf::TypeError for an
  /// item that is not a T (the stream goes on), mf::ClosedError once
  /// close()d or moved from.
  std::optional<T> next() {
    if (!s_) throw ClosedError("the stream is closed");
    if (ended_) return std::nullopt;
    detail::Buffer item;
    bool end = false;
    mf_status status = mf_stream_next(s_, -1, &item.b, &end);
    if (status != MF_OK) {
      ended_ = true;
      detail::throw_last_error(status);
    }
    if (end) {
      ended_ = true;
      return std::nullopt;
    }
    if constexpr (std::is_same_v<T, msgpack::object_handle>) {
      return detail::unpack_one(item.b.data, item.b.len, true);
    } else {
      msgpack::object_handle oh = detail::unpack_one(item.b.data, item.b.len, false);
      return detail::Codec<T>::unpack(oh.get(), detail::Path{"item of " + function_});
    }
  }

  /// Takes the first item (range-for calls it once); see next().
  iterator begin() { return iterator(advance() ? this : nullptr); }
  iterator end() noexcept { return iterator(); }

  /// Ends the stream: an unfinished one is cancelled (mf_stream_close).
  /// Idempotent; then next() throws mf::ClosedError.
  void close() noexcept {
    mf_stream_close(std::exchange(s_, nullptr));
    item_.reset();
    ended_ = true;
  }

  /// False once closed or moved from (an ended stream stays open until then).
  bool is_open() const noexcept { return s_ != nullptr; }

  /// Whether the stream has ended (its last item taken, or its error thrown).
  bool ended() const noexcept { return ended_; }

  /// The C handle (still owned by this object), NULL when closed.
  mf_stream* native_handle() const noexcept { return s_; }

 private:
  friend class Parent;

  /// The next item into item_; whether there is one.
  bool advance() {
    item_.reset();
    item_ = next();
    return item_.has_value();
  }

  mf_stream* s_ = nullptr;
  std::string function_;
  std::optional<T> item_;  // the iterator's current item
  bool ended_ = true;
};

/// A connection to one worker, or to a pool of them (Options::workers)
/// (mf_parent): spawned by Parent::spawn or reached by Parent::connect. Move-only; the destructor closes it.
///
/// Threads: call, call_for, call_async, call_start, stream, cancel, call_json and
/// stats_json may run on any number of threads at once, and close() may run
/// on any thread at any time: calls in flight end with MF_ERR_CLOSED, calls
/// that start later throw it (each call holds a reference of its own to the C handle,
/// mf_parent_retain, so a close never frees it under a call). Move-assignment
/// and destruction, like for any C++ object, must not race other uses.
///
/// A closed or moved-from Parent throws mf::ClosedError from every call.
class Parent {
 public:
  /// An empty, closed parent (assign a spawned or connected one to it).
  Parent() noexcept = default;

  /// Takes ownership of a handle from mf_spawn/mf_connect.
  explicit Parent(mf_parent* handle) noexcept : p_(handle) {}

  Parent(const Parent&) = delete;
  Parent& operator=(const Parent&) = delete;
  Parent(Parent&& other) noexcept : p_(other.release()) {}
  /// Closes this parent's worker connection, then takes over `other`'s.
  Parent& operator=(Parent&& other) noexcept {
    if (this != &other) {
      close();
      p_.store(other.release());
    }
    return *this;
  }
  ~Parent() { close(); }

  /// Starts `program` (a path, or a name looked up in PATH) with `args` as a
  /// worker and returns once it answered a heartbeat. A script runs through
  /// its interpreter: spawn("python3", {"worker.py", "--worker"}).
  /// Throws mf::Error: MF_ERR_IO (cannot start; the text names the program),
  /// MF_ERR_WORKER_EXITED (exit status and last stderr lines), MF_ERR_TIMEOUT
  /// (no answer within Options::start_timeout), MF_ERR_INVALID_ARGUMENT.
  static Parent spawn(const std::string& program, const std::vector<std::string>& args = {},
                      const Options& options = {}) {
    detail::OptionsPtr opts = detail::make_options(options);
    std::string prog = detail::c_text(program, "program");
    std::vector<std::string> copies;
    copies.reserve(args.size());
    for (const auto& a : args) copies.push_back(detail::c_text(a, "argument"));
    std::vector<const char*> argv;
    argv.reserve(copies.size() + 1);
    for (const auto& a : copies) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    mf_parent* p = nullptr;
    detail::check(mf_spawn(prog.c_str(), argv.data(), opts.get(), &p));
    return Parent(p);
  }

  /// Reaches a running worker by service id (looked up in the registry,
  /// polled until Options::connect_timeout) or at "tcp://host:port".
  /// Throws mf::Error: MF_ERR_NOT_FOUND, MF_ERR_TIMEOUT, MF_ERR_INVALID_ARGUMENT.
  static Parent connect(const std::string& service_or_endpoint, const Options& options = {}) {
    detail::OptionsPtr opts = detail::make_options(options);
    std::string target = detail::c_text(service_or_endpoint, "service id");
    mf_parent* p = nullptr;
    detail::check(mf_connect(target.c_str(), opts.get(), &p));
    return Parent(p);
  }

  /// Calls `function(args...)` and returns its result as R, waiting at most
  /// the default timeout. R = void discards the result. Arguments and R may
  /// be any type of the table at the top of this file.
  /// Throws mf::Error: MF_ERR_REMOTE (what() is the worker's error text),
  /// MF_ERR_TIMEOUT, MF_ERR_CIRCUIT_OPEN, MF_ERR_WORKER_EXITED, MF_ERR_CLOSED;
  /// mf::TypeError (MF_ERR_PROTOCOL) when the result is not an R, naming the
  /// expected and the actual type.
  template <class R = void, class... A>
  R call(std::string_view function, const A&... args) {
    return call_for<R>(default_timeout, function, args...);
  }

  /// call() with its own time limit (mf::default_timeout: the parent's
  /// default; mf::no_timeout: none).
  template <class R = void, class... A>
  R call_for(std::chrono::milliseconds timeout, std::string_view function, const A&... args) {
    detail::check_result_type<R>();
    std::string fn = detail::c_text(function, "function name");
    msgpack::sbuffer packed = detail::pack_args(args...);
    detail::Buffer result;
    Ref p(*this);
    detail::check(mf_call(p.get(), fn.c_str(), reinterpret_cast<const std::uint8_t*>(packed.data()),
                          packed.size(), timeout.count(), &result.b));
    return detail::decode_result<R>(result.b.data, result.b.len, fn);
  }

  /// Starts `function(args...)` and returns at once; the future receives the
  /// result or the mf::Error (all failures, including a closed parent, are
  /// delivered through the future). The result is decoded on the parent's
  /// driver thread when it arrives (every other call of this parent waits
  /// meanwhile), so keep very large results to call(). Closing the parent
  /// ends pending futures with MF_ERR_CLOSED. To cancel it, use call_start().
  template <class R = void, class... A>
  std::future<R> call_async(std::string_view function, const A&... args) {
    return call_async_for<R>(default_timeout, function, args...);
  }

  /// call_async() with its own time limit.
  template <class R = void, class... A>
  std::future<R> call_async_for(std::chrono::milliseconds timeout, std::string_view function, const A&... args) {
    return start<R>(timeout, function, nullptr, args...);
  }

  /// call_async() that can be cancelled: the mf::Call holds the future and
  /// cancel(). A cancelled call ends at once with mf::CancelledError; the
  /// worker's handler is told (mf::Context) and should stop; one that runs on
  /// past Options::cancel_grace gets its spawned worker stopped.
  ///
  ///   mf::Call<int> c = p.call_start<int>("crunch", 1000000);
  ///   c.cancel();
  ///   c.get();  // throws mf::CancelledError (or the result, had it come first)
  template <class R = void, class... A>
  Call<R> call_start(std::string_view function, const A&... args) {
    return call_start_for<R>(default_timeout, function, args...);
  }

  /// call_start() with its own time limit (which, when it passes, cancels
  /// the call on the worker too, and throws mf::TimeoutError from get()).
  template <class R = void, class... A>
  Call<R> call_start_for(std::chrono::milliseconds timeout, std::string_view function, const A&... args) {
    Call<R> call;
    call.future_ = start<R>(timeout, function, &call, args...);
    return call;
  }

  /// Calls `function(args...)` as a stream: the worker's handler yields
  /// items (mf::Context::yield) that the returned mf::Stream hands over in
  /// order, each as a T; the handler's return value only ends the stream.
  /// The default timeout limits the wait for each item. Errors of the call
  /// come from reading the stream; this throws only what stops it from
  /// starting (mf::ClosedError, mf::CircuitOpenError, mf::InvalidArgumentError, …).
  ///
  ///   for (const std::string& line : p.stream<std::string>("tail", "log.txt")) show(line);
  template <class T, class... A>
  Stream<T> stream(std::string_view function, const A&... args) {
    return stream_for<T>(default_timeout, function, args...);
  }

  /// stream() with its own time limit for each item (mf::default_timeout:
  /// the parent's default; mf::no_timeout: none).
  template <class T, class... A>
  Stream<T> stream_for(std::chrono::milliseconds timeout, std::string_view function, const A&... args) {
    detail::check_result_type<T>();
    Stream<T> s;
    s.function_ = detail::c_text(function, "function name");
    msgpack::sbuffer packed = detail::pack_args(args...);
    Ref p(*this);
    detail::check(mf_stream_open(p.get(), s.function_.c_str(), reinterpret_cast<const std::uint8_t*>(packed.data()),
                                 packed.size(), timeout.count(), &s.s_));
    s.ended_ = false;
    return s;
  }

  /// Cancels the call of this parent with id `call_id` (mf::Call::id()), as
  /// mf::Call::cancel() does. An ended call, an unknown id or a closed parent
  /// are left alone. Never throws.
  void cancel(std::uint64_t call_id) noexcept {
    try {
      Ref p(*this);
      mf_cancel(p.get(), call_id);
    } catch (...) {
      // Closed: every call of this parent has ended already.
    }
  }

  /// Calls with JSON text: `args_json` is a JSON array, the result is JSON
  /// text (the library's mapping, see mf_call_json). Errors as for call();
  /// invalid JSON → MF_ERR_INVALID_ARGUMENT.
  std::string call_json(std::string_view function, std::string_view args_json,
                        std::chrono::milliseconds timeout = default_timeout) {
    std::string fn = detail::c_text(function, "function name");
    std::string args = detail::c_text(args_json, "args_json");
    detail::CString out;
    Ref p(*this);
    detail::check(mf_call_json(p.get(), fn.c_str(), args.c_str(), timeout.count(), &out.s));
    return out.str();
  }

  /// The metrics as one JSON object: requests_total, requests_success,
  /// requests_failed, remote_errors, timeouts, in_flight, latency_*_ms,
  /// heartbeat_*, healthy, circuit_state, restarts, recycles, worker_pid, …
  /// and workers: one object per worker of the pool (Options::workers) with
  /// pid, in_flight, requests_total, restarts, recycles, healthy,
  /// heartbeat_rtt_last_ms (see mf_parent_stats_json). Read it with
  /// mf::from_json, e.g. into std::map<std::string, mf::Json>. Throws
  /// MF_ERR_CLOSED when closed.
  std::string stats_json() const {
    Ref p(*this);
    detail::CString s(mf_parent_stats_json(p.get()));
    if (!s.s) throw PanicError( "mf_parent_stats_json returned NULL");
    return s.str();
  }

  /// Ends calls in flight with MF_ERR_CLOSED, stops and reaps a spawned
  /// worker. Idempotent; afterwards every call throws MF_ERR_CLOSED. Any
  /// thread, also while others start calls.
  void close() noexcept {
    mf_parent* p = p_.exchange(nullptr);
    if (!p) return;
    // A call that read the handle before the exchange is taking its own
    // reference: let it have it before this one goes.
    while (taking_.load() != 0) std::this_thread::yield();
    mf_parent_close(p);
  }

  /// False once closed or moved from.
  bool is_open() const noexcept { return p_.load() != nullptr; }
  explicit operator bool() const noexcept { return is_open(); }

  /// The C handle (still owned by this object), NULL when closed.
  mf_parent* native_handle() const noexcept { return p_.load(); }

  /// Gives up ownership of the C handle (the caller closes it).
  mf_parent* release() noexcept { return p_.exchange(nullptr); }

 private:
  /// Starts a call whose completion fulfils the returned future; with
  /// `call` (a Call<R>*, or nullptr), also records its id and a reference
  /// to the handle there.
  template <class R, class Handle, class... A>
  std::future<R> start(std::chrono::milliseconds timeout, std::string_view function, Handle call,
                       const A&... args) {
    detail::check_result_type<R>();
    auto state = std::make_unique<detail::AsyncCall<R>>();
    std::future<R> future = state->promise.get_future();
    try {
      state->function = detail::c_text(function, "function name");
      msgpack::sbuffer packed = detail::pack_args(args...);
      Ref p(*this);
      std::uint64_t id = 0;
      detail::check(mf_call_start(p.get(), state->function.c_str(),
                                  reinterpret_cast<const std::uint8_t*>(packed.data()), packed.size(),
                                  timeout.count(), &detail::AsyncCall<R>::complete, state.get(), &id));
      state.release();  // owned by the completion now
      if constexpr (!std::is_same_v<Handle, std::nullptr_t>) {
        call->id_ = id;
        call->p_ = mf_parent_retain(p.get());
      }
    } catch (...) {
      if (state) state->promise.set_exception(std::current_exception());
    }
    return future;
  }

  /// One call's own reference to the C handle (mf_parent_retain), released
  /// when the call returns. Throws MF_ERR_CLOSED when the parent is closed.
  class Ref {
   public:
    explicit Ref(const Parent& parent) {
      // Sequentially consistent, with close(): a handle read here before
      // close() exchanged it is retained before close() releases its own.
      parent.taking_.fetch_add(1);
      p_ = mf_parent_retain(parent.p_.load());
      parent.taking_.fetch_sub(1);
      if (!p_) throw ClosedError( "the parent is closed");
    }
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    ~Ref() { mf_parent_release(p_); }
    mf_parent* get() const noexcept { return p_; }

   private:
    mf_parent* p_;
  };

  std::atomic<mf_parent*> p_{nullptr};
  // Calls between reading p_ and holding their reference (see Ref).
  mutable std::atomic<int> taking_{0};
};

// ---------------------------------------------------------------------------
// Worker

/// The serving side (mf_worker). Register handlers with handle(), then
/// serve() on one thread; stop() may be called from any thread. Move-only;
/// the destructor stops and releases it. Do not move or destroy a Worker
/// while serve() runs on another thread.
class Worker {
 public:
  /// `service_id` empty: spawn mode (serve() connects to the parent named by
  /// COMLINK_ZMQ_PORT). A service id: connect mode — binds a port now and
  /// registers it in $HOME/.multifrost/services.json (throws
  /// MF_ERR_ALREADY_RUNNING if another live process has that id). "tcp://host:port":
  /// binds there without the registry.
  explicit Worker(const std::string& service_id = {}) {
    std::string id = detail::c_text(service_id, "service id");
    detail::check(mf_worker_new(id.empty() ? nullptr : id.c_str(), &w_));
    table_ = new (std::nothrow) detail::HandlerTable();
    if (!table_) {
      mf_worker_free(std::exchange(w_, nullptr));
      throw std::bad_alloc();
    }
  }

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  Worker(Worker&& other) noexcept
      : w_(std::exchange(other.w_, nullptr)), table_(std::exchange(other.table_, nullptr)) {}
  Worker& operator=(Worker&& other) noexcept {
    if (this != &other) {
      reset();
      w_ = std::exchange(other.w_, nullptr);
      table_ = std::exchange(other.table_, nullptr);
    }
    return *this;
  }
  /// Stops and releases the worker. Handlers still running on library
  /// threads (serve() gives them a short grace, then returns) finish
  /// normally: what they captured lives until the last one returns.
  ~Worker() { reset(); }

  /// Registers `fn` under `name` (replacing an earlier one; names starting
  /// with '_' are private). fn may be a function, a lambda or any callable
  /// with one non-template operator(); its parameter types decide how the
  /// call's arguments are read and its return type how the result is sent
  /// (void: nil). Trailing std::optional parameters may be left out by the
  /// caller.
  ///
  /// What the caller sees when things go wrong (MF_ERR_REMOTE), while the
  /// worker keeps serving:
  ///  - wrong argument count or types: "TypeError: add(int32, int32): takes 2
  ///    arguments, got 3" / "TypeError: add(int32, int32): argument 2:
  ///    expected int32, got msgpack str (\"x\")";
  ///  - fn throws mf::HandlerError(type, text): "type: text";
  ///  - fn throws another exception e: "<demangled type of e>: e.what()",
  ///    e.g. "std::domain_error: factorial of a negative number";
  ///    anything not derived from std::exception: "Error: unknown exception …".
  ///
  /// fn runs on a handler thread of the worker, one call at a time unless
  /// set_concurrency() allows more (then fn must be thread-safe).
  ///
  /// A first parameter `mf::Context&` is not an argument of the call: it
  /// tells fn whether the caller cancelled the call (ctx.cancelled(),
  /// ctx.wait_for(d), ctx.on_cancel(f)); a long handler should watch it and
  /// stop, since a spawned worker whose cancelled handler runs on past the
  /// parent's cancel grace is stopped.
  template <class F>
  void handle(const std::string& name, F fn) {
    mf_worker* w = worker();
    auto h = std::make_unique<detail::Handler<F>>(name, std::move(fn));
    h->table = table_;
    std::string n = detail::c_text(name, "function name");
    table_->handlers.reserve(table_->handlers.size() + 1);  // push_back below must not throw once C holds h
    detail::HandlerBase* base = h.get();
    detail::check(mf_worker_register(w, n.c_str(), &detail::handler_trampoline, base));
    table_->handlers.push_back(std::move(h));
  }

  /// Registers a JSON handler: fn receives the argument array as JSON text
  /// and returns the result as JSON text (the library's mapping). Errors are
  /// reported as for handle().
  void handle_json(const std::string& name, std::function<std::string(std::string_view args_json)> fn) {
    mf_worker* w = worker();
    auto h = std::make_unique<detail::JsonHandler>(std::move(fn));
    h->signature = name;
    h->table = table_;
    std::string n = detail::c_text(name, "function name");
    table_->handlers.reserve(table_->handlers.size() + 1);
    detail::check(mf_worker_register_json(w, n.c_str(), &detail::json_trampoline, h.get()));
    table_->handlers.push_back(std::move(h));
  }

  /// Handler threads (1..1024, default 1); takes effect at the next serve().
  void set_concurrency(std::uint32_t threads) { detail::check(mf_worker_set_concurrency(worker(), threads)); }

  /// The namespace served (default "default"); calls for others are dropped.
  void set_namespace(const std::string& ns) {
    detail::check(mf_worker_set_namespace(worker(), detail::c_text(ns, "namespace").c_str()));
  }

  /// Whether serve() returns on SIGINT/SIGTERM (default true). Turn it off
  /// when serving on a thread of a program that handles signals itself.
  void set_handle_signals(bool on) { detail::check(mf_worker_set_handle_signals(worker(), on)); }

  /// Serves calls until stop(), a shutdown message, or SIGINT/SIGTERM.
  /// Throws mf::Error, e.g. MF_ERR_INVALID_ARGUMENT in spawn mode without a
  /// valid COMLINK_ZMQ_PORT (the text says why).
  void serve() { detail::check(mf_serve(worker())); }

  /// Makes serve() return. Any thread, any time (before serve() too).
  void stop() { detail::check(mf_worker_stop(worker())); }

  /// The C handle (still owned by this object), NULL when moved from.
  mf_worker* native_handle() const noexcept { return w_; }

 private:
  mf_worker* worker() const {
    if (!w_) throw ClosedError( "the worker is closed");
    return w_;
  }

  void reset() noexcept {
    mf_worker_free(std::exchange(w_, nullptr));
    if (detail::HandlerTable* t = std::exchange(table_, nullptr)) t->release();  // running calls keep it alive
  }

  mf_worker* w_ = nullptr;
  detail::HandlerTable* table_ = nullptr;
};

// ---------------------------------------------------------------------------
// Conversions

/// The JSON text of a typed value (the mapping of mf::Json).
template <class T>
Json to_json(const T& value) {
  msgpack::sbuffer buf;
  detail::Packer pk(buf);
  detail::Codec<detail::value_t<T>>::pack(pk, value);
  msgpack::object_handle oh =
      detail::unpack_one(reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size(), false);
  Json j;
  detail::append_json(j.text, oh.get());
  return j;
}

/// A typed value from JSON text. Throws MF_ERR_INVALID_ARGUMENT for bad
/// JSON and mf::TypeError when the value is not a T.
template <class T>
T from_json(const Json& json) {
  static_assert(!std::is_same_v<T, msgpack::object> && !std::is_same_v<T, std::string_view>,
                "mf::from_json: the result would dangle");
  msgpack::zone zone;
  msgpack::object o = detail::JsonParser(json.text, zone).parse();
  return detail::Codec<T>::unpack(o, detail::Path{"json"});
}

}  // namespace mf

#endif  // MULTIFROST_HPP
