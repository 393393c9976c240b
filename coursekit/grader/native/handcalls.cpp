// Refuses autograd nodes called by hand (``y.grad_fn(dy)``) in a kernel that runs a learner's code.
//
// Loaded into the learner's kernel by coursekit.grader.guard (built by coursekit.grader.handcalls).
// A global RecordFunction callback sees every autograd node that runs, in every thread: the engine
// runs a node as the thread's current node (torch::autograd::get_current_node()), a node called by
// hand from Python runs while no node or another node is current. What happens then depends on the
// mode, which only ever goes up:
//   0  off;
//   1  count (the check cell: coursekit.grader.guard.Scope reads count() around the learner's call);
//   2  stop (the grader's kernel): the node's name is written to the marker file given to arm(),
//      and the process kills itself with SIGKILL, which no Python code can catch. RecordFunction
//      swallows exceptions thrown by callbacks, so refusing by raising is not possible here.
#include <ATen/record_function.h>
#include <torch/csrc/autograd/node.h>
#include <torch/library.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <string>
#include <unistd.h>

namespace {

std::atomic<int64_t> mode{0};
std::atomic<int64_t> hand_calls{0};
std::mutex state_lock;
std::string marker_path;  // guarded by state_lock
std::string last_node;    // guarded by state_lock

std::unique_ptr<at::ObserverContext> on_node(const at::RecordFunction& fn) {
  const int64_t m = mode.load();
  if (m == 0) {
    return nullptr;
  }
  auto current = torch::autograd::get_current_node();
  if (current && current->sequence_nr() == fn.seqNr() && current->name() == fn.name()) {
    return nullptr;  // the engine running this node
  }
  hand_calls++;
  std::string marker;
  {
    std::lock_guard<std::mutex> guard(state_lock);
    last_node = fn.name();
    marker = marker_path;
  }
  if (m >= 2) {
    if (!marker.empty()) {
      if (FILE* f = std::fopen(marker.c_str(), "w")) {
        std::fputs(fn.name(), f);
        std::fclose(f);
      }
    }
    ::kill(::getpid(), SIGKILL);
    ::_exit(137);
  }
  return nullptr;
}

void arm(int64_t new_mode, const std::string& marker) {
  static const bool registered = [] {
    at::addGlobalCallback(at::RecordFunctionCallback(&on_node).scopes({at::RecordScope::BACKWARD_FUNCTION}));
    return true;
  }();
  (void)registered;
  std::lock_guard<std::mutex> guard(state_lock);
  if (new_mode > mode.load()) {
    mode = new_mode;
    marker_path = marker;
  }
}

void disarm() {
  std::lock_guard<std::mutex> guard(state_lock);
  if (mode.load() < 2) {  // the grader's mode is for the process's life
    mode = 0;
  }
}

}  // namespace

TORCH_LIBRARY(coursekit_handcalls, m) {
  m.def("arm(int mode, str marker) -> ()", [](int64_t new_mode, std::string marker) { arm(new_mode, marker); });
  m.def("disarm() -> ()", []() { disarm(); });
  m.def("mode() -> int", []() -> int64_t { return mode.load(); });
  m.def("count() -> int", []() -> int64_t { return hand_calls.load(); });
  m.def("last() -> str", []() -> std::string {
    std::lock_guard<std::mutex> guard(state_lock);
    return last_node;
  });
}
