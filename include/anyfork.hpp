// anyfork.hpp: a header-only C++17 wrapper over anyfork.h.
//
// anyfork::process owns a fork_proc (move-only; the destructor frees a
// process that has not run). Failures throw anyfork::error, which carries
// the negative errno and fork_last_error()'s text. Callbacks are any
// callables; they run from anyfork::wait() or anyfork::dispatch(), as in C.
#ifndef ANYFORK_HPP
#define ANYFORK_HPP

#include <anyfork.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anyfork {

// A failed call: what() is fork_last_error(), code() the negative errno.
class error : public std::runtime_error {
public:
    error(int code, const char *what) : std::runtime_error(what), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

namespace detail {
inline int check(int r) {
    if (r < 0) throw error(r, fork_last_error());
    return r;
}
inline fork_proc *check(fork_proc *p) {
    if (!p) throw error(-1, fork_last_error());
    return p;
}
using run_fn = std::function<void(int fd)>;
using exit_fn = std::function<void(pid_t pid, int wait_status)>;
extern "C" inline void run_trampoline(int fd, void *ud) {
    std::unique_ptr<run_fn> f(static_cast<run_fn *>(ud));
    (*f)(fd);
}
extern "C" inline void exit_trampoline(pid_t pid, int status, void *ud) {
    std::unique_ptr<exit_fn> f(static_cast<exit_fn *>(ud));
    (*f)(pid, status);
}
}  // namespace detail

// A process that has not run yet.
class process {
public:
    // fork_new(): a process forked from the default template.
    static process create() { return process(detail::check(fork_new())); }
    // fork_new_exec(): a fresh anyfork-serve, a direct child.
    static process exec_server() { return process(detail::check(fork_new_exec())); }
    // fork_template(): the calling program forked now, as a template.
    static process from_this_program() { return process(detail::check(fork_template())); }

    process(process &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    process &operator=(process &&o) noexcept {
        if (this != &o) {
            fork_free(p_);
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    process(const process &) = delete;
    process &operator=(const process &) = delete;
    ~process() { fork_free(p_); }

    // fork_fork(): a child holding everything sent to this one so far.
    process fork() { return process(detail::check(fork_fork(p_))); }

    // fork_ahead(): keep n children of this template forked ahead of fork().
    process &ahead(unsigned n) {
        detail::check(fork_ahead(p_, n));
        return *this;
    }

    process &send_fd(int fd) {
        detail::check(fork_send_fd(p_, fd));
        return *this;
    }
    process &send_arg(std::string_view s) {
        detail::check(fork_send_arg(p_, s.data(), s.size()));
        return *this;
    }
    process &require(const std::string &library) {
        detail::check(fork_require(p_, library.c_str()));
        return *this;
    }
    process &eval(const std::string &function, const std::vector<std::string> &args = {}) {
        std::vector<const char *> v;
        v.reserve(args.size());
        for (const auto &a : args) v.push_back(a.c_str());
        detail::check(fork_eval(p_, function.c_str(), v.data(), v.size()));
        return *this;
    }
    // fork_on_exit(): f(pid, wait_status) once the process has exited.
    process &on_exit(detail::exit_fn f) {
        auto box = std::make_unique<detail::exit_fn>(std::move(f));
        detail::check(fork_on_exit(p_, detail::exit_trampoline, box.get()));
        box.release();
        return *this;
    }
    // fork_pid(); may wait for the template's report.
    pid_t pid() const {
        pid_t r = fork_pid(p_);
        if (r < 0) throw error(-1, fork_last_error());
        return r;
    }

    // fork_run(): consumes the process; f(fd) gets the comm socket (or
    // -errno). Throws, and never calls f, if the run cannot be queued.
    void run(const std::string &function, detail::run_fn f) && {
        auto box = std::make_unique<detail::run_fn>(std::move(f));
        int r = fork_run(std::exchange(p_, nullptr), function.c_str(), detail::run_trampoline, box.get());
        detail::check(r);
        box.release();
    }
    // fork_exec(): the exec builtin; consumes the process like run().
    void exec(const std::vector<std::string> &argv, detail::run_fn f) && {
        std::vector<const char *> v;
        for (const auto &a : argv) v.push_back(a.c_str());
        v.push_back(nullptr);
        auto box = std::make_unique<detail::run_fn>(std::move(f));
        int r = fork_exec(std::exchange(p_, nullptr), v.data(), nullptr, detail::run_trampoline, box.get());
        detail::check(r);
        box.release();
    }

    // The handle, for calls this wrapper does not cover; still owned here.
    fork_proc *get() const noexcept { return p_; }

private:
    explicit process(fork_proc *p) : p_(p) {}
    fork_proc *p_;
};

// fork_wait(): runs due callbacks, waiting up to timeout_ms (-1: forever).
inline int wait(int timeout_ms = -1) { return detail::check(fork_wait(timeout_ms)); }
// fork_loop_dispatch(): for event loops watching loop_fd().
inline int dispatch() { return detail::check(fork_loop_dispatch()); }
inline int loop_fd() { return detail::check(fork_loop_fd()); }

}  // namespace anyfork

#endif  // ANYFORK_HPP
