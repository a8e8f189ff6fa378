#include "worker/service/request_validation.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace a2sf::worker {

namespace {

absl::Status UnknownEnum(const std::string& field, const google::protobuf::EnumDescriptor* type, int value) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", value, " is not a ", type->name(), " value this worker knows"));
}

}  // namespace

absl::Status CheckEnumValuesKnown(const google::protobuf::Message& message, const std::string& prefix) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);  // only fields that are set: bounded by the message's size
  for (const FieldDescriptor* field : fields) {
    const std::string name = prefix + field->name();
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
      const google::protobuf::EnumDescriptor* type = field->enum_type();
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          const int value = reflection->GetRepeatedEnumValue(message, field, i);
          if (type->FindValueByNumber(value) == nullptr) return UnknownEnum(absl::StrCat(name, "[", i, "]"), type, value);
        }
      } else {
        const int value = reflection->GetEnumValue(message, field);
        if (type->FindValueByNumber(value) == nullptr) return UnknownEnum(name, type, value);
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          absl::Status s = CheckEnumValuesKnown(reflection->GetRepeatedMessage(message, field, i),
                                                absl::StrCat(name, "[", i, "]."));
          if (!s.ok()) return s;
        }
      } else {
        absl::Status s = CheckEnumValuesKnown(reflection->GetMessage(message, field), name + ".");
        if (!s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request) {
  if (absl::Status s = CheckEnumValuesKnown(request); !s.ok()) return s;
  if (request.prompt_case() == v1::GenerateRequest::kText && request.text().empty()) {
    return absl::InvalidArgumentError("prompt.text: empty (give at least one character, or prompt.token_ids)");
  }
  return absl::OkStatus();
}

}  // namespace a2sf::worker
