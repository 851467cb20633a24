#pragma once
// Progress of a run: a live line per interval (epoch, step, each loss term, lr, images/s,
// ETA), metrics as JSON lines, and an SVG plot of the loss and accuracy curves at the end.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "distill/core/error.hpp"

namespace distill::train {

inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

/// Writes progress to `out` (overwriting one line on a terminal, one line per report
/// otherwise) and, when `jsonl_path` is set, every report as one JSON object per line.
class Progress {
 public:
  Progress(std::ostream& out, bool terminal, const std::string& jsonl_path = "")
      : out_(out), terminal_(terminal) {
    if (!jsonl_path.empty()) {
      jsonl_.open(jsonl_path, std::ios::app);
      if (!jsonl_) distill::detail::fail(jsonl_path, ": cannot write the metrics log");
    }
  }
  /// Whether stdout is a terminal (then the line is rewritten in place).
  static bool stdout_is_terminal() { return isatty(fileno(stdout)) != 0; }

  void train_step(int64_t epoch, int64_t epochs, int64_t step, int64_t steps, int64_t global_step,
                  const std::vector<std::pair<std::string, double>>& terms, double lr, double images_per_second,
                  double eta_seconds) {
    std::string line = fmt::format("epoch {}/{} step {}/{}", epoch, epochs, step, steps);
    nlohmann::json record{{"type", "train"}, {"epoch", epoch}, {"step", step}, {"global_step", global_step}};
    for (const auto& [name, value] : terms) {
      line += fmt::format(" | {} {:.4f}", name, value);
      record[name] = value;
    }
    line += fmt::format(" | lr {:.5f} | {:.1f} img/s | ETA {}", lr, images_per_second, format_duration(eta_seconds));
    record["lr"] = lr;
    record["images_per_second"] = images_per_second;
    for (const auto& [name, value] : terms)
      if (name == "loss") loss_curve_.emplace_back(static_cast<double>(global_step), value);
    write(line, record, /*transient=*/true);
  }

  void evaluation(int64_t epoch, const std::vector<std::pair<std::string, double>>& metrics, bool best) {
    std::string line = fmt::format("eval epoch {}", epoch);
    nlohmann::json record{{"type", "eval"}, {"epoch", epoch}, {"best", best}};
    for (const auto& [name, value] : metrics) {
      line += fmt::format(" | {} {:.4f}", name, value);
      record[name] = value;
      if (name == "top1") top1_curve_.emplace_back(static_cast<double>(epoch), value);
    }
    write(line + (best ? " (best)" : ""), record, /*transient=*/false);
  }

  /// A plain message on its own line (epoch summaries, the final summary).
  void message(const std::string& text) {
    end_transient();
    out_ << text << '\n' << std::flush;
  }

  /// Two panels, training loss by step and evaluation top-1 by epoch, as an SVG file.
  void write_svg(const std::string& path, const std::string& title) const {
    std::ostringstream svg;
    const int width = 900, height = 360, panel = 420, pad = 50;
    svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
        << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
        << "<text x='" << width / 2 << "' y='20' text-anchor='middle' font-size='14'>" << escape(title) << "</text>\n";
    plot(svg, loss_curve_, 10, "training loss (total)", "step", panel, height, pad);
    plot(svg, top1_curve_, 10 + panel + 40, "evaluation top-1", "epoch", panel, height, pad);
    svg << "</svg>\n";
    std::ofstream file(path);
    file << svg.str();
    if (!file) distill::detail::fail(path, ": cannot write the plot");
  }

 private:
  static std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) out += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
    return out;
  }

  static void plot(std::ostream& svg, const std::vector<std::pair<double, double>>& points, int left, const char* label,
                   const char* axis, int width, int height, int pad) {
    const int top = 40, bottom = height - pad;
    svg << "<text x='" << left + width / 2 << "' y='" << top - 6 << "' text-anchor='middle'>" << label << "</text>\n";
    svg << "<rect x='" << left + pad << "' y='" << top << "' width='" << width - pad << "' height='" << bottom - top
        << "' fill='none' stroke='#888'/>\n";
    svg << "<text x='" << left + pad + (width - pad) / 2 << "' y='" << height - 15 << "' text-anchor='middle'>" << axis
        << "</text>\n";
    if (points.empty()) return;
    double x0 = points.front().first, x1 = x0, y0 = points.front().second, y1 = y0;
    for (const auto& [x, y] : points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) y1 = y0 + 1;
    auto px = [&](double x) { return left + pad + (x - x0) / (x1 - x0) * (width - pad); };
    auto py = [&](double y) { return bottom - (y - y0) / (y1 - y0) * (bottom - top); };
    svg << "<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='";
    for (const auto& [x, y] : points) svg << fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    svg << "'/>\n";
    for (const auto& [value, y] : {std::pair{y0, py(y0)}, std::pair{y1, py(y1)}})
      svg << "<text x='" << left + pad - 4 << "' y='" << y + 4 << "' text-anchor='end'>" << fmt::format("{:.3g}", value)
          << "</text>\n";
    for (const auto& [value, x] : {std::pair{x0, px(x0)}, std::pair{x1, px(x1)}})
      svg << "<text x='" << x << "' y='" << bottom + 15 << "' text-anchor='middle'>" << fmt::format("{:.0f}", value)
          << "</text>\n";
  }

  void write(const std::string& line, const nlohmann::json& record, bool transient) {
    if (jsonl_.is_open()) jsonl_ << record.dump() << '\n' << std::flush;
    if (terminal_ && transient) {
      out_ << '\r' << line << "\033[K" << std::flush;
      transient_open_ = true;
    } else {
      end_transient();
      out_ << line << '\n' << std::flush;
    }
  }
  void end_transient() {
    if (transient_open_) out_ << '\n';
    transient_open_ = false;
  }

  std::ostream& out_;
  bool terminal_;
  bool transient_open_ = false;
  std::ofstream jsonl_;
  std::vector<std::pair<double, double>> loss_curve_, top1_curve_;
};

}  // namespace distill::train
