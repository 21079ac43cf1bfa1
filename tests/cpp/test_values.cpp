// Every supported value type survives a round trip through the C++ worker.
#include "support.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace {

using mft::WorkerTest;

class Values : public WorkerTest {
 protected:
  template <class T>
  void round_trip(const char* function, const T& value) {
    EXPECT_EQ(parent.call<T>(function, value), value) << function;
  }

  template <class T>
  void extremes(const char* function) {
    round_trip<T>(function, std::numeric_limits<T>::min());
    round_trip<T>(function, std::numeric_limits<T>::max());
    round_trip<T>(function, T{0});
    round_trip<T>(function, T{1});
    round_trip<T>(function, T{100});
  }
};

TEST_F(Values, Bool) {
  round_trip("echo_bool", true);
  round_trip("echo_bool", false);
}

TEST_F(Values, EveryIntegerWidth) {
  extremes<std::int8_t>("echo_i8");
  extremes<std::int16_t>("echo_i16");
  extremes<std::int32_t>("echo_i32");
  extremes<std::int64_t>("echo_int");
  extremes<std::uint8_t>("echo_u8");
  extremes<std::uint16_t>("echo_u16");
  extremes<std::uint32_t>("echo_u32");
  extremes<std::uint64_t>("echo_u64");
  round_trip<std::int64_t>("echo_int", -1);
  round_trip<std::int64_t>("echo_int", -9007199254740993LL);  // not exact as a double
  // Widths may differ between the two sides: the value decides.
  EXPECT_EQ(parent.call<std::int64_t>("echo_i8", std::int8_t{-128}), -128);
  EXPECT_EQ(parent.call<std::uint8_t>("echo_int", std::int64_t{255}), 255);
  EXPECT_EQ(parent.call<short>("echo_i32", 7), 7);
}

TEST_F(Values, Floats) {
  round_trip("echo_double", 0.1);
  round_trip("echo_double", -1.5e300);
  round_trip("echo_double", 0.0);
  round_trip("echo_float", 1.5f);
  round_trip("echo_float", -0.25f);
  // Floats stay floats on the wire, also when their value is integral.
  EXPECT_EQ(parent.call<mf::Json>("echo_double", 2.0).text, "2.0");
  EXPECT_EQ(parent.call<mf::Json>("echo_double", -0.0).text, "-0.0");
  EXPECT_EQ(parent.call<msgpack::object_handle>("echo_double", 2.0).get().type, msgpack::type::FLOAT64);
  EXPECT_EQ(parent.call<msgpack::object_handle>("echo_float", 2.0f).get().type, msgpack::type::FLOAT32);
  EXPECT_EQ(parent.call<msgpack::object_handle>("echo_any", 4.0).get().type, msgpack::type::FLOAT64);
  EXPECT_EQ(parent.call_json("echo_any", "[[1.0, -0.0, 3]]"), "[1.0,-0.0,3]");
  // An integer result is readable as a double.
  EXPECT_EQ(parent.call<double>("add", 1, 2), 3.0);
  EXPECT_EQ(parent.call<double>("echo_double", 3), 3.0);
}

TEST_F(Values, Strings) {
  round_trip<std::string>("echo_str", "");
  round_trip<std::string>("echo_str", "héllo ✓");
  round_trip<std::string>("echo_str", std::string("a\0b", 3));
  round_trip<std::string>("echo_str", std::string(1 << 20, 'x'));
  // Any string-like argument type.
  EXPECT_EQ(parent.call<std::string>("echo_str", "literal"), "literal");
  const char* c = "c string";
  EXPECT_EQ(parent.call<std::string>("echo_str", c), "c string");
  EXPECT_EQ(parent.call<std::string>("echo_str", std::string_view("view")), "view");
  // A string_view parameter in the handler.
  EXPECT_EQ(parent.call<std::size_t>("len", "héllo"), 6u);
}

TEST_F(Values, Bytes) {
  round_trip("echo_bytes", mf::Bytes{});
  round_trip("echo_bytes", mf::Bytes{std::byte{0}, std::byte{0xff}, std::byte{0x80}});
}

TEST_F(Values, Vectors) {
  round_trip("echo_vec", std::vector<int>{});
  round_trip("echo_vec", std::vector<int>{1, -2, 3, 2147483647});
  round_trip("echo_vec_str", std::vector<std::string>{"a", "", "ü"});
  round_trip("echo_nested", std::vector<std::vector<std::int64_t>>{{}, {1}, {2, 3}});
  round_trip("echo_vec_opt", std::vector<std::optional<std::int64_t>>{1, std::nullopt, -3});
  std::vector<int> many(10000);
  for (int i = 0; i < 10000; i++) many[static_cast<std::size_t>(i)] = i * 7;
  round_trip("echo_vec", many);
}

TEST_F(Values, Maps) {
  round_trip("echo_map", std::map<std::string, std::int64_t>{});
  round_trip("echo_map", std::map<std::string, std::int64_t>{{"one", 1}, {"minus", -1}, {"ü", 3}});
  round_trip("echo_map_vec", std::map<std::string, std::vector<double>>{{"a", {1.5, 2.5}}, {"b", {}}});
  // Another map type on the calling side.
  std::unordered_map<std::string, std::int64_t> u{{"x", 10}, {"y", 20}};
  EXPECT_EQ((parent.call<std::unordered_map<std::string, std::int64_t>>("echo_map", u)), u);
}

TEST_F(Values, Optional) {
  round_trip("echo_opt", std::optional<std::string>("here"));
  round_trip("echo_opt", std::optional<std::string>());
  EXPECT_EQ(parent.call<std::optional<std::string>>("echo_opt", nullptr), std::nullopt);
  // A trailing optional parameter may be left out.
  EXPECT_EQ(parent.call<std::string>("greet", "Ann"), "hello, Ann");
  EXPECT_EQ(parent.call<std::string>("greet", "Ann", "hi"), "hi, Ann");
  EXPECT_EQ(parent.call<std::string>("greet", "Ann", nullptr), "hello, Ann");
}

TEST_F(Values, TuplesAndPairs) {
  round_trip("echo_tuple", std::tuple<int, std::string, bool>{7, "seven", true});
  // A two-item array reads as a pair.
  auto pair = parent.call<std::pair<std::string, std::string>>("echo_vec_str", std::vector<std::string>{"a", "b"});
  EXPECT_EQ(pair, (std::pair<std::string, std::string>{"a", "b"}));
}

TEST_F(Values, VoidAndNil) {
  parent.call("nothing");  // R defaults to void
  EXPECT_EQ(parent.call<std::nullptr_t>("nothing"), nullptr);
  EXPECT_EQ(parent.call<std::optional<int>>("nothing"), std::nullopt);
}

TEST_F(Values, JsonEscapeHatch) {
  // JSON in and out through a typed (mf::Json) handler.
  mf::Json doc{R"({"list":[1,2.5,null,true,"ü"],"big":18446744073709551615,"neg":-9223372036854775808})"};
  EXPECT_EQ(parent.call<mf::Json>("echo_json", doc), doc);
  // A handler returning JSON; a typed result from it.
  EXPECT_EQ(parent.call<mf::Json>("make_json").text, R"({"a":[1,2.5,null],"b":"x"})");
  auto m = parent.call<std::map<std::string, mf::Json>>("make_json");
  EXPECT_EQ(m.at("a").text, "[1,2.5,null]");
  EXPECT_EQ(m.at("b").text, "\"x\"");
  // Typed arguments read back as JSON, and JSON arguments read back as types.
  EXPECT_EQ(parent.call<mf::Json>("echo_vec", std::vector<int>{1, 2}).text, "[1,2]");
  EXPECT_EQ(parent.call<std::vector<int>>("echo_vec", mf::Json{"[3, 4]"}), (std::vector<int>{3, 4}));
  // The same text as the library's own JSON mapping (mf_call_json).
  for (const char* text : {"[1,-2,3.25,1.0,\"a\\\"b\\n\\u0001\",{\"k\":[]},null,false]", "{\"ü\":\"✓\"}",
                           "\"\\ud83d\\ude00\"", "0.1", "-0.0", "[2.0, 1e300, 5e-324, 1.5e-7, 1e21, 123456789012345678901234567890.0]", "[18446744073709551615]"}) {
    std::string library = parent.call_json("echo_any", std::string("[") + text + "]");
    EXPECT_EQ(parent.call<mf::Json>("echo_any", mf::Json{text}).text, library) << text;
  }
  // Bytes appear as base64, as in mf_call_json.
  mf::Bytes bytes{std::byte{'h'}, std::byte{'i'}, std::byte{'!'}, std::byte{0}};
  EXPECT_EQ(parent.call<mf::Json>("echo_bytes", bytes).text, "\"aGkhAA==\"");
}

TEST_F(Values, RawMsgpack) {
  // msgpack::object handler parameter and return: the value passes unchanged.
  mf::Bytes bytes{std::byte{1}, std::byte{2}};
  EXPECT_EQ(parent.call<mf::Bytes>("echo_any", bytes), bytes);
  msgpack::object_handle oh = parent.call<msgpack::object_handle>("echo_any", std::vector<int>{5, 6});
  ASSERT_EQ(oh.get().type, msgpack::type::ARRAY);
  EXPECT_EQ(oh.get().via.array.size, 2u);
  EXPECT_EQ(oh.get().as<std::vector<int>>(), (std::vector<int>{5, 6}));
}

TEST_F(Values, JsonConversionsWithoutAWorker) {
  EXPECT_EQ(mf::to_json(std::map<std::string, std::vector<int>>{{"a", {1}}}).text, R"({"a":[1]})");
  EXPECT_EQ(mf::to_json(std::optional<double>()).text, "null");
  EXPECT_EQ(mf::to_json(2.0).text, "2.0");
  EXPECT_EQ(mf::from_json<std::vector<std::string>>(mf::Json{R"([" a", "\u00fc\n"])"}),
            (std::vector<std::string>{" a", "ü\n"}));
  EXPECT_EQ(mf::from_json<std::uint64_t>(mf::Json{"18446744073709551615"}), 18446744073709551615ULL);
  EXPECT_EQ(mf::from_json<std::int64_t>(mf::Json{"-9223372036854775808"}), std::numeric_limits<std::int64_t>::min());
  for (const char* bad : {"", "[1,", "{\"a\" 1}", "01", "1.", "\"\\ud800\"", "18446744073709551616", "1e999",
                          "[1] x", "nul", "\"\x01\""}) {
    std::string text = mft::error_of(MF_ERR_INVALID_ARGUMENT, [&] { mf::from_json<mf::Json>(mf::Json{bad}); });
    EXPECT_NE(text.find("invalid JSON"), std::string::npos) << bad << ": " << text;
  }
  // Nesting: 101 levels are accepted, 102 refused (the library's limit).
  EXPECT_NO_THROW(mf::from_json<mf::Json>(mf::Json{std::string(101, '[') + std::string(101, ']')}));
  std::string text = mft::error_of(MF_ERR_INVALID_ARGUMENT, [&] {
    mf::from_json<mf::Json>(mf::Json{std::string(102, '[') + std::string(102, ']')});
  });
  EXPECT_NE(text.find("depth"), std::string::npos) << text;
}

}  // namespace
