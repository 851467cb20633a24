// The launcher of data-parallel workers (see include/distill/train/launch.hpp).

#include "distill/train/launch.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

extern char** environ;

namespace distill::train {

namespace detail {
namespace {

std::vector<pid_t>& launched_workers() {
  static std::vector<pid_t> pids;
  return pids;
}

// SIGTERM / SIGINT to the launcher go on to its workers, so none is left behind.
void forward_signal(int signal) {
  for (pid_t pid : launched_workers()) ::kill(pid, signal);
}

int64_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    distill::fail("launch: cannot find a free TCP port on 127.0.0.1: ", std::strerror(errno));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

}  // namespace
}  // namespace detail

int launch_workers(LaunchOptions o, const std::vector<std::string>& arguments, std::ostream& err) {
  if (o.nproc() < 1 || o.nnodes() < 1 || o.node_rank() < 0 || o.node_rank() >= o.nnodes())
    distill::fail("launch: bad options (--nproc ", o.nproc(), ", --nnodes ", o.nnodes(), ", --node-rank ",
                  o.node_rank(), ")");
  if (o.master_port() == 0) {
    if (o.nnodes() > 1) distill::fail("launch: with --nnodes > 1 every machine needs the same --master ADDR:PORT");
    o.master_port(detail::free_port());
  }
  const int64_t world = o.nnodes() * o.nproc();
  std::vector<std::string> inherited;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    if (name != "RANK" && name != "WORLD_SIZE" && name != "LOCAL_RANK" && name != "LOCAL_WORLD_SIZE" &&
        name != "MASTER_ADDR" && name != "MASTER_PORT" && !(o.timeout() > 0 && name == "DISTILL_TIMEOUT"))
      inherited.push_back(entry);
  }
  // Everything exec needs is made before fork: the child only calls execve.
  std::vector<std::string> args{"/proc/self/exe"};
  args.insert(args.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  auto& pids = detail::launched_workers();
  pids.clear();
  struct sigaction forward {
  }, previous_int{}, previous_term{};
  forward.sa_handler = detail::forward_signal;
  sigaction(SIGINT, &forward, &previous_int);
  sigaction(SIGTERM, &forward, &previous_term);
  for (int64_t i = 0; i < o.nproc(); ++i) {
    auto env = inherited;
    env.push_back("RANK=" + std::to_string(o.node_rank() * o.nproc() + i));
    env.push_back("WORLD_SIZE=" + std::to_string(world));
    env.push_back("LOCAL_RANK=" + std::to_string(i));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(o.nproc()));
    env.push_back("MASTER_ADDR=" + o.master_addr());
    env.push_back("MASTER_PORT=" + std::to_string(o.master_port()));
    if (o.timeout() > 0) env.push_back("DISTILL_TIMEOUT=" + std::to_string(o.timeout()));
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    if (pid < 0) {
      detail::forward_signal(SIGTERM);
      distill::fail("launch: cannot start worker ", i, ": ", std::strerror(errno));
    }
    pids.push_back(pid);
  }

  // Wait for all; after the first failure, give the rest a bounded time before stopping them.
  const double grace = (o.timeout() > 0 ? o.timeout() : 60.0) + 15.0;
  int result = 0;
  size_t running = pids.size();
  std::vector<bool> ended(pids.size(), false);
  std::chrono::steady_clock::time_point deadline{};
  bool terminated = false;
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (pids[i] != pid || ended[i]) continue;
        ended[i] = true;
        --running;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok) {
          err << "distill: rank " << o.node_rank() * o.nproc() + static_cast<int64_t>(i) << " (pid " << pid << ") "
              << detail::describe_exit(status) << '\n';
          if (result == 0) {
            result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace * 1000));
          }
        }
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    if (result != 0 && !terminated && std::chrono::steady_clock::now() > deadline) {
      err << "distill: stopping the workers still running " << grace << " s after the first failure\n";
      for (size_t i = 0; i < pids.size(); ++i)
        if (!ended[i]) ::kill(pids[i], SIGKILL);
      terminated = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sigaction(SIGINT, &previous_int, nullptr);
  sigaction(SIGTERM, &previous_term, nullptr);
  pids.clear();
  return result;
}

}  // namespace distill::train
