#pragma once
// Progress of a run: a live bar on a terminal (epoch, step, each loss term, lr, images/s,
// ETA; log lines instead when stdout is not a terminal), metrics as JSON lines, warnings
// (alarms), and an SVG plot of the loss, accuracy and agreement curves at the end.
// Compiled into distill::engine (src/progress.cpp).

#include <chrono>
#include <fstream>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace distill::train {

/// "42s", "3m05s", "1h02m"; "?" for a negative or absurd duration.
std::string format_duration(double seconds);

/// Whether stdout is a terminal (then progress is a bar rewritten in place).
bool stdout_is_terminal();

/// One bar line: "label [#######.............]  7/20 suffix", cut to `width` characters.
std::string render_bar(const std::string& label, int64_t done, int64_t total, const std::string& suffix, size_t width);

/// A live bar for a phase of known length (evaluation, caching, checking): on a terminal one
/// line rewritten in place (at most ten times a second) and cleared by finish(); elsewhere
/// nothing (the caller's log lines say enough).
///
///   distill::train::ProgressBar bar(std::cout, distill::train::stdout_is_terminal(), "eval", batches);
///   for (int64_t i = 1; i <= batches; ++i) { ...; bar.update(i); }
///   bar.finish();
class ProgressBar {
 public:
  ProgressBar(std::ostream& out, bool terminal, std::string label, int64_t total);
  ~ProgressBar();
  void update(int64_t done, const std::string& suffix = "");
  /// Clears the line (the caller prints the phase's result next).
  void finish();

 private:
  std::ostream& out_;
  bool terminal_, open_ = false;
  std::string label_;
  int64_t total_;
  std::chrono::steady_clock::time_point last_;
};

/// Writes progress to `out` (a bar rewritten in place on a terminal, one line per report
/// otherwise) and, when `jsonl_path` is set, every report as one JSON object per line.
class Progress {
 public:
  Progress(std::ostream& out, bool terminal, const std::string& jsonl_path = "");
  /// Whether stdout is a terminal (the same as train::stdout_is_terminal()).
  static bool stdout_is_terminal();

  /// A report every Global.print_batch_step steps: a metrics record, and a log line (not on a
  /// terminal, where the bar shows it).
  void train_step(int64_t epoch, int64_t epochs, int64_t step, int64_t steps, int64_t global_step,
                  const std::vector<std::pair<std::string, double>>& terms, double lr, double images_per_second,
                  double eta_seconds);
  /// Every step on a terminal: redraws the epoch's bar (at most ten times a second, and always
  /// at its last step, which then stays on screen) with the latest reported terms.
  void tick(int64_t epoch, int64_t epochs, int64_t step, int64_t steps);
  void evaluation(int64_t epoch, const std::vector<std::pair<std::string, double>>& metrics, bool best);
  /// A plain message on its own line (epoch summaries, the final summary).
  void message(const std::string& text);
  /// A warning line ("warning: ...") and a record {"type": "alarm", ...}.
  void alarm(const std::string& kind, const std::string& subject, int64_t epoch, int64_t step, const std::string& text);
  /// Any other record for the metrics log (teacher checks, skipped steps, the summary).
  void record(const nlohmann::json& record);
  /// Drops the metrics-log records of epochs after `epoch` (and a torn last line): a resumed
  /// run repeats the epoch that was interrupted, and must not log it twice; a fresh run
  /// (epoch 0) starts the log anew.
  void forget_after(int64_t epoch);
  /// Three panels, training loss by step, evaluation top-1 and student-teacher agreement by
  /// epoch, KL(teacher || student) by epoch, as an SVG file.
  void write_svg(const std::string& path, const std::string& title) const;

 private:
  void write(const std::string& line, const std::string& record, bool transient);
  void end_transient();

  std::ostream& out_;
  bool terminal_;
  bool transient_open_ = false;
  std::string jsonl_path_;
  std::ofstream jsonl_;
  std::chrono::steady_clock::time_point last_draw_;
  std::string bar_suffix_;  // the latest report's terms, lr, images/s and ETA
  std::vector<std::pair<double, double>> loss_curve_;
  std::map<std::string, std::vector<std::pair<double, double>>> epoch_curves_;  // per evaluation metric
};

}  // namespace distill::train
