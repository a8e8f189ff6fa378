#include "worker/tokenizer/sentencepiece_model.h"

#include "sentencepiece_processor.h"
#include "sentencepiece_trainer.h"

namespace a2sf::worker {

struct SentencePieceModel::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceModel::SentencePieceModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(const std::string& path, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->processor.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceModel>(new SentencePieceModel(std::move(impl)));
}

int SentencePieceModel::piece_size() const { return impl_->processor.GetPieceSize(); }
int SentencePieceModel::bos_id() const { return impl_->processor.bos_id(); }
int SentencePieceModel::eos_id() const { return impl_->processor.eos_id(); }
bool SentencePieceModel::IsControl(int id) const { return impl_->processor.IsControl(id); }
bool SentencePieceModel::IsByte(int id) const { return impl_->processor.IsByte(id); }
bool SentencePieceModel::IsUnknown(int id) const { return impl_->processor.IsUnknown(id); }
bool SentencePieceModel::IsUnused(int id) const { return impl_->processor.IsUnused(id); }
float SentencePieceModel::GetScore(int id) const { return impl_->processor.GetScore(id); }
std::string SentencePieceModel::IdToPiece(int id) const { return impl_->processor.IdToPiece(id); }

bool SentencePieceModel::Encode(const std::string& text, std::vector<int>* ids, std::string* error) const {
  const auto status = impl_->processor.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

std::string TrainSentencePieceModel(const std::string& flags) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(flags);
  return status.ok() ? "" : status.ToString();
}

}  // namespace a2sf::worker
