// Every message of the v1 API survives serialisation: each field is filled through reflection
// (so a new field is covered without touching this test), serialised, parsed back and compared.
#include <random>
#include <string>
#include <vector>

#include "a2sf/v1/cache_manager.pb.h"
#include "a2sf/v1/generation.pb.h"
#include "a2sf/v1/policy.pb.h"
#include "a2sf/v1/scores.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Sets one value of `field` (appending when repeated) to something non-default.
void SetValue(Message* message, const FieldDescriptor* field, std::mt19937* rng, int depth);

void Fill(Message* message, std::mt19937* rng, int depth) {
  const Descriptor* descriptor = message->GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    // Of a oneof only the last field set survives; fill every one in turn and keep the last.
    const int count = field->is_repeated() ? 3 : 1;
    for (int k = 0; k < count; ++k) SetValue(message, field, rng, depth);
  }
}

void SetValue(Message* message, const FieldDescriptor* field, std::mt19937* rng, int depth) {
  const Reflection* r = message->GetReflection();
  const bool rep = field->is_repeated();
  std::uniform_int_distribution<uint32_t> u32(1, 1u << 30);
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      rep ? r->AddInt32(message, field, -int32_t(u32(*rng) % 1000) - 1)
          : r->SetInt32(message, field, int32_t(u32(*rng) % 1000) + 1);
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      rep ? r->AddInt64(message, field, int64_t(u32(*rng)) << 20) : r->SetInt64(message, field, int64_t(u32(*rng)) << 20);
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      rep ? r->AddUInt32(message, field, u32(*rng)) : r->SetUInt32(message, field, u32(*rng));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      rep ? r->AddUInt64(message, field, uint64_t(u32(*rng)) << 30)
          : r->SetUInt64(message, field, uint64_t(u32(*rng)) << 30);
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      const double v = std::uniform_real_distribution<double>(0.001, 1.0)(*rng);
      rep ? r->AddDouble(message, field, v) : r->SetDouble(message, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      const float v = std::uniform_real_distribution<float>(0.001f, 1.0f)(*rng);
      rep ? r->AddFloat(message, field, v) : r->SetFloat(message, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL:
      rep ? r->AddBool(message, field, true) : r->SetBool(message, field, true);
      break;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* values = field->enum_type();
      const auto* value = values->value(values->value_count() - 1);
      rep ? r->AddEnum(message, field, value) : r->SetEnum(message, field, value);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v = "v" + std::to_string(u32(*rng));
      if (field->type() == FieldDescriptor::TYPE_BYTES) v.push_back('\0'), v.push_back('\xff');
      rep ? r->AddString(message, field, v) : r->SetString(message, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (depth > 4) break;
      Fill(rep ? r->AddMessage(message, field) : r->MutableMessage(message, field), rng, depth + 1);
      break;
  }
}

std::vector<const Descriptor*> AllMessages() {
  std::vector<const Descriptor*> all;
  const FileDescriptor* files[] = {
      v1::PolicySpec::descriptor()->file(), v1::ScoreStep::descriptor()->file(),
      v1::OpenSessionRequest::descriptor()->file(), v1::GenerateRequest::descriptor()->file()};
  for (const FileDescriptor* file : files) {
    for (int i = 0; i < file->message_type_count(); ++i) all.push_back(file->message_type(i));
  }
  return all;
}

TEST(ProtoRoundTrip, EveryV1MessageSurvivesSerialisation) {
  std::mt19937 rng(42);
  const auto messages = AllMessages();
  ASSERT_GE(messages.size(), 30u) << "the v1 API lost messages";
  for (const Descriptor* descriptor : messages) {
    SCOPED_TRACE(descriptor->full_name());
    std::unique_ptr<Message> original(
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(descriptor)->New());
    Fill(original.get(), &rng, 0);
    const std::string wire = original->SerializeAsString();
    std::unique_ptr<Message> parsed(original->New());
    ASSERT_TRUE(parsed->ParseFromString(wire));
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*original, *parsed))
        << original->DebugString() << "\nvs\n"
        << parsed->DebugString();
    if (descriptor->field_count() > 0) {
      EXPECT_FALSE(wire.empty()) << "filled message serialised to nothing";
    }
  }
}

TEST(ProtoRoundTrip, OptionalParametersDistinguishUnsetFromZero) {
  v1::PolicySpec spec;
  spec.set_name("a2sf");
  EXPECT_FALSE(spec.has_alpha());
  spec.set_alpha(0.0);  // alpha = 0 is a real value (TOVA-like), not "unset"
  v1::PolicySpec parsed;
  ASSERT_TRUE(parsed.ParseFromString(spec.SerializeAsString()));
  EXPECT_TRUE(parsed.has_alpha());
  EXPECT_EQ(parsed.alpha(), 0.0);
  EXPECT_FALSE(parsed.has_sinks());
}

TEST(ProtoRoundTrip, PackedScoreBytesAreKeptVerbatim) {
  v1::ScoreStep step;
  step.set_session_id("s-1");
  step.set_step(7);
  step.set_kind(v1::STEP_KIND_TOKEN);
  v1::ScoreTensor* scores = step.mutable_scores();
  scores->set_dtype(v1::SCORE_DTYPE_FP16);
  scores->add_shape(2);
  scores->add_shape(1);
  scores->add_shape(3);
  // fp16 1.0 = 0x3C00, 0.5 = 0x3800, 0 = 0x0000; little-endian.
  const std::string bytes("\x00\x3c\x00\x38\x00\x00\x00\x3c\x00\x38\x00\x00", 12);
  scores->set_data(bytes);
  v1::ScoreStep parsed;
  ASSERT_TRUE(parsed.ParseFromString(step.SerializeAsString()));
  EXPECT_EQ(parsed.scores().data(), bytes);
  EXPECT_EQ(parsed.scores().payload_case(), v1::ScoreTensor::kData);
  EXPECT_EQ(parsed.scores().shape_size(), 3);
}

}  // namespace
}  // namespace a2sf
