// A thin wall around libsentencepiece. Its header defines `namespace absl { using std::string_view; }`,
// which clashes with the real Abseil, so only sentencepiece_model.cc includes it and this interface
// uses the standard library alone.
#ifndef A2SF_WORKER_TOKENIZER_SENTENCEPIECE_MODEL_H_
#define A2SF_WORKER_TOKENIZER_SENTENCEPIECE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

namespace a2sf::worker {

class SentencePieceModel {
 public:
  // Null with `error` set when `path` is not a sentencepiece model.
  static std::unique_ptr<SentencePieceModel> Load(const std::string& path, std::string* error);
  ~SentencePieceModel();

  int piece_size() const;
  int bos_id() const;
  int eos_id() const;
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;
  bool IsControl(int id) const;
  bool IsByte(int id) const;
  bool IsUnknown(int id) const;
  bool IsUnused(int id) const;
  float GetScore(int id) const;
  std::string IdToPiece(int id) const;

 private:
  struct Impl;
  explicit SentencePieceModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Trains a model (sentencepiece's spm_train flags); for tests. Returns "" or the error.
std::string TrainSentencePieceModel(const std::string& flags);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_TOKENIZER_SENTENCEPIECE_MODEL_H_
