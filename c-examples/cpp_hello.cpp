// cpp_hello.cpp: the C++ wrapper (include/anyfork.hpp) in a few lines.
//
// Runs `echo` through the exec builtin with its stdout on the comm socket,
// reads the line back, and checks the exit status reported for it. Any
// failure throws anyfork::error with fork_last_error()'s text.
#include <anyfork.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

int main() {
    try {
        std::string got;
        int status = -1;
        auto p = anyfork::process::create();
        p.eval("anyfork_comm_fd", {"1"})  // the comm socket becomes stdout
            .on_exit([&](pid_t, int st) { status = st; });
        std::move(p).exec({"echo", "hello from C++"}, [&](int fd) {
            if (fd < 0) throw anyfork::error(fd, fork_last_error());
            char buf[256];
            for (;;) {
                pollfd pfd{fd, POLLIN, 0};
                poll(&pfd, 1, 5000);
                ssize_t n = read(fd, buf, sizeof buf);
                if (n <= 0) break;
                got.append(buf, static_cast<size_t>(n));
            }
            close(fd);
        });
        while (anyfork::wait(10000) > 0) {
        }
        std::printf("%s", got.c_str());
        bool ok = got == "hello from C++\n" && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        std::printf("%s\n", ok ? "ok" : "unexpected result");
        return ok ? 0 : 1;
    } catch (const anyfork::error &e) {
        std::fprintf(stderr, "cpp_hello: %s\n", e.what());
        return 1;
    }
}
