#include "client/generation_result.h"

#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace a2sf::client {

namespace {

using google::protobuf::FieldDescriptor;

nlohmann::json FieldValue(const google::protobuf::Message& m, const FieldDescriptor* f, int index) {
  const google::protobuf::Reflection* r = m.GetReflection();
  const bool repeated = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return repeated ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return repeated ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return repeated ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return repeated ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return repeated ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return (repeated ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case FieldDescriptor::CPPTYPE_STRING:
      return repeated ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(repeated ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

}  // namespace

nlohmann::json ProtoToJson(const google::protobuf::Message& message) {
  nlohmann::json out = nlohmann::json::object();
  const google::protobuf::Descriptor* d = message.GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      nlohmann::json list = nlohmann::json::array();
      const int n = message.GetReflection()->FieldSize(message, f);
      for (int k = 0; k < n; ++k) list.push_back(FieldValue(message, f, k));
      out[f->name()] = std::move(list);
    } else {
      out[f->name()] = FieldValue(message, f, 0);
    }
  }
  return out;
}

nlohmann::json GenerationJson(const GenerationResult& result) {
  nlohmann::json logprobs = nlohmann::json::array();
  for (const v1::TokenLogprobs& t : result.logprobs) logprobs.push_back(ProtoToJson(t));
  return {{"text", result.text},
          {"ids", result.ids},
          {"stats", ProtoToJson(result.finished)},
          {"logprobs", std::move(logprobs)},
          {"prompt_logprobs", ProtoToJson(result.prompt_logprobs)["tokens"]}};
}

std::string DumpJson(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace a2sf::client
