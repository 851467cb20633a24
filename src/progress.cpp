// Progress of a run (include/distill/train/progress.hpp): the live bar, log lines, the
// metrics log and the SVG plot.

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "distill/core/error.hpp"
#include "distill/train/progress.hpp"

namespace distill::train {

using json = nlohmann::json;

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

bool stdout_is_terminal() { return isatty(fileno(stdout)) != 0; }

namespace {
// The terminal's width: a line longer than it would wrap, and '\r' would then rewrite only
// its last part.
size_t terminal_columns() {
  winsize size{};
  if (ioctl(fileno(stdout), TIOCGWINSZ, &size) == 0 && size.ws_col >= 20) return size.ws_col;
  return 100;
}

// At most ten redraws a second: a bar redrawn every step of a fast run costs more than the step.
bool due(std::chrono::steady_clock::time_point& last) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last < std::chrono::milliseconds(100)) return false;
  last = now;
  return true;
}
}  // namespace

std::string render_bar(const std::string& label, int64_t done, int64_t total, const std::string& suffix, size_t width) {
  constexpr int64_t cells = 20;
  const int64_t filled = total > 0 ? std::clamp<int64_t>(done * cells / total, 0, cells) : 0;
  std::string line = fmt::format("{} [{}{}] {}/{}{}", label, std::string(static_cast<size_t>(filled), '#'),
                                 std::string(static_cast<size_t>(cells - filled), '.'), done, total,
                                 suffix.empty() ? "" : " " + suffix);
  if (line.size() > width) line.resize(width);
  return line;
}

ProgressBar::ProgressBar(std::ostream& out, bool terminal, std::string label, int64_t total)
    : out_(out), terminal_(terminal), label_(std::move(label)), total_(total) {}

ProgressBar::~ProgressBar() {
  if (open_) out_ << "\r\033[K" << std::flush;
}

void ProgressBar::update(int64_t done, const std::string& suffix) {
  if (!terminal_ || (open_ && done < total_ && !due(last_))) return;
  out_ << '\r' << render_bar(label_, done, total_, suffix, terminal_columns() - 1) << "\033[K" << std::flush;
  open_ = true;
}

void ProgressBar::finish() {
  if (open_) out_ << "\r\033[K" << std::flush;
  open_ = false;
}

Progress::Progress(std::ostream& out, bool terminal, const std::string& jsonl_path)
    : out_(out), terminal_(terminal), jsonl_path_(jsonl_path) {
  if (!jsonl_path.empty()) {
    jsonl_.open(jsonl_path, std::ios::app);
    if (!jsonl_) fail_at(jsonl_path, "cannot write the metrics log");
  }
}

bool Progress::stdout_is_terminal() { return train::stdout_is_terminal(); }

void Progress::train_step(int64_t epoch, int64_t epochs, int64_t step, int64_t steps, int64_t global_step,
                          const std::vector<std::pair<std::string, double>>& terms, double lr, double images_per_second,
                          double eta_seconds) {
  std::string values;
  json record{{"type", "train"}, {"epoch", epoch}, {"step", step}, {"global_step", global_step}};
  for (const auto& [name, value] : terms) {
    values += fmt::format(" | {} {:.4f}", name, value);
    record[name] = value;
    if (name == "loss") loss_curve_.emplace_back(static_cast<double>(global_step), value);
  }
  values += fmt::format(" | lr {:.5f} | {:.1f} img/s | ETA {}", lr, images_per_second, format_duration(eta_seconds));
  record["lr"] = lr;
  record["images_per_second"] = images_per_second;
  if (terminal_) {
    // The bar is cut at the terminal's width: the total, ETA and speed first, the terms after.
    double total = 0;
    for (const auto& [name, value] : terms)
      if (name == "loss") total = value;
    bar_suffix_ = fmt::format("loss {:.4f} | ETA {} | {:.1f} img/s | lr {:.5f}", total, format_duration(eta_seconds),
                              images_per_second, lr);
    for (const auto& [name, value] : terms)
      if (name != "loss") bar_suffix_ += fmt::format(" | {} {:.4f}", name, value);
    write("", record.dump(), /*transient=*/true);
    last_draw_ = {};  // the new values are drawn now
    tick(epoch, epochs, step, steps);
  } else {
    write(fmt::format("epoch {}/{} step {}/{}", epoch, epochs, step, steps) + values, record.dump(), /*transient=*/false);
  }
}

void Progress::tick(int64_t epoch, int64_t epochs, int64_t step, int64_t steps) {
  if (!terminal_ || (step < steps && !due(last_draw_))) return;
  out_ << '\r' << render_bar(fmt::format("epoch {}/{}", epoch, epochs), step, steps, bar_suffix_, terminal_columns() - 1)
       << "\033[K" << std::flush;
  transient_open_ = true;
  if (step == steps) end_transient();  // the epoch's last bar stays, as tqdm leaves it
}

void Progress::evaluation(int64_t epoch, const std::vector<std::pair<std::string, double>>& metrics, bool best) {
  std::string line = fmt::format("eval epoch {}", epoch);
  json record{{"type", "eval"}, {"epoch", epoch}, {"best", best}};
  for (const auto& [name, value] : metrics) {
    line += fmt::format(" | {} {:.4f}", name, value);
    record[name] = value;
    epoch_curves_[name].emplace_back(static_cast<double>(epoch), value);
  }
  write(line + (best ? " (best)" : ""), record.dump(), /*transient=*/false);
}

void Progress::message(const std::string& text) {
  end_transient();
  out_ << text << '\n' << std::flush;
}

void Progress::alarm(const std::string& kind, const std::string& subject, int64_t epoch, int64_t step, const std::string& text) {
  json record{{"type", "alarm"}, {"alarm", kind}, {"subject", subject}, {"epoch", epoch}, {"step", step}, {"message", text}};
  write("warning: " + text, record.dump(), /*transient=*/false);
}

void Progress::record(const json& record) { write("", record.dump(), /*transient=*/true); }

namespace {
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return out;
}

struct Series {
  std::string label, colour;
  const std::vector<std::pair<double, double>>* points;
};

// One panel: its series on shared axes, a legend when there are several.
void plot(std::ostream& svg, const std::vector<Series>& series, int left, const char* title, const char* axis, int width,
          int height, int pad) {
  const int top = 40, bottom = height - pad;
  svg << "<text x='" << left + width / 2 << "' y='" << top - 6 << "' text-anchor='middle'>" << title << "</text>\n";
  svg << "<rect x='" << left + pad << "' y='" << top << "' width='" << width - pad << "' height='" << bottom - top
      << "' fill='none' stroke='#888'/>\n";
  svg << "<text x='" << left + pad + (width - pad) / 2 << "' y='" << height - 15 << "' text-anchor='middle'>" << axis
      << "</text>\n";
  bool any = false;
  double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  for (const auto& s : series)
    for (const auto& [x, y] : *s.points) {
      if (!any) x0 = x1 = x, y0 = y1 = y, any = true;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!any) return;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  auto px = [&](double x) { return left + pad + (x - x0) / (x1 - x0) * (width - pad); };
  auto py = [&](double y) { return bottom - (y - y0) / (y1 - y0) * (bottom - top); };
  int legend = top + 14;
  for (const auto& s : series) {
    if (s.points->empty()) continue;
    svg << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='1.5' points='";
    for (const auto& [x, y] : *s.points) svg << fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    svg << "'/>\n";
    if (series.size() > 1) {
      svg << "<text x='" << left + pad + 6 << "' y='" << legend << "' fill='" << s.colour << "'>" << escape(s.label) << "</text>\n";
      legend += 14;
    }
  }
  for (const auto& [value, y] : {std::pair{y0, py(y0)}, std::pair{y1, py(y1)}})
    svg << "<text x='" << left + pad - 4 << "' y='" << y + 4 << "' text-anchor='end'>" << fmt::format("{:.3g}", value)
        << "</text>\n";
  for (const auto& [value, x] : {std::pair{x0, px(x0)}, std::pair{x1, px(x1)}})
    svg << "<text x='" << x << "' y='" << bottom + 15 << "' text-anchor='middle'>" << fmt::format("{:.0f}", value)
        << "</text>\n";
}
}  // namespace

void Progress::write_svg(const std::string& path, const std::string& title) const {
  static const char* colours[] = {"#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};
  std::vector<Series> accuracy, divergence;
  static const std::vector<std::pair<double, double>> none;
  auto curve = [&](const std::string& name) -> const std::vector<std::pair<double, double>>& {
    auto it = epoch_curves_.find(name);
    return it == epoch_curves_.end() ? none : it->second;
  };
  accuracy.push_back({"top-1", "#1f77b4", &curve("top1")});
  size_t colour = 0;
  for (const auto& [name, points] : epoch_curves_) {
    if (name.rfind("agree_", 0) == 0) accuracy.push_back({"agreement with " + name.substr(6), colours[colour++ % 5], &points});
    if (name.rfind("kl_", 0) == 0) divergence.push_back({"KL(" + name.substr(3) + " || student)", "#1f77b4", &points});
  }
  std::ostringstream svg;
  const int width = 1340, height = 360, panel = 420, pad = 50;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << width / 2 << "' y='20' text-anchor='middle' font-size='14'>" << escape(title) << "</text>\n";
  plot(svg, {{"loss", "#1f77b4", &loss_curve_}}, 10, "training loss (total)", "step", panel, height, pad);
  plot(svg, accuracy, 10 + panel + 40, "evaluation top-1 and agreement", "epoch", panel, height, pad);
  plot(svg, divergence, 10 + 2 * (panel + 40), "KL(teacher || student), evaluation", "epoch", panel, height, pad);
  svg << "</svg>\n";
  std::ofstream file(path);
  file << svg.str();
  if (!file) fail_at(path, "cannot write the plot");
}

void Progress::forget_after(int64_t epoch) {
  if (!jsonl_.is_open()) return;
  jsonl_.close();
  std::ifstream in(jsonl_path_);
  std::string kept, text;
  while (std::getline(in, text)) {
    const auto record = json::parse(text, nullptr, /*allow_exceptions=*/false);
    const bool later = record.is_object() && record.contains("epoch") && record["epoch"].is_number_integer() &&
                       record["epoch"].get<int64_t>() > epoch;
    if (record.is_object() && !later) kept += text + '\n';
  }
  in.close();
  const std::string temporary = jsonl_path_ + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << kept << std::flush;
    if (!out) fail_at(temporary, "cannot rewrite the metrics log: ", std::strerror(errno));
  }
  if (std::rename(temporary.c_str(), jsonl_path_.c_str()) != 0)
    fail_at(jsonl_path_, "cannot replace the metrics log: ", std::strerror(errno));
  jsonl_.open(jsonl_path_, std::ios::app);
  if (!jsonl_) fail_at(jsonl_path_, "cannot write the metrics log");
}

// `line` empty: the record only. `transient`: on a terminal, the line is left for the bar to
// overwrite; otherwise a log line.
void Progress::write(const std::string& line, const std::string& record, bool transient) {
  if (jsonl_.is_open()) {
    jsonl_ << record << '\n' << std::flush;
    if (!jsonl_) fail_at(jsonl_path_, "cannot write the metrics log: ", std::strerror(errno));
  }
  if (line.empty()) return;
  if (terminal_ && transient) {
    out_ << '\r' << line << "\033[K" << std::flush;
    transient_open_ = true;
  } else {
    end_transient();
    out_ << line << '\n' << std::flush;
  }
}

void Progress::end_transient() {
  if (transient_open_) out_ << '\n';
  transient_open_ = false;
}

}  // namespace distill::train
