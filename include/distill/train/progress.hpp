#pragma once
// Progress of a run: a live line per interval (epoch, step, each loss term, lr, images/s,
// ETA), metrics as JSON lines, and an SVG plot of the loss and accuracy curves at the end.
// Compiled into distill::engine (src/train.cpp).

#include <fstream>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace distill::train {

/// "42s", "3m05s", "1h02m"; "?" for a negative or absurd duration.
std::string format_duration(double seconds);

/// Writes progress to `out` (overwriting one line on a terminal, one line per report
/// otherwise) and, when `jsonl_path` is set, every report as one JSON object per line.
class Progress {
 public:
  Progress(std::ostream& out, bool terminal, const std::string& jsonl_path = "");
  /// Whether stdout is a terminal (then the line is rewritten in place).
  static bool stdout_is_terminal();

  void train_step(int64_t epoch, int64_t epochs, int64_t step, int64_t steps, int64_t global_step,
                  const std::vector<std::pair<std::string, double>>& terms, double lr, double images_per_second,
                  double eta_seconds);
  void evaluation(int64_t epoch, const std::vector<std::pair<std::string, double>>& metrics, bool best);
  /// A plain message on its own line (epoch summaries, the final summary).
  void message(const std::string& text);
  /// Drops the metrics-log records of epochs after `epoch` (and a torn last line): a resumed
  /// run repeats the epoch that was interrupted, and must not log it twice; a fresh run
  /// (epoch 0) starts the log anew.
  void forget_after(int64_t epoch);
  /// Two panels, training loss by step and evaluation top-1 by epoch, as an SVG file.
  void write_svg(const std::string& path, const std::string& title) const;

 private:
  void write(const std::string& line, const std::string& record, bool transient);
  void end_transient();

  std::ostream& out_;
  bool terminal_;
  bool transient_open_ = false;
  std::string jsonl_path_;
  std::ofstream jsonl_;
  std::vector<std::pair<double, double>> loss_curve_, top1_curve_;
};

}  // namespace distill::train
